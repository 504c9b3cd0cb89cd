/**
 * The anchored hash scope (shared/scope/anchored.ts, scope-plan.ts) and the
 * issue's Maglev properties for the tables Baton publishes: balance within 1%
 * for M > 100 N, a removal moving at most 1.05/N of the buckets, the same
 * inputs giving the same table everywhere.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HashScope } from '../shared/scope/hash-scope.js';
import { buildAnchoredTable } from '../shared/scope/anchored.js';
import { MAGLEV_DEFAULT_SIZE, buildMaglevTable } from '../shared/scope/maglev.js';
import { DEFAULT_REBALANCE_ABOVE_PCT, planScope } from '../shared/scope/scope-plan.js';
import { shuffled } from '../shared/random.js';
import { tableDigest as digest } from './helpers/table-digest.js';

const M = MAGLEV_DEFAULT_SIZE;
const names = (n: number) => Array.from({ length: n }, (_, i) => `fd-${String(i).padStart(3, '0')}`);

/** Owner name of every bucket. */
const owners = (s: HashScope): string[] => Array.from(s.table, (i) => s.members[i]!);

function moved(a: HashScope, b: HashScope): { moved: number; notFromLeaver: number } {
  const x = owners(a);
  const y = owners(b);
  const gone = new Set(a.members.filter((m) => !b.members.includes(m)));
  let mv = 0;
  let other = 0;
  for (let i = 0; i < x.length; i++) {
    if (x[i] === y[i]) continue;
    mv++;
    if (!gone.has(x[i]!)) other++;
  }
  return { moved: mv, notFromLeaver: other };
}

describe('buildAnchoredTable', () => {
  it('with every anchor member in scope it is the Maglev table of the anchor (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.constantFrom(101, 251, 1009), fc.integer({ min: 0, max: 0xffffffff }), (n, size, seed) => {
        fc.pre(size > n);
        const a = names(n);
        const t = buildAnchoredTable(a, new Uint8Array(n).fill(1), size, seed);
        return digest(t) === digest(buildMaglevTable(a, size, seed));
      }),
      { seed: 5, numRuns: 60 },
    );
  });

  it('owners are always in scope, and no member in scope is an error', () => {
    const a = names(12);
    const inScope = Uint8Array.from(a, (_, i) => (i % 3 === 0 ? 1 : 0));
    const t = buildAnchoredTable(a, inScope, 1009, 7);
    for (const o of t) expect(inScope[o]).toBe(1);
    expect(() => buildAnchoredTable(a, new Uint8Array(12), 1009)).toThrow(/no anchor member is in scope/);
  });

  it('is pinned: the digest of an anchored table with two members out is a literal', () => {
    // If this changes, every node's table changed: the deal, the rank or the rendezvous moved.
    const a = names(8);
    const inScope = Uint8Array.from(a, (_, i) => (i === 2 || i === 5 ? 0 : 1));
    expect(digest(buildAnchoredTable(a, inScope, M, 0))).toBe(ANCHORED_DIGEST);
  });
});

const ANCHORED_DIGEST = 0xd07b4e83;

describe('HashScope with an anchor', () => {
  it('the same members and anchor in any order (with repeats) give the identical table', () => {
    const all = names(40);
    const members = all.filter((_, i) => i % 7 !== 3);
    const ref = HashScope.build(3, members, M, 99, all);
    for (let seed = 1; seed <= 4; seed++) {
      const s = HashScope.build(3, shuffled([...members, members[0]!], seed), M, 99, shuffled(all, seed + 10));
      expect(s.members).toEqual(ref.members);
      expect(s.anchor).toEqual(ref.anchor);
      expect(digest(s.table)).toBe(digest(ref.table));
    }
  });

  it('members are added to the anchor; an anchor equal to the members is plain Maglev', () => {
    const s = HashScope.build(1, ['b', 'a'], 251, 0, ['c']);
    expect(s.anchor).toEqual(['a', 'b', 'c']);
    expect(s.members).toEqual(['a', 'b']);
    const plain = HashScope.build(1, ['b', 'a'], 251, 0, ['a']);
    expect(plain.anchor).toBe(plain.members);
    expect(digest(plain.table)).toBe(digest(buildMaglevTable(['a', 'b'], 251)));
  });

  // The properties, for N up to M/100 (655 at M = 65537): the table
  // of N members is balanced within 1%; taking any one out (the anchor keeps
  // it) moves only its own buckets -- at most ceil(M/N) <= 1.05 M/N -- and
  // leaves the survivors within one bucket of each other (so within 1% of the
  // mean); the same happens for a second member out of that table.
  it.each([
    [2, 2],
    [3, 3],
    [8, 8],
    [10, 10],
    [16, 6],
    [64, 6],
    [256, 4],
    [655, 2],
  ])('N=%i, %i leavers sampled: balanced, and removing one moves only its buckets', (n, samples) => {
    const all = names(n);
    const full = HashScope.build(1, all, M);
    expect(full.maxShareDeviation()).toBeLessThanOrEqual(0.01);
    for (let k = 0; k < samples; k++) {
      const leaver = all[Math.floor((k * n) / samples)]!;
      const rest = all.filter((m) => m !== leaver);
      const s = HashScope.build(2, rest, M, 0, all);
      const d = moved(full, s);
      expect(d.notFromLeaver, `removing ${leaver}`).toBe(0);
      expect(d.moved / M, `removing ${leaver}`).toBeLessThanOrEqual(1.05 / n);
      expect(d.moved / M, `removing ${leaver}`).toBeGreaterThanOrEqual(1 / n - 1 / M);
      if (rest.length > 0 && M / rest.length >= 100) expect(s.maxShareDeviation(), `removing ${leaver}`).toBeLessThanOrEqual(0.01);
      const counts = new Map<string, number>();
      for (const o of owners(s)) counts.set(o, (counts.get(o) ?? 0) + 1);
      expect(Math.max(...counts.values()) - Math.min(...counts.values()), `spread after removing ${leaver}`).toBeLessThanOrEqual(1);
      if (n > 2) {
        // A second member out: again only its buckets move.
        const second = rest[(rest.indexOf(leaver === all[0] ? all[1]! : all[0]!) + k) % rest.length]!;
        const s2 = HashScope.build(3, rest.filter((m) => m !== second), M, 0, all);
        expect(moved(s, s2).notFromLeaver, `then removing ${second}`).toBe(0);
      }
    }
  });

  it('members leaving one by one and coming back: only their buckets move, and all back is the original table', () => {
    const all = names(64);
    const order = shuffled(all, 64);
    let prev = HashScope.build(1, all, M);
    const original = digest(prev.table);
    const steps: HashScope[] = [prev];
    let inScope = all.slice();
    for (let k = 0; k < 16; k++) {
      inScope = inScope.filter((m) => m !== order[k]);
      const s = HashScope.build(k + 2, inScope, M, 0, all);
      const d = moved(prev, s);
      expect(d.notFromLeaver, `removing ${order[k]}`).toBe(0);
      steps.push(s);
      prev = s;
    }
    // Back in the reverse order: each step restores the table before it left.
    for (let k = 15; k >= 0; k--) {
      inScope = [...inScope, order[k]!];
      const s = HashScope.build(100 - k, inScope, M, 0, all);
      expect(owners(s)).toEqual(owners(steps[k]!));
    }
    expect(digest(prev.table)).not.toBe(original);
    expect(digest(HashScope.build(200, inScope, M, 0, all).table)).toBe(original);
  });
});

describe('planScope (the rebalance rule)', () => {
  it('keeps the anchor while the table is within the bound, and resets it to the members beyond', () => {
    const all = names(64);
    const rest = all.slice(0, 40); // 24 out: far more drift than 0.01 %
    const kept = planScope(5, all, rest, M, 0, 100);
    expect(kept.rebalanced).toBe(false);
    expect(kept.anchor).toEqual(all);
    const reset = planScope(5, all, rest, M, 0, 0.01);
    expect(reset.rebalanced).toBe(true);
    expect(reset.anchoredDeviation).toBeGreaterThan(0.0001);
    expect(reset.anchor).toEqual(rest);
    expect(digest(reset.scope.table)).toBe(digest(buildMaglevTable(rest, M)));
    expect(reset.scope.version).toBe(5);
    // 0 turns anchoring off: always the plain Maglev table of the members.
    expect(planScope(5, all, all.slice(1), M, 0, 0).anchor).toEqual(all.slice(1));
  });

  it('new members join the anchor; planning from its own anchor is a fixed point', () => {
    const p1 = planScope(1, ['fd-a', 'fd-b'], ['fd-a', 'fd-c'], 1009, 0, DEFAULT_REBALANCE_ABOVE_PCT);
    expect(p1.anchor).toEqual(['fd-a', 'fd-b', 'fd-c']);
    const p2 = planScope(2, p1.anchor, ['fd-a', 'fd-c'], 1009, 0, DEFAULT_REBALANCE_ABOVE_PCT);
    expect(p2.anchor).toEqual(p1.anchor);
    expect(digest(p2.scope.table)).toBe(digest(p1.scope.table));
  });

  // A quarter of the FDs powered down one at a time, as the registry plans it
  // with the default bound: every table within the bound, and fewer buckets
  // moved in total than rebuilding Maglev each time.
  it.each([64, 256])('N=%i, a quarter leaving one by one: every table within the bound, fewer moves than Maglev rebuilds', (n) => {
    const all = names(n);
    const order = shuffled(all, n);
    let anchor: readonly string[] = all;
    let inScope = all.slice();
    let prev = HashScope.build(1, all, M);
    let prevPlain = prev;
    let ours = 0;
    let maglev = 0;
    let own = 0;
    for (let k = 0; k < n / 4; k++) {
      const leaver = order[k]!;
      own += owners(prev).filter((o) => o === leaver).length;
      inScope = inScope.filter((m) => m !== leaver);
      const p = planScope(k + 2, anchor, inScope, M, 0, DEFAULT_REBALANCE_ABOVE_PCT);
      expect(p.scope.maxShareDeviation()).toBeLessThanOrEqual(DEFAULT_REBALANCE_ABOVE_PCT / 100);
      if (!p.rebalanced) expect(moved(prev, p.scope).notFromLeaver).toBe(0);
      const plain = HashScope.build(k + 2, inScope, M);
      ours += moved(prev, p.scope).moved;
      maglev += moved(prevPlain, plain).moved;
      anchor = p.anchor;
      prev = p.scope;
      prevPlain = plain;
    }
    expect(ours).toBeLessThan(maglev);
    expect(ours).toBeGreaterThanOrEqual(own);
  });
});
