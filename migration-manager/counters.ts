/**
 * The migration manager's counters (baton_manager_total{counter=…}). Their
 * own module so that the manager and the operations it runs both import them
 * downward (operations.ts importing them from manager.ts, which imports
 * operations.ts, was an import cycle).
 */
import { defineCounters } from '../shared/counters.js';

export const MGR = defineCounters([
  'registrations',
  'registrations_refused',
  'heartbeats',
  'heartbeats_unknown',
  'members_failed',
  'members_failed_data_plane', // heartbeats went on, but the data plane stopped answering echo probes for control.dataDeadAfterMs
  'scope_updates',
  'scope_rebalances',
  'status_requests',
  'unexpected_messages',
  'disengages_started',
  'disengages_completed',
  'disengages_failed',
  'disengages_resumed',
  'requests_forwarded',
  'commit_retries',
  'engages',
  'engages_failed',
  'operations_queued', // an engage waited for disengages to end, or a disengage for an engage
  'operations_queue_timeouts',
  'disengages_resumed_unrecorded', // resumed from a record without the operator's options (least-flows)
  'disengage_aborts_sent', // the hand-over did not answer in time: the FD was asked to abort
  'disengages_left_unresolved', // no answer to the abort either: left DISENGAGING in scope
  'scope_acks', // tiers and members that acknowledged a scope without a disengaging FD
  'scope_acks_skipped', // members not connected / FAILED, tiers not running: not waited for
  'scope_ack_failures', // connected members and running tiers that did not acknowledge in time
  'scope_ack_requests', // acknowledgements asked of this tier by the leader
  'scope_ack_request_timeouts', // ... that this tier could not give in time (its store watch lagged)
  'tier_changes', // the set of live hash tiers changed (the leader publishes it as a new scope version)
  'service_drains_started', // a service node went DISENGAGING: FDs stop choosing it for new flows, keep its route
  'service_drains_completed', // ... and DISENGAGED (its route removed everywhere, acknowledged)
  'service_drains_quiet', // ... ended because nothing reached it for serviceQuietMs
  'service_drain_timeouts', // ... ended at serviceDrainTimeoutMs, not quiet (DISENGAGED anyway)
  'service_drains_failed', // the service did not answer the drain (not connected, closed): left DISENGAGING
  'service_drains_joined', // a repeated request (the node stopping, a retry) joined the drain in progress
  'service_drains_resumed', // a DISENGAGING service node no drain drove (a manager that took over) was drained again
  'service_drains_refused', // refused: the last ACTIVE service node (not stopping), not ACTIVE/DISENGAGING
  'service_drains_already_done', // a stopping service node that was already DISENGAGED: answered ok at once
  'fd_stops_already_disengaged', // a stopping FD (nodes/fd-stop.ts) that was already DISENGAGED: answered ok at once
  'service_drain_ack_failures', // members that did not acknowledge the scope without the drained node's route
  'service_engages', // a DISENGAGED service node taken back (engage): ACTIVE again
] as const);
