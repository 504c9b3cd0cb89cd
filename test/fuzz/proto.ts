/**
 * Control-plane seeds and checks driven by the schema itself
 * (proto/baton/control/v1/control.proto through protobufjs reflection):
 * random valid envelopes of every body case, protobuf length prefixes and
 * varint values found by a wire-level walk (so a mutation can set one to an
 * extreme: 0, 2^32, 2^53, 2^64 - 1, an overlong encoding), and a
 * shape check that a decoded value is complete and of the field types.
 */
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { EnvelopeType } from '../../shared/control/schema.js';
import { encodeEnvelope } from '../../shared/control/codec.js';
import { PROTOCOL_VERSION, type Body, type EnvelopeObject } from '../../shared/control/messages.js';
import { applyOps, opArb, type Op } from './mutate.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

function scalarArb(type: string): fc.Arbitrary<unknown> {
  switch (type) {
    case 'uint32':
    case 'fixed32':
      return fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0xffffffff }));
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return fc.integer({ min: -0x80000000, max: 0x7fffffff });
    case 'uint64':
    case 'fixed64':
      // The protocol keeps 64-bit integers below 2^53 (shared/control/messages.ts).
      return fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: MAX_SAFE }));
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return fc.integer({ min: -MAX_SAFE, max: MAX_SAFE });
    case 'double':
    case 'float':
      return type === 'float' ? fc.float() : fc.double();
    case 'bool':
      return fc.boolean();
    case 'string':
      return fc.oneof(fc.constantFrom('', 'fd-1', '127.0.0.1:7400', 'BATON_TIMEOUT'), fc.string({ maxLength: 12, unit: 'grapheme' }));
    case 'bytes':
      return fc.uint8Array({ maxLength: 48 });
    default:
      throw new Error(`proto type ${type} not generated`);
  }
}

const MESSAGE_ARBS = new Map<string, fc.Arbitrary<Record<string, unknown>>>();

/** Random values of message `type` (nested messages at most `depth` deep, then absent). */
export function messageArb(type: protobuf.Type, depth = 3): fc.Arbitrary<Record<string, unknown>> {
  const key = `${type.fullName}@${depth}`;
  const known = MESSAGE_ARBS.get(key);
  if (known) return known;
  const rec: Record<string, fc.Arbitrary<unknown>> = {};
  for (const f of type.fieldsArray) {
    if (f.partOf) continue; // oneofs (the envelope's body) are chosen by the caller
    const rt = f.resolve().resolvedType;
    let one: fc.Arbitrary<unknown>;
    if (rt instanceof protobuf.Type) {
      if (depth <= 0) continue;
      one = messageArb(rt, depth - 1);
    } else if (rt instanceof protobuf.Enum) {
      // Enums are open: a value unknown to this build stays a number.
      one = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...Object.values(rt.values)) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 1000 }) });
    } else one = scalarArb(f.type);
    if (f.map) {
      const k = scalarArb((f as unknown as protobuf.MapField).keyType);
      rec[f.name] = fc.dictionary(fc.oneof({ weight: 8, arbitrary: k as fc.Arbitrary<string> }, { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString') }), one, { maxKeys: 3 });
    } else if (f.repeated) rec[f.name] = fc.array(one, { maxLength: depth >= 2 ? 3 : 1 });
    else rec[f.name] = one;
  }
  const arb = fc.record(rec, { requiredKeys: [] });
  MESSAGE_ARBS.set(key, arb);
  return arb;
}

const BODY_FIELDS = EnvelopeType.oneofs['body']!.fieldsArray;

/** A valid envelope of any body case. */
export const arbEnvelope: fc.Arbitrary<EnvelopeObject> = fc
  .record({
    field: fc.constantFrom(...BODY_FIELDS),
    seq: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: MAX_SAFE })),
    replyTo: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: MAX_SAFE }) }),
    wantsReply: fc.boolean(),
  })
  .chain((h) =>
    messageArb(h.field.resolvedType as protobuf.Type, 2).map((value) => ({ protocolVersion: PROTOCOL_VERSION, seq: h.seq, replyTo: h.replyTo, wantsReply: h.wantsReply, body: { case: h.field.name, value } as Body })),
  );

/** Envelope bytes: valid ones (encodeEnvelope), another protocol version, no body, an unknown body field (a newer peer). */
export const arbEnvelopeBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 6, arbitrary: arbEnvelope.map((e) => encodeEnvelope(e)) },
  {
    weight: 1,
    arbitrary: fc
      .record({ v: fc.integer({ min: 0, max: 0xffffffff }), seq: fc.integer({ min: 0, max: 1000 }), wantsReply: fc.boolean(), tag: fc.oneof(fc.constant(0), fc.integer({ min: 38, max: 5000 }), fc.integer({ min: 5, max: 9 })), data: fc.uint8Array({ maxLength: 8 }) })
      .map((r) => {
        const head = EnvelopeType.encode({ protocolVersion: r.v === 0 ? PROTOCOL_VERSION : r.v, seq: r.seq, wantsReply: r.wantsReply }).finish();
        if (r.tag === 0) return head;
        const w = protobuf.Writer.create();
        w.uint32((r.tag << 3) | 2).bytes(r.data);
        const tail = w.finish();
        const out = new Uint8Array(head.length + tail.length);
        out.set(head);
        out.set(tail, head.length);
        return out;
      }),
  },
);

// ------------------------------------------------------ wire-level walk

/** A varint in the bytes: where it starts and how many bytes it takes. */
export interface VarintAt {
  at: number;
  width: number;
}

function readVarint(b: Uint8Array, p: number, end: number): { v: number; next: number } | null {
  let v = 0;
  for (let i = 0; i < 10 && p + i < end; i++) {
    const x = b[p + i]!;
    v += (x & 0x7f) * 2 ** (7 * i);
    if (x < 0x80) return { v, next: p + i + 1 };
  }
  return null;
}

/**
 * The varints of every field, nested messages included (as far as the bytes
 * parse): the length prefixes of length-delimited fields (`lengths`) and the
 * values of varint fields (`values`: integers, bools, enums).
 */
export function varints(b: Uint8Array, start = 0, end = b.length, depth = 0, out: { lengths: VarintAt[]; values: VarintAt[] } = { lengths: [], values: [] }): { lengths: VarintAt[]; values: VarintAt[] } {
  let p = start;
  while (p < end && out.lengths.length + out.values.length < 96) {
    const tag = readVarint(b, p, end);
    if (!tag) return out;
    p = tag.next;
    switch (tag.v % 8) {
      case 0: {
        const v = readVarint(b, p, end);
        if (!v) return out;
        out.values.push({ at: p, width: v.next - p });
        p = v.next;
        break;
      }
      case 1:
        p += 8;
        break;
      case 5:
        p += 4;
        break;
      case 2: {
        const l = readVarint(b, p, end);
        if (!l) return out;
        out.lengths.push({ at: p, width: l.next - p });
        p = l.next;
        if (p + l.v > end) return out;
        if (depth < 6) varints(b, p, p + l.v, depth + 1, out);
        p += l.v;
        break;
      }
      default:
        return out;
    }
  }
  return out;
}

/** Exact (BigInt): 2^64 - 1 is no double. */
const VARINT_EXTREMES: readonly bigint[] = [0n, 1n, 127n, 128n, 2n ** 31n - 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];

function encodeVarint(v: bigint, overlong: boolean): number[] {
  const out: number[] = [];
  let x = v;
  do {
    const low = Number(x & 127n);
    x >>= 7n;
    out.push(x > 0n ? low | 0x80 : low);
  } while (x > 0n);
  if (overlong) {
    out[out.length - 1]! |= 0x80;
    for (let i = 0; i < 10; i++) out.push(0x80);
    out.push(0);
  }
  return out;
}

export interface PbOp {
  /** A length prefix, or the value of a varint field. */
  which: 'length' | 'value';
  f: number;
  v: bigint | 'minus1' | 'plus1' | 'len';
  overlong: boolean;
}

const pbOpArb: fc.Arbitrary<PbOp> = fc.record({
  which: fc.constantFrom('length' as const, 'value' as const),
  f: fc.nat(),
  v: fc.oneof(fc.constantFrom(...VARINT_EXTREMES), fc.constantFrom('minus1' as const, 'plus1' as const, 'len' as const)),
  overlong: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
});

/** One length prefix or varint field value replaced by an extreme value (the bytes after it unchanged). */
export function setVarint(b: Uint8Array, op: PbOp): Uint8Array {
  const all = varints(b);
  const ls = op.which === 'length' ? all.lengths : all.values;
  if (ls.length === 0) return b;
  const l = ls[op.f % ls.length]!;
  const cur = BigInt(readVarint(b, l.at, b.length)?.v ?? 0);
  const v = op.v === 'minus1' ? (cur > 0n ? cur - 1n : 0n) : op.v === 'plus1' ? cur + 1n : op.v === 'len' ? BigInt(b.length) : op.v;
  const enc = encodeVarint(v, op.overlong);
  const out = new Uint8Array(b.length - l.width + enc.length);
  out.set(b.subarray(0, l.at));
  out.set(enc, l.at);
  out.set(b.subarray(l.at + l.width), l.at + enc.length);
  return out;
}

/** Mutants of protobuf bytes: length prefixes and integer fields set to extremes, then byte-level ops. */
export function pbMutated(seed: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.record({ s: seed, pb: fc.array(pbOpArb, { maxLength: 2 }), ops: fc.array(opArb, { maxLength: 3 }) }).map(({ s, pb, ops }) => {
    let b = s;
    for (const op of pb) b = setVarint(b, op);
    return applyOps(b, ops as Op[]);
  });
}

// --------------------------------------------------------- shape check

/** Where a decoded value is not a complete message of `type` (null when it is). */
export function shapeError(type: protobuf.Type, v: unknown, path: string): string | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return `${path}: not an object`;
  const o = v as Record<string, unknown>;
  for (const f of type.fieldsArray) {
    if (f.partOf) continue;
    const x = o[f.name];
    const p = `${path}.${f.name}`;
    const rt = f.resolve().resolvedType;
    if (f.map) {
      if (x === null || typeof x !== 'object') return `${p}: map is ${typeof x}`;
      for (const [k, e] of Object.entries(x)) {
        const d = scalarError(f.type, rt, e, `${p}[${JSON.stringify(k)}]`);
        if (d) return d;
      }
    } else if (f.repeated) {
      if (!Array.isArray(x)) return `${p}: repeated field is ${typeof x}`;
      for (let i = 0; i < x.length; i++) {
        const d = rt instanceof protobuf.Type ? shapeError(rt, x[i], `${p}[${i}]`) : scalarError(f.type, rt, x[i], `${p}[${i}]`);
        if (d) return d;
      }
    } else {
      const d = rt instanceof protobuf.Type ? shapeError(rt, x, p) : scalarError(f.type, rt, x, p);
      if (d) return d;
    }
  }
  return null;
}

function scalarError(type: string, rt: protobuf.Type | protobuf.Enum | null, x: unknown, p: string): string | null {
  if (rt instanceof protobuf.Enum) return Number.isInteger(x) ? null : `${p}: enum is ${String(x)}`;
  switch (type) {
    case 'uint32':
    case 'fixed32':
      return Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffffffff ? null : `${p}: uint32 is ${String(x)}`;
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return Number.isInteger(x) && (x as number) >= -0x80000000 && (x as number) <= 0x7fffffff ? null : `${p}: int32 is ${String(x)}`;
    case 'uint64':
    case 'fixed64':
      return typeof x === 'number' && Number.isInteger(x) && x >= 0 ? null : `${p}: uint64 is ${String(x)}`;
    case 'int64':
    case 'sint64':
    case 'sfixed64':
      return typeof x === 'number' && Number.isInteger(x) ? null : `${p}: int64 is ${String(x)}`;
    case 'double':
    case 'float':
      return typeof x === 'number' ? null : `${p}: double is ${typeof x}`;
    case 'bool':
      return typeof x === 'boolean' ? null : `${p}: bool is ${typeof x}`;
    case 'string':
      return typeof x === 'string' ? null : `${p}: string is ${typeof x}`;
    case 'bytes':
      return x instanceof Uint8Array ? null : `${p}: bytes is ${typeof x}`;
    default:
      return `${p}: unexpected proto type ${type}`;
  }
}
