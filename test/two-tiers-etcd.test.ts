/**
 * Two hash tiers on etcd, as real processes with real sockets: etcd from
 * Debian's etcd-server (test/setup/etcd.ts), `baton node` processes started by
 * the launcher. Verified traffic goes through aggregation B, the uplink of
 * every FD and service node.
 *
 *   1. The manager leading a disengage (A) is frozen as soon as the FD starts
 *      migrating, then killed: B is elected, resumes the disengage (the FD
 *      answers with the migration it ran) and finishes it once; 0 lost.
 *   2. etcd is killed under traffic: forwarding goes on with the last scope,
 *      a disengage fails with a clear BATON_STORE_UNAVAILABLE error and the
 *      FD stays ACTIVE; etcd comes back, a leader answers again within two
 *      lease TTLs of its return (docs/store.md, "After a store outage"), and
 *      the same disengage succeeds.
 *
 * Every traffic run closes the loss books (test/helpers/loss-books.ts):
 * the clients' unanswered frames equal what the nodes counted, no node leaks.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Launcher } from '../cli/launcher.js';
import { operation, disengageRequest } from '../cli/operations-cmd.js';
import { parseConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { fetchStatus, statusRows } from '../cli/status.js';
import { hashTierDataAddress } from '../cli/traffic-cmd.js';
import { UdpNet } from '../shared/io/datagram.js';
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TrafficGenerator } from '../traffic/generator.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { DisengageReply } from '../shared/control/messages.js';
import { isBatonError } from '../shared/errors.js';
import { ensureEtcd, type EtcdInstance } from './setup/etcd.js';
import { bookClient, settledBooks, formatLossBooks } from './helpers/loss-books.js';
import type { BookClient } from '../traffic/loss-books.js';
import type { BatonConfig } from '../shared/config/config.js';
import { waitForReachable as waitFor } from './helpers/wait.js';

const eph = { dataPort: 0, controlPort: 0, metricsPort: 0 };
let etcd: EtcdInstance;
let launcher: Launcher;
let runDir: string;
let managerB: Address;
let cfg: BatonConfig;


const rowsB = async () => statusRows(await fetchStatus(managerB));
const statusOf = async (name: string) => (await rowsB()).find((r) => r.node === name)?.status;

async function metric(name: string, family: string, counter: string): Promise<number> {
  const text = await (await fetch(launcher.nodes.get(name)!.metrics)).text();
  const line = text.split('\n').find((l) => l.startsWith(`baton_${family}_total{`) && l.includes(`counter="${counter}"`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

/** Non-zero drop counters of every running node (printed when the verifier reports loss). */
async function drops(): Promise<string> {
  const out: string[] = [];
  for (const n of launcher.nodes.values()) {
    try {
      const text = await (await fetch(n.metrics)).text();
      for (const l of text.split('\n')) if (/drop|error|unknown/.test(l) && !l.startsWith('#') && !/ 0$/.test(l)) out.push(`${n.name}: ${l}`);
    } catch {
      out.push(`${n.name}: metrics unavailable`);
    }
  }
  return out.join('\n');
}

/** Every generator run so far, for the loss books (the nodes' counters are cumulative). */
const clients: (() => BookClient)[] = [];
/** Sockets of the generators: open until the end (late echoes are still counted in the books). */
const sockets: { close(): Promise<void> }[] = [];
/** Processes SIGKILLed by a test: their counters since the last scrape are unknown, so the books leave them out. */
const killedPids: number[] = [];

async function startTraffic(opts: TrafficOptions) {
  const target = await hashTierDataAddress(managerB);
  const socket = await new UdpNet({ recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 }).bind({ host: '127.0.0.1', port: 0 });
  const gen = new TrafficGenerator({ vni: 1, ...opts }, { socket, scheduler: new RealScheduler(), target });
  const name = `client-${clients.length + 1}`;
  clients.push(() => bookClient(name, gen, socket.address, target));
  sockets.push(socket);
  const done = gen.run();
  running.push(gen);
  return { gen, done };
}

/**
 * The loss books once the cluster is quiet: every frame the clients sent came
 * back or is counted (a node drop or a link loss), and no node leaks frames.
 */
async function expectBooksClose(what: string): Promise<void> {
  const books = await settledBooks(launcher, cfg, () => clients.map((c) => c()), { skipPids: killedPids });
  console.log(`${what}: ${formatLossBooks(books)}`);
  expect(books.unanswered, 'unanswered frames = frames the nodes counted').toBe(books.counted);
  expect(books.nodes.filter((n) => n.leak !== 0).map((n) => `${n.node}: ${n.leak}`), 'no node leaks frames').toEqual([]);
  expect(books.closes).toBe(true);
}

/** Generators of the running test: a failed test must not leave its traffic running into the next one. */
const running: TrafficGenerator[] = [];
afterEach(() => {
  for (const g of running.splice(0)) g.stop();
});

function disengageVia(manager: Address, target: string, onFirstProgress?: () => void): Promise<DisengageReply> {
  let first = true;
  return operation(manager, disengageRequest(target, { policy: 'hash-aligned', timeoutMs: 20_000, chunkRecords: 256 }), 60_000, ({ migration }) => {
    if (migration && first) {
      first = false;
      onFirstProgress?.();
    }
  }).then((b) => {
    if (b.case !== 'disengageReply') throw new Error(`unexpected ${b.case}`);
    return b.value;
  });
}

beforeAll(async () => {
  etcd = await ensureEtcd();
  cfg = parseConfig({
    hashTiers: [
      { id: 1, name: 'agg-a', ...eph },
      { id: 2, name: 'agg-b', ...eph },
    ],
    fds: [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}`, uplink: 'agg-b', ...eph })),
    services: [1, 2].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}`, uplink: 'agg-b', ...eph })),
    store: { url: etcd.url, ttlMs: 1000, timeoutMs: 1500 },
    control: { heartbeatMs: 100, deadAfterMs: 3000 },
    log: { level: 'warn' },
  });
  runDir = mkdtempSync(join(tmpdir(), 'baton-2tier-'));
  launcher = new Launcher(cfg, { runDir, readyTimeoutMs: 30_000 });
  await launcher.up();
  managerB = parseAddress(launcher.managerAddresses[1]!);
  // Converged: B shows every FD ACTIVE (statuses adopted from the record A committed).
  await waitFor('3 ACTIVE FDs seen through B', async () => (await rowsB()).filter((r) => r.role === 'fd' && r.status === 'ACTIVE').length === 3);
  // Both tiers forward with the same table version (B installs what A commits).
  await waitFor('A and B on the same scope version', async () => {
    const [va, vb] = await Promise.all(['agg-a', 'agg-b'].map((n) => gauge(n, 'scope_version')));
    return va! > 0 && va === vb;
  });
  expect(await gauge('agg-a', 'manager_leader')).toBe(1);
  expect(await gauge('agg-b', 'manager_leader')).toBe(0);
}, 90_000);

async function gauge(node: string, name: string): Promise<number> {
  const text = await (await fetch(launcher.nodes.get(node)!.metrics)).text();
  const line = text.split('\n').find((l) => l.startsWith(`baton_${name}{`) || l.startsWith(`baton_${name} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

afterAll(async () => {
  for (const s of sockets.splice(0)) await s.close();
  const procs = [...launcher.nodes.values()].map((n) => n.proc);
  await launcher.down();
  expect(procs.every((p) => p.exitCode !== null || p.signalCode !== null)).toBe(true);
  rmSync(runDir, { recursive: true, force: true });
  await etcd?.stop();
}, 60_000);

describe('two hash tiers on etcd (real processes)', () => {
  it('the leading manager dies midway through a disengage: the other takes over and finishes it once, 0 lost', async () => {
    const { gen, done } = await startTraffic({ ratePps: 20_000, concurrency: 128, totalFlows: 1_000_000, packetsPerFlow: 400, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000 });
    await new Promise((r) => setTimeout(r, 1500)); // flows established on every FD
    const a = launcher.nodes.get('agg-a')!;
    // Asked through B, forwarded to the leader A; A is frozen at the FD's first progress report
    // (it cannot take the FD's confirmation), then killed.
    const t0 = Date.now();
    const reply = await disengageVia(managerB, 'fd-1', () => {
      a.proc.kill('SIGSTOP');
      killedPids.push(a.pid);
      setTimeout(() => a.proc.kill('SIGKILL'), 300);
    });
    const tookMs = Date.now() - t0;
    expect(reply.errorMessage).toBe('');
    expect(reply.ok).toBe(true);
    expect(await statusOf('fd-1')).toBe('DISENGAGED');
    expect(await metric('agg-b', 'manager', 'disengages_resumed')).toBe(1);
    expect(await metric('agg-b', 'manager', 'requests_forwarded')).toBe(1);
    // The FD ran one migration and answered both managers with it.
    expect(await metric('fd-1', 'fd_migration', 'disengages_started')).toBe(1);
    expect(await metric('fd-1', 'fd_migration', 'disengages_rejoined')).toBe(1);
    const inScope = (await rowsB()).filter((r) => r.role === 'fd' && r.inScope).map((r) => r.node);
    expect(inScope).toEqual(['fd-2', 'fd-3']);

    await new Promise((r) => setTimeout(r, 1000));
    gen.endSending();
    const report = await done;
    if (report.lost > 0) console.log(`drops:\n${await drops()}\nlossy flows: ${JSON.stringify(report.perFlow.filter((f) => f.lost > 0).slice(0, 5))}`);
    console.log(`take-over: disengage of fd-1 answered in ${tookMs} ms (leader killed midway); traffic ${report.sent} sent, ${report.lost} lost, ${report.duplicated} dup, ${report.reordered} reordered`);
    expect(report.sent).toBeGreaterThan(20_000);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
    await expectBooksClose('take-over');
  }, 120_000);

  it('etcd restarted under traffic: forwarding goes on, a disengage fails clearly while it is away and succeeds after', async () => {
    const { gen, done } = await startTraffic({ ratePps: 20_000, concurrency: 128, totalFlows: 1_000_000, packetsPerFlow: 400, udpRatio: 0.5, durationMs: 60_000, drainMs: 3000, clientPortBase: 40_000 });
    await new Promise((r) => setTimeout(r, 1000));
    await etcd.kill();
    const receivedAtKill = gen.verifier.received;
    const t0 = Date.now();
    const failed = await disengageVia(managerB, 'fd-2');
    const failMs = Date.now() - t0;
    expect(failed.ok).toBe(false);
    expect(failed.errorCode).toBe('BATON_STORE_UNAVAILABLE');
    expect(failed.errorMessage).toMatch(/store/i);
    expect(failMs).toBeLessThan(10_000);
    expect(await statusOf('fd-2')).toBe('ACTIVE');
    await new Promise((r) => setTimeout(r, 500));
    expect(gen.verifier.received).toBeGreaterThan(receivedAtKill + 5000); // the data plane kept going (echoes came back)

    await etcd.restart();
    // etcd is back (healthy). A leader must answer within two lease TTLs: the
    // probe is a disengage of an FD that does not exist, which only a leading
    // manager answers (BATON_UNKNOWN_NODE); a follower without a leader
    // answers BATON_NO_LEADER, and moves nothing either way.
    const back = Date.now();
    const ttlMs = cfg.store.ttlMs;
    const probes: string[] = [];
    await waitFor('a leader answering after the store is back', async () => {
      const r = await disengageVia(managerB, 'no-such-fd').catch((e: Error) => ({ ok: false, errorCode: isBatonError(e) ? e.code : 'error', errorMessage: e.message }));
      if (r.errorCode !== 'BATON_UNKNOWN_NODE') probes.push(`${r.errorCode}: ${r.errorMessage}`);
      return r.errorCode === 'BATON_UNKNOWN_NODE';
    }, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; last answers: ${probes.slice(-3).join(' | ')}`);
    });
    const leaderBackMs = Date.now() - back;
    console.log(`store restart: a leader answered ${leaderBackMs} ms after etcd was back = ${(leaderBackMs / ttlMs).toFixed(2)} x the lease TTL (${ttlMs} ms); ${probes.length} probes refused before${probes.length ? `, last: ${probes[probes.length - 1]}` : ''}`);
    expect(leaderBackMs, 'leader back within 2 lease TTLs of the store\'s return').toBeLessThanOrEqual(2 * ttlMs);

    // Control works again: the same disengage succeeds.
    let ok: DisengageReply | null = null;
    const attempts: string[] = [];
    await waitFor('a disengage after the store is back', async () => {
      try {
        const r = await disengageVia(managerB, 'fd-2');
        if (r.ok) ok = r;
        else attempts.push(`${r.errorCode}: ${r.errorMessage}`);
        return r.ok;
      } catch (e) {
        attempts.push(String(e));
        if (isBatonError(e)) return false;
        throw e;
      }
    }, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}; last answers: ${attempts.slice(-3).join(' | ')}`);
    });
    expect(attempts, 'the first disengage after a leader answered succeeds').toEqual([]);
    expect(ok!.ok).toBe(true);
    expect(await statusOf('fd-2')).toBe('DISENGAGED');

    await new Promise((r) => setTimeout(r, 1000));
    gen.endSending();
    const report = await done;
    if (report.lost > 0) console.log(`drops:\n${await drops()}\nlossy flows: ${JSON.stringify(report.perFlow.filter((f) => f.lost > 0).slice(0, 5))}`);
    console.log(`store restart: disengage refused in ${failMs} ms while etcd was down (${failed.errorCode}); traffic ${report.sent} sent, ${report.lost} lost, ${report.duplicated} dup`);
    expect(report.lost).toBe(0);
    expect(report.duplicated).toBe(0);
    expect(report.received).toBe(report.sent);
    await expectBooksClose('store restart');
  }, 120_000);
});
