/**
 * An FD that is stopping disengages itself first (nodes/fd-stop.ts,
 * docs/disengage.md "Stopping an FD from a supervisor"): on virtual time with
 * the real node and manager code (in-memory cluster), and the retry, bound
 * and cut-short rules against a scripted member agent; and the process's
 * stop-request state machine (cli/node-shutdown.ts: first SIGTERM graceful,
 * a second SIGTERM or a SIGINT at once, exit timers) without processes.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { InMemoryCluster } from '../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body, emptyDisengageReply, type Body, type DisengageReply, type EnvelopeObject } from '../shared/control/messages.js';
import { disengageRequest } from '../cli/operations-cmd.js';
import { statusName } from '../shared/membership/status.js';
import { MGR } from '../migration-manager/counters.js';
import { FDSTOP, fdStopBoundMs, disengageBeforeStop, type FdStopDeps } from '../nodes/fd-stop.js';
import { shutdownHandler, type ShutdownDeps } from '../cli/node-shutdown.js';
import { parseConfig } from '../shared/config/config.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { Counters } from '../shared/counters.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { getLogger } from '../shared/observability/logger.js';

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

function traffic(c: InMemoryCluster, opts: TrafficOptions) {
  const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator(opts, { socket, scheduler: c.scheduler, target: c.hashTierData });
  return gen.run();
}

describe('an FD that is stopping disengages itself first (in memory, virtual time)', () => {
  let c: InMemoryCluster | null = null;
  afterEach(async () => {
    await c?.stop();
    c = null;
  });

  it('stop({ disengage: true }) under traffic: DISENGAGING while it still serves, closes only once DISENGAGED: 0 lost, 0 duplicated', async () => {
    c = new InMemoryCluster({ log: { level: 'error' } });
    await c.start();
    const done = traffic(c, { concurrency: 32, totalFlows: 320, packetsPerFlow: 100, udpRatio: 0.5, ratePps: 4000 });
    await c.runFor(300);
    const fd2 = c.fds[1]!;
    expect(fd2.table.size).toBeGreaterThan(0);
    let stopped = false;
    const s = fd2.stop({ disengage: true }).then(() => (stopped = true));
    expect(await c.runUntil(() => status(c!, 'fd-2') === 'DISENGAGING', 1000)).toBe(true);
    expect(stopped).toBe(false);
    await c.drive(s, 60_000);
    expect(status(c, 'fd-2')).toBe('DISENGAGED');
    expect(fd2.stopCounters.get(FDSTOP.stop_disengages)).toBe(1);
    expect(fd2.stopCounters.get(FDSTOP.stop_disengages_confirmed)).toBe(1);
    expect(fd2.stopCounters.get(FDSTOP.stop_disengages_unconfirmed)).toBe(0);
    const mgr = c.hashTier.manager;
    expect(mgr.counters.get(MGR.disengages_completed)).toBe(1);
    // Idempotent: asking again (a later stop) is the same stop.
    await c.drive(fd2.stop({ disengage: true }));
    expect(fd2.stopCounters.get(FDSTOP.stop_disengages)).toBe(1);
    const report = await c.drive(done, 120_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
  });

  it('an FD already DISENGAGED (an upgrade or power-down stops it) is answered ok at once; the last ACTIVE FD is refused and stops at once, unconfirmed', async () => {
    c = new InMemoryCluster({ log: { level: 'error' } });
    await c.start();
    const mgr = c.hashTier.manager;
    expect(replyOf(await c.drive(ask(c, disengageRequest('fd-1')), 30_000)).ok).toBe(true);
    expect(replyOf(await c.drive(ask(c, disengageRequest('fd-2')), 30_000)).ok).toBe(true);
    const [fd1, , fd3] = c.fds as [(typeof c.fds)[0], (typeof c.fds)[0], (typeof c.fds)[0]];
    let t0 = c.scheduler.clock.now();
    await c.drive(fd1.stop({ disengage: true }), 10_000);
    expect(c.scheduler.clock.now() - t0).toBeLessThan(100);
    expect(mgr.counters.get(MGR.fd_stops_already_disengaged)).toBe(1);
    expect(mgr.counters.get(MGR.disengages_started)).toBe(2);
    expect(fd1.stopCounters.get(FDSTOP.stop_disengages_confirmed)).toBe(1);
    // fd-3 is the last ACTIVE FD: nothing could take its flows; a final refusal, not asked again.
    t0 = c.scheduler.clock.now();
    await c.drive(fd3.stop({ disengage: true }), 10_000);
    expect(c.scheduler.clock.now() - t0).toBeLessThan(100);
    expect(status(c, 'fd-3')).toBe('ACTIVE');
    expect(fd3.stopCounters.get(FDSTOP.stop_disengages_unconfirmed)).toBe(1);
  });

  it('managers gone: stops after control.deadAfterMs without a link; a second stop (no disengage) cuts the wait short at once', async () => {
    c = new InMemoryCluster({ control: { heartbeatMs: 50, deadAfterMs: 500 }, log: { level: 'error' } });
    await c.start();
    for (const h of c.hashTiers) await c.drive(h.crash());
    const [fd1, fd2] = c.fds as [(typeof c.fds)[0], (typeof c.fds)[0]];
    expect(await c.runUntil(() => !fd1.agent.registered && !fd2.agent.registered, 1000)).toBe(true);
    let t0 = c.scheduler.clock.now();
    await c.drive(fd1.stop({ disengage: true }), 10_000);
    expect(c.scheduler.clock.now() - t0).toBeGreaterThanOrEqual(500);
    expect(c.scheduler.clock.now() - t0).toBeLessThan(1000);
    expect(fd1.stopCounters.get(FDSTOP.stop_disengages_unconfirmed)).toBe(1);
    expect(fd1.stopCounters.get(FDSTOP.stop_disengages_cut_short)).toBe(0);

    t0 = c.scheduler.clock.now();
    const graceful = fd2.stop({ disengage: true });
    await c.runFor(100);
    const now = fd2.stop();
    await c.drive(Promise.all([graceful, now]), 1000);
    expect(c.scheduler.clock.now() - t0).toBeLessThan(200);
    expect(fd2.stopCounters.get(FDSTOP.stop_disengages_unconfirmed)).toBe(1);
    expect(fd2.stopCounters.get(FDSTOP.stop_disengages_cut_short)).toBe(1);
  });
});

/** A member agent whose answers are scripted: each ask takes the next step (the last one repeats). */
function scripted(steps: (() => Promise<EnvelopeObject>)[], registered = () => true) {
  const asked: Body[] = [];
  const agent: FdStopDeps['agent'] = {
    get registered() {
      return registered();
    },
    request: (b: Body) => {
      asked.push(b);
      return steps[Math.min(asked.length, steps.length) - 1]!();
    },
  };
  return { agent, asked };
}

const envelope = (b: Body): EnvelopeObject => ({ protocolVersion: 1, seq: 1, replyTo: 0, wantsReply: false, body: b });
const reply = (r: Partial<DisengageReply>) => () => Promise.resolve(envelope(body('disengageReply', { ...emptyDisengageReply('fd-1'), ...r })));

describe('disengageBeforeStop: retries, bound, cut short (scripted manager, virtual time)', () => {
  const cfg = parseConfig({ log: { level: 'error' } });
  const log = getLogger('fd-stop-test');

  /** Runs it to the end on virtual time; returns the outcome and the virtual ms it took. */
  async function run(agent: FdStopDeps['agent'], cut?: (sched: VirtualScheduler) => AbortSignal) {
    const sched = new VirtualScheduler(0);
    const counters = new Counters(FDSTOP);
    let outcome: string | null = null;
    void disengageBeforeStop({ cfg, name: 'fd-1', id: 11, agent, scheduler: sched, counters, log }, cut?.(sched)).then((o) => (outcome = o));
    for (let i = 0; i < 1_000_000 && outcome === null; i++) {
      await new Promise((r) => setImmediate(r));
      sched.runFor(10);
    }
    return { outcome, ms: sched.clock.now(), counters };
  }

  it('the bound: operations.timeoutMs + scopeAckTimeoutMs + 4 x quietMs + 5 s (40.4 s by default), and the first ask carries operations.timeoutMs, stopping, the config policy', async () => {
    expect(fdStopBoundMs(cfg)).toBe(40_400);
    expect(fdStopBoundMs(parseConfig({ operations: { timeoutMs: 10_000, scopeAckTimeoutMs: 1000, quietMs: 50 } }))).toBe(16_200);
    const { agent, asked } = scripted([reply({ ok: true })]);
    const r = await run(agent);
    expect(r.outcome).toBe('confirmed');
    expect(r.counters.get(FDSTOP.stop_disengages_confirmed)).toBe(1);
    const q = asked[0]!;
    expect(q.case).toBe('disengageRequest');
    if (q.case !== 'disengageRequest') return;
    expect(q.value).toMatchObject({ target: 'fd-1', targetId: 11, stopping: true, timeoutMs: cfg.operations.timeoutMs, policy: cfg.powerdown.policy });
  });

  it('asks again while the manager is away, changing leaders or busy with this FD, until DISENGAGED', async () => {
    const { agent, asked } = scripted([
      () => Promise.reject(new BatonError(ErrorCode.CONNECTION_CLOSED, 'registered with no manager right now')),
      reply({ errorCode: ErrorCode.INVALID_TRANSITION, errorMessage: 'cannot disengage fd-1: it is already disengaging' }),
      reply({ errorCode: ErrorCode.STORE_UNAVAILABLE, errorMessage: 'store away' }),
      reply({ ok: true }),
    ]);
    const r = await run(agent);
    expect(r.outcome).toBe('confirmed');
    expect(asked.length).toBe(4);
    expect(r.ms).toBeLessThan(1000); // three pauses of 200 ms
  });

  it('no answer: gives up at the bound, unconfirmed; a refusal asking again cannot change (the last FD) gives up at once', async () => {
    const never = scripted([() => new Promise<EnvelopeObject>(() => {})]);
    const r = await run(never.agent);
    expect(r.outcome).toBe('unconfirmed');
    expect(r.ms).toBeGreaterThanOrEqual(fdStopBoundMs(cfg));
    expect(r.ms).toBeLessThan(fdStopBoundMs(cfg) + 100);
    expect(r.counters.get(FDSTOP.stop_disengages_unconfirmed)).toBe(1);

    const last = scripted([reply({ errorCode: ErrorCode.EMPTY_SCOPE, errorMessage: 'it is the last ACTIVE FD' })]);
    const l = await run(last.agent);
    expect(l.outcome).toBe('unconfirmed');
    expect(last.asked.length).toBe(1);
    expect(l.ms).toBeLessThan(100);
  });

  it('cut short (a second SIGTERM): returns at once while the manager still works on it, counted', async () => {
    const never = scripted([() => new Promise<EnvelopeObject>(() => {})]);
    const r = await run(never.agent, (sched) => {
      const ac = new AbortController();
      sched.after(5000, () => ac.abort());
      return ac.signal;
    });
    expect(r.outcome).toBe('cut-short');
    expect(r.ms).toBeGreaterThanOrEqual(5000);
    expect(r.ms).toBeLessThan(5100);
    expect(r.counters.get(FDSTOP.stop_disengages_unconfirmed)).toBe(1);
    expect(r.counters.get(FDSTOP.stop_disengages_cut_short)).toBe(1);
    // Already cut before it starts: not even asked.
    const again = scripted([reply({ ok: true })]);
    const a = await run(again.agent, () => AbortSignal.abort());
    expect(a.outcome).toBe('cut-short');
    expect(again.asked.length).toBe(0);
  });
});

describe('node shutdown: first SIGTERM graceful, a second SIGTERM or a SIGINT at once, bounded exit (cli/node-shutdown.ts)', () => {
  function harness(escalates: boolean) {
    const calls: string[] = [];
    const timers: { ms: number; fn: () => void }[] = [];
    let resolveStop: () => void = () => {};
    const stopped = new Promise<void>((r) => (resolveStop = r));
    const deps: ShutdownDeps = {
      stop: (graceful) => {
        calls.push(`stop(${graceful ? 'graceful' : 'now'})`);
        return stopped;
      },
      finish: () => {
        calls.push('FINAL');
        return Promise.resolve();
      },
      exit: (code) => calls.push(`exit(${code})`),
      after: (ms, fn) => timers.push({ ms, fn }),
      graceMs: 42_400,
      nowMs: 3000,
      escalates,
      log: () => {},
    };
    return { handle: shutdownHandler(deps), calls, timers, closed: () => resolveStop() };
  }
  const flush = () => new Promise((r) => setImmediate(r));

  it('FD: SIGTERM stops gracefully (exit timer at the bound); the launcher closing stdin too changes nothing; a second SIGTERM stops at once; FINAL, then exit 0, once', async () => {
    const h = harness(true);
    h.handle('SIGTERM');
    h.handle('parent-exit');
    expect(h.calls).toEqual(['stop(graceful)']);
    expect(h.timers.map((t) => t.ms)).toEqual([42_400]);
    h.handle('SIGTERM');
    expect(h.calls).toEqual(['stop(graceful)', 'stop(now)']);
    expect(h.timers.map((t) => t.ms)).toEqual([42_400, 3000]);
    h.handle('SIGTERM');
    h.handle('SIGINT');
    expect(h.calls.length).toBe(2); // at once already: nothing more to do
    h.closed();
    await flush();
    expect(h.calls).toEqual(['stop(graceful)', 'stop(now)', 'FINAL', 'exit(0)']);
  });

  it('FD: the launcher closing stdin before its SIGTERM arrives: that SIGTERM is the first one, graceful', () => {
    const h = harness(true);
    h.handle('parent-exit');
    h.handle('SIGTERM');
    expect(h.calls).toEqual(['stop(graceful)']);
    h.handle('SIGTERM');
    expect(h.calls).toEqual(['stop(graceful)', 'stop(now)']);
  });

  it('FD: SIGINT first stops at once; a stop that hangs exits 1 at its timer', async () => {
    const h = harness(true);
    h.handle('SIGINT');
    expect(h.calls).toEqual(['stop(now)']);
    expect(h.timers.map((t) => t.ms)).toEqual([3000]);
    h.timers[0]!.fn(); // the node never closed
    expect(h.calls).toEqual(['stop(now)', 'exit(1)']);
  });

  it('other roles, as before: SIGINT is graceful too, later signals are ignored', async () => {
    const h = harness(false);
    h.handle('SIGINT');
    h.handle('SIGTERM');
    h.handle('SIGINT');
    expect(h.calls).toEqual(['stop(graceful)']);
    expect(h.timers.length).toBe(1);
    h.closed();
    await flush();
    expect(h.calls).toEqual(['stop(graceful)', 'FINAL', 'exit(0)']);
  });
});
