/**
 * The cluster-state store: membership with liveness, member status and scope
 * with compare-and-swap, per-node statistics and leader election, behind one
 * interface with three implementations (memory.ts, etcd.ts, consul.ts).
 * Key layout, guarantees and what is tested where: docs/store.md.
 *
 * Off the hot path. Every method is async and rejects with a BatonError:
 * STORE_UNAVAILABLE when the store cannot be reached within the call's
 * timeout (never hangs, never crashes the process), STORE_CONFLICT for a
 * create-only write that found the key taken, BAD_ARGUMENT for bad input.
 * A lost compare-and-swap is not an error: it resolves `false`.
 */
import { BatonError, ErrorCode } from '../errors.js';
import type { Scheduler } from '../runtime/scheduler.js';

export const MEMBER_ROLES = ['hash', 'fd', 'service'] as const;
export type MemberRole = (typeof MEMBER_ROLES)[number];

/** Status names as in shared/membership/status.ts (names, not the wire numbers). */
export const MEMBER_STATUSES = ['JOINING', 'ACTIVE', 'DISENGAGING', 'DISENGAGED', 'FAILED'] as const;
export type MemberStatusName = (typeof MEMBER_STATUSES)[number];

export interface MemberStats {
  flows: number;
  pps: number;
  /** Writer's wall-clock time (ms since the epoch) of the sample; set by putStats when omitted. */
  at?: number;
}

export interface MemberRecord {
  id: number;
  name: string;
  role: MemberRole;
  status: MemberStatusName;
  dataAddr: string;
  controlAddr: string;
  /** Filled by listMembers from the member's stats key (putStats); not part of the member key itself. */
  stats?: MemberStats;
}

export interface MemberEvent {
  type: 'put' | 'delete';
  /** For 'delete': the last record the store held for that id. */
  member: MemberRecord;
}

export interface ScopeRecord {
  /** Strictly increasing; the first record has version >= 1. */
  version: number;
  members: string[];
  tableSize: number;
  hashSeed: number;
  /**
   * The FDs the hash scope is anchored on (docs/hashing.md, "Anchored
   * tables"): sorted, a superset of `members`. Absent (a record written
   * before anchors): `members`.
   */
  anchor?: string[];
  /**
   * The cluster's members with their status at this version, as the leading
   * manager sees them. A status change is a new version, so the record is the
   * one durable copy of member status (not bound to any lease): a manager that
   * takes over reads it, and a follower forwards with `members` resolved to
   * data addresses through it.
   */
  nodes?: ScopeNode[];
}

export interface ScopeNode {
  id: number;
  name: string;
  role: MemberRole;
  status: MemberStatusName;
  dataAddr: string;
  /** A DISENGAGING FD: the disengage as it was asked (a manager that takes over resumes it with these). */
  disengage?: DisengageRecord;
}

/** The cluster record of a running disengage (docs/disengage.md, "Resumed by another manager"). */
export interface DisengageRecord {
  migrationId: number;
  policy: string;
  /** Policy `named`: the inheritor's name; "" otherwise. */
  inheritor: string;
  /** The backup inheritor's name; "" for none. */
  backup: string;
  /** The operator's timeout (ms); 0 = the manager's default. */
  timeoutMs: number;
  /** Records per migration chunk; 0 = default. */
  chunkRecords: number;
  /** The FD handed its flows over and is out of the hash scope (it cannot go back to ACTIVE). */
  outOfScope: boolean;
}

/** Stops a watch; resolves once no more callbacks will be made. Idempotent. */
export type Unwatch = () => Promise<void>;

/**
 * Liveness of one registered member. Keep-alives are sent automatically
 * (about every ttl/3) until revoke() or the store is closed; the member's keys
 * disappear when the lease is not kept alive for its TTL.
 */
export interface MemberLease {
  readonly memberId: number;
  readonly ttlMs: number;
  /** True once the lease is known to be gone (expired, revoked, or keep-alives failed past the TTL). */
  readonly lost: boolean;
  /** Sends one keep-alive now (the automatic ones continue). Rejects STORE_UNAVAILABLE, or STORE_CONFLICT when the lease is gone. */
  keepAlive(): Promise<void>;
  /** Deletes the member now (revokes the lease). Idempotent; no lost event. */
  revoke(): Promise<void>;
  /** Called once when the lease is lost without revoke(): the member must register again. */
  onLost(fn: (err: BatonError) => void): void;
}

export interface Leadership {
  readonly candidate: string;
  /** True once leadership is known to be lost (lease gone) or resigned. */
  readonly lost: boolean;
  /** Gives up leadership now; the next candidate is elected. Idempotent; no lost event. */
  resign(): Promise<void>;
  /** Called once when leadership is lost without resign() (lease expired or keep-alives failed). */
  onLost(fn: (err: BatonError) => void): void;
}

export interface CampaignOptions {
  /** Aborting rejects the pending campaign (BAD_ARGUMENT 'aborted') and withdraws the candidate. */
  signal?: AbortSignal;
}

export interface ClusterStore {
  readonly kind: 'memory' | 'etcd' | 'consul';
  readonly cluster: string;

  /** Creates the member's key, bound to a new lease. STORE_CONFLICT when a live member already has that id. */
  registerMember(m: MemberRecord, ttlMs: number): Promise<MemberLease>;
  /** Every live member, sorted by id, with its latest stats when any. */
  listMembers(): Promise<MemberRecord[]>;
  /** The member with that id, or null. */
  getMember(id: number): Promise<MemberRecord | null>;
  /**
   * First a 'put' for every current member (sorted by id), then every change
   * in store order with no gap between the two. Stats updates are not member
   * events (they would flood watchers); read them with getStats().
   */
  watchMembers(fn: (ev: MemberEvent) => void): Promise<Unwatch>;
  /** Sets status `to` iff the member exists and its status is `from`. Keeps the member's lease. */
  setMemberStatus(id: number, from: MemberStatusName, to: MemberStatusName): Promise<boolean>;

  /** Stores the member's latest stats, bound to the member's lease. UNKNOWN_NODE if no such live member. */
  putStats(id: number, stats: MemberStats): Promise<void>;
  /** Latest stats per live member id. */
  getStats(): Promise<Map<number, MemberStats>>;

  getScope(): Promise<ScopeRecord | null>;
  /**
   * Writes `next` iff the stored scope has version `expectedVersion` (0: no
   * scope stored yet). next.version must be > expectedVersion (BAD_ARGUMENT).
   * Resolves false when someone else wrote first.
   */
  casScope(expectedVersion: number, next: ScopeRecord): Promise<boolean>;
  /** First the current scope (if any), then every later version in order, none skipped. */
  watchScope(fn: (s: ScopeRecord) => void): Promise<Unwatch>;

  /**
   * Resolves when `candidate` is the leader (candidates are served in the
   * order they campaigned). Rejects STORE_UNAVAILABLE if the store is lost
   * while waiting.
   */
  campaign(candidate: string, ttlMs: number, opts?: CampaignOptions): Promise<Leadership>;
  /** The current leader's candidate name, or null. */
  leader(): Promise<string | null>;

  /**
   * Stops keep-alives and watches and releases the connection. Leases are NOT
   * revoked: to the others this looks like a crash, and this client's members
   * and leadership disappear after their TTL (revoke()/resign() first for an
   * immediate, clean exit). Later calls reject STORE_UNAVAILABLE. Idempotent.
   */
  close(): Promise<void>;
}

export interface StoreOptions {
  /** Namespace inside the store: keys live under /baton/<cluster>/. Default 'default'. */
  cluster?: string;
  /** Upper bound of every call (and of connecting), ms. Default 5000. */
  timeoutMs?: number;
  /** Timers for TTLs and keep-alives (memory store on virtual time). Default: a RealScheduler. */
  scheduler?: Scheduler;
  /** Where exceptions thrown by watch callbacks, and undecodable records, are reported. Default console.error. */
  onError?: (err: unknown) => void;
}

export const DEFAULT_STORE_TIMEOUT_MS = 5000;
export const DEFAULT_CLUSTER = 'default';

// ---------------------------------------------------------------- keys

/** Key layout (docs/store.md). `root` is '/baton/<cluster>/' (etcd, memory) or 'baton/<cluster>/' (Consul). */
export class StoreKeys {
  readonly root: string;
  readonly members: string;
  readonly stats: string;
  readonly scope: string;
  readonly scopeHistory: string;
  readonly election: string;
  constructor(cluster: string, leadingSlash = true) {
    this.root = `${leadingSlash ? '/' : ''}baton/${cluster}/`;
    this.members = `${this.root}members/`;
    this.stats = `${this.root}stats/`;
    this.scope = `${this.root}scope`;
    this.scopeHistory = `${this.root}scope-history/`;
    this.election = `${this.root}election/`;
  }
  member(id: number): string {
    return this.members + memberIdKey(id);
  }
  stat(id: number): string {
    return this.stats + memberIdKey(id);
  }
}

/** Zero-padded so that keys sort by id. */
export function memberIdKey(id: number): string {
  return String(id).padStart(10, '0');
}

// ---------------------------------------------------------------- validation

const CLUSTER_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export function checkCluster(cluster: string): string {
  if (!CLUSTER_RE.test(cluster)) {
    throw new BatonError(ErrorCode.CONFIG_INVALID, `store: cluster name ${JSON.stringify(cluster)} must match ${CLUSTER_RE}`, { cluster });
  }
  return cluster;
}

function bad(field: string, value: unknown, why: string): BatonError {
  return new BatonError(ErrorCode.BAD_ARGUMENT, `store: ${field} ${JSON.stringify(value)} ${why}`, { field, value });
}

export function checkMemberId(id: unknown): number {
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffffffff) throw bad('member id', id, 'must be an integer in 0..2^32-1');
  return id;
}

export function checkTtl(field: string, ttlMs: unknown): number {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs < 1 || ttlMs > 86_400_000) throw bad(field, ttlMs, 'must be a number of ms in 1..86400000');
  return ttlMs;
}

export function checkStatus(field: string, s: unknown): MemberStatusName {
  if (!(MEMBER_STATUSES as readonly unknown[]).includes(s)) throw bad(field, s, `must be one of ${MEMBER_STATUSES.join('|')}`);
  return s as MemberStatusName;
}

/** Validates and copies a member record (only the known fields, stats stripped). */
export function checkMember(m: MemberRecord): MemberRecord {
  if (typeof m !== 'object' || m === null) throw bad('member', m, 'must be an object');
  checkMemberId(m.id);
  if (typeof m.name !== 'string' || m.name === '') throw bad('member.name', m.name, 'must be a non-empty string');
  if (!(MEMBER_ROLES as readonly unknown[]).includes(m.role)) throw bad('member.role', m.role, `must be one of ${MEMBER_ROLES.join('|')}`);
  checkStatus('member.status', m.status);
  if (typeof m.dataAddr !== 'string') throw bad('member.dataAddr', m.dataAddr, 'must be a string');
  if (typeof m.controlAddr !== 'string') throw bad('member.controlAddr', m.controlAddr, 'must be a string');
  return { id: m.id, name: m.name, role: m.role, status: m.status, dataAddr: m.dataAddr, controlAddr: m.controlAddr };
}

export function checkStats(s: MemberStats): MemberStats {
  if (typeof s !== 'object' || s === null) throw bad('stats', s, 'must be an object');
  if (typeof s.flows !== 'number' || !(s.flows >= 0)) throw bad('stats.flows', s.flows, 'must be a number >= 0');
  if (typeof s.pps !== 'number' || !(s.pps >= 0)) throw bad('stats.pps', s.pps, 'must be a number >= 0');
  if (s.at !== undefined && (typeof s.at !== 'number' || !Number.isFinite(s.at))) throw bad('stats.at', s.at, 'must be a finite number');
  return { flows: s.flows, pps: s.pps, at: s.at ?? Date.now() };
}

export function checkScope(s: ScopeRecord): ScopeRecord {
  if (typeof s !== 'object' || s === null) throw bad('scope', s, 'must be an object');
  if (!Number.isSafeInteger(s.version) || s.version < 1) throw bad('scope.version', s.version, 'must be an integer >= 1');
  if (!Array.isArray(s.members) || !s.members.every((x) => typeof x === 'string')) throw bad('scope.members', s.members, 'must be an array of strings');
  if (!Number.isInteger(s.tableSize) || s.tableSize < 1) throw bad('scope.tableSize', s.tableSize, 'must be an integer >= 1');
  if (!Number.isInteger(s.hashSeed) || s.hashSeed < 0 || s.hashSeed > 0xffffffff) throw bad('scope.hashSeed', s.hashSeed, 'must be an integer in 0..2^32-1');
  const out: ScopeRecord = { version: s.version, members: s.members.slice(), tableSize: s.tableSize, hashSeed: s.hashSeed };
  if (s.anchor !== undefined) {
    if (!Array.isArray(s.anchor) || !s.anchor.every((x) => typeof x === 'string' && x !== '')) throw bad('scope.anchor', s.anchor, 'must be an array of non-empty strings');
    const missing = s.members.find((m) => !s.anchor!.includes(m));
    if (missing !== undefined) throw bad('scope.anchor', s.anchor, `must include every member (${JSON.stringify(missing)} is missing)`);
    out.anchor = s.anchor.slice();
  }
  if (s.nodes !== undefined) {
    if (!Array.isArray(s.nodes)) throw bad('scope.nodes', s.nodes, 'must be an array');
    out.nodes = s.nodes.map((n, i) => {
      if (typeof n !== 'object' || n === null) throw bad(`scope.nodes[${i}]`, n, 'must be an object');
      if (typeof n.name !== 'string' || n.name === '') throw bad(`scope.nodes[${i}].name`, n.name, 'must be a non-empty string');
      if (!MEMBER_ROLES.includes(n.role)) throw bad(`scope.nodes[${i}].role`, n.role, `must be one of ${MEMBER_ROLES.join(', ')}`);
      if (typeof n.dataAddr !== 'string') throw bad(`scope.nodes[${i}].dataAddr`, n.dataAddr, 'must be a string');
      const node: ScopeNode = { id: checkMemberId(n.id), name: n.name, role: n.role, status: checkStatus(`scope.nodes[${i}].status`, n.status), dataAddr: n.dataAddr };
      if (n.disengage !== undefined) node.disengage = checkDisengage(`scope.nodes[${i}].disengage`, n.disengage);
      return node;
    });
  }
  return out;
}

function checkDisengage(field: string, d: DisengageRecord): DisengageRecord {
  if (typeof d !== 'object' || d === null) throw bad(field, d, 'must be an object');
  const count = (k: 'migrationId' | 'timeoutMs' | 'chunkRecords'): number => {
    if (!Number.isSafeInteger(d[k]) || d[k] < 0) throw bad(`${field}.${k}`, d[k], 'must be an integer >= 0');
    return d[k];
  };
  const text = (k: 'policy' | 'inheritor' | 'backup'): string => {
    if (typeof d[k] !== 'string') throw bad(`${field}.${k}`, d[k], 'must be a string');
    return d[k];
  };
  if (typeof d.outOfScope !== 'boolean') throw bad(`${field}.outOfScope`, d.outOfScope, 'must be a boolean');
  return { migrationId: count('migrationId'), policy: text('policy'), inheritor: text('inheritor'), backup: text('backup'), timeoutMs: count('timeoutMs'), chunkRecords: count('chunkRecords'), outOfScope: d.outOfScope };
}

export function checkCasScope(expectedVersion: number, next: ScopeRecord): ScopeRecord {
  if (!Number.isSafeInteger(expectedVersion) || expectedVersion < 0) throw bad('expectedVersion', expectedVersion, 'must be an integer >= 0');
  const s = checkScope(next);
  if (s.version <= expectedVersion) throw bad('scope.version', s.version, `must be greater than expectedVersion ${expectedVersion}`);
  return s;
}

export function checkCandidate(c: unknown): string {
  if (typeof c !== 'string' || c === '') throw bad('candidate', c, 'must be a non-empty string');
  return c;
}

/** Parses a stored JSON value; throws (caller reports via onError and skips) when it does not decode. */
export function decodeJson<T>(what: string, raw: string, check: (v: T) => T): T {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new BatonError(ErrorCode.BAD_ARGUMENT, `store: ${what} is not JSON: ${raw.slice(0, 80)}`);
  }
  return check(v as T);
}

export function decodeMember(raw: string): MemberRecord {
  return decodeJson('member record', raw, checkMember);
}
export function decodeScope(raw: string): ScopeRecord {
  return decodeJson('scope record', raw, checkScope);
}
export function decodeStats(raw: string): MemberStats {
  return decodeJson('stats record', raw, checkStats);
}

// ---------------------------------------------------------------- errors and time limits

export function unavailable(kind: string, what: string, cause?: unknown): BatonError {
  const why = cause instanceof Error ? cause.message : cause === undefined ? '' : String(cause);
  return new BatonError(ErrorCode.STORE_UNAVAILABLE, `${kind} store: ${what}${why ? `: ${why}` : ''}`, cause === undefined ? undefined : { cause: why }, cause === undefined ? undefined : { cause });
}

/**
 * Runs `fn` with a hard time limit: rejects STORE_UNAVAILABLE after
 * `timeoutMs` whatever the client library does, and maps every non-Baton
 * error to STORE_UNAVAILABLE (BatonErrors pass through). Real timers on
 * purpose: this bounds network I/O, which virtual time cannot.
 */
export function withTimeout<T>(kind: string, what: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(unavailable(kind, `${what}: no answer within ${timeoutMs} ms`)), timeoutMs);
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof BatonError ? e : unavailable(kind, what, e));
      },
    );
  });
}

/** Calls a listener, reporting (never propagating) what it throws. */
export function safeCall<A>(fn: (a: A) => void, arg: A, onError: (e: unknown) => void): void {
  try {
    fn(arg);
  } catch (e) {
    onError(e);
  }
}

/** One-shot "lost" notification shared by leases and leaderships. */
export class LostSignal {
  lost = false;
  private fns: ((e: BatonError) => void)[] = [];
  private err: BatonError | undefined;
  constructor(private readonly onError: (e: unknown) => void) {}
  on(fn: (e: BatonError) => void): void {
    if (this.err !== undefined) safeCall(fn, this.err, this.onError);
    else this.fns.push(fn);
  }
  /** Marks lost; notifies only when `notify` (false for an explicit revoke/resign). */
  fire(err: BatonError, notify: boolean): void {
    if (this.lost) return;
    this.lost = true;
    const fns = this.fns;
    this.fns = [];
    if (!notify) return;
    this.err = err;
    for (const fn of fns) safeCall(fn, err, this.onError);
  }
}

// ---------------------------------------------------------------- store URLs (openStore: open.ts)

export interface ParsedStoreUrl {
  kind: 'memory' | 'etcd' | 'consul';
  /** host:port pairs (etcd: one or more; Consul: exactly one). */
  hosts: string[];
  /** From the URL path (`etcd://h:p/mycluster`), if any. */
  cluster?: string;
}

function badUrl(url: string, why: string): BatonError {
  return new BatonError(ErrorCode.CONFIG_INVALID, `store URL ${JSON.stringify(url)}: ${why}`, { url });
}

const HOSTPORT_RE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/** `embedded` / `memory` (optionally with `:` or `://`) | `etcd://host:port[,host:port...][/cluster]` | `consul://host:port[/cluster]`. */
export function parseStoreUrl(url: string): ParsedStoreUrl {
  if (typeof url !== 'string') throw badUrl(String(url), 'must be a string');
  if (/^(memory|embedded)(:|:\/\/)?$/.test(url)) return { kind: 'memory', hosts: [] };
  const m = /^(etcd|consul):\/\/([^/]*)(?:\/([^/]*))?$/.exec(url);
  if (m === null) throw badUrl(url, 'expected memory:, embedded:, etcd://host:port[,host:port][/cluster] or consul://host:port[/cluster]');
  const kind = m[1] as 'etcd' | 'consul';
  const hosts = m[2]!.split(',');
  for (const h of hosts) {
    const hp = HOSTPORT_RE.exec(h);
    if (hp === null) throw badUrl(url, `${JSON.stringify(h)} is not host:port`);
    const port = Number(hp[2]);
    if (port < 1 || port > 65535) throw badUrl(url, `port ${port} out of 1..65535`);
  }
  if (kind === 'consul' && hosts.length !== 1) throw badUrl(url, 'consul takes exactly one host:port (the local agent)');
  const out: ParsedStoreUrl = { kind, hosts };
  if (m[3] !== undefined && m[3] !== '') {
    if (!CLUSTER_RE.test(m[3])) throw badUrl(url, `cluster ${JSON.stringify(m[3])} must match ${CLUSTER_RE}`);
    out.cluster = m[3];
  }
  return out;
}
