/**
 * Engage support: send a joining FD every flow this FD owns, as acknowledged
 * ownership batches over the peer channel to it (OwnershipMesh.syncPeer).
 * Flows created after the channel exists reach the joiner through the normal
 * broadcast on the same channel (in order), so the joiner misses none. The
 * same full sync resynchronises a peer whose channel dropped (the mesh starts
 * it by itself on reconnect); one already running on the channel is shared.
 *
 * Resolves with the records the joiner acknowledged (applied, or queued by a
 * joiner that is migrating); rejects when it refused some (table full) or did
 * not answer.
 */
import { parseAddress } from '../shared/io/address.js';
import type { FlowTable } from '../distributor/flow-table.js';
import type { OwnershipMesh } from '../distributor/ownership-mesh.js';

export async function syncOwnershipTo(
  _selfId: number,
  _table: FlowTable,
  mesh: OwnershipMesh,
  joinerId: number,
  joinerControlAddr: string,
  timeoutMs: number,
): Promise<number> {
  return mesh.syncPeer(joinerId, joinerControlAddr ? parseAddress(joinerControlAddr) : undefined, timeoutMs);
}
