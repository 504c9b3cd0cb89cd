/**
 * What surviving an FD failure costs and how long it takes (issue 14,
 * docs/failure.md), with real processes on loopback:
 *   - end-to-end packets/s of short connections (20 packets each, so new
 *     connections — what replication sends — are a large share of the
 *     work) with replication on against off, the same cluster shape in the
 *     same run: the ratio is the cost of replication;
 *   - replication bytes per new connection (the FDs' counters);
 *   - failover: kill -9 of an FD under long connections; kill → FAILED at
 *     the manager, FAILED → promoted at the backups, and the outage the
 *     dead FD's connections saw (their lost packets over their packet
 *     rate), min/median/max over several kills. The baseline is the
 *     configured detection deadline (control.deadAfterMs): the ratio says
 *     how much of the failover is the deadline itself.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../../cli/launcher.js';
import { parseConfig, type BatonConfig } from '../../shared/config/config.js';
import { parseAddress, type Address } from '../../shared/io/address.js';
import { UdpNet } from '../../shared/io/datagram.js';
import { RealScheduler } from '../../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../../traffic/generator.js';
import type { TrafficOptions } from '../../traffic/options.js';
import { fetchStatus, statusRows } from '../../cli/status.js';
import { hashTierDataAddress } from '../../cli/traffic-cmd.js';
import { rateResult, timeResult, spreadOf, type BenchCase, type BenchResult, type Spread } from '../lib.js';

const ROUNDS = 3;
const SHORT: TrafficOptions = { udpRatio: 0.5, concurrency: 256, totalFlows: 10_000_000, packetsPerFlow: 20, durationMs: 4000, window: 2048, payloadSize: 64, drainMs: 1000 };
const DEAD_AFTER_MS = 1000;
const KILLS = 3;

function config(fds: number, replication: boolean): BatonConfig {
  const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
  return parseConfig({
    hashTier: { id: 1, name: 'agg-a', ...eph },
    fds: Array.from({ length: fds }, (_, i) => ({ id: 11 + i, name: `fd-${i + 1}`, ...eph })),
    services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
    flowTable: { maxFlows: 262_144, lingerMs: 200 },
    replication: { enabled: replication },
    control: { heartbeatMs: 100, deadAfterMs: DEAD_AFTER_MS },
    dataplane: { socketBufferBytes: 16 << 20 },
    log: { level: 'warn' },
  });
}

async function withCluster<T>(cfg: BatonConfig, fn: (l: Launcher, manager: Address) => Promise<T>): Promise<T> {
  const runDir = mkdtempSync(join(tmpdir(), 'baton-bench-failure-'));
  const launcher = new Launcher(cfg, { runDir });
  try {
    await launcher.up();
    const manager = parseAddress(launcher.managerAddress);
    const want = cfg.fds.length;
    for (let i = 0; i < 200; i++) {
      const rows = statusRows(await fetchStatus(manager));
      if (rows.filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).length === want && rows.length >= 1 + want + cfg.services.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    return await fn(launcher, manager);
  } finally {
    for (const n of launcher.nodes.values()) if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGCONT');
    await launcher.down();
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function traffic(manager: Address, opts: TrafficOptions) {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator({ vni: 1, ...opts }, { socket, scheduler: new RealScheduler(), target });
  return { gen, done: gen.run().finally(() => socket.close()) };
}

/** Sum of one counter over the running FDs' metrics (all but `except`). */
async function fdCounter(l: Launcher, family: string, counter: string, except = ''): Promise<number> {
  let n = 0;
  for (const node of l.nodes.values()) {
    if (!node.name.startsWith('fd-') || node.name === except || node.proc.exitCode !== null || node.proc.signalCode !== null) continue;
    const text = await (await fetch(node.metrics)).text();
    const line = text.split('\n').find((x) => x.startsWith(`${family}{`) && x.includes(`counter="${counter}"`));
    if (line) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

async function shortFlows(replication: boolean, progress: (m: string) => void): Promise<{ pps: Spread; bytesPerFlow: number; lost: number }> {
  return withCluster(config(3, replication), async (l, manager) => {
    const rates: number[] = [];
    let lost = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const rep = await (await traffic(manager, SHORT)).done;
      rates.push(rep.recvPps);
      lost += rep.lost;
      progress(`replication ${replication ? 'on' : 'off'} round ${r + 1}: ${Math.round(rep.recvPps)} pkt/s echoed, ${rep.flows.total} connections, lost ${rep.lost}`);
    }
    const bytes = await fdCounter(l, 'baton_fd_replication_total', 'bytes_sent');
    const flows = await fdCounter(l, 'baton_fd_total', 'flows_created');
    return { pps: spreadOf(rates), bytesPerFlow: flows > 0 ? bytes / flows : 0, lost };
  });
}

async function failovers(progress: (m: string) => void): Promise<{ detect: number[]; promote: number[]; outage: number[] }> {
  const detect: number[] = [];
  const promote: number[] = [];
  const outage: number[] = [];
  await withCluster(config(2 + KILLS, true), async (l, manager) => {
    const status = async (name: string) => statusRows(await fetchStatus(manager)).find((r) => r.node === name)?.status;
    const ratePps = 6000;
    const concurrency = 96;
    for (let k = 0; k < KILLS; k++) {
      const { gen, done } = await traffic(manager, { udpRatio: 0.5, concurrency, totalFlows: concurrency, packetsPerFlow: 1_000_000, ratePps, durationMs: 60_000, drainMs: 2000, clientPortBase: 10_000 + k * 1000 });
      await new Promise((r) => setTimeout(r, 1000));
      const victim = `fd-${k + 2}`;
      const before = await fdCounter(l, 'baton_fd_replicas_total', 'promotions', victim);
      const t0 = performance.now();
      l.nodes.get(victim)!.proc.kill('SIGKILL');
      while ((await status(victim)) !== 'FAILED') await new Promise((r) => setTimeout(r, 5));
      const t1 = performance.now();
      while ((await fdCounter(l, 'baton_fd_replicas_total', 'promotions', victim)) <= before && performance.now() - t1 < 5000) await new Promise((r) => setTimeout(r, 5));
      const t2 = performance.now();
      await new Promise((r) => setTimeout(r, 1000));
      gen.endSending();
      const rep = await done;
      const perFlow = ratePps / concurrency;
      const lossy = rep.perFlow.filter((f) => f.lost > 0).map((f) => (f.lost / perFlow) * 1000);
      detect.push(t1 - t0);
      promote.push(t2 - t1);
      outage.push(lossy.length ? Math.max(...lossy) : 0);
      progress(`kill ${k + 1} (${victim}): detected ${Math.round(t1 - t0)} ms, promoted ${Math.round(t2 - t1)} ms later, worst outage of a connection ${Math.round(outage.at(-1)!)} ms; ${rep.flows.completed}/${rep.flows.total} connections completed, lost ${rep.lost}`);
    }
  });
  return { detect, promote, outage };
}

const failure: BenchCase = {
  id: 'failure',
  title: 'FD failure: end-to-end pkt/s with replication on vs off, replication bytes per connection, failover time over several kills',
  async run(progress) {
    const off = await shortFlows(false, progress);
    const on = await shortFlows(true, progress);
    const f = await failovers(progress);
    const out: BenchResult[] = [
      rateResult('e2e echoed packets/s, 20-packet connections, replication on', on.pps, 'pkt/s', off.pps, 'the same with replication off', `lost ${on.lost} (off: ${off.lost}); 3 FDs, 2 services`),
      { name: 'replication bytes per new connection (both entries, batched)', value: Math.round(on.bytesPerFlow), unit: 'B', note: 'FD counters fd_replication bytes_sent / fd flows_created' },
      timeResult('failover: kill -9 → FAILED (detection)', spreadOf(f.detect), DEAD_AFTER_MS, 'control.deadAfterMs', `${KILLS} kills`),
      timeResult('failover: FAILED → promoted at the backups', spreadOf(f.promote), DEAD_AFTER_MS, 'control.deadAfterMs'),
      timeResult("failover: worst outage of a dead FD's connection (lost packets / its rate)", spreadOf(f.outage), DEAD_AFTER_MS, 'control.deadAfterMs'),
    ];
    return out;
  },
};

export default failure;
