/**
 * Publication of the cluster state: the registry's scope in this tier's
 * forwarding engine, on every member, and in the store.
 *
 * Job: `installEngine()` puts the registry's scope in this tier's engine
 * (leader and followers alike); on the leader, `publishScope()` also pushes it
 * to every member and commits it (queued; a failed commit is retried until it
 * lands), and `changeStatus()` / `releaseFromScope()` make a member's status
 * change count only once it is committed: applied locally at once
 * (concurrent requests see it), committed, then published; undone if the
 * commit fails.
 *
 * Lifecycle: created with the manager; stateless apart from what it is
 * given (the registry, the commit queue, the member channels).
 */
import type { ControlChannel } from '../shared/control/channel.js';
import { body, MemberStatus, Role } from '../shared/control/messages.js';
import { parseAddress } from '../shared/io/address.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import type { Logger } from '../shared/observability/logger.js';
import type { Counters } from '../shared/counters.js';
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { DisengageRecord } from '../shared/store/store.js';
import type { ForwardingEngine } from '../hash-tier/forwarding-engine.js';
import { MGR } from './counters.js';
import type { Registry, MemberRecord } from './registry.js';
import type { CommitQueue } from './commit-queue.js';

export interface ScopePublisherDeps {
  selfName: string;
  scheduler: Scheduler;
  registry: Registry;
  engine: ForwardingEngine;
  counters: Counters;
  commits: CommitQueue;
  isLeader: () => boolean;
  /** The control channels of the registered members. */
  memberChannels: () => Iterable<ControlChannel>;
  /** This tier's engine installed a scope (answers the leader's acknowledgement requests). */
  onInstalled: () => void;
  log: Logger;
}

export class ScopePublisher {
  constructor(private readonly d: ScopePublisherDeps) {}

  /**
   * Leader: installs the current scope in the forwarding engine, pushes it to
   * every member, and commits it to the store (queued; a failed commit is
   * retried until it lands). Resolves true when the commit landed, false if
   * not (the local change stays: the engine must not send to a dead FD).
   * A follower publishes nothing: it forwards with what the leader commits.
   */
  publishScope(): Promise<boolean> {
    if (!this.d.isLeader()) return Promise.resolve(false);
    this.install();
    return this.d.commits.commit().then(
      () => true,
      (e: Error) => {
        this.d.log.warn('cluster state not committed; retrying', { err: e.message });
        this.d.commits.scheduleRetry();
        return false;
      },
    );
  }

  /** The registry's scope in this tier's forwarding engine (leader and followers alike). */
  installEngine(): void {
    const reg = this.d.registry;
    const fds = reg
      .all()
      .filter((m) => m.info.role === Role.FD && m.info.dataAddr)
      .map((m) => ({ name: m.info.name, id: m.info.id, data: parseAddress(m.info.dataAddr) }));
    // Service nodes that take flows: the engine's admission control probes their queues too.
    const services = reg
      .all()
      .filter((m) => m.info.role === Role.SERVICE && m.info.dataAddr && (m.machine.status === MemberStatus.ACTIVE || m.machine.status === MemberStatus.DISENGAGING))
      .map((m) => ({ name: m.info.name, id: m.info.id, data: parseAddress(m.info.dataAddr) }));
    this.d.engine.setScope(reg.currentScope, fds, services);
    this.d.counters.inc(MGR.scope_updates);
  }

  /** Leader: the engine, then every member. */
  private install(): void {
    const reg = this.d.registry;
    this.installEngine();
    this.d.onInstalled();
    const update = reg.scopeUpdate();
    for (const ch of this.d.memberChannels()) ch.send(body('scopeUpdate', update));
    this.d.log.info('scope published', { version: update.version, inScope: reg.scopeMembers() });
  }

  /**
   * A status change that must be committed to count: applied locally at once
   * (concurrent requests see it), committed, then published. If the commit
   * fails the change is undone and the promise rejects.
   */
  async changeStatus(id: number, to: number, reason: string, disengage: DisengageRecord | null = null): Promise<void> {
    const m = this.leading(id);
    const from = m.machine.status;
    const fromOut = m.machine.outOfScope;
    const fromRecord = m.disengage;
    const now = this.d.scheduler.clock.now();
    this.d.registry.setStatus(id, to, reason, now, disengage);
    try {
      await this.d.commits.commit();
    } catch (e) {
      this.d.registry.revertStatus(id, from, `not committed: ${(e as Error).message}`, now, fromOut, fromRecord);
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
    const m = this.leading(id);
    const record = m.disengage;
    const now = this.d.scheduler.clock.now();
    this.d.registry.release(id, reason, now);
    try {
      await this.d.commits.commit();
    } catch (e) {
      this.d.registry.revertStatus(id, MemberStatus.DISENGAGING, `not committed: ${(e as Error).message}`, now, false, record);
      throw e;
    }
    this.install();
  }

  /** The member `id`, once this tier is known to lead; the refusals of a status change otherwise. */
  private leading(id: number): MemberRecord {
    if (!this.d.isLeader()) throw new BatonError(ErrorCode.STORE_CONFLICT, `${this.d.selfName} does not lead the cluster`);
    const m = this.d.registry.get(id);
    if (!m) throw new BatonError(ErrorCode.UNKNOWN_NODE, `unknown node ${id}`);
    return m;
  }
}
