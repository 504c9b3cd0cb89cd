/**
 * decodeEnvelope (shared/control/codec.ts): never throws; a failure is one
 * of DECODE_FAILURES (the channel's rx_bad_protobuf / rx_bad_version /
 * rx_empty_body / rx_unknown_body counters) with what could be read of the
 * header. An accepted envelope is of this protocol version, has a known body
 * whose value is complete and of the schema's field types, and re-encodes
 * (encodeEnvelope must not throw on anything decode returned: a relay or a
 * reply builds on it) to bytes that decode to the same value.
 */
import protobuf from 'protobufjs';
import fc from 'fast-check';
import { decodeEnvelope, encodeEnvelope, DECODE_FAILURES } from '../../../shared/control/codec.js';
import { EnvelopeType } from '../../../shared/control/schema.js';
import { PROTOCOL_VERSION } from '../../../shared/control/messages.js';
import { ensure, hex, noThrow, sameValue, Tally, violated, type FuzzTarget } from '../check.js';
import { arbEnvelopeBytes, pbMutated, shapeError } from '../proto.js';

const BODY_TYPES = new Map(EnvelopeType.oneofs['body']!.fieldsArray.map((f) => [f.name, f.resolvedType as protobuf.Type]));

/** Random bytes, valid envelopes, and mutants of them (length prefixes to extremes, then byte ops). */
export const arbControlFrame: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  { weight: 1, arbitrary: arbEnvelopeBytes },
  { weight: 4, arbitrary: pbMutated(arbEnvelopeBytes) },
);

const tally = new Tally();

export const controlTarget: FuzzTarget<Uint8Array> = {
  name: 'control/decodeEnvelope',
  covers: 'shared/control/codec.ts decodeEnvelope, encodeEnvelope (protobuf Envelope, every body case)',
  arbitrary: arbControlFrame,
  tally,
  mustReach: ['ok', ...DECODE_FAILURES],
  check(bytes) {
    const r = noThrow('decodeEnvelope', () => decodeEnvelope(bytes));
    const what = (): string => `envelope ${hex(bytes, 96)}`;
    if (!r.ok) {
      ensure(DECODE_FAILURES.includes(r.code), () => `${what()}: failure code ${String(r.code)}`);
      tally.add(r.code);
      for (const [k, v] of [['protocolVersion', r.protocolVersion], ['seq', r.seq], ['replyTo', r.replyTo]] as const) {
        ensure(Number.isInteger(v) && v >= 0, () => `${what()}: ${r.code} with ${k} ${v}`);
      }
      ensure(typeof r.wantsReply === 'boolean', () => `${what()}: wantsReply ${String(r.wantsReply)}`);
      if (r.code === 'bad_protobuf') ensure(r.protocolVersion === 0 && r.seq === 0 && r.replyTo === 0 && !r.wantsReply, () => `${what()}: bad_protobuf with a header`);
      if (r.code !== 'bad_protobuf' && r.code !== 'bad_version') ensure(r.protocolVersion === PROTOCOL_VERSION, () => `${what()}: ${r.code} of version ${r.protocolVersion}`);
      return;
    }
    tally.add('ok');
    const env = r.env;
    ensure(env.protocolVersion === PROTOCOL_VERSION, () => `${what()}: accepted version ${env.protocolVersion}`);
    ensure(Number.isInteger(env.seq) && env.seq >= 0 && Number.isInteger(env.replyTo) && env.replyTo >= 0 && typeof env.wantsReply === 'boolean', () => `${what()}: header ${JSON.stringify([env.seq, env.replyTo, env.wantsReply])}`);
    const type = BODY_TYPES.get(env.body.case);
    ensure(type !== undefined, () => `${what()}: accepted body case ${env.body.case}`);
    const bad = shapeError(type, env.body.value, env.body.case);
    ensure(bad === null, () => `${what()}: accepted an incomplete or mistyped body: ${bad}`);
    let again: Uint8Array;
    try {
      again = encodeEnvelope(env);
    } catch (e) {
      return violated(`${what()}: encodeEnvelope of the decoded envelope threw ${(e as Error).message}`, e);
    }
    const r2 = decodeEnvelope(again);
    ensure(r2.ok, () => `${what()}: its re-encoding ${hex(again, 96)} does not decode (${r2.ok ? '' : r2.code})`);
    const diff = sameValue(r2.env, env);
    ensure(diff === null, () => `${what()}: decode(encode(decoded)) differs: ${diff}`);
  },
};
