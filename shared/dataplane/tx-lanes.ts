/**
 * The transmit side: one lane per destination; each lane packs frames into
 * a datagram buffer taken from a bounded pool (the TX ring), and a flush sends
 * the whole datagram with one system call. Buffers return to the pool when
 * the socket reports the datagram sent. A frame that finds the pool empty is
 * dropped and counted (tx_dropped_full): the ring is bounded by design.
 *
 * Depth (frames queued in lanes + datagrams in flight) is observable.
 *
 * A lane is one destination address (host:port): a datagram goes to one
 * address, so frames for two ports of one host cannot share a datagram.
 * Lanes are never removed; the owner bounds them (the hash tier reuses the
 * lane of an evicted client address, hash-tier/forwarding-engine.ts). The
 * flush at the end of a batch walks only the lanes that queued a frame in
 * it (a stack of lane indices), so a node with thousands of lanes pays per
 * batch for the lanes it used. Memory is bounded by the pool
 * (poolBuffers x maxDatagramBytes, allocated once) plus one small Lane per
 * lane; since a lane holds one buffer while it has queued frames and a
 * buffer comes back only when the socket reports the send (after the batch),
 * one batch reaches at most poolBuffers distinct destinations: frames past
 * that are tx_dropped_full.
 */
import type { Counters } from '../counters.js';
import type { DatagramSocket } from '../io/datagram.js';
import type { Address } from '../io/address.js';
import { LinkTx } from './link-counters.js';
import { BatonError, ErrorCode } from '../errors.js';

export interface TxCounterIds {
  tx_frames: number;
  tx_datagrams: number;
  tx_bytes: number;
  tx_dropped_full: number;
  tx_too_big: number;
  tx_send_errors: number;
  /** Frames in datagrams whose send failed (tx_send_errors counts the datagrams). */
  tx_send_error_frames: number;
  /** Frames still queued in a lane when the node closed (never handed to the kernel). */
  drop_at_close: number;
}

export interface TxOptions {
  /** Largest datagram a lane builds (bytes). Default 32768. */
  maxDatagramBytes?: number;
  /** Datagram buffers in the pool. Default 512. */
  poolBuffers?: number;
}

class Lane {
  buf: Uint8Array | null = null;
  fill = 0;
  frames = 0;
  /** On the dirty stack (took a buffer since the last flushAll). */
  dirty = false;
  constructor(
    public to: Address,
    /** This lane's destination in the link counters (changes with setLaneAddress). */
    public link: number,
  ) {}
}

export class TxLanes {
  readonly maxDatagramBytes: number;
  private readonly pool: Uint8Array[] = [];
  private readonly lanes: Lane[] = [];
  /** Lanes that took a buffer since the last flushAll (each once): what flushAll walks. */
  private dirty = new Int32Array(16);
  private dirtyCount = 0;
  private readonly poolSize: number;
  private queuedFrames = 0;
  private inFlight = 0;
  /** Where the frame reserved by the last reserve() call starts. */
  writeOffset = 0;
  /** Frames the kernel accepted, per destination address (the loss books' sent side). */
  readonly links = new LinkTx();

  constructor(
    private readonly socket: DatagramSocket,
    private readonly counters: Counters,
    private readonly ids: TxCounterIds,
    opts: TxOptions = {},
  ) {
    this.maxDatagramBytes = opts.maxDatagramBytes ?? 32768;
    this.poolSize = opts.poolBuffers ?? 512;
    if (!(this.maxDatagramBytes >= 128 && this.maxDatagramBytes <= 65507)) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `maxDatagramBytes must be 128..65507, got ${this.maxDatagramBytes}`);
    }
    for (let i = 0; i < this.poolSize; i++) this.pool.push(new Uint8Array(this.maxDatagramBytes));
  }

  /** A new lane to `to`; its index. Off the hot path (the dirty stack grows here, never in reserve). */
  addLane(to: Address): number {
    this.lanes.push(new Lane(to, this.links.slot(to)));
    if (this.lanes.length > this.dirty.length) {
      const grown = new Int32Array(this.dirty.length * 2);
      grown.set(this.dirty);
      this.dirty = grown;
    }
    return this.lanes.length - 1;
  }
  /** Points `lane` at another address; frames it still holds leave first, to the old one. Off the hot path. */
  setLaneAddress(lane: number, to: Address): void {
    const l = this.lanes[lane]!;
    if (l.buf !== null) this.flushLane(l);
    l.to = to;
    l.link = this.links.slot(to);
  }
  laneAddress(lane: number): Address {
    return this.lanes[lane]!.to;
  }
  get laneCount(): number {
    return this.lanes.length;
  }

  /** Frames queued in lanes plus datagrams handed to the socket and not yet sent. */
  get depth(): number {
    return this.queuedFrames + this.inFlight;
  }
  get datagramsInFlight(): number {
    return this.inFlight;
  }
  get freeBuffers(): number {
    return this.pool.length;
  }
  /** Lanes that queued a frame since the last flushAll (what it will walk). */
  get dirtyLanes(): number {
    return this.dirtyCount;
  }

  /**
   * Reserves `len` bytes for one frame in `lane`'s datagram and returns the
   * buffer to write it into, at `this.writeOffset`; null (counted) when no
   * buffer is free or the frame can never fit.
   */
  reserve(lane: number, len: number): Uint8Array | null {
    const l = this.lanes[lane]!;
    if (len > this.maxDatagramBytes) {
      this.counters.inc(this.ids.tx_too_big);
      return null;
    }
    if (l.buf !== null && l.fill + len > this.maxDatagramBytes) this.flushLane(l);
    if (l.buf === null) {
      const b = this.pool.pop();
      if (b === undefined) {
        this.counters.inc(this.ids.tx_dropped_full);
        return null;
      }
      l.buf = b;
      l.fill = 0;
      l.frames = 0;
      if (!l.dirty) {
        l.dirty = true;
        this.dirty[this.dirtyCount++] = lane;
      }
    }
    this.writeOffset = l.fill;
    l.fill += len;
    l.frames++;
    this.queuedFrames++;
    return l.buf;
  }

  /** Sends every lane's queued frames: walks only the lanes that queued one since the last call. */
  flushAll(): void {
    const d = this.dirty;
    const lanes = this.lanes;
    for (let i = 0; i < this.dirtyCount; i++) {
      const l = lanes[d[i]!]!;
      l.dirty = false;
      if (l.buf !== null) this.flushLane(l); // null: flushed when it filled and not used since
    }
    this.dirtyCount = 0;
  }

  private flushLane(l: Lane): void {
    const buf = l.buf!;
    const frames = l.frames;
    const bytes = l.fill;
    l.buf = null;
    l.fill = 0;
    l.frames = 0;
    this.queuedFrames -= frames;
    this.inFlight++;
    const c = this.counters;
    c.inc(this.ids.tx_frames, frames);
    c.inc(this.ids.tx_datagrams);
    c.inc(this.ids.tx_bytes, bytes);
    const link = l.link;
    this.socket.send(buf.subarray(0, bytes), l.to, (err) => {
      this.inFlight--;
      if (err) {
        c.inc(this.ids.tx_send_errors);
        c.inc(this.ids.tx_send_error_frames, frames);
      } else this.links.add(link, frames);
      this.pool.push(buf);
    });
  }

  /**
   * Closing: frames still queued in lanes are dropped and counted
   * (drop_at_close); returns how many.
   */
  discardQueued(): number {
    let n = 0;
    for (let i = 0; i < this.dirtyCount; i++) {
      const l = this.lanes[this.dirty[i]!]!;
      l.dirty = false;
      if (l.buf === null) continue;
      n += l.frames;
      this.queuedFrames -= l.frames;
      this.pool.push(l.buf);
      l.buf = null;
      l.fill = 0;
      l.frames = 0;
    }
    this.dirtyCount = 0;
    if (n > 0) this.counters.inc(this.ids.drop_at_close, n);
    return n;
  }
}
