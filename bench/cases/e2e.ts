/**
 * End-to-end packets per second through real processes on loopback:
 *   ours:     client → hash tier → FD → service node → hash tier → FD → hash tier → client
 *   baseline: the same 7 UDP hops through do-nothing relay stages
 *             (bench/relay.ts), with the same service node code doing the echo.
 * Both use 3 node processes (hash, FD, service) plus the generator in this
 * process; the machine has 2 cores, so every configuration is CPU-bound and
 * the ratio is what the forwarding work costs over pure relaying.
 * Each configuration runs ROUNDS traffic rounds of DURATION_MS; the rate is
 * their median, with min and max (the first round of a fresh process is
 * usually the slowest: its code is not optimised yet).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Launcher } from '../../cli/launcher.js';
import { parseConfig } from '../../shared/config/config.js';
import { parseAddress, type Address } from '../../shared/io/address.js';
import { UdpNet } from '../../shared/io/datagram.js';
import { RealScheduler } from '../../shared/runtime/scheduler.js';
import { runTraffic } from '../../traffic/generator.js';
import type { TrafficOptions } from '../../traffic/options.js';
import type { TrafficReport } from '../../traffic/report.js';
import { fetchStatus } from '../../cli/status.js';
import { hashTierDataAddress } from '../../cli/traffic-cmd.js';
import { rateResult, spreadOf, type BenchCase, type BenchResult, type Spread } from '../lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const DURATION_MS = 4000;
const ROUNDS = 3;
const TRAFFIC: TrafficOptions = { udpRatio: 1, concurrency: 64, totalFlows: 64, packetsPerFlow: 10_000_000, durationMs: DURATION_MS, window: 2048, payloadSize: 64, drainMs: 1000 };

function startRelay(stages: ('relay' | 'service')[]): Promise<{ proc: ChildProcess; ports: number[] }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(here, '..', 'relay.ts'), JSON.stringify({ stages })], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    proc.once('exit', (c) => reject(new Error(`relay exited ${c}`)));
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve({ proc, ports: (JSON.parse(l.slice(6)) as { ports: number[] }).ports }));
  });
}

async function generate(target: Address): Promise<TrafficReport> {
  const socket = await new UdpNet({ recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  try {
    return await runTraffic({ ...TRAFFIC, vni: 1 }, { socket, scheduler: new RealScheduler(), target });
  } finally {
    await socket.close();
  }
}

async function baseline(progress: (m: string) => void): Promise<Spread> {
  const lo = (port: number): Address => ({ host: '127.0.0.1', port });
  const H = await startRelay(['relay', 'relay', 'relay']); // h1: from client, h4: from service, h6: from FD to client
  const F = await startRelay(['relay', 'relay']); // f2: toward service, f5: toward hash tier
  const S = await startRelay(['service']); // s3
  const rates: number[] = [];
  try {
    for (let r = 0; r < ROUNDS; r++) {
      // The generator binds a fresh socket per round; h6 must point at it.
      const socket = await new UdpNet({ recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 }).bind({ host: '127.0.0.1', port: 0 });
      const [h1, h4, h6] = H.ports as [number, number, number];
      const [f2, f5] = F.ports as [number, number];
      const [s3] = S.ports as [number];
      if (r === 0) {
        F.proc.stdin!.write(JSON.stringify({ next: [lo(s3), lo(h6)], vni: 1 }) + '\n');
        S.proc.stdin!.write(JSON.stringify({ next: [lo(h4)], vni: 1 }) + '\n');
      }
      H.proc.stdin!.write(JSON.stringify({ next: [lo(f2), lo(f5), socket.address], vni: 1 }) + '\n');
      await new Promise((res) => setTimeout(res, 50)); // let the relay read its new route (a bench, not a test)
      const rep = await runTraffic({ ...TRAFFIC, vni: 1 }, { socket, scheduler: new RealScheduler(), target: lo(h1) });
      await socket.close();
      progress(`relay chain round ${r + 1}: ${Math.round(rep.recvPps)} pkt/s echoed, lost ${rep.lost}`);
      rates.push(rep.recvPps);
    }
  } finally {
    for (const p of [H, F, S]) p.proc.kill('SIGTERM');
  }
  return spreadOf(rates);
}

async function cluster(fds: number, services: number, progress: (m: string) => void): Promise<{ pps: Spread; lost: number }> {
  const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
  const cfg = parseConfig({
    hashTier: { id: 1, name: 'agg-a', ...eph },
    fds: Array.from({ length: fds }, (_, i) => ({ id: 11 + i, name: `fd-${i + 1}`, ...eph })),
    services: Array.from({ length: services }, (_, i) => ({ id: 21 + i, name: `svc-${i + 1}`, virtualIp: `10.1.0.${i + 1}`, ...eph })),
    flowTable: { maxFlows: 65536 },
    log: { level: 'warn' },
  });
  const runDir = mkdtempSync(join(tmpdir(), 'baton-bench-'));
  const launcher = new Launcher(cfg, { runDir });
  const rates: number[] = [];
  let lost = 0;
  try {
    await launcher.up();
    const manager = parseAddress(launcher.managerAddress);
    for (let i = 0; i < 100 && (await fetchStatus(manager)).nodes.length < 1 + fds + services; i++) await new Promise((r) => setTimeout(r, 50));
    const target = await hashTierDataAddress(manager);
    for (let r = 0; r < ROUNDS; r++) {
      const rep = await generate(target);
      progress(`baton ${fds} FD / ${services} svc round ${r + 1}: ${Math.round(rep.recvPps)} pkt/s echoed, lost ${rep.lost}`);
      rates.push(rep.recvPps);
      lost += rep.lost;
    }
  } finally {
    await launcher.down();
    rmSync(runDir, { recursive: true, force: true });
  }
  return { pps: spreadOf(rates), lost };
}

const e2e: BenchCase = {
  id: 'e2e',
  title: 'end-to-end packets/s through hash tier → FD → service and back vs a do-nothing relay chain (7 hops each)',
  async run(progress) {
    const base = await baseline(progress);
    const one = await cluster(1, 1, progress);
    const three = await cluster(3, 4, progress);
    const out: BenchResult[] = [
      rateResult('e2e echoed packets/s, 1 FD 1 service (3 node processes)', one.pps, 'pkt/s', base, 'relay chain, 3 processes, same hops', `lost ${one.lost}; 2 cores shared by 4 processes`),
      rateResult('e2e echoed packets/s, 3 FDs 4 services (8 node processes)', three.pps, 'pkt/s', base, 'relay chain, 3 processes, same hops', `lost ${three.lost}; replies redirected to the owner FD add a hop 2/3 of the time`),
    ];
    return out;
  },
};

export default e2e;
