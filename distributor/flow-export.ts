/**
 * The flow-table wire layout that migration ships (seed 003: "flow table of
 * FD A may be copied to myInheritor's flow table"). Versions 1 and 2 are
 * FROZEN: docs/flow-export-format.md is the byte-by-byte contract. Any change
 * is a new version; readers reject versions they do not know. Writers emit
 * version 2; readers accept 1 and 2 (version 1 differs only in its checksum).
 *
 * A chunk = 20-byte header + recordCount records of 36 bytes, all integers
 * little-endian. Records carry the key, owner, actions, rewrite target,
 * flags, counters, and the idle time (ms since last seen) at export time —
 * not the exporter's clock reading, so it means the same on an importer whose
 * clock has another origin. The header carries a checksum: version 2 a
 * CRC-32 (zlib's, native) of the header's first 16 bytes and the records;
 * version 1 a word-wise multiply-xor hash computed in JS (one dependent
 * multiply per word).
 *
 * Speed: on little-endian hosts with a 4-byte-aligned destination the records
 * are written and read through one Uint32Array view (the record layout is the
 * table's slot layout with the last word replaced), otherwise via DataView.
 * No per-record objects either way.
 *
 * Import validates the whole chunk (header, length, checksum, every record)
 * before inserting anything, so garbage input never changes the table.
 */
import { crc32 } from 'node:zlib';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { FlowTable, SLOT_WORDS, W_ACT, W_SEEN, NetAction } from './flow-table.js';

/** The version writers emit. */
export const FLOW_EXPORT_VERSION = 2;
/** Versions importFlows / readExportHeader accept. */
export const FLOW_EXPORT_VERSIONS_READ: readonly number[] = [1, 2];
/** "BFLW" read as a little-endian uint32 (bytes 0x42 0x46 0x4C 0x57). */
export const FLOW_EXPORT_MAGIC = 0x574c4642;
export const FLOW_EXPORT_HEADER_SIZE = 20;
export const FLOW_RECORD_SIZE = 36;
const RECORD_WORDS = FLOW_RECORD_SIZE / 4;
/**
 * Idle = (now - lastSeen) mod 2^32 read as a signed difference: values above
 * this mean lastSeen is AFTER the export clock (clock passed in is older than
 * the last touch), and are written as 0. (A flow idle for 24.8+ days would be
 * misread the same way; idle expiry removes such flows long before.)
 */
const MAX_IDLE_MS = 0x7fffffff;
const MAX_NET_ACTION = NetAction.REDIRECT;

const HOST_LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** importFlows' aligned copy of an unaligned chunk; grows to the largest chunk seen. */
let alignedScratch = new Uint8Array(0);

export interface ExportResult {
  /** Records written in this chunk. */
  records: number;
  /** Slot to pass as fromSlot for the next chunk; -1 when the table has been fully walked. */
  nextSlot: number;
  /** Bytes written (header + records). */
  bytes: number;
}

export interface ExportHeader {
  version: number;
  recordSize: number;
  recordCount: number;
  flags: number;
  checksum: number;
  /** Header + records: the chunk's full length in bytes. */
  totalBytes: number;
}

export interface ImportOptions {
  /** Write this owner (uint16) into every imported entry instead of the exported one. */
  owner?: number;
  /** The importer's clock (ms): lastSeen = nowMs - idle. Default: table.latestNowMs. */
  nowMs?: number;
  /** FlowFlag bits added to every imported entry (STAGED for a staged migration copy). */
  flags?: number;
}

/** Bytes of a chunk holding `records` records. */
export function exportedSize(records: number): number {
  if (!Number.isInteger(records) || records < 0) throw badArg(`records must be a non-negative integer, got ${records}`, 'records', records);
  return FLOW_EXPORT_HEADER_SIZE + records * FLOW_RECORD_SIZE;
}

// ---------------------------------------------------------------- checksum

/**
 * Version 2 checksum: CRC-32 (IEEE 802.3 polynomial, as zlib computes it) of
 * the header's first 16 bytes (magic, version, record size, count, flags)
 * followed by the record bytes.
 */
function crcV2(chunk: Uint8Array, off: number, recordBytes: number): number {
  const c = crc32(chunk.subarray(off, off + 16));
  return crc32(chunk.subarray(off + FLOW_EXPORT_HEADER_SIZE, off + FLOW_EXPORT_HEADER_SIZE + recordBytes), c) >>> 0;
}

/**
 * Version 1 checksum (read only; not cryptographic). h = 0x811C9DC5; for
 * each 32-bit LE word w of the record area, then once more with w =
 * recordCount: h = imul(h ^ w, 0x9E3779B1); h ^= h >>> 15. Finally
 * h = imul(h ^ (h >>> 16), 0x85EBCA6B); h ^= h >>> 13 (as uint32).
 */
function checksumV1(u32: Uint32Array, words: number, count: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words; i++) {
    h = Math.imul(h ^ u32[i]!, 0x9e3779b1);
    h ^= h >>> 15;
  }
  h = Math.imul(h ^ count, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

// ---------------------------------------------------------------- export

/**
 * Writes a header plus the records of occupied slots from `fromSlot` on (at
 * most `maxRecords`, and no more than fit in `out` after `outOff`). Call again
 * with the returned nextSlot until it is -1. `nowMs` (default: the table's
 * latest time) is the clock the idle times are computed against.
 *
 * Chunks describe the table as it is when each is written: if the table
 * changes between chunks (table.mutations moves), entries may be skipped or
 * repeated because removals shift entries between slots. Migration should
 * walk a table that no longer takes new flows, or re-walk when mutations moved.
 */
export function exportFlows(table: FlowTable, fromSlot: number, maxRecords: number, out: Uint8Array, outOff = 0, nowMs?: number): ExportResult {
  if (!Number.isInteger(fromSlot) || fromSlot < 0) throw badArg(`fromSlot must be a non-negative integer, got ${fromSlot}`, 'fromSlot', fromSlot);
  if (!(Number.isInteger(maxRecords) || maxRecords === Number.POSITIVE_INFINITY) || maxRecords < 0) {
    throw badArg(`maxRecords must be a non-negative integer, got ${maxRecords}`, 'maxRecords', maxRecords);
  }
  checkRange(out, outOff, out.length - outOff, 'outOff');
  const avail = out.length - outOff;
  if (avail < FLOW_EXPORT_HEADER_SIZE) {
    throw badArg(`out has ${avail} bytes after outOff ${outOff}, a chunk header needs ${FLOW_EXPORT_HEADER_SIZE}`, 'out', out.length);
  }
  const fit = Math.floor((avail - FLOW_EXPORT_HEADER_SIZE) / FLOW_RECORD_SIZE);
  const limit = Math.min(maxRecords, fit);
  const H = table.hints;
  const cap = table.slots;
  let s = fromSlot;
  while (s < cap && H[s] === 0) s++;
  if (s >= cap) s = -1;
  if (limit === 0 && maxRecords > 0 && s >= 0) {
    throw badArg(`out has room for no record: ${avail} bytes after outOff ${outOff}, one record needs ${exportedSize(1)}`, 'out', out.length);
  }
  // Collect the slots of this chunk, then write them as exportFlowSlots does.
  const picked = new Int32Array(s < 0 ? 0 : Math.min(limit, table.size));
  let k = 0;
  while (s >= 0 && k < picked.length) {
    picked[k++] = s;
    s++;
    while (s < cap && H[s] === 0) s++;
    if (s >= cap) s = -1;
  }
  const n = writeChunk(table, picked, k, out, outOff, (nowMs ?? table.latestNowMs) >>> 0);
  return { records: n, nextSlot: s, bytes: FLOW_EXPORT_HEADER_SIZE + n * FLOW_RECORD_SIZE };
}

/**
 * Writes one chunk holding the entries at the given slots (in that order),
 * skipping slots that are empty. Returns the number of records written; the
 * chunk is exportedSize(returned) bytes. For migration that sends a chosen
 * subset (e.g. the flows assigned to one inheritor).
 */
export function exportFlowSlots(table: FlowTable, slots: ArrayLike<number>, out: Uint8Array, outOff = 0, nowMs?: number): number {
  checkRange(out, outOff, out.length - outOff, 'outOff');
  const need = exportedSize(slots.length);
  if (out.length - outOff < need) {
    throw badArg(`out has ${out.length - outOff} bytes after outOff ${outOff}, ${slots.length} records need ${need}`, 'out', out.length);
  }
  // Anything but an integer slot is skipped like an empty one (-1).
  const list = slots instanceof Int32Array ? slots : Int32Array.from({ length: slots.length }, (_, i) => (Number.isInteger(slots[i]) ? slots[i]! : -1));
  return writeChunk(table, list, list.length, out, outOff, (nowMs ?? table.latestNowMs) >>> 0);
}

/**
 * Writes the header and the records of slots[0..count) (empty or
 * out-of-range slots skipped) at out[outOff..]; returns the records written.
 * The caller has checked that `count` records fit.
 */
function writeChunk(table: FlowTable, slots: Int32Array, count: number, out: Uint8Array, outOff: number, now: number): number {
  const W = table.words;
  const H = table.hints;
  const cap = table.slots;
  // Module-local copies of imported constants: an imported binding read in a
  // loop is re-loaded and hole-checked on every iteration
  // (docs/decisions/0002-v8-field-typing-and-local-constants.md).
  const stride = SLOT_WORDS;
  const seenWord = W_SEEN;
  const base = out.byteOffset + outOff + FLOW_EXPORT_HEADER_SIZE;
  let n = 0;
  if (HOST_LE && (base & 3) === 0) {
    // Fast path: the record layout is the slot layout, so copy words (int32
    // views: no uint32 >= 2^31 ever needs a HeapNumber).
    const src = new Int32Array(W.buffer, W.byteOffset, W.length);
    const dst = new Int32Array(out.buffer, base, count * RECORD_WORDS);
    const nowI = now | 0;
    let d = 0;
    for (let i = 0; i < count; i++) {
      const s = slots[i]!;
      if (!(s >= 0 && s < cap) || H[s] === 0) continue;
      const o = s * stride;
      for (let w = 0; w < seenWord; w++) dst[d + w] = src[o + w]!;
      const idle = (nowI - src[o + seenWord]!) | 0;
      dst[d + seenWord] = idle < 0 ? 0 : idle; // negative = lastSeen after `now` (or an age >= 2^31)
      d += RECORD_WORDS;
      n++;
    }
  } else {
    const dv = new DataView(out.buffer, base, count * FLOW_RECORD_SIZE);
    let b = 0;
    for (let i = 0; i < count; i++) {
      const s = slots[i]!;
      if (!(s >= 0 && s < cap) || H[s] === 0) continue;
      writeRecordDv(dv, b, W, s * stride, now);
      b += FLOW_RECORD_SIZE;
      n++;
    }
  }
  writeHeader(out, outOff, n);
  new DataView(out.buffer, out.byteOffset + outOff + 16, 4).setUint32(0, crcV2(out, outOff, n * FLOW_RECORD_SIZE), true);
  return n;
}

/** Header with the checksum field 0 (writeChunk fills it in last). */
function writeHeader(out: Uint8Array, off: number, count: number): void {
  const dv = new DataView(out.buffer, out.byteOffset + off, FLOW_EXPORT_HEADER_SIZE);
  dv.setUint32(0, FLOW_EXPORT_MAGIC, true);
  dv.setUint16(4, FLOW_EXPORT_VERSION, true);
  dv.setUint16(6, FLOW_RECORD_SIZE, true);
  dv.setUint32(8, count, true);
  dv.setUint32(12, 0, true); // flags: none defined
  dv.setUint32(16, 0, true);
}

// ---------------------------------------------------------------- import

/**
 * Reads and checks a chunk header at buf[off..off+len): magic, version,
 * record size, flags. Does not need the records to be present (use
 * totalBytes for framing). Throws BAD_EXPORT_FORMAT.
 */
export function readExportHeader(buf: Uint8Array, off = 0, len = buf.length - off): ExportHeader {
  checkRange(buf, off, len, 'off');
  if (len < FLOW_EXPORT_HEADER_SIZE) throw badFormat(`truncated: ${len} bytes, a chunk header needs ${FLOW_EXPORT_HEADER_SIZE}`);
  const dv = new DataView(buf.buffer, buf.byteOffset + off, FLOW_EXPORT_HEADER_SIZE);
  const magic = dv.getUint32(0, true);
  if (magic !== FLOW_EXPORT_MAGIC) throw badFormat(`bad magic 0x${magic.toString(16).padStart(8, '0')} (expected "BFLW")`);
  const version = dv.getUint16(4, true);
  if (!FLOW_EXPORT_VERSIONS_READ.includes(version)) throw badFormat(`unsupported flow export version ${version}; this reader understands versions ${FLOW_EXPORT_VERSIONS_READ.join(' and ')}`);
  const recordSize = dv.getUint16(6, true);
  if (recordSize !== FLOW_RECORD_SIZE) throw badFormat(`record size ${recordSize}; version ${version} records are ${FLOW_RECORD_SIZE} bytes`);
  const recordCount = dv.getUint32(8, true);
  const flags = dv.getUint32(12, true);
  if (flags !== 0) throw badFormat(`unknown header flags 0x${flags.toString(16)}; version ${version} defines none`);
  const checksum = dv.getUint32(16, true);
  return { version, recordSize, recordCount, flags, checksum, totalBytes: FLOW_EXPORT_HEADER_SIZE + recordCount * FLOW_RECORD_SIZE };
}

/**
 * Validates the chunk at buf[off..off+len) completely, then inserts every
 * record (an existing key is overwritten, counters included) and returns the
 * number imported. lastSeen = nowMs - idle (modulo 2^32).
 *
 * Errors: BAD_EXPORT_FORMAT (bad header, len !== header + records, checksum
 * mismatch, a record with an unknown netAction) — table untouched;
 * BAD_ARGUMENT for bad off/len/options; TABLE_FULL when the table fills:
 * the records before the failing one ARE imported, and the error's details
 * carry { imported, total } so the caller can report or retry the rest.
 */
export function importFlows(table: FlowTable, buf: Uint8Array, off: number, len: number, opts?: ImportOptions): number {
  const hdr = readExportHeader(buf, off, len);
  if (len !== hdr.totalBytes) {
    throw badFormat(`length mismatch: header says ${hdr.recordCount} records (${hdr.totalBytes} bytes), chunk is ${len} bytes`);
  }
  const ownerOverride = opts?.owner;
  if (ownerOverride !== undefined && !(Number.isInteger(ownerOverride) && ownerOverride >= 0 && ownerOverride <= 0xffff)) {
    throw badArg(`owner must be an integer in [0, 65535], got ${ownerOverride}`, 'owner', ownerOverride);
  }
  const nowOpt = opts?.nowMs;
  if (nowOpt !== undefined && !Number.isFinite(nowOpt)) throw badArg(`nowMs must be a finite number, got ${nowOpt}`, 'nowMs', nowOpt);
  const nowMs = nowOpt ?? table.latestNowMs;
  const count = hdr.recordCount;
  const base = buf.byteOffset + off + FLOW_EXPORT_HEADER_SIZE;
  const words = count * RECORD_WORDS;
  // Read the records as uint32 words: a view when the host is little-endian
  // and the records are 4-byte aligned, else a decoded copy (one allocation
  // per chunk, off the hot path).
  let u32: Uint32Array;
  if (HOST_LE && (base & 3) === 0) {
    u32 = new Uint32Array(buf.buffer, base, words);
  } else if (HOST_LE) {
    // Unaligned (a view into a received frame): one memcpy into an aligned
    // scratch buffer, kept for the next chunk (a fresh megabyte per chunk
    // costs its page faults again every time).
    const bytes = count * FLOW_RECORD_SIZE;
    if (alignedScratch.length < bytes) alignedScratch = new Uint8Array(bytes);
    alignedScratch.set(buf.subarray(off + FLOW_EXPORT_HEADER_SIZE, off + FLOW_EXPORT_HEADER_SIZE + bytes));
    u32 = new Uint32Array(alignedScratch.buffer, 0, words);
  } else {
    u32 = new Uint32Array(words);
    const dv = new DataView(buf.buffer, base, count * FLOW_RECORD_SIZE);
    for (let i = 0; i < words; i++) u32[i] = dv.getUint32(i * 4, true);
  }

  // Pass 1: checksum and per-record checks, before touching the table.
  const ck = hdr.version === 1 ? checksumV1(u32, words, count) : crcV2(buf, off, count * FLOW_RECORD_SIZE);
  if (ck !== hdr.checksum) {
    throw badFormat(`checksum mismatch: header 0x${hdr.checksum.toString(16)}, records 0x${ck.toString(16)} (corrupt or truncated chunk)`);
  }
  const actWord = W_ACT;
  for (let r = 0; r < count; r++) {
    const act = u32[r * RECORD_WORDS + actWord]! & 0xf;
    if (act > MAX_NET_ACTION) throw badFormat(`record ${r}: unknown netAction ${act}`);
  }

  // Pass 2: insert (the record layout is the slot layout but for the last word).
  const stored = table.putRecords(u32, count, ownerOverride ?? -1, nowMs, opts?.flags ?? 0);
  if (stored < count) {
    throw new BatonError(
      ErrorCode.TABLE_FULL,
      `flow table full after importing ${stored} of ${count} records (capacity ${table.maxFlows} flows); the first ${stored} were imported`,
      { imported: stored, total: count, capacity: table.maxFlows },
    );
  }
  return count;
}

/**
 * The keys of the records of a chunk that importFlows accepted: 4 words per
 * record (srcIp, dstIp, srcPort << 16 | dstPort, and the meta word: proto in
 * bits 0-7, flags 8-15, owner 16-31), in record order. Reads the header
 * (BAD_EXPORT_FORMAT when it is bad) but not the checksum: call it after
 * importFlows. For a migration's staging log (migration-receiver.ts).
 */
export function chunkKeys(buf: Uint8Array, off = 0, len = buf.length - off): Uint32Array {
  const hdr = readExportHeader(buf, off, len);
  if (len !== hdr.totalBytes) throw badFormat(`length mismatch: header says ${hdr.recordCount} records (${hdr.totalBytes} bytes), chunk is ${len} bytes`);
  const count = hdr.recordCount;
  const out = new Uint32Array(count * 4);
  const base = buf.byteOffset + off + FLOW_EXPORT_HEADER_SIZE;
  const stride = RECORD_WORDS;
  if (HOST_LE) {
    let u32: Uint32Array;
    if ((base & 3) === 0) u32 = new Uint32Array(buf.buffer, base, count * stride);
    else {
      const bytes = count * FLOW_RECORD_SIZE;
      if (alignedScratch.length < bytes) alignedScratch = new Uint8Array(bytes);
      alignedScratch.set(buf.subarray(off + FLOW_EXPORT_HEADER_SIZE, off + FLOW_EXPORT_HEADER_SIZE + bytes));
      u32 = new Uint32Array(alignedScratch.buffer, 0, count * stride);
    }
    for (let r = 0, q = 0; r < count; r++, q += stride) {
      const k = r * 4;
      out[k] = u32[q]!;
      out[k + 1] = u32[q + 1]!;
      out[k + 2] = u32[q + 2]!;
      out[k + 3] = u32[q + 3]!;
    }
  } else {
    const dv = new DataView(buf.buffer, base, count * FLOW_RECORD_SIZE);
    for (let r = 0; r < count; r++) for (let w = 0; w < 4; w++) out[r * 4 + w] = dv.getUint32(r * FLOW_RECORD_SIZE + w * 4, true);
  }
  return out;
}

// ---------------------------------------------------------------- helpers

/**
 * Writes the slot at word `o` as one little-endian record at dv[b..b+36)
 * (last-seen replaced by the idle time). The DataView path: any alignment,
 * any host byte order.
 */
function writeRecordDv(dv: DataView, b: number, W: Uint32Array, o: number, now: number): void {
  for (let w = 0; w < W_SEEN; w++) dv.setUint32(b + w * 4, W[o + w]!, true);
  let idle = (now - W[o + W_SEEN]!) >>> 0;
  if (idle > MAX_IDLE_MS) idle = 0;
  dv.setUint32(b + W_SEEN * 4, idle, true);
}

function checkRange(buf: Uint8Array, off: number, len: number, field: string): void {
  if (!(buf instanceof Uint8Array)) throw badArg(`expected a Uint8Array, got ${Object.prototype.toString.call(buf)}`, 'buf', undefined);
  if (!Number.isInteger(off) || off < 0 || off > buf.length) throw badArg(`${field} ${off} is outside the ${buf.length}-byte buffer`, field, off);
  if (!Number.isInteger(len) || len < 0 || off + len > buf.length) throw badArg(`len ${len} at offset ${off} runs past the ${buf.length}-byte buffer`, 'len', len);
}

function badArg(msg: string, field: string, value: unknown): BatonError {
  return new BatonError(ErrorCode.BAD_ARGUMENT, msg, { field, value });
}

function badFormat(msg: string): BatonError {
  return new BatonError(ErrorCode.BAD_EXPORT_FORMAT, msg);
}
