/**
 * Cluster store on Consul (`consul://host:port`, the local agent's HTTP API),
 * with the `consul` client. NOT tested here (no Consul server is installable
 * from the registries this project reaches); the contract suite runs it when
 * CONSUL_HTTP_ADDR is set. See docs/store.md for the differences from etcd:
 * - liveness: a session with TTL (Consul's minimum 10 s, so ttlMs is rounded
 *   UP to >= 10 s), behavior=delete, lock-delay 0; keys bound to a member are
 *   acquired with its session and deleted when the session is invalidated.
 *   Consul may take up to 2x the TTL to invalidate a session.
 * - CAS: KV `cas=<ModifyIndex>` (0 = create only); the scope write and its
 *   history entry go in one transaction.
 * - watches: blocking queries return only the latest state, so the scope
 *   watch fills gaps from scope-history/<version> (last HISTORY_KEEP kept);
 *   the member watch diffs snapshots and can coalesce fast changes.
 * - election: one lock key; waiting candidates race for it when it is
 *   released (no FIFO order).
 */
import Consul from 'consul';
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
  memberIdKey,
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

/** Consul KV item as returned by the HTTP API (the client's typings omit Session). */
interface KvItem {
  Key: string;
  Value: string | null;
  ModifyIndex: number;
  CreateIndex: number;
  Session?: string;
}

const CONSUL_MIN_TTL_S = 10;
/** Blocking-query wait; unwatch/close take effect within this. */
const BLOCK_WAIT_S = 5;
const HISTORY_KEEP = 256;
const CAS_RETRIES = 16;

function statusOf(e: unknown): number | undefined {
  const x = e as { statusCode?: number; response?: { statusCode?: number } } | null;
  return x?.statusCode ?? x?.response?.statusCode;
}

export class ConsulStore implements ClusterStore {
  readonly kind = 'consul' as const;
  readonly cluster: string;
  readonly keys: StoreKeys;
  private readonly consul: Consul;
  private readonly timeoutMs: number;
  private readonly onError: (e: unknown) => void;
  private closed = false;
  /** Session renewers to stop on close (sessions are not destroyed: see ClusterStore.close). */
  private readonly renewers = new Set<() => void>();
  private readonly stops = new Set<() => void>();
  private readonly pendingCampaigns = new Set<(e: BatonError) => void>();

  constructor(hostPort: string, opts: StoreOptions = {}) {
    this.cluster = checkCluster(opts.cluster ?? DEFAULT_CLUSTER);
    this.keys = new StoreKeys(this.cluster, false);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
    this.onError = opts.onError ?? ((e) => getLogger('store').error('consul store', { err: String(e) }));
    const i = hostPort.lastIndexOf(':');
    this.consul = new Consul({ host: hostPort.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hostPort.slice(i + 1)) });
  }

  private call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(unavailable('consul', `${what}: store closed`));
    return withTimeout('consul', what, this.timeoutMs, fn);
  }

  private async getItem(key: string): Promise<KvItem | null> {
    const r = (await this.consul.kv.get({ key, timeout: this.timeoutMs } as never)) as unknown as KvItem | null | undefined;
    return r ?? null;
  }
  private async getPrefix(prefix: string): Promise<KvItem[]> {
    const r = (await this.consul.kv.get({ key: prefix, recurse: true, timeout: this.timeoutMs } as never)) as unknown as KvItem[] | KvItem | null | undefined;
    return r == null ? [] : Array.isArray(r) ? r : [r];
  }
  /** A blocking query: returns [X-Consul-Index, items] once the index moves past `index` or the wait ends. */
  private async block(key: string, recurse: boolean, index: number): Promise<[number, KvItem[]]> {
    const opts = { key, recurse, index, wait: `${BLOCK_WAIT_S}s`, timeout: BLOCK_WAIT_S * 1000 + this.timeoutMs, ctx: { includeResponse: true } };
    const [res, data] = (await this.consul.kv.get(opts as never)) as unknown as [{ headers: Record<string, string> }, KvItem[] | KvItem | null | undefined];
    const idx = Number(res.headers['x-consul-index'] ?? 0);
    return [idx, data == null ? [] : Array.isArray(data) ? data : [data]];
  }

  /** Creates a TTL session renewed every ttl/3; loss (404 on renew, or no renewal for 2x TTL) fires `lost`. */
  private async session(ttlMs: number, lost: LostSignal, what: string): Promise<{ id: string; stop: () => void }> {
    const ttlS = Math.max(CONSUL_MIN_TTL_S, Math.ceil(ttlMs / 1000));
    const { ID: id } = await this.consul.session.create({ ttl: `${ttlS}s`, behavior: 'delete', lockdelay: '0s', name: `baton-${this.cluster}-${what}` });
    let lastOk = Date.now();
    const timer = setInterval(() => {
      this.consul.session.renew({ id, timeout: this.timeoutMs } as never).then(
        (r) => {
          if (Array.isArray(r) && r.length === 0) return gone('session not found');
          lastOk = Date.now();
        },
        (e: unknown) => {
          if (statusOf(e) === 404) gone('session not found');
          else if (Date.now() - lastOk > 2 * ttlS * 1000) gone('no renewal for 2x TTL');
        },
      );
    }, (ttlS * 1000) / 3);
    const stop = () => {
      clearInterval(timer);
      this.renewers.delete(stop);
    };
    const gone = (why: string) => {
      stop();
      if (!this.closed) lost.fire(unavailable('consul', `${what}: session lost: ${why}`), true);
    };
    this.renewers.add(stop);
    return { id, stop };
  }

  private async destroy(sessionId: string, stop: () => void): Promise<void> {
    stop();
    await this.call('session destroy', () => this.consul.session.destroy({ id: sessionId, timeout: this.timeoutMs } as never));
  }

  registerMember(m: MemberRecord, ttlMs: number): Promise<MemberLease> {
    return this.call('registerMember', async () => {
      const rec = checkMember(m);
      checkTtl('ttlMs', ttlMs);
      const lost = new LostSignal(this.onError);
      const { id: sid, stop } = await this.session(ttlMs, lost, `member-${rec.id}`);
      const key = this.keys.member(rec.id);
      const cur = await this.getItem(key);
      const ok = cur === null && (await this.consul.kv.set({ key, value: JSON.stringify(rec), acquire: sid, cas: 0 }));
      if (!ok) {
        await this.destroy(sid, stop).catch(() => undefined);
        throw new BatonError(ErrorCode.STORE_CONFLICT, `consul store: member id ${rec.id} is already registered (live session)`, { id: rec.id });
      }
      const self = this;
      return {
        memberId: rec.id,
        ttlMs,
        get lost() {
          return lost.lost;
        },
        keepAlive: () =>
          this.call('keepAlive', async () => {
            try {
              const r = await this.consul.session.renew({ id: sid, timeout: this.timeoutMs } as never);
              if (Array.isArray(r) && r.length === 0) throw new BatonError(ErrorCode.STORE_CONFLICT, `consul store: session of member ${rec.id} is gone (renew found no session)`);
            } catch (e) {
              if (statusOf(e) === 404) throw new BatonError(ErrorCode.STORE_CONFLICT, `consul store: session of member ${rec.id} is gone`, undefined, { cause: e });
              throw e;
            }
          }),
        async revoke() {
          lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, 'revoked'), false);
          await self.destroy(sid, stop);
        },
        onLost: (fn) => lost.on(fn),
      } satisfies MemberLease;
    });
  }

  private decodeItems<T>(items: KvItem[], decode: (raw: string) => T): { item: KvItem; v: T }[] {
    const out: { item: KvItem; v: T }[] = [];
    for (const item of items) {
      try {
        out.push({ item, v: decode(item.Value ?? '') });
      } catch (e) {
        this.onError(e);
      }
    }
    return out;
  }

  listMembers(): Promise<MemberRecord[]> {
    return this.call('listMembers', async () => {
      const [ms, ss] = await Promise.all([this.getPrefix(this.keys.members), this.getPrefix(this.keys.stats)]);
      const stats = new Map(this.decodeItems(ss, decodeStats).map(({ item, v }) => [item.Key.slice(this.keys.stats.length), v]));
      return this.decodeItems(ms, decodeMember)
        .map(({ v }) => {
          const s = stats.get(memberIdKey(v.id));
          return s === undefined ? v : { ...v, stats: s };
        })
        .sort((a, b) => a.id - b.id);
    });
  }

  getMember(id: number): Promise<MemberRecord | null> {
    return this.call('getMember', async () => {
      checkMemberId(id);
      const it = await this.getItem(this.keys.member(id));
      return it === null ? null : decodeMember(it.Value ?? '');
    });
  }

  /** Runs a blocking-query loop on `key` until stopped; `onItems` gets every new state. */
  private loop(key: string, recurse: boolean, startIndex: number, onItems: (items: KvItem[]) => Promise<void> | void): () => void {
    let active = true;
    const stop = () => {
      active = false;
      this.stops.delete(stop);
    };
    this.stops.add(stop);
    void (async () => {
      let index = startIndex;
      let backoff = 100;
      while (active && !this.closed) {
        try {
          const [idx, items] = await this.block(key, recurse, index);
          backoff = 100;
          if (!active) return;
          if (idx < index) index = 0; // index reset (Consul restore): start over
          else if (idx !== index) {
            index = idx;
            await onItems(items);
          }
        } catch (e) {
          this.onError(unavailable('consul', `watch ${key}`, e));
          await new Promise((r) => setTimeout(r, backoff));
          backoff = Math.min(backoff * 2, 5000);
        }
      }
    })();
    return stop;
  }

  watchMembers(fn: (ev: MemberEvent) => void): Promise<Unwatch> {
    return this.call('watchMembers', async () => {
      const [index, items] = await this.block(this.keys.members, true, 0);
      let active = true;
      const emit = (ev: MemberEvent) => {
        if (active) safeCall(fn, ev, this.onError);
      };
      let known = new Map<string, { mi: number; rec: MemberRecord }>();
      const apply = (items: KvItem[]) => {
        const next = new Map<string, { mi: number; rec: MemberRecord }>();
        const puts: MemberRecord[] = [];
        for (const { item, v } of this.decodeItems(items, decodeMember)) {
          next.set(item.Key, { mi: item.ModifyIndex, rec: v });
          if (known.get(item.Key)?.mi !== item.ModifyIndex) puts.push(v);
        }
        const dels = [...known].filter(([k]) => !next.has(k)).map(([, x]) => x.rec);
        known = next;
        for (const rec of puts.sort((a, b) => a.id - b.id)) emit({ type: 'put', member: rec });
        for (const rec of dels) emit({ type: 'delete', member: rec });
      };
      apply(items);
      const stop = this.loop(this.keys.members, true, index, apply);
      return async () => {
        active = false;
        stop();
      };
    });
  }

  setMemberStatus(id: number, from: MemberStatusName, to: MemberStatusName): Promise<boolean> {
    return this.call('setMemberStatus', async () => {
      checkMemberId(id);
      checkStatus('from', from);
      checkStatus('to', to);
      const key = this.keys.member(id);
      for (let i = 0; i < CAS_RETRIES; i++) {
        const it = await this.getItem(key);
        if (it === null) return false;
        const cur = decodeMember(it.Value ?? '');
        if (cur.status !== from) return false;
        // A plain write (no acquire/release) keeps the key's session lock.
        if (await this.consul.kv.set({ key, value: JSON.stringify({ ...cur, status: to }), cas: it.ModifyIndex })) return true;
      }
      throw unavailable('consul', `setMemberStatus(${id}): record kept changing (${CAS_RETRIES} tries)`);
    });
  }

  putStats(id: number, stats: MemberStats): Promise<void> {
    return this.call('putStats', async () => {
      checkMemberId(id);
      const s = checkStats(stats);
      const it = await this.getItem(this.keys.member(id));
      if (it === null || it.Session === undefined) throw new BatonError(ErrorCode.UNKNOWN_NODE, `consul store: putStats: no live member ${id}`, { id });
      // Acquired with the member's session: deleted with the member.
      const ok = await this.consul.kv.set({ key: this.keys.stat(id), value: JSON.stringify(s), acquire: it.Session });
      if (!ok) throw new BatonError(ErrorCode.UNKNOWN_NODE, `consul store: putStats: member ${id} left meanwhile`, { id });
    });
  }

  getStats(): Promise<Map<number, MemberStats>> {
    return this.call('getStats', async () => {
      const items = await this.getPrefix(this.keys.stats);
      return new Map(this.decodeItems(items, decodeStats).map(({ item, v }) => [Number(item.Key.slice(this.keys.stats.length)), v]));
    });
  }

  getScope(): Promise<ScopeRecord | null> {
    return this.call('getScope', async () => {
      const it = await this.getItem(this.keys.scope);
      return it === null ? null : decodeScope(it.Value ?? '');
    });
  }

  casScope(expectedVersion: number, next: ScopeRecord): Promise<boolean> {
    return this.call('casScope', async () => {
      const s = checkCasScope(expectedVersion, next);
      let index = 0;
      if (expectedVersion !== 0) {
        const it = await this.getItem(this.keys.scope);
        if (it === null || decodeScope(it.Value ?? '').version !== expectedVersion) return false;
        index = it.ModifyIndex;
      }
      const value = Buffer.from(JSON.stringify(s)).toString('base64');
      const ops = [
        { KV: { Verb: 'cas', Key: this.keys.scope, Value: value, Index: index } },
        { KV: { Verb: 'set', Key: this.keys.scopeHistory + String(s.version).padStart(16, '0'), Value: value } },
      ];
      if (s.version > HISTORY_KEEP) {
        ops.push({ KV: { Verb: 'delete', Key: this.keys.scopeHistory + String(s.version - HISTORY_KEEP).padStart(16, '0'), Value: '', Index: 0 } });
      }
      try {
        await this.consul.transaction.create(ops as never);
        return true;
      } catch (e) {
        if (statusOf(e) === 409) return false; // the cas operation failed: someone else won
        throw e;
      }
    });
  }

  watchScope(fn: (s: ScopeRecord) => void): Promise<Unwatch> {
    return this.call('watchScope', async () => {
      const [index, items] = await this.block(this.keys.scope, false, 0);
      let active = true;
      let last = 0;
      const emit = (s: ScopeRecord) => {
        if (!active || s.version <= last) return;
        last = s.version;
        safeCall(fn, s, this.onError);
      };
      const apply = async (items: KvItem[]) => {
        const it = items[0];
        if (it === undefined) return;
        let cur: ScopeRecord;
        try {
          cur = decodeScope(it.Value ?? '');
        } catch (e) {
          this.onError(e);
          return;
        }
        if (last !== 0 && cur.version > last + 1) {
          // Versions written between two blocking-query answers: from the history.
          const hist = this.decodeItems(await this.getPrefix(this.keys.scopeHistory), decodeScope)
            .map(({ v }) => v)
            .filter((v) => v.version > last && v.version < cur.version)
            .sort((a, b) => a.version - b.version);
          for (const v of hist) emit(v);
        }
        emit(cur);
      };
      await apply(items);
      const stop = this.loop(this.keys.scope, false, index, apply);
      return async () => {
        active = false;
        stop();
      };
    });
  }

  async campaign(candidate: string, ttlMs: number, opts: CampaignOptions = {}): Promise<Leadership> {
    if (this.closed) throw unavailable('consul', 'campaign: store closed');
    checkCandidate(candidate);
    checkTtl('ttlMs', ttlMs);
    if (opts.signal?.aborted) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'consul store: campaign aborted');
    const key = `${this.keys.election}leader`;
    const lost = new LostSignal(this.onError);
    let elected = false;
    let fail: (e: BatonError) => void = () => undefined;
    const waitLost = new LostSignal(this.onError);
    waitLost.on((e) => (elected ? lost.fire(e, true) : fail(e)));
    const { id: sid, stop } = await this.call('campaign', () => this.session(ttlMs, waitLost, 'election'));
    const self = this;
    const leadership: Leadership = {
      candidate,
      get lost() {
        return lost.lost;
      },
      async resign() {
        lost.fire(new BatonError(ErrorCode.STORE_UNAVAILABLE, 'resigned'), false);
        await self.destroy(sid, stop);
      },
      onLost: (fn) => lost.on(fn),
    };
    return new Promise<Leadership>((resolve, reject) => {
      let settled = false;
      const finish = () => {
        settled = true;
        this.pendingCampaigns.delete(fail);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      fail = (e: BatonError) => {
        if (settled) return;
        finish();
        stop();
        if (!this.closed) void this.consul.session.destroy(sid).catch(() => undefined);
        reject(e);
      };
      const onAbort = () => fail(new BatonError(ErrorCode.BAD_ARGUMENT, 'consul store: campaign aborted'));
      this.pendingCampaigns.add(fail);
      opts.signal?.addEventListener('abort', onAbort);
      void (async () => {
        let index = 0;
        while (!settled) {
          const got = await this.call('campaign', () => this.consul.kv.set({ key, value: candidate, acquire: sid }));
          if (settled) return;
          if (got) {
            elected = true;
            finish();
            resolve(leadership);
            return;
          }
          // Held by someone else: wait until the key changes (released or deleted), then try again.
          for (;;) {
            if (settled || this.closed) return;
            const [idx, items] = await this.block(key, false, index);
            index = idx;
            if (items[0]?.Session === undefined) break;
          }
        }
      })().catch((e: unknown) => fail(e instanceof BatonError ? e : unavailable('consul', 'campaign', e)));
    });
  }

  leader(): Promise<string | null> {
    return this.call('leader', async () => {
      const it = await this.getItem(`${this.keys.election}leader`);
      return it === null || it.Session === undefined ? null : (it.Value ?? null);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = unavailable('consul', 'campaign: store closed');
    for (const f of [...this.pendingCampaigns]) f(err);
    for (const s of [...this.renewers]) s();
    for (const s of [...this.stops]) s();
  }
}
