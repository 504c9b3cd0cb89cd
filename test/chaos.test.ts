/**
 * Chaos test with real processes, real sockets and sustained verified traffic:
 *   1. disengage one FD, then another, engage a new one, engage the first one
 *      again and run a rolling upgrade of every ACTIVE FD — 0 lost, 0 duplicated;
 *   2. the named inheritor of a disengage dies midway (SIGSTOP, then SIGKILL):
 *      the disengage falls back to the backup inheritor, the cluster keeps
 *      serving, and the only packets lost are those of flows the dead FD
 *      itself owned (no remaining node could carry them), reported exactly.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../cli/launcher.js';
import { attachOrchestrator } from '../cli/orchestrator.js';
import { operation, body, disengageRequest } from '../cli/operations-cmd.js';
import { parseConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { hashTierDataAddress } from '../cli/traffic-cmd.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { ControlChannel } from '../shared/control/channel.js';
import type { Body, DisengageReply } from '../shared/control/messages.js';
import { HashScope } from '../shared/scope/hash-scope.js';
import { hashFiveTuple } from '../shared/hash/xxh32.js';
import { kernelUdpDrops } from '../shared/io/kernel-udp-stats.js';

/**
 * The issue asks for verified traffic at at least half of the highest
 * end-to-end rate `npm run bench` measured for the same 3-FD/4-service
 * cluster: 518.5 k echoed packets/s (case e2e in
 * bench/results/2026-11-23-eve.json), so at least 259.2 k packets/s over the
 * whole send phase. The target is set above it because process restarts
 * during the rolling upgrade steal CPU from the generator; its rate mode
 * repays such stalls at up to 2x (`catchUp` 1.0). With 1.5x the runs here
 * gave 242-284 k (one clean-clone CI run fell below the floor at 242 k);
 * with 2x: 266, 289 and 300 k.
 */
const REQUIRED_PPS = Number(process.env.BATON_CHAOS_MIN_PPS ?? 518_462 / 2);
const RATE = Number(process.env.BATON_CHAOS_PPS ?? 300_000);
const CATCH_UP = Number(process.env.BATON_CHAOS_CATCH_UP ?? 1.0);

const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const cfg = parseConfig({
  hashTier: { id: 1, name: 'agg-a', ...eph },
  fds: [1, 2, 3, 4].map((i) => ({ id: 10 + i, name: `fd-${i}`, ...eph })),
  services: [1, 2, 3, 4].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
  flowTable: { maxFlows: 262_144 },
  // 32 MiB socket buffers (test/setup/kernel.ts raises the kernel cap): a node stalled by a process
  // start on this 2-core machine finds its backlog queued, not dropped by the kernel.
  dataplane: { socketBufferBytes: 32 << 20 },
  control: { heartbeatMs: 100, deadAfterMs: 1000 },
  log: { level: 'warn' },
});

let launcher: Launcher;
let runDir: string;
let manager: Address;
let orchestrator: ControlChannel;

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const statusOf = async (name: string) => statusRows(await fetchStatus(manager)).find((r) => r.node === name);
const activeFds = async () => statusRows(await fetchStatus(manager)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).map((r) => r.node);

/** Every non-zero drop counter of every running node (diagnostics for a failing run). */
async function dropCounters(): Promise<string> {
  const lines: string[] = [];
  for (const n of launcher.nodes.values()) {
    try {
      const text = await (await fetch(n.metrics)).text();
      for (const l of text.split('\n')) if (/drop|dropped|error|too_big|unknown/.test(l) && !l.startsWith('#') && !/ 0$/.test(l)) lines.push(`${n.name}: ${l}`);
    } catch {
      lines.push(`${n.name}: metrics unavailable`);
    }
  }
  for (const r of launcher.retired) {
    for (const l of r.metrics.split('\n')) if (/drop|dropped|error|too_big|unknown/.test(l) && !l.startsWith('#') && !/ 0$/.test(l)) lines.push(`${r.name} (pid ${r.pid}, stopped): ${l}`);
  }
  return lines.join('\n');
}

async function ask(req: Body): Promise<Body> {
  return operation(manager, req, 120_000, () => {});
}

async function disengage(target: string, policy: string, extra: { inheritor?: string; backup?: string } = {}): Promise<DisengageReply> {
  const r = await ask(disengageRequest(target, { policy, ...extra, timeoutMs: 60_000 }));
  if (r.case !== 'disengageReply') throw new Error(`unexpected ${r.case}`);
  return r.value;
}

/** What the kernel dropped on the generator's socket in the last run (printed when there is loss). */
let generatorKernelDrops: number | null = null;

async function startTraffic(opts: TrafficOptions) {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator({ vni: cfg.cluster.vni, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const done = gen.run().finally(() => {
    generatorKernelDrops = kernelUdpDrops(socket.address);
    return socket.close();
  });
  return { gen, done };
}

beforeAll(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'baton-chaos-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  const hash = await launcher.startNode('hash', 'agg-a');
  manager = parseAddress(hash.control!);
  await Promise.all([
    ...cfg.services.map((s) => launcher.startNode('service', s.name)),
    ...['fd-1', 'fd-2', 'fd-3'].map((n) => launcher.startNode('fd', n)),
  ]);
  orchestrator = await attachOrchestrator(launcher, manager);
  await waitFor('3 FDs in scope', async () => (await activeFds()).length === 3);
}, 120_000);

afterAll(async () => {
  orchestrator?.close();
  const procs = [...launcher.nodes.values()].map((n) => n.proc);
  await launcher.down();
  for (const p of procs) expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
  rmSync(runDir, { recursive: true, force: true });
}, 60_000);

describe('chaos: FDs leave, join and restart under sustained verified traffic', () => {
  it(`disengage ×2, engage a new FD, re-engage, rolling upgrade of all FDs at ${RATE} pps: 0 lost, 0 duplicated`, async () => {
    const { gen, done } = await startTraffic({ ratePps: RATE, catchUp: CATCH_UP, concurrency: 256, totalFlows: 100_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000 });
    const steps: string[] = [];
    const t0 = Date.now();
    const step = (s: string) => steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`);
    await new Promise((r) => setTimeout(r, 1500));

    const d1 = await disengage('fd-1', 'least-flows');
    expect(d1.ok).toBe(true);
    step(`fd-1 disengaged: ${d1.entriesMoved} entries in ${d1.durationMs.toFixed(0)} ms`);
    const d2 = await disengage('fd-2', 'hash-aligned');
    expect(d2.ok).toBe(true);
    step(`fd-2 disengaged: ${d2.entriesMoved} entries in ${d2.durationMs.toFixed(0)} ms`);
    expect(await activeFds()).toEqual(['fd-3']);

    await launcher.startNode('fd', 'fd-4'); // a new FD: registers, syncs, joins the scope
    await waitFor('fd-4 ACTIVE', async () => (await statusOf('fd-4'))?.status === 'ACTIVE');
    step('fd-4 engaged');
    const e1 = await ask(body('engageRequest', { target: 'fd-1', timeoutMs: 30_000 }));
    expect(e1.case === 'engageReply' && e1.value.ok).toBe(true);
    step('fd-1 engaged again');
    expect(await activeFds()).toEqual(['fd-1', 'fd-3', 'fd-4']);

    const up = await ask(body('upgradeRequest', { batch: 1, policy: 'hash-aligned', timeoutMs: 60_000 }));
    expect(up.case).toBe('upgradeReply');
    if (up.case !== 'upgradeReply') return;
    expect(up.value.errorMessage).toBe('');
    expect(up.value.upgraded.sort()).toEqual(['fd-1', 'fd-3', 'fd-4']);
    step(`rolling upgrade of ${up.value.upgraded.join(', ')} in ${(up.value.durationMs / 1000).toFixed(1)} s`);
    await new Promise((r) => setTimeout(r, 1000));
    gen.endSending();
    const report = await done;
    const seconds = report.sendPhaseMs / 1000;
    console.log(`chaos: ${report.sent} packets at ${Math.round(report.sent / seconds)} pps over ${seconds.toFixed(1)} s; lost ${report.lost}, duplicated ${report.duplicated}, reordered ${report.reordered}\n  ${steps.join('\n  ')}`);
    if (report.lost > 0) console.log(`drops seen by the nodes:\n${await dropCounters()}\nkernel drops on the generator's socket: ${generatorKernelDrops}\nlossy flows: ${JSON.stringify(report.perFlow.filter((f) => f.lost > 0).slice(0, 10))}`);
    expect(report.sent / seconds).toBeGreaterThanOrEqual(REQUIRED_PPS);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
  }, 180_000);

  it('the inheritor dies midway: the disengage falls back to the backup, the cluster keeps serving, only the dead FD\'s own flows lose packets', async () => {
    // Four ACTIVE FDs: engage fd-2 again.
    const e = await ask(body('engageRequest', { target: 'fd-2', timeoutMs: 30_000 }));
    expect(e.case === 'engageReply' && e.value.ok).toBe(true);
    await waitFor('4 FDs in scope', async () => (await activeFds()).length === 4);
    const members = await activeFds();
    // Fresh 5-tuples (another client port range): the first test's idle UDP
    // flows still have owners, and a packet of an existing flow goes to its owner.
    const { gen, done } = await startTraffic({ ratePps: RATE / 2, concurrency: 256, totalFlows: 256, packetsPerFlow: 100_000, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000, clientPortBase: 40_000 });
    await new Promise((r) => setTimeout(r, 1500)); // all 256 flows established under the 4-FD scope

    // fd-4 dies: frozen first (it cannot acknowledge), killed later.
    const victim = launcher.nodes.get('fd-4')!;
    victim.proc.kill('SIGSTOP');
    const r = await disengage('fd-2', 'named', { inheritor: 'fd-4', backup: 'fd-1' });
    victim.proc.kill('SIGKILL');
    expect(r.ok).toBe(true);
    expect(r.fellBackToBackup).toBe(true);
    expect(r.shares.map((s) => s.node.name)).toEqual(['fd-1']);
    await waitFor('fd-4 FAILED', async () => (await statusOf('fd-4'))?.status === 'FAILED');
    await new Promise((r) => setTimeout(r, 1500)); // keep serving after the failure
    gen.endSending();
    const report = await done;

    // Which flows did fd-4 own? Those the 4-FD scope sent to it when they started.
    const scope = HashScope.build(1, members, cfg.hash.tableSize, cfg.hash.seed);
    const ownedByVictim = (f: number, kind: 'tcp' | 'udp') => {
      const t = gen.flowTuple(f, kind);
      return scope.memberOf(hashFiveTuple(t.srcIp, t.dstIp, t.srcPort, t.dstPort, t.proto, cfg.hash.seed)) === 'fd-4';
    };
    const lossy = report.perFlow.filter((f) => f.lost > 0);
    const victimFlows = report.perFlow.filter((f) => ownedByVictim(f.flow, f.kind));
    const lostInVictimFlows = victimFlows.reduce((n, f) => n + f.lost, 0);
    console.log(
      `failure: ${report.sent} sent, ${report.lost} lost — all in ${lossy.length} of fd-4's ${victimFlows.length} flows (${lostInVictimFlows}); ` +
        `other flows: 0 lost; disengage of fd-2 fell back to fd-1: ${r.entriesMoved} entries in ${r.durationMs.toFixed(0)} ms`,
    );
    expect(report.perFlowTruncated).toBe(false);
    for (const f of lossy) expect(ownedByVictim(f.flow, f.kind)).toBe(true);
    expect(report.lost).toBe(lostInVictimFlows);
    expect(report.duplicated).toBe(0);
    expect(await activeFds()).toEqual(['fd-1', 'fd-3']);
  }, 180_000);
});
