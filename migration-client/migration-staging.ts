/**
 * The sender's side of a staged copy (docs/disengage.md "Staged copy"; the
 * receiver is migration-receiver.ts). The disengaging FD:
 *
 *   1. sends its chunks with `chunkFields` (staged, sender = itself): each
 *      inheritor stores them as redirects back to the sender, which keeps
 *      owning and serving them;
 *   2. before its switch, `commit()`s: every primary inheritor must
 *      acknowledge (the entries are its own from then on); a backup's
 *      standby copy is committed too, best effort;
 *   3. if anything fails before the switch, `abort()`: every peer that got
 *      chunks hands them back (also one that had committed), so the sender
 *      is again the only owner — and a peer that cannot be told (dead,
 *      stalled) never activated them;
 *   4. after the switch, `done()`: the peers forget their staging logs.
 *
 * Counted in the flow handler's counters (migration_commits,
 * migration_commit_failures, migration_aborts, migration_abort_failures).
 */
import { body } from '../shared/control/messages.js';
import { BatonError, ErrorCode, errorCodeFromWire } from '../shared/errors.js';
import { parseAddress } from '../shared/io/address.js';
import type { Counters } from '../shared/counters.js';
import type { OwnershipMesh } from '../distributor/ownership-mesh.js';
import { FD } from '../distributor/fd-counters.js';
import { MigrationOp } from './migration-receiver.js';

export class StagedCopies {
  /** Spread into every MigrationChunk of the copy. */
  readonly chunkFields: { staged: true; sender: number; op: number };
  /** Peers that were sent chunks (all of them are told on abort). */
  private readonly touched = new Set<number>();
  private seq = 0;

  constructor(
    private readonly mesh: OwnershipMesh,
    private readonly migrationId: number,
    private readonly selfId: number,
    /** The flow handler's counters (FD). */
    private readonly counters: Counters,
    /** Peer id -> control address, for peers the mesh has no channel to yet. */
    private readonly addrOf: ReadonlyMap<number, string>,
    private readonly timeoutMs: number,
  ) {
    this.chunkFields = { staged: true, sender: selfId, op: MigrationOp.COPY };
  }

  /** Call for every chunk sent, before sending it (a peer sent none has nothing staged and is not committed). */
  touch(peerId: number): void {
    this.touched.add(peerId);
  }

  /**
   * Commits the copy at every primary inheritor (all must acknowledge, else
   * it rejects: abort then) and, best effort, at the backups holding standby
   * copies. Peers that were sent no chunk are skipped. Resolves with the
   * entries each peer activated.
   */
  async commit(allPrimaries: readonly number[], allStandbys: readonly number[] = []): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    const primaries = allPrimaries.filter((id) => this.touched.has(id));
    const standbys = allStandbys.filter((id) => this.touched.has(id) && !primaries.includes(id));
    const prim = await Promise.allSettled(primaries.map((id) => this.op(id, MigrationOp.COMMIT)));
    const failed: string[] = [];
    prim.forEach((r, i) => {
      const id = primaries[i]!;
      if (r.status === 'fulfilled') {
        this.counters.inc(FD.migration_commits);
        out.set(id, r.value);
      } else {
        this.counters.inc(FD.migration_commit_failures);
        failed.push(`${id}: ${(r.reason as Error).message}`);
      }
    });
    if (failed.length > 0) throw new BatonError(ErrorCode.REMOTE_ERROR, `commit of migration ${this.migrationId} failed at ${failed.join('; ')}`, { migrationId: this.migrationId });
    const sb = await Promise.allSettled(standbys.map((id) => this.op(id, MigrationOp.COMMIT)));
    sb.forEach((r, i) => {
      if (r.status === 'fulfilled') {
        this.counters.inc(FD.migration_commits);
        out.set(standbys[i]!, r.value);
      } else this.counters.inc(FD.migration_commit_failures); // a standby copy only: its entries stay redirects to this FD
    });
    return out;
  }

  /** Tells every touched peer to hand the entries back. Never rejects; resolves with the peers that could not be told. */
  async abort(): Promise<number[]> {
    const ids = [...this.touched];
    const r = await Promise.allSettled(ids.map((id) => this.op(id, MigrationOp.ABORT)));
    const untold: number[] = [];
    r.forEach((x, i) => {
      if (x.status === 'fulfilled') this.counters.inc(FD.migration_aborts);
      else {
        this.counters.inc(FD.migration_abort_failures);
        untold.push(ids[i]!);
      }
    });
    return untold;
  }

  /** The switch is done: the peers may forget their staging logs (not waited for; a peer that misses it drops the log after STAGING_HOLD_MS). */
  done(): void {
    for (const id of this.touched) this.op(id, MigrationOp.DONE).catch(() => {});
  }

  private message(op: number) {
    return body('migrationChunk', {
      migrationId: this.migrationId,
      seq: ++this.seq,
      owner: 0,
      standby: false,
      count: 0,
      records: new Uint8Array(0),
      staged: true,
      sender: this.selfId,
      op,
    });
  }

  private async op(peerId: number, op: number): Promise<number> {
    const addr = this.addrOf.get(peerId);
    const ch = await this.mesh.channelTo(peerId, addr ? parseAddress(addr) : undefined);
    const r = await ch.request(this.message(op), this.timeoutMs);
    if (r.body.case !== 'migrationAck') throw new BatonError(ErrorCode.REMOTE_ERROR, `peer ${peerId} answered ${r.body.case}`, { peer: peerId });
    const a = r.body.value;
    if (a.errorCode) throw new BatonError(ErrorCode.REMOTE_ERROR, `peer ${peerId} refused: ${a.errorCode} ${a.errorMessage}`, { peer: peerId, remoteCode: errorCodeFromWire(a.errorCode) });
    return a.imported;
  }
}
