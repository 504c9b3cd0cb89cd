/**
 * A whole cluster (hash tier + 3 FDs + 4 service nodes) in memory on virtual
 * time, with the same node code as the real processes: verified traffic
 * through it must arrive complete.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { runTraffic } from '../traffic/generator.js';
import { FD } from '../distributor/fd-counters.js';
import { HT } from '../hash-tier/forwarding-engine.js';

describe('in-memory cluster', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('converges: every FD in the scope, every member on the same scope version', async () => {
    c = new InMemoryCluster();
    await c.start();
    const reg = c.hashTier.manager.registry;
    expect(c.hashTier.engine.scope!.members).toEqual(['fd-1', 'fd-2', 'fd-3']);
    expect(reg.all().map((m) => m.info.name)).toEqual(['fd-1', 'fd-2', 'fd-3', 'svc-1', 'svc-2', 'svc-3', 'svc-4']);
    for (const f of c.fds) expect(f.policy.backendCount).toBe(4);
    // One flow-table seed for every FD (slot-order migration imports).
    for (const f of c.fds) expect(f.table.seed).toBe(c.cfg.flowTable.seed);
  });

  for (const replyByOwnerHint of [true, false]) {
    it(`carries TCP-like and UDP flows end to end with 0 lost and 0 duplicated (replies ${replyByOwnerHint ? 'by owner hint' : 'hashed, then redirected'})`, async () => {
      c = new InMemoryCluster({ hash: { replyByOwnerHint } });
      await c.start();
      const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
      const report = await c.drive(
        runTraffic({ concurrency: 24, totalFlows: 48, packetsPerFlow: 20, udpRatio: 0.5, ratePps: 20_000 }, { socket, scheduler: c.scheduler, target: c.hashTierData }),
        60_000,
      );
      expect(report.sent).toBe(48 * 20);
      expect(report.lost).toBe(0);
      expect(report.duplicated).toBe(0);
      expect(report.received).toBe(report.sent);
      const redirected = c.fds.reduce((n, f) => n + f.handler.counters.get(FD.redirected) + f.handler.counters.get(FD.redirected_by_hint), 0);
      const byHint = c.hashTier.engine.counters.get(HT.to_fd_by_hint);
      if (replyByOwnerHint) {
        // Every reply went straight to its owner: no FD had to redirect.
        expect(byHint).toBeGreaterThan(report.sent);
        expect(redirected).toBe(0);
      } else {
        // Replies hash to arbitrary FDs, which redirect them to the owner.
        expect(byHint).toBe(0);
        expect(redirected).toBeGreaterThan(report.sent / 3);
      }
      // Every FD owns some flows (the hash spreads them).
      const created = c.fds.map((f) => f.handler.counters.get(FD.flows_created));
      expect(created.every((n) => n > 0)).toBe(true);
      expect(created.reduce((a, b) => a + b, 0)).toBe(48);
    });
  }
});
