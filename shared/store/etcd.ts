/**
 * Cluster store on etcd v3 (`etcd://host:port[,host:port]`), with the
 * `etcd3` client. Leases carry liveness (TTL rounded UP to whole seconds,
 * minimum 1 s: etcd's unit), transactions on create/mod revisions carry
 * compare-and-swap, and watches start at the revision right after the
 * snapshot they follow, so nothing is missed or reordered between the two.
 * Leader election is the usual etcd recipe: each candidate puts a key under
 * election/ bound to its own lease; the key with the lowest create revision
 * leads; the others each watch their predecessor's key for deletion, and
 * look again at least every TTL/4 whether the watch said so or not.
 *
 * After a store outage (docs/store.md, "After a store outage"): a lease this
 * client gave up for lost may still be alive in etcd (etcd refreshes every
 * lease's TTL when it restarts), holding its election or member key. Such
 * leases are remembered and revoked as soon as the store answers again —
 * when the holder resigns/revokes, and before this client campaigns or
 * registers — so a new candidacy never queues behind this client's own dead
 * key. Reconnects are paced at most RECONNECT_MAX_MS apart (etcd3's defaults
 * open a circuit for 5 s and back watches off up to 30 s).
 *
 * Every call is bounded by opts.timeoutMs (gRPC deadline + a hard timer) and
 * maps client errors to STORE_UNAVAILABLE.
 */
import { Etcd3, type IKeyValue, type IOptions, type Lease, type Watcher } from 'etcd3';
import { BatonError, ErrorCode } from '../errors.js';
import { getLogger } from '../observability/logger.js';
import {
  DEFAULT_CLUSTER,
  DEFAULT_STORE_TIMEOUT_MS,
  LostSignal,
  StoreKeys,
  checkCandidate,
  checkCasScope,
  checkCluster,
  checkMember,
  checkMemberId,
  checkStats,
  checkStatus,
  checkTtl,
  decodeMember,
  decodeScope,
  decodeStats,
  safeCall,
  unavailable,
  withTimeout,
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

/** How often setMemberStatus retries when something else (not the status) changed the record meanwhile. */
const CAS_RETRIES = 16;

function ttlSeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

/**
 * Longest pause between two reconnect attempts (watch stream, gRPC channel).
 * A quarter of etcd's smallest lease (1 s), so a store that comes back is
 * seen within a quarter TTL. etcd3's defaults grow the watch backoff to 30 s
 * and open a per-host circuit for 5 s after 3 failures: after an outage a
 * candidate's watch, or every call, could stay blind for that long.
 */
export const RECONNECT_MAX_MS = 250;
const RECONNECT_FIRST_MS = 50;

/** How long a waiting candidate trusts its watch before reading the election again: a quarter TTL. */
export function campaignRecheckMs(ttlMs: number): number {
  return Math.max(RECONNECT_FIRST_MS, Math.floor((ttlSeconds(ttlMs) * 1000) / 4));
}

type FaultHandling = NonNullable<IOptions['faultHandling']>;
type WatchBackoff = NonNullable<FaultHandling['watchBackoff']>;
type HostPolicy = ReturnType<NonNullable<FaultHandling['host']>>;

/** Doubling from RECONNECT_FIRST_MS, capped at RECONNECT_MAX_MS (etcd3 resets it on every good answer). */
class CappedBackoff implements WatchBackoff {
  constructor(readonly duration: number) {}
  next(): CappedBackoff {
    return new CappedBackoff(Math.min(RECONNECT_MAX_MS, Math.max(RECONNECT_FIRST_MS, this.duration * 2)));
  }
}

/**
 * The per-host policy: run every call (no circuit breaker). etcd3's default
 * breaker refuses all calls for 5 s once 3 have failed, so after an outage
 * the client would stay away from a store that is back. Each call here is
 * still bounded (gRPC deadline + withTimeout), and with several hosts the
 * client's global retry moves on to the next one. etcd3 only calls
 * `execute` (connection-pool.js); the rest of cockatiel's IPolicy is unused.
 */
function passThroughPolicy(): HostPolicy {
  const policy = {
    execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> => {
      try {
        return Promise.resolve(fn({ signal: new AbortController().signal }));
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
  return policy as unknown as HostPolicy;
}

export class EtcdStore implements ClusterStore {
  readonly kind = 'etcd' as const;
  readonly cluster: string;
  readonly keys: StoreKeys;
  private readonly client: Etcd3;
  private readonly timeoutMs: number;
  private readonly onError: (e: unknown) => void;
  private closed = false;
  private readonly leases = new Set<Lease>();
  private readonly watchers = new Set<Watcher>();
  private readonly pendingCampaigns = new Set<(e: BatonError) => void>();
  /**
   * Leases this client gave up for lost (or could not revoke) that etcd may
   * still hold, by lease id: revoked when the store answers again (sweep).
   */
  private readonly deadLeases = new Map<string, Lease>();

  constructor(hosts: string[], opts: StoreOptions = {}) {
    this.cluster = checkCluster(opts.cluster ?? DEFAULT_CLUSTER);
    this.keys = new StoreKeys(this.cluster);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
    this.onError = opts.onError ?? ((e) => getLogger('store').error('etcd store', { err: String(e) }));
    const t = this.timeoutMs;
    this.client = new Etcd3({
      hosts: hosts.map((h) => `http://${h}`),
      dialTimeout: t,
      // grpc-js shares connections between channels to the same target: closing one client (or a
      // test "crash") would reset the streams of every other client in the process. Not ours.
      // Reconnects paced like the watch stream (grpc-js defaults: 1 s growing to 120 s).
      grpcOptions: { 'grpc.use_local_subchannel_pool': 1, 'grpc.initial_reconnect_backoff_ms': RECONNECT_FIRST_MS, 'grpc.max_reconnect_backoff_ms': RECONNECT_MAX_MS },
      faultHandling: { host: passThroughPolicy, watchBackoff: new CappedBackoff(RECONNECT_FIRST_MS / 2) },
      // Per-attempt gRPC deadline; withTimeout() bounds the whole call including the client's retries.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: new Date(Date.now() + t) }),
    });
  }

  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(unavailable('etcd', `${what}: store closed`));
    return withTimeout('etcd', what, this.timeoutMs, fn);
  }

  /** Grants a lease (auto keep-alive ~ttl/3) and wires its loss to `lost`. */
  private async grant(ttlMs: number, lost: LostSignal, what: string): Promise<{ lease: Lease; id: string }> {
    const lease = this.client.lease(ttlSeconds(ttlMs));
    this.leases.add(lease);
    lease.on('lost', (err) => {
      this.leases.delete(lease);
      if (this.closed) return;
      // Lost to this client, not necessarily to etcd: revoke it once the store answers.
      this.markDead(lease);
      lost.fire(unavailable('etcd', `${what}: lease lost`, err), true);
    });
    try {
      const id = await withTimeout('etcd', `${what}: lease grant`, this.timeoutMs, () => lease.grant());
      return { lease, id };
    } catch (e) {
      this.leases.delete(lease);
      lease.release();
      // A grant that timed out here may still land in etcd; it is never kept alive, so it ends after its TTL.
      throw e;
    }
  }

  /** Remembers a lease etcd may still hold (once its id is known; a grant that failed left nothing). */
  private markDead(lease: Lease): void {
    lease.grant().then(
      (id) => {
        if (!this.closed) this.deadLeases.set(id, lease);
      },
      () => undefined,
    );
  }

  /**
   * Revokes a lease in etcd, also one this client already counts as lost
   * (etcd3 marks a lost lease revoked locally without telling etcd: its keys
   * would stay until etcd expires it, and after a restart etcd gives every
   * lease a fresh TTL). If the store cannot be reached the lease stays in
   * deadLeases for the next sweep, and this rejects STORE_UNAVAILABLE.
   */
  private async revokeLease(lease: Lease): Promise<void> {
    this.leases.delete(lease);
    if (this.closed) return; // as before (and as the memory store): after close() the lease is left to its TTL
    const id = await lease.grant().catch(() => null);
    if (id === null) return; // never granted: nothing in etcd
    this.deadLeases.set(id, lease);
    await this.call('revoke', () => lease.revoke()); // etcd3: an already expired lease is not an error
    this.deadLeases.delete(id);
  }

  /** Revokes every dead lease etcd may still hold; what fails stays for the next sweep. Never rejects. */
  private async sweepDeadLeases(): Promise<void> {
    if (this.deadLeases.size === 0 || this.closed) return;
    await Promise.all(
      [...this.deadLeases].map(([id, lease]) =>
        withTimeout('etcd', 'revoke dead lease', this.timeoutMs, () => lease.revoke()).then(
          () => {
            if (this.deadLeases.get(id) === lease) this.deadLeases.delete(id);
          },
          () => undefined,
        ),
      ),
    );
  }

  registerMember(m: MemberRecord, ttlMs: number): Promise<MemberLease> {
    return this.call('registerMember', async () => {
      const rec = checkMember(m);
      checkTtl('ttlMs', ttlMs);
      const key = this.keys.member(rec.id);
      // A lease of ours lost while the store was away may still hold this id's key.
      await this.sweepDeadLeases();
      const lost = new LostSignal(this.onError);
      const { lease, id } = await this.grant(ttlMs, lost, `member ${rec.id}`);
      const res = await this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify(rec)).lease(id))
        .commit();
      if (!res.succeeded) {
        await lease.revoke().catch(() => undefined);
        this.leases.delete(lease);
        throw new BatonError(ErrorCode.STORE_CONFLICT, `etcd store: member id ${rec.id} is already registered (live lease)`, { id: rec.id });
      }
      const self = this;
      const ml: MemberLease = {
        memberId: rec.id,
        ttlMs,
        get lost() {
          return lost.lost;
        },
        keepAlive: () =>
          this.call('keepAlive', async () => {
            try {
              await lease.keepaliveOnce();
            } catch (e) {
              if (lost.lost || (e as Error).name === 'EtcdLeaseInvalidError') {
                throw new BatonError(ErrorCode.STORE_CONFLICT, `etcd store: lease of member ${rec.id} is gone`, undefined, { cause: e });
              }
              throw e;
            }
          }),
        async revoke() {
          lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, 'revoked'), false);
          await self.revokeLease(lease);
        },
        onLost: (fn) => lost.on(fn),
      };
      return ml;
    });
  }

  /** Decodes kvs, reporting and skipping undecodable ones. */
  private decodeAll<T>(kvs: IKeyValue[], decode: (raw: string) => T): { kv: IKeyValue; v: T }[] {
    const out: { kv: IKeyValue; v: T }[] = [];
    for (const kv of kvs) {
      try {
        out.push({ kv, v: decode(kv.value.toString()) });
      } catch (e) {
        this.onError(e);
      }
    }
    return out;
  }

  listMembers(): Promise<MemberRecord[]> {
    return this.call('listMembers', async () => {
      // One transaction: members and stats from the same revision.
      const res = await this.client
        .if(this.keys.root, 'Version', '>', -1)
        .then(this.client.getAll().prefix(this.keys.members), this.client.getAll().prefix(this.keys.stats))
        .commit();
      const mk = (res.responses[0]?.response_range?.kvs ?? []) as IKeyValue[];
      const sk = (res.responses[1]?.response_range?.kvs ?? []) as IKeyValue[];
      const stats = new Map(this.decodeAll(sk, decodeStats).map(({ kv, v }) => [kv.key.toString().slice(this.keys.stats.length), v]));
      return this.decodeAll(mk, decodeMember)
        .map(({ kv, v }) => {
          const s = stats.get(kv.key.toString().slice(this.keys.members.length));
          return s === undefined ? v : { ...v, stats: s };
        })
        .sort((a, b) => a.id - b.id);
    });
  }

  getMember(id: number): Promise<MemberRecord | null> {
    return this.call('getMember', async () => {
      checkMemberId(id);
      const raw = await this.client.get(this.keys.member(id)).string();
      return raw === null ? null : decodeMember(raw);
    });
  }

  /**
   * A watcher from `startRevision`, registered at once (so close() cancels it
   * even if it never connects) and reporting its errors (a watcher without an
   * error listener would crash the process). Events start once it connects;
   * from `startRevision` on, none is missed.
   */
  private watchNow(build: (b: ReturnType<Etcd3['watch']>) => ReturnType<Etcd3['watch']>, startRevision: string): Watcher {
    const w = build(this.client.watch()).startRevision(startRevision).withPreviousKV().watcher();
    this.watchers.add(w);
    w.on('error', (e) => this.onError(unavailable('etcd', 'watch', e)));
    return w;
  }

  /** watchNow, resolved once etcd created the watch (at most timeoutMs; else cancelled, STORE_UNAVAILABLE). */
  private async watch(build: (b: ReturnType<Etcd3['watch']>) => ReturnType<Etcd3['watch']>, startRevision: string): Promise<Watcher> {
    const w = this.watchNow(build, startRevision);
    try {
      await withTimeout('etcd', 'watch', this.timeoutMs, () => new Promise<void>((resolve, reject) => {
        w.once('connected', () => resolve());
        w.once('error', reject);
      }));
    } catch (e) {
      this.watchers.delete(w);
      void w.cancel().catch(() => undefined);
      throw e;
    }
    return w;
  }

  private unwatchFn(w: Watcher, stop: () => void): Unwatch {
    return async () => {
      stop();
      if (!this.watchers.delete(w)) return;
      await withTimeout('etcd', 'unwatch', this.timeoutMs, () => w.cancel()).catch(() => undefined);
    };
  }

  watchMembers(fn: (ev: MemberEvent) => void): Promise<Unwatch> {
    return this.call('watchMembers', async () => {
      const res = await this.client.getAll().prefix(this.keys.members).exec();
      const snapshot = this.decodeAll(res.kvs, decodeMember).map(({ v }) => v).sort((a, b) => a.id - b.id);
      let active = true;
      const emit = (ev: MemberEvent) => {
        if (active) safeCall(fn, ev, this.onError);
      };
      // Last record seen per key, for delete events whose previous value is unavailable.
      const last = new Map<string, MemberRecord>();
      for (const m of snapshot) last.set(this.keys.member(m.id), m);
      const w = await this.watch((b) => b.prefix(this.keys.members), String(Number(res.header.revision) + 1));
      w.on('put', (kv) => {
        try {
          const m = decodeMember(kv.value.toString());
          last.set(kv.key.toString(), m);
          emit({ type: 'put', member: m });
        } catch (e) {
          this.onError(e);
        }
      });
      w.on('delete', (kv, prev) => {
        const key = kv.key.toString();
        let m = last.get(key);
        if (prev !== undefined && prev.value.length > 0) {
          try {
            m = decodeMember(prev.value.toString());
          } catch {
            // keep the cached one
          }
        }
        last.delete(key);
        if (m !== undefined) emit({ type: 'delete', member: m });
      });
      for (const m of snapshot) emit({ type: 'put', member: m });
      return this.unwatchFn(w, () => (active = false));
    });
  }

  setMemberStatus(id: number, from: MemberStatusName, to: MemberStatusName): Promise<boolean> {
    return this.call('setMemberStatus', async () => {
      checkMemberId(id);
      checkStatus('from', from);
      checkStatus('to', to);
      const key = this.keys.member(id);
      for (let i = 0; i < CAS_RETRIES; i++) {
        const res = await this.client.get(key).exec();
        const kv = res.kvs[0];
        if (kv === undefined) return false;
        const cur = decodeMember(kv.value.toString());
        if (cur.status !== from) return false;
        const next = JSON.stringify({ ...cur, status: to });
        const tx = await this.client
          .if(key, 'Mod', '==', kv.mod_revision)
          .then(this.client.put(key).value(next).lease(kv.lease))
          .commit();
        if (tx.succeeded) return true;
        // Changed meanwhile: re-read; if the status moved away from `from`, we lost.
      }
      throw unavailable('etcd', `setMemberStatus(${id}): record kept changing (${CAS_RETRIES} tries)`);
    });
  }

  putStats(id: number, stats: MemberStats): Promise<void> {
    return this.call('putStats', async () => {
      checkMemberId(id);
      const s = checkStats(stats);
      const mkey = this.keys.member(id);
      const res = await this.client.get(mkey).exec();
      const kv = res.kvs[0];
      if (kv === undefined) throw new BatonError(ErrorCode.UNKNOWN_NODE, `etcd store: putStats: no live member ${id}`, { id });
      // Bound to the member's lease (gone with the member); only if the member is still the same incarnation.
      const tx = await this.client
        .if(mkey, 'Create', '==', kv.create_revision)
        .then(this.client.put(this.keys.stat(id)).value(JSON.stringify(s)).lease(kv.lease))
        .commit();
      if (!tx.succeeded) throw new BatonError(ErrorCode.UNKNOWN_NODE, `etcd store: putStats: member ${id} left meanwhile`, { id });
    });
  }

  getStats(): Promise<Map<number, MemberStats>> {
    return this.call('getStats', async () => {
      const res = await this.client.getAll().prefix(this.keys.stats).exec();
      return new Map(this.decodeAll(res.kvs, decodeStats).map(({ kv, v }) => [Number(kv.key.toString().slice(this.keys.stats.length)), v]));
    });
  }

  getScope(): Promise<ScopeRecord | null> {
    return this.call('getScope', async () => {
      const raw = await this.client.get(this.keys.scope).string();
      return raw === null ? null : decodeScope(raw);
    });
  }

  casScope(expectedVersion: number, next: ScopeRecord): Promise<boolean> {
    return this.call('casScope', async () => {
      const s = checkCasScope(expectedVersion, next);
      const key = this.keys.scope;
      const value = JSON.stringify(s);
      if (expectedVersion === 0) {
        const tx = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(value)).commit();
        return tx.succeeded;
      }
      const res = await this.client.get(key).exec();
      const kv = res.kvs[0];
      if (kv === undefined) return false;
      if (decodeScope(kv.value.toString()).version !== expectedVersion) return false;
      // Every write raises the version, so "unchanged since read" (mod revision) == "still expectedVersion".
      const tx = await this.client.if(key, 'Mod', '==', kv.mod_revision).then(this.client.put(key).value(value)).commit();
      return tx.succeeded;
    });
  }

  watchScope(fn: (s: ScopeRecord) => void): Promise<Unwatch> {
    return this.call('watchScope', async () => {
      const res = await this.client.get(this.keys.scope).exec();
      let active = true;
      const emit = (s: ScopeRecord) => {
        if (active) safeCall(fn, s, this.onError);
      };
      const w = await this.watch((b) => b.key(this.keys.scope), String(Number(res.header.revision) + 1));
      w.on('put', (kv) => {
        try {
          emit(decodeScope(kv.value.toString()));
        } catch (e) {
          this.onError(e);
        }
      });
      const cur = res.kvs[0];
      if (cur !== undefined) {
        try {
          emit(decodeScope(cur.value.toString()));
        } catch (e) {
          this.onError(e);
        }
      }
      return this.unwatchFn(w, () => (active = false));
    });
  }

  async campaign(candidate: string, ttlMs: number, opts: CampaignOptions = {}): Promise<Leadership> {
    if (this.closed) throw unavailable('etcd', 'campaign: store closed');
    checkCandidate(candidate);
    checkTtl('ttlMs', ttlMs);
    if (opts.signal?.aborted) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'etcd store: campaign aborted');
    const lost = new LostSignal(this.onError);
    let elected = false;
    let fail: (e: BatonError) => void = () => undefined;
    const waitLost = new LostSignal(this.onError);
    waitLost.on((e) => (elected ? lost.fire(e, true) : fail(e)));
    // Our own candidacies lost while the store was away must not stay ahead of this one.
    await this.sweepDeadLeases();
    const { lease, id } = await this.grant(ttlMs, waitLost, `campaign of ${candidate}`);
    const key = this.keys.election + BigInt(id).toString(16).padStart(16, '0');
    try {
      await this.call('campaign', () => this.client.put(key).value(candidate).lease(id).exec());
    } catch (e) {
      // The put may have landed after all: revoke (or remember) the lease rather than leave a key behind.
      this.revokeLease(lease).catch(() => undefined);
      throw e;
    }
    const recheckMs = campaignRecheckMs(ttlMs);
    const self = this;
    const leadership: Leadership = {
      candidate,
      get lost() {
        return lost.lost;
      },
      async resign() {
        lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, 'resigned'), false);
        await self.revokeLease(lease);
      },
      onLost: (fn) => lost.on(fn),
    };
    return new Promise<Leadership>((resolve, reject) => {
      let settled = false;
      /** The predecessor being waited on: its key, a watch on it, and the timer that looks again regardless. */
      let watcher: Watcher | undefined;
      let watchedKey = '';
      let recheck: ReturnType<typeof setTimeout> | undefined;
      const stopWatching = () => {
        if (watcher !== undefined) {
          const w = watcher;
          watcher = undefined;
          this.watchers.delete(w);
          void w.cancel().catch(() => undefined);
        }
        watchedKey = '';
      };
      const finish = () => {
        settled = true;
        this.pendingCampaigns.delete(fail);
        opts.signal?.removeEventListener('abort', onAbort);
        if (recheck !== undefined) clearTimeout(recheck);
        recheck = undefined;
        stopWatching();
      };
      fail = (e: BatonError) => {
        if (settled) return;
        finish();
        // Withdraw the candidacy; if the store cannot be reached now, the lease is revoked at the next sweep.
        this.revokeLease(lease).catch(() => undefined);
        reject(e);
      };
      const onAbort = () => fail(new BatonError(ErrorCode.BAD_ARGUMENT, 'etcd store: campaign aborted'));
      this.pendingCampaigns.add(fail);
      opts.signal?.addEventListener('abort', onAbort);
      /** Looks again now (the predecessor's delete event, or the recheck timer). */
      const again = () => {
        if (settled) return;
        if (recheck !== undefined) clearTimeout(recheck);
        recheck = undefined;
        check().catch(onCheckError);
      };
      // Am I first by create revision? If not, wait for my predecessor's key to go, then look again.
      const check = async (): Promise<void> => {
        if (settled) return;
        const res = await this.call('campaign', () => this.client.getAll().prefix(this.keys.election).sort('Create', 'Ascend').exec());
        if (settled) return;
        const kvs = res.kvs;
        const mine = kvs.findIndex((kv) => kv.key.toString() === key);
        if (mine < 0) throw unavailable('etcd', `campaign of ${candidate}: election key vanished (lease expired)`);
        if (mine === 0) {
          elected = true;
          finish();
          resolve(leadership);
          return;
        }
        const prev = kvs[mine - 1]!;
        // Our own earlier candidacy, lost while the store was away: withdraw it and look again.
        const dead = this.deadLeases.get(String(prev.lease));
        if (dead !== undefined) {
          await this.call('campaign: revoke dead candidacy', () => dead.revoke());
          if (this.deadLeases.get(String(prev.lease)) === dead) this.deadLeases.delete(String(prev.lease));
          return check();
        }
        // Wait for the predecessor's key to go: its delete event, or at the latest
        // recheckMs (a quarter TTL), when the election is read again — a watch
        // whose stream is reconnecting after an outage reports nothing meanwhile.
        const prevKey = prev.key.toString();
        if (watchedKey !== prevKey) {
          stopWatching();
          const w = this.watchNow((b) => b.key(prevKey), String(Number(res.header.revision) + 1));
          watcher = w;
          watchedKey = prevKey;
          w.on('delete', () => {
            if (watcher === w) again();
          });
        }
        recheck = setTimeout(again, recheckMs);
      };
      const onCheckError = (e: unknown) => fail(e instanceof BatonError ? e : unavailable('etcd', 'campaign', e));
      check().catch(onCheckError);
    });
  }

  leader(): Promise<string | null> {
    return this.call('leader', async () => {
      const res = await this.client.getAll().prefix(this.keys.election).sort('Create', 'Ascend').limit(1).exec();
      const kv = res.kvs[0];
      return kv === undefined ? null : kv.value.toString();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = unavailable('etcd', 'campaign: store closed');
    for (const f of [...this.pendingCampaigns]) f(err);
    for (const l of this.leases) l.release(); // stop keep-alives, do not revoke (see ClusterStore.close)
    this.leases.clear();
    this.deadLeases.clear(); // left to expire in etcd, like the live ones
    const ws = [...this.watchers];
    this.watchers.clear();
    await Promise.all(ws.map((w) => withTimeout('etcd', 'unwatch', this.timeoutMs, () => w.cancel()).catch(() => undefined)));
    this.client.close();
  }
}
