/**
 * Take-over: what a manager does when it is elected leader, and what a
 * follower does with each state the leader commits.
 *
 * Job: `takeOver()` adopts the committed record (and bumps the version, so
 * members running the old leader's last one take the new tier list),
 * publishes it, and finishes what it shows in progress: a service drain or an
 * FD disengage the old leader drove is resumed (kept by target in `resumed`,
 * so a request forwarded to the dead leader can answer with its result), a
 * JOINING FD is engaged. `follow()` adopts a committed record on a follower
 * and installs it in the engine.
 *
 * Lifecycle: created with the manager; called by the store coordinator
 * (onElected, onRecord). The resumed disengages stay in the map for the
 * life of the manager (one per target, replaced by a later take-over).
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { failedDisengageReply, MemberStatus, Role, type DisengageReply } from '../shared/control/messages.js';
import type { ScopeRecord } from '../shared/store/store.js';
import type { Logger } from '../shared/observability/logger.js';
import type { Registry } from './registry.js';
import type { Operations } from './operations.js';

export interface TakeOverDeps {
  scheduler: Scheduler;
  registry: Registry;
  ops: Operations;
  storeTtlMs: number;
  publishScope: () => Promise<boolean>;
  /** A follower's engine runs what the leader committed. */
  installEngine: () => void;
  /** This tier's engine installed a scope. */
  onInstalled: () => void;
  log: Logger;
}

export class TakeOver {
  /** Disengages resumed after a take-over, by target (a forwarded request whose leader died waits for them). */
  private readonly resumed = new Map<string, Promise<DisengageReply>>();

  constructor(private readonly d: TakeOverDeps) {}

  /**
   * The reply of the disengage of `target` resumed by a take-over of this
   * manager, once there is one (polled for a few lease TTLs); null if none.
   */
  async awaitResumed(target: string): Promise<DisengageReply | null> {
    const d = this.d;
    const bound = d.storeTtlMs * 4 + 2000;
    const t0 = d.scheduler.clock.now();
    while (d.scheduler.clock.now() - t0 < bound) {
      const p = this.resumed.get(target);
      if (p) return p.catch((e: Error) => failedDisengageReply({ target, policy: '' }, e));
      await new Promise<void>((r) => d.scheduler.after(50, r));
    }
    return null;
  }

  /** Elected: take the committed state, publish it, finish what it shows in progress. */
  async takeOver(rec: ScopeRecord | null): Promise<void> {
    const d = this.d;
    if (rec) {
      d.registry.adopt(rec, d.scheduler.clock.now());
      // Members run the old leader's last version, whose tier list this
      // manager's may not match (the old leader may be gone): a new version,
      // or they would ignore what is published now.
      d.registry.bump();
    }
    await d.publishScope();
    for (const m of d.registry.all()) {
      if (m.info.role === Role.SERVICE && m.machine.status === MemberStatus.DISENGAGING && m.connected) {
        // A service drain the old leader drove: drain it again (the node's stop, or a
        // forwarded request, waits for it).
        const p = d.ops.resumeServiceDrain(m.info.name);
        this.resumed.set(m.info.name, p);
        p.then(
          (r) => d.log.info('resumed service drain completed', { target: r.target, ok: r.ok }),
          (e: Error) => d.log.warn('resumed service drain failed', { target: m.info.name, err: e.message }),
        );
        continue;
      }
      if (m.info.role !== Role.FD) continue;
      if (m.machine.status === MemberStatus.DISENGAGING) {
        const p = d.ops.resumeDisengage(m.info.name);
        this.resumed.set(m.info.name, p);
        p.then(
          (r) => d.log.info('resumed disengage completed', { target: r.target, entries: r.entriesMoved }),
          (e: Error) => d.log.warn('resumed disengage failed', { target: m.info.name, err: e.message }),
        );
      } else if (m.machine.status === MemberStatus.JOINING && m.connected) {
        d.ops.engage(m.info.name).catch((e: Error) => d.log.warn('resumed engage failed', { target: m.info.name, err: e.message }));
      }
    }
  }

  /** Follower: the leader committed a new cluster state; forward with it. */
  follow(rec: ScopeRecord): void {
    this.d.registry.adopt(rec, this.d.scheduler.clock.now()); // statuses, version and scope as committed
    this.d.installEngine();
    this.d.onInstalled();
  }
}
