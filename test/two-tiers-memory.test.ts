/**
 * Two hash tiers (aggregation A and B) sharing one cluster state, on virtual
 * time with the real node code and an in-memory store backend: both forward
 * with the same table version; a disengage asked of both at once happens
 * once; when the leading manager dies midway through a disengage the other
 * takes over and finishes it, with verified traffic through B losing nothing.
 * On the data path: clients enter through both tiers while the members'
 * uplinks are spread over both (replies leave through the other tier than
 * the client used, the client locator says where to); when a tier dies its
 * members move to the live one at once and only what was in flight through
 * the dead tier is lost.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { ControlChannel } from '../shared/control/channel.js';
import { MemberStatus, type Body } from '../shared/control/messages.js';
import { disengageRequest } from '../cli/operations-cmd.js';
import { statusName } from '../shared/membership/status.js';
import { MIG } from '../migration-client/counters.js';
import { MGR } from '../migration-manager/counters.js';
import { HT } from '../hash-tier/forwarding-engine.js';
import { FDP } from '../distributor/fd-dataplane.js';
import { SN } from '../service-node/service-node.js';
import type { Address } from '../shared/io/address.js';

const config = {
  hashTiers: [
    { id: 1, name: 'agg-a', controlPort: 0 },
    { id: 2, name: 'agg-b', controlPort: 0 },
  ],
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, uplink: 'agg-b' })),
  services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, uplink: 'agg-b' })),
  store: { ttlMs: 1000 },
  control: { heartbeatMs: 50, deadAfterMs: 2000 },
  log: { level: 'error' },
};

function status(c: InMemoryCluster, tier: number, name: string): string {
  return statusName(c.hashTiers[tier]!.manager.registry.byName(name)!.machine.status);
}

async function ask(c: InMemoryCluster, manager: Address, req: Body, onProgress?: (b: Body) => void): Promise<Body> {
  const ch = new ControlChannel(await c.drive(c.messages.connect(manager)), c.scheduler);
  ch.onMessage((m) => onProgress?.(m.body));
  try {
    return (await ch.request(req, 60_000)).body;
  } finally {
    ch.close();
  }
}

describe('two hash tiers on one store (in memory, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('one leader; both tiers forward with the same table version; a disengage asked of both happens once', async () => {
    c = new InMemoryCluster(config);
    await c.start();
    const [a, b] = c.hashTiers;
    expect(a!.manager.isLeader).toBe(true);
    expect(b!.manager.isLeader).toBe(false);
    expect(b!.engine.scope!.version).toBe(a!.engine.scope!.version);
    expect(b!.engine.scope!.members).toEqual(['fd-1', 'fd-2', 'fd-3']);
    // B shows the leader's statuses (adopted from the store), not its own guesses.
    expect(status(c, 1, 'fd-1')).toBe('ACTIVE');
    expect(status(c, 1, 'svc-1')).toBe('ACTIVE');

    const req = disengageRequest('fd-1', { timeoutMs: 10_000 });
    const [ra, rb] = await c.drive(Promise.all([ask(c, c.managers[0]!, req), ask(c, c.managers[1]!, req)]), 30_000);
    const replies = [ra, rb].map((r) => (r.case === 'disengageReply' ? r.value : null));
    expect(replies.filter((r) => r?.ok).length).toBe(1);
    const refused = replies.find((r) => r && !r.ok)!;
    expect(refused.errorCode).toBe('BATON_INVALID_TRANSITION');
    expect(refused.errorMessage).toContain('already');
    expect(c.fds[0]!.migration.counters.get(MIG.disengages_started)).toBe(1);
    expect(b!.manager.counters.get(MGR.requests_forwarded)).toBe(1);
    await c.runUntil(() => b!.engine.scope?.members.length === 2, 5_000);
    expect(b!.engine.scope!.members).toEqual(['fd-2', 'fd-3']);
    expect(b!.engine.scope!.version).toBe(a!.engine.scope!.version);
    expect(status(c, 1, 'fd-1')).toBe('DISENGAGED');
  });

  it('the leading manager dies midway through a disengage: the other takes over, finishes it once, and no packet is lost', async () => {
    c = new InMemoryCluster(config);
    await c.start();
    const [a, b] = c.hashTiers;
    const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
    // Clients reach the cluster through B; every member's uplink is B.
    const gen = new TrafficGenerator({ concurrency: 48, totalFlows: 480, packetsPerFlow: 200, udpRatio: 0.5, ratePps: 8000 }, { socket, scheduler: c.scheduler, target: b!.engine.dp.socket.address });
    const done = gen.run();
    await c.runFor(300);
    const fd2 = c.fds[1]!;
    expect(fd2.table.size).toBeGreaterThan(0);

    // Asked through B (a follower): forwarded to A, which instructs fd-2 and dies once the copy runs.
    let crashed = false;
    const reply = ask(c, c.managers[1]!, disengageRequest('fd-2', { policy: 'hash-aligned', timeoutMs: 10_000, chunkRecords: 64 }), (m) => {
      if (!crashed && m.case === 'migrationProgress' && m.value.phase === 'copy') {
        crashed = true;
        void a!.crash();
      }
    });
    const r = await c.drive(reply, 30_000);
    expect(crashed).toBe(true);
    expect(r.case).toBe('disengageReply');
    if (r.case !== 'disengageReply') return;
    expect(r.value.errorMessage).toBe('');
    expect(r.value.ok).toBe(true);
    expect(b!.manager.isLeader).toBe(true);
    expect(b!.manager.counters.get(MGR.disengages_resumed)).toBe(1);
    expect(fd2.migration.counters.get(MIG.disengages_started)).toBe(1); // one migration, answered twice
    expect(fd2.migration.counters.get(MIG.disengages_rejoined)).toBe(1);
    expect(status(c, 1, 'fd-2')).toBe('DISENGAGED');
    expect(b!.manager.registry.byName('fd-2')!.machine.status).toBe(MemberStatus.DISENGAGED);
    expect(b!.engine.scope!.members).toEqual(['fd-1', 'fd-3']);
    expect(fd2.table.size).toBe(0);
    // The record in the store says the same.
    const rec = await c.drive(b!.store.getScope());
    expect(rec!.members).toEqual(['fd-1', 'fd-3']);
    expect(rec!.nodes!.find((n) => n.name === 'fd-2')!.status).toBe('DISENGAGED');

    const report = await c.drive(done, 120_000);
    expect(report.sent).toBeGreaterThan(10_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
  });
});

/** Members' uplinks on different tiers: fd-1, fd-3, svc-1 on A; fd-2, svc-2 on B. */
const spreadConfig = {
  ...config,
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, uplink: i === 2 ? 'agg-b' : 'agg-a' })),
  services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, uplink: i === 2 ? 'agg-b' : 'agg-a' })),
};

describe('several hash tiers on the data path (in memory, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('clients enter through both tiers, replies leave through either (uplinks on both): 0 lost; a tier dies under traffic: its members move to the live tier, only frames in flight through it are lost, then 0 lost through the survivor', async () => {
    c = new InMemoryCluster(spreadConfig);
    await c.start();
    const cl = c;
    const [a, b] = cl.hashTiers;
    const targets = [a!.engine.dp.socket.address, b!.engine.dp.socket.address];
    const socket = cl.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen = new TrafficGenerator({ concurrency: 64, totalFlows: 640, packetsPerFlow: 100, udpRatio: 0.5, ratePps: 8000 }, { socket, scheduler: cl.scheduler, target: targets[0]!, targets });
    const report = await cl.drive(gen.run(), 120_000);
    expect(report.sent).toBeGreaterThan(30_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
    for (const t of [a!, b!]) {
      const e = t.engine.counters;
      expect(e.get(HT.to_fd)).toBeGreaterThan(0); // clients enter here
      expect(e.get(HT.to_client)).toBeGreaterThan(0); // replies leave here
      expect(e.get(HT.drop_unknown_client)).toBe(0);
      expect(e.get(HT.to_client_learned)).toBe(0); // every egress frame had its locator
    }
    // Replies crossed tiers: a reply leaves through its FD's uplink, whatever tier the client
    // used (fd-2's through B, fd-1's and fd-3's through A), and every client sent through one tier
    // only; so clients of A got replies from B and the other way round, all delivered by locator.
    const perTarget = gen.links.perTarget.map((p) => p.accepted);
    expect(perTarget[0]).toBeGreaterThan(0);
    expect(perTarget[1]).toBeGreaterThan(0);
    expect(gen.links.rx.frames[1]).toBeGreaterThan(0); // replies from A (id 1)
    expect(gen.links.rx.frames[2]).toBeGreaterThan(0); // and from B (id 2)
    expect(gen.links.rx.frames[1]! + gen.links.rx.frames[2]!).toBe(report.io.framesReceived);
    expect(a!.engine.clients.size + b!.engine.clients.size).toBe(200); // each client learned by its own tier only

    // B dies (a crash: connections and sockets close, nothing said) under traffic.
    const socket2 = cl.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen2 = new TrafficGenerator({ concurrency: 64, totalFlows: 1_000_000, packetsPerFlow: 200, udpRatio: 0.5, ratePps: 8000, clientPortBase: 30_000 }, { socket: socket2, scheduler: cl.scheduler, target: targets[0]!, targets });
    const done2 = gen2.run();
    await cl.runFor(500);
    const bFrames = b!.engine.counters.get(HT.rx_frames);
    expect(bFrames).toBeGreaterThan(0);
    // Before: every member on its configured uplink, none ever moved.
    const fd2 = cl.fds[1]!;
    const svc2 = cl.services[1]!;
    expect(fd2.dataplane.uplink).toEqual(targets[1]);
    expect(svc2.node!.returnTo).toEqual(targets[1]);
    for (const m of cl.fds) expect(m.dataplane.counters.get(FDP.uplink_changes)).toBe(0);
    for (const m of cl.services) expect(m.counters.get(SN.uplink_changes)).toBe(0);
    const t0 = cl.scheduler.clock.now();
    await b!.crash();
    // Members whose uplink was B move to A as soon as their link to B closes (no store TTL to wait for).
    expect(await cl.runUntil(() => fd2.dataplane.counters.get(FDP.uplink_changes) === 1 && svc2.counters.get(SN.uplink_changes) === 1, 1000)).toBe(true);
    const failoverMs = cl.scheduler.clock.now() - t0;
    expect(failoverMs).toBeLessThan(spreadConfig.store.ttlMs);
    expect(fd2.dataplane.uplink).toEqual(targets[0]);
    expect(svc2.node!.returnTo).toEqual(targets[0]);
    for (const m of [cl.fds[0]!, cl.fds[2]!]) expect(m.dataplane.counters.get(FDP.uplink_changes)).toBe(0);

    // Clients that keep entering through A after the crash: a fresh run, A only, 0 lost.
    const socket3 = cl.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen3 = new TrafficGenerator({ concurrency: 64, totalFlows: 640, packetsPerFlow: 100, udpRatio: 0.5, ratePps: 4000, clientPortBase: 50_000 }, { socket: socket3, scheduler: cl.scheduler, target: targets[0]! });
    const report3 = await cl.drive(gen3.run(), 120_000);
    gen2.endSending();
    const report2 = await cl.drive(done2, 120_000);
    expect(report3.sent).toBeGreaterThan(30_000);
    expect(report3.lost).toBe(0);
    expect(report3.received).toBe(report3.sent);
    // During the crash: loss only in flows that entered through B (nothing answers there any
    // more), plus frames that were in flight through B; flows entering through A lose at most
    // what B held when it died.
    const lostViaA = report2.perFlow.filter((f) => gen2.targetOf(f.flow) === 0).reduce((n, f) => n + f.lost, 0);
    const lostViaB = report2.perFlow.filter((f) => gen2.targetOf(f.flow) === 1).reduce((n, f) => n + f.lost, 0);
    console.log(`tier B crash (in memory): ${report2.sent} sent, lost ${report2.lost} (${lostViaB} in flows entering through B, ${lostViaA} through A); after: ${report3.sent} sent through A, ${report3.lost} lost`);
    expect(report2.perFlowTruncated).toBe(false);
    expect(lostViaA + lostViaB).toBe(report2.lost);
    expect(lostViaB).toBeGreaterThan(0);
    expect(report2.duplicated).toBe(0);
    // Nothing dropped by a live node: every loss happened at B (sent to it, or in it).
    for (const t of [a!]) expect(t.engine.counters.get(HT.drop_unknown_client)).toBe(0);
  });
});
