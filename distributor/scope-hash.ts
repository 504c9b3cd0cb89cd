/**
 * The hash the hash tier picks an FD by, computed at an FD for a flow key:
 * the 5-tuple, or with `hash.key client` the client's end of the flow only
 * (hash-tier/forwarding-engine.ts clientKeyHash): a packet to `clientKeyVip`
 * is a client's (its source is the client), any other a reply (its
 * destination is). A leaving FD redirects by it, and replication picks a
 * connection's backup FD by it (distributor/replication.ts). No allocation.
 */
import { hashFiveTuple, hashFiveTupleSymmetric } from '../shared/hash/xxh32.js';

/** `clientKeyVip` < 0: hash the 5-tuple (`symmetric`: both directions alike, config hash.symmetric). */
export function scopeHash(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, seed: number, clientKeyVip: number, symmetric = false): number {
  if (clientKeyVip < 0) return symmetric ? hashFiveTupleSymmetric(srcIp, dstIp, srcPort, dstPort, proto, seed) : hashFiveTuple(srcIp, dstIp, srcPort, dstPort, proto, seed);
  return dstIp >>> 0 === clientKeyVip ? hashFiveTuple(srcIp, 0, srcPort, 0, proto, seed) : hashFiveTuple(dstIp, 0, dstPort, 0, proto, seed);
}
