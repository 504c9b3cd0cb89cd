/**
 * Maglev table build time (typed arrays, incremental permutation position)
 * vs a naive textbook build in the same run (plain Arrays, `%` and a multiply
 * per probe), at M = 65537. Plus informational quality numbers: worst share
 * deviation from the mean, and the fraction of buckets that change owner
 * when one of 64 members is removed (ideal: exactly 1/64 = 1.5625%) -- for a
 * Maglev rebuild and for the anchored scope Baton publishes
 * (docs/hashing.md, "Anchored tables"); and a quarter of the members leaving
 * one by one under the registry's rebalance rule, against Maglev rebuilds in
 * the same run.
 */
import { repeatMs, timeResult } from '../lib.js';
import { shuffled } from '../../shared/random.js';
import type { BenchCase, BenchResult } from '../lib.js';
import {
  MAGLEV_DEFAULT_SIZE,
  MAGLEV_OFFSET_SEED,
  MAGLEV_SKIP_SEED,
  buildMaglevTable,
} from '../../shared/scope/maglev.js';
import { xxh32Utf8 } from '../../shared/hash/xxh32.js';
import { HashScope } from '../../shared/scope/hash-scope.js';
import { DEFAULT_REBALANCE_ABOVE_PCT, planScope } from '../../shared/scope/scope-plan.js';

const M = MAGLEV_DEFAULT_SIZE;

/** Textbook Maglev population (NSDI'16 pseudo-code), no attention to speed. */
function naiveMaglev(members: readonly string[], size: number): number[] {
  const offset: number[] = [];
  const skip: number[] = [];
  for (const m of members) {
    offset.push(xxh32Utf8(m, MAGLEV_OFFSET_SEED) % size);
    skip.push((xxh32Utf8(m, MAGLEV_SKIP_SEED) % (size - 1)) + 1);
  }
  const next: number[] = members.map(() => 0);
  const entry: number[] = new Array<number>(size).fill(-1);
  let n = 0;
  for (;;) {
    for (let i = 0; i < members.length; i++) {
      let c = (offset[i]! + next[i]! * skip[i]!) % size;
      while (entry[c]! >= 0) {
        next[i]!++;
        c = (offset[i]! + next[i]! * skip[i]!) % size;
      }
      entry[c] = i;
      next[i]!++;
      if (++n === size) return entry;
    }
  }
}

const names = (n: number) => Array.from({ length: n }, (_, i) => `fd-${String(i).padStart(3, '0')}`).sort();

/** Buckets whose owner (by name) differs between two scopes. */
function movedBuckets(a: HashScope, b: HashScope): number {
  let moved = 0;
  for (let j = 0; j < a.size; j++) if (a.members[a.table[j]!] !== b.members[b.table[j]!]) moved++;
  return moved;
}

/**
 * A quarter of n members leave one at a time (three orders). Returns the
 * buckets moved in total, as a multiple of the leavers' own buckets, for the
 * anchored scope under the default rebalance bound and for Maglev rebuilds;
 * the rebalances; and the worst share deviation of any anchored table.
 */
function quarterLeaving(n: number): { anchored: number; maglev: number; rebalances: number; worstDevPct: number } {
  const all = names(n);
  let ours = 0;
  let maglev = 0;
  let own = 0;
  let rebalances = 0;
  let worstDev = 0;
  for (const seed of [1, 2, 3]) {
    const order = shuffled(all, seed * 7919 + n);
    let members = all.slice();
    let anchor: readonly string[] = all;
    let prev = HashScope.build(1, all, M);
    let prevPlain = prev;
    for (let k = 0; k < n / 4; k++) {
      const leaver = order[k]!;
      for (let j = 0; j < M; j++) if (prev.members[prev.table[j]!] === leaver) own++;
      members = members.filter((m) => m !== leaver);
      const p = planScope(k + 2, anchor, members, M, 0, DEFAULT_REBALANCE_ABOVE_PCT);
      if (p.rebalanced) rebalances++;
      worstDev = Math.max(worstDev, p.scope.maxShareDeviation());
      const plain = HashScope.build(k + 2, members, M);
      ours += movedBuckets(prev, p.scope);
      maglev += movedBuckets(prevPlain, plain);
      anchor = p.anchor;
      prev = p.scope;
      prevPlain = plain;
    }
  }
  return { anchored: ours / own, maglev: maglev / own, rebalances, worstDevPct: worstDev * 100 };
}

const bench: BenchCase = {
  id: 'maglev',
  title: 'Maglev table build (M=65537): typed arrays vs naive textbook; the anchored scope',
  async run(progress) {
    const out: BenchResult[] = [];
    for (const n of [8, 64, 256]) {
      const members = names(n);
      // Same table from both before timing.
      if (buildMaglevTable(members, M).join() !== naiveMaglev(members, M).join()) {
        throw new Error(`maglev bench: naive and typed builds disagree for ${n} members`);
      }
      progress(`build ${n} members`);
      const ours = repeatMs(() => void buildMaglevTable(members, M), 9);
      const naive = repeatMs(() => void naiveMaglev(members, M), 5);
      out.push(timeResult(`build ${n} members, M=${M}`, ours, naive, 'naive textbook (Array, % per probe)'));
    }

    progress('share deviation');
    for (const n of [64, 256]) {
      const dev = HashScope.build(1, names(n), M).maxShareDeviation() * 100;
      out.push({ name: `max share deviation from mean, ${n} members`, value: dev, unit: '%', note: 'informational' });
    }

    progress('removal disruption, 64 members: Maglev rebuilt and anchored');
    const members = names(64);
    const full = HashScope.build(1, members, M);
    const rebuilt = { sum: 0, worst: 0 };
    const anchored = { sum: 0, worst: 0 };
    let aDev = 0;
    for (const gone of members) {
      const rest = members.filter((m) => m !== gone);
      const plain = HashScope.build(2, rest, M);
      const s = HashScope.build(2, rest, M, 0, members);
      for (const [acc, t] of [[rebuilt, plain], [anchored, s]] as const) {
        const f = (movedBuckets(full, t) / M) * 100;
        acc.sum += f;
        acc.worst = Math.max(acc.worst, f);
      }
      aDev = Math.max(aDev, s.maxShareDeviation() * 100);
    }
    const note = `informational; ideal 1/64 = ${(100 / 64).toFixed(4)}%`;
    out.push({ name: 'buckets moved removing 1 of 64, Maglev rebuild (mean over all 64)', value: rebuilt.sum / 64, unit: '%', note });
    out.push({ name: 'buckets moved removing 1 of 64, Maglev rebuild (worst of 64)', value: rebuilt.worst, unit: '%', note });
    out.push({ name: 'buckets moved removing 1 of 64, anchored (mean over all 64)', value: anchored.sum / 64, unit: '%', note });
    out.push({ name: 'buckets moved removing 1 of 64, anchored (worst of 64)', value: anchored.worst, unit: '%', note });
    out.push({ name: 'max share deviation after removing 1 of 64, anchored (worst of 64)', value: aDev, unit: '%', note: 'informational' });

    for (const [n, out16] of [[64, 16], [256, 64]] as const) {
      progress(`anchored build, ${n} members with ${out16} out`);
      const all = names(n);
      const rest = all.slice(out16);
      const anchoredMs = repeatMs(() => void HashScope.build(1, rest, M, 0, all), 5);
      const plainMs = repeatMs(() => void HashScope.build(1, rest, M), 5);
      out.push(timeResult(`anchored build, ${n} members with ${out16} out`, anchoredMs, plainMs, `Maglev build of the ${n - out16} in scope`));
    }

    for (const n of [64, 256]) {
      progress(`a quarter of ${n} leaving one by one`);
      const q = quarterLeaving(n);
      out.push({
        name: `a quarter of ${n} leaving one by one: buckets moved / leavers' buckets, anchored`,
        value: q.anchored,
        unit: 'x',
        baseline: q.maglev,
        baselineName: 'Maglev rebuilt each time',
        ratio: q.anchored / q.maglev,
        note: `3 orders; baseline: Maglev rebuilds; ${q.rebalances} rebalances at the default ${DEFAULT_REBALANCE_ABOVE_PCT}% bound; worst share deviation ${q.worstDevPct.toFixed(2)}%`,
      });
    }
    return out;
  },
};

export default bench;
