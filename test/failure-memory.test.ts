/**
 * An FD that crashes, in the in-memory cluster (the real node code on
 * virtual time): with replication on, its connections are promoted at their
 * backups when the manager declares it FAILED and every connection that was
 * open completes; only the packets sent between the crash and the promotion
 * are lost. With replication off the same crash breaks the dead FD's TCP
 * connections (the comparison shows the test can fail).
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { runTraffic } from '../traffic/generator.js';
import { FD } from '../distributor/fd-counters.js';
import { REPL } from '../distributor/replication.js';
import { REPLICA } from '../distributor/replica-store.js';
import { MemberStatus } from '../shared/control/messages.js';
import type { TrafficReport } from '../traffic/report.js';
import { MGR } from '../migration-manager/counters.js';

const RATE = 20_000;
const FLOWS = 48;
const PACKETS = 1000; // 2.4 s of traffic at RATE over FLOWS flows

function cluster(replication: boolean, control: Record<string, number> = { heartbeatMs: 50, deadAfterMs: 300 }): InMemoryCluster {
  return new InMemoryCluster({
    control,
    replication: { enabled: replication },
    log: { level: 'error' },
  });
}

/** Runs traffic; 800 ms into it, fd-2 crashes (stops without a word: no disengage), or only its data plane does. */
async function crashUnderTraffic(c: InMemoryCluster, how: 'process' | 'data-plane' = 'process'): Promise<{ report: TrafficReport; killedAt: number; failedAt: number }> {
  await c.start();
  const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
  const p = runTraffic({ concurrency: FLOWS, totalFlows: FLOWS, packetsPerFlow: PACKETS, udpRatio: 0.25, ratePps: RATE, drainMs: 3000 }, { socket, scheduler: c.scheduler, target: c.hashTierData });
  let done = false;
  let report: TrafficReport | undefined;
  void p.then((r) => {
    done = true;
    report = r;
  });
  await c.runFor(800);
  const victim = c.fds[1]!;
  const killedAt = c.scheduler.clock.now();
  if (how === 'process') await victim.stop(); // a crash: sockets closed, no disengage
  else await victim.dataplane.close(); // the data plane is gone; the member agent heartbeats on
  const reg = c.hashTier.manager.registry;
  await c.runUntil(() => reg.get(victim.me.id)?.machine.status === MemberStatus.FAILED, 5000);
  const failedAt = c.scheduler.clock.now();
  await c.runUntil(() => done, 30_000);
  if (!report) throw new Error('traffic did not finish');
  return { report, killedAt, failedAt };
}

describe('FD failure (in memory)', () => {
  it('a data plane that goes silent while heartbeats go on is declared FAILED by the hash tier\'s echo probes, and its connections are promoted', async () => {
    c = cluster(true, { heartbeatMs: 50, deadAfterMs: 60_000, dataDeadAfterMs: 400 });
    const { report, killedAt, failedAt } = await crashUnderTraffic(c, 'data-plane');
    expect(c.hashTier.manager.counters.get(MGR.members_failed_data_plane)).toBe(1);
    expect(c.hashTier.manager.counters.get(MGR.members_failed)).toBe(0); // not by heartbeats
    expect(failedAt - killedAt).toBeLessThan(2000);
    expect(report.flows.completed).toBe(FLOWS);
    expect(report.duplicated).toBe(0);
  });

  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('replication on: every connection open at the crash completes; loss only in the detection window', async () => {
    c = cluster(true);
    const { report, killedAt, failedAt } = await crashUnderTraffic(c);
    const survivors = [c.fds[0]!, c.fds[2]!];
    const promoted = survivors.reduce((n, f) => n + f.replicas!.counters.get(REPLICA.replicas_promoted), 0);
    const acked = c.fds.reduce((n, f) => n + f.replication!.counters.get(REPL.batches_acked), 0);
    expect(acked).toBeGreaterThan(0);
    expect(promoted).toBeGreaterThan(0); // fd-2 owned connections, and their backups took them over
    expect(report.flows.completed).toBe(FLOWS);
    expect(report.flows.handshakeFailed + report.flows.reset + report.flows.finUnanswered).toBe(0);
    expect(report.duplicated).toBe(0);
    // Lost: at most what the clients sent toward fd-2 between the crash and its declared failure
    // (a third of RATE, plus slack for the promotion broadcast).
    const windowMs = failedAt - killedAt;
    expect(windowMs).toBeGreaterThan(0);
    expect(report.lost).toBeLessThanOrEqual(Math.ceil((RATE / 3) * (windowMs + 50) / 1000));
    const recreated = survivors.reduce((n, f) => n + f.handler.counters.get(FD.flows_recreated_stateless), 0);
    const ownerFailed = survivors.reduce((n, f) => n + f.handler.counters.get(FD.drop_owner_failed), 0);
    console.log(`replication on: lost ${report.lost}, promoted ${promoted}, recreated ${recreated}, owner-failed drops ${ownerFailed}, window ${windowMs} ms`);
    expect(ownerFailed).toBe(0);
  });

  it('replication off: the stateless second line re-creates the dead FD\'s flows at the FDs their packets reach', async () => {
    c = cluster(false);
    const { report, killedAt, failedAt } = await crashUnderTraffic(c);
    const survivors = [c.fds[0]!, c.fds[2]!];
    const recreated = survivors.reduce((n, f) => n + f.handler.counters.get(FD.flows_recreated_stateless), 0);
    console.log(`replication off: lost ${report.lost}, recreated ${recreated}, window ${failedAt - killedAt} ms`);
    expect(recreated).toBeGreaterThan(0);
    expect(report.flows.completed).toBe(FLOWS);
    expect(report.duplicated).toBe(0);
  });
});
