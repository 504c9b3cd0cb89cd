/**
 * An upgrade upgrades: a cluster started from build A (the launcher's bundle
 * of the sources) is rolled, FD by FD, to build B — a genuinely different
 * bundle (built with another `--tag`, so its bytes and its build id differ) —
 * under verified traffic. Every node reports its build in `baton status`
 * (NodeInfo.version) and in its metrics (`baton_build_info{version}`); during
 * the upgrade the status shows FDs on A and FDs on B at the same time; at the
 * end every FD runs B, nothing was lost and the loss books close. The service
 * nodes and the hash tier keep running A the whole time (A's bundle stays
 * valid for them).
 *
 * No absolute rate or time in any assertion: as test/chaos.test.ts does, a
 * short window-mode probe measures what this cluster carries on this machine
 * today, and the upgrade runs under FRACTION of it (rate mode; restarts steal
 * CPU on 2 cores, and the generator repays such stalls at up to 2x). Every
 * wait is a condition.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../cli/launcher.js';
import { attachOrchestrator } from '../cli/orchestrator.js';
import { operation, body } from '../cli/operations-cmd.js';
import { buildNodeBundle, upgradeEntry, type NodeEntry } from '../cli/node-bundle.js';
import { parseConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, formatStatus, statusRows, type StatusRow } from '../cli/status.js';
import { hashTierDataAddress } from '../cli/traffic-cmd.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { ControlChannel } from '../shared/control/channel.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import { bookClient, settledBooks, formatLossBooks, onlyRetriedSyns } from './helpers/loss-books.js';
import type { BookClient } from '../traffic/loss-books.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { TrafficReport } from '../traffic/report.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import { waitFor as waitUntil } from './helpers/wait.js';

const FRACTION = Number(process.env.BATON_UPGRADE_FRACTION ?? 0.5);
const PROBE_WINDOW = 1024;
const FDS = ['fd-1', 'fd-2', 'fd-3'];
const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const cfg = parseConfig({
  hashTier: { id: 1, name: 'agg-a', ...eph },
  fds: FDS.map((name, i) => ({ id: 11 + i, name, ...eph })),
  services: [1, 2, 3].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
  dataplane: { socketBufferBytes: 32 << 20 },
  control: { heartbeatMs: 100, deadAfterMs: 1000 },
  log: { level: 'warn' },
});

let launcher: Launcher;
let runDir: string;
let manager: Address;
let orchestrator: ControlChannel;
let buildA: NodeEntry;
let versionA: string;
const sockets: { close(): Promise<void> }[] = [];
/** Every generator run, for the loss books (the nodes' counters are cumulative). */
const clients: (() => BookClient)[] = [];

async function startTraffic(opts: TrafficOptions): Promise<{ gen: TrafficGenerator; done: Promise<TrafficReport>; socket: DatagramSocket }> {
  const target = await hashTierDataAddress(manager);
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  sockets.push(socket);
  const gen = new TrafficGenerator({ vni: cfg.cluster.vni, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const name = `client-${clients.length + 1}`;
  clients.push(() => bookClient(name, gen, socket.address, target));
  return { gen, done: gen.run(), socket };
}

const waitFor = (what: string, cond: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> => waitUntil(what, cond, timeoutMs);

const rows = async (): Promise<StatusRow[]> => statusRows(await fetchStatus(manager));
const fdRows = async (): Promise<StatusRow[]> => (await rows()).filter((r) => r.role === 'fd');

/** The version label of `baton_build_info` on a node's /metrics. */
async function metricsVersion(url: string): Promise<string> {
  const text = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split('\n').find((l) => l.startsWith('baton_build_info{'));
  const m = line && / 1$/.test(line) ? /version="([^"]*)"/.exec(line) : null;
  return m ? m[1]! : '';
}

beforeAll(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'baton-upgrade-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  buildA = await launcher.defaultEntry();
  expect(buildA.bundled, `the launcher fell back to tsx: ${buildA.fallbackReason}`).toBe(true);
  const hash = await launcher.startNode('hash', 'agg-a');
  manager = parseAddress(hash.control!);
  await Promise.all([...cfg.services.map((s) => launcher.startNode('service', s.name)), ...FDS.map((n) => launcher.startNode('fd', n))]);
  orchestrator = await attachOrchestrator(launcher, manager);
  await waitFor('3 FDs in scope', async () => (await fdRows()).filter((r) => r.status === 'ACTIVE' && r.inScope).length === 3);
  versionA = hash.version;
}, 120_000);

afterAll(async () => {
  for (const s of sockets) await s.close();
  orchestrator?.close();
  const procs = [...launcher.nodes.values()].map((n) => n.proc);
  await launcher.down();
  for (const p of procs) expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
  rmSync(runDir, { recursive: true, force: true });
}, 60_000);

describe('rolling upgrade from one build to another', () => {
  it('a bad build is refused once, with a typed error naming the option, before any FD is touched', async () => {
    const refused = async (p: Promise<unknown>): Promise<{ code: string; option: unknown; message: string }> => {
      try {
        await p;
      } catch (e) {
        if (isBatonError(e)) return { code: e.code, option: e.details?.option, message: e.message };
        throw e;
      }
      throw new Error('accepted');
    };
    const missing = await refused(upgradeEntry({ bundle: join(runDir, 'no-such-bundle.mjs') }));
    expect(missing).toMatchObject({ code: ErrorCode.BAD_ARGUMENT, option: '--bundle' });
    const notBaton = await refused(upgradeEntry({ command: [`${process.execPath} -e 0`] }));
    expect(notBaton).toMatchObject({ code: ErrorCode.BAD_ARGUMENT, option: '--command' });
    const both = await refused(upgradeEntry({ bundle: buildA.bundle!, command: ['node'] }));
    expect(both).toMatchObject({ code: ErrorCode.BAD_ARGUMENT, option: '--bundle' });
    // Nothing moved.
    const fds = await fdRows();
    expect(fds.map((r) => [r.node, r.status, r.version])).toEqual(FDS.map((n) => [n, 'ACTIVE', versionA]));
  });

  it('A → B under verified traffic: both builds in status midway, all FDs on B at the end, 0 lost, the books close', async () => {
    // Every node reports build A: in status (NodeInfo.version), in its READY line, in its metrics.
    expect(versionA).toMatch(/^\d+\.\d+\.\d+\+[0-9a-f]{12}$/);
    const before = await rows();
    expect(before.map((r) => r.version)).toEqual(before.map(() => versionA));
    for (const n of launcher.nodes.values()) expect(await metricsVersion(n.metrics)).toBe(versionA);

    // Build B: the same sources bundled with another tag — other bytes, another build id.
    const b = await buildNodeBundle({ tag: 'upgrade-test-b' });
    const buildB = await upgradeEntry({ bundle: b.bundle! });
    const versionB = buildB.version!;
    expect(buildB.bundle).not.toBe(buildA.bundle);
    expect(versionB).not.toBe(versionA);
    expect(versionB).toMatch(/-upgrade-test-b\+[0-9a-f]{12}$/);
    expect(existsSync(buildA.bundle!)).toBe(true); // A stays valid for the nodes still running it

    // What this cluster carries today: a short window-mode probe (at most PROBE_WINDOW frames queued).
    const probe = await (await startTraffic({ window: PROBE_WINDOW, concurrency: 256, totalFlows: 100_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 3000, drainMs: 3000, clientPortBase: 50_000 })).done;
    const probePps = Math.round(probe.received / (probe.sendPhaseMs / 1000));
    const rate = Math.round(probePps * FRACTION);
    console.log(`upgrade: the probe carried ${probePps} pps (lost ${probe.lost}); the upgrade runs under ${FRACTION} of it: ${rate} pps`);
    expect(probe.lost).toBe(0);

    // Verified traffic through the whole upgrade.
    const { gen, done } = await startTraffic({ ratePps: rate, catchUp: 1.0, concurrency: 256, totalFlows: 10_000_000, packetsPerFlow: 1000, udpRatio: 0.5, durationMs: 600_000, drainMs: 3000 });
    await waitFor('traffic through every FD', async () => (await fdRows()).every((r) => r.flowsOwned > 0));

    // Status while the upgrade runs: after every progress message, and continuously.
    const seen: { when: string; versions: Record<string, string> }[] = [];
    const observe = async (when: string): Promise<void> => {
      const fds = await fdRows();
      seen.push({ when, versions: Object.fromEntries(fds.map((r) => [r.node, r.version])) });
    };
    let upgrading = true;
    const poller = (async () => {
      while (upgrading) {
        await observe('poll');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const progress: string[] = [];
    const pending: Promise<void>[] = [];
    // Where the frames the edge refused (if any) were refused: the hash tier's admission counters at each step.
    const t0 = Date.now();
    const steps: string[] = [];
    const hashMetrics = launcher.nodes.get('agg-a')!.metrics;
    const refusedAtEdge = async (): Promise<string> => {
      const text = await (await fetch(hashMetrics, { signal: AbortSignal.timeout(5000) })).text();
      const get = (c: string): string => new RegExp(`counter="${c}"[^}]*} (\\S+)`).exec(text)?.[1] ?? '?';
      return `admission: syn ${get('drop_admission_syn')}, overload ${get('drop_admission_overload')}`;
    };
    const reply = await operation(manager, body('upgradeRequest', { batch: 1, policy: 'hash-aligned', timeoutMs: 60_000, bundle: buildB.bundle!, command: [] }), 600_000, ({ operation: p }) => {
      if (!p) return;
      progress.push(p.message);
      pending.push(observe(p.message));
      pending.push(refusedAtEdge().then((a) => void steps.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${p.message} [${a}]`)));
    });
    upgrading = false;
    await poller;
    await Promise.all(pending);
    expect(reply.case).toBe('upgradeReply');
    if (reply.case !== 'upgradeReply') return;
    expect(reply.value.errorMessage).toBe('');
    expect(reply.value.ok).toBe(true);
    expect([...reply.value.upgraded].sort()).toEqual(FDS);
    // The manager saw each new process register with build B.
    for (const fd of FDS) expect(progress).toContain(`${fd}: new process registered and engaged (build ${versionB})`);

    // Midway, the status showed both builds at once: some FDs on A, some on B.
    const mixed = seen.filter((s) => {
      const v = Object.values(s.versions);
      return v.includes(versionA) && v.includes(versionB);
    });
    // Builds seen at all: A and B only (a node between processes may be listed with its last registration).
    const all = new Set(seen.flatMap((s) => Object.values(s.versions)));
    expect([...all].sort()).toEqual([versionA, versionB].sort());
    expect(mixed.length).toBeGreaterThan(0);

    // The end: every FD ACTIVE on B, in status, in its READY line and in its metrics; the others still on A.
    const after = await rows();
    console.log(`upgrade steps:\n  ${steps.join('\n  ')}`);
    console.log(`upgrade ${versionA} -> ${versionB}: ${seen.length} status readings during the upgrade, ${mixed.length} with both builds, e.g. ${JSON.stringify(mixed[0]?.versions)}\n${formatStatus(await fetchStatus(manager))}`);
    for (const r of after) {
      if (r.role === 'fd') expect([r.node, r.status, r.inScope, r.version]).toEqual([r.node, 'ACTIVE', true, versionB]);
      else expect([r.node, r.version]).toEqual([r.node, versionA]);
    }
    for (const fd of FDS) {
      const n = launcher.nodes.get(fd)!;
      expect(n.version).toBe(versionB);
      expect(await metricsVersion(n.metrics)).toBe(versionB);
    }
    for (const n of [...launcher.nodes.values()].filter((x) => !FDS.includes(x.name))) expect(await metricsVersion(n.metrics)).toBe(versionA);
    // The replaced processes' final counters say they ran A.
    const retiredFds = launcher.retired.filter((r) => FDS.includes(r.name));
    expect(retiredFds.map((r) => r.name).sort()).toEqual(FDS);
    for (const r of retiredFds) expect(r.metrics).toContain(`version="${versionA}"`);

    // Traffic keeps flowing through the upgraded FDs, then ends: nothing lost.
    const sentAtEnd = gen.links.framesSent;
    await waitFor('traffic after the upgrade', async () => gen.links.framesSent > sentAtEnd && (await fdRows()).every((r) => r.flowsOwned > 0));
    gen.endSending();
    const report = await done;
    console.log(`traffic: ${report.sent} sent, ${report.received} received, lost ${report.lost}, duplicated ${report.duplicated}, reordered ${report.reordered}; flows ${report.flows.completed}`);
    const books = await settledBooks(launcher, cfg, () => clients.map((c) => c()));
    console.log(formatLossBooks(books));
    expect(books.closes).toBe(true);
    expect(onlyRetriedSyns(books), 'nothing unanswered but SYNs refused at the edge and retried').toBe(true);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
  }, 300_000);
});
