/**
 * Engage support: send a joining FD every flow this FD owns, as acknowledged
 * ownership batches over the peer channel to it. Flows created after the
 * channel exists reach the joiner through the normal broadcast on the same
 * channel (in order), so the joiner misses none.
 */
import { BatonError, ErrorCode } from '../shared/errors.js';
import { body } from '../shared/control/messages.js';
import { parseAddress } from '../shared/io/address.js';
import { OWNERSHIP_RECORD_SIZE, OWNERSHIP_RECORD_VERSION, packOwnership } from '../shared/control/ownership.js';
import type { FlowTable } from '../distributor/flow-table.js';
import type { OwnershipMesh } from '../distributor/ownership-mesh.js';

const PER_BATCH = 8192;

export async function syncOwnershipTo(
  selfId: number,
  table: FlowTable,
  mesh: OwnershipMesh,
  joinerId: number,
  joinerControlAddr: string,
  timeoutMs: number,
): Promise<number> {
  const ch = await mesh.channelTo(joinerId, joinerControlAddr ? parseAddress(joinerControlAddr) : undefined);
  // Snapshot after the channel exists: anything created later is broadcast on it.
  mesh.flush();
  const pending: Promise<void>[] = [];
  let buf = new Uint8Array(PER_BATCH * OWNERSHIP_RECORD_SIZE);
  let n = 0;
  let total = 0;
  const send = (): void => {
    const records = buf.subarray(0, n * OWNERSHIP_RECORD_SIZE);
    const count = n;
    pending.push(
      ch.request(body('ownershipBatch', { owner: selfId, recordVersion: OWNERSHIP_RECORD_VERSION, count, records, remapFrom: 0, remapTo: 0 }), timeoutMs).then((r) => {
        if (r.body.case !== 'pong') throw new BatonError(ErrorCode.REMOTE_ERROR, `joiner ${joinerId} refused an ownership batch (${r.body.case})`);
      }),
    );
    total += count;
    buf = new Uint8Array(PER_BATCH * OWNERSHIP_RECORD_SIZE);
    n = 0;
  };
  for (let s = table.nextOccupied(0); s >= 0; s = table.nextOccupied(s + 1)) {
    if (table.owner(s) !== selfId) continue;
    packOwnership(buf, n * OWNERSHIP_RECORD_SIZE, table.srcIp(s), table.dstIp(s), table.srcPort(s), table.dstPort(s), table.proto(s), 0, selfId);
    if (++n === PER_BATCH) send();
  }
  if (n > 0) send();
  await Promise.all(pending);
  return total;
}
