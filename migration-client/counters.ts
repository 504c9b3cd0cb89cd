/**
 * The migration client's counters (baton_fd_migration_total{counter=…}). Their
 * own module so that the client and the chunk receiver both import them
 * downward (the receiver importing them from migration-client.ts, which
 * reaches the receiver through migration-staging.ts, was an import cycle).
 */
import { defineCounters } from '../shared/counters.js';

export const MIG = defineCounters([
  'disengages_started',
  'disengages_completed',
  'disengages_aborted',
  'disengages_rejoined', // a repeated request (e.g. from a manager that took over) answered with the running or finished migration
  'fallbacks_to_backup',
  'chunks_sent',
  'chunks_acked',
  'reassigned_from_leaving', // inheritors that refused because they were leaving too: their shares went to another inheritor
  'chunks_refused', // chunks an inheritor refused: an error code, or fewer entries stored than sent
  'chunks_short', // of those, acknowledged without an error but storing fewer entries than sent
  'entries_copied',
  'entries_switched',
  'broadcast_records',
  'broadcast_peers_acked', // peers that applied every record of the ownership broadcast
  'broadcast_peers_deferred', // peers that queued it (migrating themselves: applied when that ends; not a failure)
  'broadcast_peers_refused', // peers that refused records (table full, queue full, bad batch): also counted a failure
  'broadcast_peer_failures', // peers that did not apply the broadcast (refused, no answer, unreachable)
  'entries_purged',
  'chunks_received',
  'entries_imported',
  'chunks_rejected',
  'handovers', // hand-overs that reached the switch (the flows belong to the inheritors)
  'finishes', // FINISH steps that ended purged, drained and quiet
  'aborts_accepted', // ABORT before the switch: the hand-over stops, this FD keeps its flows
  'aborts_after_switch', // ABORT too late: answered "handed over"
  'finish_without_handover', // a FINISH with no hand-over to finish (refused)
  'drain_timeouts',
  'quiet_timeouts',
  'quiet_restarts', // a frame arrived while waiting to be quiet: the quiet interval started again
] as const);
