/**
 * Overload that behaves: offered twice what its cluster carries (the rate a
 * saturating window-mode probe measured in the same run), Baton refuses new
 * work at the hash tier's edge — counted — instead of queueing established
 * flows for seconds and losing them later. The offered load is verified
 * traffic at the probed rate (short TCP and UDP flows, every packet checked)
 * plus a flood of one-packet UDP flows from new clients for the rest
 * (traffic/flood.ts: counted, not verified, so it is cheap enough to send;
 * the verifying generator alone reaches only 1.1-1.6x of the probe on its
 * core). Shown:
 *   - every frame the clients sent and got no answer for is counted by a
 *     node (the loss books close), and most refusals are at the edge;
 *   - the queueing latency stays within the documented bound (10 x
 *     admission.dropAboveMs, docs/loss-accounting.md), where without
 *     admission control the same load queues for far longer (shown, and
 *     compared in the same run).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { execFileSync } from 'node:child_process';
import { Launcher } from '../cli/launcher.js';
import { parseConfig, type BatonConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { hashTierDataAddress } from '../cli/traffic-cmd.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { FloodClient, type FloodReport } from '../traffic/flood.js';
import { resolveTrafficOptions } from '../traffic/options.js';
import type { TrafficOptions } from '../traffic/options.js';
import { parseMetrics, type BookClient } from '../traffic/loss-books.js';
import { bookClient, settledBooks, formatLossBooks } from './helpers/loss-books.js';
import { waitFor } from './helpers/wait.js';
import { kernelUdpRxQueue } from '../shared/io/kernel-udp-stats.js';

/** Offered load as a multiple of the probed rate: verified traffic at VERIFIED x, the flood the rest. */
const OVERLOAD = Number(process.env.BATON_OVERLOAD_FACTOR ?? 2);
/**
 * The verified generator is closed-loop (a slot waits for its SYN-ACK and
 * retries a refused SYN after controlTimeoutMs), so what it offers falls as
 * admission refuses its SYNs; the flood is open-loop and carries the rest.
 */
const VERIFIED = 0.5;

/**
 * One traffic generator process tops out near what this cluster carries on a
 * 2-core machine, so it could not offer twice that. The cluster's processes
 * get one core and the generator (this test process) the other, with
 * taskset (util-linux; sched_setaffinity for every thread): the probe then
 * measures the one-core cluster, and twice that is within the generator's
 * reach. Affinity is restored at the end.
 */
const NCPU = cpus().length;
const ALL_CPUS = `0-${NCPU - 1}`;
function pin(pid: number, cpuList: string): boolean {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpuList, String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
let pinned = false;
const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const base = {
  hashTier: { id: 1, name: 'agg-a', ...eph },
  fds: [1, 2].map((i) => ({ id: 10 + i, name: `fd-${i}`, ...eph })),
  services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
  control: { heartbeatMs: 100, deadAfterMs: 2000 },
  // Room for the flood's flows (two entries each, idle for flowTable.idleMs): the test is about the
  // queue, not the table (a full table is its own counted drop, drop_table_full).
  flowTable: { maxFlows: 1 << 21 },
  log: { level: 'warn' },
};

interface Cluster {
  cfg: BatonConfig;
  launcher: Launcher;
  manager: Address;
  runDir: string;
  clients: (() => BookClient)[];
  sockets: { close(): Promise<void> }[];
}


async function up(admission: boolean): Promise<Cluster> {
  const cfg = parseConfig({ ...base, admission: { enabled: admission } });
  const runDir = mkdtempSync(join(tmpdir(), 'baton-overload-'));
  const launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  const hash = await launcher.startNode('hash', 'agg-a');
  const manager = parseAddress(hash.control!);
  await Promise.all([...cfg.services.map((s) => launcher.startNode('service', s.name)), ...cfg.fds.map((f) => launcher.startNode('fd', f.name))]);
  await waitFor('2 FDs in scope', async () => statusRows(await fetchStatus(manager)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).length === 2);
  if (pinned) for (const n of launcher.nodes.values()) pin(n.pid, '0');
  return { cfg, launcher, manager, runDir, clients: [], sockets: [] };
}

async function down(c: Cluster | undefined): Promise<void> {
  if (!c) return;
  for (const s of c.sockets) await s.close();
  await c.launcher.down();
  rmSync(c.runDir, { recursive: true, force: true });
}

async function traffic(c: Cluster, opts: TrafficOptions) {
  const target = await hashTierDataAddress(c.manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  c.sockets.push(socket);
  const gen = new TrafficGenerator({ vni: c.cfg.cluster.vni, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const name = `client-${c.clients.length + 1}`;
  c.clients.push(() => bookClient(name, gen, socket.address, target));
  // How long echoes wait in this (the client's) own receive queue: part of the latency it measures, not Baton's.
  let rxQueueMax = 0;
  const sampler = setInterval(() => (rxQueueMax = Math.max(rxQueueMax, kernelUdpRxQueue(socket.address) ?? 0)), 20);
  const r = await gen.run();
  clearInterval(sampler);
  lastClientRxQueueMax = rxQueueMax;
  return r;
}
let lastClientRxQueueMax = 0;

/** A flood of new one-packet UDP flows to the same VIP, its own socket (and line in the books). */
async function flood(c: Cluster, ratePps: number, durationMs: number): Promise<FloodReport> {
  const target = await hashTierDataAddress(c.manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  c.sockets.push(socket);
  const t = resolveTrafficOptions({});
  const f = new FloodClient({ ratePps, durationMs, vni: c.cfg.cluster.vni, vipInt: t.vipInt, udpPort: t.udpPort }, { socket, scheduler: new RealScheduler(), target });
  const name = `flood-${c.clients.length + 1}`;
  c.clients.push(() => bookClient(name, f, socket.address, target));
  return f.run();
}

/** Verified traffic at VERIFIED x the probe and the flood at the rest, together. */
async function overload(c: Cluster, port: number) {
  const run = overloadRun(probePps * VERIFIED, port);
  // Refused SYNs hold the verifier's slots (it retries after controlTimeoutMs): it offers about half its target
  // (measured 0.25x of the probe for a 0.5x target), so the flood carries the rest of OVERLOAD and that half again.
  const [r, fl] = await Promise.all([traffic(c, run), flood(c, probePps * (OVERLOAD - VERIFIED / 2), run.durationMs!)]);
  const offered = r.sendPps + fl.sendPps;
  return { r, fl, offered, factor: offered / probePps };
}

/** The largest queueing delays the hash tier measured: its own receive path, and each FD's probe round trip. */
async function queueDelays(c: Cluster): Promise<string> {
  const text = await (await fetch(c.launcher.nodes.get('agg-a')!.metrics)).text();
  const m = parseMetrics(text);
  const own = m.find((x) => x.name === 'baton_queue_delay_max_ms')?.value ?? 0;
  const fds = m.filter((x) => x.name === 'baton_peer_queue_delay_max_ms').map((x) => `${x.labels.peer} ${Math.round(x.value)} ms`);
  return `hash tier ${Math.round(own)} ms, round trips to ${fds.join(', ') || 'no FD'}`;
}

/** Sum of one counter over every node's metrics. */
async function counter(c: Cluster, name: string): Promise<number> {
  let n = 0;
  for (const node of c.launcher.nodes.values()) {
    const text = await (await fetch(node.metrics)).text();
    for (const m of parseMetrics(text)) if (m.labels.counter === name) n += m.value;
  }
  return n;
}

const PROBE: TrafficOptions = { window: 4096, concurrency: 256, totalFlows: 100_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 3000, drainMs: 3000, clientPortBase: 50_000 };
/** Short flows, so new work keeps arriving: what admission control can refuse. */
const overloadRun = (ratePps: number, port: number): TrafficOptions => ({ ratePps, concurrency: 1024, totalFlows: 1_000_000, packetsPerFlow: 50, udpRatio: 0.5, durationMs: 8000, drainMs: 4000, controlTimeoutMs: 500, controlRetries: 3, clientPortBase: port });

let cluster: Cluster | undefined;
let probePps = 0;

describe('overload: offered twice what the cluster carries', () => {
  beforeAll(async () => {
    pinned = NCPU >= 2 && pin(process.pid, String(NCPU - 1));
    console.log(pinned ? `overload: the cluster runs on CPU 0, the generator on CPU ${NCPU - 1}` : `overload: not pinned (${NCPU} CPU${NCPU > 1 ? 's' : ''} or no taskset): the generator may not reach twice what the cluster carries`);
    cluster = await up(true);
    const probe = await traffic(cluster, PROBE);
    probePps = Math.round(probe.received / (probe.sendPhaseMs / 1000));
    console.log(`overload: the probe carried ${probePps} pps (p99 latency ${probe.latencyMs.p99.toFixed(1)} ms, lost ${probe.lost})`);
    // The probe saturates the cluster on purpose; on a slow day its round trip can pass dropAboveMs at an FD and
    // admission refuses some of its frames (seen: 730 of ~190 k, p99 766 ms). Those are counted: the books of the
    // first test include the probe's client, and they must close.
    expect(probe.received).toBeGreaterThan(0);
  }, 120_000);
  afterAll(() => down(cluster), 60_000);

  it(`${OVERLOAD}x the probed rate: new work refused at the edge, every unanswered frame counted, latency within the bound`, async () => {
    const c = cluster!;
    const adm = c.cfg.admission;
    const { r, fl, offered, factor } = await overload(c, 20_000);
    const books = await settledBooks(c.launcher, c.cfg, () => c.clients.map((f) => f()));
    const edge = {
      syn: await counter(c, 'drop_admission_syn'),
      overload: await counter(c, 'drop_admission_overload'),
      shedFlows: await counter(c, 'drop_shed_new_flow'),
      marked: await counter(c, 'admission_shed_marked'),
    };
    // docs/loss-accounting.md, "The bound": a request and its answer cross five receive queues (hash tier, FD, service,
    // FD, hash tier), each kept below twice admission.dropAboveMs by what the hash tier measures.
    const bound = 10 * adm.dropAboveMs;
    const delays = await queueDelays(c);
    console.log(
      `overload: offered ${Math.round(offered)} pps = ${factor.toFixed(2)}x the probe for ${(r.sendPhaseMs / 1000).toFixed(1)} s ` +
        `(verified ${Math.round(r.sendPps)} pps, flood ${Math.round(fl.sendPps)} pps of which ${fl.framesReceived} answered${fl.notSent ? `, ${fl.notSent} not sent for want of a buffer` : ''}); ` +
        `verified: ${r.received}/${r.sent} data packets answered, ${r.lost} lost; flows ${r.flows.completed} completed, ${r.flows.handshakeFailed} refused at the handshake; ` +
        `latency p50 ${r.latencyMs.p50.toFixed(1)} p99 ${r.latencyMs.p99.toFixed(1)} max ${r.latencyMs.max.toFixed(1)} ms (bound ${bound} ms); ` +
        `edge: ${edge.syn} SYNs and ${edge.overload} frames refused at the hash tier, ${edge.shedFlows} frames of new UDP flows refused at the FDs, ${edge.marked} frames marked SHED; ` +
        `largest queueing delay measured: ${delays}; the verifying client's own receive queue held up to ${lastClientRxQueueMax} bytes`,
    );
    console.log(formatLossBooks(books));
    // Overloaded for real: about twice the probe offered, and admission control acted.
    expect(factor).toBeGreaterThanOrEqual(0.85 * OVERLOAD);
    expect(edge.syn + edge.overload + edge.shedFlows).toBeGreaterThan(0);
    // Every frame the clients sent and got no answer for is counted somewhere.
    expect(books.closes).toBe(true);
    expect(books.unanswered).toBe(books.counted);
    // Queues bounded in time: established flows do not wait for seconds.
    expect(r.latencyMs.p99).toBeLessThanOrEqual(bound);
    expect(r.duplicated).toBe(0);
    withAdmission = { p99: r.latencyMs.p99, max: r.latencyMs.max, lost: r.lost, answered: r.received };
  }, 120_000);
});

let withAdmission: { p99: number; max: number; lost: number; answered: number } | undefined;
let plain: Cluster | undefined;

describe('the same overload without admission control (comparison, same run)', () => {
  afterAll(async () => {
    await down(plain);
    if (pinned) pin(process.pid, ALL_CPUS);
  }, 60_000);
  it('queues for longer; what it loses is still counted (the books close)', async () => {
    expect(probePps).toBeGreaterThan(0);
    await down(cluster); // one cluster at a time on 2 cores
    cluster = undefined;
    plain = await up(false);
    const { r, fl, offered, factor } = await overload(plain, 20_000);
    const books = await settledBooks(plain.launcher, plain.cfg, () => plain!.clients.map((f) => f()));
    console.log(
      `no admission: offered ${Math.round(offered)} pps = ${factor.toFixed(2)}x the probe (flood ${Math.round(fl.sendPps)} pps, ${fl.framesReceived} answered); verified: ${r.received}/${r.sent} answered, ${r.lost} lost; ` +
        `latency p50 ${r.latencyMs.p50.toFixed(1)} p99 ${r.latencyMs.p99.toFixed(1)} max ${r.latencyMs.max.toFixed(1)} ms ` +
        `(with admission: p99 ${withAdmission?.p99.toFixed(1)} max ${withAdmission?.max.toFixed(1)} ms, ${withAdmission?.lost} lost)`,
    );
    console.log(formatLossBooks(books));
    expect(books.closes).toBe(true);
    expect(books.unanswered).toBe(books.counted);
    // Without admission control the same load queues longer than with it.
    if (withAdmission) expect(r.latencyMs.p99).toBeGreaterThan(withAdmission.p99);
  }, 120_000);
});
