/**
 * End to end: traffic generator <-> service node, with no cluster in between,
 * over MemoryNetwork on virtual time and over real UDP on 127.0.0.1.
 *
 * Two set-ups:
 *  - direct: the generator's target is the service node, which answers for
 *    the VIP (it only swaps the ends) and returns to the generator;
 *  - relay: a tiny FD-like relay rewrites VIP:port -> service 10.1.0.3:8080
 *    (and the reply's source back), re-encapsulating as an FD would (owner
 *    hint set, checked on the way back). The relay can also duplicate,
 *    reorder and corrupt what it delivers, and MemoryNetwork.dropFilter
 *    injects loss; every expectation is computed from what was actually
 *    dropped / delivered, so the verifier's numbers are checked exactly.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { VirtualScheduler, RealScheduler, type Scheduler } from '../shared/runtime/scheduler.js';
import { MemoryNetwork, UdpNet, type DatagramSocket } from '../shared/io/datagram.js';
import type { Address } from '../shared/io/address.js';
import { ServiceNode, SN } from '../service-node/service-node.js';
import { TrafficGenerator, runTraffic, type Progress } from '../traffic/generator.js';
import { formatReport, type TrafficReport } from '../traffic/report.js';
import { resolveTrafficOptions } from '../traffic/options.js';
import { PAYLOAD_MAGIC } from '../traffic/wire.js';
import { decodeEncap, encodeEncap, EncapMeta, ENCAP_HEADER_LEN, Tier } from '../shared/encap/geneve.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { rewriteDst, rewriteSrc } from '../shared/packet/rewrite.js';
import { PacketMeta, ipv4ToInt, IPPROTO_TCP, TCP_FIN, TCP_SYN } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { mulberry32 } from '../shared/random.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { flipped } from './helpers/bytes.js';

const VIP = ipv4ToInt('198.51.100.1');
const SERVICE_IP = ipv4ToInt('10.1.0.3');
const SERVICE_PORT = 8080;
const FD_ID = 3;

// ------------------------------------------------------------- helpers ----

interface FrameInfo {
  kind: 'syn' | 'synack' | 'fin' | 'finack' | 'data' | 'other';
  flow: number; // data only (from the payload)
  seq: number;
  meta: EncapMeta;
  pm: PacketMeta;
}

/** Decodes every frame of a datagram (test side, allocation is fine here). */
function inspect(d: Uint8Array): FrameInfo[] {
  const out: FrameInfo[] = [];
  let off = 0;
  while (off < d.length) {
    const meta = new EncapMeta();
    if (decodeEncap(d, off, d.length - off, meta) !== Reject.OK) break;
    const pm = new PacketMeta();
    off += meta.frameLength;
    if (parseIPv4(d, meta.innerOffset, meta.innerLength, pm, true) !== Reject.OK) continue;
    let kind: FrameInfo['kind'] = 'other';
    let flow = -1;
    let seq = -1;
    const p = pm.payloadOffset;
    const magic = pm.payloadLength >= 20 ? ((d[p]! << 24) | (d[p + 1]! << 16) | (d[p + 2]! << 8) | d[p + 3]!) >>> 0 : 0;
    if (magic === PAYLOAD_MAGIC) {
      kind = 'data';
      flow = ((d[p + 4]! << 24) | (d[p + 5]! << 16) | (d[p + 6]! << 8) | d[p + 7]!) >>> 0;
      seq = ((d[p + 8]! << 24) | (d[p + 9]! << 16) | (d[p + 10]! << 8) | d[p + 11]!) >>> 0;
    } else if (pm.proto === IPPROTO_TCP) {
      const ack = (pm.tcpFlags & 0x10) !== 0;
      if (pm.tcpFlags & TCP_SYN) kind = ack ? 'synack' : 'syn';
      else if (pm.tcpFlags & TCP_FIN) kind = 'finack'; // the client's FIN carries ACK too: disambiguated by direction
    }
    out.push({ kind, flow, seq, meta, pm });
  }
  return out;
}

/** An FD stand-in: client frames -> service node (VIP rewritten), replies -> client (source rewritten back). */
class Relay {
  readonly ownerHintMismatches: number[] = [];
  /** Datagrams delivered to the client, in order (copies), for the expectation model. */
  readonly toClient: Uint8Array[] = [];
  /** Replaces the datagrams sent to the client (dup, hold, corrupt); default: pass through. */
  mangle: ((d: Uint8Array, i: number) => Uint8Array[]) | null = null;
  private n = 0;
  private client: Address | null = null;
  constructor(
    readonly sock: DatagramSocket,
    private readonly service: Address,
  ) {
    sock.onMessage((d, from) => (from.port === service.port && from.host === service.host ? this.back(d) : this.forth(d, from)));
  }
  private reencap(d: Uint8Array, tier: number, fix: (buf: Uint8Array, pm: PacketMeta, m: EncapMeta) => void): Uint8Array {
    const out = new Uint8Array(d.length + 64 * ENCAP_HEADER_LEN);
    let w = 0;
    let off = 0;
    const m = new EncapMeta();
    const pm = new PacketMeta();
    while (off < d.length && decodeEncap(d, off, d.length - off, m) === Reject.OK) {
      off += m.frameLength;
      if (parseIPv4(d, m.innerOffset, m.innerLength, pm, true) !== Reject.OK) continue;
      fix(d, pm, m);
      const o = new EncapMeta();
      o.tier = tier;
      o.senderId = FD_ID;
      o.vni = m.vni;
      o.ownerHint = tier === Tier.FD ? FD_ID : 0xffff;
      w += encodeEncap(out, w, o, d, m.innerOffset, m.innerLength);
    }
    return out.slice(0, w);
  }
  private forth(d: Uint8Array, from: Address): void {
    this.client = from;
    const out = this.reencap(d, Tier.FD, (buf, pm) => rewriteDst(buf, pm, SERVICE_IP, SERVICE_PORT));
    this.sock.send(out, this.service);
  }
  private back(d: Uint8Array): void {
    const out = this.reencap(d, Tier.HASH, (buf, pm, m) => {
      if (m.ownerHint !== FD_ID) this.ownerHintMismatches.push(m.ownerHint);
      rewriteSrc(buf, pm, VIP, pm.proto === IPPROTO_TCP ? 80 : 53);
    });
    const list = this.mangle ? this.mangle(out, this.n++) : [out];
    for (const x of list) {
      this.toClient.push(Uint8Array.from(x));
      this.sock.send(x, this.client!);
    }
  }
}

interface VirtualRig {
  sched: VirtualScheduler;
  net: MemoryNetwork;
  gen: DatagramSocket;
  node: ServiceNode;
  relay: Relay | null;
  target: Address;
}

function virtualRig(opts: { relay: boolean; latencyMs?: number }): VirtualRig {
  const sched = new VirtualScheduler();
  const net = new MemoryNetwork(sched, opts.latencyMs ?? 0.05);
  const gen = net.bindSync({ host: '127.0.0.1', port: 0 });
  const sn = net.bindSync({ host: '127.0.0.3', port: 0 });
  if (!opts.relay) {
    const node = new ServiceNode({ id: 7, socket: sn, scheduler: sched, returnTo: gen.address, vni: 1 });
    return { sched, net, gen, node, relay: null, target: sn.address };
  }
  const rs = net.bindSync({ host: '127.0.0.2', port: 0 });
  const node = new ServiceNode({ id: 7, socket: sn, scheduler: sched, returnTo: rs.address, vni: 1 });
  const relay = new Relay(rs, sn.address);
  return { sched, net, gen, node, relay, target: rs.address };
}

/** Runs a generator to completion on virtual time. */
function runVirtual(r: VirtualRig, opts: Parameters<typeof runTraffic>[0], limitMs = 600_000, onProgress?: (p: Progress) => void): TrafficReport {
  const g = new TrafficGenerator(opts, { socket: r.gen, scheduler: r.sched, target: r.target }, onProgress);
  void g.run();
  expect(r.sched.runUntilTrue(() => g.finished, limitMs)).toBe(true);
  return g.result!;
}

// --------------------------------------------------------------- tests ----

describe('generator <-> service node over MemoryNetwork (virtual time)', () => {
  it('window mode, direct: every packet echoed, exact counts on both sides', () => {
    const r = virtualRig({ relay: false });
    const rep = runVirtual(r, { concurrency: 50, totalFlows: 200, packetsPerFlow: 20, udpRatio: 0.5, window: 128 });
    expect(rep.ok).toBe(true);
    expect(rep.mode).toBe('window');
    expect(rep.flows).toEqual({ total: 200, tcp: 100, udp: 100, completed: 200, handshakeFailed: 0, finUnanswered: 0, reset: 0 });
    expect([rep.sent, rep.received, rep.lost, rep.duplicated, rep.reordered]).toEqual([4000, 4000, 0, 0, 0]);
    expect(rep.malformed.total).toBe(0);
    expect(rep.drainTimedOut).toBe(false);
    // 100 TCP flows: SYN + 20 data + FIN each; 100 UDP flows: 20 datagrams each.
    expect(r.node.counters.snapshot()).toMatchObject({ replies_tcp: 2200, replies_udp: 2000, rx_bad_packet: 0, rx_bad_encap: 0 });
    expect(rep.io.framesSent).toBe(4200);
    expect(rep.io.framesReceived).toBe(4200);
    expect(rep.io.datagramsSent).toBeLessThan(rep.io.framesSent / 4); // batching happened
    // Fixed 0.05 ms one-way latency => every RTT is exactly 0.1 ms.
    expect(rep.latencyMs.p50).toBeCloseTo(0.1, 3);
    expect(rep.latencyMs.max).toBeCloseTo(0.1, 3);
    expect(JSON.parse(JSON.stringify(rep))).toEqual(rep);
  });

  it('window mode bounds the data packets in flight', () => {
    const r = virtualRig({ relay: false, latencyMs: 1 });
    let maxOutstanding = 0;
    const sendHook = r.gen.send.bind(r.gen);
    const g = new TrafficGenerator({ concurrency: 64, totalFlows: 64, packetsPerFlow: 50, udpRatio: 1, window: 40 }, { socket: r.gen, scheduler: r.sched, target: r.target });
    r.gen.send = (d, to, cb) => {
      sendHook(d, to, cb);
      maxOutstanding = Math.max(maxOutstanding, g.verifier.outstanding);
    };
    void g.run();
    expect(r.sched.runUntilTrue(() => g.finished, 60_000)).toBe(true);
    expect(g.result!.ok).toBe(true);
    expect(maxOutstanding).toBe(40);
  });

  it('rate mode paces by the scheduler: elapsed = frames / rate', () => {
    const r = virtualRig({ relay: false });
    const rep = runVirtual(r, { concurrency: 20, totalFlows: 100, packetsPerFlow: 40, udpRatio: 0.3, ratePps: 5000 });
    expect(rep.ok).toBe(true);
    expect(rep.mode).toBe('rate');
    const frames = rep.io.framesSent; // 4000 data + 2 x 70 TCP control
    expect(frames).toBe(4000 + 2 * 70);
    const expectedMs = (frames / 5000) * 1000;
    expect(rep.sendPhaseMs).toBeGreaterThan(expectedMs * 0.97);
    expect(rep.sendPhaseMs).toBeLessThan(expectedMs * 1.03);
    expect(rep.sendPps).toBeGreaterThan(5000 * 0.93); // data packets only, control frames use tokens too
    expect(rep.sendPps).toBeLessThan(5000 * 1.01);
  });

  it('rate mode after a stall: catchUp repays the missed packets (bounded), catchUp 0 gives them up', () => {
    const frames = 10_000 + 2 * 70;
    const elapsed: number[] = [];
    for (const catchUp of [0.5, 0]) {
      const r = virtualRig({ relay: false });
      // 300 ms in which the generator's process is not scheduled: the clock jumps inside an event.
      r.sched.after(200, () => r.sched.clock.set(r.sched.clock.now() + 300));
      let peak = 0;
      let last = 0;
      const rep = runVirtual(r, { concurrency: 20, totalFlows: 100, packetsPerFlow: 100, udpRatio: 0.3, ratePps: 5000, catchUp, progressIntervalMs: 100 }, 60_000, (p) => {
        peak = Math.max(peak, p.sent - last);
        last = p.sent;
      });
      expect(rep.ok).toBe(true);
      expect(rep.io.framesSent).toBe(frames);
      elapsed.push(rep.sendPhaseMs);
      // Never faster than (1 + catchUp) x rate over a progress period (+ one burst cap of 20 ms).
      expect(peak).toBeLessThanOrEqual(5000 * (1 + catchUp) * 0.1 + 100 + 5000 * 0.02);
    }
    const ideal = (frames / 5000) * 1000;
    expect(elapsed[0]!).toBeLessThan(ideal * 1.03); // the average rate held
    expect(elapsed[1]!).toBeGreaterThan(ideal + 300 * 0.9); // the stall's share given up
  });

  it('relay in between (VIP <-> service address rewrite, owner hint echoed)', () => {
    const r = virtualRig({ relay: true });
    const rep = runVirtual(r, { concurrency: 30, totalFlows: 90, packetsPerFlow: 15, udpRatio: 0.5 });
    expect(rep.ok).toBe(true);
    expect([rep.sent, rep.received]).toEqual([1350, 1350]);
    expect(r.relay!.ownerHintMismatches).toEqual([]);
    expect(r.node.counters.get(SN.tx_frames)).toBe(1350 + 2 * 45);
  });

  it('injected loss (dropFilter, both directions) is reported exactly, per flow, with SYN/FIN retries', () => {
    for (const mode of [{ ratePps: 20_000 }, { window: 64 }]) {
      const r = virtualRig({ relay: true });
      const rand = mulberry32(0x10555);
      const lostKeys = new Set<string>();
      let droppedSyn = 0;
      let droppedFin = 0;
      let droppedDatagrams = 0;
      r.net.dropFilter = (d, from, to) => {
        // Only between relay and service node, so everything dropped is Baton traffic we can classify.
        const toService = to.host === '127.0.0.3';
        const fromService = from.host === '127.0.0.3';
        if (!toService && !fromService) return false;
        if (rand() / 2 ** 32 >= 0.04) return false;
        droppedDatagrams++;
        for (const f of inspect(d)) {
          if (f.kind === 'data') lostKeys.add(`${f.flow}/${f.seq}`);
          else if (f.kind === 'syn' || f.kind === 'synack') droppedSyn++;
          else if (f.kind === 'finack') droppedFin++; // client FIN|ACK or server FIN|ACK
        }
        return true;
      };
      const rep = runVirtual(r, { concurrency: 40, totalFlows: 160, packetsPerFlow: 50, udpRatio: 0.5, controlTimeoutMs: 20, echoTimeoutMs: 20, drainMs: 100, ...mode });
      expect(droppedDatagrams).toBeGreaterThan(10);
      expect(lostKeys.size).toBeGreaterThan(0);
      expect(rep.lost).toBe(lostKeys.size);
      expect(rep.sent).toBe(160 * 50);
      expect(rep.received).toBe(160 * 50 - lostKeys.size);
      expect(rep.duplicated).toBe(0);
      expect(rep.malformed.total).toBe(0);
      expect(rep.ok).toBe(false);
      // Each dropped SYN or SYN-ACK costs exactly one retransmission (RTT << timeout, no late copies).
      expect(rep.flows.handshakeFailed).toBe(0);
      expect(rep.flows.finUnanswered).toBe(0);
      expect(rep.synRetries).toBe(droppedSyn);
      expect(rep.finRetries).toBe(droppedFin);
      // Per flow, too.
      const perFlow = new Map<number, number>();
      for (const k of lostKeys) {
        const f = Number(k.split('/')[0]);
        perFlow.set(f, (perFlow.get(f) ?? 0) + 1);
      }
      for (const row of rep.perFlow) expect(row.lost).toBe(perFlow.get(row.flow) ?? 0);
      expect(rep.drainTimedOut).toBe(true); // lost echoes never come: the drain runs out
      expect(formatReport(rep)).toContain('FAILED');
    }
  });

  it('duplicates and reordering injected by the relay match a naive model of what was delivered', () => {
    const r = virtualRig({ relay: true });
    const held: Uint8Array[] = [];
    r.relay!.mangle = (d, i) => {
      if (i % 11 === 3) return [d, d]; // duplicate
      if (i % 7 === 2) {
        held.push(d); // hold back: released after the next datagram
        r.sched.after(0.5, () => {
          // Deliver late if nothing else released it (e.g. the last datagram).
          const k = held.indexOf(d);
          if (k >= 0) {
            held.splice(k, 1);
            r.relay!.toClient.push(Uint8Array.from(d));
            r.relay!.sock.send(d, r.gen.address);
          }
        });
        return [];
      }
      const out = [d, ...held];
      held.length = 0;
      return out;
    };
    const rep = runVirtual(r, { concurrency: 16, totalFlows: 48, packetsPerFlow: 60, udpRatio: 0.5, maxFramesPerDatagram: 4 });
    // Model: replay the delivered datagrams in order.
    const seen = new Set<string>();
    const high = new Map<number, number>();
    let dup = 0;
    let reord = 0;
    for (const d of r.relay!.toClient) {
      for (const f of inspect(d)) {
        if (f.kind !== 'data') continue;
        const k = `${f.flow}/${f.seq}`;
        if (seen.has(k)) dup++;
        else {
          seen.add(k);
          if (f.seq < (high.get(f.flow) ?? -1)) reord++;
          else high.set(f.flow, f.seq);
        }
      }
    }
    expect(dup).toBeGreaterThan(0);
    expect(reord).toBeGreaterThan(0);
    expect(rep.duplicated).toBe(dup);
    expect(rep.reordered).toBe(reord);
    expect(rep.lost).toBe(0);
    expect(rep.ok).toBe(false); // duplicates fail a run
    expect(rep.io.lateControl).toBeGreaterThan(0); // duplicated SYN-ACKs / FIN-ACKs
  });

  it('malformed replies are counted by kind', () => {
    const r = virtualRig({ relay: true });
    let corrupted = 0;
    let foreign = 0;
    r.relay!.mangle = (d, i) => {
      if (i === 5) {
        const bad = flipped(d, -1, 0x5a); // last byte of the last frame: its checksum no longer matches
        corrupted = 1;
        // A second datagram: a valid reply (checksums patched), but to a client port no flow uses.
        const other = Uint8Array.from(d.subarray(0, inspect(d)[0]!.meta.frameLength));
        const f = inspect(other)[0]!;
        rewriteDst(other, f.pm, f.pm.dstIp, 65535);
        foreign = 1;
        return [bad, other, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9)];
      }
      return [d];
    };
    const rep = runVirtual(r, { concurrency: 8, totalFlows: 8, packetsPerFlow: 30, udpRatio: 0.5, drainMs: 50 });
    expect(corrupted + foreign).toBe(2);
    expect(rep.malformed).toEqual({ badEncap: 1, badPacket: 0, badChecksum: 1, unknownFlow: 1, wrongAddress: 0, badPayload: 0, total: 3 });
    expect(rep.ok).toBe(false);
  });

  it('a black-holed service: drain times out, unanswered SYNs/FINs reported as failed flows', () => {
    const r = virtualRig({ relay: false });
    let pass = 0;
    r.net.dropFilter = (_d, from) => from.host === '127.0.0.3' && ++pass > 3; // only the first 3 reply datagrams get through
    const rep = runVirtual(r, { concurrency: 4, totalFlows: 4, packetsPerFlow: 5, udpRatio: 0.5, controlTimeoutMs: 10, controlRetries: 2, drainMs: 50, maxFramesPerDatagram: 1 });
    expect(rep.ok).toBe(false);
    expect(rep.flows.handshakeFailed + rep.flows.finUnanswered).toBe(2); // both TCP flows
    expect(rep.synRetries + rep.finRetries).toBe(4); // 2 retries each, then given up
    expect(rep.lost).toBeGreaterThan(0);
    expect(rep.lost).toBe(rep.sent - rep.received);
  });

  it('duration bound: stops starting flows and sending data, closes open TCP flows with FIN', () => {
    const r = virtualRig({ relay: false });
    const progress: Progress[] = [];
    const rep = runVirtual(r, { concurrency: 10, durationMs: 200, packetsPerFlow: 1000, ratePps: 1000, udpRatio: 0.5, progressIntervalMs: 50 }, 600_000, (p) => progress.push(p));
    expect(rep.ok).toBe(true);
    expect(rep.sendPhaseMs).toBeGreaterThanOrEqual(200);
    expect(rep.sendPhaseMs).toBeLessThan(260);
    expect(rep.sent).toBeGreaterThan(150);
    expect(rep.sent).toBeLessThanOrEqual(210);
    expect(rep.flows.completed).toBe(rep.flows.total);
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress.at(-1)!.sent).toBeLessThanOrEqual(rep.sent);
  });

  it('totalPackets bound: exactly that many data packets, flows churn through the slots', () => {
    const r = virtualRig({ relay: false });
    const rep = runVirtual(r, { concurrency: 5, totalPackets: 777, packetsPerFlow: 10, udpRatio: 0.5 });
    expect(rep.ok).toBe(true);
    expect(rep.sent).toBe(777);
    expect(rep.flows.total).toBe(78); // 77 full flows + 1 cut short
  });

  it('stop() ends the run at once with an aborted (not ok) report', async () => {
    const r = virtualRig({ relay: false });
    const g = new TrafficGenerator({ concurrency: 4, totalFlows: 1000, packetsPerFlow: 100, ratePps: 1000 }, { socket: r.gen, scheduler: r.sched, target: r.target });
    const p = g.run();
    r.sched.runFor(100);
    g.stop();
    const rep = await p;
    expect(rep.aborted).toBe(true);
    expect(rep.ok).toBe(false);
    expect(rep.sent).toBeGreaterThan(50);
    expect(r.sched.pending).toBeLessThan(5); // its timer is gone
  });
});

describe('generator <-> service node over real UDP on 127.0.0.1', () => {
  const sockets: DatagramSocket[] = [];
  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((s) => s.close()));
  });
  async function realRig(): Promise<{ sched: Scheduler; gen: DatagramSocket; node: ServiceNode; target: Address }> {
    const sched = new RealScheduler();
    const net = new UdpNet();
    const gen = await net.bind({ host: '127.0.0.1', port: 0 });
    const sn = await net.bind({ host: '127.0.0.1', port: 0 });
    sockets.push(gen, sn);
    const node = new ServiceNode({ id: 1, socket: sn, scheduler: sched, returnTo: gen.address, vni: 1 });
    return { sched, gen, node, target: sn.address };
  }

  it('window mode: 200 flows x 50 packets, nothing lost', async () => {
    const r = await realRig();
    const rep = await runTraffic({ concurrency: 40, totalFlows: 200, packetsPerFlow: 50, udpRatio: 0.5, window: 128, drainMs: 5000 }, { socket: r.gen, scheduler: r.sched, target: r.target });
    expect(formatReport(rep)).toContain('traffic OK');
    expect(rep.ok).toBe(true);
    expect([rep.sent, rep.received, rep.lost]).toEqual([10_000, 10_000, 0]);
    expect(rep.flows.completed).toBe(200);
    expect(r.node.counters.get(SN.tx_frames)).toBe(10_000 + 2 * 100);
    expect(rep.latencyMs.count).toBe(10_000);
    expect(rep.latencyMs.max).toBeGreaterThan(0);
  });

  it('rate mode never sends faster than the target', async () => {
    const r = await realRig();
    const rep = await runTraffic({ concurrency: 10, totalFlows: 20, packetsPerFlow: 100, udpRatio: 0.5, ratePps: 8000, drainMs: 5000 }, { socket: r.gen, scheduler: r.sched, target: r.target });
    expect(rep.ok).toBe(true);
    expect(rep.sent).toBe(2000);
    // An upper bound only: a noisy machine may be slower, never faster (burst cap 20 ms of tokens).
    expect(rep.sendPps).toBeLessThan(8000 * 1.15);
  });
});

describe('options', () => {
  it('bad options are rejected with BAD_ARGUMENT naming the field', () => {
    const bad: [string, object][] = [
      ['concurrency', { concurrency: 0 }],
      ['udpRatio', { udpRatio: 1.5 }],
      ['payloadSize', { payloadSize: 19 }],
      ['payloadSize', { payloadSize: 20_000 }],
      ['vip', { vip: '300.1.1.1' }],
      ['ratePps', { ratePps: -1 }],
      ['vni', { vni: 1 << 24 }],
      ['totalFlows', { clients: 1, clientPortBase: 65535, totalFlows: 2 }],
    ];
    for (const [field, o] of bad) {
      try {
        resolveTrafficOptions(o);
        expect.unreachable(field);
      } catch (e) {
        expect(isBatonError(e, ErrorCode.BAD_ARGUMENT)).toBe(true);
        expect((e as Error).message).toContain(field);
      }
    }
    expect(resolveTrafficOptions({}).totalFlows).toBe(16);
  });
});
