/**
 * Which operations of the migration manager may run at the same time
 * (docs/disengage.md, "Operations at the same time"): disengages of
 * different FDs run together; an engage runs alone. A joiner learns the
 * flows its peers own when it syncs; a disengage running meanwhile moves
 * flows between peers and broadcasts only to the ACTIVE peers it started
 * with, so the joiner could miss them. Waiters are served first come,
 * first served (a disengage that arrives after a waiting engage waits for
 * it), and each waits at most its own timeout.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

export type OperationKind = 'disengage' | 'engage';

interface Waiter {
  kind: OperationKind;
  go: () => void;
}

export class OperationGate {
  private kind: OperationKind | null = null;
  private running = 0;
  private readonly queue: Waiter[] = [];
  /** Operations that had to wait, and waits that ran out. */
  queued = 0;
  timedOut = 0;

  constructor(
    private readonly scheduler: Scheduler,
    /** Called when an operation has to wait, and when a wait runs out (counters). */
    private readonly hooks: { queued?: () => void; timedOut?: () => void } = {},
  ) {}

  /** Operations running now (of `kind`). */
  get active(): number {
    return this.running;
  }
  get runningKind(): OperationKind | null {
    return this.kind;
  }
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Resolves with the release function once `kind` may run; rejects
   * BATON_TIMEOUT (nothing changed) if that takes longer than `timeoutMs`.
   */
  enter(kind: OperationKind, timeoutMs: number, what: string): Promise<() => void> {
    if (this.queue.length === 0 && this.admits(kind)) return Promise.resolve(this.start(kind));
    this.queued++;
    this.hooks.queued?.();
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        kind,
        go: () => {
          timer.cancel();
          resolve(this.start(kind));
        },
      };
      const timer = this.scheduler.after(Math.max(0, timeoutMs), () => {
        const i = this.queue.indexOf(w);
        if (i < 0) return;
        this.queue.splice(i, 1);
        this.timedOut++;
        this.hooks.timedOut?.();
        reject(new BatonError(ErrorCode.TIMEOUT, `${what}: waited ${timeoutMs} ms for ${this.running} running ${this.kind ?? ''} operation(s) to end; nothing was changed`));
        this.pump();
      });
      this.queue.push(w);
    });
  }

  private admits(kind: OperationKind): boolean {
    return this.running === 0 || (kind === 'disengage' && this.kind === 'disengage');
  }

  private start(kind: OperationKind): () => void {
    this.kind = kind;
    this.running++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.running--;
      if (this.running === 0) this.kind = null;
      this.pump();
    };
  }

  private pump(): void {
    while (this.queue.length > 0 && this.admits(this.queue[0]!.kind)) this.queue.shift()!.go();
  }
}
