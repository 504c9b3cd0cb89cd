/**
 * Several hash tiers on the data path, as real processes with real sockets
 * (etcd from test/setup/etcd.ts, `baton node` processes from the launcher):
 *
 *   1. the clients are spread over both tiers (client i -> tier i mod 2) and
 *      the members' uplinks too (fd-2, svc-2, svc-4 on B; the rest on A), so
 *      replies often leave through the tier the client did not use: they are
 *      delivered by the client locator the ingress tier wrote into the
 *      frames; 0 lost, and the loss books close;
 *   2. tier B is SIGKILLed under that traffic: its members move to A as soon
 *      as their control links to B close; the only frames lost are the ones
 *      sent to B or held by B when it died, and every one is counted (the
 *      books, B's counters left out as unknowable, still balance: unanswered =
 *      counted, all of it on the links into and out of B); traffic started
 *      through A after the kill loses nothing.
 *
 * No absolute rate: a short window-mode probe measures what this cluster
 * carries and the runs target a fraction of it.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../cli/launcher.js';
import { parseConfig, type BatonConfig } from '../shared/config/config.js';
import { formatAddress, parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { UdpNet, type DatagramSocket } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { BookClient } from '../traffic/loss-books.js';
import { settledBooks, formatLossBooks } from './helpers/loss-books.js';
import { ensureEtcd, type EtcdInstance } from './setup/etcd.js';
import { waitForReachable as waitFor } from './helpers/wait.js';

const FRACTION = Number(process.env.BATON_MULTI_TIER_FRACTION ?? 0.4);
/** BATON_MULTI_TIER_KILL_LEADER=1: B is started first, so it leads, and the tier killed is the leader. */
const KILL_LEADER = process.env.BATON_MULTI_TIER_KILL_LEADER === '1';
const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
let etcd: EtcdInstance;
let launcher: Launcher;
let cfg: BatonConfig;
let runDir: string;
let managerA: Address;
let tierA: Address;
let tierB: Address;
let RATE = 0;
/** The books after the probe: what it left unanswered (e.g. SYNs refused by admission control while it filled the queues), all counted. */
let baseline = { unanswered: 0, drops: 0 };


async function counter(node: string, family: string, name: string): Promise<number> {
  const text = await (await fetch(launcher.nodes.get(node)!.metrics, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`baton_${family}_total{`) && l.includes(`counter="${name}"`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

async function gauge(node: string, name: string): Promise<number> {
  const text = await (await fetch(launcher.nodes.get(node)!.metrics, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`baton_${name}{`) || l.startsWith(`baton_${name} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

/**
 * The generator's side of the loss books with several targets: one entry per
 * target (its frames built, accepted, failed), the frames received on the
 * first (the socket is one; replies come from either tier).
 */
function bookClients(name: string, gen: TrafficGenerator, socket: Address): BookClient[] {
  const l = gen.links;
  return l.perTarget.map((t, i) => ({
    name,
    id: 0,
    address: formatAddress(socket),
    target: formatAddress(t.target),
    framesSent: t.framesSent,
    accepted: t.accepted,
    sendErrorFrames: t.sendErrorFrames,
    rx: i === 0 ? l.rx.entries() : [],
  }));
}

/** Every generator run so far (the nodes' counters are cumulative); their sockets stay open until afterAll. */
const clients: (() => BookClient[])[] = [];
const sockets: DatagramSocket[] = [];
const running: TrafficGenerator[] = [];
afterEach(() => {
  for (const g of running.splice(0)) g.stop();
});

async function startTraffic(opts: TrafficOptions, targets: Address[]) {
  const socket = await new UdpNet({ recvBufferSize: 16 << 20, sendBufferSize: 16 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  sockets.push(socket);
  const gen = new TrafficGenerator({ vni: cfg.cluster.vni, ...opts }, { socket, scheduler: new RealScheduler(), target: targets[0]!, targets });
  const name = `client-${clients.length + 1}`;
  clients.push(() => bookClients(name, gen, socket.address));
  running.push(gen);
  return { gen, done: gen.run() };
}

const allClients = () => clients.flatMap((c) => c());

/** Non-zero drop counters of every running node (printed when something is lost). */
async function drops(skip: string[] = []): Promise<string> {
  const out: string[] = [];
  for (const n of launcher.nodes.values()) {
    if (skip.includes(n.name)) continue;
    try {
      const text = await (await fetch(n.metrics, { signal: AbortSignal.timeout(5000) })).text();
      for (const l of text.split('\n')) if (/drop|error|unknown/.test(l) && !l.startsWith('#') && !/ 0$/.test(l)) out.push(`${n.name}: ${l}`);
    } catch {
      out.push(`${n.name}: metrics unavailable`);
    }
  }
  return out.join('\n');
}

beforeAll(async () => {
  etcd = await ensureEtcd();
  cfg = parseConfig({
    hashTiers: KILL_LEADER
      ? [
          { id: 2, name: 'agg-b', ...eph },
          { id: 1, name: 'agg-a', ...eph },
        ]
      : [
          { id: 1, name: 'agg-a', ...eph },
          { id: 2, name: 'agg-b', ...eph },
        ],
    // Uplinks on both tiers: a reply leaves through its FD's (or service's) uplink, whatever tier its client used.
    fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, uplink: i === 2 ? 'agg-b' : 'agg-a', ...eph })),
    services: [1, 2, 3, 4].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, uplink: i % 2 === 0 ? 'agg-b' : 'agg-a', ...eph })),
    store: { url: etcd.url, ttlMs: 1000, timeoutMs: 1500 },
    control: { heartbeatMs: 100, deadAfterMs: 3000 },
    dataplane: { socketBufferBytes: 16 << 20 },
    log: { level: 'warn' },
  });
  runDir = mkdtempSync(join(tmpdir(), 'baton-multi-tier-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  await launcher.up();
  managerA = parseAddress(launcher.managerAddresses[cfg.hashTiers.findIndex((t) => t.name === 'agg-a')]!);
  tierA = parseAddress(launcher.nodes.get('agg-a')!.data);
  tierB = parseAddress(launcher.nodes.get('agg-b')!.data);
  await waitFor('3 ACTIVE FDs', async () => statusRows(await fetchStatus(managerA)).filter((r) => r.role === 'fd' && r.status === 'ACTIVE' && r.inScope).length === 3);
  await waitFor('A and B on the same scope version', async () => {
    const [va, vb] = await Promise.all(['agg-a', 'agg-b'].map((n) => gauge(n, 'scope_version')));
    return va! > 0 && va === vb;
  });
  expect(await gauge('agg-b', 'manager_leader')).toBe(KILL_LEADER ? 1 : 0);
  // What this cluster carries today, through both tiers (window mode: at most 256 in flight, so it
  // neither overflows a queue nor makes admission control refuse work).
  const { done } = await startTraffic({ window: 256, concurrency: 64, totalFlows: 100_000, packetsPerFlow: 500, udpRatio: 0.5, durationMs: 2000, drainMs: 3000, clientPortBase: 60_000 }, [tierA, tierB]);
  const probe = await done;
  const probePps = Math.round(probe.received / (probe.sendPhaseMs / 1000));
  RATE = Math.round(probePps * FRACTION);
  const books = await settledBooks(launcher, cfg, allClients);
  baseline = { unanswered: books.unanswered, drops: books.dropsTotal };
  console.log(`multi-tier: the probe carried ${probePps} pps through both tiers (lost ${probe.lost}); the runs target ${FRACTION} of it: ${RATE} pps\n${formatLossBooks(books)}`);
  expect(probe.lost).toBe(0);
  expect(books.closes).toBe(true);
}, 120_000);

afterAll(async () => {
  for (const g of running.splice(0)) g.stop();
  for (const s of sockets) await s.close();
  const procs = [...(launcher?.nodes.values() ?? [])].map((n) => n.proc);
  await launcher?.down();
  for (const p of procs) expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
  if (runDir) rmSync(runDir, { recursive: true, force: true });
  await etcd?.stop();
}, 60_000);

describe('several hash tiers on the data path (real processes)', () => {
  it('clients through both tiers, uplinks on both: every reply is delivered by whichever tier gets it; 0 lost, the loss books close', async () => {
    const { gen, done } = await startTraffic({ ratePps: RATE, concurrency: 128, totalFlows: 100_000, packetsPerFlow: 200, udpRatio: 0.5, durationMs: 4000, drainMs: 3000, clientPortBase: 10_000 }, [tierA, tierB]);
    const report = await done;
    if (report.lost > 0) console.log(`drops:\n${await drops()}`);
    const books = await settledBooks(launcher, cfg, allClients);
    console.log(`both tiers: ${report.sent} sent at ${RATE} pps, lost ${report.lost}, dup ${report.duplicated}, reordered ${report.reordered}; clients sent ${gen.links.perTarget.map((t) => `${t.accepted} to ${formatAddress(t.target)}`).join(', ')}; replies from A ${gen.links.rx.frames[1]}, from B ${gen.links.rx.frames[2]}\n${formatLossBooks(books)}`);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
    expect(books.closes).toBe(true);
    expect(books.unanswered).toBe(baseline.unanswered); // nothing new unanswered
    // Both tiers took clients in and delivered replies, all by locator.
    for (const t of ['agg-a', 'agg-b']) {
      expect(await counter(t, 'hash_tier', 'to_fd')).toBeGreaterThan(0);
      expect(await counter(t, 'hash_tier', 'to_client')).toBeGreaterThan(0);
      expect(await counter(t, 'hash_tier', 'drop_unknown_client')).toBe(0);
      expect(await counter(t, 'hash_tier', 'to_client_learned')).toBe(0);
    }
    for (const t of gen.links.perTarget) expect(t.accepted).toBeGreaterThan(0);
    expect(gen.links.rx.frames[1]).toBeGreaterThan(0);
    expect(gen.links.rx.frames[2]).toBeGreaterThan(0);
  }, 120_000);

  it('tier B is SIGKILLed under traffic: its members move to A, only frames sent to or held by B are lost and every one is counted; traffic through A then loses 0', async () => {
    const b = launcher.nodes.get('agg-b')!;
    const bWasLeader = (await gauge('agg-b', 'manager_leader')) === 1;
    const moved = async () => [await counter('fd-2', 'fd_dataplane', 'uplink_changes'), await counter('svc-2', 'service', 'uplink_changes'), await counter('svc-4', 'service', 'uplink_changes')];
    expect(await moved()).toEqual([0, 0, 0]);
    const { gen, done } = await startTraffic({ ratePps: RATE, concurrency: 128, totalFlows: 1_000_000, packetsPerFlow: 400, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000, clientPortBase: 20_000 }, [tierA, tierB]);
    await waitFor('traffic through both tiers', async () => gen.links.rx.frames[1]! > 1000 && gen.links.rx.frames[2]! > 1000);
    const killedAt = Date.now();
    b.proc.kill('SIGKILL');
    // Every member whose uplink was B moves to A as soon as its control link to B closes.
    await waitFor('fd-2, svc-2 and svc-4 moved to A', async () => (await moved()).every((n) => n === 1), 10_000);
    const failoverMs = Date.now() - killedAt;
    for (const n of ['fd-1', 'fd-3']) expect(await counter(n, 'fd_dataplane', 'uplink_changes')).toBe(0);
    for (const n of ['svc-1', 'svc-3']) expect(await counter(n, 'service', 'uplink_changes')).toBe(0);

    // After the kill: clients that enter through A (the surviving tier) lose nothing, whoever's uplink was B.
    const { done: done3 } = await startTraffic({ ratePps: Math.round(RATE / 2), concurrency: 128, totalFlows: 100_000, packetsPerFlow: 200, udpRatio: 0.5, durationMs: 3000, drainMs: 3000, clientPortBase: 50_000 }, [tierA]);
    const after = await done3;
    gen.endSending();
    const during = await done;
    if (after.lost > 0) console.log(`drops after the kill:\n${await drops(['agg-b'])}`);

    // B was SIGKILLed: its counters are unknowable, so the books cannot close, but they must still
    // balance: every frame not answered was sent to B or held by B (links into B show it sent and
    // not received; links out of B show what it delivered before it died), nothing else lost.
    const books = await settledBooks(launcher, cfg, allClients, { skipPids: [b.pid] });
    const bData = formatAddress(tierB);
    const atB = books.links.filter((l) => l.to === bData || l.fromId === 2).reduce((n, l) => n + l.lost, 0);
    const elsewhere = books.links.filter((l) => !(l.to === bData || l.fromId === 2) && l.lost !== 0);
    const lostViaA = during.perFlow.filter((f) => gen.targetOf(f.flow) === 0).reduce((n, f) => n + f.lost, 0);
    console.log(
      `tier B killed (${bWasLeader ? 'the leader' : 'a follower'}): its members moved to A in ${failoverMs} ms; during: ${during.sent} sent, ${during.lost} lost ` +
        `(${during.lost - lostViaA} in flows entering through B, ${lostViaA} entering through A); after, through A: ${after.sent} sent, ${after.lost} lost\n${formatLossBooks(books)}`,
    );
    expect(books.unanswered).toBe(books.counted);
    expect(books.dropsTotal).toBe(baseline.drops); // no node dropped anything since the probe
    expect(elsewhere).toEqual([]);
    expect(atB).toBe(books.counted - baseline.drops);
    expect(books.unanswered).toBeGreaterThan(0);
    expect(during.duplicated).toBe(0);
    expect(during.perFlowTruncated).toBe(false);
    expect(after.lost).toBe(0);
    expect(after.duplicated).toBe(0);
    expect(after.received).toBe(after.sent);
    // The surviving tier delivered everything without having to have seen the clients.
    expect(await counter('agg-a', 'hash_tier', 'drop_unknown_client')).toBe(0);
  }, 180_000);
});
