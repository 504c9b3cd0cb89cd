/**
 * Flow-export chunks (distributor/flow-export.ts): readExportHeader,
 * importFlows and chunkKeys throw only BatonError BAD_EXPORT_FORMAT (a bad
 * chunk), BAD_ARGUMENT (a bad offset/length) or, importFlows, TABLE_FULL.
 * A rejected chunk leaves the table exactly as it was (importFlows
 * validates everything first); TABLE_FULL imported exactly the records it
 * says; an accepted chunk put every record in the table as it was sent
 * (checked field by field, the later of two equal keys winning), chunkKeys
 * names its keys, and exporting the table again gives chunks that import
 * into a fresh table as the same entries.
 */
import fc from 'fast-check';
import { FlowTable, SLOT_WORDS } from '../../../distributor/flow-table.js';
import { readExportHeader, importFlows, chunkKeys, exportFlows, FLOW_EXPORT_HEADER_SIZE, FLOW_RECORD_SIZE, type ImportOptions } from '../../../distributor/flow-export.js';
import { ErrorCode } from '../../../shared/errors.js';
import { ensure, hex, Tally, typedOnly, violated, type FuzzTarget } from '../check.js';
import { fuzzBytes } from '../mutate.js';
import { arbChunk, chunkFields, fixChunkChecksum, u16 } from '../frames.js';

export interface ChunkInput {
  bytes: Uint8Array;
  /** Bytes in front of the chunk: 0 (aligned) or 1..3 (unaligned: importFlows' copy path). */
  pre: number;
  post: number;
  /** len argument relative to the chunk's bytes (0 = exactly the chunk). */
  lenDelta: number;
  maxFlows: number;
  /** Entries already in the table (keys are random, so the chunk rarely hits them; the chunk's own keys do via `preKeys`). */
  preKeys: number;
  opts: ImportOptions;
}

const arbInput: fc.Arbitrary<ChunkInput> = fc.record({
  bytes: fuzzBytes(arbChunk, { fields: () => chunkFields(), fix: fixChunkChecksum, maxRandom: 120 }),
  pre: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
  post: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 40 }) }),
  lenDelta: fc.oneof({ weight: 10, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -40, max: 40 }) }),
  maxFlows: fc.oneof({ weight: 4, arbitrary: fc.constant(64) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 12 }) }),
  preKeys: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) }),
  opts: fc.record(
    {
      owner: fc.oneof({ weight: 6, arbitrary: u16 }, { weight: 1, arbitrary: fc.constantFrom(-1, 65536, 1.5, Number.NaN) }),
      nowMs: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 2 ** 40 }) }, { weight: 1, arbitrary: fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, -1) }),
      flags: fc.integer({ min: 0, max: 0xff }),
    },
    { requiredKeys: [] },
  ),
});

const tally = new Tally();

/** Which check refused a chunk (for the tally: every check reached). */
const REASONS: readonly [RegExp, string][] = [
  [/^truncated/, 'truncated'],
  [/^bad magic/, 'magic'],
  [/^unsupported flow export version/, 'version'],
  [/^record size/, 'record_size'],
  [/^unknown header flags/, 'flags'],
  [/^length mismatch/, 'length'],
  [/^checksum mismatch/, 'checksum'],
  [/unknown netAction/, 'net_action'],
  [/^owner must/, 'owner'],
  [/^nowMs must/, 'now'],
  [/^len /, 'len'],
];
function reasonOf(message: string): string {
  for (const [re, name] of REASONS) if (re.test(message)) return `:${name}`;
  return '';
}
const FORMAT = [ErrorCode.BAD_EXPORT_FORMAT, ErrorCode.BAD_ARGUMENT];

/** A table's full state (words and fingerprints). */
function state(t: FlowTable): string {
  return Buffer.from(t.words.buffer).toString('base64') + Buffer.from(t.hints).toString('base64') + `${t.size}`;
}

export const flowExportTarget: FuzzTarget<ChunkInput> = {
  name: 'flow-export/importFlows',
  covers: 'distributor/flow-export.ts readExportHeader, importFlows, chunkKeys (then exportFlows for the round trip)',
  arbitrary: arbInput,
  tally,
  mustReach: ['ok', 'BATON_TABLE_FULL', ...['truncated', 'magic', 'version', 'record_size', 'flags', 'length', 'checksum', 'net_action'].map((r) => `BATON_BAD_EXPORT_FORMAT:${r}`), ...['owner', 'now', 'len'].map((r) => `BATON_BAD_ARGUMENT:${r}`)],
  check(input) {
    const buf = new Uint8Array(input.pre + input.bytes.length + input.post);
    buf.set(input.bytes, input.pre);
    const off = input.pre;
    const len = input.bytes.length + input.lenDelta;
    const what = (): string => `chunk ${hex(input.bytes, 80)} at ${off}, len ${len}`;
    const table = new FlowTable(input.maxFlows, { seed: 7 });
    for (let i = 0; i < input.preKeys; i++) table.insert(0x0a000001 + i, 0x0a000002, 1000 + i, 80, 6, 1, 0, 0, 0, 0, 0, 5);

    const hdr = typedOnly('readExportHeader', FORMAT, () => readExportHeader(buf, off, len));
    const keys = typedOnly('chunkKeys', FORMAT, () => chunkKeys(buf, off, len));
    const before = state(table);
    const imp = typedOnly('importFlows', [...FORMAT, ErrorCode.TABLE_FULL], () => importFlows(table, buf, off, len, input.opts));
    tally.add(imp.ok ? 'ok' : `${imp.error.code}${reasonOf(imp.error.message)}`);
    if (!imp.ok && imp.error.code !== ErrorCode.TABLE_FULL) {
      ensure(state(table) === before, () => `${what()}: ${imp.error.code} (${imp.error.message}) changed the table`);
      return;
    }
    // Accepted far enough to insert: the header, the length and chunkKeys agree.
    ensure(hdr.ok && keys.ok, () => `${what()}: imported, but readExportHeader/chunkKeys refused it`);
    const h = hdr.value;
    ensure(h.totalBytes === len && len === FLOW_EXPORT_HEADER_SIZE + h.recordCount * FLOW_RECORD_SIZE, () => `${what()}: imported a chunk of ${len} bytes whose header says ${h.totalBytes}`);
    ensure(keys.value.length === h.recordCount * 4, () => `${what()}: chunkKeys gave ${keys.value.length / 4} keys for ${h.recordCount} records`);
    const owner = input.opts.owner;
    const nowMs = input.opts.nowMs ?? table.latestNowMs;
    const dv = new DataView(buf.buffer, buf.byteOffset + off, len);
    const word = (r: number, w: number): number => dv.getUint32(FLOW_EXPORT_HEADER_SIZE + r * FLOW_RECORD_SIZE + w * 4, true);
    let stored = h.recordCount;
    if (!imp.ok) {
      const d = imp.error.details as { imported?: unknown; total?: unknown };
      ensure(typeof d.imported === 'number' && d.imported < h.recordCount && d.total === h.recordCount && table.size === table.maxFlows, () => `${what()}: TABLE_FULL with details ${JSON.stringify(d)}, size ${table.size}`);
      stored = d.imported;
    } else ensure(imp.value === h.recordCount, () => `${what()}: importFlows returned ${imp.value} for ${h.recordCount} records`);
    // Every stored record is in the table as sent (the last of equal keys wins).
    const last = new Map<string, number>();
    for (let r = 0; r < stored; r++) last.set(`${word(r, 0)},${word(r, 1)},${word(r, 2)},${word(r, 3) & 0xff}`, r);
    for (const r of last.values()) {
      const k = keys.value;
      ensure(k[r * 4] === word(r, 0) && k[r * 4 + 1] === word(r, 1) && k[r * 4 + 2] === word(r, 2) && k[r * 4 + 3] === word(r, 3), () => `${what()}: chunkKeys record ${r} differs`);
      const src = word(r, 0);
      const ports = word(r, 2);
      const meta = word(r, 3);
      const s = table.find(src, word(r, 1), ports >>> 16, ports & 0xffff, meta & 0xff);
      ensure(s >= 0, () => `${what()}: record ${r} not in the table after import`);
      const act = word(r, 4);
      const wantOwner = owner !== undefined ? owner : meta >>> 16;
      const wantFlags = ((meta >>> 8) & 0xff) | (input.opts.flags ?? 0);
      ensure(table.owner(s) === wantOwner && table.flags(s) === wantFlags, () => `${what()}: record ${r} owner ${table.owner(s)} flags ${table.flags(s)}, want ${wantOwner} ${wantFlags}`);
      ensure(table.netAction(s) === (act & 0xf) && (act & 0xf) <= 2 && table.appAction(s) === ((act >>> 4) & 0xfff) && table.rewritePort(s) === act >>> 16, () => `${what()}: record ${r} actions`);
      ensure(table.rewriteIp(s) === word(r, 5) && table.packets(s) === word(r, 6) && table.bytes(s) === word(r, 7), () => `${what()}: record ${r} rewrite ip / counters`);
      ensure(table.lastSeen(s) === ((nowMs | 0) - word(r, 8)) >>> 0, () => `${what()}: record ${r} lastSeen ${table.lastSeen(s)}, idle ${word(r, 8)} at ${nowMs}`);
    }
    if (!imp.ok) return;
    // Round trip: export the table, import into a fresh one: the same entries.
    const copy = new FlowTable(Math.max(table.size, 1), { seed: 99 });
    const out = new Uint8Array(FLOW_EXPORT_HEADER_SIZE + 5 * FLOW_RECORD_SIZE);
    let slot = 0;
    const exportAt = table.latestNowMs;
    while (slot >= 0) {
      const e = exportFlows(table, slot, 5, out, 0, exportAt);
      if (e.records > 0) {
        const n = typedOnly('importFlows (round trip)', [], () => importFlows(copy, out, 0, e.bytes, { nowMs: exportAt }));
        ensure(n.ok && n.value === e.records, 'round trip import count');
      }
      slot = e.nextSlot;
    }
    ensure(copy.size === table.size, () => `${what()}: round trip has ${copy.size} of ${table.size} entries`);
    for (let s = table.nextOccupied(0); s >= 0; s = table.nextOccupied(s + 1)) {
      const c = copy.find(table.srcIp(s), table.dstIp(s), table.srcPort(s), table.dstPort(s), table.proto(s));
      ensure(c >= 0, () => `${what()}: entry at slot ${s} lost in the round trip`);
      for (let w = 0; w < SLOT_WORDS - 1; w++) {
        if (copy.words[c * SLOT_WORDS + w] !== table.words[s * SLOT_WORDS + w]) violated(`${what()}: round trip changed word ${w} of slot ${s}`);
      }
      const idle = (exportAt - table.lastSeen(s)) >>> 0;
      ensure(idle > 0x7fffffff ? copy.lastSeen(c) === exportAt >>> 0 : copy.lastSeen(c) === table.lastSeen(s), () => `${what()}: round trip lastSeen ${copy.lastSeen(c)} vs ${table.lastSeen(s)}`);
    }
  },
};
