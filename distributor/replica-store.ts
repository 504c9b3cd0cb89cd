/**
 * Continuous flow-state replication, the backup's side (docs/failure.md):
 * the replicas this FD holds of its peers' connections, apart from its own
 * flow table (they forward nothing until promoted), and their promotion when
 * the manager declares their owner FAILED.
 *
 * Replicas live in a FlowTable of their own (`replication.maxReplicas`
 * entries), each entry naming the FD that owns it. A ReplicaBatch is applied
 * only in its stream's order: `reset` drops everything held from its owner
 * and restarts the stream at seq 1; any other seq must be the next one, or
 * the batch is refused whole (BATON_REPLICA_GAP: the owner resyncs).
 * Batches from an FD the current scope does not list, or lists FAILED, are
 * refused (BATON_REPLICA_REFUSED). Every outcome is counted.
 *
 * Promotion (promote): the replicas of the dead owner are imported into the
 * flow table as this FD's own (a learned redirect entry for the same key is
 * overwritten), their ownership is broadcast at once, closing ones start
 * their linger here, and they leave the replica table. Not while the flow
 * table is frozen by a migration of this FD's own (slots are held): the
 * caller retries when it thaws.
 */
import { ErrorCode, isBatonError } from '../shared/errors.js';
import { body, type Body, type ReplicaBatch } from '../shared/control/messages.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { FlowTable, FlowFlag } from './flow-table.js';
import { importFlows, exportFlowSlots, exportedSize, chunkKeys } from './flow-export.js';
import { REPLICA_REMOVAL_SIZE } from './replication.js';
import type { FlowHandler, OwnershipSink } from './flow-handler.js';

export const REPLICA = defineCounters([
  'batches_received',
  'batches_applied',
  'batches_refused_sender', // from an FD not in the scope, or FAILED
  'batches_gap', // seq not the next of its stream: refused whole, the owner resyncs
  'batches_malformed', // a bad upsert chunk or removal length: refused whole
  'resets', // a stream restarted (everything held from that owner dropped first)
  'records_applied',
  'removals_applied',
  'records_refused_full', // no room in the replica table
  'replicas_dropped', // dropped by a reset, or because their owner left the scope
  'promotions', // dead owners whose replicas this FD took over
  'replicas_promoted', // entries made this FD's own
  'promotions_deferred', // the flow table was frozen: promoted at the thaw
  'promote_table_full', // replicas that found no room in the flow table
] as const);

export class ReplicaStore {
  readonly counters = new Counters(REPLICA);
  readonly table: FlowTable;
  private readonly nextSeq = new Map<number, number>();
  /** Which senders are accepted (the node sets it from each scope update). */
  acceptFrom: (owner: number) => boolean = () => true;

  constructor(maxReplicas: number, seed?: number) {
    this.table = new FlowTable(maxReplicas, { seed });
  }

  /** Replicas held, all owners. */
  get size(): number {
    return this.table.size;
  }

  /** Replicas held from `owner` (off the hot path: one walk). */
  heldFrom(owner: number): number {
    const t = this.table;
    let n = 0;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === owner) n++;
    return n;
  }

  /** Applies a batch; returns the answer (Pong, or an ErrorReply naming why nothing / not all was applied). */
  apply(b: ReplicaBatch, nowMs: number): Body {
    const c = this.counters;
    c.inc(REPLICA.batches_received);
    const owner = b.owner;
    if (!Number.isInteger(owner) || owner < 1 || owner > 0xfffe || !this.acceptFrom(owner)) {
      c.inc(REPLICA.batches_refused_sender);
      return nack(ErrorCode.REPLICA_REFUSED, `replicas from node ${owner} refused: not an FD of the current scope, or FAILED`);
    }
    if (b.removals.length % REPLICA_REMOVAL_SIZE !== 0) {
      c.inc(REPLICA.batches_malformed);
      return nack(ErrorCode.BAD_ARGUMENT, `replica removals are ${b.removals.length} bytes, not a multiple of ${REPLICA_REMOVAL_SIZE}`);
    }
    if (!b.reset && b.seq !== (this.nextSeq.get(owner) ?? -1)) {
      c.inc(REPLICA.batches_gap);
      return nack(ErrorCode.REPLICA_GAP, `replica batch seq ${b.seq} from node ${owner}, expected ${this.nextSeq.get(owner) ?? 'a reset'}`);
    }
    if (b.reset) {
      if (b.seq !== 1) {
        c.inc(REPLICA.batches_malformed);
        return nack(ErrorCode.BAD_ARGUMENT, `a reset replica batch has seq 1, got ${b.seq}`);
      }
      c.inc(REPLICA.resets);
      this.drop(owner);
    }
    this.nextSeq.set(owner, b.seq + 1);
    let applied = 0;
    if (b.upserts.length > 0) {
      try {
        applied = importFlows(this.table, b.upserts, 0, b.upserts.length, { owner, nowMs });
      } catch (e) {
        if (isBatonError(e) && e.code === ErrorCode.TABLE_FULL) {
          const d = e.details as { imported?: number; total?: number };
          applied = d.imported ?? 0;
          c.inc(REPLICA.records_applied, applied);
          c.inc(REPLICA.records_refused_full, (d.total ?? applied) - applied);
          this.removeAll(owner, b.removals);
          return nack(ErrorCode.TABLE_FULL, `replica table full: held ${applied} of ${d.total} records from node ${owner}`);
        }
        c.inc(REPLICA.batches_malformed);
        // The stream moved on by this seq; the owner's resync (after the nack) resets it.
        this.nextSeq.delete(owner);
        return nack(ErrorCode.BAD_EXPORT_FORMAT, `replica upserts from node ${owner}: ${(e as Error).message}`);
      }
    }
    c.inc(REPLICA.records_applied, applied);
    this.removeAll(owner, b.removals);
    c.inc(REPLICA.batches_applied);
    return body('pong', {});
  }

  private removeAll(owner: number, removals: Uint8Array): void {
    const n = removals.length / REPLICA_REMOVAL_SIZE;
    if (n === 0) return;
    const dv = new DataView(removals.buffer, removals.byteOffset, removals.length);
    const t = this.table;
    let done = 0;
    for (let i = 0; i < n; i++) {
      const o = i * REPLICA_REMOVAL_SIZE;
      const ports = dv.getUint32(o + 8, true);
      const s = t.find(dv.getUint32(o, true), dv.getUint32(o + 4, true), ports >>> 16, ports & 0xffff, dv.getUint32(o + 12, true));
      if (s >= 0 && t.owner(s) === owner) {
        t.removeAt(s);
        done++;
      }
    }
    this.counters.inc(REPLICA.removals_applied, done);
  }

  /** Drops every replica held from `owner` (and its stream); returns how many. */
  drop(owner: number): number {
    this.nextSeq.delete(owner);
    const keys = this.keysOf(owner);
    const t = this.table;
    for (let i = 0; i < keys.length; i += 4) {
      const p = keys[i + 2]!;
      t.remove(keys[i]!, keys[i + 1]!, p >>> 16, p & 0xffff, keys[i + 3]! & 0xff);
    }
    const n = keys.length / 4;
    this.counters.inc(REPLICA.replicas_dropped, n);
    return n;
  }

  /** Drops the replicas of every owner `keep` says no to; returns how many. */
  retain(keep: (owner: number) => boolean): number {
    const owners = new Set<number>();
    const t = this.table;
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) owners.add(t.owner(s));
    for (const o of this.nextSeq.keys()) owners.add(o);
    let n = 0;
    for (const o of owners) if (!keep(o)) n += this.drop(o);
    return n;
  }

  /** Key words (4 per entry: srcIp, dstIp, ports, meta) of the replicas held from `owner`. */
  private keysOf(owner: number): Uint32Array {
    const t = this.table;
    const out: number[] = [];
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) {
      if (t.owner(s) !== owner) continue;
      out.push(t.srcIp(s), t.dstIp(s), ((t.srcPort(s) << 16) | t.dstPort(s)) >>> 0, t.proto(s));
    }
    return Uint32Array.from(out);
  }

  /**
   * `owner` is dead: its replicas become this FD's flows (see the header).
   * Returns how many entries were promoted, or -1 when the flow table is
   * frozen (nothing done: call again once it thaws).
   */
  promote(owner: number, handler: FlowHandler, sink: OwnershipSink): number {
    if (handler.frozen) {
      this.counters.inc(REPLICA.promotions_deferred);
      return -1;
    }
    const t = this.table;
    const slots: number[] = [];
    for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) if (t.owner(s) === owner) slots.push(s);
    this.nextSeq.delete(owner);
    if (slots.length === 0) return 0;
    const chunk = new Uint8Array(exportedSize(slots.length));
    const n = exportFlowSlots(t, Int32Array.from(slots), chunk, 0, t.latestNowMs);
    const keys = chunkKeys(chunk, 0, exportedSize(n));
    const self = handler.selfId;
    const main = handler.table;
    let imported = n;
    try {
      importFlows(main, chunk, 0, exportedSize(n), { owner: self, nowMs: handler.nowMs });
    } catch (e) {
      if (!(isBatonError(e) && e.code === ErrorCode.TABLE_FULL)) throw e;
      imported = (e.details as { imported: number }).imported;
      this.counters.inc(REPLICA.promote_table_full, n - imported);
    }
    for (let i = 0; i < imported; i++) {
      const k = i * 4;
      const p = keys[k + 2]!;
      const proto = keys[k + 3]! & 0xff;
      const sp = p >>> 16;
      const dp = p & 0xffff;
      sink.flowCreated(keys[k]!, keys[k + 1]!, sp, dp, proto, self);
      if (((keys[k + 3]! >>> 8) & FlowFlag.CLOSING) !== 0) {
        const s = main.find(keys[k]!, keys[k + 1]!, sp, dp, proto);
        if (s >= 0) handler.adoptClosing(s);
      }
    }
    for (let i = 0; i < keys.length; i += 4) {
      const p = keys[i + 2]!;
      t.remove(keys[i]!, keys[i + 1]!, p >>> 16, p & 0xffff, keys[i + 3]! & 0xff);
    }
    this.counters.inc(REPLICA.promotions);
    this.counters.inc(REPLICA.replicas_promoted, imported);
    return imported;
  }
}

function nack(code: ErrorCode, message: string): Body {
  return body('errorReply', { code, message });
}

