/**
 * A tier's acknowledgement of a scope version, the answering side.
 *
 * Job: the leader asks this tier (a ScopeUpdate sent as a request) whether its
 * forwarding engine runs a version; `ask()` answers Pong once it runs that
 * version or a newer one (a follower installs what the leader commits,
 * through its store watch), or ErrorReply BATON_TIMEOUT after
 * scopeAckTimeoutMs (counted `scope_ack_requests`,
 * `scope_ack_request_timeouts`).
 *
 * Lifecycle: created with the manager; `wake()` is called every time this
 * tier's engine installs a scope (leader and follower alike); waiters that
 * time out remove themselves.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { Counters } from '../shared/counters.js';
import { body, type Body } from '../shared/control/messages.js';
import { ErrorCode } from '../shared/errors.js';
import { MGR } from './counters.js';
import { DEFAULT_SCOPE_ACK_TIMEOUT_MS } from './operations.js';

export interface ScopeAckDeps {
  selfName: string;
  scheduler: Scheduler;
  counters: Counters;
  /** The version this tier's engine runs. */
  scopeVersion: () => number;
  scopeAckTimeoutMs?: number;
}

export class ScopeAck {
  /** Acknowledgements this tier owes the leader: resolved once its engine runs `version` or newer. */
  private waiters: { version: number; done: (ok: boolean) => void }[] = [];

  constructor(private readonly d: ScopeAckDeps) {}

  /** This tier's engine now runs scopeVersion(): answer whoever waited for it or an older one. */
  wake(): void {
    const v = this.d.scopeVersion();
    if (this.waiters.length === 0) return;
    this.waiters = this.waiters.filter((w) => {
      if (w.version > v) return true;
      w.done(true);
      return false;
    });
  }

  /**
   * The leader asks (a ScopeUpdate sent as a request): answered with Pong once
   * this tier's forwarding engine runs that version or a newer one, or
   * with ErrorReply BATON_TIMEOUT after scopeAckTimeoutMs.
   */
  ask(version: number): Promise<Body> {
    const d = this.d;
    d.counters.inc(MGR.scope_ack_requests);
    if (d.scopeVersion() >= version) return Promise.resolve(body('pong', {}));
    const bound = d.scopeAckTimeoutMs ?? DEFAULT_SCOPE_ACK_TIMEOUT_MS;
    return new Promise((resolve) => {
      const timer = d.scheduler.after(bound, () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        d.counters.inc(MGR.scope_ack_request_timeouts);
        resolve(body('errorReply', { code: ErrorCode.TIMEOUT, message: `${d.selfName} runs scope v${d.scopeVersion()}, not v${version}, after ${bound} ms` }));
      });
      const waiter = {
        version,
        done: () => {
          timer.cancel();
          resolve(body('pong', {}));
        },
      };
      this.waiters.push(waiter);
    });
  }
}
