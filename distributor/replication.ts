/**
 * Continuous flow-state replication, the owner's side (docs/failure.md).
 *
 * Every connection this FD owns (its forward and reverse entries, with the
 * rewrite target and state flags) is held, as a replica, by one backup FD:
 * the FD that the current scope *without this FD* picks for the
 * connection's forward key (distributor/scope-hash.ts). The scope is
 * anchored (docs/hashing.md), so that is exactly the FD the hash tier sends
 * the connection to once the manager takes this FD out of the scope: the
 * backup that promotes a dead owner's replicas receives their packets
 * without a redirect. Every node can compute it from the key and the scope.
 *
 * Mechanism:
 *   - The flow handler reports each change of an own connection (created,
 *     FIN/RST state, removed) through ReplicationSink: a key and the backup
 *     it goes to, pushed into a preallocated ring. No allocation per call.
 *   - Every `lagMs` the ring is flushed: each key is looked up again and
 *     its entries as they are NOW are sent (so several changes of one
 *     connection cost one record), grouped by backup, as one ReplicaBatch
 *     request per backup on the ownership mesh's channel to it: a
 *     flow-export chunk of upserts plus 16-byte removal records, with a
 *     sequence number per (owner, backup) stream. The backup answers when
 *     it applied the batch (acknowledged), or nacks a gap.
 *   - Anything that can make a backup's copy incomplete — a scope change
 *     (backups move), a channel that closed with batches in flight, a nack,
 *     a full ring, too many batches unacknowledged — marks the backup for a
 *     resync: a full snapshot of the connections it backs up, its first
 *     batch flagged `reset` (drop everything held from this owner first).
 *     Every backup is also resynced every `resyncEveryMs` (anti-entropy:
 *     replicas of connections that ended by idle expiry go).
 *
 * Bounds: the ring holds `maxPendingChanges` changes; at most `maxInFlight`
 * batches per backup are unacknowledged. Lag (first change of a flush to
 * the backup's answer) is measured per batch: `replication_lag_ms`.
 *
 * Lifecycle: construct, setScope() with each scope update, start() (the
 * flush timer), stop().
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { ControlChannel } from '../shared/control/channel.js';
import type { HashScope } from '../shared/scope/hash-scope.js';
import { body, type ReplicaBatch } from '../shared/control/messages.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { ErrorCode, remoteCodeOf } from '../shared/errors.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { FlowTable, FlowFlag } from './flow-table.js';
import { exportFlowSlots, exportedSize } from './flow-export.js';
import { FlowKey, partnerKey } from './flow-pair.js';
import { scopeHash } from './scope-hash.js';

export const REPL = defineCounters([
  'changes_queued', // connection changes reported by the flow handler
  'changes_no_backup', // reported while there is no backup (a single FD, or not in a scope yet)
  'ring_overflows', // the change ring was full: every backup is resynced instead
  'batches_sent',
  'records_sent', // entries sent (upserts), incremental and resync
  'removals_sent',
  'bytes_sent', // upsert chunk + removal bytes
  'batches_acked',
  'batches_nacked_gap', // the backup saw a sequence gap: resynced
  'batches_refused', // the backup refused records (its replica table is full)
  'batch_failures', // no answer (timeout, channel closed): resynced
  'backpressure', // too many batches unacknowledged to a backup: resynced once they drain
  'resyncs', // full snapshots sent to a backup
  'resync_records',
] as const);

/** What the flow handler calls (per created/changed/removed own connection): no allocation. */
export interface ReplicationSink {
  /** The connection whose forward entry has this key was created or changed state. */
  connectionChanged(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): void;
  /** The connection (forward key, reverse key) was removed. */
  connectionRemoved(fSrc: number, fDst: number, fSp: number, fDp: number, proto: number, rSrc: number, rDst: number, rSp: number, rDp: number): void;
}

/** Bytes of one removal record: srcIp, dstIp, srcPort << 16 | dstPort, proto (uint32 little-endian each). */
export const REPLICA_REMOVAL_SIZE = 16;

export interface ReplicationOptions {
  lagMs: number;
  maxPendingChanges: number;
  maxInFlight: number;
  resyncEveryMs: number;
  requestTimeoutMs: number;
  /** Entries per batch of a resync (default 8192). */
  batchRecords?: number;
  /** hash.key client: the VIP (else -1). */
  clientKeyVip: number;
  /** hash.symmetric. */
  symmetric: boolean;
}

/** The outbound control channel to a peer FD (the ownership mesh's): null when not connected. */
export type PeerChannels = (id: number) => ControlChannel | null;

const KIND_CHANGED = 0;
const KIND_REMOVED = 1;
const RING_WORDS = 6; // srcIp, dstIp, ports, proto, backup id, kind

interface Stream {
  seq: number;
  inFlight: number;
  /** Needs a full snapshot (its copy may be incomplete). */
  dirty: boolean;
  /** The channel the stream's batches went on: a new channel means a new stream. */
  ch: ControlChannel | null;
}

export class ReplicationSender implements ReplicationSink {
  readonly counters = new Counters(REPL);
  private readonly log: Logger;
  private readonly ring: Uint32Array;
  private readonly cap: number;
  private count = 0;
  private overflowed = false;
  private firstPendingAt = 0;
  private scope: HashScope | null = null;
  private ids: Uint16Array = new Uint16Array(0);
  private seed = 0;
  private readonly streams = new Map<number, Stream>();
  private flushTimer: Timer | null = null;
  private resyncTimer: Timer | null = null;
  private stopped = false;
  private readonly p = new FlowKey();
  /** Lag of the last acknowledged batch and the largest since the last read (ms). */
  lastLagMs = 0;
  private maxLag = 0;

  constructor(
    private readonly selfId: number,
    private readonly table: FlowTable,
    private readonly channels: PeerChannels,
    private readonly scheduler: Scheduler,
    private readonly o: ReplicationOptions,
  ) {
    this.log = getLogger('replication');
    this.cap = o.maxPendingChanges;
    this.ring = new Uint32Array(this.cap * RING_WORDS);
  }

  start(): void {
    this.flushTimer = this.scheduler.every(this.o.lagMs, () => this.flush());
    this.resyncTimer = this.scheduler.every(this.o.resyncEveryMs, () => this.resyncAll());
  }

  stop(): void {
    this.stopped = true;
    this.flushTimer?.cancel();
    this.resyncTimer?.cancel();
  }

  /** Largest lag since the last call (a gauge's reader). */
  takeMaxLagMs(): number {
    const m = this.maxLag;
    this.maxLag = 0;
    return m;
  }

  /** Batches sent and not yet answered, over all backups. */
  get inFlight(): number {
    let n = 0;
    for (const s of this.streams.values()) n += s.inFlight;
    return n;
  }

  /** Changes waiting for the next flush. */
  get pending(): number {
    return this.count;
  }

  /** Backups that wait for a full resync (tests, diagnostics). */
  get dirtyBackups(): number[] {
    return [...this.streams].filter(([, s]) => s.dirty).map(([id]) => id);
  }

  /**
   * The scope without this FD (null: no backup, e.g. the only FD) and the
   * node id of each of its members. Every backup may have moved: all are
   * resynced. Off the hot path.
   */
  setScope(scope: HashScope | null, ids: Uint16Array, seed: number): void {
    this.scope = scope;
    this.ids = ids;
    this.seed = seed >>> 0;
    const keep = new Set<number>(ids);
    for (const id of this.streams.keys()) if (!keep.has(id)) this.streams.delete(id);
    for (const id of keep) if (id !== this.selfId && !this.streams.has(id)) this.streams.set(id, { seq: 0, inFlight: 0, dirty: true, ch: null });
    this.resyncAll();
  }

  /** The backup of the connection with this forward key, or -1. No allocation. */
  backupOf(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): number {
    const sc = this.scope;
    if (sc === null) return -1;
    return this.ids[sc.pick(scopeHash(srcIp, dstIp, srcPort, dstPort, proto, this.seed, this.o.clientKeyVip, this.o.symmetric))]!;
  }

  // ReplicationSink ------------------------------------------------------

  connectionChanged(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): void {
    const b = this.backupOf(srcIp, dstIp, srcPort, dstPort, proto);
    if (b < 0) {
      this.counters.inc(REPL.changes_no_backup);
      return;
    }
    this.push(srcIp, dstIp, srcPort, dstPort, proto, b, KIND_CHANGED);
  }

  connectionRemoved(fSrc: number, fDst: number, fSp: number, fDp: number, proto: number, rSrc: number, rDst: number, rSp: number, rDp: number): void {
    const b = this.backupOf(fSrc, fDst, fSp, fDp, proto);
    if (b < 0) {
      this.counters.inc(REPL.changes_no_backup);
      return;
    }
    this.push(fSrc, fDst, fSp, fDp, proto, b, KIND_REMOVED);
    this.push(rSrc, rDst, rSp, rDp, proto, b, KIND_REMOVED);
  }

  private push(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, backup: number, kind: number): void {
    if (this.count === this.cap) {
      // Lossless fallback: the snapshot of a resync covers what the ring lost.
      if (!this.overflowed) this.counters.inc(REPL.ring_overflows);
      this.overflowed = true;
      return;
    }
    if (this.count === 0) this.firstPendingAt = this.table.latestNowMs;
    const o = this.count * RING_WORDS;
    const r = this.ring;
    r[o] = srcIp;
    r[o + 1] = dstIp;
    r[o + 2] = (srcPort << 16) | (dstPort & 0xffff);
    r[o + 3] = proto;
    r[o + 4] = backup;
    r[o + 5] = kind;
    this.count++;
    this.counters.inc(REPL.changes_queued);
  }

  // Flushing -------------------------------------------------------------

  /** Sends what is pending (the flush timer's job; tests call it directly). */
  flush(): void {
    if (this.stopped) return;
    if (this.overflowed) {
      this.overflowed = false;
      this.count = 0;
      this.resyncAll();
    }
    if (this.count > 0) this.sendPending();
    for (const [id, s] of this.streams) {
      if (s.dirty && s.inFlight === 0) this.resync(id, s);
    }
  }

  private sendPending(): void {
    const t = this.table;
    const self = this.selfId;
    const r = this.ring;
    const n = this.count;
    this.count = 0;
    const since = this.firstPendingAt;
    // Group by backup: slots to send (both entries of a connection) and removal keys.
    const groups = new Map<number, { slots: number[]; removals: number[] }>();
    const pk = this.p;
    for (let i = 0; i < n; i++) {
      const o = i * RING_WORDS;
      const b = r[o + 4]!;
      const s = this.streams.get(b);
      if (s === undefined || s.dirty) continue; // its resync sends the current state anyway
      let g = groups.get(b);
      if (g === undefined) groups.set(b, (g = { slots: [], removals: [] }));
      const ports = r[o + 2]!;
      const slot = t.find(r[o]!, r[o + 1]!, ports >>> 16, ports & 0xffff, r[o + 3]!);
      if (slot >= 0 && t.owner(slot) === self && (t.flags(slot) & FlowFlag.STAGED) === 0) {
        g.slots.push(slot);
        if (r[o + 5] === KIND_CHANGED) {
          partnerKey(t, slot, pk);
          const q = t.find(pk.srcIp, pk.dstIp, pk.srcPort, pk.dstPort, pk.proto);
          if (q >= 0 && t.owner(q) === self) g.slots.push(q);
        }
      } else if (r[o + 5] === KIND_REMOVED || slot < 0) {
        g.removals.push(r[o]!, r[o + 1]!, ports, r[o + 3]!);
      }
    }
    for (const [b, g] of groups) {
      const s = this.streams.get(b)!;
      if (s.inFlight >= this.o.maxInFlight) {
        this.counters.inc(REPL.backpressure);
        s.dirty = true;
        continue;
      }
      this.sendBatch(b, s, Int32Array.from(g.slots), Uint32Array.from(g.removals), false, since);
    }
  }

  /** Sends one batch on the stream's channel (a new channel: the stream restarts with a resync). */
  private sendBatch(id: number, s: Stream, slots: Int32Array, removals: Uint32Array, reset: boolean, since: number): boolean {
    const ch = this.channels(id);
    if (ch === null || ch.closed) {
      s.dirty = true;
      return false;
    }
    if (!reset && s.ch !== ch) {
      // Batches sent on another channel may be lost: only a reset may start a stream on this one.
      s.dirty = true;
      return false;
    }
    s.ch = ch;
    const chunk = new Uint8Array(exportedSize(slots.length));
    const records = slots.length > 0 ? exportFlowSlots(this.table, slots, chunk) : 0;
    const upserts = records > 0 ? chunk.subarray(0, exportedSize(records)) : new Uint8Array(0);
    const rem = new Uint8Array(removals.length * 4);
    const dv = new DataView(rem.buffer);
    for (let i = 0; i < removals.length; i++) dv.setUint32(i * 4, removals[i]!, true);
    s.seq = reset ? 1 : s.seq + 1;
    const batch: ReplicaBatch = { owner: this.selfId, seq: s.seq, reset, upserts, removals: rem };
    const c = this.counters;
    c.inc(REPL.batches_sent);
    c.inc(REPL.records_sent, records);
    c.inc(REPL.removals_sent, removals.length / 4);
    c.inc(REPL.bytes_sent, upserts.length + rem.length);
    s.inFlight++;
    ch.request(body('replicaBatch', batch), this.o.requestTimeoutMs).then(
      (reply) => {
        s.inFlight--;
        if (reply.body.case === 'pong') {
          c.inc(REPL.batches_acked);
          const lag = this.scheduler.clock.now() - since;
          this.lastLagMs = lag;
          if (lag > this.maxLag) this.maxLag = lag;
        } else {
          c.inc(REPL.batch_failures);
          s.dirty = true;
        }
      },
      (e: unknown) => {
        s.inFlight--;
        const code = remoteCodeOf(e);
        if (code === ErrorCode.TABLE_FULL) {
          c.inc(REPL.batches_refused); // a resync cannot make room: counted, not retried
          return;
        }
        if (code === ErrorCode.REPLICA_GAP) c.inc(REPL.batches_nacked_gap);
        else c.inc(REPL.batch_failures);
        if (this.streams.get(id) === s) s.dirty = true;
        this.log.debug('replica batch not applied', { backup: id, err: String(e) });
      },
    );
    return true;
  }

  /** Every backup gets a full resync at the next flush (e.g. flows became this FD's by a migration). */
  resyncAll(): void {
    for (const s of this.streams.values()) s.dirty = true;
  }

  /**
   * A full snapshot of the connections backup `id` holds for this FD: one
   * synchronous walk (slots move on removal), then batches, the first a
   * reset. A backup that holds nothing of ours still gets the (empty) reset:
   * what it held under an older scope goes.
   */
  private resync(id: number, s: Stream): void {
    const ch = this.channels(id);
    if (ch === null || ch.closed) return; // stays dirty: tried again at the next flush
    const t = this.table;
    const self = this.selfId;
    const per = this.o.batchRecords ?? 8192;
    const batches: number[][] = [];
    let cur: number[] = [];
    const pk = this.p;
    for (let slot = t.nextOccupied(0); slot >= 0; slot = t.nextOccupied(slot + 1)) {
      const m = t.owner(slot);
      if (m !== self) continue;
      const f = t.flags(slot);
      if ((f & (FlowFlag.REVERSE | FlowFlag.STAGED)) !== 0) continue; // sent with its forward entry
      if (this.backupOf(t.srcIp(slot), t.dstIp(slot), t.srcPort(slot), t.dstPort(slot), t.proto(slot)) !== id) continue;
      cur.push(slot);
      partnerKey(t, slot, pk);
      const q = t.find(pk.srcIp, pk.dstIp, pk.srcPort, pk.dstPort, pk.proto);
      if (q >= 0 && t.owner(q) === self) cur.push(q);
      if (cur.length >= per) {
        batches.push(cur);
        cur = [];
      }
    }
    if (cur.length > 0 || batches.length === 0) batches.push(cur);
    s.dirty = false;
    const now = this.scheduler.clock.now();
    let total = 0;
    for (let i = 0; i < batches.length; i++) {
      const b = batches[i]!;
      total += b.length;
      if (!this.sendBatch(id, s, Int32Array.from(b), new Uint32Array(0), i === 0, now)) {
        s.dirty = true;
        break;
      }
    }
    this.counters.inc(REPL.resyncs);
    this.counters.inc(REPL.resync_records, total);
  }
}
