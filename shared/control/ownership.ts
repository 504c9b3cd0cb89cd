/**
 * Flow-ownership records: the `records` bytes of an OwnershipBatch. A fixed
 * 16-byte big-endian layout instead of one protobuf message per record
 * (per-record protobuf was several times slower:
 * docs/decisions/0005-ownership-fixed-records.md; bench/cases/control.ts measures it):
 *
 *   off  size  field
 *    0    4    srcIp     (IPv4, host-order uint32 in JS, big-endian on the wire)
 *    4    4    dstIp
 *    8    2    srcPort
 *   10    2    dstPort
 *   12    1    proto     (6 TCP, 17 UDP)
 *   13    1    flags     (bit0 REMOVED: flow ended; bit1 MIGRATED; bits 2-7 zero, ignored on receipt)
 *   14    2    owner     (node id of the owning FD)
 *
 * packOwnership and forEachOwnership allocate nothing and never throw on the
 * data path; a bad batch is reported as a numeric OwnershipCheck code.
 */
import { BatonError, ErrorCode } from '../errors.js';
import type { OwnershipBatch } from './messages.js';
import { writeFiveTupleKey } from '../hash/xxh32.js';

export const OWNERSHIP_RECORD_SIZE = 16;
export const OWNERSHIP_RECORD_VERSION = 1;

export const OwnershipFlag = {
  REMOVED: 0x01,
  MIGRATED: 0x02,
} as const;

/** Result of validating / iterating a batch. */
export const OwnershipCheck = {
  OK: 0,
  /** records.length !== count * OWNERSHIP_RECORD_SIZE (or count is not a non-negative integer). */
  BAD_LENGTH: 1,
  /** record_version is not OWNERSHIP_RECORD_VERSION. */
  BAD_RECORD_VERSION: 2,
} as const;
export type OwnershipCheck = (typeof OwnershipCheck)[keyof typeof OwnershipCheck];
export const OWNERSHIP_CHECK_NAMES: readonly string[] = ['ok', 'bad_length', 'bad_record_version'];

export type OwnershipFn = (srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, flags: number, owner: number) => void;

/** Writes one record at out[off .. off+16). Values are truncated to their field widths. The caller guarantees room. */
export function packOwnership(
  out: Uint8Array,
  off: number,
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
  flags: number,
  owner: number,
): void {
  // Bytes 0..12 are the canonical 5-tuple key (the hash input, docs/hashing.md).
  writeFiveTupleKey(out, off, srcIp, dstIp, srcPort, dstPort, proto);
  out[off + 13] = flags;
  out[off + 14] = owner >>> 8;
  out[off + 15] = owner;
}

/**
 * Calls fn once per record, in order. Checks the length first: on a mismatch
 * nothing is applied and BAD_LENGTH is returned.
 */
export function forEachOwnership(records: Uint8Array, count: number, fn: OwnershipFn): OwnershipCheck {
  if (!Number.isInteger(count) || count < 0 || records.length !== count * OWNERSHIP_RECORD_SIZE) return OwnershipCheck.BAD_LENGTH;
  const b = records;
  for (let off = 0, end = records.length; off < end; off += OWNERSHIP_RECORD_SIZE) {
    fn(
      ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0,
      ((b[off + 4]! << 24) | (b[off + 5]! << 16) | (b[off + 6]! << 8) | b[off + 7]!) >>> 0,
      (b[off + 8]! << 8) | b[off + 9]!,
      (b[off + 10]! << 8) | b[off + 11]!,
      b[off + 12]!,
      b[off + 13]!,
      (b[off + 14]! << 8) | b[off + 15]!,
    );
  }
  return OwnershipCheck.OK;
}

/** forEachOwnership for a decoded OwnershipBatch: also checks record_version. */
export function forEachOwnershipBatch(batch: OwnershipBatch, fn: OwnershipFn): OwnershipCheck {
  if (batch.recordVersion !== OWNERSHIP_RECORD_VERSION) return OwnershipCheck.BAD_RECORD_VERSION;
  return forEachOwnership(batch.records, batch.count, fn);
}

/**
 * Receives a full or flushed buffer. `records` is a view on the buffer's
 * storage, valid only during the call: encode or copy it before returning,
 * and do not add() to the same buffer from inside the sink.
 */
export type OwnershipSink = (records: Uint8Array, count: number) => void;

/**
 * Accumulates records in one preallocated buffer and hands them to the sink
 * when the buffer is full or on flush() (the FD flushes on a timer, e.g.
 * every 2 ms). add() allocates nothing; each flush creates one subarray view.
 */
export class OwnershipBuffer {
  readonly capacity: number;
  private readonly buf: Uint8Array;
  private n = 0;
  /** Batches handed to the sink (full + manual). */
  flushes = 0;
  /** Of which because the buffer was full. */
  fullFlushes = 0;
  /** Records handed to the sink. */
  records = 0;

  constructor(
    capacityRecords: number,
    private readonly sink: OwnershipSink,
  ) {
    if (!Number.isInteger(capacityRecords) || capacityRecords < 1 || capacityRecords > 1_000_000) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `OwnershipBuffer: capacityRecords must be an integer in 1..1000000, got ${capacityRecords}`, {
        field: 'capacityRecords',
        value: capacityRecords,
      });
    }
    this.capacity = capacityRecords;
    this.buf = new Uint8Array(capacityRecords * OWNERSHIP_RECORD_SIZE);
  }

  /** Records waiting for the next flush. */
  get pending(): number {
    return this.n;
  }

  add(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, flags: number, owner: number): void {
    packOwnership(this.buf, this.n * OWNERSHIP_RECORD_SIZE, srcIp, dstIp, srcPort, dstPort, proto, flags, owner);
    if (++this.n === this.capacity) {
      this.fullFlushes++;
      this.flush();
    }
  }

  /** Discards pending records (a fenced FD broadcasts nothing). Returns how many. */
  clear(): number {
    const n = this.n;
    this.n = 0;
    return n;
  }

  /** Hands pending records (if any) to the sink. Returns how many. */
  flush(): number {
    const n = this.n;
    if (n === 0) return 0;
    this.n = 0; // reset first, so a throwing sink does not get the same records twice
    this.flushes++;
    this.records += n;
    this.sink(this.buf.subarray(0, n * OWNERSHIP_RECORD_SIZE), n);
    return n;
  }
}
