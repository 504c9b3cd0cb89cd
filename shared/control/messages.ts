/**
 * TypeScript shapes of proto/baton/control/v1/control.proto (hand-written;
 * test/control-codec.test.ts checks they match the schema field by field).
 *
 * Conventions:
 * - Field names are the proto names in camelCase (protobufjs default).
 * - Every 64-bit integer is a JS number; the protocol keeps them < 2^53.
 * - Enums are plain numbers (`as const` objects below). A value unknown to
 *   this build (sent by a newer peer) stays a number and must be tolerated.
 * - Decoded messages are complete: every scalar has its proto3 default, every
 *   repeated field is an array, every map an object, and every nested message
 *   is present (all-defaults when it was absent on the wire).
 * - The envelope body is a discriminated union `{ case, value }`.
 */

import { ErrorCode, isBatonError } from '../errors.js';
export const PROTOCOL_VERSION = 1;

export const Role = {
  ROLE_UNSPECIFIED: 0,
  HASH_TIER: 1,
  FD: 2,
  SERVICE: 3,
  CLIENT: 4,
} as const;
export type Role = (typeof Role)[keyof typeof Role];

export const MemberStatus = {
  STATUS_UNSPECIFIED: 0,
  JOINING: 1,
  ACTIVE: 2,
  DISENGAGING: 3,
  DISENGAGED: 4,
  FAILED: 5,
} as const;
export type MemberStatus = (typeof MemberStatus)[keyof typeof MemberStatus];

/*
 * ErrorReply.code and every reply's errorCode carry an ErrorCode
 * (shared/errors.ts: the one list, the channel's own codes included). They
 * are typed string here because they come off the wire: read them through
 * errorCodeFromWire.
 */

export interface NodeInfo {
  id: number;
  name: string;
  /** A Role value (number; may be unknown to this build). */
  role: number;
  dataAddr: string;
  controlAddr: string;
  metricsAddr: string;
  virtualIp: string;
  virtualPort: number;
  pid: number;
  /** Build id of the node's process (shared/build-info.ts); "" if unknown. */
  version: string;
}

export interface FlowStats {
  flowsOwned: number;
  flowsTotal: number;
  rxPackets: number;
  txPackets: number;
  drops: number;
  rxDepth: number;
  txDepth: number;
  sendQueueBytes: number;
  pps: number;
  /** FDs with realServers: endpoints the health check holds up, and the names of those it does not ("" none). */
  realServersUp: number;
  realServersDown: string;
}

export type Ping = Record<string, never>;
export type Pong = Record<string, never>;
export type StatusRequest = Record<string, never>;

export interface ErrorReply {
  code: string;
  message: string;
}

export interface Register {
  node: NodeInfo;
}

export interface RegisterAck {
  accepted: boolean;
  errorCode: string;
  errorMessage: string;
  scopeVersion: number;
  heartbeatIntervalMs: number;
}

export interface Heartbeat {
  nodeId: number;
  stats: FlowStats;
  appliedScopeVersion: number;
  counters: Record<string, number>;
}

export interface Member {
  node: NodeInfo;
  /** A MemberStatus value. */
  status: number;
  inScope: boolean;
  stats: FlowStats;
}

export interface ScopeUpdate {
  version: number;
  members: Member[];
  tableSize: number;
  hashSeed: number;
  /** FDs the table is anchored on (sorted, a superset of the in-scope FDs); empty = the in-scope FDs. */
  anchor: string[];
}

export interface OwnershipBatch {
  owner: number;
  recordVersion: number;
  count: number;
  /** `count` records of OWNERSHIP_RECORD_SIZE bytes (shared/control/ownership.ts). */
  records: Uint8Array;
  /** Bulk re-assignment: entries owned by remapFrom now belong to remapTo (0 = none); applied before the records. */
  remapFrom: number;
  remapTo: number;
}

/** Flow-state replication to a backup FD (docs/failure.md). */
export interface ReplicaBatch {
  owner: number;
  seq: number;
  /** Drop every replica held from `owner` first. */
  reset: boolean;
  /** A flow-export chunk (empty: none). */
  upserts: Uint8Array;
  /** REPLICA_REMOVAL_SIZE-byte key records (distributor/replication.ts). */
  removals: Uint8Array;
}

export interface NodeStatus {
  node: NodeInfo;
  status: number;
  inScope: boolean;
  stats: FlowStats;
  /** -1: never heard from. */
  lastHeartbeatMsAgo: number;
  counters: Record<string, number>;
  appliedScopeVersion: number;
}

export interface StatusResponse {
  scopeVersion: number;
  nodes: NodeStatus[];
}

// -------------------------------------------------- disengage (tags 20..36) ----

export interface NodeRef {
  id: number;
  name: string;
}

export interface ScopePlan {
  version: number;
  members: NodeRef[];
  tableSize: number;
  hashSeed: number;
  /** FDs the table is anchored on (sorted); empty = the members. */
  anchor: string[];
}

/**
 * A service drain's quiet interval when its FINISH request carries none
 * (quietMs 0): the manager's default (config operations.serviceQuietMs
 * defaults to the same) and the service node's fallback.
 */
export const DEFAULT_SERVICE_QUIET_MS = 1000;

export interface DisengageRequest {
  target: string;
  targetId: number;
  policy: string;
  inheritor: string;
  backup: string;
  timeoutMs: number;
  migrationId: number;
  peers: Member[];
  nextScope: ScopePlan;
  chunkRecords: number;
  randomSeed: number;
  /** A DisengageStage (decoded: 0 when absent). Optional for senders: absent = ALL. */
  stage?: number;
  /** FINISH / ALL: the FD reports only after receiving no frame for this long (and its kernel receive queue is empty); absent = 0. */
  quietMs?: number;
  /**
   * A service node asks the manager to drain it because its process is
   * stopping: drained even if it is the last ACTIVE service node; one already
   * DISENGAGED is answered ok at once. Absent = false.
   */
  stopping?: boolean;
}

/** DisengageRequest.stage: the steps of a disengage the manager asks for one at a time (docs/disengage.md). */
export const DisengageStage = {
  /** Hand over, purge and drain in one request (no manager in between: benches, tools driving a migration client). */
  ALL: 0,
  /** Leaving mode, select, copy, switch, broadcast; answered once the flows belong to the inheritors (or the hand-over failed). */
  HAND_OVER: 1,
  /** Sent once every hash tier and member runs a scope without the FD: purge, drain, go quiet. */
  FINISH: 2,
  /** The manager stopped waiting: abort unless already handed over; the reply says which (`handedOver`). */
  ABORT: 3,
} as const;

export interface InheritorShare {
  node: NodeRef;
  flows: number;
  backup: boolean;
}

export interface DisengageReply {
  ok: boolean;
  errorCode: string;
  errorMessage: string;
  migrationId: number;
  target: string;
  policy: string;
  shares: InheritorShare[];
  entriesMoved: number;
  durationMs: number;
  copyMs: number;
  broadcastMs: number;
  drainMs: number;
  redirectsServed: number;
  scopeVersion: number;
  fellBackToBackup: boolean;
  packetsLost: number;
  /** The flows belong to the inheritors (switched and broadcast): the FD cannot go back to ACTIVE. */
  handedOver: boolean;
  /** FINISH: how long the FD waited to be quiet (ms). */
  quietMs: number;
  /** Manager's reply: the hash tiers and members that acknowledged the scope without the FD. */
  scopeAcked: string[];
  /** Manager's reply: members not connected and tiers not running, not waited for. */
  scopeSkipped: string[];
  /** Service drain: frames the service node received while it waited to be quiet (decoded: 0 when absent). */
  framesDrained?: number;
  /** Service drain: it ended at its timeout, not quiet; the node is DISENGAGED anyway (decoded: false when absent). */
  drainTimedOut?: boolean;
}

export interface MigrationChunk {
  migrationId: number;
  seq: number;
  owner: number;
  standby: boolean;
  count: number;
  records: Uint8Array;
  /** Staged copy: entries stay redirects to `sender` until a COMMIT (decoded: always present; optional for senders). */
  staged?: boolean;
  /** Node id of the sending FD (staged copies). */
  sender?: number;
  /** MigrationOp (migration-client/migration-receiver.ts): 0 COPY, 1 COMMIT, 2 ABORT, 3 DONE. */
  op?: number;
}

export interface MigrationAck {
  migrationId: number;
  seq: number;
  imported: number;
  errorCode: string;
  errorMessage: string;
}

export interface MigrationProgress {
  migrationId: number;
  target: string;
  phase: string;
  copied: number;
  total: number;
  rxDepth: number;
  txDepth: number;
  sendQueueBytes: number;
  redirects: number;
}

export interface EngageRequest {
  target: string;
  timeoutMs: number;
}

export interface EngageReply {
  ok: boolean;
  errorCode: string;
  errorMessage: string;
  scopeVersion: number;
  recordsSynced: number;
}

export interface SyncRequest {
  joinerId: number;
  joinerControlAddr: string;
}

export interface SyncReply {
  records: number;
}

export interface OrchestratorHello {
  name: string;
}

export interface OrchestratorCommand {
  op: string;
  node: string;
  /** start/restart: a bundle file to run; with `command`, neither = the current sources (restart) or the last build (start). */
  bundle: string;
  /** start/restart: a command (argv) that runs `baton`, instead of a bundle. */
  command: string[];
}

export interface OrchestratorReply {
  ok: boolean;
  errorMessage: string;
  pid: number;
  /** Build id the started process reported ("" for stop). */
  version: string;
}

export interface UpgradeRequest {
  batch: number;
  policy: string;
  timeoutMs: number;
  /**
   * The build FDs restart with: a bundle file or a command (argv) running `baton`.
   * Optional for senders (absent = the orchestrator builds the current sources); decoded as "" / [].
   */
  bundle?: string;
  command?: string[];
}

export interface UpgradeReply {
  ok: boolean;
  errorCode: string;
  errorMessage: string;
  upgraded: string[];
  durationMs: number;
  disengages: DisengageReply[];
}

export interface PowerdownRequest {
  thresholdPps: number;
  minActive: number;
  sustainMs: number;
  policy: string;
  stopProcesses: boolean;
}

export interface PowerdownReply {
  ok: boolean;
  errorCode: string;
  errorMessage: string;
  poweredDown: string[];
  disengages: DisengageReply[];
}

export interface OperationProgress {
  operation: string;
  message: string;
}

/** Every envelope body, by oneof case name (proto field name in camelCase). */
export interface BodyMap {
  ping: Ping;
  pong: Pong;
  errorReply: ErrorReply;
  heartbeat: Heartbeat;
  ownershipBatch: OwnershipBatch;
  scopeUpdate: ScopeUpdate;
  register: Register;
  registerAck: RegisterAck;
  statusRequest: StatusRequest;
  statusResponse: StatusResponse;
  disengageRequest: DisengageRequest;
  disengageReply: DisengageReply;
  migrationChunk: MigrationChunk;
  migrationAck: MigrationAck;
  migrationProgress: MigrationProgress;
  engageRequest: EngageRequest;
  engageReply: EngageReply;
  syncRequest: SyncRequest;
  syncReply: SyncReply;
  orchestratorHello: OrchestratorHello;
  orchestratorCommand: OrchestratorCommand;
  orchestratorReply: OrchestratorReply;
  upgradeRequest: UpgradeRequest;
  upgradeReply: UpgradeReply;
  powerdownRequest: PowerdownRequest;
  powerdownReply: PowerdownReply;
  operationProgress: OperationProgress;
  replicaBatch: ReplicaBatch;
}
export type BodyCase = keyof BodyMap;
export type Body = { [K in BodyCase]: { case: K; value: BodyMap[K] } }[BodyCase];

/** All body cases, in tag order (10..37). */
export const BODY_CASES: readonly BodyCase[] = [
  'ping',
  'pong',
  'errorReply',
  'heartbeat',
  'ownershipBatch',
  'scopeUpdate',
  'register',
  'registerAck',
  'statusRequest',
  'statusResponse',
  'disengageRequest',
  'disengageReply',
  'migrationChunk',
  'migrationAck',
  'migrationProgress',
  'engageRequest',
  'engageReply',
  'syncRequest',
  'syncReply',
  'orchestratorHello',
  'orchestratorCommand',
  'orchestratorReply',
  'upgradeRequest',
  'upgradeReply',
  'powerdownRequest',
  'powerdownReply',
  'operationProgress',
  'replicaBatch',
];

export interface EnvelopeObject {
  protocolVersion: number;
  /** Sender's sequence number (>= 1 from ControlChannel). */
  seq: number;
  /** seq of the request this answers; 0 if none. */
  replyTo: number;
  /** A request: the receiver must answer with replyTo = seq. */
  wantsReply: boolean;
  body: Body;
}

// ------------------------------------------------ constructors (helpers) ----

export function emptyFlowStats(): FlowStats {
  return { flowsOwned: 0, flowsTotal: 0, rxPackets: 0, txPackets: 0, drops: 0, rxDepth: 0, txDepth: 0, sendQueueBytes: 0, pps: 0, realServersUp: 0, realServersDown: '' };
}

/** A NodeInfo with every unspecified field at its proto3 default. */
export function nodeInfo(init: Partial<NodeInfo> & Pick<NodeInfo, 'id' | 'role'>): NodeInfo {
  return {
    name: '',
    dataAddr: '',
    controlAddr: '',
    metricsAddr: '',
    virtualIp: '',
    virtualPort: 0,
    pid: 0,
    version: '',
    ...init,
  };
}

/** Type-checked body constructor: `body('register', { node })`. */
export function body<K extends BodyCase>(kind: K, value: BodyMap[K]): Body {
  return { case: kind, value } as Body;
}

/** A DisengageReply with every field at its default (what a failed or a service-drain reply starts from). */
export function emptyDisengageReply(target: string): DisengageReply {
  return {
    ok: false,
    errorCode: '',
    errorMessage: '',
    migrationId: 0,
    target,
    policy: '',
    shares: [],
    entriesMoved: 0,
    durationMs: 0,
    copyMs: 0,
    broadcastMs: 0,
    drainMs: 0,
    redirectsServed: 0,
    scopeVersion: 0,
    fellBackToBackup: false,
    packetsLost: 0,
    handedOver: false,
    quietMs: 0,
    scopeAcked: [],
    scopeSkipped: [],
    framesDrained: 0,
    drainTimedOut: false,
  };
}

/**
 * A DisengageReply that says `e` stopped the disengage of `req.target`
 * before anything was moved (every count 0): the one shape the manager and
 * the migration client answer with.
 */
export function failedDisengageReply(req: { target: string; policy: string; migrationId?: number }, e: unknown): DisengageReply {
  return {
    ...emptyDisengageReply(req.target),
    errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL,
    errorMessage: e instanceof Error ? e.message : String(e),
    migrationId: req.migrationId ?? 0,
    policy: req.policy,
  };
}
