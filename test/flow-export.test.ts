import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { FlowTable, NetAction, FlowFlag } from '../distributor/flow-table.js';
import {
  FLOW_EXPORT_VERSION,
  FLOW_RECORD_SIZE,
  FLOW_EXPORT_HEADER_SIZE,
  FLOW_EXPORT_MAGIC,
  exportFlows,
  exportFlowSlots,
  importFlows,
  exportedSize,
  readExportHeader,
} from '../distributor/flow-export.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import { mulberry32 } from '../shared/random.js';

/** Every field of every entry, keyed and sorted: equal snapshots = equal tables. */
function snapshot(t: FlowTable, lastSeenShift = 0): string[] {
  const rows: string[] = [];
  for (let s = t.nextOccupied(0); s >= 0; s = t.nextOccupied(s + 1)) {
    rows.push(
      [
        t.srcIp(s),
        t.dstIp(s),
        t.srcPort(s),
        t.dstPort(s),
        t.proto(s),
        t.owner(s),
        t.netAction(s),
        t.appAction(s),
        t.rewriteIp(s),
        t.rewritePort(s),
        t.flags(s),
        t.packets(s),
        t.bytes(s),
        (t.lastSeen(s) + lastSeenShift) >>> 0,
      ].join(','),
    );
  }
  return rows.sort();
}

function fill(t: FlowTable, n: number, seed: number, nowMs: number): void {
  const rnd = mulberry32(seed);
  for (let i = 0; i < n; i++) {
    const s = t.insert(rnd(), rnd(), rnd() & 0xffff, rnd() & 0xffff, rnd() & 1 ? 6 : 17, rnd() & 0xffff, rnd() % 3, rnd() & 0xfff, rnd(), rnd() & 0xffff, rnd() & 0xff, 0);
    if (s < 0) continue;
    t.setCounters(s, rnd(), rnd(), (nowMs - (rnd() % 100_000)) >>> 0);
  }
}

function expectCode(fn: () => unknown, code: string, messagePart?: string): BatonErrorLike {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(isBatonError(caught), `expected BatonError ${code}, got ${String(caught)}`).toBe(true);
  expect((caught as BatonErrorLike).code).toBe(code);
  if (messagePart) expect((caught as Error).message).toContain(messagePart);
  return caught as BatonErrorLike;
}
type BatonErrorLike = { code: string; message: string; details?: Record<string, unknown> };

/** Bitwise CRC-32 (IEEE, reflected, poly 0xEDB88320), written from its definition: independent of zlib. */
function crc32Ref(bytes: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

/** Version 2 checksum exactly as docs/flow-export-format.md states it: CRC-32 of header bytes 0-15, then the records. */
function referenceChecksum(chunk: Uint8Array): number {
  const count = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength).getUint32(8, true);
  return crc32Ref(chunk.subarray(20, 20 + count * 36), crc32Ref(chunk.subarray(0, 16)));
}

/** Version 1 checksum exactly as docs/flow-export-format.md states it. */
function referenceChecksumV1(chunk: Uint8Array): number {
  const dv = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  const count = dv.getUint32(8, true);
  let h = 0x811c9dc5;
  const step = (w: number): void => {
    h = Math.imul(h ^ w, 0x9e3779b1);
    h ^= h >>> 15;
  };
  for (let off = 20; off < 20 + count * 36; off += 4) step(dv.getUint32(off, true));
  step(count);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
function resealChecksum(chunk: Uint8Array): void {
  const dv = new DataView(chunk.buffer, chunk.byteOffset);
  dv.setUint32(16, dv.getUint16(4, true) === 1 ? referenceChecksumV1(chunk) : referenceChecksum(chunk), true);
}
/** The same chunk as a version-1 writer would have sent it. */
function asVersion1(chunk: Uint8Array): Uint8Array {
  const c = chunk.slice();
  new DataView(c.buffer).setUint16(4, 1, true);
  resealChecksum(c);
  return c;
}

function validChunk(records = 3): Uint8Array {
  const t = new FlowTable(16, { seed: 5 });
  fill(t, records, 77, 10_000);
  const out = new Uint8Array(exportedSize(records));
  expect(exportFlows(t, 0, records, out, 0, 10_000).records).toBe(records);
  return out;
}

describe('flow export layout (version 2, frozen; version 1 read)', () => {
  it('constants', () => {
    expect(FLOW_EXPORT_VERSION).toBe(2);
    expect(FLOW_RECORD_SIZE).toBe(36);
    expect(FLOW_EXPORT_HEADER_SIZE).toBe(20);
    expect(FLOW_EXPORT_MAGIC).toBe(0x574c4642);
    expect(exportedSize(0)).toBe(20);
    expect(exportedSize(1000)).toBe(36_020);
    expectCode(() => exportedSize(-1), ErrorCode.BAD_ARGUMENT, 'records');
  });

  it('writes the documented bytes (golden record)', () => {
    const t = new FlowTable(4, { seed: 1 });
    const s = t.insert(0x0a000001, 0xc0a80102, 40000, 80, 6, 0x0102, NetAction.REWRITE, 0xabc, 0x0a010007, 8080, FlowFlag.REVERSE | FlowFlag.CLOSING, 900);
    t.setCounters(s, 3, 1500, 1000);
    const out = new Uint8Array(exportedSize(1));
    expect(exportFlows(t, 0, 10, out, 0, 1250)).toEqual({ records: 1, nextSlot: -1, bytes: 56 });
    // prettier-ignore
    const expected = [
      0x42, 0x46, 0x4c, 0x57, // magic "BFLW"
      0x02, 0x00,             // version 2
      0x24, 0x00,             // record size 36
      0x01, 0x00, 0x00, 0x00, // 1 record
      0x00, 0x00, 0x00, 0x00, // flags
      -1, -1, -1, -1,         // checksum (checked below)
      0x01, 0x00, 0x00, 0x0a, // srcIp 10.0.0.1
      0x02, 0x01, 0xa8, 0xc0, // dstIp 192.168.1.2
      0x50, 0x00,             // dstPort 80
      0x40, 0x9c,             // srcPort 40000
      0x06,                   // proto TCP
      0x05,                   // flags REVERSE | CLOSING
      0x02, 0x01,             // owner 0x0102
      0xc1, 0xab,             // netAction REWRITE | appAction 0xabc << 4
      0x90, 0x1f,             // rewritePort 8080
      0x07, 0x00, 0x01, 0x0a, // rewriteIp 10.1.0.7
      0x03, 0x00, 0x00, 0x00, // packets 3
      0xdc, 0x05, 0x00, 0x00, // bytes 1500
      0xfa, 0x00, 0x00, 0x00, // idle 250 ms (1250 - 1000)
    ];
    expect(out.length).toBe(expected.length);
    expected.forEach((b, i) => {
      if (b >= 0) expect(out[i], `byte ${i}`).toBe(b);
    });
    const ck = new DataView(out.buffer).getUint32(16, true);
    expect(ck).toBe(referenceChecksum(out));
    expect(ck).toBe(0x6e8ca6e5); // frozen: the checksum algorithm is part of version 2
    expect(referenceChecksumV1(asVersion1(out))).toBe(0x9d787154); // version 1's, as frozen before
  });

  it('a version-1 chunk (an FD not yet upgraded) imports exactly like the version-2 one', () => {
    const t = new FlowTable(64, { seed: 9 });
    fill(t, 40, 3, 50_000);
    const v2 = new Uint8Array(exportedSize(40));
    exportFlows(t, 0, 40, v2, 0, 50_000);
    const a = new FlowTable(64, { seed: 10 });
    const b = new FlowTable(64, { seed: 11 });
    expect(importFlows(a, v2, 0, v2.length, { nowMs: 60_000 })).toBe(40);
    const v1 = asVersion1(v2);
    expect(readExportHeader(v1).version).toBe(1);
    expect(importFlows(b, v1, 0, v1.length, { nowMs: 60_000 })).toBe(40);
    expect(snapshot(b)).toEqual(snapshot(a));
    expect(snapshot(a)).toEqual(snapshot(t, 10_000));
  });

  it('an empty table exports a header with 0 records and nextSlot -1', () => {
    const t = new FlowTable(8, { seed: 2 });
    const out = new Uint8Array(100);
    expect(exportFlows(t, 0, 10, out, 7)).toEqual({ records: 0, nextSlot: -1, bytes: 20 });
    expect(readExportHeader(out, 7, 20)).toMatchObject({ version: 2, recordCount: 0, totalBytes: 20 });
    const t2 = new FlowTable(8, { seed: 3 });
    expect(importFlows(t2, out, 7, 20)).toBe(0);
    expect(t2.size).toBe(0);
  });
});

describe('export -> import round trip', () => {
  it('chunked, at many chunk sizes and buffer offsets, preserves every field (lastSeen moved to the importer clock)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 400 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.oneof(fc.constantFrom(1, 2, 3, 7, 64), fc.integer({ min: 1, max: 500 })),
        fc.integer({ min: 0, max: 7 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.boolean(),
        (n, seed, chunk, misalign, exportNow, importNow, bigBuffer) => {
          const src = new FlowTable(Math.max(n, 1), { seed });
          fill(src, n, seed ^ 0x55, exportNow);
          const dst = new FlowTable(Math.max(n, 1) + 10, { seed: seed ^ 0xffff, loadFactor: 0.5 });
          // Either maxRecords limits the chunk, or the buffer size does.
          const out = new Uint8Array(misalign + (bigBuffer ? exportedSize(chunk) : exportedSize(chunk) + FLOW_RECORD_SIZE - 1));
          let from = 0;
          let total = 0;
          let chunks = 0;
          while (from >= 0) {
            const r = exportFlows(src, from, bigBuffer ? chunk : 1e9, out, misalign, exportNow);
            expect(r.records).toBeLessThanOrEqual(chunk);
            expect(r.bytes).toBe(exportedSize(r.records));
            expect(r.nextSlot === -1 || r.nextSlot > from).toBe(true);
            if (r.nextSlot >= 0) expect(r.records).toBe(chunk);
            expect(importFlows(dst, out, misalign, r.bytes, { nowMs: importNow })).toBe(r.records);
            total += r.records;
            from = r.nextSlot;
            chunks++;
          }
          expect(total).toBe(src.size);
          expect(chunks).toBe(Math.max(1, Math.ceil(src.size / chunk)));
          expect(snapshot(dst)).toEqual(snapshot(src, importNow - exportNow));
        },
      ),
      { seed: 0xf10e, numRuns: 150 },
    );
  });

  it('owner override writes the inheritor as owner', () => {
    const src = new FlowTable(50, { seed: 9 });
    fill(src, 50, 1, 0);
    const out = new Uint8Array(exportedSize(50));
    const r = exportFlows(src, 0, 50, out, 0, 0);
    const dst = new FlowTable(50, { seed: 10 });
    importFlows(dst, out, 0, r.bytes, { owner: 7, nowMs: 0 });
    for (let s = dst.nextOccupied(0); s >= 0; s = dst.nextOccupied(s + 1)) expect(dst.owner(s)).toBe(7);
    expect(dst.size).toBe(src.size);
  });

  it('between tables with the same seed and size, records land in the slots they left (slot-order import)', () => {
    // What a shared flowTable.seed buys a migration: the export walks the
    // source in slot order, so the inheritor's inserts walk its memory in
    // order too. Exact for every entry outside the one run of slots that
    // wraps past the table's end (its entries are exported from slot 0 first).
    const n = 5000;
    const src = new FlowTable(n, { seed: 77 });
    fill(src, n, 3, 0);
    const out = new Uint8Array(exportedSize(n));
    const r = exportFlows(src, 0, n, out, 0, 0);
    const dst = new FlowTable(n, { seed: 77 });
    importFlows(dst, out, 0, r.bytes, { nowMs: 0 });
    let firstEmpty = 0;
    while (src.nextOccupied(firstEmpty) === firstEmpty) firstEmpty++;
    let lastEmpty = src.slots - 1;
    while (src.nextOccupied(lastEmpty) === lastEmpty) lastEmpty--;
    let checked = 0;
    for (let s = src.nextOccupied(firstEmpty); s >= 0 && s < lastEmpty; s = src.nextOccupied(s + 1)) {
      expect(dst.find(src.srcIp(s), src.dstIp(s), src.srcPort(s), src.dstPort(s), src.proto(s))).toBe(s);
      checked++;
    }
    expect(checked).toBeGreaterThan(n * 0.9);
    // With another seed the same keys are scattered: most change slot.
    const other = new FlowTable(n, { seed: 78 });
    importFlows(other, out, 0, r.bytes, { nowMs: 0 });
    let same = 0;
    for (let s = src.nextOccupied(0); s >= 0; s = src.nextOccupied(s + 1)) {
      if (other.find(src.srcIp(s), src.dstIp(s), src.srcPort(s), src.dstPort(s), src.proto(s)) === s) same++;
    }
    expect(same).toBeLessThan(n * 0.01);
  });

  it('importing overwrites existing keys', () => {
    const src = new FlowTable(4, { seed: 11 });
    src.insert(1, 2, 3, 4, 6, 5, NetAction.REDIRECT, 0, 0, 0, 0, 100);
    const out = new Uint8Array(exportedSize(1));
    exportFlows(src, 0, 1, out, 0, 100);
    const dst = new FlowTable(4, { seed: 12 });
    const s = dst.insert(1, 2, 3, 4, 6, 9, NetAction.FORWARD, 0, 0, 0, 0, 0);
    dst.touch(s, 99, 0);
    importFlows(dst, out, 0, out.length, { nowMs: 100 });
    expect(dst.size).toBe(1);
    const s2 = dst.find(1, 2, 3, 4, 6);
    expect([dst.owner(s2), dst.netAction(s2), dst.packets(s2)]).toEqual([5, NetAction.REDIRECT, 0]);
  });

  it('idle time: wraps at 2^32 ms, and a lastSeen after the export clock exports as idle 0', () => {
    const t = new FlowTable(4, { seed: 13 });
    const a = t.insert(1, 1, 1, 1, 6, 1, 0, 0, 0, 0, 0, 0);
    t.setCounters(a, 0, 0, 0xfffffff0); // 16 ms before the wrap
    const b = t.insert(2, 2, 2, 2, 6, 1, 0, 0, 0, 0, 0, 0);
    t.setCounters(b, 0, 0, 0x30); // after the export clock
    const out = new Uint8Array(exportedSize(2));
    exportFlows(t, 0, 2, out, 0, 2 ** 32 + 0x10);
    const dst = new FlowTable(4, { seed: 14 });
    importFlows(dst, out, 0, out.length, { nowMs: 5000 });
    expect(dst.idleFor(dst.find(1, 1, 1, 1, 6), 5000)).toBe(0x20);
    expect(dst.idleFor(dst.find(2, 2, 2, 2, 6), 5000)).toBe(0);
  });

  it('exportFlowSlots writes exactly the chosen slots, skipping empty ones', () => {
    const src = new FlowTable(100, { seed: 15 });
    fill(src, 100, 3, 1000);
    const all: number[] = [];
    for (let s = src.nextOccupied(0); s >= 0; s = src.nextOccupied(s + 1)) all.push(s);
    const chosen = all.filter((_, i) => i % 3 === 0);
    let empty = 0;
    while (src.hints[empty] !== 0) empty++;
    const slots = [...chosen, empty, -1, src.slots + 3];
    const out = new Uint8Array(exportedSize(slots.length) + 3);
    const n = exportFlowSlots(src, slots, out, 3, 1000);
    expect(n).toBe(chosen.length);
    const dst = new FlowTable(100, { seed: 16 });
    importFlows(dst, out, 3, exportedSize(n), { nowMs: 1000 });
    const expected = new FlowTable(100, { seed: 17 });
    for (const s of chosen) {
      const e = expected.insert(src.srcIp(s), src.dstIp(s), src.srcPort(s), src.dstPort(s), src.proto(s), src.owner(s), src.netAction(s), src.appAction(s), src.rewriteIp(s), src.rewritePort(s), src.flags(s), 0);
      expected.setCounters(e, src.packets(s), src.bytes(s), src.lastSeen(s));
    }
    expect(snapshot(dst)).toEqual(snapshot(expected));
  });

  it('a full table imports what fits, then throws TABLE_FULL with the count', () => {
    const src = new FlowTable(10, { seed: 18 });
    fill(src, 10, 4, 0);
    const out = new Uint8Array(exportedSize(10));
    const r = exportFlows(src, 0, 10, out, 0, 0);
    expect(r.records).toBe(10);
    const dst = new FlowTable(6, { seed: 19 });
    dst.insert(0xdead, 1, 1, 1, 6, 1, 0, 0, 0, 0, 0, 0);
    dst.insert(0xbeef, 1, 1, 1, 6, 1, 0, 0, 0, 0, 0, 0);
    const e = expectCode(() => importFlows(dst, out, 0, r.bytes, { nowMs: 0 }), ErrorCode.TABLE_FULL, 'after importing 4 of 10');
    expect(e.details).toMatchObject({ imported: 4, total: 10, capacity: 6 });
    expect(dst.size).toBe(6);
  });
});

describe('importing bad input', () => {
  // Each case must throw BAD_EXPORT_FORMAT and leave the table exactly as it was.
  function expectRejected(chunk: Uint8Array, off = 0, len = chunk.length - off, messagePart?: string): void {
    const t = new FlowTable(32, { seed: 20 });
    fill(t, 5, 6, 0);
    const before = snapshot(t);
    const mutations = t.mutations;
    expectCode(() => importFlows(t, chunk, off, len), ErrorCode.BAD_EXPORT_FORMAT, messagePart);
    expect(snapshot(t)).toEqual(before);
    expect(t.mutations).toBe(mutations);
  }
  const patch = (f: (dv: DataView, c: Uint8Array) => void, reseal = false): Uint8Array => {
    const c = validChunk();
    f(new DataView(c.buffer), c);
    if (reseal) resealChecksum(c);
    return c;
  };

  it('every truncation of a valid chunk', () => {
    const c = validChunk();
    for (let len = 0; len < c.length; len++) expectRejected(c, 0, len);
  });

  const cases: Array<[string, () => Uint8Array, string]> = [
    ['wrong magic', () => patch((dv) => dv.setUint8(0, 0x41)), 'magic'],
    ['version 0', () => patch((dv) => dv.setUint16(4, 0, true)), 'version 0'],
    ['version 3', () => patch((dv) => dv.setUint16(4, 3, true)), 'version 3'],
    ['version 0xffff', () => patch((dv) => dv.setUint16(4, 0xffff, true)), 'understands versions 1 and 2'],
    ['version 1 label on a version-2 checksum', () => patch((dv) => dv.setUint16(4, 1, true)), 'checksum'],
    ['version 1, checksum field changed', () => {
      const c = asVersion1(validChunk());
      new DataView(c.buffer).setUint32(16, new DataView(c.buffer).getUint32(16, true) ^ 1, true);
      return c;
    }, 'checksum'],
    ['version 1, unknown netAction (checksum resealed)', () => {
      const c = asVersion1(validChunk());
      c[20 + 16] = 0x03;
      resealChecksum(c);
      return c;
    }, 'netAction'],
    ['record size 35', () => patch((dv) => dv.setUint16(6, 35, true)), 'record size'],
    ['record size 40', () => patch((dv) => dv.setUint16(6, 40, true)), 'record size'],
    ['unknown flags', () => patch((dv) => dv.setUint32(12, 1, true)), 'flags'],
    ['count one too many', () => patch((dv) => dv.setUint32(8, 4, true)), 'length mismatch'],
    ['count one too few', () => patch((dv) => dv.setUint32(8, 2, true)), 'length mismatch'],
    ['count huge', () => patch((dv) => dv.setUint32(8, 0xffffffff, true)), 'length mismatch'],
    ['checksum field changed', () => patch((dv) => dv.setUint32(16, dv.getUint32(16, true) ^ 1, true)), 'checksum'],
    ['unknown netAction (checksum resealed)', () => patch((dv) => dv.setUint8(20 + 36 + 16, 0x03), true), 'netAction'],
    ['netAction 15 (checksum resealed)', () => patch((dv) => dv.setUint8(20 + 16, 0x0f), true), 'netAction'],
  ];
  it.each(cases)('%s', (_name, mk, part) => expectRejected(mk(), 0, undefined, part));

  it('any single flipped bit in the records', () => {
    const c = validChunk();
    for (let byte = FLOW_EXPORT_HEADER_SIZE; byte < c.length; byte++) {
      for (let bit = 0; bit < 8; bit += 3) {
        const bad = c.slice();
        bad[byte]! ^= 1 << bit;
        expectRejected(bad);
      }
    }
  });

  it('a chunk with trailing bytes is rejected (len must be exact)', () => {
    const c = validChunk();
    const longer = new Uint8Array(c.length + 4);
    longer.set(c);
    expectRejected(longer, 0, longer.length, 'length mismatch');
  });

  it('random bytes, with or without a valid header in front', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.boolean(), fc.integer({ min: 0, max: 5 }), (bytes, withHeader, count) => {
        let chunk = bytes;
        fc.pre(!(withHeader && count === 0 && bytes.length === 0)); // that one IS a valid empty chunk
        if (withHeader) {
          chunk = new Uint8Array(FLOW_EXPORT_HEADER_SIZE + bytes.length);
          chunk.set(validChunk(0).subarray(0, FLOW_EXPORT_HEADER_SIZE));
          chunk.set(bytes, FLOW_EXPORT_HEADER_SIZE);
          new DataView(chunk.buffer).setUint32(8, count, true);
        }
        expectRejected(chunk);
      }),
      { seed: 0xbad, numRuns: 300 },
    );
  });
});

describe('argument checks', () => {
  const t = new FlowTable(8, { seed: 21 });
  t.insert(1, 2, 3, 4, 6, 1, 0, 0, 0, 0, 0, 0);
  const c = validChunk();
  const cases: Array<[string, () => unknown, string]> = [
    ['import off past the buffer', () => importFlows(t, c, c.length + 1, 0), 'off'],
    ['import len past the buffer', () => importFlows(t, c, 4, c.length), 'len'],
    ['import negative off', () => importFlows(t, c, -1, 10), 'off'],
    ['import owner out of range', () => importFlows(t, c, 0, c.length, { owner: 0x10000 }), 'owner'],
    ['import nowMs NaN', () => importFlows(t, c, 0, c.length, { nowMs: Number.NaN }), 'nowMs'],
    ['export negative fromSlot', () => exportFlows(t, -1, 1, new Uint8Array(100)), 'fromSlot'],
    ['export fractional maxRecords', () => exportFlows(t, 0, 1.5, new Uint8Array(100)), 'maxRecords'],
    ['export buffer smaller than a header', () => exportFlows(t, 0, 1, new Uint8Array(19)), 'header'],
    ['export buffer with no room for a record', () => exportFlows(t, 0, 1, new Uint8Array(40)), 'no record'],
    ['export outOff past the buffer', () => exportFlows(t, 0, 1, new Uint8Array(100), 101), 'outOff'],
    ['exportFlowSlots buffer too small', () => exportFlowSlots(t, [0, 1], new Uint8Array(50)), 'records need'],
  ];
  it.each(cases)('%s: BAD_ARGUMENT', (_n, fn, part) => {
    expectCode(fn, ErrorCode.BAD_ARGUMENT, part);
  });

  it('readExportHeader frames a chunk from its header alone', () => {
    const h = readExportHeader(c, 0, FLOW_EXPORT_HEADER_SIZE);
    expect(h).toMatchObject({ version: 2, recordSize: 36, recordCount: 3, flags: 0, totalBytes: c.length });
  });
});
