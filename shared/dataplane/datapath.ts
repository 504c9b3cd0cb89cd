/**
 * The receive → process → transmit loop shared by the hash tier and the FDs:
 * datagrams land in a bounded RX ring; a deferred batch drains up to
 * `batchDatagrams` of them, walking the frames in each (several Geneve frames
 * may share one datagram); at the end of the batch every TX lane is flushed,
 * so one system call carries many packets.
 */
import type { Scheduler } from '../runtime/scheduler.js';
import type { DatagramSocket } from '../io/datagram.js';
import type { Counters } from '../counters.js';
import type { Address } from '../io/address.js';
import { decodeEncap, writeEncapHeader, encapHeaderLen, EncapMeta } from '../encap/geneve.js';
import { copyBytes } from './copy.js';
import { Reject } from '../packet/reject.js';
import { RxRing } from './rx-ring.js';
import { TxLanes, type TxOptions } from './tx-lanes.js';
import { DP } from './counters.js';
import { LinkRx } from './link-counters.js';
import { QueueProbe, isQueueProbe, reflectQueueProbe, echoAnswerId } from './queue-probe.js';

export interface DatapathOptions {
  vni: number;
  rxCapacity?: number; // datagrams, default 4096
  batchDatagrams?: number; // per processing batch, default 64
  tx?: TxOptions;
  /** Measure the receive path's queueing delay with a self-probe every this many ms (0/absent = off). */
  queueProbeMs?: number;
}

/** What a node does with one decoded frame (the datagram and the frame's meta). */
export type FrameHandler = (buf: Uint8Array, meta: EncapMeta, from: Address | null) => void;

export class Datapath {
  readonly rx: RxRing;
  readonly tx: TxLanes;
  readonly meta = new EncapMeta();
  private readonly vni: number;
  private readonly batch: number;
  private scheduled = false;
  private onFrame: FrameHandler = () => {};
  private beforeBatch: () => void = () => {};
  private closed = false;
  /** Frames decoded, by sender id (the loss books' received side). */
  readonly links = new LinkRx();
  /** The receive path's queueing delay, when opts.queueProbeMs is set (admission control reads it). */
  readonly probe: QueueProbe | null;

  constructor(
    readonly socket: DatagramSocket,
    private readonly scheduler: Scheduler,
    readonly counters: Counters,
    opts: DatapathOptions,
  ) {
    this.vni = opts.vni;
    this.batch = opts.batchDatagrams ?? 64;
    this.rx = new RxRing(opts.rxCapacity ?? 4096, counters, DP);
    this.tx = new TxLanes(socket, counters, DP, opts.tx);
    this.probe = opts.queueProbeMs ? new QueueProbe(socket, scheduler, opts.queueProbeMs, opts.vni) : null;
    this.probe?.start();
    socket.onMessage((data, from) => {
      this.counters.inc(DP.rx_datagrams);
      if (this.closed) {
        this.countDropped(data, DP.drop_at_close);
        return;
      }
      if (!this.rx.push(data, from)) this.countDropped(data, DP.drop_rx_ring_full);
      else if (!this.scheduled) {
        this.scheduled = true;
        this.scheduler.defer(this.run);
      }
    });
  }

  /** `before` runs once per batch (e.g. the flow handler's tick); `frame` once per frame. */
  start(frame: FrameHandler, before?: () => void): void {
    this.onFrame = frame;
    if (before) this.beforeBatch = before;
  }

  get idle(): boolean {
    return this.rx.depth === 0 && this.tx.depth === 0 && this.socket.sendQueueCount() === 0;
  }

  private readonly run = (): void => {
    this.scheduled = false;
    if (this.closed) return;
    this.beforeBatch();
    const c = this.counters;
    const m = this.meta;
    for (let n = 0; n < this.batch; n++) {
      const d = this.rx.shift();
      if (d === null) break;
      if (isQueueProbe(d)) {
        this.onProbe(d);
        continue;
      }
      const from = this.rx.lastFrom;
      let off = 0;
      const len = d.length;
      while (off < len) {
        const r = decodeEncap(d, off, len - off, m);
        if (r !== Reject.OK) {
          // The rest of the datagram cannot be delimited either.
          c.inc(r === Reject.BAD_ENCAP_VERSION ? DP.drop_bad_encap_version : DP.drop_bad_encap);
          break;
        }
        c.inc(DP.rx_frames);
        this.links.add(m.senderId);
        if (m.vni !== this.vni) c.inc(DP.drop_wrong_vni);
        else this.onFrame(d, m, from);
        off += m.frameLength;
      }
    }
    this.tx.flushAll();
    if (this.rx.depth > 0 && !this.scheduled) {
      this.scheduled = true;
      this.scheduler.defer(this.run);
    }
  };

  /**
   * A queue probe at dequeue: this node's own, an answer to one of its echo
   * probes, or a peer's echo request — sent straight back to the peer, so the
   * peer measures how long this node's receive path held it.
   */
  private onProbe(d: Uint8Array): void {
    const c = this.counters;
    if (reflectQueueProbe(d)) {
      const from = this.rx.lastFrom;
      if (from === null) c.inc(DP.drop_bad_encap);
      else {
        this.socket.send(d, from);
        c.inc(DP.queue_probes_reflected);
      }
      return;
    }
    const id = echoAnswerId(d);
    if (id >= 0) {
      // An answer to a probe stopped since (its peer left the scope), or overtaken by a later one: not traffic, not a drop.
      const p = this.echoById.get(id);
      if (p === undefined || !p.onArrival(d)) c.inc(DP.queue_probes_late);
      return;
    }
    if (this.probe === null || !this.probe.onArrival(d)) c.inc(DP.drop_bad_encap);
  }

  /**
   * Echo probes of other nodes' receive paths, every `intervalMs`: one per
   * address in `to`, in that order; probes of addresses still listed are
   * kept (their history too), the others stopped. Off the hot path (scope
   * changes). Ids are never reused, so a late answer to a stopped probe is
   * refused, not taken for a new one's.
   */
  probeTo(to: readonly Address[], intervalMs: number): readonly QueueProbe[] {
    const keep = new Map<string, QueueProbe>();
    for (const p of this.echoProbes) keep.set(`${p.echo!.to.host}:${p.echo!.to.port}`, p);
    const next: QueueProbe[] = [];
    for (const a of to) {
      const k = `${a.host}:${a.port}`;
      let p = keep.get(k);
      if (p) keep.delete(k);
      else {
        p = new QueueProbe(this.socket, this.scheduler, intervalMs, this.vni, { to: a, id: this.nextEchoId++ });
        this.echoById.set(p.echo!.id, p);
        if (!this.closed) p.start();
      }
      next.push(p);
    }
    for (const p of keep.values()) {
      p.stop();
      this.echoById.delete(p.echo!.id);
    }
    this.echoProbes = next;
    return next;
  }
  private echoProbes: QueueProbe[] = [];
  private readonly echoById = new Map<number, QueueProbe>();
  private nextEchoId = 1;

  /** The TX lane to `a`, created on first use. Off the hot path (route snapshots). */
  laneTo(a: Address): number {
    const key = `${a.host}:${a.port}`;
    let lane = this.laneByAddr.get(key);
    if (lane === undefined) {
      lane = this.tx.addLane(a);
      this.laneByAddr.set(key, lane);
    }
    return lane;
  }
  private readonly laneByAddr = new Map<string, number>();

  /**
   * Queues one frame for `lane`: Baton's header from `out`, then the inner
   * packet copied from src[innerOff, innerOff + innerLen). Returns false when
   * the TX ring is full (counted by the lanes).
   */
  emit(lane: number, out: EncapMeta, src: Uint8Array, innerOff: number, innerLen: number): boolean {
    const hl = encapHeaderLen(out); // 24, or 36 with a client locator
    const buf = this.tx.reserve(lane, hl + innerLen);
    if (buf === null) return false;
    const o = this.tx.writeOffset;
    writeEncapHeader(buf, o, out);
    copyBytes(src, innerOff, buf, o + hl, innerLen);
    return true;
  }

  /**
   * A datagram that will not be processed (RX ring full, node closing): its
   * frames are received as far as the links are concerned and dropped under
   * `counter`, one per frame. Not the steady-state path; allocates nothing.
   */
  private countDropped(d: Uint8Array, counter: number): void {
    const c = this.counters;
    const m = this.dropMeta;
    if (isQueueProbe(d)) return; // not a frame: nothing was lost
    let off = 0;
    while (off < d.length) {
      const r = decodeEncap(d, off, d.length - off, m);
      if (r !== Reject.OK) {
        c.inc(r === Reject.BAD_ENCAP_VERSION ? DP.drop_bad_encap_version : DP.drop_bad_encap);
        break;
      }
      c.inc(DP.rx_frames);
      this.links.add(m.senderId);
      c.inc(counter);
      off += m.frameLength;
    }
  }
  private readonly dropMeta = new EncapMeta();

  /**
   * Closes the socket once what was handed to it is sent (bounded by
   * `flushMs` on the injected clock): frames left in the RX ring or a TX
   * lane are counted as drop_at_close, so a node that stops says what it
   * did not deliver. Datagrams that arrive while closing are counted too.
   */
  async close(flushMs = 1000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.probe?.stop();
    for (const p of this.echoProbes) p.stop();
    for (let d = this.rx.shift(); d !== null; d = this.rx.shift()) this.countDropped(d, DP.drop_at_close);
    this.tx.discardQueued();
    const end = this.scheduler.clock.now() + flushMs;
    while (this.tx.datagramsInFlight > 0 && this.scheduler.clock.now() < end) {
      await new Promise<void>((r) => this.scheduler.after(5, r));
    }
    return this.socket.close();
  }
}
