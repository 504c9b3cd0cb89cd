/**
 * The inheritor's side of a migration: a MigrationChunk (a slice of the
 * departing FD's flow table in the flow-export layout) is imported with the
 * owner the chunk names (this FD, or, for a backup's standby copy, the
 * primary inheritor) and acknowledged. Malformed chunks are refused with a
 * stable code and change nothing.
 */
import { body, type Body, type MigrationChunk } from '../shared/control/messages.js';
import { importFlows } from '../distributor/flow-export.js';
import { isBatonError } from '../shared/errors.js';
import type { FlowTable } from '../distributor/flow-table.js';
import type { FlowHandler } from '../distributor/flow-handler.js';
import type { Counters } from '../shared/counters.js';
import { MIG } from './migration-client.js';

export function handleMigrationChunk(table: FlowTable, handler: FlowHandler, counters: Counters, c: MigrationChunk): Body {
  counters.inc(MIG.chunks_received);
  try {
    const imported = importFlows(table, c.records, 0, c.records.length, { owner: c.owner, nowMs: handler.nowMs });
    counters.inc(MIG.entries_imported, imported);
    return body('migrationAck', { migrationId: c.migrationId, seq: c.seq, imported, errorCode: '', errorMessage: '' });
  } catch (e) {
    counters.inc(MIG.chunks_rejected);
    return body('migrationAck', {
      migrationId: c.migrationId,
      seq: c.seq,
      imported: 0,
      errorCode: isBatonError(e) ? e.code : 'BATON_INTERNAL',
      errorMessage: (e as Error).message,
    });
  }
}
