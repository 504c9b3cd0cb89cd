/**
 * The migration manager's link to the cluster-state store (seed 003: "a
 * migration manager may be provisioned in each aggregation router/switch";
 * they must agree). Every hash tier runs one:
 *
 *   - it registers its hash tier in the store (a member with a lease: the
 *     tier is alive while its process is) and campaigns for leadership;
 *   - the LEADER is the only writer of the cluster-state record (the scope
 *     record: version, FDs in scope, and every member with its status). Each
 *     change is a compare-and-swap on the version it last wrote, so a stale
 *     leader cannot overwrite a newer state, and an operation whose status
 *     change did not commit did not happen;
 *   - a FOLLOWER installs every record it watches in its forwarding engine
 *     (both tiers forward with the same table version) and sends operations
 *     to the leader;
 *   - when the leader goes (its lease expires), a follower is elected, reads
 *     the record and resumes what it shows in progress (a DISENGAGING FD).
 *
 * Lifecycle of this manager's role: FOLLOWER → LEADER (elected) → FOLLOWER
 * (leadership lost: lease expired while the store was away) → LEADER ...
 */
import type { ClusterStore, ScopeRecord, MemberLease, Leadership, Unwatch, MemberRecord as StoreMember } from '../shared/store/store.js';
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, isBatonError } from '../shared/errors.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { Counters, defineCounters } from '../shared/counters.js';

export enum ManagerRole {
  FOLLOWER = 1,
  LEADER = 2,
}

export const COORD = defineCounters([
  'elected',
  'leadership_lost',
  'commits',
  'commit_conflicts',
  'commit_failures',
  'records_watched',
  'store_errors',
] as const);

export interface HashTierInfo {
  id: number;
  name: string;
  dataAddr: string;
  controlAddr: string;
}

export interface CoordinatorDeps {
  store: ClusterStore;
  self: HashTierInfo;
  ttlMs: number;
  scheduler: Scheduler;
  /** Elected: `record` is the stored state (null: none yet). Resolves once this manager has taken over. */
  onElected: (record: ScopeRecord | null) => Promise<void>;
  /** A record written by the leader (delivered to followers only). */
  onRecord: (record: ScopeRecord) => void;
  /** The hash tiers alive in the store changed. */
  onTiers: (tiers: HashTierInfo[]) => void;
  logger?: Logger;
}

/** The candidate name in the election: the tier's name and control address (followers reach the leader with it). */
export function candidateName(t: HashTierInfo): string {
  return `${t.name}@${t.controlAddr}`;
}
export function parseCandidate(c: string): { name: string; controlAddr: string } | null {
  const at = c.indexOf('@');
  return at > 0 ? { name: c.slice(0, at), controlAddr: c.slice(at + 1) } : null;
}

export class StoreCoordinator {
  readonly counters = new Counters(COORD);
  private roleNow = ManagerRole.FOLLOWER;
  private lease: MemberLease | null = null;
  private leadership: Leadership | null = null;
  private unwatch: Unwatch[] = [];
  private stopped = false;
  private retry: Timer | null = null;
  /** The next campaign attempt: its own timer, so a registration retry (later()) never cancels it, nor it one. */
  private campaignTimer: Timer | null = null;
  private abort = new AbortController();
  /** The version this manager last wrote or saw; a commit must find exactly this version. */
  private version = 0;
  private readonly tiers = new Map<number, HashTierInfo>();
  private readonly log: Logger;

  constructor(private readonly d: CoordinatorDeps) {
    this.log = d.logger ?? getLogger('store-coordinator');
  }

  get role(): ManagerRole {
    return this.roleNow;
  }
  get isLeader(): boolean {
    return this.roleNow === ManagerRole.LEADER;
  }
  /** Resolves once this manager leads (after its take-over ran). */
  whenLeader(): Promise<void> {
    if (this.isLeader) return Promise.resolve();
    return new Promise((r) => this.leaderWaiters.push(r));
  }
  private leaderWaiters: (() => void)[] = [];


  /** Registers this tier, starts the watches and the campaign. Rejects (STORE_UNAVAILABLE) if the store cannot be reached now. */
  async start(): Promise<void> {
    const { store, self } = this.d;
    await this.registerSelf();
    this.unwatch.push(
      await store.watchMembers((ev) => {
        if (ev.member.role !== 'hash') return;
        if (ev.type === 'put') this.tiers.set(ev.member.id, { id: ev.member.id, name: ev.member.name, dataAddr: ev.member.dataAddr, controlAddr: ev.member.controlAddr });
        else this.tiers.delete(ev.member.id);
        this.d.onTiers([...this.tiers.values()].sort((a, b) => a.id - b.id));
      }),
    );
    this.unwatch.push(
      await store.watchScope((rec) => {
        this.counters.inc(COORD.records_watched);
        if (rec.version > this.version) this.version = rec.version;
        if (!this.isLeader) this.d.onRecord(rec);
      }),
    );
    this.log.info('store joined', { store: store.kind, tier: self.name });
    this.campaign();
  }

  private async registerSelf(): Promise<void> {
    const { store, self, ttlMs } = this.d;
    const rec: StoreMember = { id: self.id, name: self.name, role: 'hash', status: 'ACTIVE', dataAddr: self.dataAddr, controlAddr: self.controlAddr };
    this.lease = await store.registerMember(rec, ttlMs);
    this.lease.onLost((e) => {
      this.log.warn('hash-tier lease lost; registering again', { err: e.message });
      this.lease = null;
      this.later(() => this.reRegister());
    });
  }

  private reRegister(): void {
    if (this.stopped) return;
    this.registerSelf().catch((e: Error) => {
      this.counters.inc(COORD.store_errors);
      this.log.debug('register again failed', { err: e.message });
      this.later(() => this.reRegister());
    });
  }

  private later(fn: () => void, ms = 250): void {
    if (this.stopped) return;
    this.retry?.cancel();
    this.retry = this.d.scheduler.after(ms, () => {
      this.retry = null;
      fn();
    });
  }

  /**
   * Pause before campaigning again: a quarter TTL (at most 500 ms), so that
   * after a store outage the new candidacy is in the store within a quarter
   * TTL of its return (docs/store.md, "After a store outage").
   */
  private get campaignRetryMs(): number {
    return Math.min(500, Math.max(50, Math.floor(this.d.ttlMs / 4)));
  }

  private retryCampaign(): void {
    if (this.stopped) return;
    this.campaignTimer?.cancel();
    this.campaignTimer = this.d.scheduler.after(this.campaignRetryMs, () => {
      this.campaignTimer = null;
      this.campaign();
    });
  }

  private campaign(): void {
    if (this.stopped) return;
    const { store, self, ttlMs } = this.d;
    // A leadership this manager gave up (or could not take up) must be gone
    // from the store first: its key would otherwise stay ahead of our own
    // new candidacy for as long as its lease lives.
    if (this.stale) {
      const old = this.stale;
      old.resign().then(
        () => {
          if (this.stale === old) this.stale = null;
          this.campaign();
        },
        () => this.retryCampaign(),
      );
      return;
    }
    store
      .campaign(candidateName(self), ttlMs, { signal: this.abort.signal })
      .then(async (l) => {
        if (this.stopped) {
          await l.resign().catch(() => {});
          return;
        }
        try {
          const rec = await store.getScope();
          if (rec && rec.version > this.version) this.version = rec.version;
          this.leadership = l;
          l.onLost((e) => this.stepDown(e.message));
          this.roleNow = ManagerRole.LEADER;
          this.counters.inc(COORD.elected);
          this.log.info('elected leader', { tier: self.name, recordVersion: rec?.version ?? 0 });
          await this.d.onElected(rec);
          for (const w of this.leaderWaiters.splice(0)) w();
        } catch (e) {
          // Elected but could not take over (the store went away again): give it up and try again.
          this.counters.inc(COORD.store_errors);
          this.log.warn('take-over failed; resigning and campaigning again', { err: (e as Error).message });
          if (this.isLeader) this.stepDown((e as Error).message);
          else {
            this.stale = l;
            this.retryCampaign();
          }
        }
      })
      .catch((e: Error) => {
        if (this.stopped) return;
        this.counters.inc(COORD.store_errors);
        this.log.warn('campaign failed; trying again', { err: e.message });
        this.retryCampaign();
      });
  }

  /** A leadership given up but perhaps still in the store (resigned before the next campaign). */
  private stale: Leadership | null = null;

  private stepDown(why: string): void {
    if (this.roleNow !== ManagerRole.LEADER) return;
    this.roleNow = ManagerRole.FOLLOWER;
    this.stale = this.leadership;
    this.leadership = null;
    this.counters.inc(COORD.leadership_lost);
    this.log.warn('leadership lost; following again', { why });
    this.retryCampaign();
  }

  /**
   * Writes the next cluster-state record (leader only): a CAS on the version
   * this manager last saw. Rejects STORE_UNAVAILABLE when the store is away,
   * STORE_CONFLICT when another writer got there first (this manager then
   * steps down: it is not the leader any more).
   */
  async commit(rec: ScopeRecord): Promise<void> {
    if (!this.isLeader) throw new BatonError(ErrorCode.STORE_CONFLICT, `${this.d.self.name} is not the leading manager`);
    let ok: boolean;
    try {
      ok = await this.d.store.casScope(this.version, rec);
    } catch (e) {
      this.counters.inc(COORD.commit_failures);
      if (isBatonError(e)) throw new BatonError(e.code, `cluster store: ${e.message}`, e.details, { cause: e });
      throw e;
    }
    if (!ok) {
      this.counters.inc(COORD.commit_conflicts);
      this.stepDown(`record version ${this.version} was replaced by another writer`);
      throw new BatonError(ErrorCode.STORE_CONFLICT, `cluster state changed under ${this.d.self.name} (expected version ${this.version}); it no longer leads`);
    }
    this.version = rec.version;
    this.counters.inc(COORD.commits);
  }

  /** The leading manager's name and control address, or null. */
  async leader(): Promise<{ name: string; controlAddr: string } | null> {
    const c = await this.d.store.leader();
    return c === null ? null : parseCandidate(c);
  }

  /** Stops; leaves the election and revokes this tier's lease so the other tier takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.retry?.cancel();
    this.campaignTimer?.cancel();
    this.abort.abort();
    for (const u of this.unwatch.splice(0)) await u().catch(() => {});
    await this.leadership?.resign().catch(() => {});
    await this.lease?.revoke().catch(() => {});
    this.roleNow = ManagerRole.FOLLOWER;
  }
}
