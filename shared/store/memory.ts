/**
 * In-process cluster store (`memory:` / `embedded:`). A MemoryBackend holds
 * the state; each MemoryStore is one client of it (several clients on one
 * backend behave like several processes on one etcd). TTLs and keep-alives
 * run on an injected Scheduler, so tests can drive them on virtual time.
 *
 * Watch callbacks go through one FIFO delivery queue per backend: a callback
 * that writes to the store has its own change queued behind the ones still
 * being delivered, so every watcher sees changes in store order.
 */
import { BatonError, ErrorCode } from '../errors.js';
import { getLogger } from '../observability/logger.js';
import { RealScheduler, type Scheduler, type Timer } from '../runtime/scheduler.js';
import {
  DEFAULT_CLUSTER,
  LostSignal,
  checkCandidate,
  checkCasScope,
  checkCluster,
  checkMember,
  checkMemberId,
  checkStats,
  checkStatus,
  checkTtl,
  safeCall,
  unavailable,
  type CampaignOptions,
  type ClusterStore,
  type Leadership,
  type MemberEvent,
  type MemberLease,
  type MemberRecord,
  type MemberStats,
  type MemberStatusName,
  type ScopeRecord,
  type StoreOptions,
  type Unwatch,
} from './store.js';

interface LeaseEntry {
  ttlMs: number;
  timer: Timer;
  onExpired: () => void;
  /** Member ids and election tokens bound to this lease. */
  memberIds: Set<number>;
  electionTokens: Set<number>;
}

interface Candidate {
  token: number;
  candidate: string;
  leaseId: number;
  /** Called when this candidate reaches the head of the queue. */
  elected: () => void;
}

interface ClusterState {
  members: Map<number, { rec: MemberRecord; leaseId: number }>;
  stats: Map<number, MemberStats>;
  scope: ScopeRecord | null;
  election: Candidate[];
  memberWatchers: Set<(ev: MemberEvent) => void>;
  scopeWatchers: Set<(s: ScopeRecord) => void>;
}

/** Shared state of memory stores (one per "cluster of processes"), namespaced by cluster name. */
export class MemoryBackend {
  readonly scheduler: Scheduler;
  private readonly clusters = new Map<string, ClusterState>();
  private readonly leases = new Map<number, LeaseEntry>();
  private nextLease = 1;
  private nextToken = 1;
  private readonly queue: (() => void)[] = [];
  private draining = false;

  constructor(scheduler: Scheduler = new RealScheduler()) {
    this.scheduler = scheduler;
  }

  cluster(name: string): ClusterState {
    let c = this.clusters.get(name);
    if (c === undefined) {
      c = { members: new Map(), stats: new Map(), scope: null, election: [], memberWatchers: new Set(), scopeWatchers: new Set() };
      this.clusters.set(name, c);
    }
    return c;
  }

  /** Queues callbacks and delivers them in FIFO order (re-entrant writes queue behind). */
  deliver(fns: (() => void)[]): void {
    for (const f of fns) this.queue.push(f);
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0) this.queue.shift()!();
    } finally {
      this.draining = false;
    }
  }

  grant(ttlMs: number, onExpired: () => void): number {
    const id = this.nextLease++;
    const e: LeaseEntry = { ttlMs, timer: this.scheduler.after(ttlMs, () => this.expire(id)), onExpired, memberIds: new Set(), electionTokens: new Set() };
    this.leases.set(id, e);
    return id;
  }
  hasLease(id: number): boolean {
    return this.leases.has(id);
  }
  /** Restarts the lease's TTL; false when it is gone. */
  keepAlive(id: number): boolean {
    const e = this.leases.get(id);
    if (e === undefined) return false;
    e.timer.cancel();
    e.timer = this.scheduler.after(e.ttlMs, () => this.expire(id));
    return true;
  }
  revoke(id: number): void {
    const e = this.leases.get(id);
    if (e === undefined) return;
    e.timer.cancel();
    this.drop(id, e);
  }
  private expire(id: number): void {
    const e = this.leases.get(id);
    if (e === undefined) return;
    this.drop(id, e);
    e.onExpired();
  }
  private drop(id: number, e: LeaseEntry): void {
    this.leases.delete(id);
    for (const c of this.clusters.values()) {
      for (const mid of e.memberIds) {
        const cur = c.members.get(mid);
        if (cur !== undefined && cur.leaseId === id) this.deleteMember(c, mid);
      }
      for (const t of e.electionTokens) this.withdraw(c, t);
    }
  }
  bindMember(leaseId: number, memberId: number): void {
    this.leases.get(leaseId)?.memberIds.add(memberId);
  }

  putMember(c: ClusterState, rec: MemberRecord, leaseId: number): void {
    c.members.set(rec.id, { rec, leaseId });
    const ev: MemberEvent = { type: 'put', member: { ...rec } };
    this.deliver([...c.memberWatchers].map((w) => () => w(ev)));
  }
  private deleteMember(c: ClusterState, id: number): void {
    const cur = c.members.get(id);
    if (cur === undefined) return;
    c.members.delete(id);
    c.stats.delete(id);
    const ev: MemberEvent = { type: 'delete', member: { ...cur.rec } };
    this.deliver([...c.memberWatchers].map((w) => () => w(ev)));
  }
  putScope(c: ClusterState, s: ScopeRecord): void {
    c.scope = s;
    this.deliver([...c.scopeWatchers].map((w) => () => w(copyScope(s))));
  }

  enqueueCandidate(c: ClusterState, candidate: string, leaseId: number, elected: () => void): number {
    const token = this.nextToken++;
    c.election.push({ token, candidate, leaseId, elected });
    this.leases.get(leaseId)?.electionTokens.add(token);
    if (c.election.length === 1) this.deliver([elected]);
    return token;
  }
  withdraw(c: ClusterState, token: number): void {
    const i = c.election.findIndex((x) => x.token === token);
    if (i < 0) return;
    c.election.splice(i, 1);
    if (i === 0 && c.election.length > 0) this.deliver([c.election[0]!.elected]);
  }
}

function copyScope(s: ScopeRecord): ScopeRecord {
  const c: ScopeRecord = { version: s.version, members: s.members.slice(), tableSize: s.tableSize, hashSeed: s.hashSeed };
  if (s.anchor) c.anchor = s.anchor.slice();
  if (s.nodes) c.nodes = s.nodes.map((n) => ({ ...n }));
  return c;
}

export interface MemoryStoreOptions extends StoreOptions {
  /** Share state with other MemoryStore clients; default: a new private backend on opts.scheduler. */
  backend?: MemoryBackend;
}

export class MemoryStore implements ClusterStore {
  readonly kind = 'memory' as const;
  readonly cluster: string;
  readonly backend: MemoryBackend;
  private readonly c: ClusterState;
  private readonly onError: (e: unknown) => void;
  private closed = false;
  private partitioned = false;
  /** Keep-alive timers and unwatch functions to stop on close(). */
  private readonly timers = new Set<Timer>();
  private readonly unwatches = new Set<() => void>();
  private readonly pendingCampaigns = new Set<(e: BatonError) => void>();

  constructor(opts: MemoryStoreOptions = {}) {
    this.cluster = checkCluster(opts.cluster ?? DEFAULT_CLUSTER);
    this.backend = opts.backend ?? new MemoryBackend(opts.scheduler);
    this.c = this.backend.cluster(this.cluster);
    this.onError = opts.onError ?? ((e) => getLogger('store').error('memory store: listener error', { err: String(e) }));
  }

  private live(what: string): void {
    if (this.closed) throw unavailable('memory', `${what}: store closed`);
    if (this.partitioned) throw unavailable('memory', `${what}: partitioned from the store`);
  }

  /**
   * Test hook: cut this client off (every call rejects STORE_UNAVAILABLE and
   * keep-alives do not arrive, so its leases expire and fire their lost
   * events) or reconnect it. Watches stay attached.
   */
  setPartitioned(on: boolean): void {
    this.partitioned = on;
  }

  /** Runs a synchronous body as an async call: throws become rejections. */
  private async op<T>(what: string, body: () => T): Promise<T> {
    this.live(what);
    return body();
  }

  /** A lease with automatic keep-alives every ttl/3 (stopped by revoke, loss, or close). */
  private startLease(ttlMs: number, lost: LostSignal, what: string): { leaseId: number; stop: () => void } {
    let timer: Timer | undefined;
    const stop = () => {
      if (timer !== undefined) {
        timer.cancel();
        this.timers.delete(timer);
        timer = undefined;
      }
    };
    const leaseId = this.backend.grant(ttlMs, () => {
      stop();
      if (!this.closed) lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, `memory store: ${what}: lease expired`), true);
    });
    timer = this.backend.scheduler.every(Math.max(1, ttlMs / 3), () => {
      if (this.partitioned) return;
      if (!this.backend.keepAlive(leaseId)) stop();
    });
    this.timers.add(timer);
    return { leaseId, stop };
  }

  registerMember(m: MemberRecord, ttlMs: number): Promise<MemberLease> {
    return this.op('registerMember', () => {
      const rec = checkMember(m);
      checkTtl('ttlMs', ttlMs);
      if (this.c.members.has(rec.id)) {
        throw new BatonError(ErrorCode.STORE_CONFLICT, `memory store: member id ${rec.id} is already registered (live lease)`, { id: rec.id });
      }
      const lost = new LostSignal(this.onError);
      const { leaseId, stop } = this.startLease(ttlMs, lost, `member ${rec.id}`);
      this.backend.bindMember(leaseId, rec.id);
      this.backend.putMember(this.c, rec, leaseId);
      const self = this;
      const lease: MemberLease = {
        memberId: rec.id,
        ttlMs,
        get lost() {
          return lost.lost;
        },
        keepAlive: () =>
          this.op('keepAlive', () => {
            if (!this.backend.keepAlive(leaseId)) throw new BatonError(ErrorCode.STORE_CONFLICT, `memory store: lease of member ${rec.id} is gone`);
          }),
        async revoke() {
          stop();
          lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, 'revoked'), false);
          if (!self.closed) self.backend.revoke(leaseId);
        },
        onLost: (fn) => lost.on(fn),
      };
      return lease;
    });
  }

  listMembers(): Promise<MemberRecord[]> {
    return this.op('listMembers', () =>
      [...this.c.members.values()]
        .map(({ rec }) => {
          const s = this.c.stats.get(rec.id);
          return s === undefined ? { ...rec } : { ...rec, stats: { ...s } };
        })
        .sort((a, b) => a.id - b.id),
    );
  }

  getMember(id: number): Promise<MemberRecord | null> {
    return this.op('getMember', () => {
      checkMemberId(id);
      const cur = this.c.members.get(id);
      return cur === undefined ? null : { ...cur.rec };
    });
  }

  watchMembers(fn: (ev: MemberEvent) => void): Promise<Unwatch> {
    return this.op('watchMembers', () => {
      let active = true;
      const w = (ev: MemberEvent) => {
        if (active) safeCall(fn, ev, this.onError);
      };
      const snapshot = [...this.c.members.values()].sort((a, b) => a.rec.id - b.rec.id);
      this.c.memberWatchers.add(w);
      this.backend.deliver(snapshot.map(({ rec }) => () => w({ type: 'put', member: { ...rec } })));
      return this.unwatchFn(() => {
        active = false;
        this.c.memberWatchers.delete(w);
      });
    });
  }

  private unwatchFn(stop: () => void): Unwatch {
    this.unwatches.add(stop);
    return async () => {
      this.unwatches.delete(stop);
      stop();
    };
  }

  setMemberStatus(id: number, from: MemberStatusName, to: MemberStatusName): Promise<boolean> {
    return this.op('setMemberStatus', () => {
      checkMemberId(id);
      checkStatus('from', from);
      checkStatus('to', to);
      const cur = this.c.members.get(id);
      if (cur === undefined || cur.rec.status !== from) return false;
      this.backend.putMember(this.c, { ...cur.rec, status: to }, cur.leaseId);
      return true;
    });
  }

  putStats(id: number, stats: MemberStats): Promise<void> {
    return this.op('putStats', () => {
      checkMemberId(id);
      const s = checkStats(stats);
      if (!this.c.members.has(id)) throw new BatonError(ErrorCode.UNKNOWN_NODE, `memory store: putStats: no live member ${id}`, { id });
      this.c.stats.set(id, s);
    });
  }

  getStats(): Promise<Map<number, MemberStats>> {
    return this.op('getStats', () => new Map([...this.c.stats].map(([k, v]) => [k, { ...v }])));
  }

  getScope(): Promise<ScopeRecord | null> {
    return this.op('getScope', () => (this.c.scope === null ? null : copyScope(this.c.scope)));
  }

  casScope(expectedVersion: number, next: ScopeRecord): Promise<boolean> {
    return this.op('casScope', () => {
      const s = checkCasScope(expectedVersion, next);
      const curVersion = this.c.scope === null ? 0 : this.c.scope.version;
      if (curVersion !== expectedVersion) return false;
      this.backend.putScope(this.c, s);
      return true;
    });
  }

  watchScope(fn: (s: ScopeRecord) => void): Promise<Unwatch> {
    return this.op('watchScope', () => {
      let active = true;
      const w = (s: ScopeRecord) => {
        if (active) safeCall(fn, s, this.onError);
      };
      this.c.scopeWatchers.add(w);
      const cur = this.c.scope;
      if (cur !== null) this.backend.deliver([() => w(copyScope(cur))]);
      return this.unwatchFn(() => {
        active = false;
        this.c.scopeWatchers.delete(w);
      });
    });
  }

  async campaign(candidate: string, ttlMs: number, opts: CampaignOptions = {}): Promise<Leadership> {
    this.live('campaign');
    checkCandidate(candidate);
    checkTtl('ttlMs', ttlMs);
    if (opts.signal?.aborted) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'memory store: campaign aborted');
    const lost = new LostSignal(this.onError);
    return new Promise<Leadership>((resolve, reject) => {
      let settled = false;
      let token = 0;
      const fail = (e: BatonError) => {
        if (settled) return;
        settled = true;
        cleanup();
        stop();
        this.backend.withdraw(this.c, token);
        reject(e);
      };
      const onAbort = () => {
        fail(new BatonError(ErrorCode.BAD_ARGUMENT, 'memory store: campaign aborted'));
        this.backend.revoke(leaseId);
      };
      const cleanup = () => {
        this.pendingCampaigns.delete(fail);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      // Lease loss while waiting rejects the campaign; after election it is a lost event.
      const waitLost = new LostSignal(this.onError);
      waitLost.on((e) => (settled ? lost.fire(e, true) : fail(e)));
      const { leaseId, stop } = this.startLease(ttlMs, waitLost, `campaign of ${candidate}`);
      const self = this;
      const leadership: Leadership = {
        candidate,
        get lost() {
          return lost.lost;
        },
        async resign() {
          stop();
          lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, 'resigned'), false);
          if (!self.closed) self.backend.revoke(leaseId);
        },
        onLost: (fn) => lost.on(fn),
      };
      this.pendingCampaigns.add(fail);
      opts.signal?.addEventListener('abort', onAbort);
      token = this.backend.enqueueCandidate(this.c, candidate, leaseId, () => {
        if (settled) return;
        settled = true;
        cleanup();
        resolve(leadership);
      });
    });
  }

  leader(): Promise<string | null> {
    return this.op('leader', () => this.c.election[0]?.candidate ?? null);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) t.cancel();
    this.timers.clear();
    for (const u of this.unwatches) u();
    this.unwatches.clear();
    const err = unavailable('memory', 'campaign: store closed');
    for (const f of [...this.pendingCampaigns]) f(err);
  }
}
