import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { decodeEnvelope, encodeEnvelope, DECODE_FAILURES, type DecodeResult } from '../shared/control/codec.js';
import { EnvelopeType, controlRoot } from '../shared/control/schema.js';
import {
  BODY_CASES,
  MemberStatus,
  PROTOCOL_VERSION,
  Role,
  body,
  emptyFlowStats,
  nodeInfo,
  type Body,
  type BodyCase,
  type DisengageReply,
  type EnvelopeObject,
  type FlowStats,
  type NodeInfo,
  type NodeRef,
} from '../shared/control/messages.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';

const SEED = 0xc0de1;

// ------------------------------------------------------------- fixtures ----

const NODE: NodeInfo = {
  id: 7,
  name: 'fd-7',
  role: Role.FD,
  dataAddr: '127.0.0.1:40007',
  controlAddr: '127.0.0.1:41007',
  metricsAddr: '127.0.0.1:9107',
  virtualIp: '',
  virtualPort: 0,
  pid: 4242,
  version: '0.1.0+3fa9c1d2e4b5',
};
const SERVICE: NodeInfo = {
  id: 31,
  name: 'svc-1',
  role: Role.SERVICE,
  dataAddr: '127.0.0.1:40031',
  controlAddr: '127.0.0.1:41031',
  metricsAddr: '',
  virtualIp: '10.1.0.1',
  virtualPort: 8080,
  pid: 4243,
  version: '',
};
const STATS: FlowStats = {
  flowsOwned: 1234,
  flowsTotal: 2 ** 40 + 5, // needs > 32 bits
  rxPackets: Number.MAX_SAFE_INTEGER, // the documented upper bound
  txPackets: 99,
  drops: 3,
  rxDepth: 17,
  txDepth: 4,
  sendQueueBytes: 65536,
  pps: 12345.625,
  realServersUp: 2,
  realServersDown: 's3,s4',
};

const FD_PEER: NodeInfo = {
  id: 8,
  name: 'fd-8',
  role: Role.FD,
  dataAddr: '127.0.0.1:40008',
  controlAddr: '127.0.0.1:41008',
  metricsAddr: '127.0.0.1:9108',
  virtualIp: '',
  virtualPort: 0,
  pid: 4244,
  version: '0.1.0-hotfix+0123456789ab',
};
const REF_8: NodeRef = { id: 8, name: 'fd-8' };
const REF_9: NodeRef = { id: 9, name: 'fd-9' };
/** A complete DisengageReply (reused inside UpgradeReply / PowerdownReply). */
const DISENGAGE_REPLY: DisengageReply = {
  ok: true,
  errorCode: 'BATON_CONNECTION_CLOSED',
  errorMessage: 'fd-8 died; fell back to fd-9',
  migrationId: 2 ** 40 + 3, // needs > 32 bits
  target: 'fd-7',
  policy: 'least-flows',
  shares: [
    { node: REF_8, flows: 700, backup: false },
    { node: REF_9, flows: 534, backup: true },
  ],
  entriesMoved: 1234,
  durationMs: 812.5,
  copyMs: 301.25,
  broadcastMs: 12.75,
  drainMs: 40.125,
  redirectsServed: 77,
  scopeVersion: 13,
  fellBackToBackup: true,
  packetsLost: 2,
  handedOver: true,
  quietMs: 25.5,
  scopeAcked: ['agg-a', 'agg-b', 'fd-8', 'svc-1'],
  scopeSkipped: ['svc-2'],
  framesDrained: 2 ** 33 + 5, // needs > 32 bits
  drainTimedOut: true,
};

/** One fully populated example of every body (typed: the compiler checks each against messages.ts). */
const EXAMPLES: { [K in BodyCase]: Extract<Body, { case: K }>['value'] } = {
  ping: {},
  pong: {},
  errorReply: { code: 'BATON_UNKNOWN_NODE', message: 'node 99 is not registered' },
  heartbeat: { nodeId: 7, stats: STATS, appliedScopeVersion: 12, counters: { forwarded: 1e9, redirected: 0.5, 'dropped.full': 0 } },
  ownershipBatch: { owner: 7, recordVersion: 1, count: 2, records: Uint8Array.from({ length: 32 }, (_, i) => i * 7), remapFrom: 12, remapTo: 13 },
  scopeUpdate: {
    version: 12,
    members: [
      { node: NODE, status: MemberStatus.ACTIVE, inScope: true, stats: STATS },
      { node: SERVICE, status: MemberStatus.DISENGAGING, inScope: false, stats: emptyFlowStats() },
    ],
    tableSize: 65537,
    hashSeed: 0xdeadbeef,
    anchor: ['fd-7', 'fd-8', 'fd-9'],
  },
  register: { node: SERVICE },
  registerAck: { accepted: false, errorCode: 'BATON_CONFIG_INVALID', errorMessage: 'duplicate id 7', scopeVersion: 11, heartbeatIntervalMs: 250 },
  statusRequest: {},
  statusResponse: {
    scopeVersion: 12,
    nodes: [
      { node: NODE, status: MemberStatus.ACTIVE, inScope: true, stats: STATS, lastHeartbeatMsAgo: 120, counters: { forwarded: 5 }, appliedScopeVersion: 12 },
      { node: SERVICE, status: MemberStatus.FAILED, inScope: false, stats: emptyFlowStats(), lastHeartbeatMsAgo: -1, counters: {}, appliedScopeVersion: 0 },
    ],
  },
  disengageRequest: {
    target: 'fd-7',
    targetId: 7,
    policy: 'named',
    inheritor: 'fd-8',
    backup: 'fd-9',
    timeoutMs: 30000,
    migrationId: 2 ** 40 + 3,
    peers: [
      { node: FD_PEER, status: MemberStatus.ACTIVE, inScope: true, stats: STATS },
      { node: { ...FD_PEER, id: 9, name: 'fd-9' }, status: MemberStatus.ACTIVE, inScope: true, stats: emptyFlowStats() },
    ],
    nextScope: { version: 13, members: [REF_8, REF_9], tableSize: 65537, hashSeed: 0xdeadbeef, anchor: ['fd-7', 'fd-8', 'fd-9'] },
    chunkRecords: 4096,
    randomSeed: 0xfeedface,
    stage: 2,
    quietMs: 100,
    stopping: true,
  },
  disengageReply: DISENGAGE_REPLY,
  migrationChunk: {
    migrationId: 2 ** 40 + 3,
    seq: 3,
    owner: 8,
    standby: true,
    count: 2,
    records: Uint8Array.from([0xc0, 0x00, 0x02, 0x0a, 0xff, 0x00, 0x01, 0x80]),
    staged: true,
    sender: 7,
    op: 1,
  },
  migrationAck: { migrationId: 2 ** 40 + 3, seq: 3, imported: 2, errorCode: 'BATON_BAD_EXPORT_FORMAT', errorMessage: 'records length does not match count' },
  migrationProgress: {
    migrationId: 2 ** 40 + 3,
    target: 'fd-7',
    phase: 'copy',
    copied: 600,
    total: 1234,
    rxDepth: 12,
    txDepth: 5,
    sendQueueBytes: 2 ** 33,
    redirects: 41,
  },
  engageRequest: { target: 'fd-7', timeoutMs: 15000 },
  engageReply: { ok: true, errorCode: 'BATON_TIMEOUT', errorMessage: 'fd-9 did not sync in time', scopeVersion: 14, recordsSynced: 2 ** 36 + 1 },
  syncRequest: { joinerId: 7, joinerControlAddr: '127.0.0.1:41007' },
  syncReply: { records: 2 ** 35 + 9 },
  orchestratorHello: { name: 'baton-up-4242' },
  orchestratorCommand: { op: 'restart', node: 'fd-7', bundle: '/srv/baton/node_modules/.cache/baton/baton-3fa9c1d2e4b50123.mjs', command: [] },
  orchestratorReply: { ok: true, errorMessage: 'was not running', pid: 4245, version: '0.1.0+3fa9c1d2e4b5' },
  upgradeRequest: { batch: 2, policy: 'spread', timeoutMs: 60000, bundle: '', command: ['node', '/opt/baton-2/bin/baton.js'] },
  upgradeReply: {
    ok: true,
    errorCode: 'BATON_TIMEOUT',
    errorMessage: 'fd-9 skipped',
    upgraded: ['fd-7', 'fd-8'],
    durationMs: 4321.5,
    disengages: [DISENGAGE_REPLY, { ...DISENGAGE_REPLY, target: 'fd-8', shares: [{ node: REF_9, flows: 9, backup: false }] }],
  },
  powerdownRequest: { thresholdPps: 1500.5, minActive: 2, sustainMs: 10000, policy: 'hash-aligned', stopProcesses: true },
  powerdownReply: {
    ok: true,
    errorCode: 'BATON_INVALID_TRANSITION',
    errorMessage: 'kept 2 active',
    poweredDown: ['fd-7'],
    disengages: [DISENGAGE_REPLY],
  },
  operationProgress: { operation: 'upgrade', message: 'fd-7: disengaged, restarting' },
  replicaBatch: { owner: 12, seq: 2 ** 40 + 3, reset: true, upserts: new Uint8Array([1, 2, 3, 4]), removals: new Uint8Array(16).fill(9) },
};

function env(b: Body, over: Partial<EnvelopeObject> = {}): EnvelopeObject {
  return { protocolVersion: PROTOCOL_VERSION, seq: 41, replyTo: 0, wantsReply: true, body: b, ...over };
}

function expectOk(r: DecodeResult): EnvelopeObject {
  if (!r.ok) throw new Error(`expected ok, got ${r.code}`);
  return r.env;
}

/** Plain copy with Buffers turned into Uint8Arrays, so toEqual compares values, not classes. */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return Uint8Array.from(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

// --------------------------------------------------------------- schema ----

describe('schema vs messages.ts', () => {
  it('has a body case per BODY_CASES entry, in tag order 10..37', () => {
    const fields = EnvelopeType.oneofs['body']!.fieldsArray.slice().sort((a, b) => a.id - b.id);
    expect(fields.map((f) => f.name)).toEqual([...BODY_CASES]);
    expect(fields.map((f) => f.id)).toEqual(Array.from({ length: 28 }, (_, i) => 10 + i));
    expect(EnvelopeType.fieldsArray.filter((f) => !f.partOf).map((f) => [f.name, f.id, f.type])).toEqual([
      ['protocolVersion', 1, 'uint32'],
      ['seq', 2, 'uint64'],
      ['replyTo', 3, 'uint64'],
      ['wantsReply', 4, 'bool'],
    ]);
  });

  /** Every key of the typed fixture is a schema field and vice versa, recursively. */
  function sameShape(type: protobuf.Type, obj: Record<string, unknown>, path: string): void {
    expect(Object.keys(obj).sort(), path).toEqual(type.fieldsArray.map((f) => f.name).sort());
    for (const f of type.fieldsArray) {
      const rt = f.resolve().resolvedType;
      if (!(rt instanceof protobuf.Type)) continue;
      const v = obj[f.name];
      if (f.repeated) for (const e of v as Record<string, unknown>[]) sameShape(rt, e, `${path}.${f.name}[]`);
      else sameShape(rt, v as Record<string, unknown>, `${path}.${f.name}`);
    }
  }
  it.each(BODY_CASES)('%s fixture has exactly the schema fields', (kase) => {
    const field = EnvelopeType.oneofs['body']!.fieldsArray.find((f) => f.name === kase)!;
    sameShape(field.resolvedType as protobuf.Type, EXAMPLES[kase] as Record<string, unknown>, kase);
  });

  it('enum values match the .proto', () => {
    expect(controlRoot.lookupEnum('baton.control.v1.Role').values).toEqual({ ...Role });
    expect(controlRoot.lookupEnum('baton.control.v1.MemberStatus').values).toEqual({ ...MemberStatus });
  });
});

// ----------------------------------------------------------- round trip ----

describe('round trip', () => {
  it.each(BODY_CASES)('%s', (kase) => {
    const e = env(body(kase, EXAMPLES[kase]));
    const got = expectOk(decodeEnvelope(encodeEnvelope(e)));
    expect(plain(got)).toEqual(plain(e));
  });

  it('fills absent nested messages with defaults (decoded messages are complete)', () => {
    // A Register with no node and a heartbeat with no stats, encoded straight with protobufjs.
    const bytes = EnvelopeType.encode({ protocolVersion: 1, seq: 1, heartbeat: { nodeId: 3 } }).finish();
    const got = expectOk(decodeEnvelope(bytes));
    expect(got).toEqual({
      protocolVersion: 1,
      seq: 1,
      replyTo: 0,
      wantsReply: false,
      body: { case: 'heartbeat', value: { nodeId: 3, stats: emptyFlowStats(), appliedScopeVersion: 0, counters: {} } },
    });
    const reg = expectOk(decodeEnvelope(EnvelopeType.encode({ protocolVersion: 1, seq: 2, register: {} }).finish()));
    expect(reg.body).toEqual({ case: 'register', value: { node: nodeInfo({ id: 0, role: Role.ROLE_UNSPECIFIED }) } });
  });

  it('fills absent nested messages in the new bodies too (ScopePlan, NodeRef inside repeated and nested repeated fields)', () => {
    const req = expectOk(decodeEnvelope(EnvelopeType.encode({ protocolVersion: 1, seq: 3, disengageRequest: { target: 'fd-7' } }).finish()));
    expect(req.body).toEqual({
      case: 'disengageRequest',
      value: {
        target: 'fd-7',
        targetId: 0,
        policy: '',
        inheritor: '',
        backup: '',
        timeoutMs: 0,
        migrationId: 0,
        peers: [],
        nextScope: { version: 0, members: [], tableSize: 0, hashSeed: 0, anchor: [] },
        chunkRecords: 0,
        randomSeed: 0,
        stage: 0,
        quietMs: 0,
        stopping: false,
      },
    });
    const up = expectOk(
      decodeEnvelope(EnvelopeType.encode({ protocolVersion: 1, seq: 4, upgradeReply: { disengages: [{ shares: [{ flows: 5 }] }] } }).finish()),
    );
    if (up.body.case !== 'upgradeReply') throw new Error('wrong case');
    expect(up.body.value.disengages[0]!.shares).toEqual([{ node: { id: 0, name: '' }, flows: 5, backup: false }]);
    expect(up.body.value.disengages[0]!.target).toBe('');
  });

  it('keeps enum values unknown to this build (open enums) and negative int64', () => {
    const e = env(
      body('statusResponse', {
        scopeVersion: 1,
        nodes: [{ node: { ...NODE, role: 77 }, status: 99, inScope: false, stats: STATS, lastHeartbeatMsAgo: -1, counters: {}, appliedScopeVersion: 0 }],
      }),
    );
    expect(plain(expectOk(decodeEnvelope(encodeEnvelope(e))))).toEqual(plain(e));
  });

  it('known-answer bytes for a small envelope (wire format is stable)', () => {
    const bytes = encodeEnvelope({ protocolVersion: 1, seq: 300, replyTo: 0, wantsReply: false, body: body('ping', {}) });
    // 08 01: field 1 varint = 1; 10 ac 02: field 2 varint = 300; reply_to = 0 and wants_reply = false
    // are proto3 defaults, not written; 52 00: field 10 (ping), length-delimited, empty.
    expect(Buffer.from(bytes).toString('hex')).toBe('0801' + '10ac02' + '5200');
  });

  it('rejects an unknown body case at encode with BAD_ARGUMENT', () => {
    let err: unknown;
    try {
      encodeEnvelope(env({ case: 'nope', value: {} } as unknown as Body));
    } catch (e) {
      err = e;
    }
    expect(isBatonError(err, ErrorCode.BAD_ARGUMENT)).toBe(true);
  });

  // Property: arbitrary values of every message round-trip exactly.
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const u64 = fc.maxSafeNat();
  const i64 = fc.maxSafeInteger();
  const str = fc.string({ unit: 'grapheme', maxLength: 12 });
  const enumVal = fc.integer({ min: 0, max: 1000 });
  const counters = fc.dictionary(
    fc.string({ unit: 'grapheme', maxLength: 10 }).filter((k) => k !== '__proto__'),
    fc.double(),
    { noNullPrototype: true, maxKeys: 5 },
  );
  const arbNode = fc.record({
    id: u32,
    name: str,
    role: enumVal,
    dataAddr: str,
    controlAddr: str,
    metricsAddr: str,
    virtualIp: str,
    virtualPort: u32,
    pid: u32,
    version: str,
  });
  const arbStats = fc.record({
    flowsOwned: u64,
    flowsTotal: u64,
    rxPackets: u64,
    txPackets: u64,
    drops: u64,
    rxDepth: u32,
    txDepth: u32,
    sendQueueBytes: u64,
    pps: fc.double(),
    realServersUp: u32,
    realServersDown: str,
  });
  const arbMember = fc.record({ node: arbNode, status: enumVal, inScope: fc.boolean(), stats: arbStats });
  const arbRef = fc.record({ id: u32, name: str });
  const arbDisengageReply = fc.record({
    ok: fc.boolean(),
    errorCode: str,
    errorMessage: str,
    migrationId: u64,
    target: str,
    policy: str,
    shares: fc.array(fc.record({ node: arbRef, flows: u64, backup: fc.boolean() }), { maxLength: 3 }),
    entriesMoved: u64,
    durationMs: fc.double(),
    copyMs: fc.double(),
    broadcastMs: fc.double(),
    drainMs: fc.double(),
    redirectsServed: u64,
    scopeVersion: u64,
    fellBackToBackup: fc.boolean(),
    packetsLost: u64,
    handedOver: fc.boolean(),
    quietMs: fc.double(),
    scopeAcked: fc.array(str, { maxLength: 3 }),
    scopeSkipped: fc.array(str, { maxLength: 3 }),
    framesDrained: u64,
    drainTimedOut: fc.boolean(),
  });
  const arbBody: fc.Arbitrary<Body> = fc.oneof(
    fc.constant(body('ping', {})),
    fc.constant(body('pong', {})),
    fc.constant(body('statusRequest', {})),
    fc.record({ code: str, message: str }).map((v) => body('errorReply', v)),
    fc.record({ nodeId: u32, stats: arbStats, appliedScopeVersion: u64, counters }).map((v) => body('heartbeat', v)),
    fc
      .record({ owner: u32, recordVersion: u32, count: u32, records: fc.uint8Array({ maxLength: 64 }), remapFrom: u32, remapTo: u32 })
      .map((v) => body('ownershipBatch', v)),
    fc
      .record({
        version: u64,
        members: fc.array(arbMember, { maxLength: 4 }),
        tableSize: u32,
        hashSeed: u32,
        anchor: fc.array(str, { maxLength: 4 }),
      })
      .map((v) => body('scopeUpdate', v)),
    arbNode.map((node) => body('register', { node })),
    fc
      .record({ accepted: fc.boolean(), errorCode: str, errorMessage: str, scopeVersion: u64, heartbeatIntervalMs: u32 })
      .map((v) => body('registerAck', v)),
    fc
      .record({
        scopeVersion: u64,
        nodes: fc.array(
          fc.record({
            node: arbNode,
            status: enumVal,
            inScope: fc.boolean(),
            stats: arbStats,
            lastHeartbeatMsAgo: i64,
            counters,
            appliedScopeVersion: u64,
          }),
          { maxLength: 3 },
        ),
      })
      .map((v) => body('statusResponse', v)),
    fc
      .record({
        target: str,
        targetId: u32,
        policy: str,
        inheritor: str,
        backup: str,
        timeoutMs: u32,
        migrationId: u64,
        peers: fc.array(arbMember, { maxLength: 3 }),
        nextScope: fc.record({ version: u64, members: fc.array(arbRef, { maxLength: 4 }), tableSize: u32, hashSeed: u32, anchor: fc.array(str, { maxLength: 4 }) }),
        chunkRecords: u32,
        randomSeed: u32,
        stage: u32,
        quietMs: u32,
        stopping: fc.boolean(),
      })
      .map((v) => body('disengageRequest', v)),
    arbDisengageReply.map((v) => body('disengageReply', v)),
    fc
      .record({ migrationId: u64, seq: u32, owner: u32, standby: fc.boolean(), count: u32, records: fc.uint8Array({ maxLength: 64 }), staged: fc.boolean(), sender: u32, op: u32 })
      .map((v) => body('migrationChunk', v)),
    fc.record({ migrationId: u64, seq: u32, imported: u32, errorCode: str, errorMessage: str }).map((v) => body('migrationAck', v)),
    fc
      .record({
        migrationId: u64,
        target: str,
        phase: str,
        copied: u64,
        total: u64,
        rxDepth: u32,
        txDepth: u32,
        sendQueueBytes: u64,
        redirects: u64,
      })
      .map((v) => body('migrationProgress', v)),
    fc.record({ target: str, timeoutMs: u32 }).map((v) => body('engageRequest', v)),
    fc
      .record({ ok: fc.boolean(), errorCode: str, errorMessage: str, scopeVersion: u64, recordsSynced: u64 })
      .map((v) => body('engageReply', v)),
    fc.record({ joinerId: u32, joinerControlAddr: str }).map((v) => body('syncRequest', v)),
    fc.record({ records: u64 }).map((v) => body('syncReply', v)),
    fc.record({ name: str }).map((v) => body('orchestratorHello', v)),
    fc.record({ op: str, node: str, bundle: str, command: fc.array(str, { maxLength: 3 }) }).map((v) => body('orchestratorCommand', v)),
    fc.record({ ok: fc.boolean(), errorMessage: str, pid: u32, version: str }).map((v) => body('orchestratorReply', v)),
    fc.record({ batch: u32, policy: str, timeoutMs: u32, bundle: str, command: fc.array(str, { maxLength: 3 }) }).map((v) => body('upgradeRequest', v)),
    fc
      .record({
        ok: fc.boolean(),
        errorCode: str,
        errorMessage: str,
        upgraded: fc.array(str, { maxLength: 3 }),
        durationMs: fc.double(),
        disengages: fc.array(arbDisengageReply, { maxLength: 2 }),
      })
      .map((v) => body('upgradeReply', v)),
    fc
      .record({ thresholdPps: fc.double(), minActive: u32, sustainMs: u32, policy: str, stopProcesses: fc.boolean() })
      .map((v) => body('powerdownRequest', v)),
    fc
      .record({
        ok: fc.boolean(),
        errorCode: str,
        errorMessage: str,
        poweredDown: fc.array(str, { maxLength: 3 }),
        disengages: fc.array(arbDisengageReply, { maxLength: 2 }),
      })
      .map((v) => body('powerdownReply', v)),
    fc.record({ operation: str, message: str }).map((v) => body('operationProgress', v)),
    fc
      .record({ owner: u32, seq: u64, reset: fc.boolean(), upserts: fc.uint8Array({ maxLength: 64 }), removals: fc.uint8Array({ maxLength: 64 }) })
      .map((v) => body('replicaBatch', v)),
  );
  const arbEnv: fc.Arbitrary<EnvelopeObject> = fc.record({
    protocolVersion: fc.constant(PROTOCOL_VERSION),
    seq: u64,
    replyTo: u64,
    wantsReply: fc.boolean(),
    body: arbBody,
  });

  it('property: every envelope round-trips', () => {
    fc.assert(
      fc.property(arbEnv, (e) => {
        expect(plain(expectOk(decodeEnvelope(encodeEnvelope(e))))).toEqual(plain(e));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });

  it('property: mutated valid envelopes never throw and give a known outcome', () => {
    fc.assert(
      fc.property(arbEnv, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (e, muts) => {
        const bytes = Uint8Array.from(encodeEnvelope(e));
        for (const [pos, val] of muts) bytes[pos % bytes.length] = val;
        checkNeverThrows(bytes);
      }),
      { seed: SEED + 1, numRuns: 1000 },
    );
  });
});

// -------------------------------------------------------------- garbage ----

function checkNeverThrows(bytes: Uint8Array): DecodeResult {
  const r = decodeEnvelope(bytes); // a throw fails the property
  if (r.ok) {
    expect(r.env.protocolVersion).toBe(PROTOCOL_VERSION);
    expect(BODY_CASES).toContain(r.env.body.case);
  } else expect(DECODE_FAILURES).toContain(r.code);
  return r;
}

describe('garbage', () => {
  it('property: random bytes never throw', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        const r = checkNeverThrows(b);
        seen.add(r.ok ? 'ok' : r.code);
      }),
      { seed: SEED + 2, numRuns: 3000 },
    );
    // Random bytes mostly fail to parse, or parse with a wrong version.
    expect(seen.has('bad_protobuf')).toBe(true);
    expect(seen.has('bad_version')).toBe(true);
  });

  const VALID = env(body('scopeUpdate', EXAMPLES.scopeUpdate), { seq: 5, replyTo: 0, wantsReply: false });

  it('every truncation of a valid envelope fails with the right reason', () => {
    const bytes = encodeEnvelope(VALID);
    // Where the body field starts: the same envelope without a body (header fields 1..4 come first on the wire).
    const bodyStart = EnvelopeType.encode({ protocolVersion: 1, seq: 5, replyTo: 0, wantsReply: false }).finish().length;
    expect(bodyStart).toBeGreaterThan(2);
    for (let k = 0; k < bytes.length; k++) {
      const r = decodeEnvelope(bytes.subarray(0, k));
      expect(r.ok, `prefix ${k}`).toBe(false);
      if (r.ok) continue;
      if (k === 0) expect(r.code).toBe('bad_version'); // nothing at all: protocol_version reads as 0
      else if (k === bodyStart) expect(r.code).toBe('empty_body'); // header intact, body cut off whole
      else if (k > bodyStart) expect(r.code, `prefix ${k}`).toBe('bad_protobuf'); // cut inside the body
      else expect(['bad_protobuf', 'empty_body'], `prefix ${k}`).toContain(r.code); // inside / between header fields
    }
  });

  // Hand-made frames: [description, bytes (hex), expected outcome].
  const TABLE: [string, string, string][] = [
    ['empty frame', '', 'bad_version'],
    ['invalid wire type 7', '0f', 'bad_protobuf'],
    ['varint tag never ends', 'ffffffffffffffffffffff', 'bad_protobuf'],
    ['truncated varint value', '08', 'bad_protobuf'],
    ['length-delimited beyond the frame', '080182010a', 'bad_protobuf'],
    ['end-group without start', '0c', 'bad_protobuf'],
    ['version 1, no body (empty oneof)', '0801', 'empty_body'],
    ['version 1, seq, wants_reply, no body', '080110052001', 'empty_body'],
    ['version 1, unknown non-body field 5, no body', '08012807', 'empty_body'],
    ['version 1, unknown body tag 38 (first spare; newer peer)', '0801b20200', 'unknown_body'],
    ['version 1, unknown body tag 49 (last spare)', '08018a0300', 'unknown_body'],
    ['version 1, unknown body tag 50', '0801920300', 'unknown_body'],
    ['version 1, empty disengage_request (tag 20, now known)', '0801a20100', 'ok'],
    ['version 1, empty engage_request (tag 25, now known)', '0801ca0100', 'ok'],
    ['version 1, empty operation_progress (tag 36, now known)', '0801a20200', 'ok'],
    ['version 1, empty replica_batch (tag 37, the last known)', '0801aa0200', 'ok'],
    ['version 2 with a ping', '08025200', 'bad_version'],
    ['version 0 (absent) with a ping', '5200', 'bad_version'],
    ['version 1, ping', '08015200', 'ok'],
    ['version 1, ping, then an unknown field (ignored)', '080152002807', 'ok'],
  ];
  it.each(TABLE)('%s', (_name, hex, want) => {
    const r = decodeEnvelope(Buffer.from(hex, 'hex'));
    expect(r.ok ? 'ok' : r.code).toBe(want);
  });

  it('a wrong protocol_version still reports seq / reply_to / wants_reply (so the receiver can answer)', () => {
    const r = decodeEnvelope(encodeEnvelope(env(body('statusRequest', {}), { protocolVersion: 2, seq: 77, wantsReply: true })));
    expect(r).toEqual({ ok: false, code: 'bad_version', protocolVersion: 2, seq: 77, replyTo: 0, wantsReply: true });
  });

  it('an unknown body keeps the header too', () => {
    const r = decodeEnvelope(Buffer.from('0801' + '1009' + '2001' + 'b20200', 'hex')); // body tag 38
    expect(r).toEqual({ ok: false, code: 'unknown_body', protocolVersion: 1, seq: 9, replyTo: 0, wantsReply: true });
  });

  it('a bytes field aliases the frame (documented): copy records to keep them', () => {
    const frame = Uint8Array.from(encodeEnvelope(env(body('ownershipBatch', EXAMPLES.ownershipBatch))));
    const got = expectOk(decodeEnvelope(frame));
    if (got.body.case !== 'ownershipBatch') throw new Error('wrong case');
    expect(got.body.value.records.buffer).toBe(frame.buffer);
    const chunkFrame = Uint8Array.from(encodeEnvelope(env(body('migrationChunk', EXAMPLES.migrationChunk))));
    const chunk = expectOk(decodeEnvelope(chunkFrame));
    if (chunk.body.case !== 'migrationChunk') throw new Error('wrong case');
    expect(chunk.body.value.records.buffer).toBe(chunkFrame.buffer);
  });
});
