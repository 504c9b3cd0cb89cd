/**
 * Control-plane codec throughput. The claim being checked: flow-ownership
 * broadcasts carry records in a fixed 16-byte binary layout inside one
 * protobuf `bytes` field, because one protobuf message per record is several
 * times slower. Baseline, measured in the same run: the same records as a
 * `repeated OwnershipRecordPB` (7 uint32 fields) encoded/decoded by protobufjs.
 * Also reported (no baseline): a heartbeat envelope encode + decode.
 */
import protobuf from 'protobufjs';
import type { BenchCase, BenchResult } from '../lib.js';
import { consume, mulberry32, rateResult, sampleRate, scaleSpread } from '../lib.js';
import { decodeEnvelope, encodeEnvelope } from '../../shared/control/codec.js';
import { OWNERSHIP_RECORD_SIZE, OWNERSHIP_RECORD_VERSION, forEachOwnershipBatch, packOwnership } from '../../shared/control/ownership.js';
import { PROTOCOL_VERSION, type EnvelopeObject } from '../../shared/control/messages.js';

const RECORDS = 256; // one full OwnershipBuffer flush

interface Rec {
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  proto: number;
  flags: number;
  owner: number;
}

function makeRecords(): Rec[] {
  const rnd = mulberry32(0x0c0a7201);
  return Array.from({ length: RECORDS }, () => ({
    srcIp: rnd(),
    dstIp: rnd(),
    srcPort: rnd() & 0xffff,
    dstPort: rnd() & 0xffff,
    proto: 6,
    flags: rnd() & 3,
    owner: rnd() & 0xffff,
  }));
}

// Baseline schema: what "protobuf per record" would be.
const RecordPB = new protobuf.Type('OwnershipRecordPB')
  .add(new protobuf.Field('srcIp', 1, 'uint32'))
  .add(new protobuf.Field('dstIp', 2, 'uint32'))
  .add(new protobuf.Field('srcPort', 3, 'uint32'))
  .add(new protobuf.Field('dstPort', 4, 'uint32'))
  .add(new protobuf.Field('proto', 5, 'uint32'))
  .add(new protobuf.Field('flags', 6, 'uint32'))
  .add(new protobuf.Field('owner', 7, 'uint32'));
const BatchPB = new protobuf.Type('OwnershipBatchPB').add(new protobuf.Field('owner', 1, 'uint32')).add(new protobuf.Field('records', 2, 'OwnershipRecordPB', 'repeated'));
new protobuf.Root().define('bench').add(RecordPB).add(BatchPB);

const bench: BenchCase = {
  id: 'control',
  title: 'Control plane: ownership batch (fixed 16-byte records in bytes) vs protobuf per record; heartbeat envelope',
  async run(progress) {
    const recs = makeRecords();
    const results: BenchResult[] = [];
    const scratch = new Uint8Array(RECORDS * OWNERSHIP_RECORD_SIZE);
    let seq = 1;

    const encodeFixed = (): Uint8Array => {
      for (let i = 0; i < RECORDS; i++) {
        const r = recs[i]!;
        packOwnership(scratch, i * OWNERSHIP_RECORD_SIZE, r.srcIp, r.dstIp, r.srcPort, r.dstPort, r.proto, r.flags, r.owner);
      }
      return encodeEnvelope({
        protocolVersion: PROTOCOL_VERSION,
        seq: seq++,
        replyTo: 0,
        wantsReply: false,
        body: { case: 'ownershipBatch', value: { owner: 7, recordVersion: OWNERSHIP_RECORD_VERSION, count: RECORDS, records: scratch, remapFrom: 0, remapTo: 0 } },
      });
    };
    const encodePB = (): Uint8Array => BatchPB.encode({ owner: 7, records: recs }).finish();

    progress('ownership encode');
    // Each operation is one 256-record batch; rates are reported per record.
    const encFixed = scaleSpread(sampleRate((n) => {
      for (let i = 0; i < n; i++) consume(encodeFixed().length);
    }), RECORDS);
    const encPB = scaleSpread(sampleRate((n) => {
      for (let i = 0; i < n; i++) consume(encodePB().length);
    }), RECORDS);
    results.push(rateResult('ownership encode (pack + envelope)', encFixed, 'records/s', encPB, 'protobuf repeated message per record'));

    progress('ownership decode');
    const fixedBytes = encodeFixed();
    const pbBytes = encodePB();
    let acc = 0;
    const visit = (s: number, d: number, sp: number, dp: number, p: number, f: number, o: number): void => {
      acc = (acc + s + d + sp + dp + p + f + o) | 0;
    };
    const decFixed = scaleSpread(sampleRate((n) => {
      for (let i = 0; i < n; i++) {
        const r = decodeEnvelope(fixedBytes);
        if (r.ok && r.env.body.case === 'ownershipBatch') consume(forEachOwnershipBatch(r.env.body.value, visit));
      }
    }), RECORDS);
    const decPB = scaleSpread(sampleRate((n) => {
      for (let i = 0; i < n; i++) {
        const m = BatchPB.decode(pbBytes) as unknown as { records: Rec[] };
        for (const r of m.records) visit(r.srcIp, r.dstIp, r.srcPort, r.dstPort, r.proto, r.flags, r.owner);
      }
    }), RECORDS);
    consume(acc);
    results.push(rateResult('ownership decode + apply', decFixed, 'records/s', decPB, 'protobuf repeated message per record'));
    results.push({ name: 'ownership batch size (256 records)', value: fixedBytes.length, unit: 'bytes', baseline: pbBytes.length, baselineName: 'protobuf per record', ratio: pbBytes.length / fixedBytes.length, note: 'ratio > 1: fixed layout is smaller' });

    progress('heartbeat envelope');
    const hb: EnvelopeObject = {
      protocolVersion: PROTOCOL_VERSION,
      seq: 123456,
      replyTo: 0,
      wantsReply: false,
      body: {
        case: 'heartbeat',
        value: {
          nodeId: 7,
          stats: { flowsOwned: 10_000, flowsTotal: 12_000, rxPackets: 9e9, txPackets: 9e9, drops: 12, rxDepth: 3, txDepth: 1, sendQueueBytes: 0, pps: 250_000.5, realServersUp: 0, realServersDown: '' },
          appliedScopeVersion: 42,
          counters: { forwarded: 1e9, redirected: 1e6, dropped_no_flow: 3, rewritten: 1e9 },
        },
      },
    };
    const hbRate = sampleRate((n) => {
      for (let i = 0; i < n; i++) {
        const r = decodeEnvelope(encodeEnvelope(hb));
        consume(r.ok ? 1 : 0);
      }
    });
    results.push(rateResult('heartbeat envelope encode + decode', hbRate, 'msgs/s'));
    return results;
  },
};

export default bench;
