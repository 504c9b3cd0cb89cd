/**
 * Unplanned failure with real processes, real sockets and sustained verified
 * traffic (issue 14, docs/failure.md):
 *   1. SIGKILL one FD, then — while the connections promoted from it are
 *      still being replicated to their new backups — SIGKILL a second one:
 *      every connection open before the failures completes, nothing is
 *      duplicated, the only packets lost are of the dead FDs' connections
 *      sent between a kill and the promotion, and every one of them is
 *      counted by the nodes (sent to the dead process, or dropped).
 *   2. SIGSTOP an FD (hung, not dead): it is declared FAILED, its
 *      connections are promoted; SIGCONT: it learns it was removed and stays
 *      out (fenced, counted), and the loss books close exactly.
 * Detection (kill → FAILED) and promotion times are measured and printed.
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
import type { TrafficReport } from '../traffic/report.js';
import { HashScope } from '../shared/scope/hash-scope.js';
import { hashFiveTuple } from '../shared/hash/xxh32.js';
import { bookClient, settledBooks, formatLossBooks } from './helpers/loss-books.js';
import { metricValue } from './helpers/metrics.js';
import type { BookClient } from '../traffic/loss-books.js';
import { waitFor } from './helpers/wait.js';

/** Polls `cond` every `everyMs` (fine-grained: the failure timings are measured with it). */
async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number, everyMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const FRACTION = 0.4;
const PROBE_WINDOW = 1024;
const CONCURRENCY = 128;
let RATE = 0;

const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const FDS = ['fd-1', 'fd-2', 'fd-3', 'fd-4', 'fd-5'];
const cfg = parseConfig({
  hashTier: { id: 1, name: 'agg-a', ...eph },
  fds: FDS.map((n, i) => ({ id: 11 + i, name: n, ...eph })),
  services: [1, 2, 3].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
  flowTable: { maxFlows: 262_144 },
  dataplane: { socketBufferBytes: 32 << 20 },
  control: { heartbeatMs: 100, deadAfterMs: 1000 },
  log: { level: 'warn' },
});

let launcher: Launcher;
let runDir: string;
let manager: Address;
const clients: (() => BookClient)[] = [];
const sockets: { close(): Promise<void> }[] = [];

const rows = async () => statusRows(await fetchStatus(manager));
const statusOf = async (name: string) => (await rows()).find((r) => r.node === name);
const activeFds = async () => (await rows()).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).map((r) => r.node);

async function startTraffic(opts: TrafficOptions) {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator({ vni: cfg.cluster.vni, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const name = `client-${clients.length + 1}`;
  clients.push(() => bookClient(name, gen, socket.address, target));
  sockets.push(socket);
  return { gen, done: gen.run() };
}

async function counterOf(name: string, family: string, counter: string): Promise<number> {
  const n = launcher.nodes.get(name);
  if (!n) return 0;
  try {
    return metricValue(await (await fetch(n.metrics)).text(), family, counter) || 0;
  } catch {
    return 0;
  }
}
const sumOver = async (names: string[], family: string, counter: string) => (await Promise.all(names.map((n) => counterOf(n, family, counter)))).reduce((a, b) => a + b, 0);

/** Kills (or stops) `name` and measures: kill → FAILED at the manager, FAILED → the survivors' promotions counted. */
async function fail(name: string, signal: 'SIGKILL' | 'SIGSTOP', survivors: string[]): Promise<{ detectMs: number; promoteMs: number }> {
  const before = await sumOver(survivors, 'baton_fd_replicas_total', 'promotions');
  const node = launcher.nodes.get(name)!;
  const t0 = performance.now();
  node.proc.kill(signal);
  await until(`${name} FAILED`, async () => (await statusOf(name))?.status === 'FAILED', 10_000, 5);
  const t1 = performance.now();
  await until(`${name}'s connections promoted`, async () => (await sumOver(survivors, 'baton_fd_replicas_total', 'promotions')) > before, 10_000, 5);
  const t2 = performance.now();
  return { detectMs: t1 - t0, promoteMs: t2 - t1 };
}

/** Outage seen by each lossy flow: its lost packets over its packet rate (ms). */
function outages(report: TrafficReport): number[] {
  const perFlowPps = RATE / CONCURRENCY;
  return report.perFlow.filter((f) => f.lost > 0).map((f) => (f.lost / perFlowPps) * 1000).sort((a, b) => a - b);
}
const ms = (v: number) => `${v.toFixed(0)} ms`;

beforeAll(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'baton-failure-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  const hash = await launcher.startNode('hash', 'agg-a');
  manager = parseAddress(hash.control!);
  await Promise.all([...['svc-1', 'svc-2', 'svc-3'].map((n) => launcher.startNode('service', n)), ...FDS.map((n) => launcher.startNode('fd', n))]);
  await waitFor('5 FDs in scope', async () => (await activeFds()).length === 5);
  const { done } = await startTraffic({ window: PROBE_WINDOW, concurrency: 256, totalFlows: 100_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 3000, drainMs: 3000, clientPortBase: 50_000 });
  const probe = await done;
  const probePps = Math.round(probe.received / (probe.sendPhaseMs / 1000));
  RATE = Math.round(probePps * FRACTION);
  console.log(`failure: the probe carried ${probePps} pps (lost ${probe.lost}); the failure runs send ${RATE} pps over ${CONCURRENCY} long flows`);
  if (probe.lost > 0) console.log(formatLossBooks(await settledBooks(launcher, cfg, () => clients.map((c) => c()))));
  expect(probe.lost).toBe(0);
}, 120_000);

afterAll(async () => {
  for (const sk of sockets) await sk.close();
  for (const n of launcher?.nodes.values() ?? []) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGCONT');
  await launcher?.down();
  rmSync(runDir, { recursive: true, force: true });
}, 60_000);

describe('unplanned failure: an FD that dies takes no established connection with it', () => {
  it('SIGKILL one FD, then a second one while the first one\'s connections are re-replicated: every connection completes, loss only in the failure windows, all of it counted', async () => {
    const members = await activeFds();
    const { gen, done } = await startTraffic({ ratePps: RATE, concurrency: CONCURRENCY, totalFlows: CONCURRENCY, packetsPerFlow: 1_000_000, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000, clientPortBase: 20_000 });
    await new Promise((r) => setTimeout(r, 1500)); // every flow established and replicated
    const first = await fail('fd-2', 'SIGKILL', ['fd-1', 'fd-3', 'fd-4', 'fd-5']);
    // At once: fd-3 may hold connections promoted from fd-2 whose resync to their new backups is under way.
    const second = await fail('fd-3', 'SIGKILL', ['fd-1', 'fd-4', 'fd-5']);
    await new Promise((r) => setTimeout(r, 1500)); // keep serving after the failures
    gen.endSending();
    const report = await done;

    const scope = HashScope.build(1, members, cfg.hash.tableSize, cfg.hash.seed);
    const ownerAtStart = (f: number, kind: 'tcp' | 'udp') => {
      const t = gen.flowTuple(f, kind);
      return scope.memberOf(hashFiveTuple(t.srcIp, t.dstIp, t.srcPort, t.dstPort, t.proto, cfg.hash.seed));
    };
    const out = outages(report);
    const promoted = await sumOver(['fd-1', 'fd-4', 'fd-5'], 'baton_fd_replicas_total', 'replicas_promoted');
    const recreated = await sumOver(['fd-1', 'fd-4', 'fd-5'], 'baton_fd_total', 'flows_recreated_stateless');
    console.log(
      `failure: fd-2 SIGKILL detected in ${ms(first.detectMs)}, promoted ${ms(first.promoteMs)} later; fd-3 SIGKILL detected in ${ms(second.detectMs)}, promoted ${ms(second.promoteMs)} later; ` +
        `${report.sent} sent, ${report.lost} lost in ${out.length} flows (outage per flow min/median/max ${ms(out[0] ?? 0)} / ${ms(out[Math.floor(out.length / 2)] ?? 0)} / ${ms(out.at(-1) ?? 0)}); ` +
        `${promoted} entries promoted, ${recreated} connections re-created by the second line`,
    );
    const books = await settledBooks(launcher, cfg, () => clients.map((c) => c()), { skipPids: [launcher.nodes.get('fd-2')!.pid, launcher.nodes.get('fd-3')!.pid] });
    console.log(formatLossBooks(books));
    expect(report.perFlowTruncated).toBe(false);
    // Every connection open before the failures went on to its end.
    expect(report.flows.completed).toBe(CONCURRENCY);
    expect(report.flows.handshakeFailed + report.flows.reset + report.flows.finUnanswered).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(promoted).toBeGreaterThan(0);
    // Only the dead FDs' connections lost packets, each for no longer than a failure window (detection + promotion, with slack).
    for (const f of report.perFlow.filter((x) => x.lost > 0)) expect(['fd-2', 'fd-3']).toContain(ownerAtStart(f.flow, f.kind));
    const windowMs = Math.max(first.detectMs + first.promoteMs, second.detectMs + second.promoteMs) + 500;
    expect(out.at(-1) ?? 0).toBeLessThanOrEqual(2 * windowMs);
    // Every unanswered frame is counted (sent toward a dead process, or dropped by a node).
    expect(books.unanswered).toBe(books.counted);
    expect(await activeFds()).toEqual(['fd-1', 'fd-4', 'fd-5']);
  }, 180_000);

  it('SIGSTOP an FD: it is declared FAILED and its connections promoted; SIGCONT: it stays out (fenced, counted), and the books close', async () => {
    const { gen, done } = await startTraffic({ ratePps: RATE, concurrency: CONCURRENCY, totalFlows: CONCURRENCY, packetsPerFlow: 1_000_000, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000, clientPortBase: 30_000 });
    await new Promise((r) => setTimeout(r, 1500));
    const t = await fail('fd-4', 'SIGSTOP', ['fd-1', 'fd-5']);
    launcher.nodes.get('fd-4')!.proc.kill('SIGCONT');
    await until('fd-4 fenced', async () => (await counterOf('fd-4', 'baton_fd_total', 'flows_fenced')) > 0, 10_000, 20);
    await new Promise((r) => setTimeout(r, 1500));
    gen.endSending();
    const report = await done;
    const fenced = await counterOf('fd-4', 'baton_fd_total', 'flows_fenced');
    const dropFenced = await counterOf('fd-4', 'baton_fd_total', 'drop_fenced');
    const ignored = await sumOver(['fd-1', 'fd-5'], 'baton_fd_ownership_total', 'batches_from_failed');
    const out = outages(report);
    console.log(
      `hung: fd-4 SIGSTOP detected in ${ms(t.detectMs)}, promoted ${ms(t.promoteMs)} later; resumed: ${fenced} entries fenced, ${dropFenced} frames dropped fenced, ${ignored} of its ownership batches ignored by peers; ` +
        `${report.sent} sent, ${report.lost} lost in ${out.length} flows (max outage ${ms(out.at(-1) ?? 0)})`,
    );
    const books = await settledBooks(launcher, cfg, () => clients.map((c) => c()), { skipPids: [launcher.nodes.get('fd-2')!.pid, launcher.nodes.get('fd-3')!.pid] });
    console.log(formatLossBooks(books));
    expect(report.flows.completed).toBe(CONCURRENCY);
    expect(report.duplicated).toBe(0);
    expect(fenced).toBeGreaterThan(0);
    expect((await statusOf('fd-4'))?.status).toBe('FAILED'); // it stays out
    expect(await activeFds()).toEqual(['fd-1', 'fd-5']);
    expect(books.unanswered).toBe(books.counted);
  }, 180_000);
});
