import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HashScope, ScopeHolder } from '../shared/scope/hash-scope.js';
import { buildMaglevTable } from '../shared/scope/maglev.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import { hashFiveTuple } from '../shared/hash/xxh32.js';
import { mulberry32, shuffled } from '../shared/random.js';

const sameBytes = (a: Uint16Array, b: Uint16Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('HashScope', () => {
  it('sorts (code-unit order) and dedups members', () => {
    const s = HashScope.build(1, ['fd-b', 'fd-a', 'FD-z', 'fd-b', 'fd-10', 'fd-9'], 251);
    expect(s.members).toEqual(['FD-z', 'fd-10', 'fd-9', 'fd-a', 'fd-b']);
    expect(Object.isFrozen(s.members)).toBe(true);
    expect(s.version).toBe(1);
    expect(s.size).toBe(251);
    expect(s.table.length).toBe(251);
    expect(sameBytes(s.table, buildMaglevTable(['FD-z', 'fd-10', 'fd-9', 'fd-a', 'fd-b'], 251))).toBe(true);
  });

  it('same members in any order (with repeats, from any iterable) give the identical table', () => {
    const base = Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}:7000`);
    const ref = HashScope.build(7, base);
    for (let seed = 1; seed <= 6; seed++) {
      const input = shuffled([...base, ...base.slice(0, seed)], seed);
      const s = HashScope.build(7, seed % 2 === 0 ? input.values() : input); // array or iterator
      expect(s.members).toEqual(ref.members);
      expect(sameBytes(s.table, ref.table), `shuffle seed ${seed}`).toBe(true);
    }
  });

  it('same members in any order give the identical table (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^[a-z0-9.:-]{1,10}$/), { minLength: 1, maxLength: 30 }),
        fc.nat(),
        (members, seed) => sameBytes(HashScope.build(1, members, 1009).table, HashScope.build(1, shuffled(members, seed), 1009).table),
      ),
      { seed: 5, numRuns: 200 },
    );
  });

  it('pick / memberOf map a hash to table[(hash >>> 0) % size]', () => {
    const s = HashScope.build(3, ['a', 'b', 'c', 'd'], 13);
    const r = mulberry32(9);
    for (let k = 0; k < 1000; k++) {
      const h = r();
      const idx = s.table[h % 13]!;
      expect(s.pick(h)).toBe(idx);
      expect(s.pick(h | 0)).toBe(idx); // negative int32 form of the same hash
      expect(s.memberOf(h)).toBe(s.members[idx]);
    }
    const h = hashFiveTuple(0x0a000001, 0x0a000002, 1234, 80, 6, 0);
    expect(s.members).toContain(s.memberOf(h));
    expect(s.indexOf('c')).toBe(2);
    expect(s.indexOf('zz')).toBe(-1);
    expect(s.has('d')).toBe(true);
  });

  it('rejects a bad version, an empty scope and a non-prime size', () => {
    for (const v of [-1, 1.5, NaN, Number.MAX_SAFE_INTEGER + 1]) {
      let err: unknown;
      try {
        HashScope.build(v, ['a']);
      } catch (e) {
        err = e;
      }
      expect(isBatonError(err, ErrorCode.BAD_ARGUMENT), `version ${v}`).toBe(true);
      expect((err as Error).message).toMatch(/version .* must be a non-negative safe integer/);
    }
    expect(() => HashScope.build(1, [])).toThrow(/members is empty/);
    try {
      HashScope.build(1, new Set<string>());
      expect.unreachable();
    } catch (e) {
      expect(isBatonError(e, ErrorCode.EMPTY_SCOPE)).toBe(true);
    }
    try {
      HashScope.build(1, ['a'], 100);
      expect.unreachable();
    } catch (e) {
      expect(isBatonError(e, ErrorCode.BAD_ARGUMENT)).toBe(true);
      expect((e as Error).message).toMatch(/size 100 must be a prime/);
    }
  });
});

describe('ScopeHolder', () => {
  const v1 = HashScope.build(1, ['a', 'b', 'c'], 13);
  const v2 = HashScope.build(2, ['a', 'b'], 13);
  const v3 = HashScope.build(3, ['a'], 13);

  it('swaps only to a newer version; same or older versions are no-ops (idempotent)', () => {
    const h = new ScopeHolder(v1);
    expect(h.current).toBe(v1);
    expect(h.apply(v1)).toBe(false);
    expect(h.apply(HashScope.build(1, ['x'], 13))).toBe(false);
    expect(h.current).toBe(v1);
    expect(h.apply(v2)).toBe(true);
    expect(h.current).toBe(v2);
    expect(h.apply(v2)).toBe(false);
    expect(h.apply(v1)).toBe(false);
    expect(h.current).toBe(v2);
    expect(h.apply(v3)).toBe(true);
    expect(h.apply(v2)).toBe(false);
    expect(h.current).toBe(v3);
  });

  it('any delivery order of a set of versions ends on the highest, with one swap per increase', () => {
    const scopes = [1, 2, 3, 4, 5, 6].map((v) => HashScope.build(v, [`m${v}`, 'base'], 13));
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...scopes), { minLength: 1, maxLength: 20 }), (deliveries) => {
        const h = new ScopeHolder(HashScope.build(0, ['base'], 13));
        let swaps = 0;
        let max = 0;
        for (const s of deliveries) {
          const swapped = h.apply(s);
          if (swapped !== s.version > max) return false;
          if (swapped) {
            swaps++;
            max = s.version;
          }
        }
        return h.current.version === max && swaps > 0;
      }),
      { seed: 11, numRuns: 300 },
    );
  });

  it('notifies listeners on a swap only, with (next, prev); unsubscribe works', () => {
    const h = new ScopeHolder(v1);
    const seen: Array<[number, number]> = [];
    const off = h.onSwap((next, prev) => seen.push([next.version, prev.version]));
    h.apply(v1);
    h.apply(v2);
    h.apply(v2);
    off();
    h.apply(v3);
    expect(seen).toEqual([[2, 1]]);
  });

  it('a throwing listener does not undo the swap or starve other listeners', () => {
    const h = new ScopeHolder(v1);
    const calls: string[] = [];
    h.onSwap(() => {
      calls.push('first');
      throw new Error('boom');
    });
    h.onSwap(() => calls.push('second'));
    expect(() => h.apply(v2)).toThrow('boom');
    expect(h.current).toBe(v2);
    expect(calls).toEqual(['first', 'second']);
  });
});
