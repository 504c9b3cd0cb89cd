/**
 * The migration manager, hosted by the hash tier (seed 003: "a migration
 * manager may be provisioned in each aggregation router/switch"): membership
 * (registrations, heartbeats, liveness), the versioned hash scope (installed
 * in the forwarding engine and pushed to every member), status queries, and
 * the operations built on them (disengage/engage, upgrade, power-down).
 *
 * This class is the assembly: it builds the parts, each with one job, and
 * wires them together:
 *
 *   dispatch.ts         control connections: routes each message and request
 *   commit-queue.ts     the leader's one writer of the cluster-state record, with retries
 *   scope-publisher.ts  the scope in the engine, on every member, committed; committed status changes
 *   scope-confirm.ts    leader: waits until every tier and member runs a scope version
 *   scope-ack.ts        follower: answers the leader once its engine runs a version
 *   take-over.ts        elected: adopt, publish, resume; follower: adopt what the leader commits
 *   leader-proxy.ts     follower: runs the leader-only operations on the leader
 *   timers.ts           liveness and the scheduled power-down
 *   operations.ts       disengage, engage, service drain (workflows.ts: upgrade, power-down)
 *   store-coordinator.ts leader election and the cluster-state record
 *
 * Lifecycle: constructed with its options; start() listens, starts the
 * timers and the store coordinator (returns once it leads when it is the
 * sole tier); stop() stops them in the reverse order.
 */
import type { MessageNet, MessageListener } from '../shared/io/stream.js';
import type { Address } from '../shared/io/address.js';
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { ControlChannel, CHANNEL_COUNTERS } from '../shared/control/channel.js';
import { nodeInfo, Role, failedDisengageReply, type NodeInfo, type FlowStats, type DisengageReply } from '../shared/control/messages.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { Counters } from '../shared/counters.js';
import type { ClusterStore, DisengageRecord } from '../shared/store/store.js';
import type { ForwardingEngine } from '../hash-tier/forwarding-engine.js';
import { MGR } from './counters.js';
import { Registry } from './registry.js';
import { Operations, type ScopeConfirmation } from './operations.js';
import { Workflows } from './workflows.js';
import { StoreCoordinator, type HashTierInfo } from './store-coordinator.js';
import { CommitQueue } from './commit-queue.js';
import { ScopePublisher } from './scope-publisher.js';
import { ScopeConfirm } from './scope-confirm.js';
import { ScopeAck } from './scope-ack.js';
import { TakeOver } from './take-over.js';
import { LeaderProxy } from './leader-proxy.js';
import { ManagerTimers, type PowerdownSchedule } from './timers.js';
import { Dispatch } from './dispatch.js';

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
  powerdown?: PowerdownSchedule;
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
  readonly ops: Operations;
  readonly workflows: Workflows;
  /** Leader election and the cluster-state record (created in start(), once the control address is known). */
  coordinator!: StoreCoordinator;
  private listener: MessageListener | null = null;
  private readonly log: Logger;
  private readonly commits: CommitQueue;
  private readonly publisher: ScopePublisher;
  private readonly confirmer: ScopeConfirm;
  private readonly scopeAck: ScopeAck;
  private readonly takeOver: TakeOver;
  private readonly proxy: LeaderProxy;
  private readonly timers: ManagerTimers;
  private readonly dispatch: Dispatch;

  constructor(private readonly o: ManagerOptions) {
    const log = (this.log = o.logger ?? getLogger('manager'));
    const counters = this.counters;
    const scheduler = o.scheduler;
    const operationTimeoutMs = o.operationTimeoutMs ?? 30_000;
    const isLeader = (): boolean => this.isLeader;
    const publishScope = (): Promise<boolean> => this.publishScope();
    this.registry = new Registry(o.self, o.tableSize, o.hashSeed, {
      rebalanceAbovePct: o.rebalanceAbovePct,
      onRebalance: (deviation, version) => {
        counters.inc(MGR.scope_rebalances);
        log.info('hash scope rebalanced: anchor reset to the in-scope FDs', { version, anchoredDeviationPct: Math.round(deviation * 1e4) / 100 });
      },
    });
    const registry = this.registry;
    this.commits = new CommitQueue({ scheduler, counters, isLeader, write: () => this.coordinator.commit(registry.toRecord()) });
    this.scopeAck = new ScopeAck({ selfName: o.self.name, scheduler, counters, scopeVersion: () => registry.scopeVersion, scopeAckTimeoutMs: o.scopeAckTimeoutMs });
    this.publisher = new ScopePublisher({
      selfName: o.self.name,
      scheduler,
      registry,
      engine: o.engine,
      counters,
      commits: this.commits,
      isLeader,
      memberChannels: () => this.dispatch.memberChannels(),
      onInstalled: () => this.scopeAck.wake(),
      log,
    });
    this.confirmer = new ScopeConfirm({ selfName: o.self.name, net: o.net, scheduler, registry, counters, channelTo: (id) => this.dispatch.channelTo(id), log });
    this.ops = new Operations({
      registry,
      scheduler,
      counters,
      channelTo: (id) => this.dispatch.channelTo(id),
      publishScope,
      changeStatus: (id, to, reason, disengage) => this.changeStatus(id, to, reason, disengage),
      releaseFromScope: (id, reason) => this.releaseFromScope(id, reason),
      confirmScope: (version, timeoutMs) => this.confirmScope(version, timeoutMs),
      defaultTimeoutMs: operationTimeoutMs,
      scopeAckTimeoutMs: o.scopeAckTimeoutMs,
      quietMs: o.quietMs,
      serviceDrainTimeoutMs: o.serviceDrainTimeoutMs,
      serviceQuietMs: o.serviceQuietMs,
      logger: log,
    });
    this.workflows = new Workflows({
      registry,
      ops: this.ops,
      scheduler,
      orchestrator: () => this.dispatch.orchestrator(),
      heartbeatMs: o.heartbeatMs,
      logger: log,
    });
    this.takeOver = new TakeOver({
      scheduler,
      registry,
      ops: this.ops,
      storeTtlMs: o.storeTtlMs,
      publishScope,
      installEngine: () => this.publisher.installEngine(),
      onInstalled: () => this.scopeAck.wake(),
      log,
    });
    this.proxy = new LeaderProxy({ selfName: o.self.name, net: o.net, scheduler, counters, leader: () => this.coordinator.leader(), awaitResumed: (target) => this.takeOver.awaitResumed(target), log });
    this.timers = new ManagerTimers({ scheduler, registry, workflows: this.workflows, counters, heartbeatMs: o.heartbeatMs, deadAfterMs: o.deadAfterMs, powerdown: o.powerdown, operationTimeoutMs, isLeader, publishScope, log });
    this.dispatch = new Dispatch({
      scheduler,
      registry,
      ops: this.ops,
      workflows: this.workflows,
      counters,
      heartbeatMs: o.heartbeatMs,
      operationTimeoutMs,
      powerdown: o.powerdown,
      selfStats: o.selfStats,
      selfCounters: o.selfCounters,
      isLeader,
      publishScope,
      ackScope: (version) => this.scopeAck.ask(version),
      forwardToLeader: (req, client) => this.proxy.forward(req, client),
      log,
    });
  }

  get address(): Address | null {
    return this.listener?.address ?? null;
  }

  async start(): Promise<Address> {
    this.listener = await this.o.net.listen(this.o.listen, (conn) => this.dispatch.accept(new ControlChannel(conn, this.o.scheduler, { counters: this.channelCounters })));
    this.timers.start();
    this.log.info('manager listening', { control: this.listener.address });
    const self = this.o.self;
    this.coordinator = new StoreCoordinator({
      store: this.o.store,
      self: { id: self.id, name: self.name, dataAddr: self.dataAddr, controlAddr: `${this.listener.address.host}:${this.listener.address.port}` },
      ttlMs: this.o.storeTtlMs,
      scheduler: this.o.scheduler,
      onElected: (rec) => this.takeOver.takeOver(rec),
      onRecord: (rec) => this.takeOver.follow(rec),
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

  /** Leader: the scope in the engine, on every member, committed (scope-publisher.ts). */
  publishScope(): Promise<boolean> {
    return this.publisher.publishScope();
  }

  /** Leader: a status change that counts once committed (scope-publisher.ts). */
  changeStatus(id: number, to: number, reason: string, disengage: DisengageRecord | null = null): Promise<void> {
    return this.publisher.changeStatus(id, to, reason, disengage);
  }

  /** Leader: a DISENGAGING FD that handed its flows over leaves the scope (scope-publisher.ts). */
  releaseFromScope(id: number, reason: string): Promise<void> {
    return this.publisher.releaseFromScope(id, reason);
  }

  /** Leader: waits until every tier and member runs `version` or newer (scope-confirm.ts). */
  confirmScope(version: number, timeoutMs: number): Promise<ScopeConfirmation> {
    return this.confirmer.confirm(version, timeoutMs);
  }

  /** The channel of a registered member (for requests the manager initiates). */
  channelTo(id: number): ControlChannel | undefined {
    return this.dispatch.channelTo(id);
  }

  async stop(): Promise<void> {
    this.confirmer.stop();
    this.timers.stop();
    this.commits.stop();
    await this.coordinator?.stop();
    this.dispatch.stop();
    await this.listener?.close();
  }
}

export function failedReply(target: string, policy: string, e: Error): DisengageReply {
  return failedDisengageReply({ target, policy }, e);
}
