/**
 * What a node process does on SIGTERM, SIGINT, or its launcher going away
 * (cli/node-main.ts), as a plain state machine so it can be tested without
 * processes (test/node-shutdown.test.ts).
 *
 *   - the first request stops the node gracefully: an FD disengages itself
 *     first, a service node is drained first (both bounded), then the node
 *     closes, writes its FINAL counters and exits 0;
 *   - when `escalates` (FDs): a second SIGTERM, or a SIGINT at any time, stops
 *     it at once — the graceful wait is cut short, the node closes, still
 *     writes FINAL and exits 0. Without it (the other roles) later signals are
 *     ignored and SIGINT is as graceful as SIGTERM, as before;
 *   - the launcher going away (its pipe to our stdin closed) is a graceful
 *     request that never escalates and does not count as a first SIGTERM: the
 *     launcher's own stop sends SIGTERM and closes the pipe at the same time,
 *     and the pipe's end can arrive first;
 *   - whatever happens, the process exits (code 1) `graceMs` after the first
 *     request at the latest, or `nowMs` after a stop at once.
 */
export type StopRequest = 'SIGTERM' | 'SIGINT' | 'parent-exit';

export interface ShutdownDeps {
  /** Stops the node: graceful first; `false` later cuts that short. Idempotent, the same promise each time. */
  stop: (graceful: boolean) => Promise<void>;
  /** After the node closed: write the FINAL line. */
  finish: () => Promise<void>;
  exit: (code: number) => void;
  /** A timer that does not keep the process alive. */
  after: (ms: number, fn: () => void) => void;
  /** Exit at the latest this long after the first request (covers the graceful bound). */
  graceMs: number;
  /** Exit at the latest this long after a stop at once. */
  nowMs: number;
  /** A second SIGTERM, or SIGINT, stops at once (FDs). */
  escalates: boolean;
  log: (msg: string, fields: Record<string, unknown>) => void;
}

/** Returns the handler for stop requests (signals, the launcher going away). */
export function shutdownHandler(d: ShutdownDeps): (req: StopRequest) => void {
  let phase: 'running' | 'graceful' | 'now' = 'running';
  let sigterms = 0;
  return (req) => {
    const atOnce = d.escalates && (req === 'SIGINT' || (req === 'SIGTERM' && sigterms > 0));
    if (req === 'SIGTERM') sigterms++;
    if (phase === 'now' || (phase === 'graceful' && !atOnce)) return;
    const first = phase === 'running';
    phase = atOnce ? 'now' : 'graceful';
    d.log(atOnce ? 'stopping at once' : 'stopping', { signal: req });
    d.after(atOnce ? d.nowMs : d.graceMs, () => d.exit(1));
    const stopped = d.stop(!atOnce);
    if (!first) return; // the first request's chain below finishes and exits
    stopped
      .catch(() => {})
      .then(() => d.finish())
      .then(
        () => d.exit(0),
        () => d.exit(0),
      );
  };
}
