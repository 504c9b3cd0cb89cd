/**
 * A flood of new clients: one-packet UDP flows, each from a 5-tuple not used
 * before in the run, sent at a fixed rate and not verified packet by packet —
 * only counted, so that it costs the sending core little and one process can
 * offer a cluster more than the verifying generator alone could
 * (traffic/generator.ts does a client's whole state machine per packet).
 *
 * It is the load an overload test adds on top of verified traffic: a flash
 * crowd of DNS-like queries. Every frame is a complete client packet (IPv4
 * and UDP checksums valid) in Baton's encapsulation, like the generator's;
 * a service node echoes it if admission control lets its flow in.
 *
 * For the loss books (traffic/loss-books.ts) it keeps the same link counts
 * as the generator: frames handed to the socket, accepted by the kernel or
 * failed, and frames received by sender id — also after the run, until the
 * socket closes (late echoes still count).
 *
 * Tuples: `ips` source addresses from `srcBase` + 1, every source port
 * 1024..65535 of each, in order; the run refuses a rate × duration that would
 * reuse one. Frames are written into pooled buffers; an empty pool is
 * backpressure (frames not sent for want of a buffer are reported, never
 * built, so not in the books).
 */
import type { Address } from '../shared/io/address.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import { decodeEncap, writeEncapHeader, EncapMeta, ENCAP_HEADER_LEN, Tier } from '../shared/encap/geneve.js';
import { IPPROTO_UDP, IPPROTO_TCP, TCP_SYN } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { LinkRx } from '../shared/dataplane/link-counters.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { writeClientPacket, payloadOffset, writeU32BE, IPV4_HEADER_LEN, UDP_HEADER_LEN, TCP_HEADER_LEN } from './wire.js';

export interface FloodOptions {
  /** Frames per second. */
  ratePps: number;
  durationMs: number;
  vni: number;
  /** The service's virtual IP (uint32) and UDP port. */
  vipInt: number;
  udpPort: number;
  /** Source addresses are srcBase + 1 .. srcBase + ips (uint32; default 198.18.0.0, RFC 2544's benchmark range). */
  srcBase?: number;
  ips?: number;
  /** UDP payload bytes (default 16). */
  payloadSize?: number;
  /**
   * 'udp' (default): one-packet UDP flows to `udpPort`. 'tcp-syn': a SYN
   * flood — one TCP SYN (no payload) per new 5-tuple to `udpPort` (the TCP
   * service's port), from sources that never answer the SYN-ACK: each leaves
   * an embryonic connection at an FD.
   */
  kind?: 'udp' | 'tcp-syn';
  /** Frames per datagram (default 32, as the generator). */
  framesPerDatagram?: number;
  /** Token refill period (default 1 ms). */
  tickMs?: number;
  /** Send buffers (default 512). */
  buffers?: number;
}

export interface FloodReport {
  framesSent: number;
  framesReceived: number;
  /** Frames the flood wanted to send but had no free buffer for (backpressure; never built, so not in the books). */
  notSent: number;
  sendPhaseMs: number;
  sendPps: number;
}

const PORT_LO = 1024;
const MAX_CATCH_UP_MS = 50;
const PORTS = 65536 - PORT_LO;

export class FloodClient {
  /** The loss books' view (as TrafficGenerator.links). */
  readonly links = { framesSent: 0, accepted: 0, sendErrorFrames: 0, rx: new LinkRx() };
  framesReceived = 0;
  private notSent = 0;
  private readonly rate: number;
  private readonly duration: number;
  private readonly srcBase: number;
  private readonly ips: number;
  private readonly payload: number;
  private readonly perDgram: number;
  private readonly tickMs: number;
  private readonly frameLen: number;
  private readonly syn: boolean;
  private readonly bufs: Uint8Array[] = [];
  private readonly bufFrames: Int32Array;
  private readonly sentCbs: ((err: Error | null) => void)[] = [];
  private readonly free: Int32Array;
  private freeTop = 0;
  private readonly enc = new EncapMeta();
  private readonly rxEnc = new EncapMeta();
  private next = 0; // tuple index
  private ipId = 0;
  private tokens = 0;
  private timer: Timer | null = null;

  constructor(
    private readonly opts: FloodOptions,
    private readonly io: { socket: DatagramSocket; scheduler: Scheduler; target: Address },
  ) {
    const pos = (name: string, v: number | undefined, d: number, max: number) => {
      const x = v ?? d;
      if (!Number.isFinite(x) || x <= 0 || x > max) throw new BatonError(ErrorCode.CONFIG_INVALID, `flood option ${name}: ${x} is not in (0, ${max}]`);
      return x;
    };
    this.rate = pos('ratePps', opts.ratePps, 0, 10_000_000);
    this.duration = pos('durationMs', opts.durationMs, 0, 3_600_000);
    this.srcBase = (opts.srcBase ?? 0xc6120000) >>> 0;
    this.ips = Math.floor(pos('ips', opts.ips, 256, 65536));
    this.payload = Math.floor(pos('payloadSize', opts.payloadSize, 16, 1400));
    this.perDgram = Math.floor(pos('framesPerDatagram', opts.framesPerDatagram, 32, 256));
    this.tickMs = pos('tickMs', opts.tickMs, 1, 1000);
    const n = Math.floor(pos('buffers', opts.buffers, 512, 65536));
    const frames = Math.ceil((this.rate * this.duration) / 1000);
    if (frames > this.ips * PORTS) throw new BatonError(ErrorCode.CONFIG_INVALID, `flood option ips: ${this.ips} addresses hold ${this.ips * PORTS} distinct flows, the run sends ${frames}`);
    this.syn = opts.kind === 'tcp-syn';
    this.frameLen = ENCAP_HEADER_LEN + IPV4_HEADER_LEN + (this.syn ? TCP_HEADER_LEN : UDP_HEADER_LEN + this.payload);
    this.bufFrames = new Int32Array(n);
    this.free = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      this.bufs.push(new Uint8Array(this.frameLen * this.perDgram));
      this.sentCbs.push(this.makeSentCb(i));
      this.free[this.freeTop++] = i;
    }
    const e = this.enc;
    e.tier = Tier.CLIENT;
    e.senderId = 0;
    e.vni = opts.vni;
    e.ownerHint = 0xffff;
    io.socket.onMessage(this.onDatagram);
  }

  /** Sends for durationMs; resolves when the send phase is over (echoes keep being counted until the socket closes). */
  run(): Promise<FloodReport> {
    const clock = this.io.scheduler.clock;
    const t0 = clock.now();
    let last = t0;
    return new Promise((resolve) => {
      this.timer = this.io.scheduler.every(this.tickMs, () => {
        const now = clock.now();
        const elapsed = now - t0;
        const until = Math.min(now, t0 + this.duration);
        // A late tick (a busy event loop) sends what it missed, up to MAX_CATCH_UP_MS of it: the rate is kept, bursts stay bounded.
        this.tokens = Math.min(this.tokens + ((until - last) * this.rate) / 1000, (MAX_CATCH_UP_MS * this.rate) / 1000 + this.perDgram);
        last = until;
        this.pump();
        if (elapsed >= this.duration) {
          this.timer!.cancel();
          this.timer = null;
          const ms = elapsed;
          resolve({ framesSent: this.links.framesSent, framesReceived: this.framesReceived, notSent: this.notSent, sendPhaseMs: ms, sendPps: (this.links.framesSent * 1000) / ms });
        }
      });
    });
  }

  private pump(): void {
    while (this.tokens >= 1) {
      if (this.freeTop === 0) {
        this.notSent += Math.floor(this.tokens);
        this.tokens = 0;
        return;
      }
      const frames = Math.min(this.perDgram, Math.floor(this.tokens));
      this.tokens -= frames;
      this.sendDatagram(frames);
    }
  }

  private sendDatagram(frames: number): void {
    const i = this.free[--this.freeTop]!;
    const buf = this.bufs[i]!;
    const o = this.opts;
    let off = 0;
    for (let k = 0; k < frames; k++) {
      const t = this.next++;
      const ip = (this.srcBase + 1 + (t % this.ips)) >>> 0;
      const port = PORT_LO + Math.floor(t / this.ips);
      const ipOff = off + ENCAP_HEADER_LEN;
      this.ipId = (this.ipId + 1) & 0xffff;
      if (this.syn) writeClientPacket(buf, ipOff, IPPROTO_TCP, ip, o.vipInt, port, o.udpPort, TCP_SYN, t, 0, 0, this.ipId);
      else {
        const p = payloadOffset(ipOff, IPPROTO_UDP);
        writeU32BE(buf, p, t);
        for (let b = 4; b < this.payload; b++) buf[p + b] = b;
        writeClientPacket(buf, ipOff, IPPROTO_UDP, ip, o.vipInt, port, o.udpPort, 0, 0, 0, this.payload, this.ipId);
      }
      writeEncapHeader(buf, off, this.enc);
      off += this.frameLen;
    }
    this.bufFrames[i] = frames;
    this.links.framesSent += frames;
    this.io.socket.send(buf.subarray(0, off), this.io.target, this.sentCbs[i]!);
  }

  private makeSentCb(i: number): (err: Error | null) => void {
    return (err) => {
      if (err) this.links.sendErrorFrames += this.bufFrames[i]!;
      else this.links.accepted += this.bufFrames[i]!;
      this.free[this.freeTop++] = i;
    };
  }

  private readonly onDatagram = (data: Uint8Array): void => {
    const m = this.rxEnc;
    let off = 0;
    while (off < data.length && decodeEncap(data, off, data.length - off, m) === Reject.OK) {
      this.links.rx.add(m.senderId);
      this.framesReceived++;
      off += m.frameLength;
    }
  };
}
