/**
 * A small comparison run (simulations/compare/, docs/comparison.md), and its
 * cross-check against the whole cluster in memory: real packets through the
 * real nodes (simulations/in-memory-cluster.ts) across the same kind of
 * disengage, so the flow-level model of Baton and the node code agree on
 * when connections survive and when they do not.
 */
import { describe, expect, it } from 'vitest';
import { compareField, compareCheetah } from '../simulations/compare/compare.js';
import { run } from '../simulations/compare/runner.js';
import { BatonFlow } from '../simulations/compare/baton-flow.js';
import { DEFAULT_TRACE, makeTrace } from '../simulations/compare/trace.js';
import type { Scenario } from '../simulations/compare/churn.js';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { configureLogging } from '../shared/observability/logger.js';

describe('comparison, small', () => {
  it('field churn: Baton hash-aligned breaks nothing on the graceful events that move no connection older than idleMs between two non-owners; the others show their known weaknesses', () => {
    const { scenario, results } = compareField({ fds: 8, backends: 8, flows: 3000, seed: 7 });
    const by = new Map(results.map((r) => [r.strategy, r]));
    const baton = by.get('baton (hash-aligned)')!;
    const idx = (re: RegExp): number => scenario.events.findIndex((e) => re.test(e.label));
    // A disengage hands every flow to the FD the next scope sends it to: nothing to break.
    for (const i of [idx(/FD leaves gracefully/), idx(/FDs leave at once/), idx(/backend added/), idx(/backend removed/)]) expect(baton.events[i]!.broken).toBe(0);
    expect(by.get('modulo')!.total.broken).toBeGreaterThan(by.get('maglev/katran')!.total.broken);
    expect(by.get('glb director')!.events[idx(/FD fails/)]!.broken).toBe(0); // stateless directors
    expect(by.get('beamer')!.events[idx(/FD fails/)]!.broken).toBe(0);
    expect(baton.total.statePerFlow).toBeGreaterThan(8); // 2 entries at most FDs: the price of redirecting
  }, 120_000);

  it("Cheetah's shape: stateless consistent hashing breaks the most, Beamer a fraction of that, Baton none", () => {
    const { results } = compareCheetah({ seed: 15, flows: 1500 });
    const by = new Map(results.map((r) => [r.strategy, r.total.broken]));
    expect(by.get('baton')).toBe(0);
    expect(by.get('consistent hashing (stateless)')!).toBeGreaterThan(3 * by.get('beamer')!);
    expect(by.get('beamer')!).toBeGreaterThan(0);
  }, 60_000);
});

/** Packets through the in-memory cluster: 60 long TCP flows, a disengage of fd-2 at 3 s. */
async function packetLevel(idleMs: number, policy: string): Promise<number> {
  configureLogging({ silent: true });
  const c = new InMemoryCluster({ flowTable: { idleMs } });
  await c.start();
  try {
    const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen = new TrafficGenerator(
      { concurrency: 60, totalFlows: 60, packetsPerFlow: 400, udpRatio: 0, ratePps: 6000, durationMs: 6000, progressIntervalMs: 1_000_000 },
      { socket, scheduler: c.scheduler, target: c.hashTierData },
    );
    const done = gen.run();
    await c.runFor(3000);
    await c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-2', policy }), 30_000);
    const r = await c.drive(done, 60_000);
    return r.lost;
  } finally {
    await c.stop();
  }
}

/** The same at flow level: 3 FDs, long TCP connections, fd-2 leaves at 3 s. */
function flowLevel(idleMs: number, policy: string): number {
  const trace = makeTrace({ ...DEFAULT_TRACE, seed: 3, concurrent: 300, durationS: 8, medianS: 60, sigma: 0.1, udpRatio: 0 });
  // Started at t >= 0, so their entries are learned by every peer, then idle there.
  const sc: Scenario = {
    name: 'cross-check',
    fds: ['fd-1', 'fd-2', 'fd-3'],
    allFds: ['fd-1', 'fd-2', 'fd-3'],
    backends: ['svc-1', 'svc-2', 'svc-3', 'svc-4'],
    allBackends: ['svc-1', 'svc-2', 'svc-3', 'svc-4'],
    failureWindowS: 3,
    events: [{ atS: 6, label: 'fd-2 leaves', graceful: true, steps: [{ atS: 6, step: { kind: 'fd-leave', fds: ['fd-2'] } }] }],
  };
  for (let i = 0; i < trace.n; i++) trace.start[i] = Math.max(0, trace.start[i]!); // the warm population opens at 0 too
  // Evaluated (a packet per connection) well within idleMs, as continuous traffic would touch the owners' entries.
  return run(new BatonFlow({ idleMs, policy }), trace, sc, { evalMs: 200, tickMs: 100, binMs: 500 }).events[0]!.broken;
}

describe('cross-check: flow-level Baton against the in-memory cluster (real packets, real nodes)', () => {
  it('a disengage loses nothing while the peers still hold the connections (idleMs longer than the connections)', async () => {
    expect(await packetLevel(120_000, 'least-flows')).toBe(0);
    expect(flowLevel(120_000, 'least-flows')).toBe(0);
  }, 120_000);

  it('hash-aligned loses nothing even for connections older than idleMs (the inheritor is where the next scope sends them)', async () => {
    expect(await packetLevel(1000, 'hash-aligned')).toBe(0);
    expect(flowLevel(1000, 'hash-aligned')).toBe(0);
  }, 120_000);

  it('least-flows: connections older than idleMs lose nothing either (learned entries outlive idleMs and owners re-announce their flows: docs/comparison.md, "Findings")', async () => {
    expect(await packetLevel(1000, 'least-flows')).toBe(0);
    expect(flowLevel(1000, 'least-flows')).toBe(0);
  }, 120_000);
});
