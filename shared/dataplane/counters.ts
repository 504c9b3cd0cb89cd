/** Counters every data-plane node (hash tier, FD) keeps for its rings and sockets. */
import { Counters, defineCounters } from '../counters.js';

export const DP = defineCounters([
  'rx_datagrams',
  'rx_frames',
  'drop_bad_encap', // decodeEncap rejected the frame
  'drop_bad_encap_version', // a Baton option data version this build does not speak
  'drop_wrong_vni', // frame for another cluster
  'drop_hop_limit', // redirected too often: a forwarding loop
  'drop_unknown_owner', // redirect target is not a known peer
  'drop_no_route', // no lane for the destination (unknown client / service / empty scope)
  'enqueued', // RX ring
  'dequeued',
  'dropped_full', // RX ring full: datagrams (their frames are in drop_rx_ring_full)
  'drop_rx_ring_full', // frames in the datagrams the full RX ring refused
  'drop_at_close', // frames left in the RX ring or a TX lane when the node closed
  'tx_frames',
  'tx_datagrams',
  'tx_bytes',
  'tx_dropped_full',
  'tx_too_big',
  'tx_send_errors', // datagrams
  'tx_send_error_frames', // the frames those datagrams carried
  'queue_probes_reflected', // peers' echo probes sent back (shared/dataplane/queue-probe.ts): not frames
  'queue_probes_late', // answers to echo probes already given up or stopped: not frames
] as const);

export function newDataplaneCounters(): Counters {
  return new Counters(DP);
}
