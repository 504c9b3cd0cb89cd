/**
 * Envelope codec: EnvelopeObject <-> protobuf bytes (one frame's payload).
 *
 * decodeEnvelope never throws: garbage (random bytes, truncated frames, a
 * wrong protocol_version, an empty or unknown oneof, a 64-bit integer a JS
 * number cannot hold exactly) comes back as a reason code the caller counts. encodeEnvelope trusts the TypeScript types (no
 * runtime verify pass); it throws BatonError BAD_ARGUMENT only if protobufjs
 * cannot encode the object at all.
 */
import protobuf from 'protobufjs';
import { BatonError, ErrorCode } from '../errors.js';
import { EnvelopeType } from './schema.js';
import { PROTOCOL_VERSION, type Body, type BodyCase, type EnvelopeObject } from './messages.js';

export type DecodeFailure =
  /**
   * Not parseable as an Envelope (bad varint, bad wire type, truncated, ...), or
   * a 64-bit integer beyond 2^53 - 1 in magnitude (the protocol keeps them below:
   * as a JS number it would be rounded, and re-encoded as another value).
   */
  | 'bad_protobuf'
  /** Parsed, but protocol_version is not PROTOCOL_VERSION. */
  | 'bad_version'
  /** Parsed, version ok, no body at all. */
  | 'empty_body'
  /** Parsed, version ok, the body is a oneof case this build does not know (newer peer). */
  | 'unknown_body';

export const DECODE_FAILURES: readonly DecodeFailure[] = ['bad_protobuf', 'bad_version', 'empty_body', 'unknown_body'];

export type DecodeResult =
  | { ok: true; env: EnvelopeObject }
  | {
      ok: false;
      code: DecodeFailure;
      /** What could be read of the envelope header (all zero/false for bad_protobuf), so a receiver can still answer a request. */
      protocolVersion: number;
      seq: number;
      replyTo: number;
      wantsReply: boolean;
    };

/**
 * toObject options: 64-bit ints as numbers (exact below 2^53, which the
 * protocol guarantees), enums as numbers, bytes as views on the frame,
 * defaults/arrays/maps filled in.
 */
const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, defaults: true, arrays: true, objects: true };

/** Body case name -> its message Type, from the schema's `body` oneof. */
const BODY_TYPES = new Map<string, protobuf.Type>();
for (const f of EnvelopeType.oneofs['body']!.fieldsArray) BODY_TYPES.set(f.name, f.resolve().resolvedType as protobuf.Type);

/** Lowest field number of the body oneof: unknown fields at or above it are taken as unknown bodies. */
const FIRST_BODY_TAG = Math.min(...EnvelopeType.oneofs['body']!.fieldsArray.map((f) => f.id));

export function encodeEnvelope(env: EnvelopeObject): Uint8Array {
  const kase = env.body.case;
  if (!BODY_TYPES.has(kase)) {
    throw new BatonError(ErrorCode.BAD_ARGUMENT, `encodeEnvelope: unknown body case ${JSON.stringify(kase)}`, { case: kase });
  }
  const msg: Record<string, unknown> = {
    protocolVersion: env.protocolVersion,
    seq: env.seq,
    replyTo: env.replyTo,
    wantsReply: env.wantsReply,
    [kase]: env.body.value,
  };
  try {
    return EnvelopeType.encode(msg).finish();
  } catch (e) {
    throw new BatonError(ErrorCode.BAD_ARGUMENT, `encodeEnvelope: cannot encode ${kase}: ${(e as Error).message}`, { case: kase }, { cause: e });
  }
}

/** Never throws. Decoded `bytes` fields are views on `bytes` (copy them to keep them past a reuse of the frame). */
export function decodeEnvelope(bytes: Uint8Array): DecodeResult {
  let m: EnvelopeMessage;
  try {
    const r = protobuf.Reader.create(bytes);
    r.discardUnknown = false; // keep unknown fields, to tell an unknown body from an empty one
    m = EnvelopeType.decode(r) as unknown as EnvelopeMessage;
  } catch {
    return fail('bad_protobuf', 0, 0, 0, false);
  }
  const version = m.protocolVersion >>> 0;
  const seq = longToNumber(m.seq);
  const replyTo = longToNumber(m.replyTo);
  if (seq > Number.MAX_SAFE_INTEGER || replyTo > Number.MAX_SAFE_INTEGER) return fail('bad_protobuf', 0, 0, 0, false);
  const wantsReply = m.wantsReply === true;
  if (version !== PROTOCOL_VERSION) return fail('bad_version', version, seq, replyTo, wantsReply);
  const kase = m.body;
  if (kase === undefined) {
    return fail(hasUnknownBody(m.$unknowns) ? 'unknown_body' : 'empty_body', version, seq, replyTo, wantsReply);
  }
  const type = BODY_TYPES.get(kase)!;
  let value: Record<string, unknown>;
  try {
    value = type.toObject(m[kase] as protobuf.Message, TO_OBJECT);
  } catch {
    return fail('bad_protobuf', version, seq, replyTo, wantsReply); // not expected: toObject of a decoded message
  }
  if (!fillMessages(type, value)) return fail('bad_protobuf', 0, 0, 0, false);
  return { ok: true, env: { protocolVersion: version, seq, replyTo, wantsReply, body: { case: kase, value } as Body } };
}

// ------------------------------------------------------------ internals ----

interface EnvelopeMessage {
  protocolVersion: number;
  seq: number | protobuf.Long;
  replyTo: number | protobuf.Long;
  wantsReply: boolean;
  body: BodyCase | undefined;
  $unknowns?: Uint8Array[];
  [k: string]: unknown;
}

function fail(code: DecodeFailure, protocolVersion: number, seq: number, replyTo: number, wantsReply: boolean): DecodeResult {
  return { ok: false, code, protocolVersion, seq, replyTo, wantsReply };
}

function longToNumber(v: number | protobuf.Long | undefined): number {
  if (v === undefined || v === null) return 0;
  return typeof v === 'number' ? v : protobuf.util.LongBits.from(v).toNumber(true); // both are uint64
}

/** Does any preserved unknown top-level field have a field number in the body range? Each raw field starts with its varint tag. */
function hasUnknownBody(unknowns: Uint8Array[] | undefined): boolean {
  if (!unknowns) return false;
  for (const raw of unknowns) {
    let tag = 0;
    let shift = 0;
    for (let i = 0; i < raw.length && i < 5; i++) {
      const b = raw[i]!;
      tag += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) break;
    }
    if (Math.floor(tag / 8) >= FIRST_BODY_TAG) return true;
  }
  return false;
}

interface MessageField {
  name: string;
  type: protobuf.Type;
  kind: 'single' | 'repeated' | 'map';
}
interface Plan {
  messages: MessageField[];
  /** The 64-bit integer fields (none is repeated or a map value in this schema; checked anyway). */
  wide: string[];
}
const PLANS = new Map<protobuf.Type, Plan>();
const WIDE_TYPES: ReadonlySet<string> = new Set(['uint64', 'int64', 'sint64', 'fixed64', 'sfixed64']);

/** The message-typed and 64-bit fields of `type` (computed once per type). */
function planOf(type: protobuf.Type): Plan {
  let plan = PLANS.get(type);
  if (plan === undefined) {
    plan = { messages: [], wide: [] };
    for (const f of type.fieldsArray) {
      const rt = f.resolve().resolvedType;
      if (rt instanceof protobuf.Type) plan.messages.push({ name: f.name, type: rt, kind: f.map ? 'map' : f.repeated ? 'repeated' : 'single' });
      else if (WIDE_TYPES.has(f.type)) plan.wide.push(f.name);
    }
    PLANS.set(type, plan);
  }
  return plan;
}

/** A 64-bit field's value (or values) is exact as a JS number: |v| <= 2^53 - 1. */
function exact(v: unknown): boolean {
  if (typeof v === 'number') return Math.abs(v) <= Number.MAX_SAFE_INTEGER;
  if (Array.isArray(v)) return v.every(exact);
  if (v !== null && typeof v === 'object') return Object.values(v).every(exact);
  return true;
}

/**
 * toObject({defaults}) leaves absent nested messages as null; replace them by
 * all-defaults objects (recursively) so decoded messages are complete.
 * Returns false when a 64-bit integer is beyond 2^53 - 1 (rounded by toObject).
 */
function fillMessages(type: protobuf.Type, obj: Record<string, unknown>): boolean {
  const plan = planOf(type);
  for (const w of plan.wide) if (!exact(obj[w])) return false;
  for (const f of plan.messages) {
    const v = obj[f.name];
    if (f.kind === 'single') {
      if (v === null || v === undefined) {
        const d = f.type.toObject(f.type.create(), TO_OBJECT);
        fillMessages(f.type, d);
        obj[f.name] = d;
      } else if (!fillMessages(f.type, v as Record<string, unknown>)) return false;
    } else if (f.kind === 'repeated') {
      for (const e of v as Record<string, unknown>[]) if (!fillMessages(f.type, e)) return false;
    } else {
      for (const e of Object.values(v as Record<string, Record<string, unknown>>)) if (!fillMessages(f.type, e)) return false;
    }
  }
  return true;
}
