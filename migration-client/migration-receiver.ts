/**
 * The inheritor's side of a migration: a MigrationChunk (a slice of the
 * departing FD's flow table in the flow-export layout) is imported and
 * acknowledged with the number of entries stored. Malformed chunks are
 * refused with a stable code and change nothing; a chunk that fills the
 * table is answered BATON_TABLE_FULL with the number that were stored.
 *
 * Staged copies (`staged`, docs/disengage.md "Staged copy"): the entries
 * are stored as redirects to the sender, which still owns and serves them,
 * and logged by migration id. A COMMIT makes them the chunk's `owner`'s (this
 * FD, or the primary inheritor for a backup's standby copy); an ABORT, or a
 * copy that is never committed, leaves them redirects to the sender — so
 * whatever happens to the migration, every flow has one owner. An ABORT
 * after a COMMIT hands them back to the sender. DONE (the sender switched:
 * the migration is final) forgets the log; a log is also dropped
 * STAGING_HOLD_MS after its last message.
 *
 * Entries that arrive closing (FIN/RST seen at the sender) go on this FD's
 * linger queue when they become its own (at import, or at the commit), so
 * they are removed like local ones.
 *
 * An FD that is itself migrating (table frozen) or leaving takes no flows:
 * copies and commits are refused (BATON_PEER_MIGRATING).
 */
import { body, type Body, type MigrationChunk } from '../shared/control/messages.js';
import { importFlows, chunkKeys } from '../distributor/flow-export.js';
import { ErrorCode, errorMessage, isBatonError } from '../shared/errors.js';
import { FlowFlag, type FlowTable } from '../distributor/flow-table.js';
import type { FlowHandler } from '../distributor/flow-handler.js';
import { FD } from '../distributor/fd-counters.js';
import type { Counters } from '../shared/counters.js';
import { MIG } from './counters.js';

/** MigrationChunk.op */
export const MigrationOp = { COPY: 0, COMMIT: 1, ABORT: 2, DONE: 3 } as const;
export type MigrationOp = (typeof MigrationOp)[keyof typeof MigrationOp];

/** The codes (of ErrorCode, shared/errors.ts) of a MigrationAck that refuses, besides importFlows' own (BAD_EXPORT_FORMAT, TABLE_FULL) and BAD_ARGUMENT. */
export const MigrationRefusal = {
  /** This FD is migrating its own flows or leaving: it takes none. */
  MIGRATING: ErrorCode.PEER_MIGRATING,
  /** A commit for a migration this FD holds no staged copy of (never copied, expired, or aborted). */
  UNKNOWN_MIGRATION: ErrorCode.UNKNOWN_MIGRATION,
} as const;

/** A staging log is dropped this long (ms) after its last chunk or commit. */
export const STAGING_HOLD_MS = 120_000;

interface StagedChunk {
  /** The owner the commit writes (this FD, or the primary for a standby copy). */
  target: number;
  /** A standby copy (re-owned by key at the commit; the others by their STAGED flag). */
  standby: boolean;
  /** chunkKeys() of the records stored: 4 words each. */
  keys: Uint32Array;
}

interface Staging {
  sender: number;
  chunks: StagedChunk[];
  committed: boolean;
  activated: number;
  lastMs: number;
}

export class MigrationReceiver {
  private readonly staged = new Map<number, Staging>();

  constructor(
    readonly table: FlowTable,
    readonly handler: FlowHandler,
    /** The migration client's counters (MIG): chunks_received, entries_imported, chunks_rejected. */
    readonly counters: Counters,
  ) {}

  /** Migrations with a staging log here (tests, diagnostics). */
  get stagedMigrations(): number {
    return this.staged.size;
  }

  handle(c: MigrationChunk): Body {
    this.expire();
    switch (c.op ?? MigrationOp.COPY) {
      case MigrationOp.COPY:
        return this.copy(c);
      case MigrationOp.COMMIT:
        return this.commit(c);
      case MigrationOp.ABORT:
        return this.abort(c);
      case MigrationOp.DONE:
        this.staged.delete(c.migrationId);
        return ack(c, 0);
      default:
        return refuse(c, 0, ErrorCode.BAD_ARGUMENT, `unknown migration op ${String(c.op)}`);
    }
  }

  private copy(c: MigrationChunk): Body {
    const h = this.handler;
    this.counters.inc(MIG.chunks_received);
    if (h.frozen || h.leaving) return this.refused(c, MigrationRefusal.MIGRATING, `node ${h.selfId} is migrating its own flows or leaving: it takes none`);
    const staged = c.staged === true;
    let st: Staging | undefined;
    if (staged) {
      const sender = c.sender ?? 0;
      if (!(Number.isInteger(sender) && sender > 0 && sender < 0xffff && sender !== h.selfId)) {
        return this.refused(c, ErrorCode.BAD_ARGUMENT, `a staged chunk must name its sender (got ${String(sender)})`);
      }
      st = this.staged.get(c.migrationId);
      if (st && (st.sender !== sender || st.committed)) {
        return this.refused(c, ErrorCode.BAD_ARGUMENT, `migration ${c.migrationId}: ${st.committed ? 'already committed' : `staged from node ${st.sender}, not ${sender}`}`);
      }
    }
    let imported = 0;
    let err: unknown = null;
    try {
      // Staged: owned by the sender until the commit; the inheritor's own share
      // is flagged STAGED so the commit re-owns it in one table pass (a standby
      // copy is re-owned by key, each entry to its primary).
      const flags = staged && !c.standby ? FlowFlag.STAGED : 0;
      imported = importFlows(this.table, c.records, 0, c.records.length, { owner: staged ? c.sender : c.owner, nowMs: h.nowMs, flags });
    } catch (e) {
      err = e;
      // TABLE_FULL: the records before the failing one are in the table.
      if (isBatonError(e, ErrorCode.TABLE_FULL)) imported = Number(e.details?.['imported'] ?? 0);
    }
    if (imported > 0) {
      const all = chunkKeys(c.records);
      const keys = imported * 4 === all.length ? all : all.slice(0, imported * 4);
      if (staged) {
        if (!st) {
          st = { sender: c.sender!, chunks: [], committed: false, activated: 0, lastMs: h.nowMs };
          this.staged.set(c.migrationId, st);
        }
        st.chunks.push({ target: c.standby ? c.owner : h.selfId, standby: c.standby, keys });
        st.lastMs = h.nowMs;
        h.counters.inc(FD.migration_entries_staged, imported);
      } else if (c.owner === h.selfId) {
        this.adoptClosing(keys);
      }
    }
    this.counters.inc(MIG.entries_imported, imported);
    if (err !== null) {
      this.counters.inc(MIG.chunks_rejected);
      return refuse(c, imported, isBatonError(err) ? err.code : ErrorCode.INTERNAL, errorMessage(err));
    }
    return ack(c, imported);
  }

  /** Makes the staged entries of the migration their target's: returns how many changed. */
  private commit(c: MigrationChunk): Body {
    const h = this.handler;
    const st = this.staged.get(c.migrationId);
    if (!st) return this.refused(c, MigrationRefusal.UNKNOWN_MIGRATION, `no staged copy of migration ${c.migrationId} at node ${h.selfId} (never copied, aborted or expired)`);
    if (st.committed) return ack(c, st.activated); // a repeated commit
    if (h.frozen || h.leaving) {
      // Its own migration has already taken the snapshot of what it owns: flows
      // made its own now would be purged with nobody serving them.
      return this.refused(c, MigrationRefusal.MIGRATING, `node ${h.selfId} started migrating its own flows: it takes none`);
    }
    const t = this.table;
    // This FD's share: one pass over the table (owned by the sender, STAGED).
    let n = t.commitStaged(st.sender, h.selfId);
    // Standby copies: each entry to its primary, by key — those still the
    // sender's (a fallback copy to this FD re-imported its share as its own).
    for (const ch of st.chunks) {
      if (!ch.standby) continue;
      const k = ch.keys;
      for (let i = 0; i < k.length; i += 4) {
        const s = t.find(k[i]!, k[i + 1]!, k[i + 2]! >>> 16, k[i + 2]! & 0xffff, k[i + 3]! & 0xff);
        if (s >= 0 && t.owner(s) === st.sender) {
          t.setOwner(s, ch.target);
          n++;
        }
      }
    }
    // Closing entries that are now ours linger here (after every owner is set,
    // so a connection is queued once).
    for (const ch of st.chunks) if (ch.target === h.selfId) this.adoptClosing(ch.keys);
    st.committed = true;
    st.activated = n;
    st.lastMs = h.nowMs;
    h.counters.inc(FD.migration_entries_committed, n);
    return ack(c, n);
  }

  /** Hands the entries of the migration back to the sender (redirects to it); returns how many changed. */
  private abort(c: MigrationChunk): Body {
    const st = this.staged.get(c.migrationId);
    this.staged.delete(c.migrationId);
    if (!st) return ack(c, 0); // nothing staged here (never copied, or already aborted)
    const n = this.release(st, true);
    this.handler.counters.inc(FD.migration_entries_rolled_back, n);
    return ack(c, n);
  }

  /**
   * Every logged entry still the sender's loses its STAGED flag; with
   * `handBack`, also every one the copy made another's (this FD, a primary)
   * is the sender's again. Returns how many changed owner.
   */
  private release(st: Staging, handBack: boolean): number {
    const t = this.table;
    const targets = targetSet(st);
    const staged = FlowFlag.STAGED;
    let n = 0;
    for (const ch of st.chunks) {
      const k = ch.keys;
      for (let i = 0; i < k.length; i += 4) {
        const s = t.find(k[i]!, k[i + 1]!, k[i + 2]! >>> 16, k[i + 2]! & 0xffff, k[i + 3]! & 0xff);
        if (s < 0) continue;
        const o = t.owner(s);
        if (handBack && o !== st.sender && targets.has(o)) {
          t.setOwner(s, st.sender);
          n++;
        } else if (o !== st.sender) continue;
        const f = t.flags(s);
        if ((f & staged) !== 0) t.setFlags(s, f & ~staged);
      }
    }
    return n;
  }

  /** Entries among `keys` that were exported closing and are ours now go on the linger queue. */
  private adoptClosing(keys: Uint32Array): void {
    const t = this.table;
    const closing = FlowFlag.CLOSING << 8;
    for (let i = 0; i < keys.length; i += 4) {
      if ((keys[i + 3]! & closing) === 0) continue;
      const s = t.find(keys[i]!, keys[i + 1]!, keys[i + 2]! >>> 16, keys[i + 2]! & 0xffff, keys[i + 3]! & 0xff);
      if (s >= 0) this.handler.adoptClosing(s);
    }
  }

  private refused(c: MigrationChunk, code: ErrorCode, message: string): Body {
    this.counters.inc(MIG.chunks_rejected);
    this.handler.counters.inc(FD.migration_chunks_refused);
    return refuse(c, 0, code, message);
  }

  private expire(): void {
    const now = this.handler.nowMs;
    for (const [id, st] of this.staged) {
      if (now - st.lastMs <= STAGING_HOLD_MS) continue;
      // Never committed: the entries stay redirects to the sender, unflagged.
      if (!st.committed) this.release(st, false);
      this.staged.delete(id);
    }
  }
}

function targetSet(st: Staging): Set<number> {
  const s = new Set<number>();
  for (const ch of st.chunks) s.add(ch.target);
  return s;
}

function ack(c: MigrationChunk, imported: number): Body {
  return body('migrationAck', { migrationId: c.migrationId, seq: c.seq, imported, errorCode: '', errorMessage: '' });
}

function refuse(c: MigrationChunk, imported: number, code: ErrorCode, message: string): Body {
  return body('migrationAck', { migrationId: c.migrationId, seq: c.seq, imported, errorCode: code, errorMessage: message });
}

/** One receiver per flow handler (the FD node calls handleMigrationChunk with its table, handler and counters). */
const receivers = new WeakMap<FlowHandler, MigrationReceiver>();

/** The receiver of this FD (created on first use). */
export function migrationReceiver(table: FlowTable, handler: FlowHandler, counters: Counters): MigrationReceiver {
  let r = receivers.get(handler);
  if (!r) {
    r = new MigrationReceiver(table, handler, counters);
    receivers.set(handler, r);
  }
  return r;
}

export function handleMigrationChunk(table: FlowTable, handler: FlowHandler, counters: Counters, c: MigrationChunk): Body {
  return migrationReceiver(table, handler, counters).handle(c);
}
