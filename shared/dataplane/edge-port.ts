/**
 * A node's edge port: the socket real (unmodified) hosts' kernels talk to,
 * in an edge encapsulation (shared/encap/edge.ts: VXLAN-GPE or optionless
 * Geneve, one inner IPv4 packet per datagram).
 *
 * Receive: datagrams land in a bounded RX ring; a deferred batch checks each
 * one's edge header (refusals counted by reason) and hands the inner packet
 * to the node's handler with the sender's address. Transmit: `send` writes
 * the edge header and a copy of the inner packet into a buffer from a
 * bounded pool and sends it — exactly one inner packet per datagram, as a
 * kernel tunnel endpoint takes only the first (docs/edge-encapsulation.md).
 * A pool that is empty is a counted drop (edge_tx_pool_empty).
 *
 * Frames are counted on both sides in the links' terms (LinkRx under the
 * reserved sender id EDGE_SENDER_ID, LinkTx under one "edge" destination),
 * so a node's books balance whether its traffic came from Baton's tiers or
 * from the edge (traffic/loss-books.ts).
 *
 * Per datagram: no allocation but the sender address the socket gives and
 * the subarray handed to send().
 */
import type { Scheduler } from '../runtime/scheduler.js';
import type { DatagramSocket } from '../io/datagram.js';
import type { Address } from '../io/address.js';
import { Counters, defineCounters } from '../counters.js';
import { decodeEdge, writeEdgeHeader, EdgeEncap, EdgeReject, EDGE_HEADER_LEN, EDGE_REJECT_NAMES } from '../encap/edge.js';
import { copyBytes } from './copy.js';
import { RxRing } from './rx-ring.js';
import { LinkRx } from './link-counters.js';
import { intToIpv4 } from '../packet/meta.js';

/** Sender id under which frames from the edge are counted (no Baton node has it). */
export const EDGE_SENDER_ID = 0xfffe;

export const EDGE = defineCounters([
  'edge_rx_datagrams',
  'edge_rx_frames', // accepted: handed to the node
  'edge_enqueued',
  'edge_dequeued',
  'edge_dropped_full', // RX ring full (datagrams = frames at the edge)
  ...(EDGE_REJECT_NAMES.slice(1).map((n) => `drop_${n}`) as ['drop_edge_truncated', 'drop_edge_bad_flags', 'drop_edge_bad_next_protocol', 'drop_edge_has_options', 'drop_edge_wrong_vni', 'drop_edge_bad_inner_length']),
  'drop_edge_rx_full', // the frames of edge_dropped_full (one each), as a frame drop
  'drop_edge_at_close',
  'edge_tx_frames',
  'edge_tx_bytes',
  'drop_edge_tx_pool_empty',
  'drop_edge_tx_too_big',
  'drop_edge_tx_send_error',
] as const);

const MAX_DESTINATIONS = 65536;

export type EdgeHandler = (buf: Uint8Array, innerOff: number, innerLen: number, from: Address) => void;

export interface EdgePortOptions {
  kind: EdgeEncap;
  vni: number;
  /** Destination port of datagrams this port sends (the peers' tunnel port; default: the kind's IANA port). */
  peerPort: number;
  rxCapacity?: number;
  batchDatagrams?: number;
  /** Send buffers (default 1024) and their size (default 9216 bytes). */
  txBuffers?: number;
  txBufferBytes?: number;
}

export class EdgePort {
  readonly counters: Counters;
  readonly kind: EdgeEncap;
  readonly peerPort: number;
  /** Frames from the edge, under EDGE_SENDER_ID (the node adds them to its link books). */
  readonly links = new LinkRx();
  /** Frames the kernel accepted toward the edge. */
  txAccepted = 0;
  private readonly rx: RxRing;
  private readonly vni: number;
  private readonly batch: number;
  private scheduled = false;
  private closed = false;
  private handler: EdgeHandler = () => {};
  private before: () => void = () => {};
  private after: () => void = () => {};
  private readonly bufs: Uint8Array[] = [];
  private readonly sentCbs: ((err: Error | null) => void)[] = [];
  private readonly free: Int32Array;
  private freeTop = 0;
  private inFlight = 0;
  /** Destination addresses by IPv4 (the socket wants host strings): made once per peer, bounded. */
  private readonly dsts = new Map<number, Address>();

  constructor(
    readonly socket: DatagramSocket,
    private readonly scheduler: Scheduler,
    opts: EdgePortOptions,
    counters?: Counters,
  ) {
    this.counters = counters ?? new Counters(EDGE);
    this.kind = opts.kind;
    this.vni = opts.vni;
    this.peerPort = opts.peerPort;
    this.batch = opts.batchDatagrams ?? 64;
    this.rx = new RxRing(opts.rxCapacity ?? 4096, this.counters, { enqueued: EDGE.edge_enqueued, dequeued: EDGE.edge_dequeued, dropped_full: EDGE.edge_dropped_full });
    const n = opts.txBuffers ?? 1024;
    const size = opts.txBufferBytes ?? 9216;
    this.free = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      this.bufs.push(new Uint8Array(size));
      this.sentCbs.push(this.makeSentCb(i));
      this.free[this.freeTop++] = i;
    }
    socket.onMessage((data, from) => {
      const c = this.counters;
      c.inc(EDGE.edge_rx_datagrams);
      if (this.closed) {
        c.inc(EDGE.drop_edge_at_close);
        return;
      }
      if (!this.rx.push(data, from)) c.inc(EDGE.drop_edge_rx_full);
      else if (!this.scheduled) {
        this.scheduled = true;
        this.scheduler.defer(this.run);
      }
    });
  }

  get address(): Address {
    return this.socket.address;
  }

  /** Datagrams waiting, and datagrams handed to the socket but not yet sent: 0 and 0 when idle. */
  get depth(): number {
    return this.rx.depth + this.inFlight;
  }

  /** `handler` once per accepted packet; `before` / `after` once per batch (the node's tick; flushing what the batch queued on its other lanes). */
  start(handler: EdgeHandler, before?: () => void, after?: () => void): void {
    this.handler = handler;
    if (before) this.before = before;
    if (after) this.after = after;
  }

  private readonly run = (): void => {
    this.scheduled = false;
    if (this.closed) return;
    const c = this.counters;
    this.before();
    for (let n = 0; n < this.batch; n++) {
      const d = this.rx.shift();
      if (d === null) break;
      const r = decodeEdge(this.kind, d, d.length, this.vni);
      if (r !== EdgeReject.OK) {
        c.inc(EDGE.drop_edge_truncated + r - 1); // the six drop counters are in EdgeReject order
        continue;
      }
      c.inc(EDGE.edge_rx_frames);
      this.links.add(EDGE_SENDER_ID);
      this.handler(d, EDGE_HEADER_LEN, d.length - EDGE_HEADER_LEN, this.rx.lastFrom!);
    }
    this.after();
    if (this.rx.depth > 0 && !this.scheduled) {
      this.scheduled = true;
      this.scheduler.defer(this.run);
    }
  };

  /**
   * Sends one inner IPv4 packet src[off, off+len) to (ip, this.peerPort) in
   * this port's encapsulation. Returns false when it was dropped (counted).
   * `ip` is an IPv4 address as a number (int32 or uint32).
   */
  send(ip: number, src: Uint8Array, off: number, len: number): boolean {
    const c = this.counters;
    if (this.freeTop === 0) {
      c.inc(EDGE.drop_edge_tx_pool_empty);
      return false;
    }
    const i = this.free[this.freeTop - 1]!;
    const buf = this.bufs[i]!;
    if (EDGE_HEADER_LEN + len > buf.length) {
      c.inc(EDGE.drop_edge_tx_too_big);
      return false;
    }
    this.freeTop--;
    writeEdgeHeader(this.kind, buf, 0, this.vni);
    copyBytes(src, off, buf, EDGE_HEADER_LEN, len);
    let to = this.dsts.get(ip | 0);
    if (to === undefined) {
      if (this.dsts.size >= MAX_DESTINATIONS) this.dsts.clear();
      to = { host: intToIpv4(ip >>> 0), port: this.peerPort };
      this.dsts.set(ip | 0, to);
    }
    this.inFlight++;
    c.inc(EDGE.edge_tx_frames);
    c.inc(EDGE.edge_tx_bytes, EDGE_HEADER_LEN + len);
    this.socket.send(buf.subarray(0, EDGE_HEADER_LEN + len), to, this.sentCbs[i]!);
    return true;
  }

  private makeSentCb(i: number): (err: Error | null) => void {
    return (err) => {
      this.inFlight--;
      this.free[this.freeTop++] = i;
      if (err) this.counters.inc(EDGE.drop_edge_tx_send_error);
      else this.txAccepted++;
    };
  }

  /** Frames left in the RX ring are counted drop_edge_at_close; waits (bounded) for sends in flight, then closes the socket. */
  async close(flushMs = 1000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (let d = this.rx.shift(); d !== null; d = this.rx.shift()) this.counters.inc(EDGE.drop_edge_at_close);
    const end = this.scheduler.clock.now() + flushMs;
    while (this.inFlight > 0 && this.scheduler.clock.now() < end) await new Promise<void>((r) => this.scheduler.after(5, r));
    return this.socket.close();
  }
}
