/**
 * Graceful disengage on virtual time, with the real node code: verified
 * traffic keeps flowing while an FD hands its flows to inheritors; nothing is
 * lost or duplicated; the FD leaves the scope once its flows are handed over,
 * purges only once every tier and member runs the scope without it, and is
 * DISENGAGED only once it is quiet; a timeout never leaves it ACTIVE without
 * its flows; engages wait for disengages; the FD can be engaged again.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { MemberStatus } from '../shared/control/messages.js';
import { statusName } from '../shared/membership/status.js';
import { FD } from '../distributor/fd-counters.js';
import { isBatonError } from '../shared/errors.js';
import { MGR } from '../migration-manager/counters.js';
import { MIG } from '../migration-client/counters.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { FdNode } from '../nodes/fd-node.js';

function status(c: InMemoryCluster, name: string): string {
  return statusName(c.hashTier.manager.registry.byName(name)!.machine.status);
}

/** What the cluster looked like at the moment `fd` purged its table. */
function watchPurge(c: InMemoryCluster, fd: FdNode): { seen: null | { engineHasFd: boolean; engineVersion: number; behind: string[]; tableSize: number } } {
  const out: { seen: null | { engineHasFd: boolean; engineVersion: number; behind: string[]; tableSize: number } } = { seen: null };
  const clear = fd.table.clear.bind(fd.table);
  fd.table.clear = () => {
    if (!out.seen) {
      const engine = c.hashTier.engine.scope!;
      const v = engine.version;
      const behind = [...c.fds.filter((f) => f.agent.scopeVersion < v).map((f) => f.me.name), ...c.services.filter((s) => s.agent.scopeVersion < v).map((s) => s.me.name)];
      out.seen = { engineHasFd: engine.members.includes(fd.me.name), engineVersion: v, behind, tableSize: fd.table.size };
    }
    clear();
  };
  return out;
}

/** Every entry owned by `id` (flow keys as strings). */
function ownedKeys(fd: FdNode, id: number): string[] {
  const t = fd.table;
  const keys: string[] = [];
  for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === id) keys.push(`${t.srcIp(s)}:${t.srcPort(s)}>${t.dstIp(s)}:${t.dstPort(s)}/${t.proto(s)}`);
  return keys;
}

async function withTraffic(c: InMemoryCluster, opts: TrafficOptions, during: () => Promise<void>) {
  const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator(opts, { socket, scheduler: c.scheduler, target: c.hashTierData });
  const done = gen.run();
  await c.runFor(200); // flows established, data flowing
  await during();
  return c.drive(done, 120_000);
}

describe('disengage (in memory, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  for (const policy of ['least-flows', 'spread', 'hash-aligned', 'random'] as const) {
    it(`${policy}: no packet lost or duplicated while fd-2 leaves under traffic`, async () => {
      c = new InMemoryCluster();
      await c.start();
      const fd2 = c.fds[1]!;
      const purge = watchPurge(c, fd2);
      const report = await withTraffic(c, { concurrency: 48, totalFlows: 96, packetsPerFlow: 200, udpRatio: 0.5, ratePps: 8000 }, async () => {
        expect(fd2.table.size).toBeGreaterThan(0);
        const reply = await c!.drive(c!.hashTier.manager.ops.disengage({ target: 'fd-2', policy }), 30_000);
        expect(reply.ok).toBe(true);
        expect(reply.entriesMoved).toBeGreaterThan(0);
        expect(reply.shares.reduce((n, s) => n + s.flows, 0)).toBe(reply.entriesMoved);
        expect(status(c!, 'fd-2')).toBe('DISENGAGED');
        expect(c!.hashTier.engine.scope!.members).toEqual(['fd-1', 'fd-3']);
        expect(fd2.table.size).toBe(0);
        // Purged only once out of the scope, and with every member on that scope (acknowledged).
        expect(purge.seen).not.toBeNull();
        expect(purge.seen!.engineHasFd).toBe(false);
        expect(purge.seen!.behind).toEqual([]);
        expect(purge.seen!.tableSize).toBeGreaterThan(0); // the switched entries were still there until then
        // DISENGAGED: the tier and every member acknowledged, nothing skipped; the FD waited to be quiet.
        expect(reply.scopeAcked.sort()).toEqual(['agg-a', 'fd-1', 'fd-2', 'fd-3', 'svc-1', 'svc-2', 'svc-3', 'svc-4']);
        expect(reply.scopeSkipped).toEqual([]);
        expect(reply.handedOver).toBe(true);
        expect(reply.quietMs).toBeGreaterThanOrEqual(c!.hashTier.manager.ops.quietMs);
        expect(fd2.migration.counters.get(MIG.finishes)).toBe(1);
        expect(c!.hashTier.manager.counters.get(MGR.scope_acks)).toBe(8);
      });
      expect(report.lost).toBe(0);
      expect(report.duplicated).toBe(0);
      expect(report.received).toBe(report.sent);
      expect(report.ok).toBe(true);
    });
  }

  it('hash-aligned leaves no redirect hop for migrated flows; least-flows does', async () => {
    const hops: Record<string, number> = {};
    for (const policy of ['least-flows', 'hash-aligned']) {
      c = new InMemoryCluster();
      await c.start();
      // Long flows: established before the disengage, still running after it.
      const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
      const gen = new TrafficGenerator({ concurrency: 60, totalFlows: 60, packetsPerFlow: 400, udpRatio: 0, ratePps: 6000 }, { socket, scheduler: c.scheduler, target: c.hashTierData });
      const done = gen.run();
      await c.runFor(300);
      const r = await c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-2', policy }), 30_000);
      expect(r.ok).toBe(true);
      await c.runFor(50); // steady state
      const before = c.fds.map((f) => f.handler.counters.get(FD.redirected));
      await c.runFor(1000);
      const after = c.fds.map((f) => f.handler.counters.get(FD.redirected));
      const redirects = after.reduce((n, v, i) => n + v - before[i]!, 0);
      const report = await c.drive(done, 120_000);
      expect(report.lost).toBe(0);
      hops[policy] = redirects;
      await c.stop();
      c = null;
    }
    // Client packets of migrated flows land where the shrunken scope sends them:
    // with hash-aligned inheritors that is the owner (replies go by owner hint).
    expect(hops['hash-aligned']).toBe(0);
    expect(hops['least-flows']!).toBeGreaterThan(0);
  });

  it('refuses to disengage twice, an unknown node or the last FD, with clear errors', async () => {
    c = new InMemoryCluster({ fds: [{ id: 11, name: 'fd-1' }, { id: 12, name: 'fd-2' }] });
    await c.start();
    const ops = c.hashTier.manager.ops;
    await expect(c.drive(ops.disengage({ target: 'fd-9' }))).rejects.toThrow(/unknown node "fd-9"/);
    // A service node is drained instead (test/service-drain.test.ts).
    expect((await c.drive(ops.disengage({ target: 'svc-1' }), 30_000)).ok).toBe(true);
    expect(status(c, 'svc-1')).toBe('DISENGAGED');
    expect((await c.drive(ops.disengage({ target: 'fd-1' }))).ok).toBe(true);
    await expect(c.drive(ops.disengage({ target: 'fd-1' }))).rejects.toThrow(/already disengaged/);
    try {
      await c.drive(ops.disengage({ target: 'fd-2' }));
      expect.unreachable();
    } catch (e) {
      expect(isBatonError(e)).toBe(true);
      expect((e as Error).message).toMatch(/last ACTIVE FD/);
    }
    expect(status(c, 'fd-2')).toBe('ACTIVE');
  });

  it('engage brings a disengaged FD back: existing flows keep their owner, new flows use it', async () => {
    c = new InMemoryCluster();
    await c.start();
    const ops = c.hashTier.manager.ops;
    const report = await withTraffic(c, { concurrency: 32, totalFlows: 128, packetsPerFlow: 100, udpRatio: 0.5, ratePps: 6000 }, async () => {
      expect((await c!.drive(ops.disengage({ target: 'fd-3', policy: 'spread' }), 30_000)).ok).toBe(true);
      await c!.runFor(300);
      const created0 = c!.fds[2]!.handler.counters.get(FD.flows_created);
      const e = await c!.drive(ops.engage('fd-3'), 30_000);
      expect(e.ok).toBe(true);
      expect(e.recordsSynced).toBeGreaterThan(0);
      expect(status(c!, 'fd-3')).toBe('ACTIVE');
      expect(c!.hashTier.engine.scope!.members).toEqual(['fd-1', 'fd-2', 'fd-3']);
      await c!.runFor(2000);
      expect(c!.fds[2]!.handler.counters.get(FD.flows_created)).toBeGreaterThan(created0); // new flows land on it again
    });
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  });

  it('a hand-over that does not confirm in time is aborted before its switch: the FD is ACTIVE, in scope, with all its flows', async () => {
    c = new InMemoryCluster();
    await c.start();
    const fd1 = c.fds[0]!;
    // The inheritors never acknowledge a chunk: the copy cannot finish in time.
    for (const f of c.fds.slice(1)) {
      const h = f.mesh.peerRequestHandler!;
      f.mesh.peerRequestHandler = (env, ch) => (env.body.case === 'migrationChunk' ? new Promise<never>(() => {}) : h(env, ch));
    }
    const report = await withTraffic(c, { concurrency: 32, totalFlows: 64, packetsPerFlow: 200, udpRatio: 0.5, ratePps: 6000 }, async () => {
      const owned = ownedKeys(fd1, fd1.me.id).length;
      expect(owned).toBeGreaterThan(0);
      await expect(c!.drive(c!.hashTier.manager.ops.disengage({ target: 'fd-1', timeoutMs: 500 }), 30_000)).rejects.toThrow(/did not confirm within 500 ms; it stays ACTIVE and in scope/);
      expect(status(c!, 'fd-1')).toBe('ACTIVE');
      expect(c!.hashTier.engine.scope!.members).toContain('fd-1');
      expect(fd1.migration.counters.get(MIG.aborts_accepted)).toBe(1);
      expect(c!.hashTier.manager.counters.get(MGR.disengage_aborts_sent)).toBe(1);
      // The aborted hand-over winds down (its chunks time out) without a switch: every flow still owned here, serving.
      expect(await c!.runUntil(() => !fd1.migration.migrating && !fd1.handler.leaving, 20_000)).toBe(true);
      expect(fd1.migration.counters.get(MIG.handovers)).toBe(0);
      expect(fd1.migration.counters.get(MIG.entries_purged)).toBe(0);
      expect(ownedKeys(fd1, fd1.me.id).length).toBeGreaterThanOrEqual(owned - 64); // flows may end meanwhile; none was given away
      expect(fd1.migration.counters.get(MIG.entries_switched)).toBe(0);
    });
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  });

  it('a disengage that times out after its switch is finished, never put back to ACTIVE', async () => {
    c = new InMemoryCluster();
    await c.start();
    const fd1 = c.fds[0]!;
    const fd3 = c.fds[2]!;
    // fd-3 never acknowledges ownership batches sent as requests: the broadcast waits for its acknowledgement timeout.
    const mesh = fd3.mesh as unknown as { answer: (b: unknown) => unknown };
    const answer = mesh.answer.bind(fd3.mesh);
    let stalled = 0;
    mesh.answer = (b) => {
      const r = answer(b); // applied, but the acknowledgement never comes while fd-1 leaves
      if (!fd1.handler.leaving) return r;
      stalled++;
      return new Promise<never>(() => {});
    };
    const report = await withTraffic(c, { concurrency: 32, totalFlows: 64, packetsPerFlow: 300, udpRatio: 0.5, ratePps: 6000 }, async () => {
      const r = await c!.drive(c!.hashTier.manager.ops.disengage({ target: 'fd-1', policy: 'named', inheritor: 'fd-2', timeoutMs: 500 }), 60_000);
      expect(stalled).toBeGreaterThan(0);
      expect(c!.hashTier.manager.counters.get(MGR.disengage_aborts_sent)).toBe(1);
      expect(fd1.migration.counters.get(MIG.aborts_after_switch)).toBe(1);
      expect(r.ok).toBe(true);
      expect(r.handedOver).toBe(true);
      expect(status(c!, 'fd-1')).toBe('DISENGAGED');
      expect(c!.hashTier.engine.scope!.members).toEqual(['fd-2', 'fd-3']);
      // Never ACTIVE after the switch.
      const history = c!.hashTier.manager.registry.byName('fd-1')!.machine.transitions.map((t) => statusName(t.to));
      expect(history.slice(-3)).toEqual(['DISENGAGING', 'DISENGAGING', 'DISENGAGED']);
    });
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  });

  it('a member that does not acknowledge the scope keeps the FD DISENGAGING, out of scope and unpurged; asking again completes it as first asked', async () => {
    c = new InMemoryCluster();
    await c.start();
    const fd2 = c.fds[1]!;
    const svc = c.services[0]!;
    const apply = svc.agent.applyScope.bind(svc.agent);
    let refuse = true;
    const report = await withTraffic(c, { concurrency: 32, totalFlows: 96, packetsPerFlow: 200, udpRatio: 0.5, ratePps: 6000 }, async () => {
      // svc-1 refuses the acknowledgement once fd-2 is out of scope (its agent fails to apply).
      svc.agent.applyScope = (u) => {
        if (refuse && !u.members.find((m) => m.node.name === 'fd-2')!.inScope) throw new Error('svc-1 is wedged');
        apply(u);
      };
      const ops = c!.hashTier.manager.ops;
      await expect(c!.drive(ops.disengage({ target: 'fd-2', policy: 'spread', timeoutMs: 2000 }), 30_000)).rejects.toThrow(/svc-1 .*did not acknowledge.*stays DISENGAGING, not purged/);
      expect(status(c!, 'fd-2')).toBe('DISENGAGING');
      const rec = c!.hashTier.manager.registry.byName('fd-2')!;
      expect(rec.machine.outOfScope).toBe(true);
      expect(c!.hashTier.engine.scope!.members).toEqual(['fd-1', 'fd-3']);
      expect(fd2.migration.counters.get(MIG.entries_purged)).toBe(0);
      expect(fd2.table.size).toBeGreaterThan(0); // redirects to the inheritors, kept until every member acknowledged
      expect(c!.hashTier.manager.counters.get(MGR.scope_ack_failures)).toBe(1);
      await expect(c!.drive(ops.engage('fd-2'))).rejects.toThrow(/cannot engage fd-2: it is DISENGAGING/);
      // Asked again, the disengage resumes with what it was first asked (policy spread), and completes.
      refuse = false;
      const r = await c!.drive(ops.disengage({ target: 'fd-2' }), 30_000);
      expect(r.ok).toBe(true);
      expect(r.policy).toBe('spread');
      expect(r.shares.length).toBe(2);
      expect(status(c!, 'fd-2')).toBe('DISENGAGED');
      expect(fd2.table.size).toBe(0);
      expect(fd2.migration.counters.get(MIG.disengages_started)).toBe(1); // one hand-over, answered again
    });
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
  });

  it('a member not connected to the manager is not waited for, and is named in the reply', async () => {
    c = new InMemoryCluster();
    await c.start();
    const svc4 = c.services[3]!;
    // svc-4's control connection goes away (its data plane keeps running).
    svc4.agent.stop();
    await c.runUntil(() => !c!.hashTier.manager.registry.byName('svc-4')!.connected, 1000);
    const r = await c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-3' }), 30_000);
    expect(r.ok).toBe(true);
    expect(r.scopeSkipped).toEqual(['svc-4 (not connected)']);
    expect(r.scopeAcked).not.toContain('svc-4');
    expect(c.hashTier.manager.counters.get(MGR.scope_acks_skipped)).toBe(1);
    expect(status(c, 'fd-3')).toBe('DISENGAGED');
  });

  it('an engage asked during a disengage waits for it (the joiner learns the migrated flows); two disengages run together', async () => {
    c = new InMemoryCluster({ fds: [1, 2, 3, 4].map((i) => ({ id: 10 + i, name: `fd-${i}` })) });
    await c.start();
    const ops = c.hashTier.manager.ops;
    const [, fd2, , fd4] = c.fds as [FdNode, FdNode, FdNode, FdNode];
    expect((await c.drive(ops.disengage({ target: 'fd-4' }), 30_000)).ok).toBe(true);
    const report = await withTraffic(c, { concurrency: 48, totalFlows: 192, packetsPerFlow: 300, udpRatio: 0.5, ratePps: 8000 }, async () => {
      const order: string[] = [];
      const queued0 = c!.hashTier.manager.counters.get(MGR.operations_queued);
      const d2 = ops.disengage({ target: 'fd-2', policy: 'named', inheritor: 'fd-1', chunkRecords: 16 }).then((r) => (order.push('disengage fd-2'), r));
      const d3 = ops.disengage({ target: 'fd-3', policy: 'named', inheritor: 'fd-1', chunkRecords: 16 }).then((r) => (order.push('disengage fd-3'), r));
      const e4 = ops.engage('fd-4').then((r) => (order.push('engage fd-4'), r));
      expect(ops.gate.runningKind).toBe('disengage');
      expect(ops.gate.active).toBe(2); // the two disengages run together
      const [r2, r3, r4] = await c!.drive(Promise.all([d2, d3, e4]), 60_000);
      expect(r2.ok && r3.ok && r4.ok).toBe(true);
      expect(order[2]).toBe('engage fd-4');
      expect(c!.hashTier.manager.counters.get(MGR.operations_queued) - queued0).toBe(1); // the engage waited
      expect(status(c!, 'fd-4')).toBe('ACTIVE');
      // The joiner synced after the migrations: it knows fd-1 owns what fd-2 and fd-3 had, and names neither.
      expect(ownedKeys(fd4, fd2.me.id)).toEqual([]);
      expect(ownedKeys(fd4, c!.fds[2]!.me.id)).toEqual([]);
      expect(ownedKeys(fd4, c!.fds[0]!.me.id).length).toBeGreaterThan(0);
      expect(c!.hashTier.engine.scope!.members).toEqual(['fd-1', 'fd-4']);
    });
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
  });
});

describe('scheduled power-down (config powerdown.enabled)', () => {
  it('disengages idle FDs on its schedule, keeping minActive', async () => {
    const c = new InMemoryCluster({ powerdown: { enabled: true, everyMs: 1000, thresholdPps: 1e9, sustainMs: 500, minActive: 2, stopProcesses: false } });
    try {
      await c.start();
      const active = () => c.hashTier.manager.registry.all().filter((m) => m.info.name.startsWith('fd-') && m.machine.status === MemberStatus.ACTIVE).length;
      expect(active()).toBe(3);
      expect(await c.runUntil(() => active() === 2, 10_000)).toBe(true);
      await c.runFor(5000); // later checks keep the minimum
      expect(active()).toBe(2);
      expect(c.hashTier.engine.scope!.members.length).toBe(2);
    } finally {
      await c.stop();
    }
  });

  it('a check that finds a power-down already running is skipped until the next tick, not an unhandled rejection', async () => {
    // Nothing is under 0 pps: the scheduled check only takes the workflow lock, every 100 ms.
    // operations.quietMs: the disengage it waits for lasts several ticks.
    const c = new InMemoryCluster({ powerdown: { enabled: true, everyMs: 100, thresholdPps: 0, sustainMs: 0, minActive: 1, stopProcesses: false }, operations: { quietMs: 1000 } });
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      await c.start();
      // A power-down asked for by hand holds the lock for the disengage (longer than a tick).
      const t0 = c.scheduler.clock.now();
      const r = await c.drive(c.hashTier.manager.workflows.powerdown({ thresholdPps: 1e9, minActive: 2, sustainMs: 0, policy: 'least-flows', stopProcesses: false, timeoutMs: 10_000 }, () => undefined));
      expect(r).toMatchObject({ ok: true, poweredDown: ['fd-1'] });
      expect(c.scheduler.clock.now() - t0).toBeGreaterThan(3 * 100);
      await c.runFor(300); // the checks after it run again
      await new Promise((res) => setImmediate(res));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await c.stop();
    }
  });
});
