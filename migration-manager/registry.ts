/**
 * The manager's view of the cluster: every member, its status (an explicit
 * state machine), its last statistics and heartbeat, and the versioned hash
 * scope built from the FDs whose status puts them in scope.
 */
import { StatusMachine, inScope, statusName, statusByName } from '../shared/membership/status.js';
import { MemberStatus, Role, emptyFlowStats, type FlowStats, type NodeInfo, type ScopeUpdate, type NodeStatus } from '../shared/control/messages.js';
import { HashScope } from '../shared/scope/hash-scope.js';
import { DEFAULT_REBALANCE_ABOVE_PCT, planScope, type PlannedScope } from '../shared/scope/scope-plan.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import type { ScopeRecord, ScopeNode, MemberRole, MemberStatusName, DisengageRecord } from '../shared/store/store.js';

/** Roles as the store spells them. */
const ROLE_NAME: Record<number, MemberRole> = { [Role.HASH_TIER]: 'hash', [Role.FD]: 'fd', [Role.SERVICE]: 'service' };
const ROLE_OF: Record<MemberRole, number> = { hash: Role.HASH_TIER, fd: Role.FD, service: Role.SERVICE };

export interface MemberRecord {
  info: NodeInfo;
  machine: StatusMachine;
  stats: FlowStats;
  counters: Record<string, number>;
  lastHeartbeatAt: number; // -1 never
  appliedScopeVersion: number;
  connected: boolean;
  /**
   * A DISENGAGING FD: the disengage as the operator asked for it (policy,
   * named inheritor, backup, timeout) and its migration id, kept in the
   * cluster record so a manager that takes over resumes it as asked. Null
   * in every other status.
   */
  disengage: DisengageRecord | null;
}

export interface RegistryOptions {
  /** Reset the scope's anchor when a member's share would be more than this % off the mean (config hash.rebalanceAbovePct). */
  rebalanceAbovePct?: number;
  /** Called (off the hot path) when a rebuild reset the anchor; `deviation` is the anchored table's worst share deviation. */
  onRebalance?: (deviation: number, version: number) => void;
}

export class Registry {
  private readonly members = new Map<number, MemberRecord>();
  private version = 0;
  private scope: HashScope | null = null;
  /** The FDs the hash scope is anchored on (docs/hashing.md, "Anchored tables"); sorted. */
  private anchor: readonly string[] = [];
  private readonly rebalanceAbovePct: number;
  /** The other hash tiers (aggregation B, ...), listed in scope updates so members can pick their uplink. */
  private tiers: NodeInfo[] = [];

  constructor(
    readonly self: NodeInfo,
    readonly tableSize: number,
    readonly hashSeed: number,
    private readonly opts: RegistryOptions = {},
  ) {
    this.rebalanceAbovePct = opts.rebalanceAbovePct ?? DEFAULT_REBALANCE_ABOVE_PCT;
  }

  get scopeVersion(): number {
    return this.version;
  }
  get currentScope(): HashScope | null {
    return this.scope;
  }

  get(id: number): MemberRecord | undefined {
    return this.members.get(id);
  }
  byName(name: string): MemberRecord | undefined {
    for (const m of this.members.values()) if (m.info.name === name) return m;
    return undefined;
  }
  all(): MemberRecord[] {
    return [...this.members.values()].sort((a, b) => a.info.id - b.info.id);
  }

  /**
   * Registers (or re-registers after a restart) a member. A second live
   * registration of the same id, or a name another id uses, is refused.
   * Not `authoritative` (a follower manager): the status is left alone.
   */
  register(info: NodeInfo, now: number, authoritative = true): MemberRecord {
    if (info.role !== Role.FD && info.role !== Role.SERVICE) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `only FDs and service nodes register; got role ${info.role} for ${info.name}`);
    }
    if (info.id < 1 || info.id > 65534 || info.id === this.self.id) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `node id ${info.id} is invalid or taken by the manager`);
    }
    const byName = this.byName(info.name);
    if (byName && byName.info.id !== info.id) {
      throw new BatonError(ErrorCode.DUPLICATE_NODE, `name ${info.name} is already used by node ${byName.info.id}`);
    }
    const prev = this.members.get(info.id);
    if (prev && prev.connected) {
      throw new BatonError(ErrorCode.DUPLICATE_NODE, `node ${info.id} (${prev.info.name}) is already registered and connected`);
    }
    // A service node's control link that reconnected (same process): it keeps a
    // drain's status (DISENGAGING, DISENGAGED). A new process starts afresh.
    const sameService = prev !== undefined && info.role === Role.SERVICE && info.pid !== 0 && prev.info.pid === info.pid;
    const rec: MemberRecord = prev ?? {
      info,
      machine: new StatusMachine(MemberStatus.JOINING),
      stats: emptyFlowStats(),
      counters: {},
      lastHeartbeatAt: -1,
      appliedScopeVersion: 0,
      connected: true,
      disengage: null,
    };
    rec.info = info;
    rec.connected = true;
    rec.lastHeartbeatAt = now;
    if (!authoritative) {
      // A follower manager only keeps the member's link and details; its
      // status is what the leader commits (adopt()).
      this.members.set(info.id, rec);
      return rec;
    }
    // Service nodes serve at once. An FD joins: it enters the scope only once
    // its peers have told it about every flow they own (the manager's engage).
    // A node that comes back while still ACTIVE has restarted without its state:
    // it failed, then rejoins.
    const S = MemberStatus;
    const m = rec.machine;
    const keep = sameService && (m.status === S.DISENGAGING || m.status === S.DISENGAGED);
    if (prev && !keep && (m.status === S.ACTIVE || m.status === S.DISENGAGING)) m.transition(S.FAILED, 'registered again: restarted without its state', now);
    if (!keep && (m.status === S.FAILED || m.status === S.DISENGAGED)) m.transition(S.JOINING, prev ? 're-registered' : 'registered', now);
    if (info.role === Role.SERVICE && m.status === S.JOINING) m.transition(S.ACTIVE, 'registered', now);
    if (m.status !== S.DISENGAGING) rec.disengage = null;
    this.members.set(info.id, rec);
    this.rebuild();
    return rec;
  }

  heartbeat(id: number, stats: FlowStats, counters: Record<string, number>, applied: number, now: number): boolean {
    const m = this.members.get(id);
    if (!m) return false;
    m.stats = stats;
    m.counters = counters;
    m.appliedScopeVersion = applied;
    m.lastHeartbeatAt = now;
    return true;
  }

  /** Marks members silent for longer than `deadAfterMs` FAILED; returns them. */
  expire(now: number, deadAfterMs: number): MemberRecord[] {
    const dead: MemberRecord[] = [];
    for (const m of this.members.values()) {
      if (m.machine.status === MemberStatus.FAILED || m.machine.status === MemberStatus.DISENGAGED) continue;
      if (now - m.lastHeartbeatAt > deadAfterMs) {
        m.machine.transition(MemberStatus.FAILED, `no heartbeat for ${Math.round(now - m.lastHeartbeatAt)} ms`, now);
        m.connected = false;
        m.disengage = null;
        dead.push(m);
      }
    }
    if (dead.length) this.rebuild();
    return dead;
  }

  disconnected(id: number): void {
    const m = this.members.get(id);
    if (m) m.connected = false;
  }

  /**
   * Moves a member to another status (validated) and rebuilds the scope.
   * `disengage`: for DISENGAGING, the operation's record (kept until the
   * member leaves DISENGAGING).
   */
  setStatus(id: number, to: number, reason: string, now: number, disengage: DisengageRecord | null = null): void {
    const m = this.members.get(id);
    if (!m) throw new BatonError(ErrorCode.UNKNOWN_NODE, `unknown node ${id}`);
    m.machine.transition(to, reason, now);
    m.disengage = to === MemberStatus.DISENGAGING ? disengage : null;
    this.rebuild();
  }

  /**
   * A DISENGAGING FD handed its flows over: out of the hash scope (still
   * DISENGAGING until every tier and member runs that scope and it is quiet).
   */
  release(id: number, reason: string, now: number): void {
    const m = this.members.get(id);
    if (!m) throw new BatonError(ErrorCode.UNKNOWN_NODE, `unknown node ${id}`);
    m.machine.release(reason, now);
    if (m.disengage) m.disengage = { ...m.disengage, outOfScope: true };
    this.rebuild();
  }

  /** Undoes a status change that was not committed (not a transition: no validation). */
  revertStatus(id: number, to: number, reason: string, now: number, outOfScope = false, disengage: DisengageRecord | null = null): void {
    const m = this.members.get(id);
    if (!m) return;
    m.machine.adopt(to, reason, now, outOfScope);
    m.disengage = to === MemberStatus.DISENGAGING ? disengage : null;
    this.rebuild();
  }

  /** Whether this member is an FD in the hash scope (ACTIVE, or DISENGAGING before its hand-over). */
  isInScope(m: MemberRecord): boolean {
    return m.info.role === Role.FD && inScope(m.machine.status, m.machine.outOfScope);
  }

  /** The FDs the current scope is anchored on (a superset of scopeMembers()). */
  scopeAnchor(): readonly string[] {
    return this.anchor;
  }

  /**
   * The scope the cluster will have once `leaving` is out (what a disengage
   * announces in advance): planned exactly as the rebuild after the
   * DISENGAGED transition will plan it, if nothing else changes meanwhile.
   * Null if no FD would be left.
   */
  planWithout(leaving: string): PlannedScope | null {
    // FDs that are leaving too (disengages running together) are left out as
    // well: the leaver redirects what it cannot serve by this scope, and a
    // packet sent to another leaver would be sent back (a redirect loop).
    let next = this.scopeMembers().filter((n) => n !== leaving && this.byName(n)?.machine.status !== MemberStatus.DISENGAGING);
    if (next.length === 0) next = this.scopeMembers().filter((n) => n !== leaving); // every other FD is leaving too
    if (next.length === 0) return null;
    return planScope(this.version + 1, this.anchor, next, this.tableSize, this.hashSeed, this.rebalanceAbovePct);
  }

  /** FDs in the hash scope, by name. */
  scopeMembers(): string[] {
    return this.all()
      .filter((m) => this.isInScope(m))
      .map((m) => m.info.name);
  }

  /**
   * The other live hash tiers (from the store); shown to members in scope
   * updates. A change of that set (a tier came, went, or came back on
   * another data or control address) is a new scope version when `bump`
   * (the leading manager: members apply only a newer version, so without it
   * they would keep the old tier list until an unrelated change). A
   * follower does not bump: its version is the leader's record's. Returns
   * whether the set changed.
   */
  setTiers(tiers: NodeInfo[], bump = true): boolean {
    const next = tiers.filter((t) => t.id !== this.self.id).sort((a, b) => a.id - b.id);
    const key = (l: readonly NodeInfo[]): string => l.map((t) => `${t.id}/${t.name}/${t.dataAddr}/${t.controlAddr}`).join(',');
    const changed = key(next) !== key([...this.tiers].sort((a, b) => a.id - b.id));
    this.tiers = next;
    if (changed && bump) this.bump();
    return changed;
  }

  /**
   * A new version of the same view: a manager that takes over publishes the
   * state it adopted under a version no member has applied yet (its tier
   * list differs from the one the old leader last published: at least the
   * old leader may be gone). The anchor is kept as adopted.
   */
  bump(): void {
    this.rebuild(true);
  }

  /** The other live hash tiers, as the store lists them. */
  otherTiers(): readonly NodeInfo[] {
    return this.tiers;
  }

  /** The cluster-state record of this view (what the leading manager commits to the store). */
  toRecord(): ScopeRecord {
    const nodes: ScopeNode[] = this.all().map((m) => ({
      id: m.info.id,
      name: m.info.name,
      role: ROLE_NAME[m.info.role] ?? 'fd',
      status: statusName(m.machine.status) as MemberStatusName, // a machine only holds the five store statuses
      dataAddr: m.info.dataAddr,
      ...(m.disengage && m.machine.status === MemberStatus.DISENGAGING ? { disengage: { ...m.disengage, outOfScope: m.machine.outOfScope } } : {}),
    }));
    return { version: this.version, members: this.scopeMembers(), anchor: [...this.anchor], tableSize: this.tableSize, hashSeed: this.hashSeed, nodes };
  }

  /**
   * Takes over the state another manager committed: every member's status as
   * recorded, and the record's version (the next change is the next
   * version, which is what a compare-and-swap on the record expects). Members this manager has not heard from yet
   * are added as disconnected, with `now` as their last sign of life.
   */
  adopt(rec: ScopeRecord, now: number): void {
    for (const n of rec.nodes ?? []) {
      if (n.role === 'hash') continue;
      let m = this.members.get(n.id);
      if (!m) {
        m = {
          info: { id: n.id, name: n.name, role: ROLE_OF[n.role], dataAddr: n.dataAddr, controlAddr: '', metricsAddr: '', virtualIp: '', virtualPort: 0, pid: 0, version: '' },
          machine: new StatusMachine(statusByName(n.status)),
          stats: emptyFlowStats(),
          counters: {},
          lastHeartbeatAt: now,
          appliedScopeVersion: 0,
          connected: false,
          disengage: null,
        };
        this.members.set(n.id, m);
      }
      const status = statusByName(n.status)!;
      // A DISENGAGING FD is out of scope once it handed its flows over (its
      // record says so; a record without one: whether `members` still lists it).
      const out = status === MemberStatus.DISENGAGING && (n.disengage ? n.disengage.outOfScope : !rec.members.includes(n.name));
      m.machine.adopt(status, `cluster state v${rec.version}`, now, out);
      m.disengage = status === MemberStatus.DISENGAGING ? (n.disengage ? { ...n.disengage, outOfScope: out } : null) : null;
    }
    this.version = rec.version - 1;
    // The leader's anchor (a record from before anchors existed: its members).
    this.anchor = [...(rec.anchor ?? rec.members)].sort();
    this.rebuild(true); // version = the record's, scope from the adopted statuses and anchor
  }

  /**
   * A new scope version from the members' statuses. `adopted`: the anchor
   * came from the leader's record and is taken as it is (no rebalance
   * decision here, so every tier builds the leader's table even if its own
   * bound differs).
   */
  private rebuild(adopted = false): void {
    this.version++;
    const names = this.scopeMembers();
    if (names.length === 0) {
      // Nothing to hash over; the anchor is kept for when FDs come back.
      this.scope = null;
      return;
    }
    if (adopted) {
      this.scope = HashScope.build(this.version, names, this.tableSize, this.hashSeed, this.anchor);
      this.anchor = this.scope.anchor;
      return;
    }
    const p = planScope(this.version, this.anchor, names, this.tableSize, this.hashSeed, this.rebalanceAbovePct);
    this.scope = p.scope;
    this.anchor = p.anchor;
    if (p.rebalanced) this.opts.onRebalance?.(p.anchoredDeviation, this.version);
  }

  scopeUpdate(): ScopeUpdate {
    const members = this.all().map((m) => ({
      node: m.info,
      status: m.machine.status,
      inScope: this.isInScope(m),
      stats: m.stats,
    }));
    for (const t of this.tiers) members.unshift({ node: t, status: MemberStatus.ACTIVE, inScope: false, stats: emptyFlowStats() });
    members.unshift({ node: this.self, status: MemberStatus.ACTIVE, inScope: false, stats: emptyFlowStats() });
    return { version: this.version, members, tableSize: this.tableSize, hashSeed: this.hashSeed, anchor: [...this.anchor] };
  }

  status(now: number, selfStats: FlowStats, selfCounters: Record<string, number>): NodeStatus[] {
    const rows: NodeStatus[] = [
      { node: this.self, status: MemberStatus.ACTIVE, inScope: false, stats: selfStats, lastHeartbeatMsAgo: 0, counters: selfCounters, appliedScopeVersion: this.version },
    ];
    for (const t of this.tiers) {
      rows.push({ node: t, status: MemberStatus.ACTIVE, inScope: false, stats: emptyFlowStats(), lastHeartbeatMsAgo: -1, counters: {}, appliedScopeVersion: 0 });
    }
    for (const m of this.all()) {
      rows.push({
        node: m.info,
        status: m.machine.status,
        inScope: this.isInScope(m),
        stats: m.stats,
        lastHeartbeatMsAgo: m.lastHeartbeatAt < 0 ? -1 : Math.round(now - m.lastHeartbeatAt),
        counters: m.counters,
        appliedScopeVersion: m.appliedScopeVersion,
      });
    }
    return rows;
  }

  describe(id: number): string {
    const m = this.members.get(id);
    return m ? `${m.info.name}(${id}) ${statusName(m.machine.status)}` : `unknown(${id})`;
  }
}
