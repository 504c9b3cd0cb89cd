/**
 * A service node leaves gracefully (docs/disengage.md, "Service nodes"), on
 * virtual time with the real node code: `baton disengage svc-N` or the node's
 * own stop (SIGTERM) makes it DISENGAGING — FDs choose it for no new flow but
 * keep its route, so its established flows go on — until no frame reached it
 * for operations.serviceQuietMs (or at serviceDrainTimeoutMs), then
 * DISENGAGED, its route removed everywhere; only then does a stopping node
 * stop. Nothing is lost when the drain ends quiet; what arrives after a drain
 * that timed out is counted.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { ControlChannel } from '../shared/control/channel.js';
import { MemberStatus, Role, nodeInfo, body, type Body, type DisengageReply } from '../shared/control/messages.js';
import { disengageRequest } from '../cli/operations-cmd.js';
import { statusName } from '../shared/membership/status.js';
import { MGR } from '../migration-manager/counters.js';
import { Registry } from '../migration-manager/registry.js';
import { SN } from '../service-node/service-node.js';
import { DP } from '../shared/dataplane/counters.js';
import { FD } from '../distributor/fd-counters.js';
import { parseConfig } from '../shared/config/config.js';
import { serviceStopBoundMs } from '../nodes/service-member.js';
import { ipv4ToInt } from '../shared/packet/meta.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import type { FdNode } from '../nodes/fd-node.js';
import type { TrafficOptions } from '../traffic/options.js';

function status(c: InMemoryCluster, name: string): string {
  return statusName(c.hashTier.manager.registry.byName(name)!.machine.status);
}

async function ask(c: InMemoryCluster, req: Body): Promise<Body> {
  const ch = new ControlChannel(await c.drive(c.messages.connect(c.manager)), c.scheduler);
  try {
    return (await ch.request(req, 120_000)).body;
  } finally {
    ch.close();
  }
}

function replyOf(b: Body): DisengageReply {
  if (b.case !== 'disengageReply') throw new Error(`unexpected ${b.case}`);
  return b.value;
}

/** Keys of every entry an FD owns that is rewritten to `ip` (the flows going to that service node). */
function flowsTo(fds: FdNode[], ip: number): Set<string> {
  const keys = new Set<string>();
  for (const fd of fds) {
    const t = fd.table;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) {
      if (t.owner(s) === fd.me.id && t.rewriteIp(s) === ip) keys.add(`${t.srcIp(s)}:${t.srcPort(s)}>${t.dstIp(s)}:${t.dstPort(s)}/${t.proto(s)}`);
    }
  }
  return keys;
}

/** Does this FD have a route (a lane) to the service node with virtual IP `ip`? (-1: it left; its packets are drop_no_route) */
const routeTo = (fd: FdNode, ip: number): boolean => ((fd.dataplane as unknown as { routes: { serviceLane: Map<number, number> } }).routes.serviceLane.get(ip >>> 0) ?? -1) >= 0;
const sum = (fds: FdNode[], name: number, of: 'handler' | 'dataplane') => fds.reduce((n, f) => n + (of === 'handler' ? f.handler.counters.get(name) : f.dataplane.counters.get(name)), 0);

function traffic(c: InMemoryCluster, opts: TrafficOptions) {
  const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator(opts, { socket, scheduler: c.scheduler, target: c.hashTierData });
  return gen.run();
}

const SVC1 = ipv4ToInt('10.1.0.1');

describe('service nodes leave gracefully (in memory, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('baton disengage svc-1 under traffic: no new flow chooses it, its established flows go on to it, it goes quiet, then DISENGAGED and its route removed: 0 lost', async () => {
    c = new InMemoryCluster({ operations: { serviceQuietMs: 200, serviceDrainTimeoutMs: 20_000 }, log: { level: 'error' } });
    await c.start();
    // Flows of 100 packets at 4000/32 pps each: 0.8 s; new ones keep starting for ~8 s.
    const done = traffic(c, { concurrency: 32, totalFlows: 320, packetsPerFlow: 100, udpRatio: 0.5, ratePps: 4000 });
    await c.runFor(300);
    const svc1 = c.services[0]!;
    expect(flowsTo(c.fds, SVC1).size).toBeGreaterThan(0);
    for (const fd of c.fds) expect(fd.policy.backendCount).toBe(4);

    const reply = ask(c, disengageRequest('svc-1', { timeoutMs: 30_000 }));
    let replied: Body | null = null;
    void reply.then((r) => (replied = r));
    // Once every FD runs the scope with svc-1 DISENGAGING: no new flow is rewritten to it, its route stays.
    const mgr = c.hashTier.manager;
    expect(await c.runUntil(() => status(c!, 'svc-1') === 'DISENGAGING' && c!.fds.every((f) => f.agent.scopeVersion >= mgr.registry.scopeVersion), 2000)).toBe(true);
    for (const fd of c.fds) {
      expect(fd.policy.backendCount).toBe(3);
      expect(routeTo(fd, SVC1)).toBe(true);
    }
    const established = flowsTo(c.fds, SVC1);
    let newFlowsToSvc1 = 0;
    const rx0 = svc1.counters.get(SN.rx_frames);
    expect(
      await c.runUntil(() => {
        for (const k of flowsTo(c!.fds, SVC1)) if (!established.has(k)) newFlowsToSvc1++;
        return replied !== null;
      }, 20_000, 5),
    ).toBe(true);
    expect(newFlowsToSvc1).toBe(0);
    const r = replyOf(replied!);
    expect(r.errorMessage).toBe('');
    expect(r.ok).toBe(true);
    expect(r.drainTimedOut).toBe(false);
    expect(r.framesDrained).toBeGreaterThan(0); // its established flows went on during the drain
    expect(svc1.counters.get(SN.rx_frames) - rx0).toBeGreaterThan(0);
    expect(r.quietMs).toBeGreaterThanOrEqual(200);
    expect(r.scopeAcked).toEqual(expect.arrayContaining(['agg-a', 'fd-1', 'fd-2', 'fd-3', 'svc-2']));
    expect(status(c, 'svc-1')).toBe('DISENGAGED');
    // DISENGAGED: every FD dropped its route (acknowledged before the reply).
    for (const fd of c.fds) {
      expect(routeTo(fd, SVC1)).toBe(false);
      expect(fd.policy.backendCount).toBe(3);
    }
    const rxAtEnd = svc1.counters.get(SN.rx_frames);

    const report = await c.drive(done, 120_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
    expect(svc1.counters.get(SN.rx_frames)).toBe(rxAtEnd); // nothing reached it once DISENGAGED
    expect(sum(c.fds, DP.drop_no_route, 'dataplane')).toBe(0);
    expect(sum(c.fds, FD.drop_no_backend, 'handler')).toBe(0);
    expect(mgr.counters.get(MGR.service_drains_started)).toBe(1);
    expect(mgr.counters.get(MGR.service_drains_quiet)).toBe(1);
    expect(mgr.counters.get(MGR.service_drains_completed)).toBe(1);
    expect(svc1.counters.get(SN.drains)).toBe(1);
    expect(svc1.counters.get(SN.drain_quiet_restarts)).toBeGreaterThan(0);
  });

  it('the node stopping (SIGTERM) is drained before it stops, the last one too; `baton disengage` refuses the last ACTIVE one and a second disengage; engage takes a drained one back', async () => {
    c = new InMemoryCluster({ services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}` })), operations: { serviceQuietMs: 100 }, log: { level: 'error' } });
    await c.start();
    const [svc1, svc2] = c.services as [(typeof c.services)[0], (typeof c.services)[0]];
    const mgr = c.hashTier.manager;

    expect(replyOf(await c.drive(ask(c, disengageRequest('svc-1')), 30_000)).ok).toBe(true);
    expect(status(c, 'svc-1')).toBe('DISENGAGED');
    const again = replyOf(await c.drive(ask(c, disengageRequest('svc-1')), 30_000));
    expect(again.errorCode).toBe(ErrorCode.INVALID_TRANSITION);
    expect(again.errorMessage).toContain('already disengaged');
    const last = replyOf(await c.drive(ask(c, disengageRequest('svc-2')), 30_000));
    expect(last.errorCode).toBe(ErrorCode.EMPTY_SCOPE);
    expect(last.errorMessage).toContain('last ACTIVE service node');
    expect(status(c, 'svc-2')).toBe('ACTIVE');

    const e = await c.drive(ask(c, body('engageRequest', { target: 'svc-1', timeoutMs: 10_000 })), 30_000);
    expect(e.case === 'engageReply' && e.value.ok).toBe(true);
    expect(status(c, 'svc-1')).toBe('ACTIVE');
    expect(await c.runUntil(() => c!.fds.every((f) => f.policy.backendCount === 2), 1000)).toBe(true);
    expect(mgr.counters.get(MGR.service_engages)).toBe(1);

    // svc-1 and svc-2 both stop: each is drained (svc-2 ends up the last one: drained anyway, since it is stopping).
    let stopped1 = false;
    let stopped2 = false;
    const s1 = svc1.stop().then(() => (stopped1 = true));
    const s2 = svc2.stop().then(() => (stopped2 = true));
    expect(await c.runUntil(() => status(c!, 'svc-1') === 'DISENGAGING' && status(c!, 'svc-2') === 'DISENGAGING', 1000)).toBe(true);
    expect(stopped1 || stopped2).toBe(false); // not before DISENGAGED
    await c.drive(Promise.all([s1, s2]), 30_000);
    expect(status(c, 'svc-1')).toBe('DISENGAGED');
    expect(status(c, 'svc-2')).toBe('DISENGAGED');
    for (const s of [svc1, svc2]) {
      expect(s.counters.get(SN.stop_drains)).toBe(1);
      expect(s.counters.get(SN.stop_drains_confirmed)).toBe(1);
      expect(s.counters.get(SN.stop_drains_unconfirmed)).toBe(0);
    }
    for (const fd of c.fds) {
      expect(routeTo(fd, SVC1)).toBe(false);
      expect(fd.policy.backendCount).toBe(0);
    }
    expect(mgr.counters.get(MGR.service_drains_completed)).toBe(3);
    expect(mgr.counters.get(MGR.service_drains_refused)).toBe(2);
    // A stopped (DISENGAGED) node is not marked FAILED for its silence.
    await c.runFor(c.cfg.control.deadAfterMs * 2, 10);
    expect(status(c, 'svc-1')).toBe('DISENGAGED');
  });

  it('a node already drained by `baton disengage` stops at once when stopped (answered ok, no second drain)', async () => {
    c = new InMemoryCluster({ operations: { serviceQuietMs: 100 }, log: { level: 'error' } });
    await c.start();
    const mgr = c.hashTier.manager;
    expect(replyOf(await c.drive(ask(c, disengageRequest('svc-3')), 30_000)).ok).toBe(true);
    const t0 = c.scheduler.clock.now();
    await c.drive(c.services[2]!.stop(), 10_000);
    expect(c.scheduler.clock.now() - t0).toBeLessThan(100); // no quiet wait this time
    expect(mgr.counters.get(MGR.service_drains_already_done)).toBe(1);
    expect(mgr.counters.get(MGR.service_drains_started)).toBe(1);
    expect(c.services[2]!.counters.get(SN.stop_drains_confirmed)).toBe(1);
  });

  it('a drain that is not quiet in time ends at its timeout: DISENGAGED anyway, and every packet of its flows that still arrives is counted (onBackendDeath reset: drop_dead_backend at the FDs)', async () => {
    // UDP's default is to rehome such flows (test/dead-backend.test.ts); 'reset' ends them instead, one counted datagram each.
    const cluster = { services: [{ port: 80, proto: 'tcp' }, { port: 53, proto: 'udp', onBackendDeath: 'reset' }] };
    c = new InMemoryCluster({ cluster, operations: { serviceQuietMs: 200, serviceDrainTimeoutMs: 1000 }, log: { level: 'error' } });
    await c.start();
    // Long flows: they outlast the drain timeout.
    const done = traffic(c, { concurrency: 32, totalFlows: 32, packetsPerFlow: 2000, udpRatio: 1, ratePps: 3200 });
    await c.runFor(300);
    expect(flowsTo(c.fds, SVC1).size).toBeGreaterThan(0);
    const r = replyOf(await c.drive(ask(c, disengageRequest('svc-1')), 30_000));
    expect(r.ok).toBe(true);
    expect(r.drainTimedOut).toBe(true);
    expect(r.errorCode).toBe(ErrorCode.TIMEOUT);
    expect(r.errorMessage).toContain('did not go quiet');
    expect(status(c, 'svc-1')).toBe('DISENGAGED');
    expect(c.hashTier.manager.counters.get(MGR.service_drain_timeouts)).toBe(1);
    expect(c.services[0]!.counters.get(SN.drain_timeouts)).toBe(1);
    const report = await c.drive(done, 120_000);
    // svc-1 still runs and answered all it got: what was lost is what the FDs could no longer send to it (a flow's
    // next datagram after that is a new flow on a live backend).
    const ended = sum(c.fds, FD.drop_dead_backend, 'handler');
    expect(ended).toBeGreaterThan(0);
    expect(sum(c.fds, FD.flows_ended_dead_backend, 'handler')).toBe(ended);
    expect(sum(c.fds, DP.drop_no_route, 'dataplane')).toBe(0);
    expect(report.lost).toBe(ended);
    expect(report.duplicated).toBe(0);
  });

  it('a stopping node whose managers are gone stops after control.deadAfterMs without a link, counted', async () => {
    c = new InMemoryCluster({ control: { heartbeatMs: 50, deadAfterMs: 500 }, log: { level: 'error' } });
    await c.start();
    for (const h of c.hashTiers) await c.drive(h.crash());
    const s = c.services[0]!;
    expect(await c.runUntil(() => !s.agent.registered, 1000)).toBe(true);
    const t0 = c.scheduler.clock.now();
    await c.drive(s.stop(), 10_000);
    expect(c.scheduler.clock.now() - t0).toBeLessThan(1000);
    expect(s.counters.get(SN.stop_drains)).toBe(1);
    expect(s.counters.get(SN.stop_drains_unconfirmed)).toBe(1);
  });
});

describe('service drain: config and registry', () => {
  it('operations.serviceDrainTimeoutMs / serviceQuietMs: defaults, validated once naming the field; the stop bound covers the drain and both acknowledgements', () => {
    const cfg = parseConfig({});
    expect(cfg.operations.serviceDrainTimeoutMs).toBe(30_000);
    expect(cfg.operations.serviceQuietMs).toBe(1000);
    expect(serviceStopBoundMs(cfg)).toBe(30_000 + 2 * cfg.operations.scopeAckTimeoutMs + 3000);
    const bad = (raw: unknown): string => {
      try {
        parseConfig(raw);
      } catch (e) {
        expect(isBatonError(e, ErrorCode.CONFIG_INVALID)).toBe(true);
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(bad({ operations: { serviceQuietMs: 5000, serviceDrainTimeoutMs: 4000 } })).toMatch(/operations\.serviceQuietMs: serviceQuietMs must be less than serviceDrainTimeoutMs/);
    expect(bad({ operations: { serviceDrainTimeoutMs: 10 } })).toMatch(/operations\.serviceDrainTimeoutMs: .*>=100/);
    expect(bad({ operations: { serviceQuietMs: 1.5 } })).toMatch(/operations\.serviceQuietMs: .*int/);
  });

  it('a service node that reconnects (same process) keeps its drain status; a new process starts ACTIVE', () => {
    const r = new Registry(nodeInfo({ id: 1, name: 'agg-a', role: Role.HASH_TIER }), 65537, 7);
    const svc = (pid: number) => nodeInfo({ id: 21, name: 'svc-1', role: Role.SERVICE, virtualIp: '10.1.0.1', pid });
    r.register(svc(100), 0);
    r.setStatus(21, MemberStatus.DISENGAGING, 'drain', 1);
    r.disconnected(21);
    r.register(svc(100), 2);
    expect(r.get(21)!.machine.status).toBe(MemberStatus.DISENGAGING);
    r.setStatus(21, MemberStatus.DISENGAGED, 'drained', 3);
    r.disconnected(21);
    r.register(svc(100), 4);
    expect(r.get(21)!.machine.status).toBe(MemberStatus.DISENGAGED);
    r.disconnected(21);
    r.register(svc(101), 5); // restarted
    expect(r.get(21)!.machine.status).toBe(MemberStatus.ACTIVE);
  });
});
