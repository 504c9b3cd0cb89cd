/**
 * A service node dies under verified traffic, with real processes and real
 * sockets (docs/disengage.md, "Dead backends"): svc-2 is SIGKILLed while
 * UDP and TCP flows run through three FDs to three service nodes. Once the
 * manager marks it FAILED (control.deadAfterMs without heartbeats), the
 * FDs rehome the UDP flows pinned to it (the default for UDP) — they carry
 * on at the backend a new flow of their 5-tuple gets — and reset the TCP
 * ones (the default for TCP: the client gets an RST). Only flows pinned to
 * svc-2 lose packets: those sent to it between the kill and FAILED. The loss
 * books cannot close with a SIGKILLed node (its counters are unknown, as in
 * test/chaos.test.ts), but every unanswered frame is still counted.
 * Other flows lose nothing but what the hash tier's admission control
 * refuses while svc-2's echo probe goes unanswered (see the last check).
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
import { HashRewritePolicy, FlowAction } from '../distributor/service-policy.js';
import { PacketMeta, IPPROTO_TCP, IPPROTO_UDP, ipv4ToInt } from '../shared/packet/meta.js';
import { bookClient, settledBooks, formatLossBooks } from './helpers/loss-books.js';
import { metricValue } from './helpers/metrics.js';
import { waitFor } from './helpers/wait.js';

const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
const cfg = parseConfig({
  hashTier: { id: 1, name: 'agg-a', ...eph },
  fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, ...eph })),
  services: [1, 2, 3].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, ...eph })),
  dataplane: { socketBufferBytes: 16 << 20 },
  // A dead service node is FAILED after 1 s without heartbeats.
  control: { heartbeatMs: 100, deadAfterMs: 1000 },
  log: { level: 'warn' },
});

/** A modest offered load (not an assertion: the test counts frames, not rates), 256 long flows half UDP, half TCP. */
const RATE = 2000;
const FLOWS = 256;

let launcher: Launcher;
let runDir: string;
let manager: Address;
const sockets: { close(): Promise<void> }[] = [];

const statusOf = async (name: string) => statusRows(await fetchStatus(manager)).find((r) => r.node === name);

/** The sum over the running FDs of one counter of theirs. */
async function fdSum(counter: string): Promise<number> {
  let n = 0;
  for (const f of cfg.fds) {
    const node = launcher.nodes.get(f.name);
    if (node) n += metricValue(await (await fetch(node.metrics)).text(), 'baton_fd_total', counter);
  }
  return n;
}

beforeAll(async () => {
  runDir = mkdtempSync(join(tmpdir(), 'baton-dead-service-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  const hash = await launcher.startNode('hash', 'agg-a');
  manager = parseAddress(hash.control!);
  await Promise.all([...cfg.services.map((s) => launcher.startNode('service', s.name)), ...cfg.fds.map((f) => launcher.startNode('fd', f.name))]);
  const members = new Set([...cfg.fds, ...cfg.services].map((n) => n.name));
  await waitFor('3 FDs and 3 service nodes ACTIVE', async () => statusRows(await fetchStatus(manager)).filter((r) => members.has(r.node) && r.status === 'ACTIVE' && (r.role !== 'fd' || r.inScope)).length === 6);
}, 120_000);

afterAll(async () => {
  for (const s of sockets) await s.close();
  const procs = [...launcher.nodes.values()].map((n) => n.proc);
  await launcher.down();
  for (const p of procs) expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
  rmSync(runDir, { recursive: true, force: true });
}, 60_000);

describe('a service node SIGKILLed under verified traffic', () => {
  it('its UDP flows are rehomed and carry on, its TCP flows are reset; only its own flows lose packets (those sent before it was FAILED); every unanswered frame is counted', async () => {
    const target = await hashTierDataAddress(manager);
    const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
    sockets.push(socket);
    const gen = new TrafficGenerator({ vni: cfg.cluster.vni, ratePps: RATE, concurrency: FLOWS, totalFlows: FLOWS, packetsPerFlow: 1_000_000, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000 }, { socket, scheduler: new RealScheduler(), target });
    const done = gen.run();
    await new Promise((r) => setTimeout(r, 1500)); // every flow established on three backends

    const victim = launcher.nodes.get('svc-2')!;
    const t0 = Date.now();
    victim.proc.kill('SIGKILL');
    await waitFor('svc-2 FAILED', async () => (await statusOf('svc-2'))?.status === 'FAILED', 10_000);
    const failedAfterMs = Date.now() - t0;

    // Which flows were pinned to svc-2? Those the FDs' policy gave it when they started: the same hash
    // choice (nodes/fd-node.ts: seed hash.seed ^ 0x9e3779b9, backends ordered by node id) over the three.
    const policy = new HashRewritePolicy(cfg.services.map((s) => ({ ip: ipv4ToInt(s.virtualIp), port: s.virtualPort })), 0, cfg.hash.seed ^ 0x9e3779b9);
    policy.setServices(cfg.cluster.services.map((s) => ({ ip: ipv4ToInt(cfg.cluster.vip), port: s.port, proto: s.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP })));
    const svc2 = ipv4ToInt('10.1.0.2');
    const pm = new PacketMeta();
    const a = new FlowAction();
    const pinned = (f: number, kind: 'tcp' | 'udp'): boolean => {
      Object.assign(pm, gen.flowTuple(f, kind));
      return policy.choose(pm, a) && a.rewriteIp === svc2;
    };
    // The generator interleaves kinds exactly (traffic/generator.ts flowIsUdp): flow f is UDP iff floor((f+1)r) > floor(f r).
    const kindOf = (f: number): 'tcp' | 'udp' => (Math.floor((f + 1) * 0.5) > Math.floor(f * 0.5) ? 'udp' : 'tcp');
    const udpPinned = [...Array(FLOWS).keys()].filter((f) => kindOf(f) === 'udp' && pinned(f, 'udp')).length;
    const tcpPinned = [...Array(FLOWS).keys()].filter((f) => kindOf(f) === 'tcp' && pinned(f, 'tcp')).length;
    expect(udpPinned).toBeGreaterThan(0);
    expect(tcpPinned).toBeGreaterThan(0);
    // Each pinned flow meets the dead backend at its next packet after FAILED (a packet every FLOWS / RATE s).
    const counts = async () => ({ rehomed: await fdSum('flows_rehomed'), reset: await fdSum('flows_reset_dead_backend'), failed: await fdSum('flows_rehome_failed'), noRoute: await fdSum('drop_no_route') });
    await waitFor('every flow pinned to svc-2 rehomed or reset', async () => {
      const n = await counts();
      return n.rehomed === udpPinned && n.reset === tcpPinned;
    }, 10_000).catch(async (e: Error) => {
      throw new Error(`${e.message}: pinned udp ${udpPinned} tcp ${tcpPinned}, FDs counted ${JSON.stringify(await counts())}`);
    });
    await new Promise((r) => setTimeout(r, 2000)); // the rehomed flows carry on
    gen.endSending();
    const report = await done;

    const lossy = report.perFlow.filter((f) => f.lost > 0);
    const reset = report.perFlow.filter((f) => f.status === 'reset');
    const rehomedUdp = report.perFlow.filter((f) => f.kind === 'udp' && pinned(f.flow, 'udp'));
    console.log(
      `dead service: ${report.sent} sent, ${report.received} received, ${report.lost} lost; svc-2 FAILED ${failedAfterMs} ms after SIGKILL; ` +
        `${udpPinned} UDP flows rehomed (lost ${rehomedUdp.reduce((n, f) => n + f.lost, 0)}, received ${rehomedUdp.reduce((n, f) => n + f.received, 0)}), ` +
        `${tcpPinned} TCP flows reset (${reset.length} saw the RST); other flows lost ${lossy.filter((f) => !pinned(f.flow, f.kind)).reduce((n, f) => n + f.lost, 0)}`,
    );
    // svc-2 was SIGKILLed: its counters are unknown, so the books cannot close; every unanswered frame is
    // still counted — sent toward svc-2 before it was FAILED (link loss), or dropped by a node, by name.
    const books = await settledBooks(launcher, cfg, () => [bookClient('client', gen, socket.address, target)], { skipPids: [victim.pid] });
    console.log(formatLossBooks(books));
    expect(books.unanswered).toBe(books.counted);
    expect(books.nodes.every((n) => n.leak === 0)).toBe(true);

    expect(report.perFlowTruncated).toBe(false);
    expect(reset.length).toBe(tcpPinned);
    for (const f of reset) expect(pinned(f.flow, 'tcp')).toBe(true);
    // The rehomed UDP flows carried on: each got answers after svc-2 died, more than it lost.
    for (const f of rehomedUdp) expect(f.received, `UDP flow ${f.flow}`).toBeGreaterThan(f.lost);
    expect(report.duplicated).toBe(0);
    expect(report.malformed.total).toBe(0); // the RSTs are well formed (checksums, addresses)
    expect(await fdSum('flows_rehome_failed')).toBe(0);
    // Flows not pinned to svc-2 lose nothing but what the hash tier's admission control refused: until svc-2 is
    // FAILED its echo probe goes unanswered, which admission reads as a service queue past dropAboveMs, and a
    // service at DROPPING refuses every client frame (hash-tier/forwarding-engine.ts; a known issue, reported
    // with this test: a dead service node stops all new work for deadAfterMs - dropAboveMs).
    const admissionDrops = books.drops.filter((d) => d.counter === 'drop_admission_overload').reduce((n, d) => n + d.frames, 0);
    const strayLost = lossy.filter((f) => !pinned(f.flow, f.kind)).reduce((n, f) => n + f.lost, 0);
    const agg = await (await fetch(launcher.nodes.get('agg-a')!.metrics)).text();
    console.log(`hash tier: admission_service_to_dropping ${metricValue(agg, 'baton_hash_tier_total', 'admission_service_to_dropping')}, drop_admission_overload ${admissionDrops}; flows not pinned to svc-2 lost ${strayLost}`);
    expect(strayLost).toBeLessThanOrEqual(admissionDrops);
  }, 120_000);
});
