/**
 * The manager's periodic work: liveness and the scheduled power-down.
 *
 * Job: every heartbeatMs / 2 (at least 10 ms) the leader expires members whose
 * heartbeats stopped for deadAfterMs (counted `members_failed`) and publishes
 * the scope without them; when `powerdown.enabled`, every `everyMs` it runs
 * the power-down workflow (a run that finds another workflow holding the lock
 * is logged and tried again at the next tick).
 *
 * Lifecycle: `start()` once the manager listens; `stop()` with the manager.
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { Logger } from '../shared/observability/logger.js';
import type { Counters } from '../shared/counters.js';
import { MGR } from './counters.js';
import type { Registry } from './registry.js';
import type { Workflows } from './workflows.js';

/** Scheduled power-down of idle FDs (config powerdown). */
export interface PowerdownSchedule {
  enabled: boolean;
  everyMs: number;
  thresholdPps: number;
  sustainMs: number;
  minActive: number;
  policy: string;
  stopProcesses: boolean;
}

export interface ManagerTimersDeps {
  scheduler: Scheduler;
  registry: Registry;
  workflows: Workflows;
  counters: Counters;
  heartbeatMs: number;
  deadAfterMs: number;
  powerdown: PowerdownSchedule | undefined;
  operationTimeoutMs: number;
  isLeader: () => boolean;
  publishScope: () => Promise<boolean>;
  log: Logger;
}

export class ManagerTimers {
  private liveness: Timer | null = null;
  private powerdownTimer: Timer | null = null;

  constructor(private readonly d: ManagerTimersDeps) {}

  start(): void {
    const d = this.d;
    this.liveness = d.scheduler.every(Math.max(10, Math.floor(d.heartbeatMs / 2)), () => this.checkLiveness());
    const pd = d.powerdown;
    if (pd?.enabled) {
      this.powerdownTimer = d.scheduler.every(pd.everyMs, () => {
        d.workflows
          .powerdown({ ...pd, timeoutMs: d.operationTimeoutMs }, (msg) => d.log.info('scheduled power-down', { msg }))
          .then(
            (r) => {
              if (!r.ok) d.log.warn('scheduled power-down failed', { err: r.errorMessage });
            },
            // Refused before it began (an upgrade or another power-down holds the lock): try again next tick.
            (e: unknown) => d.log.info('scheduled power-down not started', { err: String(e) }),
          );
      });
    }
  }

  private checkLiveness(): void {
    const d = this.d;
    if (!d.isLeader()) return;
    const dead = d.registry.expire(d.scheduler.clock.now(), d.deadAfterMs);
    if (dead.length === 0) return;
    for (const m of dead) {
      d.counters.inc(MGR.members_failed);
      d.log.warn('member failed: no heartbeat', { node: m.info.name, id: m.info.id });
    }
    void d.publishScope();
  }

  stop(): void {
    this.liveness?.cancel();
    this.powerdownTimer?.cancel();
  }
}
