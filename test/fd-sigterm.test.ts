/**
 * An FD stopped the way a supervisor stops it (systemd, a container
 * orchestrator: SIGTERM), with real processes, real sockets and sustained
 * verified traffic (docs/disengage.md, "Stopping an FD from a supervisor"):
 *   1. SIGTERM of one FD under traffic: it disengages itself (its flows to
 *      inheritors, the scope without it acknowledged, drained, quiet) and
 *      only then exits, with code 0; the manager shows it DISENGAGED; 0
 *      packets lost, 0 duplicated, the loss books close;
 *   2. a second SIGTERM does not wait: with the manager frozen (SIGSTOP) the
 *      first one's disengage cannot complete, and the second makes the FD
 *      exit at once, still with its FINAL counters (cut short, counted).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../cli/launcher.js';
import { parseConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { hashTierDataAddress } from '../cli/traffic-cmd.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { BookClient } from '../traffic/loss-books.js';
import { bookClient, settledBooks, formatLossBooks, onlyRetriedSyns } from './helpers/loss-books.js';
import { metricValue } from './helpers/metrics.js';
import { waitFor } from './helpers/wait.js';
import { fdStopBoundMs } from '../nodes/fd-stop.js';

/**
 * No absolute rate: a short window-mode probe measures what this cluster
 * carries today (at most PROBE_WINDOW packets in flight, so it cannot
 * overload), and the stop runs under a stated fraction of it.
 */
const FRACTION = Number(process.env.BATON_FD_SIGTERM_FRACTION ?? 0.5);
const PROBE_WINDOW = 1024;
let probePps = 0;
let RATE = 0;

const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const cfg = parseConfig({
  hashTier: { id: 1, name: 'agg-a', ...eph },
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, ...eph })),
  services: [1, 2, 3, 4].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
  flowTable: { maxFlows: 262_144 },
  // 32 MiB socket buffers (test/setup/kernel.ts raises the kernel cap), as in the chaos test.
  dataplane: { socketBufferBytes: 32 << 20 },
  // deadAfterMs at its default: a stopped DISENGAGED FD's status is read right after it exits.
  control: { heartbeatMs: 100 },
  log: { level: 'warn' },
});

let launcher: Launcher;
let runDir: string;
let manager: Address;
const clients: (() => BookClient)[] = [];
const sockets: { close(): Promise<void> }[] = [];

const statusOf = async (name: string) => statusRows(await fetchStatus(manager)).find((r) => r.node === name);
const activeFds = async () => statusRows(await fetchStatus(manager)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).map((r) => r.node);

async function startTraffic(opts: TrafficOptions) {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  sockets.push(socket);
  const gen = new TrafficGenerator({ vni: cfg.cluster.vni, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const name = `client-${clients.length + 1}`;
  clients.push(() => bookClient(name, gen, socket.address, target));
  return { gen, done: gen.run() };
}

/** Resolves with the process's exit code (null: killed by a signal). */
const exitOf = (p: import('node:child_process').ChildProcess) =>
  new Promise<number | null>((r) => (p.exitCode !== null || p.signalCode !== null ? r(p.exitCode) : p.once('exit', (code) => r(code))));

beforeAll(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'baton-fd-sigterm-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  await launcher.up();
  manager = parseAddress(launcher.managerAddress);
  await waitFor('3 FDs in scope', async () => (await activeFds()).length === 3);
  const { done } = await startTraffic({ window: PROBE_WINDOW, concurrency: 256, totalFlows: 100_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 3000, drainMs: 3000, clientPortBase: 50_000 });
  const probe = await done;
  probePps = Math.round(probe.received / (probe.sendPhaseMs / 1000));
  RATE = Math.round(probePps * FRACTION);
  console.log(`fd-sigterm: the probe carried ${probePps} pps (window ${probe.window}, lost ${probe.lost}); the stop runs at ${FRACTION} of it: ${RATE} pps`);
  expect(probe.lost).toBe(0);
}, 120_000);

afterAll(async () => {
  for (const sk of sockets) await sk.close();
  const procs = [...launcher.nodes.values()].map((n) => n.proc);
  await launcher.down();
  for (const p of procs) expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
  rmSync(runDir, { recursive: true, force: true });
}, 60_000);

describe('an FD stopped by SIGTERM disengages itself first', () => {
  it(`SIGTERM of fd-2 under verified traffic at ${FRACTION} of the probed rate: DISENGAGED, then exit 0; 0 lost, 0 duplicated, the loss books close`, async () => {
    const { gen, done } = await startTraffic({ ratePps: RATE, catchUp: 1.0, concurrency: 256, totalFlows: 100_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000 });
    await new Promise((r) => setTimeout(r, 1500)); // flows established on all three FDs
    const fd2 = launcher.nodes.get('fd-2')!;
    const flowsBefore = metricValue(await (await fetch(fd2.metrics)).text(), 'baton_fd_total', 'flows_created');
    expect(flowsBefore).toBeGreaterThan(0);
    const exited = exitOf(fd2.proc);
    // What the manager says about fd-2 while it stops, until the moment its process exits.
    const seen: string[] = [];
    let gone = false;
    let atExit = '';
    void exited.then(async () => {
      gone = true;
      atExit = (await statusOf('fd-2'))?.status ?? 'missing';
    });
    const watching = (async () => {
      while (!gone) {
        const s = (await statusOf('fd-2'))?.status ?? 'missing';
        if (!gone && seen.at(-1) !== s) seen.push(s);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const t0 = Date.now();
    await launcher.stopNode('fd-2'); // SIGTERM (what a supervisor sends), SIGKILL only after the grace
    const stopMs = Date.now() - t0;
    const code = await exited;
    await watching;
    await waitFor('status at exit read', async () => atExit !== '');
    expect(code).toBe(0); // it exited by itself, not killed after the grace
    expect(stopMs).toBeLessThan(launcher.stopGraceMs('fd'));
    expect(seen).toContain('DISENGAGING');
    expect(atExit).toBe('DISENGAGED');
    expect((await statusOf('fd-2'))?.inScope).toBe(false);
    const final = launcher.retired.filter((r) => r.name === 'fd-2').at(-1)!.metrics;
    const stopCounter = (c: string) => metricValue(final, 'baton_fd_stop_total', c);
    expect(stopCounter('stop_disengages')).toBe(1);
    expect(stopCounter('stop_disengages_confirmed')).toBe(1);
    expect(stopCounter('stop_disengages_unconfirmed')).toBe(0);
    expect(await activeFds()).toEqual(['fd-1', 'fd-3']);
    await new Promise((r) => setTimeout(r, 1500)); // the other two serve on
    gen.endSending();
    const report = await done;
    const seconds = report.sendPhaseMs / 1000;
    const achieved = Math.round(report.sent / seconds);
    console.log(
      `fd-sigterm: fd-2 stopped by SIGTERM in ${stopMs} ms (bound ${fdStopBoundMs(cfg)} ms), statuses seen ${seen.join(' → ')}, at exit ${atExit}, exit code ${code}; ` +
        `${report.sent} packets at ${achieved} pps (target ${RATE}) over ${seconds.toFixed(1)} s: lost ${report.lost}, duplicated ${report.duplicated}, reordered ${report.reordered}`,
    );
    const books = await settledBooks(launcher, cfg, () => clients.map((c) => c()));
    console.log(formatLossBooks(books));
    // Admission control at the hash tier (a machine starved by other work shows here: drop_admission_*).
    const tier = await (await fetch(launcher.nodes.get('agg-a')!.metrics)).text();
    console.log(`hash tier: ${tier.split('\n').filter((l) => !l.startsWith('#') && /queue_delay_max_ms|admission_state/.test(l)).join('; ')}`);
    expect(books.closes).toBe(true);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
    expect(onlyRetriedSyns(books), 'nothing unanswered but SYNs refused at the edge and retried').toBe(true);
    expect(achieved).toBeGreaterThanOrEqual(RATE * 0.5); // the generator really loaded the cluster
  }, 180_000);

  it('a second SIGTERM exits at once: with the manager frozen the disengage cannot complete; the FD still prints its FINAL counters, cut short', async () => {
    const hash = launcher.nodes.get('agg-a')!;
    const fd1 = launcher.nodes.get('fd-1')!;
    const exited = exitOf(fd1.proc);
    hash.proc.kill('SIGSTOP');
    try {
      fd1.proc.kill('SIGTERM');
      // The first SIGTERM was taken: the FD asked for its disengage (its /metrics stay up meanwhile).
      await waitFor('fd-1 asked for its disengage', async () => metricValue(await (await fetch(fd1.metrics)).text(), 'baton_fd_stop_total', 'stop_disengages') === 1);
      expect(fd1.proc.exitCode).toBe(null);
      fd1.proc.kill('SIGTERM');
      expect(await exited).toBe(0); // while the manager is still frozen: it did not wait for it
    } finally {
      hash.proc.kill('SIGCONT');
    }
    await waitFor('FINAL counters of fd-1', async () => launcher.retired.some((r) => r.pid === fd1.pid));
    const final = launcher.retired.find((r) => r.pid === fd1.pid)!.metrics;
    expect(metricValue(final, 'baton_fd_stop_total', 'stop_disengages_cut_short')).toBe(1);
    expect(metricValue(final, 'baton_fd_stop_total', 'stop_disengages_confirmed')).toBe(0);
  }, 60_000);
});
