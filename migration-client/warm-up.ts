/**
 * JIT warm-up of the migration path. A migration is rare, so in a running FD
 * the export, the control codec and the import are still unoptimised when
 * the first one comes (with temporary timing prints, the first 2048-record
 * chunk of a bench migration took 16-30 ms to be acknowledged), and the
 * inheritor's import is what bounds the whole copy. An FD therefore runs the same
 * functions — exportFlowSlots, a migrationChunk envelope encoded and decoded,
 * importFlows through its aligned and unaligned paths, and a staged copy's
 * key log and commit pass (chunkKeys, commitStaged) — over scratch tables
 * at start-up (a few milliseconds, once). Nothing here touches the FD's own
 * table or counters.
 */
import { FlowTable, NetAction, FlowFlag } from '../distributor/flow-table.js';
import { exportFlowSlots, exportedSize, importFlows, chunkKeys } from '../distributor/flow-export.js';
import { encodeEnvelope, decodeEnvelope } from '../shared/control/codec.js';
import { body, PROTOCOL_VERSION } from '../shared/control/messages.js';
import { mulberry32 } from '../shared/random.js';

const FLOWS = 2048;

/** Runs the migration path `rounds` times over scratch tables; returns the records imported (tests). */
export function warmUpMigrationPath(rounds = 12): number {
  const rnd = mulberry32(0x3a9);
  const src = new FlowTable(FLOWS, { seed: 1 });
  for (let i = 0; i < FLOWS; i++) {
    src.insert(rnd(), rnd(), rnd() & 0xffff, 80, 6, 1, NetAction.REWRITE, 0, rnd(), 8080, i & 1 ? FlowFlag.REVERSE : 0, i);
  }
  const slots = new Int32Array(FLOWS);
  const n = src.slotsOwnedBy(1, slots);
  const dst = new FlowTable(FLOWS, { seed: 2 });
  const chunk = new Uint8Array(exportedSize(n));
  let imported = 0;
  for (let r = 0; r < rounds; r++) {
    const count = exportFlowSlots(src, slots.subarray(0, n), chunk, 0, FLOWS);
    const frame = encodeEnvelope({
      protocolVersion: PROTOCOL_VERSION,
      seq: r + 1,
      replyTo: 0,
      wantsReply: true,
      body: body('migrationChunk', { migrationId: 0, seq: r + 1, owner: 2, standby: false, count, records: chunk }),
    });
    const d = decodeEnvelope(frame);
    if (!d.ok || d.env.body.case !== 'migrationChunk') continue;
    // Even rounds: the decoded view (wherever it falls in the frame); odd: the aligned chunk.
    const records = r & 1 ? chunk : d.env.body.value.records;
    dst.clear();
    // Odd rounds as a staged copy: owned by the sender, flagged, logged, committed.
    const staged = (r & 1) === 1;
    imported += importFlows(dst, records, 0, records.length, { owner: staged ? 1 : 2, nowMs: FLOWS, flags: staged ? FlowFlag.STAGED : 0 });
    if (staged && chunkKeys(records).length === count * 4) dst.commitStaged(1, 2);
  }
  return imported;
}
