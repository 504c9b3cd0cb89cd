/**
 * Every decision the flow handler makes has a named counter. Codec
 * rejections map to `drop_<reason>` by Reject code (see REJECT_NAMES), so a
 * new reject reason gets its counter without touching the handler.
 */
import { Counters, defineCounters } from '../shared/counters.js';
import { REJECT_NAMES } from '../shared/packet/reject.js';

const STATIC = [
  'rx_packets',
  'rx_bytes',
  'forwarded', // owned flow, action forward
  'rewritten', // owned flow, action rewrite (NAT)
  'redirected', // flow owned by a peer: sent to the owner
  'redirected_by_hint', // no entry yet, sent to the owner named by the encapsulation's owner hint
  'redirected_leaving', // this FD is disengaging: no entry, sent where the shrunken scope points
  'flows_created', // forward+reverse pair created (counts pairs)
  'flows_closing', // RST, or FIN both ways: linger started
  'flows_half_closed', // a FIN one way only: the flow carries on (the other side may still send)
  'flows_closed', // removed after the linger
  'flows_expired', // removed by idle expiry
  'flows_learned', // ownership learned from a peer
  'ownership_conflicts_kept', // a peer claimed a flow this FD also created; this FD (lower id) keeps it and says so again
  'ownership_conflicts_yielded', // a peer with a lower id claimed a flow this FD also created; it is the peer's now
  'flows_forgotten', // a peer's flow ended (its owner said so)
  'flows_remapped', // learned entries re-assigned in bulk (a peer disengaged to one inheritor)
  'drop_no_flow', // TCP non-SYN with no entry and no known owner
  'drop_table_full', // a new flow's packet: no room for its entries
  'drop_shed_new_flow', // a new flow's packet while the hash tier sheds load (EncapFlag.SHED)
  'learn_table_full', // a peer's ownership record refused: no room (not a frame)
  'drop_no_backend', // policy refused the new flow
  'linger_overflow', // closing ring full: flow left to idle expiry instead
  'flows_closing_imported', // a migrated-in entry was already closing: put on the linger queue here
  // Failure (docs/failure.md)
  'flows_recreated_stateless', // a FAILED owner's flow, no replica here: created again by the pure service policy (second line)
  'drop_owner_failed', // a FAILED owner's flow, no replica here, and the second line cannot re-create it
  'drop_fenced', // this FD was declared FAILED: it forwards nothing until it engages again
  'flows_fenced', // entries this FD owned when it learned it was declared FAILED (promoted elsewhere)
  'embryonic_evicted', // a SYN's connection that never completed its handshake, evicted for a newer SYN (flowTable.maxEmbryonic)
  // Ownership records received (peer batches)
  'ownership_deferred', // records that arrived while this FD's table was frozen (its own migration): queued
  'ownership_deferred_applied', // queued records applied when the freeze ended
  'ownership_deferred_dropped', // queued records discarded: this FD left (its table was purged), or the queue was full
  'ownership_nacks_sent', // acknowledged batches answered "not (yet) applied" (deferred / table full / malformed)
  // Acknowledged ownership batches this FD sent (migration broadcast, joiner sync, resync)
  'ownership_batches_acked', // the peer applied every record
  'ownership_batches_deferred', // the peer queued them (it is migrating; applied when its migration ends)
  'ownership_batches_refused', // the peer refused records (table full, malformed): reported to the caller
  'ownership_batch_failures', // no answer (timeout, connection closed)
  // Broadcast of this FD's own ownership changes
  'ownership_unsent_batches', // a peer had no open channel: it missed the batch (it is resynced on connect)
  'ownership_unsent_records',
  'ownership_resyncs', // full ownership syncs sent to a peer that (re)connected after missing batches
  'ownership_resync_records',
  'ownership_resync_failures',
  // Staged migration copies (the inheritor's side)
  'migration_entries_staged', // imported as redirects to the sender, inert until its commit
  'migration_entries_committed', // staged entries made the inheritor's (or the primary's, standby) on commit
  'migration_entries_rolled_back', // entries back to the sender on abort
  'migration_chunks_refused', // chunks or commits refused (this FD frozen or leaving, unknown migration)
  // Staged migration copies (the sender's side)
  'migration_commits', // peers that acknowledged a commit
  'migration_commit_failures',
  'migration_aborts', // peers told to roll a copy back
  'migration_abort_failures',
  // Dead backends (docs/disengage.md, "Dead backends"): a packet of a flow owned here rewritten to a
  // service node that is FAILED or DISENGAGED, or to a real server the health check says is down
  'flows_rehomed', // moved to the backend a new flow would get now (its reverse entry replaced, ownership broadcast)
  'flows_reset_dead_backend', // TCP: ended, and the packet answered with an RST to the client
  'flows_ended_dead_backend', // not answered with an RST (not TCP, or the packet was an RST itself): ended, the packet is drop_dead_backend
  'flows_rehome_failed', // 'rehome' found nowhere to go (no live backend, the new reverse key taken, table full): ended as with 'reset'
  'drop_dead_backend', // the packet of a flow flows_ended_dead_backend ended
] as const;

const REJECT_BASE = STATIC.length;
const names = [...STATIC, ...REJECT_NAMES.slice(1).map((n) => `drop_${n}`)] as const;

export const FD = defineCounters(names as unknown as typeof STATIC);

/** Counter id for a codec rejection (Reject code ≥ 1). */
export function rejectCounter(code: number): number {
  return REJECT_BASE + code - 1;
}

export function newFdCounters(): Counters {
  return new Counters({ names });
}
