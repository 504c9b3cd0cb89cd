import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import v8 from 'node:v8';
import { exposeGc } from './helpers/alloc.js';
import { FlowTable, NetAction, FlowFlag, OWNER_NONE, MAX_FLOWS_LIMIT, SLOT_WORDS, flowHash } from '../distributor/flow-table.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import { mulberry32 } from '../shared/random.js';

type Key = readonly [srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number];
type Val = { owner: number; net: number; app: number; rwIp: number; rwPort: number; flags: number; seen: number; packets: number; bytes: number };

const keyStr = (k: Key): string => k.join(',');
const keyAt = (t: FlowTable, s: number): Key => [t.srcIp(s), t.dstIp(s), t.srcPort(s), t.dstPort(s), t.proto(s)];
const valAt = (t: FlowTable, s: number): Val => ({
  owner: t.owner(s),
  net: t.netAction(s),
  app: t.appAction(s),
  rwIp: t.rewriteIp(s),
  rwPort: t.rewritePort(s),
  flags: t.flags(s),
  seen: t.lastSeen(s),
  packets: t.packets(s),
  bytes: t.bytes(s),
});
const ins = (t: FlowTable, k: Key, v: Omit<Val, 'packets' | 'bytes'>): number =>
  t.insert(k[0], k[1], k[2], k[3], k[4], v.owner, v.net, v.app, v.rwIp, v.rwPort, v.flags, v.seen);
const find = (t: FlowTable, k: Key): number => t.find(k[0], k[1], k[2], k[3], k[4]);

function expectBatonError(fn: () => unknown, code: string, messagePart: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isBatonError(caught)).toBe(true);
  expect((caught as { code: string }).code).toBe(code);
  expect((caught as Error).message).toContain(messagePart);
}

describe('FlowTable constructor', () => {
  const bad: Array<[string, () => unknown, string]> = [
    ['maxFlows 0', () => new FlowTable(0), 'maxFlows'],
    ['maxFlows negative', () => new FlowTable(-5), 'maxFlows'],
    ['maxFlows fractional', () => new FlowTable(10.5), 'maxFlows'],
    ['maxFlows NaN', () => new FlowTable(Number.NaN), 'maxFlows'],
    ['maxFlows over limit', () => new FlowTable(MAX_FLOWS_LIMIT + 1), 'maxFlows'],
    ['maxFlows string', () => new FlowTable('100' as unknown as number), 'maxFlows'],
    ['loadFactor 0', () => new FlowTable(10, { loadFactor: 0 }), 'loadFactor'],
    ['loadFactor negative', () => new FlowTable(10, { loadFactor: -0.5 }), 'loadFactor'],
    ['loadFactor 0.96', () => new FlowTable(10, { loadFactor: 0.96 }), 'loadFactor'],
    ['loadFactor 1', () => new FlowTable(10, { loadFactor: 1 }), 'loadFactor'],
    ['loadFactor NaN', () => new FlowTable(10, { loadFactor: Number.NaN }), 'loadFactor'],
    ['loadFactor too small for memory bound', () => new FlowTable(1_000_000, { loadFactor: 1e-3 }), 'loadFactor'],
    ['seed fractional', () => new FlowTable(10, { seed: 1.5 }), 'seed'],
  ];
  it.each(bad)('rejects %s with BAD_ARGUMENT naming the field', (_name, fn, field) => {
    expectBatonError(fn, ErrorCode.BAD_ARGUMENT, field);
  });

  it('accepts the boundaries and sizes slots = ceil(maxFlows / loadFactor)', () => {
    expect(new FlowTable(1).slots).toBe(2);
    expect(new FlowTable(1000, { loadFactor: 0.95 }).slots).toBe(Math.ceil(1000 / 0.95));
    const t = new FlowTable(1000);
    expect(t.loadFactor).toBe(0.8);
    expect(t.slots).toBe(1250);
    expect(t.maxFlows).toBe(1000);
    expect(t.size).toBe(0);
    expect(t.bytesAllocated).toBe(1250 * (SLOT_WORDS * 4 + 1) + 8);
  });

  it('uses at most 48 bytes per flow at 1 M maxFlows with the default load factor', () => {
    const t = new FlowTable(1_000_000);
    expect(t.bytesAllocated / t.maxFlows).toBeLessThanOrEqual(48);
    expect(t.bytesAllocated / t.maxFlows).toBeCloseTo(46.25, 2);
  });
});

describe('FlowTable basic operations', () => {
  it('stores every field at its full width and masks wider inputs', () => {
    const t = new FlowTable(64, { seed: 1 });
    const k: Key = [0xffffffff, 0x0a000001, 65535, 0, 255];
    const s = t.insert(k[0], k[1], k[2], k[3], k[4], 0xfffe, NetAction.REDIRECT, 0xfff, 0xfffffffe, 65535, 0xff, 0xfffffff0);
    expect(s).toBeGreaterThanOrEqual(0);
    expect(keyAt(t, s)).toEqual(k);
    expect(valAt(t, s)).toEqual({ owner: 0xfffe, net: 2, app: 0xfff, rwIp: 0xfffffffe, rwPort: 65535, flags: 0xff, seen: 0xfffffff0, packets: 0, bytes: 0 });

    const s2 = t.insert(1, 2, 0x1ffff, 0x10002, 0x106, 0x1ffff, 0x13, 0x1abc, 5, 0x10050, 0x1ff, 1e3 + 0.75);
    expect(keyAt(t, s2)).toEqual([1, 2, 0xffff, 2, 6]);
    expect(valAt(t, s2)).toEqual({ owner: 0xffff, net: 3, app: 0xabc, rwIp: 5, rwPort: 0x50, flags: 0xff, seen: 1000, packets: 0, bytes: 0 });
    expect(t.size).toBe(2);
  });

  it('treats int32 and uint32 spellings of an address as the same key', () => {
    const t = new FlowTable(16, { seed: 2 });
    const s = t.insert(-1, 0xc0000201 | 0, 1, 2, 6, 1, 0, 0, 0, 0, 0, 0);
    expect(t.find(0xffffffff, 0xc0000201, 1, 2, 6)).toBe(s);
    expect(t.srcIp(s)).toBe(0xffffffff);
  });

  it('overwrites the value of an existing key in place and resets its counters', () => {
    const t = new FlowTable(16, { seed: 3 });
    const s = t.insert(1, 2, 3, 4, 6, 7, NetAction.FORWARD, 1, 0, 0, FlowFlag.REVERSE, 10);
    t.touch(s, 100, 20);
    expect(t.packets(s)).toBe(1);
    const s2 = t.insert(1, 2, 3, 4, 6, 9, NetAction.REWRITE, 2, 0x0a000009, 8080, FlowFlag.REWRITE_SRC, 30);
    expect(s2).toBe(s);
    expect(t.size).toBe(1);
    expect(valAt(t, s)).toEqual({ owner: 9, net: 1, app: 2, rwIp: 0x0a000009, rwPort: 8080, flags: FlowFlag.REWRITE_SRC, seen: 30, packets: 0, bytes: 0 });
  });

  it('distinguishes keys that differ in exactly one field', () => {
    const t = new FlowTable(32, { seed: 4 });
    const base: Key = [10, 20, 30, 40, 6];
    const variants: Key[] = [base, [11, 20, 30, 40, 6], [10, 21, 30, 40, 6], [10, 20, 31, 40, 6], [10, 20, 30, 41, 6], [10, 20, 30, 40, 17], [20, 10, 40, 30, 6]];
    variants.forEach((k, i) => ins(t, k, { owner: i, net: 0, app: 0, rwIp: 0, rwPort: 0, flags: 0, seen: 0 }));
    expect(t.size).toBe(variants.length);
    variants.forEach((k, i) => expect(t.owner(find(t, k))).toBe(i));
    expect(t.find(10, 20, 30, 40, 1)).toBe(-1);
  });

  it('setters change only their fields', () => {
    const t = new FlowTable(16, { seed: 5 });
    const s = t.insert(1, 2, 3, 4, 17, 5, NetAction.FORWARD, 6, 7, 8, 1, 9);
    t.setOwner(s, OWNER_NONE);
    t.setFlags(s, FlowFlag.CLOSING | FlowFlag.REVERSE);
    expect(keyAt(t, s)).toEqual([1, 2, 3, 4, 17]);
    expect(valAt(t, s)).toMatchObject({ owner: OWNER_NONE, flags: 5, net: 0, app: 6, rwIp: 7, rwPort: 8 });
    t.setAction(s, NetAction.REDIRECT, 0xfff, 0xffffffff, 65535);
    expect(valAt(t, s)).toMatchObject({ owner: OWNER_NONE, flags: 5, net: 2, app: 0xfff, rwIp: 0xffffffff, rwPort: 65535 });
    t.setCounters(s, 0xffffffff, 123, 456);
    expect(valAt(t, s)).toMatchObject({ packets: 0xffffffff, bytes: 123, seen: 456 });
    expect(t.find(1, 2, 3, 4, 17)).toBe(s);
  });

  it('touch counts packets and bytes modulo 2^32 and records lastSeen modulo 2^32', () => {
    const t = new FlowTable(16, { seed: 6 });
    const s = t.insert(1, 2, 3, 4, 6, 1, 0, 0, 0, 0, 0, 0);
    t.touch(s, 1500, 100.9);
    t.touch(s, 40, 200);
    expect([t.packets(s), t.bytes(s), t.lastSeen(s)]).toEqual([2, 1540, 200]);
    t.setCounters(s, 0xffffffff, 0xfffffff0, 0);
    t.touch(s, 0x20, 2 ** 32 + 5);
    expect([t.packets(s), t.bytes(s), t.lastSeen(s)]).toEqual([0, 0x10, 5]);
    // idle time across the 2^32 ms wrap
    t.setCounters(s, 0, 0, 0xfffffff0);
    expect(t.idleFor(s, 2 ** 32 + 0x10)).toBe(0x20);
    expect(t.latestNowMs).toBe(2 ** 32 + 5);
  });

  it('a full table returns -1 for new keys, still updates existing keys, and insertOrThrow throws TABLE_FULL', () => {
    const t = new FlowTable(10, { seed: 7, loadFactor: 0.95 });
    for (let i = 0; i < 10; i++) expect(t.insert(i, 1, 2, 3, 6, 1, 0, 0, 0, 0, 0, 0)).toBeGreaterThanOrEqual(0);
    expect(t.size).toBe(10);
    expect(t.insert(99, 1, 2, 3, 6, 1, 0, 0, 0, 0, 0, 0)).toBe(-1);
    expect(t.size).toBe(10);
    const s = t.insert(3, 1, 2, 3, 6, 42, 0, 0, 0, 0, 0, 0);
    expect(s).toBe(t.find(3, 1, 2, 3, 6));
    expect(t.owner(s)).toBe(42);
    expectBatonError(() => t.insertOrThrow(99, 1, 2, 3, 6, 1, 0, 0, 0, 0, 0, 0), ErrorCode.TABLE_FULL, 'capacity');
    expectBatonError(() => t.insertOrThrow(99, 1, 2, 3, 6, 1, 0, 0, 0, 0, 0, 0), ErrorCode.TABLE_FULL, '10');
    expect(t.insertOrThrow(3, 1, 2, 3, 6, 43, 0, 0, 0, 0, 0, 0)).toBe(s);
    t.remove(0, 1, 2, 3, 6);
    expect(t.insertOrThrow(99, 1, 2, 3, 6, 1, 0, 0, 0, 0, 0, 0)).toBeGreaterThanOrEqual(0);
  });

  it('hot-path methods ignore bad slots instead of throwing', () => {
    const t = new FlowTable(8, { seed: 8 });
    const s = t.insert(1, 2, 3, 4, 6, 1, 0, 0, 0, 0, 0, 0);
    const empty = s === 0 ? 1 : 0;
    for (const bad of [-1, t.slots, t.slots + 5, empty, Number.NaN, 1e12]) t.removeAt(bad);
    expect(t.size).toBe(1);
    expect(t.nextOccupied(-10)).toBe(s);
    expect(t.nextOccupied(s + 1)).toBe(-1);
    expect(t.nextOccupied(t.slots)).toBe(-1);
    expect(t.remove(9, 9, 9, 9, 6)).toBe(false);
  });

  it('clear empties the table and it can be refilled', () => {
    const t = new FlowTable(100, { seed: 9 });
    for (let i = 0; i < 100; i++) t.insert(i, i, i, i, 6, 1, 0, 0, 0, 0, 0, 0);
    const m = t.mutations;
    t.clear();
    expect(t.size).toBe(0);
    expect(t.mutations).toBeGreaterThan(m);
    expect(t.nextOccupied(0)).toBe(-1);
    for (let i = 0; i < 100; i++) expect(t.find(i, i, i, i, 6)).toBe(-1);
    for (let i = 0; i < 100; i++) expect(t.insert(i, i, i, i, 17, 1, 0, 0, 0, 0, 0, 0)).toBeGreaterThanOrEqual(0);
    expect(t.size).toBe(100);
    expect(t.checkInvariants()).toBeNull();
  });
});

describe('FlowTable against a Map model (property)', () => {
  // Small key space so that keys repeat, collide and form long runs; small
  // tables at high load factors so runs wrap around the end of the array.
  const keyArb = fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 }), fc.constantFrom(80, 443), fc.constantFrom(6, 17));
  const opArb = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('insert' as const), key: keyArb, owner: fc.integer({ min: 0, max: 0xffff }), seen: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), key: keyArb }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('removeAt' as const), pick: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('touch' as const), key: keyArb, bytes: fc.integer({ min: 0, max: 9000 }) }) },
  );

  it('insert/find/remove/removeAt/iterate agree with the model', () => {
    let wrapped = 0; // entries seen in a slot below their home (run wrapped around the end)
    let moved = 0; // removals that moved another entry (backward shift happened)
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.constantFrom(0.5, 0.8, 0.95),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(opArb, { maxLength: 150 }),
        (maxFlows, lf, seed, ops) => {
          const t = new FlowTable(maxFlows, { loadFactor: lf, seed });
          const model = new Map<string, { key: Key; owner: number; seen: number; packets: number; bytes: number }>();
          for (const o of ops) {
            if (o.op === 'insert') {
              const k = o.key as Key;
              const s = t.insert(k[0], k[1], k[2], k[3], k[4], o.owner, NetAction.FORWARD, 0, 0, 0, 0, o.seen);
              const existed = model.has(keyStr(k));
              if (!existed && model.size === maxFlows) {
                expect(s).toBe(-1);
              } else {
                expect(s).toBeGreaterThanOrEqual(0);
                model.set(keyStr(k), { key: k, owner: o.owner, seen: o.seen, packets: 0, bytes: 0 });
              }
            } else if (o.op === 'remove') {
              expect(t.remove(...(o.key as Key))).toBe(model.delete(keyStr(o.key as Key)));
            } else if (o.op === 'removeAt') {
              if (model.size === 0) continue;
              // pick the n-th occupied slot via iteration
              let s = t.nextOccupied(0);
              for (let n = o.pick % model.size; n > 0; n--) s = t.nextOccupied(s + 1);
              const k = keyAt(t, s);
              const before = new Map([...model.keys()].filter((x) => x !== keyStr(k)).map((x) => [x, find(t, model.get(x)!.key)]));
              t.removeAt(s);
              model.delete(keyStr(k));
              for (const [x, slot] of before) if (find(t, model.get(x)!.key) !== slot) moved++;
            } else {
              const k = o.key as Key;
              const s = find(t, k);
              const m = model.get(keyStr(k));
              expect(s >= 0).toBe(m !== undefined);
              if (m) {
                t.touch(s, o.bytes, 77);
                m.packets++;
                m.bytes += o.bytes;
                m.seen = 77;
              }
            }
            expect(t.size).toBe(model.size);
          }
          expect(t.checkInvariants()).toBeNull();
          // every model key is found with its value
          for (const m of model.values()) {
            const s = find(t, m.key);
            expect(s).toBeGreaterThanOrEqual(0);
            expect([t.owner(s), t.lastSeen(s), t.packets(s), t.bytes(s)]).toEqual([m.owner, m.seen, m.packets, m.bytes]);
            if (s < t.homeOf(s)) wrapped++;
          }
          // iteration yields exactly the model's keys, each once
          const seen: string[] = [];
          for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) seen.push(keyStr(keyAt(t, s)));
          expect(seen.sort()).toEqual([...model.keys()].sort());
        },
      ),
      { seed: 0x5eed, numRuns: 300 },
    );
    // The properties above only mean something if the tricky paths ran.
    expect(wrapped).toBeGreaterThan(0);
    expect(moved).toBeGreaterThan(0);
  });
});

describe('FlowTable runs that wrap around the end of the array', () => {
  // Keys chosen by their home slot (same formula as the table: floor(hash *
  // slots / 2^32)) so that runs start in the last slots and wrap to slot 0,
  // then removed in many seeded orders: backward shift must move wrapped
  // entries across the end of the array and back.
  it('insert and remove in 400 seeded orders keep every remaining key findable', () => {
    const seed = 0xabcdef;
    const probe = new FlowTable(12, { loadFactor: 0.95, seed });
    const slots = probe.slots; // 13
    const homeOf = (k: Key): number => Math.floor(((flowHash(seed, k[0], k[1], (k[2] << 16) | k[3], k[4]) >>> 0) * slots) / 2 ** 32);
    const byHome = new Map<number, Key[]>();
    for (let i = 0; i < 5000; i++) {
      const k: Key = [i, 1, 1000, 80, 6];
      const h = homeOf(k);
      if (!byHome.has(h)) byHome.set(h, []);
      byHome.get(h)!.push(k);
    }
    // 4 keys homed in the last slot, 3 in the one before, 2 in slot 0, 2 in slot 1, 1 in slot 5.
    const pool: Key[] = [
      ...byHome.get(slots - 1)!.slice(0, 4),
      ...byHome.get(slots - 2)!.slice(0, 3),
      ...byHome.get(0)!.slice(0, 2),
      ...byHome.get(1)!.slice(0, 2),
      ...byHome.get(5)!.slice(0, 1),
    ];
    expect(pool).toHaveLength(12);
    let wrappedSeen = 0;
    for (let run = 0; run < 400; run++) {
      const rnd = mulberry32(run);
      const order = pool.slice().sort(() => (rnd() & 1) - 0.5);
      const t = new FlowTable(12, { loadFactor: 0.95, seed });
      order.forEach((k, i) => expect(ins(t, k, { owner: i, net: 0, app: 0, rwIp: 0, rwPort: 0, flags: 0, seen: 0 })).toBeGreaterThanOrEqual(0));
      for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (s < t.homeOf(s)) wrappedSeen++;
      const live = new Map(order.map((k, i) => [keyStr(k), { k, owner: i }]));
      const removal = pool.slice().sort(() => (rnd() & 1) - 0.5);
      for (const k of removal) {
        if ((rnd() & 1) === 0) t.removeAt(find(t, k));
        else expect(t.remove(...k)).toBe(true);
        live.delete(keyStr(k));
        expect(t.checkInvariants()).toBeNull();
        for (const { k: lk, owner } of live.values()) expect(t.owner(find(t, lk))).toBe(owner);
        expect(find(t, k)).toBe(-1);
      }
      expect(t.size).toBe(0);
    }
    expect(wrappedSeen).toBeGreaterThan(100);
  });
});

describe('FlowTable expiry', () => {
  it('removes exactly the idle entries over repeated budgeted steps, never examining more than the budget', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.constantFrom(0.5, 0.8, 0.95),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        (n, lf, seed, budget, now) => {
          const t = new FlowTable(n, { loadFactor: lf, seed });
          const rnd = mulberry32(seed);
          const idleMs = 1000;
          const keep = new Set<string>();
          for (let i = 0; i < n; i++) {
            const age = rnd() % 2000; // half idle (>= 1000), half not
            const k: Key = [rnd() & 0xff, 7, rnd() & 3, 80, 6];
            t.insert(k[0], k[1], k[2], k[3], k[4], 1, 0, 0, 0, 0, 0, (now - age) >>> 0); // may wrap below 0
            if (age < idleMs) keep.add(keyStr(k));
            else keep.delete(keyStr(k)); // duplicate key: the last insert wins
          }
          let advanced = 0;
          let removedTotal = 0;
          const startSize = t.size;
          for (let step = 0; advanced < t.slots; step++) {
            const removed = t.expireStep(now, idleMs, budget);
            expect(t.lastExpireExamined).toBeLessThanOrEqual(budget);
            removedTotal += removed;
            advanced += t.lastExpireExamined - removed;
            if (t.size === 0) break;
            expect(step).toBeLessThan(10_000);
          }
          expect(t.checkInvariants()).toBeNull();
          const left: string[] = [];
          for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) left.push(keyStr(keyAt(t, s)));
          expect(left.sort()).toEqual([...keep].sort());
          expect(removedTotal).toBe(startSize - keep.size);
        },
      ),
      { seed: 0xe4b1, numRuns: 200 },
    );
  });

  it('budget 0 examines nothing; a huge budget terminates after one pass', () => {
    const t = new FlowTable(100, { seed: 11 });
    for (let i = 0; i < 100; i++) t.insert(i, 0, 0, 0, 6, 1, 0, 0, 0, 0, 0, i < 50 ? 0 : 5500);
    expect(t.expireStep(6000, 1000, 0)).toBe(0);
    expect(t.lastExpireExamined).toBe(0);
    expect(t.expireStep(6000, 1000, Number.POSITIVE_INFINITY)).toBe(50);
    expect(t.lastExpireExamined).toBeLessThanOrEqual(2 * t.slots);
    expect(t.size).toBe(50);
    expect(t.expireStep(6000, 0, 1e9)).toBe(50);
    expect(t.size).toBe(0);
  });

  it('touched entries survive expiry', () => {
    const t = new FlowTable(4, { seed: 12 });
    const a = t.insert(1, 1, 1, 1, 6, 1, 0, 0, 0, 0, 0, 0);
    t.insert(2, 2, 2, 2, 6, 1, 0, 0, 0, 0, 0, 0);
    t.touch(a, 10, 900);
    t.expireStep(1500, 1000, 100);
    expect(t.size).toBe(1);
    expect(t.find(1, 1, 1, 1, 6)).toBeGreaterThanOrEqual(0);
  });
});

describe('FlowTable hashing quality', () => {
  // A weak table hash shows up as long probe runs for structured keys.
  const cases: Array<[string, (i: number) => Key]> = [
    ['sequential client addresses', (i) => [0x0a000000 + i, 0xc6336401, 40000, 80, 6]],
    ['one client, sequential source ports', (i) => [0xc0000201, 0xc6336401 + (i >>> 16), i & 0xffff, 443, 6]],
    ['sequential destination ports', (i) => [0x7f000001, 0x7f000001, 5353, i & 0xffff, 17 - ((i >>> 16) & 1) * 11]],
  ];
  it.each(cases)('%s: probe lengths close to the random-hash expectation', (_n, mk) => {
    const n = 100_000;
    const t = new FlowTable(n, { seed: 0x1234 });
    let failed = 0;
    for (let i = 0; i < n; i++) {
      const k = mk(i);
      if (t.insert(k[0], k[1], k[2], k[3], k[4], 1, 0, 0, 0, 0, 0, 0) < 0) failed++;
    }
    expect(failed).toBe(0);
    expect(t.size).toBe(n);
    const st = t.probeStats();
    // Random hashing at load 0.8 with linear probing: mean displacement ~2, ~60% at home.
    expect(st.mean).toBeLessThan(3);
    expect(st.atHome).toBeGreaterThan(0.5);
  });
});

describe('FlowTable hot path allocation', () => {
  // Evidence: 1 M loop iterations (>= 4 table calls each) run with zero
  // garbage collections. Allocating even 16 bytes per call would be 64 MB,
  // many times the young generation, forcing scavenges.
  // Keys are int32 (half of them negative, i.e. uint32 >= 2^31) and times
  // integer ms, as flow-table.ts asks of per-packet callers: a uint32 >= 2^31
  // or a fractional number passed to a call V8 does not inline is boxed by
  // the CALLER. (The young generation here starts at 1 MiB, so even that
  // would show up as dozens of scavenges.)
  it('find/insert/touch/remove/expireStep allocate nothing (no GC during 1 M iterations)', () => {
    const gc = exposeGc();
    const n = 50_000;
    const t = new FlowTable(n, { seed: 13 });
    const rnd = mulberry32(13);
    const keys = new Int32Array(n * 2);
    for (let i = 0; i < keys.length; i++) keys[i] = rnd();
    const run = (rounds: number): number => {
      let acc = 0;
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < n; i++) {
          const a = keys[i]!;
          const b = keys[n + i]!;
          let s = t.find(a, b, i & 0xffff, 80, 6);
          if (s < 0) s = t.insert(a, b, i & 0xffff, 80, 6, 1, NetAction.FORWARD, 0, 0, 0, 0, r * 1000);
          t.touch(s, 100, r * 1000 + 1);
          acc = (acc + t.owner(s) * 2 + t.find(b, a, 80, i & 0xffff, 6)) | 0; // stays a Smi
          if ((i & 7) === 0) t.remove(a, b, i & 0xffff, 80, 6);
        }
        acc = (acc + t.expireStep(r * 1000 + 2, 1e9, 4096)) | 0;
      }
      return acc;
    };
    run(4); // warm-up: JIT, inline caches
    gc();
    const profiler = new v8.GCProfiler();
    profiler.start();
    const acc = run(20);
    const result = profiler.stop();
    expect(acc).toBeGreaterThan(0);
    expect((result?.statistics ?? []).map((s) => s.gcType)).toEqual([]);
  });
});

describe('FlowTable bulk ownership (migration)', () => {
  function mixed(): { t: FlowTable; mine: number[]; mineReverse: number } {
    const t = new FlowTable(500, { seed: 44 });
    const rnd = mulberry32(8);
    let mineReverse = 0;
    for (let i = 0; i < 400; i++) {
      const owner = i % 3 === 0 ? 7 : 9;
      const flags = i % 5 === 0 ? FlowFlag.REVERSE | FlowFlag.CLOSING : 0;
      if (owner === 7 && flags & FlowFlag.REVERSE) mineReverse++;
      t.insert(rnd(), rnd(), rnd() & 0xffff, 80, 6, owner, NetAction.FORWARD, 0, 0, 0, flags, 0);
    }
    const mine: number[] = [];
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === 7) mine.push(s);
    return { t, mine, mineReverse };
  }

  it('slotsOwnedBy lists exactly the owner\'s slots in slot order and counts the reverse ones', () => {
    const { t, mine, mineReverse } = mixed();
    const out = new Int32Array(t.size);
    const rev = new Int32Array(1);
    const n = t.slotsOwnedBy(7, out, rev);
    expect(Array.from(out.subarray(0, n))).toEqual(mine);
    expect(rev[0]).toBe(mineReverse);
    expect(t.slotsOwnedBy(12345, out)).toBe(0);
    // A short output array stops the walk at its length.
    expect(t.slotsOwnedBy(7, new Int32Array(5))).toBe(5);
  });

  it('setOwners gives each listed slot the owner its pick names, and touches nothing else', () => {
    const { t, mine } = mixed();
    const before = new Map<number, number>();
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) before.set(s, t.owner(s));
    const pick = Uint16Array.from(mine, (_, i) => i % 2);
    t.setOwners(Int32Array.from(mine), pick, [21, 0xfffe]);
    mine.forEach((s, i) => {
      expect(t.owner(s)).toBe(i % 2 === 0 ? 21 : 0xfffe);
      expect(t.proto(s)).toBe(6); // the rest of the meta word is kept
    });
    for (const [s, o] of before) if (!mine.includes(s)) expect(t.owner(s)).toBe(o);
    expect(t.checkInvariants()).toBeNull();
  });

  it('commitStaged re-owns exactly the STAGED entries of the given owner and clears their flag', () => {
    const { t, mine } = mixed();
    const staged = mine.filter((_, i) => i % 2 === 0);
    for (const s of staged) t.setFlags(s, t.flags(s) | FlowFlag.STAGED);
    // A STAGED entry of another owner is left alone.
    let foreign = -1;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === 9) foreign = s;
    t.setFlags(foreign, t.flags(foreign) | FlowFlag.STAGED);
    const flagsBefore = new Map(staged.map((s) => [s, t.flags(s) & ~FlowFlag.STAGED]));
    expect(t.commitStaged(7, 21)).toBe(staged.length);
    for (const s of mine) expect(t.owner(s)).toBe(staged.includes(s) ? 21 : 7);
    for (const s of staged) expect(t.flags(s)).toBe(flagsBefore.get(s)); // CLOSING/REVERSE kept
    expect(t.owner(foreign)).toBe(9);
    expect(t.flags(foreign) & FlowFlag.STAGED).toBe(FlowFlag.STAGED);
    expect(t.commitStaged(7, 21)).toBe(0); // once
  });

  it('putRecords adds the given flags to every record it stores', () => {
    const { t, mine } = mixed();
    const src = new Uint32Array(mine.length * 9);
    mine.forEach((s, i) => src.set(t.words.subarray(s * 9, s * 9 + 9), i * 9));
    const u = new FlowTable(500, { seed: 44 });
    expect(u.putRecords(src, mine.length, 7, 0, FlowFlag.STAGED)).toBe(mine.length);
    for (const s of mine) {
      const v = u.find(t.srcIp(s), t.dstIp(s), t.srcPort(s), t.dstPort(s), t.proto(s));
      expect(u.flags(v)).toBe(t.flags(s) | FlowFlag.STAGED);
    }
  });
});
