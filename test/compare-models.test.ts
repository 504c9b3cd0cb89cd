/**
 * The comparison's strategy models (simulations/compare/, docs/comparison.md)
 * on small hand-made traces, where the expected number of broken
 * connections follows from the model's rule and is worked out here
 * independently of the runner.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_TRACE, type Trace } from '../simulations/compare/trace.js';
import type { Scenario, ChurnEvent } from '../simulations/compare/churn.js';
import type { Step } from '../simulations/compare/strategy.js';
import { run } from '../simulations/compare/runner.js';
import { ModuloModel } from '../simulations/compare/models/modulo.js';
import { MaglevModel } from '../simulations/compare/models/maglev.js';
import { GlbModel } from '../simulations/compare/models/glb.js';
import { BeamerModel } from '../simulations/compare/models/beamer.js';
import { BatonFlow } from '../simulations/compare/baton-flow.js';
import { flowHash, Router } from '../simulations/compare/router.js';
import { buildMaglevTable } from '../shared/scope/maglev.js';
import { IPPROTO_TCP } from '../shared/packet/meta.js';

/** n TCP connections, all open over [startS, endS), 100 packets each, distinct clients. */
function trace(n: number, startS = -1, endS = 100, durationS = 30): Trace {
  const t: Trace = {
    params: { ...DEFAULT_TRACE, concurrent: n, durationS },
    n,
    ratePerS: 1,
    meanS: 1,
    srcIp: new Uint32Array(n),
    srcPort: new Uint16Array(n),
    proto: new Uint8Array(n).fill(IPPROTO_TCP),
    start: new Float64Array(n).fill(startS * 1000),
    end: new Float64Array(n).fill(endS * 1000),
    packets: new Float64Array(n).fill(100),
  };
  for (let i = 0; i < n; i++) {
    t.srcIp[i] = (0x64400000 + i * 7919) >>> 0;
    t.srcPort[i] = 1024 + (i % 60000);
  }
  return t;
}

const names = (p: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${p}-${i + 1}`);

function scenario(fds: number, backends: number, extraBackends: number, events: [number, string, Step][]): Scenario {
  const evs: ChurnEvent[] = events.map(([atS, label, step]) => ({ atS, label, graceful: true, steps: [{ atS, step }] }));
  return { name: 'hand-made', fds: names('fd', fds), allFds: names('fd', fds + 1), backends: names('svc', backends), allBackends: names('svc', backends + extraBackends), events: evs, failureWindowS: 3 };
}

describe('modulo', () => {
  it('a backend added breaks exactly the connections whose hash mod n changes; balancer churn breaks none', () => {
    const tr = trace(2000);
    const sc = scenario(4, 4, 1, [
      [2, 'fd-2 leaves', { kind: 'fd-leave', fds: ['fd-2'] }],
      [4, 'svc-5 added', { kind: 'backend-add', backend: 'svc-5' }],
    ]);
    let moved = 0;
    for (let f = 0; f < tr.n; f++) {
      const h = flowHash(tr, f, 0x6d6f64);
      if (h % 4 !== h % 5) moved++;
    }
    const r = run(new ModuloModel(), tr, sc);
    expect(r.events[0]!.broken).toBe(0);
    expect(r.events[1]!.broken).toBe(moved);
    expect(moved).toBeGreaterThan(1400); // about 4/5 of them
  });
});

describe('maglev/katran', () => {
  it('a balancer leaving breaks nothing while the backends stay the same (the next balancer computes the same backend)', () => {
    const r = run(new MaglevModel(), trace(2000), scenario(4, 4, 0, [[2, 'fd-2 leaves', { kind: 'fd-leave', fds: ['fd-2'] }]]));
    expect(r.events[0]!.broken).toBe(0);
    expect(r.total.statePerFlow).toBeCloseTo(1, 5);
  });

  it('after a backend is added, a balancer leaving breaks its connections whose Maglev entry changed', () => {
    const tr = trace(3000);
    const sc = scenario(4, 4, 1, [
      [2, 'svc-5 added', { kind: 'backend-add', backend: 'svc-5' }],
      [4, 'fd-2 leaves', { kind: 'fd-leave', fds: ['fd-2'] }],
    ]);
    // Worked out directly: the connections the router sends to fd-2, whose
    // entry in the 4-backend table differs from the 5-backend table's.
    const router = new Router(tr, sc.fds, sc.allFds);
    const before = buildMaglevTable(names('svc', 4), 65537, 0x6b617472);
    const after = buildMaglevTable(names('svc', 5), 65537, 0x6b617472);
    let expected = 0;
    for (let f = 0; f < tr.n; f++) {
      const b = flowHash(tr, f, 0x6b617472) % 65537;
      if (router.pick(f) === 1 && before[b] !== after[b]) expected++;
    }
    const r = run(new MaglevModel(), tr, sc);
    expect(r.events[0]!.broken).toBe(0); // the connection tables hold them
    expect(r.events[1]!.broken).toBe(expected);
    expect(expected).toBeGreaterThan(50);
    // Without connection tables every moved entry breaks at once.
    const s = run(new MaglevModel(false), tr, sc);
    expect(s.events[0]!.broken).toBeGreaterThan(expected);
  });
});

describe('glb director', () => {
  it('one drain breaks nothing: the drained server is secondary where it was primary, and gets its packets by second chance', () => {
    const r = run(new GlbModel(), trace(2000), scenario(2, 4, 0, [[2, 'svc-1 drained', { kind: 'backend-drain', backend: 'svc-1' }]]));
    expect(r.events[0]!.broken).toBe(0);
    expect(r.events[0]!.extraHopsPerPacket).toBeCloseTo(0.25, 1); // svc-1's quarter of the connections take one extra hop
  });

  it('two servers added while a drain is not finished break the drained server connections that fall out of their row', () => {
    const tr = trace(4000);
    const sc = scenario(2, 4, 2, [
      [2, 'svc-1 drained', { kind: 'backend-drain', backend: 'svc-1' }],
      [4, 'svc-5 added', { kind: 'backend-add', backend: 'svc-5' }],
      [6, 'svc-6 added', { kind: 'backend-add', backend: 'svc-6' }],
    ]);
    const m = new GlbModel();
    const r = run(m, tr, sc);
    // By hand: after the add, a connection on svc-1 (index 0) survives only
    // where svc-1 is still primary or secondary of its row.
    const check = new GlbModel();
    check.init({ trace: tr, fds: sc.fds, allFds: sc.allFds, backends: sc.backends, allBackends: sc.allBackends, backendOf: new Int32Array(tr.n), alive: new Uint8Array(tr.n) });
    const held = Int16Array.from(check.primary); // at t = 0 every connection is on its row's primary
    check.step({ kind: 'backend-drain', backend: 'svc-1' });
    check.step({ kind: 'backend-add', backend: 'svc-5' });
    const afterOne = { p: Int16Array.from(check.primary), s: Int16Array.from(check.secondary) };
    check.step({ kind: 'backend-add', backend: 'svc-6' });
    let expected = 0;
    let afterOneBroken = 0;
    for (let f = 0; f < tr.n; f++) {
      const row = check.rowOf(f);
      const b = held[row]!;
      if (b !== afterOne.p[row] && b !== afterOne.s[row]) afterOneBroken++;
      else if (b !== check.primary[row] && b !== check.secondary[row]) expected++;
    }
    expect(afterOneBroken).toBe(0); // one add during a drain is safe: the drained server stays in its rows' top two
    expect(r.events[0]!.broken).toBe(0);
    expect(r.events[1]!.broken).toBe(0);
    expect(r.events[2]!.broken).toBe(expected);
    expect(expected).toBeGreaterThan(0);
  });

  it('director churn breaks nothing', () => {
    const r = run(new GlbModel(), trace(1000), scenario(4, 4, 0, [[2, 'fd-1 leaves', { kind: 'fd-leave', fds: ['fd-1'] }]]));
    expect(r.total.broken).toBe(0);
  });
});

describe('beamer', () => {
  it('one drain breaks nothing (daisy chained to the drained server); a bucket moved twice breaks the connections two servers back', () => {
    const tr = trace(4000);
    const one = run(new BeamerModel(), tr, scenario(2, 3, 0, [[2, 'svc-1 drained', { kind: 'backend-drain', backend: 'svc-1' }]]));
    expect(one.events[0]!.broken).toBe(0);
    expect(one.events[0]!.extraHopsPerPacket).toBeGreaterThan(0.2);

    const sc = scenario(2, 3, 0, [
      [2, 'svc-1 drained', { kind: 'backend-drain', backend: 'svc-1' }],
      [4, 'svc-2 drained', { kind: 'backend-drain', backend: 'svc-2' }],
    ]);
    // By hand: svc-1's buckets went to svc-2 or svc-3 at t = 2; those that
    // went to svc-2 move again to svc-3 at t = 4 and remember only svc-2, so
    // svc-1's connections in them break; svc-2's own connections are chained.
    const m = new BeamerModel();
    m.init({ trace: tr, fds: sc.fds, allFds: sc.allFds, backends: sc.backends, allBackends: sc.allBackends, backendOf: new Int32Array(tr.n), alive: new Uint8Array(tr.n) });
    const first = Int16Array.from(m.cur);
    m.step({ kind: 'backend-drain', backend: 'svc-1' }, 2000);
    const second = Int16Array.from(m.cur);
    let expected = 0;
    for (let f = 0; f < tr.n; f++) {
      const k = flowHash(tr, f, 0x6265616d) % m.buckets;
      if (first[k] === 0 && second[k] === 1) expected++;
    }
    const r = run(new BeamerModel(), tr, sc);
    expect(r.events[0]!.broken).toBe(0);
    expect(r.events[1]!.broken).toBe(expected);
    expect(expected).toBeGreaterThan(100);
  });
});

describe('baton at flow level (the real FlowHandler, scope, inheritor selection and flow export)', () => {
  const events: [number, string, Step][] = [
    [2, 'svc-5 added', { kind: 'backend-add', backend: 'svc-5' }],
    [4, 'fd-2 leaves', { kind: 'fd-leave', fds: ['fd-2'] }],
    [6, 'fd-5 joins', { kind: 'fd-join', fds: ['fd-5'] }],
    [8, 'svc-1 drained', { kind: 'backend-drain', backend: 'svc-1' }],
    [10, 'fd-1 and fd-3 leave', { kind: 'fd-leave', fds: ['fd-1', 'fd-3'] }],
  ];
  for (const policy of ['least-flows', 'hash-aligned', 'spread']) {
    it(`graceful churn breaks no connection opened since the start (${policy})`, () => {
      const tr = trace(3000, 0);
      const r = run(new BatonFlow({ policy }), tr, scenario(4, 4, 1, events));
      expect(r.total.broken).toBe(0);
      expect(r.refusedAtOpen).toBe(0);
      expect(r.total.statePerFlow).toBeGreaterThan(4); // 2 entries at each FD in service (2 to 4 of them here)
    });
  }

  it('a failure breaks exactly the connections the dead FD owned (no replication yet), after the detection window', () => {
    const tr = trace(3000, 0);
    const sc = scenario(4, 4, 0, []);
    sc.events = [{ atS: 2, label: 'fd-2 fails', graceful: false, steps: [{ atS: 2, step: { kind: 'fd-fail', fds: ['fd-2'] } }, { atS: 5, step: { kind: 'fd-fail-detected', fds: ['fd-2'] } }] }];
    // The owner of each connection is the FD its SYN reached: the hash tier's pick (no change before the failure).
    const router = new Router(tr, sc.fds, sc.allFds);
    let owned = 0;
    for (let f = 0; f < tr.n; f++) if (router.pick(f) === 1) owned++;
    const r = run(new BatonFlow(), tr, sc);
    expect(r.events[0]!.broken).toBe(owned);
    expect(r.events[0]!.lostInWindowPackets).toBeGreaterThan(0);
  });
});
