/**
 * The commit queue: the leader's one writer of the cluster-state record.
 *
 * Job: commits run one at a time, each writing the registry as it is when the
 * commit runs (so a burst of changes is one write); a failed commit leaves the
 * state dirty, and `scheduleRetry()` tries again every 500 ms while this tier
 * leads and something is still unwritten (counted `commit_retries`).
 *
 * Lifecycle: created with the manager; `commit()` is called by the publisher
 * (every status change and scope publication); `stop()` cancels a pending
 * retry when the manager stops.
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { Counters } from '../shared/counters.js';
import { MGR } from './counters.js';

export interface CommitQueueDeps {
  scheduler: Scheduler;
  counters: Counters;
  /** Writes the registry as it is now (the store coordinator's commit of registry.toRecord()). */
  write: () => Promise<void>;
  /** Only the leader commits; a retry that finds this tier no longer leading stops. */
  isLeader: () => boolean;
}

const RETRY_MS = 500;

export class CommitQueue {
  /** Commits run one at a time, each writing the registry as it is then. */
  private chain: Promise<void> = Promise.resolve();
  private dirty = false;
  private retry: Timer | null = null;

  constructor(private readonly d: CommitQueueDeps) {}

  /** Queues a commit of the registry (as it is when the commit runs). */
  commit(): Promise<void> {
    this.dirty = true;
    const run = this.chain.then(async () => {
      if (!this.dirty) return; // an earlier queued commit already wrote this state
      this.dirty = false;
      try {
        await this.d.write();
      } catch (e) {
        this.dirty = true;
        throw e;
      }
    });
    this.chain = run.catch(() => {});
    return run;
  }

  /** After a failed commit: try again until one lands (or this tier stops leading). */
  scheduleRetry(): void {
    if (this.retry) return;
    this.retry = this.d.scheduler.after(RETRY_MS, () => {
      this.retry = null;
      if (!this.d.isLeader() || !this.dirty) return;
      this.d.counters.inc(MGR.commit_retries);
      this.commit().catch(() => this.scheduleRetry());
    });
  }

  stop(): void {
    this.retry?.cancel();
  }
}
