/**
 * Two hash tiers (aggregation A and B) sharing one cluster state, on virtual
 * time with the real node code and an in-memory store backend: both forward
 * with the same table version; a disengage asked of both at once happens
 * once; when the leading manager dies midway through a disengage the other
 * takes over and finishes it, with verified traffic through B losing nothing.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { ControlChannel } from '../shared/control/channel.js';
import { MemberStatus, type Body } from '../shared/control/messages.js';
import { disengageRequest } from '../cli/operations-cmd.js';
import { statusName } from '../shared/membership/status.js';
import { MIG } from '../migration-client/migration-client.js';
import { MGR } from '../migration-manager/manager.js';
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
