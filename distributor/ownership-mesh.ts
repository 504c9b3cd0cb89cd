/**
 * Flow-ownership broadcast among peer FDs (seed 003: "FD A broadcasts to its
 * peer nodes that it is the owner of flow_a and reverse_flow_a"). Records are
 * batched in an OwnershipBuffer (fixed 16-byte layout) and flushed every
 * `flushMs` to every peer over its control connection; batches received from
 * peers are applied to the local flow table as learned (redirect) entries.
 *
 * What makes the knowledge hold (docs/control-protocol.md, OwnershipBatch):
 *   - An acknowledged batch is answered `Pong` only when every record was
 *     applied; otherwise with a typed nack (OwnershipNack): DEFERRED (this
 *     FD's table is frozen by its own migration: the records are queued and
 *     applied when the freeze ends, discarded if it leaves), TABLE_FULL
 *     (records refused), BAD_BATCH (malformed, nothing applied).
 *     `requestBatch` is the sending side: it counts each outcome.
 *   - Records that arrive while the table is frozen (a migration holds slot
 *     indexes) are queued in arrival order, not dropped.
 *   - A peer that misses a broadcast (no open channel, or the channel closed
 *     with batches in flight) is marked; when the channel to it is up again
 *     it gets a full sync of the flows this FD owns, as acknowledged batches
 *     on that channel (later broadcasts follow on the same channel, in order).
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { MessageNet, MessageListener } from '../shared/io/stream.js';
import type { Address } from '../shared/io/address.js';
import { parseAddress } from '../shared/io/address.js';
import { ControlChannel, CHANNEL_COUNTERS } from '../shared/control/channel.js';
import { body, type EnvelopeObject, type Body, type OwnershipBatch } from '../shared/control/messages.js';
import {
  OwnershipBuffer,
  forEachOwnership,
  OwnershipFlag,
  OWNERSHIP_RECORD_SIZE,
  OWNERSHIP_RECORD_VERSION,
  packOwnership,
} from '../shared/control/ownership.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { BatonError, ErrorCode, remoteCodeOf } from '../shared/errors.js';
import type { FlowHandler, OwnershipSink } from './flow-handler.js';
import { FD } from './fd-counters.js';

export const MESH = defineCounters([
  'batches_sent',
  'records_sent',
  'batches_received',
  'records_received',
  'batches_rejected',
  'peer_connect_failures',
  'batches_from_failed', // from an FD the scope says is FAILED: ignored (its flows were promoted elsewhere)
  'records_fenced', // own records not broadcast: this FD is fenced (declared FAILED)
  'refreshes', // periodic re-announcements of every owned flow to a peer (refreshMs)
  'refresh_records',
  'refresh_failures',
] as const);

/** The codes (of ErrorCode, shared/errors.ts) of the ErrorReply that answers an acknowledged batch not (yet) applied in full. */
export const OwnershipNack = {
  /** Bad record_version or length: nothing applied. */
  BAD_BATCH: ErrorCode.BAD_OWNERSHIP_BATCH,
  /** Some records refused: no room in the flow table (the others were applied). */
  TABLE_FULL: ErrorCode.TABLE_FULL,
  /** The receiver is migrating its own flows (table frozen): queued, applied when that ends, discarded if it leaves. */
  DEFERRED: ErrorCode.OWNERSHIP_DEFERRED,
  /** The queue of deferred records is full: the batch was dropped. */
  QUEUE_FULL: ErrorCode.OWNERSHIP_QUEUE_FULL,
} as const;

/** What the peer did with an acknowledged batch (requestBatch). */
export type BatchOutcome = 'applied' | 'deferred';

/** Records queued while frozen, at most (16 bytes each: 16 MiB). */
export const MAX_DEFERRED_RECORDS = 1 << 20;
/** Records per batch of a full sync. */
const SYNC_BATCH = 8192;
const RECONNECT_MS = 100;
const CONNECT_RETRY_MS = 200;

export interface MeshPeer {
  id: number;
  controlAddr: string;
}

export interface MeshOptions {
  /** Timeout of each acknowledged batch of a resync (default 5000 ms). */
  requestTimeoutMs?: number;
  /**
   * Every peer gets the ownership of every flow this FD owns again this
   * often (0: never). Peers age learned entries out only after a long idle
   * time (FlowHandler learnedIdleMs): the re-announcement keeps the entries
   * of long flows whose packets never pass through them. Default 0.
   */
  refreshMs?: number;
}

interface Deferred {
  count: number;
  records: Uint8Array;
  remapFrom: number;
  remapTo: number;
}

/** Result of applying one batch here. */
interface Applied {
  applied: number;
  refused: number;
}

export class OwnershipMesh implements OwnershipSink {
  readonly counters = new Counters(MESH);
  /** Every peer control connection accepted, summed (garbage ones included). */
  readonly channelCounters = new Counters(CHANNEL_COUNTERS);
  private readonly buffer: OwnershipBuffer;
  private readonly out = new Map<number, ControlChannel>();
  private readonly connecting = new Set<number>();
  private listener: MessageListener | null = null;
  private flushTimer: Timer | null = null;
  private readonly log: Logger;
  private wanted = new Map<number, Address>();
  /** Peers that may have missed records of ours: resynced when their channel is (again) up. */
  private readonly dirty = new Set<number>();
  /** Full syncs in flight, by peer (one per channel). */
  private readonly syncs = new Map<number, { ch: ControlChannel; p: Promise<number> }>();
  /** Batches received while the table was frozen, in arrival order. */
  private readonly deferred: Deferred[] = [];
  private deferredRecords = 0;
  private stopped = false;
  private readonly requestTimeoutMs: number;
  private readonly refreshMs: number;
  private refreshTimer: Timer | null = null;

  /** Re-announces every owned flow to every connected peer (refreshMs). */
  private refreshAll(): void {
    if (this.stopped || this.isFenced) return;
    for (const id of this.wanted.keys()) {
      const ch = this.out.get(id);
      if (!ch || ch.closed || this.syncs.has(id)) continue;
      this.counters.inc(MESH.refreshes);
      this.resync(id, ch).then(
        (n) => this.counters.inc(MESH.refresh_records, n),
        () => this.counters.inc(MESH.refresh_failures),
      );
    }
  }
  /** Owners whose batches are ignored (the node sets it: FDs the scope says are FAILED). */
  refuseFrom: (owner: number) => boolean = () => false;
  /**
   * Fenced (this FD was declared FAILED): nothing of its own is broadcast
   * or resynced any more, so it cannot take back flows promoted elsewhere.
   */
  get fenced(): boolean {
    return this.isFenced;
  }
  set fenced(v: boolean) {
    this.isFenced = v;
    if (v) {
      this.buffer.clear();
      this.dirty.clear();
    }
  }
  private isFenced = false;
  /** Extra request handling for peer connections (the migration client plugs in here). */
  peerRequestHandler: ((env: EnvelopeObject, ch: ControlChannel) => Body | void | Promise<Body | void>) | null = null;

  constructor(
    private readonly selfId: number,
    private readonly handler: FlowHandler,
    private readonly net: MessageNet,
    private readonly scheduler: Scheduler,
    private readonly flushMs: number,
    opts: MeshOptions = {},
  ) {
    this.log = getLogger('ownership-mesh');
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.refreshMs = opts.refreshMs ?? 0;
    this.buffer = new OwnershipBuffer(4096, (records, count) => this.broadcast(records, count));
    handler.onThaw(() => this.applyDeferred());
  }

  /** Listens for peers; returns the bound control address. */
  async start(listen: Address): Promise<Address> {
    this.listener = await this.net.listen(listen, (conn) => {
      const ch = new ControlChannel(conn, this.scheduler, { counters: this.channelCounters });
      ch.onMessage((env) => {
        if (env.body.case === 'ownershipBatch') this.receive(env.body.value);
      });
      ch.onRequest((env) => {
        // An acknowledged ownership batch (migration broadcasts, joiner syncs,
        // resyncs): answered after it was applied, saying whether all of it was.
        if (env.body.case === 'ownershipBatch') return this.answer(env.body.value);
        return this.peerRequestHandler?.(env, ch);
      });
    });
    this.flushTimer = this.scheduler.every(this.flushMs, () => this.buffer.flush());
    if (this.refreshMs > 0) this.refreshTimer = this.scheduler.every(this.refreshMs, () => this.refreshAll());
    return this.listener.address;
  }

  // OwnershipSink (called by the flow handler per created/removed flow: no allocation)
  flowCreated(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, owner: number): void {
    if (this.isFenced) {
      this.counters.inc(MESH.records_fenced);
      return;
    }
    this.buffer.add(srcIp, dstIp, srcPort, dstPort, proto, 0, owner);
  }
  flowRemoved(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): void {
    if (this.isFenced) {
      this.counters.inc(MESH.records_fenced);
      return;
    }
    this.buffer.add(srcIp, dstIp, srcPort, dstPort, proto, OwnershipFlag.REMOVED, this.selfId);
  }

  /** Flushes pending records now. */
  flush(): void {
    this.buffer.flush();
  }

  get pendingRecords(): number {
    return this.buffer.pending;
  }

  /** Records queued while the table is frozen (applied when it thaws). */
  get deferredPending(): number {
    return this.deferredRecords;
  }

  /** Peers marked as having missed records (tests, diagnostics). */
  get peersToResync(): number[] {
    return [...this.dirty];
  }

  /** The peer set changed (from a scope update): connect to new peers, drop gone ones. */
  setPeers(peers: readonly MeshPeer[]): void {
    const wanted = new Map<number, Address>();
    for (const p of peers) if (p.id !== this.selfId && p.controlAddr) wanted.set(p.id, parseAddress(p.controlAddr));
    this.wanted = wanted;
    for (const id of this.dirty) if (!wanted.has(id)) this.dirty.delete(id);
    for (const [id, ch] of this.out) {
      if (!wanted.has(id)) {
        this.out.delete(id);
        ch.close();
      }
    }
    for (const [id, addr] of wanted) if (!this.out.has(id)) this.connect(id, addr);
  }

  /** Outbound channel to a peer (null when not connected). */
  peer(id: number): ControlChannel | null {
    return this.out.get(id) ?? null;
  }

  private connect(id: number, addr: Address): void {
    if (this.connecting.has(id) || this.stopped) return;
    this.connecting.add(id);
    this.net.connect(addr).then(
      (conn) => {
        this.connecting.delete(id);
        const cur = this.wanted.get(id);
        const have = this.out.get(id);
        if (this.stopped || !cur || cur.host !== addr.host || cur.port !== addr.port || (have && !have.closed)) {
          conn.close();
          return;
        }
        this.adopt(id, new ControlChannel(conn, this.scheduler));
      },
      (e: Error) => {
        this.connecting.delete(id);
        this.counters.inc(MESH.peer_connect_failures);
        this.log.debug('peer connect failed', { peer: id, err: e.message });
        const again = this.wanted.get(id);
        if (again && !this.stopped) this.scheduler.after(CONNECT_RETRY_MS, () => this.connect(id, again));
      },
    );
  }

  /**
   * `ch` is the outbound channel to peer `id` from now on. When it closes the
   * peer may have lost batches in flight: it is marked for a resync, and
   * reconnected while it is still a peer. A marked peer is resynced at once.
   */
  private adopt(id: number, ch: ControlChannel): void {
    this.out.set(id, ch);
    ch.onClose(() => {
      if (this.out.get(id) === ch) this.out.delete(id);
      if (this.stopped) return;
      const again = this.wanted.get(id);
      if (!again) return;
      this.dirty.add(id);
      this.scheduler.after(RECONNECT_MS, () => {
        const cur = this.wanted.get(id);
        if (cur && !this.out.has(id)) this.connect(id, cur);
      });
    });
    if (this.dirty.has(id) && !this.isFenced) {
      this.resync(id, ch).then(
        (n) => {
          this.handler.counters.inc(FD.ownership_resyncs);
          this.handler.counters.inc(FD.ownership_resync_records, n);
        },
        (e: Error) => {
          this.handler.counters.inc(FD.ownership_resync_failures);
          this.log.warn('ownership resync failed', { peer: id, err: e.message });
        },
      );
    }
  }

  private broadcast(records: Uint8Array, count: number): void {
    const msg = body('ownershipBatch', { owner: this.selfId, recordVersion: OWNERSHIP_RECORD_VERSION, count, records, remapFrom: 0, remapTo: 0 });
    for (const id of this.wanted.keys()) {
      const ch = this.out.get(id);
      if (ch !== undefined && ch.send(msg)) {
        this.counters.inc(MESH.batches_sent);
        this.counters.inc(MESH.records_sent, count);
      } else {
        // No open channel: the peer misses these records; it gets a full sync
        // once the channel is up.
        this.dirty.add(id);
        this.handler.counters.inc(FD.ownership_unsent_batches);
        this.handler.counters.inc(FD.ownership_unsent_records, count);
      }
    }
  }

  // ------------------------------------------------------------ receiving

  /** A fire-and-forget batch (or the body of an acknowledged one). */
  private receive(b: OwnershipBatch): ErrorCode | Applied {
    if (b.recordVersion !== OWNERSHIP_RECORD_VERSION || !Number.isInteger(b.count) || b.count < 0 || b.records.length !== b.count * OWNERSHIP_RECORD_SIZE) {
      this.counters.inc(MESH.batches_rejected);
      return OwnershipNack.BAD_BATCH;
    }
    if (this.refuseFrom(b.owner)) {
      // A FAILED FD running again (it hung): the scope took it out and its flows were promoted.
      this.counters.inc(MESH.batches_from_failed);
      return { applied: b.count, refused: 0 };
    }
    this.counters.inc(MESH.batches_received);
    this.counters.inc(MESH.records_received, b.count);
    if (this.handler.frozen || this.deferred.length > 0) {
      // A migration holds slot indexes here: nothing may move. Keep the batch
      // (copied: `records` is a view on the received frame) for the thaw.
      if (this.deferredRecords + b.count > MAX_DEFERRED_RECORDS) {
        this.handler.counters.inc(FD.ownership_deferred_dropped, b.count);
        return OwnershipNack.QUEUE_FULL;
      }
      this.deferred.push({ count: b.count, records: b.records.slice(), remapFrom: b.remapFrom, remapTo: b.remapTo });
      this.deferredRecords += b.count;
      this.handler.counters.inc(FD.ownership_deferred, b.count);
      // Meanwhile, what moves nothing is applied at once (and again, in order,
      // at the thaw): a remap, and new owners of existing peer entries — so a
      // frozen FD does not keep redirecting to an FD that handed its flows on.
      this.applyInPlace(b);
      return OwnershipNack.DEFERRED;
    }
    return this.apply(b.count, b.records, b.remapFrom, b.remapTo);
  }

  private answer(b: OwnershipBatch): Body {
    const r = this.receive(b);
    if (typeof r !== 'string' && r.refused === 0) return body('pong', {});
    this.handler.counters.inc(FD.ownership_nacks_sent);
    if (typeof r !== 'string') {
      return body('errorReply', { code: OwnershipNack.TABLE_FULL, message: `applied ${r.applied} of ${b.count} ownership records; ${r.refused} refused: flow table full` });
    }
    const why: Record<string, string> = {
      [OwnershipNack.BAD_BATCH]: 'ownership batch rejected (length or record version): nothing applied',
      [OwnershipNack.DEFERRED]: `${b.count} ownership records queued: this FD is migrating its own flows; applied when that ends, discarded if it leaves`,
      [OwnershipNack.QUEUE_FULL]: `${b.count} ownership records dropped: the queue of records deferred during this FD's migration is full`,
    };
    return body('errorReply', { code: r, message: why[r] ?? r });
  }

  private apply(count: number, records: Uint8Array, remapFrom: number, remapTo: number): Applied {
    const h = this.handler;
    if (remapTo !== 0 && remapFrom !== 0) h.remapOwner(remapFrom, remapTo);
    let applied = 0;
    let refused = 0;
    forEachOwnership(records, count, (srcIp, dstIp, srcPort, dstPort, proto, flags, owner) => {
      if (owner === this.selfId) {
        applied++; // about our own flow: nothing to learn
        return;
      }
      if ((flags & OwnershipFlag.REMOVED) !== 0) {
        h.forgetOwnership(srcIp, dstIp, srcPort, dstPort, proto, owner);
        applied++;
      } else if (h.learnOwnership(srcIp, dstIp, srcPort, dstPort, proto, owner)) applied++;
      else refused++; // table full (counted learn_table_full)
    });
    return { applied, refused };
  }

  /** The frozen-safe part of a batch: the remap, and owner changes of entries that exist (never this FD's own). */
  private applyInPlace(b: OwnershipBatch): void {
    const h = this.handler;
    if (b.remapTo !== 0 && b.remapFrom !== 0) h.remapOwner(b.remapFrom, b.remapTo);
    forEachOwnership(b.records, b.count, (srcIp, dstIp, srcPort, dstPort, proto, flags, owner) => {
      if (owner !== this.selfId && (flags & OwnershipFlag.REMOVED) === 0) h.updateLearnedOwner(srcIp, dstIp, srcPort, dstPort, proto, owner);
    });
  }

  /** The table thawed: apply the queued batches in order, or drop them if this FD left (its table was purged). */
  private applyDeferred(): void {
    if (this.deferred.length === 0) return;
    const q = this.deferred.splice(0);
    const n = this.deferredRecords;
    this.deferredRecords = 0;
    if (this.handler.leaving) {
      this.handler.counters.inc(FD.ownership_deferred_dropped, n);
      return;
    }
    for (const d of q) this.apply(d.count, d.records, d.remapFrom, d.remapTo);
    this.handler.counters.inc(FD.ownership_deferred_applied, n);
  }

  // ------------------------------------------------------------ sending, acknowledged

  /**
   * Sends `batch` to peer `peerId` as a request and waits for the answer:
   * 'applied' (every record), 'deferred' (the peer is migrating; it applies
   * them when that ends). Rejects with BATON_REMOTE_ERROR (details.remoteCode
   * an OwnershipNack code) when the peer refused records, or with the
   * channel's error (timeout, closed). Every outcome is counted.
   */
  async requestBatch(peerId: number, ch: ControlChannel, batch: OwnershipBatch, timeoutMs: number): Promise<BatchOutcome> {
    const c = this.handler.counters;
    try {
      const r = await ch.request(body('ownershipBatch', batch), timeoutMs);
      if (r.body.case !== 'pong') throw new BatonError(ErrorCode.REMOTE_ERROR, `peer ${peerId} answered an ownership batch with ${r.body.case}`, { peer: peerId });
      c.inc(FD.ownership_batches_acked);
      return 'applied';
    } catch (e) {
      const code = remoteCodeOf(e);
      if (code === OwnershipNack.DEFERRED) {
        c.inc(FD.ownership_batches_deferred);
        return 'deferred';
      }
      if (code !== undefined) c.inc(FD.ownership_batches_refused);
      else c.inc(FD.ownership_batch_failures);
      throw e;
    }
  }

  /**
   * Sends peer `id` the ownership of every flow this FD owns, as acknowledged
   * batches on the channel to it (connecting first if needed), and resolves
   * with the number of records once all are answered. Flows created after the
   * snapshot reach the peer through the broadcast on the same channel, after
   * these. A sync already running on the same channel is shared. Rejects
   * when a batch is refused or unanswered; the peer then stays marked for a
   * resync at its next connect.
   */
  async syncPeer(id: number, addr?: Address, timeoutMs = this.requestTimeoutMs): Promise<number> {
    const ch = await this.channelTo(id, addr);
    return this.resync(id, ch, timeoutMs);
  }

  private resync(id: number, ch: ControlChannel, timeoutMs = this.requestTimeoutMs): Promise<number> {
    const cur = this.syncs.get(id);
    if (cur && cur.ch === ch) return cur.p;
    this.dirty.delete(id); // the snapshot below covers everything before it
    const p = this.sendOwned(id, ch, timeoutMs).then(
      (n) => {
        if (this.syncs.get(id)?.p === p) this.syncs.delete(id);
        return n;
      },
      (e: unknown) => {
        if (this.syncs.get(id)?.p === p) this.syncs.delete(id);
        if (this.wanted.has(id)) this.dirty.add(id);
        throw e;
      },
    );
    this.syncs.set(id, { ch, p });
    return p;
  }

  private async sendOwned(id: number, ch: ControlChannel, timeoutMs: number): Promise<number> {
    this.flush(); // older records first, then the snapshot
    const t = this.handler.table;
    const self = this.selfId;
    const pending: Promise<BatchOutcome>[] = [];
    let buf = new Uint8Array(SYNC_BATCH * OWNERSHIP_RECORD_SIZE);
    let n = 0;
    let total = 0;
    const send = (): void => {
      const batch = { owner: self, recordVersion: OWNERSHIP_RECORD_VERSION, count: n, records: buf.subarray(0, n * OWNERSHIP_RECORD_SIZE), remapFrom: 0, remapTo: 0 };
      pending.push(this.requestBatch(id, ch, batch, timeoutMs));
      total += n;
      buf = new Uint8Array(SYNC_BATCH * OWNERSHIP_RECORD_SIZE);
      n = 0;
    };
    // One synchronous walk: slots move on removal, so the walk must not yield.
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) {
      if (t.owner(s) !== self) continue;
      packOwnership(buf, n * OWNERSHIP_RECORD_SIZE, t.srcIp(s), t.dstIp(s), t.srcPort(s), t.dstPort(s), t.proto(s), 0, self);
      if (++n === SYNC_BATCH) send();
    }
    if (n > 0) send();
    await Promise.all(pending);
    return total;
  }

  /**
   * The outbound channel to peer `id`, connecting first if needed (to
   * `addr`, or the address the last scope update gave). Off the hot path.
   */
  async channelTo(id: number, addr?: Address, timeoutMs = 3000): Promise<ControlChannel> {
    const have = this.out.get(id);
    if (have && !have.closed) return have;
    const to = addr ?? this.wanted.get(id);
    if (!to) throw new BatonError(ErrorCode.UNKNOWN_NODE, `no control address known for peer ${id}`);
    if (!this.wanted.has(id)) this.wanted.set(id, to);
    const conn = await withTimeout(this.net.connect(to), this.scheduler, timeoutMs, `connect to peer ${id} at ${to.host}:${to.port}`);
    const again = this.out.get(id);
    if (again && !again.closed) {
      conn.close();
      return again;
    }
    const ch = new ControlChannel(conn, this.scheduler);
    this.adopt(id, ch);
    return ch;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.flushTimer?.cancel();
    this.refreshTimer?.cancel();
    this.wanted.clear();
    this.dirty.clear();
    for (const ch of this.out.values()) ch.close();
    this.out.clear();
    await this.listener?.close();
  }
}

/** Rejects with BATON_TIMEOUT when `p` has not settled within `ms` (scheduler time). */
export function withTimeout<T>(p: Promise<T>, scheduler: Scheduler, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = scheduler.after(ms, () => reject(new BatonError(ErrorCode.TIMEOUT, `${what}: no answer within ${ms} ms`)));
    p.then(
      (v) => {
        t.cancel();
        resolve(v);
      },
      (e) => {
        t.cancel();
        reject(e);
      },
    );
  });
}
