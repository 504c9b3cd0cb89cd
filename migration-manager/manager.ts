/**
 * The migration manager, hosted by the hash tier (seed 003: "a migration
 * manager may be provisioned in each aggregation router/switch"). In this
 * issue it runs membership: registrations, heartbeats, liveness, the
 * versioned hash scope (installed in the forwarding engine and pushed to
 * every member), and status queries. Disengage/engage build on it.
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { MessageNet, MessageListener } from '../shared/io/stream.js';
import type { Address } from '../shared/io/address.js';
import { parseAddress } from '../shared/io/address.js';
import { ControlChannel, CHANNEL_COUNTERS } from '../shared/control/channel.js';
import { body, nodeInfo, Role, MemberStatus, type NodeInfo, type EnvelopeObject, type Body, type FlowStats } from '../shared/control/messages.js';
import { isBatonError } from '../shared/errors.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { Counters } from '../shared/counters.js';
import { MGR } from './counters.js';
import { Registry } from './registry.js';
import { Operations, DEFAULT_SCOPE_ACK_TIMEOUT_MS, type ScopeConfirmation } from './operations.js';
import type { DisengageRecord } from '../shared/store/store.js';
import { Workflows } from './workflows.js';
import { failedDisengageReply, type DisengageReply } from '../shared/control/messages.js';
import type { ForwardingEngine } from '../hash-tier/forwarding-engine.js';
import type { ClusterStore, ScopeRecord } from '../shared/store/store.js';
import { StoreCoordinator, type HashTierInfo } from './store-coordinator.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

export interface ManagerOptions {
  self: NodeInfo;
  net: MessageNet;
  scheduler: Scheduler;
  listen: Address;
  engine: ForwardingEngine;
  tableSize: number;
  hashSeed: number;
  /** Config hash.rebalanceAbovePct (shared/scope/scope-plan.ts); default DEFAULT_REBALANCE_ABOVE_PCT. */
  rebalanceAbovePct?: number;
  heartbeatMs: number;
  deadAfterMs: number;
  selfStats: () => FlowStats;
  selfCounters: () => Record<string, number>;
  /** How long a disengage or engage may take by default (ms). */
  operationTimeoutMs?: number;
  /** Bound of the wait for every tier's and member's acknowledgement of a scope without a disengaging FD (ms; default 5000). */
  scopeAckTimeoutMs?: number;
  /** A disengaged FD reports only after receiving nothing for this long (ms; default 100). */
  quietMs?: number;
  /** A draining service node is DISENGAGED at the latest after this long waiting to be quiet (ms; default 30000). */
  serviceDrainTimeoutMs?: number;
  /** A draining service node is quiet once no frame reached it for this long (ms; default 1000). */
  serviceQuietMs?: number;
  /** Scheduled power-down of idle FDs (off when absent or disabled). */
  powerdown?: { enabled: boolean; everyMs: number; thresholdPps: number; sustainMs: number; minActive: number; policy: string; stopProcesses: boolean };
  /** The cluster-state store (embedded: a MemoryStore in this process) and the TTL of this tier's lease. */
  store: ClusterStore;
  storeTtlMs: number;
  /** This is the cluster's only hash tier: start() returns once it leads. */
  soleTier?: boolean;
  logger?: Logger;
}

export class Manager {
  readonly registry: Registry;
  readonly counters = new Counters(MGR);
  /** Every control connection the manager accepted, summed (decode failures of garbage peers included). */
  readonly channelCounters = new Counters(CHANNEL_COUNTERS);
  private listener: MessageListener | null = null;
  private readonly channels = new Set<ControlChannel>();
  private readonly channelOf = new Map<number, ControlChannel>();
  private liveness: Timer | null = null;
  private readonly log: Logger;
  readonly ops: Operations;
  readonly workflows: Workflows;
  private orchestrator: ControlChannel | null = null;
  private powerdownTimer: Timer | null = null;
  /** Leader election and the cluster-state record (created in start(), once the control address is known). */
  coordinator!: StoreCoordinator;
  /** Commits run one at a time, each writing the registry as it is then. */
  private commitChain: Promise<void> = Promise.resolve();
  private commitDirty = false;
  private commitRetry: Timer | null = null;

  constructor(private readonly o: ManagerOptions) {
    this.log = o.logger ?? getLogger('manager');
    this.registry = new Registry(o.self, o.tableSize, o.hashSeed, {
      rebalanceAbovePct: o.rebalanceAbovePct,
      onRebalance: (deviation, version) => {
        this.counters.inc(MGR.scope_rebalances);
        this.log.info('hash scope rebalanced: anchor reset to the in-scope FDs', { version, anchoredDeviationPct: Math.round(deviation * 1e4) / 100 });
      },
    });
    this.ops = new Operations({
      registry: this.registry,
      scheduler: o.scheduler,
      counters: this.counters,
      channelTo: (id) => this.channelOf.get(id),
      publishScope: () => this.publishScope(),
      changeStatus: (id, to, reason, disengage) => this.changeStatus(id, to, reason, disengage),
      releaseFromScope: (id, reason) => this.releaseFromScope(id, reason),
      confirmScope: (version, timeoutMs) => this.confirmScope(version, timeoutMs),
      defaultTimeoutMs: o.operationTimeoutMs ?? 30_000,
      scopeAckTimeoutMs: o.scopeAckTimeoutMs,
      quietMs: o.quietMs,
      serviceDrainTimeoutMs: o.serviceDrainTimeoutMs,
      serviceQuietMs: o.serviceQuietMs,
      logger: this.log,
    });
    this.workflows = new Workflows({
      registry: this.registry,
      ops: this.ops,
      scheduler: o.scheduler,
      orchestrator: () => (this.orchestrator && !this.orchestrator.closed ? this.orchestrator : null),
      heartbeatMs: o.heartbeatMs,
      logger: this.log,
    });
  }

  get address(): Address | null {
    return this.listener?.address ?? null;
  }

  async start(): Promise<Address> {
    this.listener = await this.o.net.listen(this.o.listen, (conn) => this.accept(new ControlChannel(conn, this.o.scheduler, { counters: this.channelCounters })));
    this.liveness = this.o.scheduler.every(Math.max(10, Math.floor(this.o.heartbeatMs / 2)), () => this.checkLiveness());
    const pd = this.o.powerdown;
    if (pd?.enabled) {
      this.powerdownTimer = this.o.scheduler.every(pd.everyMs, () => {
        this.workflows
          .powerdown({ ...pd, timeoutMs: this.o.operationTimeoutMs ?? 30_000 }, (msg) => this.log.info('scheduled power-down', { msg }))
          .then(
            (r) => {
              if (!r.ok) this.log.warn('scheduled power-down failed', { err: r.errorMessage });
            },
            // Refused before it began (an upgrade or another power-down holds the lock): try again next tick.
            (e: unknown) => this.log.info('scheduled power-down not started', { err: String(e) }),
          );
      });
    }
    this.log.info('manager listening', { control: this.listener.address });
    const self = this.o.self;
    this.coordinator = new StoreCoordinator({
      store: this.o.store,
      self: { id: self.id, name: self.name, dataAddr: self.dataAddr, controlAddr: `${this.listener.address.host}:${this.listener.address.port}` },
      ttlMs: this.o.storeTtlMs,
      scheduler: this.o.scheduler,
      onElected: (rec) => this.takeOver(rec),
      onRecord: (rec) => this.follow(rec),
      onTiers: (tiers) => this.setTiers(tiers),
      logger: this.log,
    });
    await this.coordinator.start();
    // The only hash tier: it is the only candidate; serve as leader from the first registration.
    if (this.o.soleTier) await this.coordinator.whenLeader();
    return this.listener.address;
  }

  get isLeader(): boolean {
    return this.coordinator?.isLeader ?? false;
  }

  /** Disengages resumed after a take-over, by target (a forwarded request whose leader died waits for them). */
  private readonly resumed = new Map<string, Promise<DisengageReply>>();

  private async awaitResumed(target: string): Promise<DisengageReply | null> {
    const bound = this.o.storeTtlMs * 4 + 2000;
    const t0 = this.o.scheduler.clock.now();
    while (this.o.scheduler.clock.now() - t0 < bound) {
      const p = this.resumed.get(target);
      if (p) return p.catch((e: Error) => failedReply(target, '', e));
      await new Promise<void>((r) => this.o.scheduler.after(50, r));
    }
    return null;
  }

  /** Elected: take the committed state, publish it, finish what it shows in progress. */
  private async takeOver(rec: ScopeRecord | null): Promise<void> {
    if (rec) {
      this.registry.adopt(rec, this.o.scheduler.clock.now());
      // Members run the old leader's last version, whose tier list this
      // manager's may not match (the old leader may be gone): a new version,
      // or they would ignore what is published now.
      this.registry.bump();
    }
    await this.publishScope();
    for (const m of this.registry.all()) {
      if (m.info.role === Role.SERVICE && m.machine.status === MemberStatus.DISENGAGING && m.connected) {
        // A service drain the old leader drove: drain it again (the node's stop, or a
        // forwarded request, waits for it).
        const p = this.ops.resumeServiceDrain(m.info.name);
        this.resumed.set(m.info.name, p);
        p.then(
          (r) => this.log.info('resumed service drain completed', { target: r.target, ok: r.ok }),
          (e: Error) => this.log.warn('resumed service drain failed', { target: m.info.name, err: e.message }),
        );
        continue;
      }
      if (m.info.role !== Role.FD) continue;
      if (m.machine.status === MemberStatus.DISENGAGING) {
        const p = this.ops.resumeDisengage(m.info.name);
        this.resumed.set(m.info.name, p);
        p.then(
          (r) => this.log.info('resumed disengage completed', { target: r.target, entries: r.entriesMoved }),
          (e: Error) => this.log.warn('resumed disengage failed', { target: m.info.name, err: e.message }),
        );
      } else if (m.machine.status === MemberStatus.JOINING && m.connected) {
        this.ops.engage(m.info.name).catch((e: Error) => this.log.warn('resumed engage failed', { target: m.info.name, err: e.message }));
      }
    }
  }

  /** Follower: the leader committed a new cluster state; forward with it. */
  private follow(rec: ScopeRecord): void {
    this.registry.adopt(rec, this.o.scheduler.clock.now()); // statuses, version and scope as committed
    this.installEngine();
    this.wakeScopeWaiters();
  }

  /** Acknowledgements this tier owes the leader: resolved once its engine runs `version` or newer. */
  private scopeWaiters: { version: number; done: (ok: boolean) => void }[] = [];

  private wakeScopeWaiters(): void {
    const v = this.registry.scopeVersion;
    if (this.scopeWaiters.length === 0) return;
    this.scopeWaiters = this.scopeWaiters.filter((w) => {
      if (w.version > v) return true;
      w.done(true);
      return false;
    });
  }

  /**
   * The leader asks (a ScopeUpdate sent as a request): answered with Pong once
   * this tier's forwarding engine runs that version or a newer one (a
   * follower installs what the leader commits, through its store watch), or
   * with ErrorReply BATON_TIMEOUT after scopeAckTimeoutMs.
   */
  private ackScope(version: number): Promise<Body> {
    this.counters.inc(MGR.scope_ack_requests);
    if (this.registry.scopeVersion >= version) return Promise.resolve(body('pong', {}));
    const bound = this.o.scopeAckTimeoutMs ?? DEFAULT_SCOPE_ACK_TIMEOUT_MS;
    return new Promise((resolve) => {
      const timer = this.o.scheduler.after(bound, () => {
        this.scopeWaiters = this.scopeWaiters.filter((w) => w !== waiter);
        this.counters.inc(MGR.scope_ack_request_timeouts);
        resolve(body('errorReply', { code: ErrorCode.TIMEOUT, message: `${this.o.self.name} runs scope v${this.registry.scopeVersion}, not v${version}, after ${bound} ms` }));
      });
      const waiter = {
        version,
        done: () => {
          timer.cancel();
          resolve(body('pong', {}));
        },
      };
      this.scopeWaiters.push(waiter);
    });
  }

  /** Leader: control channels to the other hash tiers (scope acknowledgements), by control address. */
  private readonly tierChannels = new Map<string, ControlChannel>();

  private async tierChannel(addr: string, timeoutMs: number): Promise<ControlChannel> {
    const have = this.tierChannels.get(addr);
    if (have && !have.closed) return have;
    const conn = await new Promise<Awaited<ReturnType<MessageNet['connect']>>>((resolve, reject) => {
      const timer = this.o.scheduler.after(timeoutMs, () => reject(new BatonError(ErrorCode.TIMEOUT, `no connection within ${timeoutMs} ms`)));
      this.o.net.connect(parseAddress(addr)).then(
        (c) => {
          timer.cancel();
          resolve(c);
        },
        (e: Error) => {
          timer.cancel();
          reject(new BatonError(ErrorCode.CONNECTION_CLOSED, e.message, undefined, { cause: e }));
        },
      );
    });
    const ch = new ControlChannel(conn, this.o.scheduler);
    this.tierChannels.set(addr, ch);
    ch.onClose(() => {
      if (this.tierChannels.get(addr) === ch) this.tierChannels.delete(addr);
    });
    return ch;
  }

  /**
   * Leader: waits at most `timeoutMs` until every hash tier and every member
   * runs scope `version` or a newer one. Members get the current ScopeUpdate
   * as a request (their Pong says they applied it, or a newer one); other
   * tiers are asked the same over a control connection and answer once their
   * engine runs it. Not waited for (and listed as skipped): FAILED members,
   * members not connected to this manager (they get the current scope when
   * they register again, before anything else), tiers whose control address
   * refuses connections (their process, and so their forwarding engine, does
   * not run). Everything else that does not answer in time is a failure.
   */
  async confirmScope(version: number, timeoutMs: number): Promise<ScopeConfirmation> {
    const acked: string[] = [this.o.self.name]; // this tier's engine was installed with the scope
    const skipped: string[] = [];
    const failed: { name: string; why: string }[] = [];
    const update = this.registry.scopeUpdate();
    const asks: Promise<void>[] = [];
    const ask = (name: string, ch: ControlChannel): Promise<void> =>
      ch.request(body('scopeUpdate', update), Math.max(1, timeoutMs)).then(
        (r) => {
          if (r.body.case === 'pong') acked.push(name);
          else failed.push({ name, why: `answered ${r.body.case}` });
        },
        (e: Error) => {
          failed.push({ name, why: isBatonError(e) && e.details?.['remoteMessage'] ? String(e.details['remoteMessage']) : e.message });
        },
      );
    for (const t of this.registry.otherTiers()) {
      if (!t.controlAddr) {
        skipped.push(`${t.name} (no control address)`);
        continue;
      }
      asks.push(
        this.tierChannel(t.controlAddr, timeoutMs).then(
          (ch) => ask(t.name, ch),
          (e: BatonError) => {
            if (e.code === ErrorCode.CONNECTION_CLOSED) skipped.push(`${t.name} (not running: ${e.message})`);
            else failed.push({ name: t.name, why: e.message });
          },
        ),
      );
    }
    for (const m of this.registry.all()) {
      const ch = this.channelOf.get(m.info.id);
      if (m.machine.status === MemberStatus.FAILED) skipped.push(`${m.info.name} (FAILED)`);
      else if (!ch || ch.closed) skipped.push(`${m.info.name} (not connected)`);
      else asks.push(ask(m.info.name, ch));
    }
    await Promise.all(asks);
    this.counters.inc(MGR.scope_acks, acked.length);
    this.counters.inc(MGR.scope_acks_skipped, skipped.length);
    this.counters.inc(MGR.scope_ack_failures, failed.length);
    if (skipped.length > 0) this.log.warn('scope acknowledgements: not waited for', { version, skipped });
    if (failed.length > 0) this.log.warn('scope acknowledgements missing', { version, failed });
    return { acked, skipped, failed };
  }

  /**
   * The hash tiers alive in the store changed. The leader makes a changed set
   * a new scope version and publishes it (members pick their uplink from
   * it); a follower only keeps the list (its version is the leader's).
   */
  private setTiers(tiers: HashTierInfo[]): void {
    const changed = this.registry.setTiers(
      tiers.map((t) => nodeInfo({ id: t.id, name: t.name, role: Role.HASH_TIER, dataAddr: t.dataAddr, controlAddr: t.controlAddr })),
      this.isLeader,
    );
    if (changed) this.counters.inc(MGR.tier_changes);
    if (changed && this.isLeader) void this.publishScope();
  }

  private accept(ch: ControlChannel): void {
    this.channels.add(ch);
    let memberId = 0;
    ch.onClose(() => {
      this.channels.delete(ch);
      if (memberId && this.channelOf.get(memberId) === ch) {
        this.channelOf.delete(memberId);
        this.registry.disconnected(memberId);
      }
    });
    ch.onMessage((env) => {
      if (env.body.case === 'heartbeat') {
        const h = env.body.value;
        this.counters.inc(MGR.heartbeats);
        const now = this.o.scheduler.clock.now();
        if (!this.registry.heartbeat(h.nodeId, h.stats, h.counters, h.appliedScopeVersion, now)) {
          this.counters.inc(MGR.heartbeats_unknown);
        } else if (this.o.powerdown?.enabled) {
          this.workflows.observeLoad(h.nodeId, h.stats.pps, this.o.powerdown.thresholdPps, now);
        }
      } else if (env.body.case === 'migrationProgress') {
        this.ops.progress(env.body.value);
      } else this.counters.inc(MGR.unexpected_messages);
    });
    ch.onRequest((env) => {
      const r = this.handleRequest(env, ch);
      if (r.registered) memberId = r.registered;
      return r.reply;
    });
  }

  private handleRequest(env: EnvelopeObject, ch: ControlChannel): { reply: Body | void | Promise<Body>; registered?: number } {
    const now = this.o.scheduler.clock.now();
    if (FORWARDED.has(env.body.case) && !this.isLeader) return { reply: this.forwardToLeader(env.body, ch) };
    switch (env.body.case) {
      case 'register': {
        const info = env.body.value.node;
        try {
          this.registry.register(info, now, this.isLeader);
        } catch (e) {
          this.counters.inc(MGR.registrations_refused);
          this.log.warn('registration refused', { node: info.name, id: info.id, err: (e as Error).message });
          return {
            reply: body('registerAck', {
              accepted: false,
              errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL,
              errorMessage: (e as Error).message,
              scopeVersion: this.registry.scopeVersion,
              heartbeatIntervalMs: this.o.heartbeatMs,
            }),
          };
        }
        this.counters.inc(MGR.registrations);
        this.channelOf.set(info.id, ch);
        this.log.info('member registered', { node: info.name, id: info.id, role: info.role, data: info.dataAddr });
        // The ack goes first; the new scope follows to everyone (the new member
        // included); an FD then joins the scope once its peers synced it.
        this.o.scheduler.defer(() => {
          if (!this.isLeader) return; // the leader publishes and engages
          void this.publishScope();
          if (info.role === Role.FD) {
            this.ops.engage(info.name).catch((e: Error) => {
              this.counters.inc(MGR.engages_failed);
              this.log.warn('automatic engage failed', { node: info.name, err: e.message });
            });
          }
        });
        return {
          registered: info.id,
          reply: body('registerAck', {
            accepted: true,
            errorCode: '',
            errorMessage: '',
            scopeVersion: this.registry.scopeVersion,
            heartbeatIntervalMs: this.o.heartbeatMs,
          }),
        };
      }
      case 'statusRequest':
        this.counters.inc(MGR.status_requests);
        return {
          reply: body('statusResponse', {
            scopeVersion: this.registry.scopeVersion,
            nodes: this.registry.status(now, this.o.selfStats(), this.o.selfCounters()),
          }),
        };
      case 'ping':
        return { reply: body('pong', {}) };
      case 'scopeUpdate':
        // The leader asks this tier to acknowledge a scope version.
        return { reply: this.ackScope(env.body.value.version) };
      case 'disengageRequest': {
        const q = env.body.value;
        const opts = { target: q.target, policy: q.policy || 'least-flows', inheritor: q.inheritor, backup: q.backup, ...(q.timeoutMs ? { timeoutMs: q.timeoutMs } : {}), ...(q.chunkRecords ? { chunkRecords: q.chunkRecords } : {}), ...(q.stopping ? { stopping: true } : {}) };
        return {
          reply: this.ops
            .disengage(opts, (p) => ch.send(body('migrationProgress', p)))
            .then(
              (r) => body('disengageReply', r),
              (e: Error) => body('disengageReply', failedReply(q.target, q.policy, e)),
            ),
        };
      }
      case 'orchestratorHello':
        this.orchestrator = ch;
        this.log.info('orchestrator registered', { name: env.body.value.name });
        ch.onClose(() => {
          if (this.orchestrator === ch) this.orchestrator = null;
        });
        return { reply: body('pong', {}) };
      case 'upgradeRequest': {
        const q = env.body.value;
        const say = (message: string): void => {
          ch.send(body('operationProgress', { operation: 'upgrade', message }));
        };
        return { reply: this.workflows.upgrade({ batch: q.batch, policy: q.policy || 'hash-aligned', timeoutMs: q.timeoutMs || (this.o.operationTimeoutMs ?? 30_000), bundle: q.bundle ?? '', command: q.command ?? [] }, say).then((r) => body('upgradeReply', r)) };
      }
      case 'powerdownRequest': {
        const q = env.body.value;
        const say = (message: string): void => {
          ch.send(body('operationProgress', { operation: 'powerdown', message }));
        };
        return {
          reply: this.workflows
            .powerdown({ thresholdPps: q.thresholdPps, minActive: q.minActive, sustainMs: q.sustainMs, policy: q.policy || 'least-flows', stopProcesses: q.stopProcesses, timeoutMs: this.o.operationTimeoutMs ?? 30_000 }, say)
            .then((r) => body('powerdownReply', r)),
        };
      }
      case 'engageRequest':
        return {
          reply: this.ops.engage(env.body.value.target, env.body.value.timeoutMs || undefined).then(
            (r) => body('engageReply', r),
            (e: Error) => body('engageReply', { ok: false, errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL, errorMessage: e.message, scopeVersion: this.registry.scopeVersion, recordsSynced: 0 }),
          ),
        };
      default:
        this.counters.inc(MGR.unexpected_messages);
        return { reply: body('errorReply', { code: ErrorCode.UNKNOWN_MESSAGE, message: `the manager does not serve ${env.body.case}` }) };
    }
  }

  private checkLiveness(): void {
    if (!this.isLeader) return;
    const dead = this.registry.expire(this.o.scheduler.clock.now(), this.o.deadAfterMs);
    if (dead.length === 0) return;
    for (const m of dead) {
      this.counters.inc(MGR.members_failed);
      this.log.warn('member failed: no heartbeat', { node: m.info.name, id: m.info.id });
    }
    void this.publishScope();
  }

  /**
   * Leader: installs the current scope in the forwarding engine, pushes it to
   * every member, and commits it to the store (queued; a failed commit is
   * retried until it lands). Resolves true when the commit landed, false if
   * not (the local change stays: the engine must not send to a dead FD).
   * A follower publishes nothing: it forwards with what the leader commits.
   */
  publishScope(): Promise<boolean> {
    if (!this.isLeader) return Promise.resolve(false);
    this.install();
    return this.commit().then(
      () => true,
      (e: Error) => {
        this.log.warn('cluster state not committed; retrying', { err: e.message });
        this.scheduleCommitRetry();
        return false;
      },
    );
  }

  /** The registry's scope in this tier's forwarding engine (leader and followers alike). */
  private installEngine(): void {
    const reg = this.registry;
    const fds = reg
      .all()
      .filter((m) => m.info.role === Role.FD && m.info.dataAddr)
      .map((m) => ({ name: m.info.name, id: m.info.id, data: parseAddress(m.info.dataAddr) }));
    // Service nodes that take flows: the engine's admission control probes their queues too.
    const services = reg
      .all()
      .filter((m) => m.info.role === Role.SERVICE && m.info.dataAddr && (m.machine.status === MemberStatus.ACTIVE || m.machine.status === MemberStatus.DISENGAGING))
      .map((m) => ({ name: m.info.name, id: m.info.id, data: parseAddress(m.info.dataAddr) }));
    this.o.engine.setScope(reg.currentScope, fds, services);
    this.counters.inc(MGR.scope_updates);
  }

  /** Leader: the engine, then every member. */
  private install(): void {
    const reg = this.registry;
    this.installEngine();
    this.wakeScopeWaiters();
    const update = reg.scopeUpdate();
    for (const ch of this.channelOf.values()) ch.send(body('scopeUpdate', update));
    this.log.info('scope published', { version: update.version, inScope: reg.scopeMembers() });
  }

  /** Queues a commit of the registry (as it is when the commit runs). */
  private commit(): Promise<void> {
    this.commitDirty = true;
    const run = this.commitChain.then(async () => {
      if (!this.commitDirty) return; // an earlier queued commit already wrote this state
      this.commitDirty = false;
      try {
        await this.coordinator.commit(this.registry.toRecord());
      } catch (e) {
        this.commitDirty = true;
        throw e;
      }
    });
    this.commitChain = run.catch(() => {});
    return run;
  }

  private scheduleCommitRetry(): void {
    if (this.commitRetry) return;
    this.commitRetry = this.o.scheduler.after(500, () => {
      this.commitRetry = null;
      if (!this.isLeader || !this.commitDirty) return;
      this.counters.inc(MGR.commit_retries);
      this.commit().catch(() => this.scheduleCommitRetry());
    });
  }

  /**
   * A status change that must be committed to count: applied locally at once
   * (concurrent requests see it), committed, then published. If the commit
   * fails the change is undone and the promise rejects.
   */
  async changeStatus(id: number, to: number, reason: string, disengage: DisengageRecord | null = null): Promise<void> {
    if (!this.isLeader) throw new BatonError(ErrorCode.STORE_CONFLICT, `${this.o.self.name} does not lead the cluster`);
    const m = this.registry.get(id);
    if (!m) throw new BatonError(ErrorCode.UNKNOWN_NODE, `unknown node ${id}`);
    const from = m.machine.status;
    const fromOut = m.machine.outOfScope;
    const fromRecord = m.disengage;
    const now = this.o.scheduler.clock.now();
    this.registry.setStatus(id, to, reason, now, disengage);
    try {
      await this.commit();
    } catch (e) {
      this.registry.revertStatus(id, from, `not committed: ${(e as Error).message}`, now, fromOut, fromRecord);
      throw e;
    }
    this.install();
  }

  /**
   * A DISENGAGING FD handed its flows over: out of the scope — applied at
   * once, committed, then published; undone (back in scope) if the commit
   * fails.
   */
  async releaseFromScope(id: number, reason: string): Promise<void> {
    if (!this.isLeader) throw new BatonError(ErrorCode.STORE_CONFLICT, `${this.o.self.name} does not lead the cluster`);
    const m = this.registry.get(id);
    if (!m) throw new BatonError(ErrorCode.UNKNOWN_NODE, `unknown node ${id}`);
    const record = m.disengage;
    const now = this.o.scheduler.clock.now();
    this.registry.release(id, reason, now);
    try {
      await this.commit();
    } catch (e) {
      this.registry.revertStatus(id, MemberStatus.DISENGAGING, `not committed: ${(e as Error).message}`, now, false, record);
      throw e;
    }
    this.install();
  }

  /**
   * Follower: runs an operation on the leading manager and relays its
   * progress and reply, so a disengage started through either hash tier is
   * the same single operation (the leader's status machine refuses a second).
   */
  private async forwardToLeader(req: Body, client: ControlChannel): Promise<Body> {
    const fail = (code: ErrorCode, message: string): Body => body('errorReply', { code, message });
    let leader: { name: string; controlAddr: string } | null;
    try {
      leader = await this.coordinator.leader();
    } catch (e) {
      return fail(ErrorCode.STORE_UNAVAILABLE, `cannot find the leading manager: ${(e as Error).message}`);
    }
    if (!leader || leader.name === this.o.self.name) return fail(ErrorCode.NO_LEADER, `no manager leads the cluster right now (election under way); try again`);
    this.counters.inc(MGR.requests_forwarded);
    this.log.info('forwarding to the leader', { op: req.case, leader: leader.name });
    let ch: ControlChannel;
    try {
      ch = new ControlChannel(await this.o.net.connect(parseAddress(leader.controlAddr)), this.o.scheduler);
    } catch (e) {
      return fail(ErrorCode.CONNECTION_CLOSED, `cannot reach the leading manager ${leader.name} at ${leader.controlAddr}: ${(e as Error).message}`);
    }
    ch.onMessage((m) => {
      if (m.body.case === 'migrationProgress' || m.body.case === 'operationProgress') client.send(m.body);
    });
    client.onClose(() => ch.close());
    try {
      // The leader bounds the operation itself; a leader that dies closes the connection.
      return (await ch.request(req, 3_600_000)).body;
    } catch (e) {
      // The leader died midway through a disengage: this manager takes over
      // and resumes it; answer with the resumed disengage's result.
      if (req.case === 'disengageRequest') {
        const resumed = await this.awaitResumed(req.value.target);
        if (resumed) return body('disengageReply', resumed);
      }
      return fail(isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR, `the leading manager ${leader.name} did not answer: ${(e as Error).message}`);
    } finally {
      ch.close();
    }
  }

  /** The channel of a registered member (for requests the manager initiates). */
  channelTo(id: number): ControlChannel | undefined {
    return this.channelOf.get(id);
  }

  async stop(): Promise<void> {
    for (const ch of this.tierChannels.values()) ch.close();
    this.liveness?.cancel();
    this.powerdownTimer?.cancel();
    this.commitRetry?.cancel();
    await this.coordinator?.stop();
    for (const ch of this.channels) ch.close();
    await this.listener?.close();
  }
}

/** Operations only the leading manager runs; a follower forwards them. */
const FORWARDED = new Set<string>(['disengageRequest', 'engageRequest', 'upgradeRequest', 'powerdownRequest']);

export function failedReply(target: string, policy: string, e: Error): DisengageReply {
  return failedDisengageReply({ target, policy }, e);
}
