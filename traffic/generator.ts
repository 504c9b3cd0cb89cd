/**
 * The traffic generator: plays many clients from one datagram socket.
 *
 * K slots each run one flow at a time (TCP-like: SYN, wait for SYN-ACK with
 * retransmission, data, FIN, wait for FIN-ACK; UDP: data only); a finished
 * flow's slot starts the next flow until the flow / packet / duration bound.
 * Slots are served round robin, one frame per slot per round, so flows
 * interleave. Frames are packed into pooled send buffers (several per
 * datagram) and a buffer returns to the pool when the socket's send
 * callback runs; an empty pool pauses sending (backpressure).
 *
 * Pacing, both driven only by the injected Scheduler (never setTimeout/Date):
 *   rate mode   (ratePps > 0): a token bucket refilled every tick; every
 *               frame costs one token (retransmissions are never held back).
 *   window mode (ratePps = 0): at most `window` data packets in flight
 *               (sent, not echoed); also pumped right after each received
 *               datagram. Lost packets would hold window room forever, so if
 *               no echo arrives for echoTimeoutMs the window is presumed
 *               drained and reopened; echoes of packets sent before that
 *               moment (their payload carries the send time) then no longer
 *               count against it.
 *
 * When nothing is left to send, the run drains: it ends as soon as every
 * data packet was echoed and every flow closed, or after drainMs.
 *
 * Several targets (several hash tiers): client i (its virtual IP) always
 * sends to targets[i mod n], as a real client's packets keep to one path;
 * each target has its own datagram being filled. Replies are accepted from
 * anywhere (they may leave through any tier).
 *
 * Per-packet work (send and receive) allocates nothing but the subarray view
 * handed to send() once per datagram.
 */
import type { Address } from '../shared/io/address.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import { decodeEncap, writeEncapHeader, EncapMeta, ENCAP_HEADER_LEN, Tier } from '../shared/encap/geneve.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { PacketMeta, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { Verifier, Echo, FlowKind, FlowStatus, Malformed } from './verifier.js';
import { resolveTrafficOptions, type ResolvedTrafficOptions, type TrafficOptions } from './options.js';
import type { TrafficReport, TrafficIoStats } from './report.js';
import { LinkRx } from '../shared/dataplane/link-counters.js';
import {
  hasPayloadHeader,
  paddingIntact,
  payloadOffset,
  latencyUs,
  readU32BE,
  writeClientPacket,
  writeDataPayload,
  IPV4_HEADER_LEN,
  TCP_HEADER_LEN,
  UDP_HEADER_LEN,
} from './wire.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

export interface TrafficIo {
  socket: DatagramSocket;
  scheduler: Scheduler;
  /** The hash tier's data address (or any node that answers for the VIP). */
  target: Address;
  /** Several hash tiers' data addresses: the clients are spread over them (client i -> targets[i mod n]); `target` is then ignored. */
  targets?: Address[];
}

/** One target's side of the loss books: frames built for it, accepted by the kernel, failed. */
export interface TargetLinks {
  target: Address;
  framesSent: number;
  accepted: number;
  sendErrorFrames: number;
}

export interface Progress {
  elapsedMs: number;
  phase: 'send' | 'drain';
  flowsStarted: number;
  activeFlows: number;
  sent: number;
  received: number;
  outstanding: number;
  /** Data packets sent / echoes received per second since the previous progress report. */
  sendPps: number;
  recvPps: number;
}

const State = { IDLE: 0, SYN_WAIT: 1, DATA: 2, FIN_WAIT: 3 } as const;
const Phase = { NEW: 0, SEND: 1, DRAIN: 2, DONE: 3 } as const;
const Step = { NOTHING: 0, CHANGED: 1, SENT: 2, BLOCKED: 3 } as const;
const CONTROL_FRAME_LEN = ENCAP_HEADER_LEN + IPV4_HEADER_LEN + TCP_HEADER_LEN;

export class TrafficGenerator {
  readonly opts: ResolvedTrafficOptions;
  readonly verifier: Verifier;
  /** Set once the run ended; `result` holds the report. */
  finished = false;
  result: TrafficReport | null = null;

  private readonly socket: DatagramSocket;
  private readonly sched: Scheduler;
  /** Where the clients send (one entry per hash tier). */
  readonly targets: readonly Address[];
  private readonly nTargets: number;
  private readonly onProgress: ((p: Progress) => void) | undefined;
  private readonly enc = new EncapMeta();
  private readonly rxEnc = new EncapMeta();
  private readonly pm = new PacketMeta();

  // Slots (K): the flow each runs and its TCP-like state.
  private readonly K: number;
  private readonly sFlow: Int32Array;
  private readonly sState: Uint8Array;
  private readonly sKind: Uint8Array;
  private readonly sNext: Uint32Array; // next data seq
  private readonly sQuota: Uint32Array; // data packets this flow may send (reserved when it started)
  private readonly sTries: Uint8Array; // retransmissions of the current SYN/FIN
  private readonly sDeadline: Float64Array;
  private readonly sTcpSeq: Uint32Array; // client's next TCP sequence number
  private readonly sTcpAck: Uint32Array; // server's next sequence number (our ack)
  private nWaiting = 0; // slots in SYN_WAIT or FIN_WAIT
  private nSynOrData = 0; // slots in SYN_WAIT or DATA
  private nActive = 0;
  private nextDeadline = Infinity;
  private cursor = 0;
  // Flow -> slot (-1 when the flow is over); grows with the flows.
  private fSlot = new Int32Array(64).fill(-1);
  private flowsStarted = 0;
  private committed = 0; // data packets reserved by the flows started so far (totalPackets bound)

  // Send buffers: a pool; `cur` is the one being filled.
  private readonly bufs: Uint8Array[] = [];
  private readonly sentCbs: ((err: Error | null) => void)[] = [];
  private readonly free: Int32Array;
  private freeTop = 0;
  /** The buffer of the frame being written (set by beginFrame). */
  private cur = -1;
  /** Per target: the buffer being filled (-1 none), its bytes and frames. */
  private readonly tCur: Int32Array;
  private readonly tLen: Int32Array;
  private readonly tFrames: Int32Array;
  /** Frames in each send buffer handed to the socket, and its target (for the send callback). */
  private bufFrames = new Uint32Array(0);
  private bufTarget = new Uint16Array(0);
  /**
   * The generator's side of the loss books (traffic/loss-books.ts), live:
   * frames the kernel accepted toward the target and frames whose send
   * failed; frames received by sender id, also after the run ended (`late`:
   * echoes the verifier no longer waits for, still counted, until the
   * caller closes the socket).
   */
  readonly links = { framesSent: 0, accepted: 0, sendErrorFrames: 0, rx: new LinkRx(), late: 0, perTarget: [] as TargetLinks[] };
  private ipId = 0;

  // Pacing.
  private tokens = 0;
  /** Rate mode: tokens lost to the burst cap after a stall, repaid at up to catchUp × rate. */
  private debt = 0;
  private lastRefill = 0;
  private inflight = 0; // window mode
  private lastEchoAt = 0;
  private windowResetAt = -Infinity;

  private phase: number = Phase.NEW;
  private stopped = false; // no more flows / data (duration over or stop())
  private aborted = false;
  private startMs = 0;
  private drainStart = 0;
  private timer: Timer | null = null;
  private pumpScheduled = false;
  private lastProgressAt = 0;
  private lastProgressSent = 0;
  private lastProgressRecv = 0;
  private resolve: ((r: TrafficReport) => void) | null = null;
  private readonly io: TrafficIoStats = {
    framesSent: 0,
    datagramsSent: 0,
    framesReceived: 0,
    datagramsReceived: 0,
    sendErrors: 0,
    lateControl: 0,
    ignored: 0,
    windowResets: 0,
    sendBlocked: 0,
  };

  constructor(options: TrafficOptions, io: TrafficIo, onProgress?: (p: Progress) => void) {
    // Unbounded churn by default when the run is bounded by time or packets.
    const o = { ...options };
    if (o.totalFlows === undefined && (o.durationMs !== undefined || o.totalPackets !== undefined) && o.packetsPerFlow !== 0) {
      const clients = o.clients ?? 200;
      o.totalFlows = clients * (65536 - (o.clientPortBase ?? 10000));
    }
    this.opts = resolveTrafficOptions(o);
    const op = this.opts;
    this.socket = io.socket;
    this.sched = io.scheduler;
    const targets = io.targets && io.targets.length > 0 ? io.targets : [io.target];
    if (targets.length > 65535) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'TrafficGenerator: at most 65535 targets');
    this.targets = targets.map((t) => ({ host: t.host, port: t.port }));
    this.nTargets = this.targets.length;
    this.tCur = new Int32Array(this.nTargets).fill(-1);
    this.tLen = new Int32Array(this.nTargets);
    this.tFrames = new Int32Array(this.nTargets);
    this.links.perTarget = this.targets.map((t) => ({ target: t, framesSent: 0, accepted: 0, sendErrorFrames: 0 }));
    this.onProgress = onProgress;
    this.verifier = new Verifier({ packetsPerFlow: op.packetsPerFlow, initialFlows: Math.min(op.totalFlows, 256) });
    const K = (this.K = op.concurrency);
    this.sFlow = new Int32Array(K).fill(-1);
    this.sState = new Uint8Array(K);
    this.sKind = new Uint8Array(K);
    this.sNext = new Uint32Array(K);
    this.sQuota = new Uint32Array(K);
    this.sTries = new Uint8Array(K);
    this.sDeadline = new Float64Array(K);
    this.sTcpSeq = new Uint32Array(K);
    this.sTcpAck = new Uint32Array(K);
    this.free = new Int32Array(op.sendBuffers);
    this.bufFrames = new Uint32Array(op.sendBuffers);
    this.bufTarget = new Uint16Array(op.sendBuffers);
    for (let i = 0; i < op.sendBuffers; i++) {
      this.bufs.push(new Uint8Array(op.maxDatagramBytes));
      this.sentCbs.push(this.makeSentCb(i));
      this.free[this.freeTop++] = i;
    }
    const e = this.enc;
    e.tier = Tier.CLIENT;
    e.senderId = 0;
    e.vni = op.vni;
    e.flags = 0;
    e.hopCount = 0;
    e.ownerHint = 0xffff;
    e.scopeVersion = 0;
  }

  /** Starts sending; resolves with the report when the run (including the drain) is over. */
  run(): Promise<TrafficReport> {
    if (this.phase !== Phase.NEW) return Promise.reject(new BatonError(ErrorCode.INVALID_TRANSITION, 'TrafficGenerator.run() called twice'));
    return new Promise((resolve) => {
      this.resolve = resolve;
      const now = this.sched.clock.now();
      this.phase = Phase.SEND;
      this.startMs = now;
      this.lastRefill = now;
      this.lastEchoAt = now;
      this.lastProgressAt = now;
      this.tokens = 0; // rate mode: the bucket starts empty, so no run sends faster than its rate
      this.socket.onMessage(this.onDatagram);
      this.timer = this.sched.every(this.opts.tickMs, this.tick);
      this.requestPump();
    });
  }

  /** Ends the run now (no drain); the pending run() resolves with an aborted report. */
  /**
   * Ends the send phase now, as if the duration had passed: flows in
   * progress are closed with FIN, then the run drains normally (unlike stop(),
   * nothing in flight is given up on).
   */
  endSending(): void {
    this.stopped = true;
  }

  stop(): void {
    if (this.phase === Phase.DONE || this.phase === Phase.NEW) return;
    this.aborted = true;
    this.finish(this.sched.clock.now());
  }

  // ---------------------------------------------------------------- time ----

  private burstCap(): number {
    // 20 ms worth of tokens, at least one datagram's worth: bounded catch-up after a stall.
    return Math.max(this.opts.maxFramesPerDatagram, this.opts.ratePps * 0.02);
  }

  private readonly tick = (): void => {
    if (this.phase === Phase.DONE) return;
    const op = this.opts;
    const now = this.sched.clock.now();
    if (!this.stopped && now - this.startMs >= op.durationMs) this.stopped = true;
    if (op.ratePps > 0) {
      const refill = (op.ratePps * (now - this.lastRefill)) / 1000;
      this.tokens += refill;
      const cap = this.burstCap();
      if (this.tokens > cap) {
        if (op.catchUp > 0) this.debt = Math.min(this.debt + this.tokens - cap, op.ratePps); // at most 1 s of traffic owed
        this.tokens = cap;
      } else if (this.debt > 0) {
        const repay = Math.min(this.debt, refill * op.catchUp, cap - this.tokens);
        this.tokens += repay;
        this.debt -= repay;
      }
      this.lastRefill = now;
    } else if (this.inflight > 0 && now - this.lastEchoAt >= op.echoTimeoutMs) {
      this.inflight = 0;
      this.windowResetAt = now;
      this.lastEchoAt = now;
      this.io.windowResets++;
    }
    if (now >= this.nextDeadline) this.retransmit(now);
    if (this.phase === Phase.SEND) {
      this.pump(now);
      if (this.sendingDone()) {
        this.phase = Phase.DRAIN;
        this.drainStart = now;
      }
    }
    if (this.phase === Phase.DRAIN) {
      if ((this.nActive === 0 && this.verifier.outstanding === 0) || now - this.drainStart >= op.drainMs) {
        this.finish(now);
        return;
      }
    }
    if (this.onProgress && now - this.lastProgressAt >= op.progressIntervalMs) this.progress(now);
  };

  private requestPump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    this.sched.defer(this.deferredPump);
  }

  private readonly deferredPump = (): void => {
    this.pumpScheduled = false;
    if (this.phase !== Phase.SEND) return;
    this.pump(this.sched.clock.now());
  };

  private sendingDone(): boolean {
    return !this.canStartFlow() && this.nSynOrData === 0;
  }

  private canStartFlow(): boolean {
    const op = this.opts;
    return !this.stopped && this.flowsStarted < op.totalFlows && (this.committed < op.totalPackets || op.packetsPerFlow === 0);
  }

  // ---------------------------------------------------------------- send ----

  private pump(now: number): void {
    const op = this.opts;
    let budget: number;
    if (op.ratePps > 0) budget = Math.floor(this.tokens);
    else budget = op.window - this.inflight;
    let spent = 0;
    const K = this.K;
    outer: while (spent < budget) {
      let any = false;
      for (let i = 0; i < K && spent < budget; i++) {
        const s = this.cursor;
        this.cursor = s + 1 === K ? 0 : s + 1;
        const r = this.stepSlot(s, now);
        if (r === Step.BLOCKED) {
          this.cursor = s; // retry this slot first
          this.io.sendBlocked++;
          break outer;
        }
        if (r === Step.SENT) {
          spent++;
          any = true;
        } else if (r === Step.CHANGED) {
          any = true;
        }
      }
      if (!any) break;
    }
    if (op.ratePps > 0) this.tokens -= spent;
    this.flushAll();
  }

  /** Advances one slot by at most one frame. */
  private stepSlot(s: number, now: number): number {
    let f = this.sFlow[s]!;
    if (f < 0) {
      if (!this.canStartFlow()) return Step.NOTHING;
      const isUdp = this.flowIsUdp(this.flowsStarted);
      if (!isUdp) {
        if (!this.hasRoom(this.targetOf(this.flowsStarted), CONTROL_FRAME_LEN)) return Step.BLOCKED;
        f = this.startFlow(s, FlowKind.TCP);
        this.emitControl(f, TCP_SYN, this.sTcpSeq[s]!, 0);
        this.sTcpSeq[s] = this.sTcpSeq[s]! + 1;
        this.enterWait(s, State.SYN_WAIT, now);
        return Step.SENT;
      }
      f = this.startFlow(s, FlowKind.UDP);
      this.setState(s, State.DATA);
    }
    const st = this.sState[s]!;
    if (st !== State.DATA) return Step.NOTHING;
    const isTcp = this.sKind[s] === FlowKind.TCP;
    if (this.sNext[s]! < this.sQuota[s]! && !this.stopped) {
      if (!this.hasRoom(this.targetOf(f), this.dataFrameLen(isTcp))) return Step.BLOCKED;
      this.emitData(s, f, isTcp, now);
      if (!isTcp && this.sNext[s] === this.sQuota[s]) {
        this.verifier.markFlow(f, FlowStatus.COMPLETED);
        this.endFlow(s);
      }
      return Step.SENT;
    }
    if (!isTcp) {
      // A UDP flow cut short by the bound ends normally, having sent what it could.
      this.verifier.markFlow(f, FlowStatus.COMPLETED);
      this.endFlow(s);
      return Step.CHANGED;
    }
    if (!this.hasRoom(this.targetOf(f), CONTROL_FRAME_LEN)) return Step.BLOCKED;
    this.emitControl(f, TCP_FIN | TCP_ACK, this.sTcpSeq[s]!, this.sTcpAck[s]!);
    this.enterWait(s, State.FIN_WAIT, now);
    return Step.SENT;
  }

  /** Exact interleaving: flow f is UDP iff floor((f+1)r) > floor(f r). */
  private flowIsUdp(f: number): boolean {
    const r = this.opts.udpRatio;
    return Math.floor((f + 1) * r) > Math.floor(f * r);
  }

  private startFlow(s: number, kind: FlowKind): number {
    const f = this.verifier.addFlow(kind);
    this.flowsStarted = f + 1;
    if (f >= this.fSlot.length) {
      const n = new Int32Array(this.fSlot.length * 2).fill(-1);
      n.set(this.fSlot);
      this.fSlot = n;
    }
    this.fSlot[f] = s;
    this.sFlow[s] = f;
    this.sKind[s] = kind;
    this.sNext[s] = 0;
    const op = this.opts;
    const q = Math.min(op.packetsPerFlow, op.totalPackets - this.committed);
    this.sQuota[s] = q;
    this.committed += q;
    this.sTries[s] = 0;
    this.sTcpSeq[s] = Math.imul(f + 1, 0x9e3779b1) >>> 0; // ISN
    this.sTcpAck[s] = 0;
    this.nActive++;
    return f;
  }

  private endFlow(s: number): void {
    const f = this.sFlow[s]!;
    this.fSlot[f] = -1;
    this.sFlow[s] = -1;
    this.setState(s, State.IDLE);
    this.nActive--;
  }

  private setState(s: number, st: number): void {
    const old = this.sState[s]!;
    if (old === State.SYN_WAIT || old === State.FIN_WAIT) this.nWaiting--;
    if (old === State.SYN_WAIT || old === State.DATA) this.nSynOrData--;
    if (st === State.SYN_WAIT || st === State.FIN_WAIT) this.nWaiting++;
    if (st === State.SYN_WAIT || st === State.DATA) this.nSynOrData++;
    this.sState[s] = st;
  }

  private enterWait(s: number, st: number, now: number): void {
    this.setState(s, st);
    this.sTries[s] = 0;
    const d = now + this.opts.controlTimeoutMs;
    this.sDeadline[s] = d;
    if (d < this.nextDeadline) this.nextDeadline = d;
  }

  /** Retransmits (or gives up on) every SYN/FIN whose deadline passed. */
  private retransmit(now: number): void {
    const op = this.opts;
    let next = Infinity;
    for (let s = 0; s < this.K && this.nWaiting > 0; s++) {
      const st = this.sState[s]!;
      if (st !== State.SYN_WAIT && st !== State.FIN_WAIT) continue;
      let d = this.sDeadline[s]!;
      if (now >= d) {
        const f = this.sFlow[s]!;
        const syn = st === State.SYN_WAIT;
        if (this.sTries[s]! < op.controlRetries) {
          if (!this.hasRoom(this.targetOf(f), CONTROL_FRAME_LEN)) {
            this.io.sendBlocked++;
            next = now; // try again next tick
            continue;
          }
          this.sTries[s] = this.sTries[s]! + 1;
          if (syn) {
            this.verifier.synRetry(f);
            this.emitControl(f, TCP_SYN, (this.sTcpSeq[s]! - 1) >>> 0, 0);
          } else {
            this.verifier.finRetry(f);
            this.emitControl(f, TCP_FIN | TCP_ACK, this.sTcpSeq[s]!, this.sTcpAck[s]!);
          }
          d = now + op.controlTimeoutMs;
          this.sDeadline[s] = d;
        } else {
          this.verifier.markFlow(f, syn ? FlowStatus.HANDSHAKE_FAILED : FlowStatus.FIN_UNANSWERED);
          this.endFlow(s);
          continue;
        }
      }
      if (d < next) next = d;
    }
    this.nextDeadline = next;
    this.flushAll();
  }

  private dataFrameLen(isTcp: boolean): number {
    return ENCAP_HEADER_LEN + IPV4_HEADER_LEN + (isTcp ? TCP_HEADER_LEN : UDP_HEADER_LEN) + this.opts.payloadSize;
  }

  /** Which target flow f's client sends to. */
  targetOf(f: number): number {
    return this.nTargets === 1 ? 0 : (f % this.opts.clients) % this.nTargets;
  }

  private hasRoom(t: number, frameLen: number): boolean {
    return (this.tCur[t]! >= 0 && this.tLen[t]! + frameLen <= this.opts.maxDatagramBytes) || this.freeTop > 0;
  }

  /** Offset in target t's current buffer for a frame of frameLen (this.cur is that buffer); the caller checked hasRoom. */
  private beginFrame(t: number, frameLen: number): number {
    if (this.tCur[t]! >= 0 && this.tLen[t]! + frameLen > this.opts.maxDatagramBytes) this.flush(t);
    if (this.tCur[t]! < 0) {
      this.tCur[t] = this.free[--this.freeTop]!;
      this.tLen[t] = 0;
      this.tFrames[t] = 0;
    }
    this.cur = this.tCur[t]!;
    return this.tLen[t]!;
  }

  private endFrame(t: number, frameLen: number): void {
    this.tLen[t] = this.tLen[t]! + frameLen;
    this.io.framesSent++;
    this.tFrames[t] = this.tFrames[t]! + 1;
    if (this.tFrames[t]! >= this.opts.maxFramesPerDatagram) this.flush(t);
  }

  private flushAll(): void {
    for (let t = 0; t < this.nTargets; t++) this.flush(t);
  }

  private flush(t: number): void {
    const c = this.tCur[t]!;
    if (c < 0) return;
    this.tCur[t] = -1;
    const len = this.tLen[t]!;
    if (len === 0) {
      this.free[this.freeTop++] = c;
      return;
    }
    const frames = this.tFrames[t]!;
    this.io.datagramsSent++;
    this.bufFrames[c] = frames;
    this.bufTarget[c] = t;
    this.links.framesSent += frames;
    this.links.perTarget[t]!.framesSent += frames;
    this.socket.send(this.bufs[c]!.subarray(0, len), this.targets[t]!, this.sentCbs[c]!);
  }

  private makeSentCb(i: number): (err: Error | null) => void {
    return (err) => {
      const pt = this.links.perTarget[this.bufTarget[i]!]!;
      if (err) {
        this.io.sendErrors++;
        this.links.sendErrorFrames += this.bufFrames[i]!;
        pt.sendErrorFrames += this.bufFrames[i]!;
      } else {
        this.links.accepted += this.bufFrames[i]!;
        pt.accepted += this.bufFrames[i]!;
      }
      this.free[this.freeTop++] = i;
      if (this.opts.ratePps === 0 && this.phase === Phase.SEND) this.requestPump();
    };
  }

  /** The forward 5-tuple of flow `f` (client → VIP), as its packets carry it. */
  flowTuple(f: number, kind: 'tcp' | 'udp'): { srcIp: number; dstIp: number; srcPort: number; dstPort: number; proto: number } {
    const tcp = kind === 'tcp';
    return { srcIp: this.clientIp(f), dstIp: this.opts.vipInt, srcPort: this.clientPort(f), dstPort: tcp ? this.opts.tcpPort : this.opts.udpPort, proto: tcp ? 6 : 17 };
  }

  private clientIp(f: number): number {
    return (this.opts.clientBaseInt + 1 + (f % this.opts.clients)) >>> 0;
  }

  private clientPort(f: number): number {
    return this.opts.clientPortBase + Math.floor(f / this.opts.clients);
  }

  private emitControl(f: number, flags: number, seq: number, ack: number): void {
    const op = this.opts;
    const t = this.targetOf(f);
    const off = this.beginFrame(t, CONTROL_FRAME_LEN);
    const buf = this.bufs[this.cur]!;
    this.ipId = (this.ipId + 1) & 0xffff;
    writeClientPacket(buf, off + ENCAP_HEADER_LEN, IPPROTO_TCP, this.clientIp(f), op.vipInt, this.clientPort(f), op.tcpPort, flags, seq, ack, 0, this.ipId);
    writeEncapHeader(buf, off, this.enc);
    this.endFrame(t, CONTROL_FRAME_LEN);
  }

  private emitData(s: number, f: number, isTcp: boolean, now: number): void {
    const op = this.opts;
    const len = this.dataFrameLen(isTcp);
    const t = this.targetOf(f);
    const off = this.beginFrame(t, len);
    const buf = this.bufs[this.cur]!;
    const ipOff = off + ENCAP_HEADER_LEN;
    const proto = isTcp ? IPPROTO_TCP : IPPROTO_UDP;
    const seq = this.sNext[s]!;
    writeDataPayload(buf, payloadOffset(ipOff, proto), op.payloadSize, f, seq, now);
    this.ipId = (this.ipId + 1) & 0xffff;
    if (isTcp) {
      writeClientPacket(buf, ipOff, proto, this.clientIp(f), op.vipInt, this.clientPort(f), op.tcpPort, TCP_ACK | TCP_PSH, this.sTcpSeq[s]!, this.sTcpAck[s]!, op.payloadSize, this.ipId);
      this.sTcpSeq[s] = (this.sTcpSeq[s]! + op.payloadSize) >>> 0;
    } else {
      writeClientPacket(buf, ipOff, proto, this.clientIp(f), op.vipInt, this.clientPort(f), op.udpPort, 0, 0, 0, op.payloadSize, this.ipId);
    }
    writeEncapHeader(buf, off, this.enc);
    this.endFrame(t, len);
    this.sNext[s] = seq + 1;
    this.verifier.recordSent(f, seq, now);
    this.inflight++;
  }

  // ------------------------------------------------------------- receive ----

  private readonly onDatagram = (data: Uint8Array): void => {
    if (this.phase !== Phase.SEND && this.phase !== Phase.DRAIN) return;
    const io = this.io;
    const v = this.verifier;
    const m = this.rxEnc;
    io.datagramsReceived++;
    const now = this.sched.clock.now();
    const len = data.length;
    let off = 0;
    while (off < len) {
      if (decodeEncap(data, off, len - off, m) !== Reject.OK) {
        v.recordMalformed(Malformed.BAD_ENCAP); // the rest cannot be delimited
        break;
      }
      io.framesReceived++;
      this.links.rx.add(m.senderId);
      off += m.frameLength;
      if (m.vni !== this.opts.vni) {
        v.recordMalformed(Malformed.BAD_ENCAP);
        continue;
      }
      const r = parseIPv4(data, m.innerOffset, m.innerLength, this.pm, true);
      if (r !== Reject.OK) {
        v.recordMalformed(r === Reject.BAD_IP_CHECKSUM || r === Reject.BAD_L4_CHECKSUM ? Malformed.BAD_CHECKSUM : Malformed.BAD_PACKET);
        continue;
      }
      this.reply(data, now);
    }
    if (this.opts.ratePps === 0 && this.phase === Phase.SEND) this.requestPump();
  };

  /** After the run: frames still arriving are counted (links.late, links.rx), not verified. */
  private readonly onLate = (data: Uint8Array): void => {
    const m = this.rxEnc;
    let off = 0;
    while (off < data.length && decodeEncap(data, off, data.length - off, m) === Reject.OK) {
      this.links.rx.add(m.senderId);
      this.links.late++;
      off += m.frameLength;
    }
  };

  /** The flow a reply is addressed to (by client ip:port), or -1. */
  private flowOf(ip: number, port: number): number {
    const op = this.opts;
    const ipIdx = ip - op.clientBaseInt - 1;
    const portIdx = port - op.clientPortBase;
    if (ipIdx < 0 || ipIdx >= op.clients || portIdx < 0) return -1;
    const f = portIdx * op.clients + ipIdx;
    return f < this.flowsStarted ? f : -1;
  }

  private reply(buf: Uint8Array, now: number): void {
    const pm = this.pm;
    const v = this.verifier;
    const op = this.opts;
    const f = this.flowOf(pm.dstIp, pm.dstPort);
    if (f < 0) {
      v.recordMalformed(Malformed.UNKNOWN_FLOW);
      return;
    }
    const isTcp = v.kindOf(f) === FlowKind.TCP;
    if (pm.proto !== (isTcp ? IPPROTO_TCP : IPPROTO_UDP) || pm.srcIp !== op.vipInt || pm.srcPort !== (isTcp ? op.tcpPort : op.udpPort)) {
      v.recordMalformed(Malformed.WRONG_ADDRESS);
      return;
    }
    const s = this.fSlot[f]!; // -1 when the flow is over
    const flags = pm.tcpFlags;
    if (isTcp) {
      if ((flags & TCP_RST) !== 0) {
        v.markFlow(f, FlowStatus.RESET);
        if (s >= 0) this.endFlow(s);
        return;
      }
      if ((flags & TCP_SYN) !== 0) {
        if (s >= 0 && this.sState[s] === State.SYN_WAIT) {
          const l4 = pm.l4Offset;
          this.sTcpAck[s] = (readU32BE(buf, l4 + 4) + 1) >>> 0;
          this.setState(s, State.DATA);
        } else {
          this.io.lateControl++;
        }
        return;
      }
    }
    if (pm.payloadLength > 0) this.echo(buf, f, now);
    else if (!isTcp) v.recordMalformed(Malformed.BAD_PAYLOAD);
    if (isTcp) {
      if ((flags & TCP_FIN) !== 0) {
        if (s >= 0 && this.sState[s] === State.FIN_WAIT) {
          v.markFlow(f, FlowStatus.COMPLETED);
          this.endFlow(s);
        } else {
          this.io.lateControl++;
        }
      } else if (pm.payloadLength === 0) {
        this.io.ignored++;
      }
    }
  }

  private echo(buf: Uint8Array, f: number, now: number): void {
    const v = this.verifier;
    const p = this.pm.payloadOffset;
    const plen = this.pm.payloadLength;
    if (!hasPayloadHeader(buf, p, plen)) {
      v.recordMalformed(Malformed.BAD_PAYLOAD);
      return;
    }
    if (readU32BE(buf, p + 4) !== f) {
      v.recordMalformed(Malformed.WRONG_ADDRESS); // another flow's payload on this flow's addresses
      return;
    }
    const seq = readU32BE(buf, p + 8);
    if (!paddingIntact(buf, p, plen, seq)) {
      v.recordMalformed(Malformed.BAD_PAYLOAD);
      return;
    }
    const us = latencyUs(buf, p + 12, now);
    if (v.recordEchoUs(f, seq, us, now) === Echo.FIRST) {
      this.lastEchoAt = now;
      // Sent after the last window reset (sent at now - latency)? Then it still holds window room.
      if (this.inflight > 0 && now - us / 1000 >= this.windowResetAt) this.inflight--;
    }
  }

  // -------------------------------------------------------------- finish ----

  private progress(now: number): void {
    const v = this.verifier;
    const dt = (now - this.lastProgressAt) / 1000;
    const p: Progress = {
      elapsedMs: now - this.startMs,
      phase: this.phase === Phase.DRAIN ? 'drain' : 'send',
      flowsStarted: this.flowsStarted,
      activeFlows: this.nActive,
      sent: v.sent,
      received: v.received,
      outstanding: v.outstanding,
      sendPps: dt > 0 ? (v.sent - this.lastProgressSent) / dt : 0,
      recvPps: dt > 0 ? (v.received - this.lastProgressRecv) / dt : 0,
    };
    this.lastProgressAt = now;
    this.lastProgressSent = v.sent;
    this.lastProgressRecv = v.received;
    this.onProgress!(p);
  }

  private finish(now: number): void {
    const wasDrain = this.phase === Phase.DRAIN;
    if (!wasDrain) this.drainStart = now;
    this.phase = Phase.DONE;
    this.finished = true;
    this.timer?.cancel();
    this.timer = null;
    this.flushAll();
    this.socket.onMessage(this.onLate);
    const v = this.verifier;
    for (let s = 0; s < this.K; s++) {
      const f = this.sFlow[s]!;
      if (f < 0) continue;
      const st = this.sState[s]!;
      if (st === State.SYN_WAIT) v.markFlow(f, FlowStatus.HANDSHAKE_FAILED);
      else if (st === State.FIN_WAIT) v.markFlow(f, FlowStatus.FIN_UNANSWERED);
    }
    const op = this.opts;
    const vr = v.report({ maxFlowRows: op.maxFlowRows });
    const drainMs = now - this.drainStart;
    const report: TrafficReport = {
      ...vr,
      ok: vr.ok && !this.aborted,
      mode: op.ratePps > 0 ? 'rate' : 'window',
      targetPps: op.ratePps > 0 ? op.ratePps : null,
      window: op.ratePps > 0 ? null : op.window,
      concurrency: op.concurrency,
      packetsPerFlow: op.packetsPerFlow,
      payloadSize: op.payloadSize,
      elapsedMs: now - this.startMs,
      sendPhaseMs: this.drainStart - this.startMs,
      drainMs,
      drainTimedOut: wasDrain && !(this.nActive === 0 && v.outstanding === 0),
      aborted: this.aborted,
      io: { ...this.io },
    };
    this.result = report;
    const r = this.resolve;
    this.resolve = null;
    r?.(report);
  }
}

/**
 * Runs the generator to completion (send, then drain) and returns the report.
 * Works on real time (RealScheduler + UdpNet) and virtual time
 * (VirtualScheduler + MemoryNetwork: the caller advances the scheduler).
 */
export function runTraffic(opts: TrafficOptions, io: TrafficIo, onProgress?: (p: Progress) => void): Promise<TrafficReport> {
  return new TrafficGenerator(opts, io, onProgress).run();
}
