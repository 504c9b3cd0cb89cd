/**
 * The hash tier with many clients: what 100 k distinct client underlay
 * addresses cost its forwarding engine, per frame and in memory, against the
 * same frames from one client address (same run, same engine settings).
 *
 * In process on the in-memory network (shared/io/datagram.ts MemoryNetwork,
 * virtual time), as the other in-process data-path measurements do: a real
 * Datapath (RX ring, batches, TX lanes and pool) and ForwardingEngine with
 * the config defaults of a hash-tier node (client address table 4096, learned
 * clients 65536, TX pool 512 x 32 KiB, batches of 64 datagrams).
 *
 * Each round, for every client i of N = 100 k: client i's socket sends one
 * client frame (inner source = its own virtual IP) to the tier, which stamps
 * it with the client's locator and hashes it to one of two FD sinks; then the
 * "FD" sends the egress frames back, packed as an FD packs them (256 frames
 * per 32 KiB datagram), each carrying client i's locator, and the tier sends
 * each to its client. Baseline: the very same frames, but every one from and
 * to one client address (one socket, one locator).
 *
 * Pacing keeps every batch within the rings (1024 client datagrams, or one FD
 * datagram = 256 client destinations, per step): the case measures the cost
 * of per-client state, not of overflowing the TX pool. Frames are built
 * before the timed part; the timed part is the sends (the in-memory network
 * copies each datagram) and everything the tier does with them.
 *
 * Reported: frames/s (min / median / max of ROUNDS rounds, each on a fresh
 * engine), on the in-memory network and with the engine alone (its socket
 * a stub: the network's per-datagram copy, Uint8Array.from, left out); the
 * frames one unpaced batch delivers to 16 k distinct addresses (the TX
 * pool's bound, `burst`); and the heap and RSS one round retains (after a
 * full GC, from after the setup to after the traffic), measured in a fresh
 * process per variant. Before/after figures: docs/decisions/0008-tx-lanes-per-address.md.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { MemoryNetwork, type MemorySocket, type DatagramSocket } from '../../shared/io/datagram.js';
import type { Address } from '../../shared/io/address.js';
import { VirtualScheduler } from '../../shared/runtime/scheduler.js';
import { ForwardingEngine, HT } from '../../hash-tier/forwarding-engine.js';
import { EncapMeta, Tier, encodeEncap, encapHeaderLen } from '../../shared/encap/geneve.js';
import { buildPacket } from '../../shared/packet/build.js';
import { IPPROTO_UDP, ipv4ToInt } from '../../shared/packet/meta.js';
import { HashScope } from '../../shared/scope/hash-scope.js';
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rateResult, ratesFromMs, spreadOf, type BenchCase, type BenchResult } from '../lib.js';

const VNI = 1;
const VIP = ipv4ToInt('198.51.100.1');
const CLIENTS = 100_000;
const ROUNDS = 5; // after one warm-up round per variant
const PAYLOAD = 64;
const INGRESS_PER_STEP = 1024; // client datagrams per step (RX ring 4096)
const EGRESS_FRAMES_PER_DATAGRAM = 256; // 256 x 128 B = one 32 KiB FD datagram
const INNER_LEN = 20 + 8 + PAYLOAD;
const TO_CLIENT_FRAME = 24 + INNER_LEN; // the tier strips the locator
const TO_FD_FRAME = 36 + INNER_LEN; // the tier writes one

function gcFn(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}
const gc = gcFn();

/** Client i's underlay address: 10.0.0.0 + i (up to 16 M), ports spread too. */
const clientIp = (i: number): number => (0x0a000000 + i) >>> 0;
const clientPort = (i: number): number => 40000 + (i & 1023);
const ipString = (ip: number): string => `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
/** Client i's virtual IP (the inner source): 100.64.0.0 + i. */
const clientVip = (i: number): number => (0x64400000 + i) >>> 0;

function encode(tier: number, srcIp: number, dstIp: number, loc: { ip: number; port: number } | null, senderId: number): Uint8Array {
  const inner = buildPacket({ srcIp, dstIp, srcPort: 40000, dstPort: 53, proto: IPPROTO_UDP, payload: new Uint8Array(PAYLOAD) });
  const m = Object.assign(new EncapMeta(), { tier, senderId, vni: VNI, locatorIp: loc?.ip ?? 0, locatorPort: loc?.port ?? 0 });
  const out = new Uint8Array(encapHeaderLen(m) + inner.length);
  if (encodeEncap(out, 0, m, inner, 0, inner.length) !== out.length) throw new Error('encode failed');
  return out;
}

/** The frames of one round: client frames (one datagram each) and the FD's egress datagrams (packed). */
export function buildFrames(distinct: boolean): { ingress: Uint8Array[]; egress: Uint8Array[] } {
  const ingress: Uint8Array[] = [];
  const egress: Uint8Array[] = [];
  let pack = new Uint8Array(EGRESS_FRAMES_PER_DATAGRAM * TO_FD_FRAME);
  let fill = 0;
  for (let i = 0; i < CLIENTS; i++) {
    ingress.push(encode(Tier.CLIENT, clientVip(i), VIP, null, 0));
    const c = distinct ? i : 0;
    const f = encode(Tier.FD, VIP, clientVip(i), { ip: clientIp(c), port: clientPort(c) }, 11);
    pack.set(f, fill);
    fill += f.length;
    if (fill + TO_FD_FRAME > pack.length) {
      egress.push(pack);
      pack = new Uint8Array(pack.length);
      fill = 0;
    }
  }
  if (fill > 0) egress.push(pack.subarray(0, fill));
  return { ingress, egress };
}

export interface Round {
  ms: number;
  heapBytes: number;
  rssBytes: number;
  toClient: number;
  toFd: number;
  gotClient: number;
  gotFd: number;
  lanes: number;
  clientAddrs: number;
  addrEvictions: number;
  clientEvictions: number;
  txDatagrams: number;
  txDroppedFull: number;
  linkTxEntries: number;
}

/**
 * The tier's socket for the `direct` runs: datagrams are handed to the
 * engine's receive handler, sends are counted and reported done on the next
 * event (asynchronously, as a real socket does, so the TX pool behaves as in
 * production): what the engine itself costs, without the in-memory network's
 * per-datagram copy and address lookup.
 */
class DirectSocket implements DatagramSocket {
  readonly address: Address = { host: '127.0.0.1', port: 6000 };
  handler: (d: Uint8Array, from: Address) => void = () => {};
  gotFd = 0;
  gotClient = 0;
  constructor(private readonly sched: VirtualScheduler) {}
  send(d: Uint8Array, to: Address, onSent?: (err: Error | null) => void): void {
    if (to.port === 7001 || to.port === 7002) this.gotFd += d.length / TO_FD_FRAME;
    else this.gotClient += d.length / TO_CLIENT_FRAME;
    if (onSent) this.sched.defer(() => onSent(null));
  }
  onMessage(h: (d: Uint8Array, from: Address) => void): void {
    this.handler = h;
  }
  sendQueueBytes(): number {
    return 0;
  }
  sendQueueCount(): number {
    return 0;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

export type Transport = 'memory' | 'direct';

export function round(transport: Transport, distinct: boolean, frames: { ingress: Uint8Array[]; egress: Uint8Array[] }): Round {
  const sched = new VirtualScheduler(0);
  const net = new MemoryNetwork(sched, 0);
  const direct = transport === 'direct' ? new DirectSocket(sched) : null;
  const tierSock = direct ?? net.bindSync({ host: '127.0.0.1', port: 6000 });
  const engine = new ForwardingEngine(tierSock, sched, { id: 1, vni: VNI, hashSeed: 1, rxCapacity: 4096, batchDatagrams: 64, tx: { maxDatagramBytes: 32768, poolBuffers: 512 } });
  let gotFd = 0;
  let gotClient = 0;
  const fdAddrs: Address[] = [7001, 7002].map((port) => ({ host: '127.0.0.1', port }));
  const fds = direct ? [] : fdAddrs.map((a) => {
    const s = net.bindSync(a);
    s.onMessage((d) => (gotFd += d.length / TO_FD_FRAME));
    return s;
  });
  engine.setScope(HashScope.build(1, ['fd-1', 'fd-2'], 251, 1), [
    { name: 'fd-1', id: 11, data: fdAddrs[0]! },
    { name: 'fd-2', id: 12, data: fdAddrs[1]! },
  ]);
  const onClient = (d: Uint8Array): void => {
    gotClient += d.length / TO_CLIENT_FRAME;
  };
  const n = distinct ? CLIENTS : 1;
  const clients: MemorySocket[] = [];
  const froms: Address[] = [];
  for (let i = 0; i < n; i++) {
    const a = { host: ipString(clientIp(i)), port: clientPort(i) };
    froms.push(a);
    if (direct) continue;
    const s = net.bindSync(a);
    s.onMessage(onClient);
    clients.push(s);
  }
  const tier = tierSock.address;
  const fd = fds[0];
  const fdFrom = fdAddrs[0]!;
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const rss0 = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CLIENTS; ) {
    const end = Math.min(CLIENTS, i + INGRESS_PER_STEP);
    if (direct) for (; i < end; i++) direct.handler(frames.ingress[i]!, froms[distinct ? i : 0]!);
    else for (; i < end; i++) clients[distinct ? i : 0]!.send(frames.ingress[i]!, tier);
    sched.runUntilIdle();
  }
  for (const d of frames.egress) {
    if (direct) direct.handler(d, fdFrom);
    else fd!.send(d, tier);
    sched.runUntilIdle();
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  gc();
  const heapBytes = process.memoryUsage().heapUsed - heap0;
  const rssBytes = process.memoryUsage().rss - rss0;
  if (direct) {
    gotFd = direct.gotFd;
    gotClient = direct.gotClient;
  }
  const c = engine.counters;
  const r: Round = {
    ms,
    heapBytes,
    rssBytes,
    toClient: c.get(HT.to_client),
    toFd: c.get(HT.to_fd),
    gotClient,
    gotFd,
    lanes: engine.dp.tx.laneCount,
    clientAddrs: engine.clientAddrCount,
    addrEvictions: c.get(HT.client_addrs_evicted_full) + c.get(HT.client_addrs_evicted_idle),
    clientEvictions: c.get(HT.clients_evicted_full) + c.get(HT.clients_evicted_idle),
    txDatagrams: c.get(HT.tx_datagrams),
    txDroppedFull: c.get(HT.tx_dropped_full),
    linkTxEntries: engine.dp.tx.links.entries().length,
  };
  void clients; // kept alive until here: their memory is setup, not growth
  void froms;
  return r;
}

const MB = 1024 * 1024;

const perFrameNs = (ms: number): number => (ms * 1e6) / (2 * CLIENTS);
const FRAMES = 2 * CLIENTS;

function describe(transport: Transport, distinct: boolean, x: Round): string {
  const undelivered = FRAMES - x.gotClient - x.gotFd;
  return (
    `${transport}, ${distinct ? `${CLIENTS} addresses` : '1 address'}: ${perFrameNs(x.ms).toFixed(0)} ns/frame, heap +${(x.heapBytes / MB).toFixed(1)} MB, rss +${(x.rssBytes / MB).toFixed(1)} MB; ` +
    `lanes ${x.lanes}, client addrs ${x.clientAddrs}, addr evictions ${x.addrEvictions}, learned-client evictions ${x.clientEvictions}, tx datagrams ${x.txDatagrams}, tx_dropped_full ${x.txDroppedFull}, link-tx entries ${x.linkTxEntries}, undelivered ${undelivered}`
  );
}

/**
 * One batch (64 FD datagrams, 16,384 egress frames) to as many distinct
 * client addresses, or all to one: how many frames the TX pool lets out. A
 * lane holds a pool buffer while it has frames queued, and buffers come back
 * only when their sends complete, after the batch: one batch reaches at most
 * txPoolBuffers (512) destinations, the rest is tx_dropped_full (counted).
 */
export function burst(distinct: boolean, egress: Uint8Array[]): { delivered: number; dropped: number } {
  const sched = new VirtualScheduler(0);
  const sock = new DirectSocket(sched);
  const engine = new ForwardingEngine(sock, sched, { id: 1, vni: VNI, hashSeed: 1, rxCapacity: 4096, batchDatagrams: 64, tx: { maxDatagramBytes: 32768, poolBuffers: 512 } });
  engine.setScope(HashScope.build(1, ['fd-1'], 251, 1), [{ name: 'fd-1', id: 11, data: { host: '127.0.0.1', port: 7001 } }]);
  const from = { host: '127.0.0.1', port: 7001 };
  for (let i = 0; i < 64; i++) sock.handler(egress[i]!, from);
  sched.runUntilIdle();
  if (distinct !== engine.clientAddrCount > 1) throw new Error('burst: wrong frames');
  return { delivered: sock.gotClient, dropped: engine.counters.get(HT.tx_dropped_full) };
}

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

/**
 * Memory of one round in a fresh process (`direct`: the engine's own), so
 * that the RSS growth is this round's and not what earlier rounds left.
 */
function memoryInChild(distinct: boolean): Promise<Round> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), 'child', distinct ? 'many' : 'one'], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.once('error', reject);
    p.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('ROUND '));
      if (code !== 0 || line === undefined) reject(new Error(`hash-clients child exited ${code}: ${out}`));
      else resolve(JSON.parse(line.slice(6)) as Round);
    });
  });
}

export const hashClients: BenchCase = {
  id: 'hash-clients',
  title: 'hash tier with 100 k distinct client addresses vs the same frames from one address (in process: MemoryNetwork, and the engine alone)',
  async run(progress) {
    progress(`building ${CLIENTS} client frames and their egress frames, twice`);
    const frames = { one: buildFrames(false), many: buildFrames(true) };
    const out: BenchResult[] = [];
    for (const transport of ['memory', 'direct'] as const) {
      const ms: Record<'one' | 'many', number[]> = { one: [], many: [] };
      const last: Partial<Record<'one' | 'many', Round>> = {};
      for (const key of ['one', 'many'] as const) round(transport, key === 'many', frames[key]); // warm-up (JIT)
      for (let r = 0; r < ROUNDS; r++) {
        for (const key of ['one', 'many'] as const) {
          const x = round(transport, key === 'many', frames[key]);
          progress(`round ${r + 1} ${describe(transport, key === 'many', x)}`);
          ms[key].push(x.ms);
          last[key] = x;
        }
      }
      const o = last.one!;
      const m = last.many!;
      const where = transport === 'memory' ? 'MemoryNetwork' : 'engine alone';
      const nsOne = perFrameNs(spreadOf(ms.one).median);
      const nsMany = perFrameNs(spreadOf(ms.many).median);
      out.push(
        rateResult(
          `hash tier frames/s (${where}), ${CLIENTS / 1000} k client addresses`,
          ratesFromMs(spreadOf(ms.many), FRAMES),
          'frames/s',
          ratesFromMs(spreadOf(ms.one), FRAMES),
          'same frames, 1 client address',
          `median ${nsMany.toFixed(0)} vs ${nsOne.toFixed(0)} ns/frame (in + out); ${m.lanes} vs ${o.lanes} TX lanes, ${m.txDatagrams} vs ${o.txDatagrams} datagrams sent, tx_dropped_full ${m.txDroppedFull} / ${o.txDroppedFull}`,
        ),
      );
    }
    const bm = burst(true, frames.many.egress);
    const bo = burst(false, frames.one.egress);
    progress(`one batch of 64 x 256 egress frames: ${bm.delivered} delivered, ${bm.dropped} tx_dropped_full to distinct addresses; ${bo.delivered} / ${bo.dropped} to one`);
    out.push(
      rateResult(`frames one batch delivers to 16 k distinct client addresses`, bm.delivered, 'frames', bo.delivered, 'the same frames to 1 client address',
        `${bm.dropped} tx_dropped_full: one batch reaches at most txPoolBuffers (512) destinations; deterministic, one run`),
    );
    progress('memory: one round of each in a fresh process (engine alone)');
    const mo = await memoryInChild(false);
    progress(`fresh process ${describe('direct', false, mo)}`);
    const mm = await memoryInChild(true);
    progress(`fresh process ${describe('direct', true, mm)}`);
    out.push(
      memResult(`heap retained by a round, ${CLIENTS / 1000} k client addresses`, mm.heapBytes, mo.heapBytes,
        `${(mm.heapBytes / CLIENTS).toFixed(0)} B per client address; link-tx entries ${mm.linkTxEntries} vs ${mo.linkTxEntries}; client addrs ${mm.clientAddrs} (evicted ${mm.addrEvictions}); fresh process, after a full GC`),
      memResult(`RSS growth of a round, ${CLIENTS / 1000} k client addresses`, mm.rssBytes, mo.rssBytes, 'fresh process, after a full GC'),
    );
    return out;
  },
};

/**
 * Memory as a BenchResult: MB, with the baseline; ratio = baseline / value
 * (the bench contract: > 1 is better), only when both are at least 1 MB
 * (below that, a ratio of GC noise means nothing).
 */
function memResult(name: string, bytes: number, baseBytes: number, note?: string): BenchResult {
  const r: BenchResult = { name, value: bytes / MB, unit: 'MB', baseline: baseBytes / MB, baselineName: 'same frames, 1 client address' };
  if (bytes >= MB && baseBytes >= MB) r.ratio = baseBytes / bytes;
  if (note !== undefined) r.note = note;
  return r;
}

export default hashClients;

// `node --expose-gc --import tsx bench/cases/hash-clients.ts child one|many`: one memory round (memoryInChild).
if (process.argv[2] === 'child' && process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const distinct = process.argv[3] === 'many';
  const r = round('direct', distinct, buildFrames(distinct));
  process.stdout.write(`ROUND ${JSON.stringify(r)}\n`);
}
