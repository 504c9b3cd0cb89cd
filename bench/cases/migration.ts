/**
 * Migration cost and its effect on the data path.
 *
 * 1. A 1 M-flow table migrated by the real migration client over real
 *    loopback TCP — copy in acknowledged chunks, switch, acknowledged
 *    ownership broadcast, purge, drain — from a target FD (this process) to
 *    an inheritor FD and past one more peer FD (each its own process,
 *    pre-filled with the learned entries a broadcast would have given it).
 *    Baseline in the same run: a plain loopback TCP copy of the same bytes
 *    (the copy's export chunks), no parsing, no acknowledgements. Every FD
 *    has the same flowTable.seed, as one cluster config gives them; two
 *    more rounds give each FD its own seed, to show what sharing it saves.
 * 2. Steady-state redirect hops per client packet after a disengage, for
 *    least-flows and hash-aligned inheritors (in-memory cluster, virtual
 *    time, deterministic).
 *
 * Each round prints its phases: copy and broadcast as the migration client
 * reports them, "other" = the rest of the client's run (owned-slot snapshot,
 * inheritor choice, switch, purge, drain). Diagnostics for the peer FD
 * processes: BATON_BENCH_PROF=<dir> writes their CPU profiles,
 * BATON_BENCH_TRACE_GC=1 prints their GCs (lines other than the peer protocol
 * go to stderr, prefixed with the peer's name).
 */
import net from 'node:net';
import { parseConfig } from '../../shared/config/config.js';
import { RealScheduler } from '../../shared/runtime/scheduler.js';
import { UdpNet } from '../../shared/io/datagram.js';
import { TcpNet } from '../../shared/io/stream.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FdNode } from '../../nodes/fd-node.js';
import { fillConnections } from '../migration-fill.js';
import { exportedSize } from '../../distributor/flow-export.js';
import { MemberStatus, emptyFlowStats, nodeInfo, Role } from '../../shared/control/messages.js';
import { InMemoryCluster } from '../../simulations/in-memory-cluster.js';
import { TrafficGenerator } from '../../traffic/generator.js';
import { FD } from '../../distributor/fd-counters.js';
import { HT } from '../../hash-tier/forwarding-engine.js';
import { rateResult, ratesFromMs, spreadOf, timeResult, type BenchCase, type BenchResult } from '../lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const SEED = 1;

const FLOWS = 1_000_000; // table entries (500 k connections, each a forward and a reverse flow)
const CHUNK = 32_768;
/** Migration rounds; the median is reported, with min and max. */
const ROUNDS = 3;
/** Rounds with mismatched table seeds (what the shared seed saves). */
const MIXED_ROUNDS = 2;

async function tcpCopy(bytes: number, chunk: number): Promise<number> {
  let received = 0;
  let doneResolve: () => void = () => {};
  const done = new Promise<void>((r) => (doneResolve = r));
  const server = net.createServer((s) =>
    s.on('data', (d) => {
      received += d.length;
      if (received >= bytes) doneResolve();
    }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const c = net.connect(port, '127.0.0.1');
  await new Promise<void>((r) => c.once('connect', () => r()));
  const buf = Buffer.alloc(chunk, 7);
  const t0 = process.hrtime.bigint();
  let sent = 0;
  while (sent < bytes) {
    const n = Math.min(chunk, bytes - sent);
    if (!c.write(n === chunk ? buf : buf.subarray(0, n))) await new Promise((r) => c.once('drain', r));
    sent += n;
  }
  await done;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  c.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  return ms;
}

interface PeerProc {
  proc: ChildProcess;
  control: string;
  stats(): Promise<{ size: number; owned: number }>;
}

/** A peer FD in its own process (bench/migration-peer.ts), pre-filled with learned entries. */
function startPeer(id: number, name: string, targetId: number, tableSeed: number): Promise<PeerProc> {
  const prof = process.env.BATON_BENCH_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BATON_BENCH_PROF] : process.env.BATON_BENCH_TRACE_GC ? ['--trace-gc'] : [];
  const proc = spawn(process.execPath, [...prof, '--import', 'tsx', join(here, '..', 'migration-peer.ts'), JSON.stringify({ id, name, flows: FLOWS, seed: SEED, targetId, tableSeed })], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: proc.stdout! });
  const waiters: ((l: string) => void)[] = [];
  lines.on('line', (l) => {
    if (/^(READY|STATS) /.test(l)) waiters.shift()?.(l);
    else process.stderr.write(`[${name}] ${l}\n`); // e.g. --trace-gc output
  });
  const next = () => new Promise<string>((r) => waiters.push(r));
  return next().then((l) => ({
    proc,
    control: (JSON.parse(l.slice(6)) as { control: string }).control,
    stats: async () => {
      const p = next();
      proc.stdin!.write('stats\n');
      return JSON.parse((await p).slice(6)) as { size: number; owned: number };
    },
  }));
}

/**
 * One migration. sharedSeed: every FD's table has the target's flowTable.seed
 * (what one cluster config gives); else each peer its own, so the records
 * arrive in an order unrelated to the inheritor's slots.
 */
async function migrateOnce(progress: (m: string) => void, sharedSeed: boolean): Promise<{ ms: number; copyMs: number; broadcastMs: number; otherMs: number; bytes: number; entries: number }> {
  const cfg = parseConfig({ fds: [{ id: 11, name: 'fd-1' }], flowTable: { maxFlows: FLOWS + 16_384 }, log: { level: 'error' } });
  const io = { scheduler: new RealScheduler(), datagrams: new UdpNet(), messages: new TcpNet() };
  const target = new FdNode(cfg, cfg.fds[0]!, io, { host: '127.0.0.1', port: 1 });
  const seedOf = (k: number): number => (sharedSeed ? cfg.flowTable.seed : (cfg.flowTable.seed + k * 0x9e3779b9) >>> 0);
  const [heir, peer] = await Promise.all([startPeer(12, 'fd-2', 11, seedOf(1)), startPeer(13, 'fd-3', 11, seedOf(2))]);
  await target.start({ register: false });
  try {
    target.mesh.setPeers([
      { id: 12, controlAddr: heir.control },
      { id: 13, controlAddr: peer.control },
    ]);
    fillConnections(target.table, FLOWS / 2, SEED, target.me.id, false);
    const entries = target.table.size;
    progress(`target holds ${entries} entries; inheritor fd-2 and peer fd-3 run in their own processes`);
    const member = (id: number, name: string, control: string, flows: number) => ({
      node: nodeInfo({ id, name, role: Role.FD, controlAddr: control }),
      status: MemberStatus.ACTIVE,
      inScope: true,
      stats: { ...emptyFlowStats(), flowsOwned: flows },
    });
    const t0 = process.hrtime.bigint();
    const r = await target.migration.disengage({
      target: 'fd-1', targetId: 11, policy: 'least-flows', inheritor: '', backup: '', timeoutMs: 60_000, migrationId: 1,
      peers: [member(12, 'fd-2', heir.control, 0), member(13, 'fd-3', peer.control, 1e9)],
      nextScope: { version: 2, members: [{ id: 12, name: 'fd-2' }, { id: 13, name: 'fd-3' }], tableSize: cfg.hash.tableSize, hashSeed: cfg.hash.seed, anchor: ['fd-1', 'fd-2', 'fd-3'] },
      chunkRecords: CHUNK, randomSeed: 1,
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (!r.ok) throw new Error(`migration failed: ${r.errorMessage}`);
    const hs = await heir.stats();
    const ps = await peer.stats();
    if (hs.owned !== entries || target.table.size !== 0) throw new Error(`migration incomplete: inheritor owns ${hs.owned} of ${entries}, target keeps ${target.table.size}`);
    if ((ps as unknown as { byOwner: Record<string, number> }).byOwner['11']) throw new Error('the peer still names the target as an owner');
    const bytes = Math.ceil(entries / CHUNK) * exportedSize(0) + entries * (exportedSize(1) - exportedSize(0));
    return { ms, copyMs: r.copyMs, broadcastMs: r.broadcastMs, otherMs: r.durationMs - r.copyMs - r.broadcastMs, bytes, entries };
  } finally {
    await target.stop();
    for (const p of [heir, peer]) p.proc.stdin!.end();
    await Promise.all([heir, peer].map((p) => new Promise((r) => (p.proc.exitCode !== null ? r(null) : p.proc.once('exit', r)))));
  }
}

async function redirectHops(policy: string): Promise<number> {
  const c = new InMemoryCluster({ log: { level: 'error' } });
  await c.start();
  try {
    const socket = c.net.bindSync({ host: '127.0.0.1', port: 0 });
    const gen = new TrafficGenerator({ concurrency: 90, totalFlows: 90, packetsPerFlow: 600, udpRatio: 0.5, ratePps: 9000 }, { socket, scheduler: c.scheduler, target: c.hashTierData });
    const done = gen.run();
    await c.runFor(300);
    const r = await c.drive(c.hashTier.manager.ops.disengage({ target: 'fd-2', policy }), 30_000);
    if (!r.ok) throw new Error(r.errorMessage);
    await c.runFor(100);
    const red = () => c.fds.reduce((n, f) => n + f.handler.counters.get(FD.redirected), 0);
    const fromClients = () => c.hashTier.engine.counters.get(HT.to_fd); // client packets hashed to an FD
    const r0 = red();
    const p0 = fromClients();
    await c.runFor(2000);
    const hops = (red() - r0) / (fromClients() - p0);
    gen.endSending();
    await c.drive(done, 60_000);
    return hops;
  } finally {
    await c.stop();
  }
}

const migration: BenchCase = {
  id: 'migration',
  title: '1 M-flow table migration vs a plain loopback TCP copy; redirect hops after a disengage by policy',
  async run(progress) {
    type Round = Awaited<ReturnType<typeof migrateOnce>>;
    const rounds = async (count: number, sharedSeed: boolean, label: string) => {
      const all: Round[] = [];
      for (let i = 0; i < count; i++) {
        const m = await migrateOnce(progress, sharedSeed);
        progress(`migration round ${i + 1} (${label}): ${m.ms.toFixed(0)} ms (copy ${m.copyMs.toFixed(0)} ms, broadcast ${m.broadcastMs.toFixed(0)} ms, other ${m.otherMs.toFixed(0)} ms)`);
        all.push(m);
      }
      const of = (f: (r: Round) => number) => spreadOf(all.map(f));
      return { ms: of((r) => r.ms), copyMs: of((r) => r.copyMs), broadcastMs: of((r) => r.broadcastMs), otherMs: of((r) => r.otherMs), bytes: all[0]!.bytes, entries: all[0]!.entries };
    };
    const b = await rounds(ROUNDS, true, 'shared flowTable.seed');
    const mixed = await rounds(MIXED_ROUNDS, false, 'a seed per FD');
    const copies: number[] = [];
    for (let i = 0; i < 3; i++) copies.push(await tcpCopy(b.bytes, CHUNK * 36));
    const copy = spreadOf(copies);
    progress(`plain TCP copy of ${(b.bytes / 1e6).toFixed(1)} MB: ${copies.map((c) => c.toFixed(0)).join(', ')} ms`);
    const least = await redirectHops('least-flows');
    const aligned = await redirectHops('hash-aligned');
    progress(`redirect hops per client packet after the disengage: least-flows ${least.toFixed(3)}, hash-aligned ${aligned.toFixed(3)}`);
    const phases = (r: typeof b) => `median copy ${r.copyMs.median.toFixed(0)} ms, broadcast ${r.broadcastMs.median.toFixed(0)} ms, other ${r.otherMs.median.toFixed(0)} ms`;
    const out: BenchResult[] = [
      timeResult(`migrate ${b.entries} entries (copy+acks, switch, broadcast+acks, purge, drain)`, b.ms, copy, 'plain loopback TCP copy of the same bytes', `${phases(b)}; 3 FD processes on 2 cores`),
      rateResult('migration rate', ratesFromMs(b.ms, b.entries), 'entries/s', ratesFromMs(copy, b.entries), 'TCP copy, entries/s equivalent'),
      timeResult(`migrate ${mixed.entries} entries, each FD its own flowTable.seed`, mixed.ms, b.ms, 'the same with one shared seed', `${phases(mixed)}; ratio < 1 = the shared seed is faster`),
      { name: 'redirect hops per client packet after disengage, least-flows', value: least, unit: 'hops/pkt' },
      { name: 'redirect hops per client packet after disengage, hash-aligned', value: aligned, unit: 'hops/pkt', note: 'the inheritor is where the shrunken scope sends each flow' },
    ];
    return out;
  },
};

export default migration;
