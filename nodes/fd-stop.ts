/**
 * An FD that is stopping disengages itself first (docs/disengage.md,
 * "Stopping an FD from a supervisor"), so a supervisor that stops it with
 * SIGTERM — systemd, a container orchestrator, the launcher's stopNode —
 * loses no packet: its flows go to inheritors, the scope shrinks without it,
 * it drains and goes quiet, and only once the manager answers DISENGAGED
 * does the node close its sockets.
 *
 * disengageBeforeStop() is the FD's twin of the service node's
 * drainBeforeStop (nodes/service-member.ts): it sends the manager the
 * DisengageRequest `baton disengage <fd>` sends, for itself (`stopping`),
 * over its member agent (any registered link; a follower forwards it to the
 * leader), and asks again while a manager is away or changing leaders. It
 * gives up:
 *   - at fdStopBoundMs (the disengage's own bound and its tail);
 *   - after control.deadAfterMs with no manager link at all (the managers are
 *     gone: nobody could disengage it);
 *   - at once on a refusal that asking again cannot change (the last ACTIVE
 *     FD, unknown node, a bad argument);
 *   - at once when `cut` aborts (a second SIGTERM, or SIGINT: the operator
 *     wants it gone now).
 * The manager answers a stopping FD that is already DISENGAGED (a rolling
 * upgrade's or power-down's stop) ok at once; one another operation is
 * disengaging right now is refused as "already disengaging", which is asked
 * again until that operation ends. Counted `stop_disengages`,
 * `stop_disengages_confirmed`, `stop_disengages_unconfirmed` (of which
 * `stop_disengages_cut_short` by `cut`).
 */
import type { BatonConfig } from '../shared/config/config.js';
import type { MemberAgent } from '../shared/cluster/member-agent.js';
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { body, type Body } from '../shared/control/messages.js';
import { ErrorCode, errorCodeFromWire, isBatonError } from '../shared/errors.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';

export const FDSTOP = defineCounters(['stop_disengages', 'stop_disengages_confirmed', 'stop_disengages_unconfirmed', 'stop_disengages_cut_short'] as const);

/**
 * What the manager may still need once the disengage's own timeout
 * (operations.timeoutMs) ran out right after the hand-over: the scope
 * acknowledgement (operations.scopeAckTimeoutMs), the finish (purge, drain,
 * quiet: at least 4 × quietMs + 2 s, and 1 s for its answer), and 2 s for
 * the commits and round trips.
 */
function tailMs(cfg: BatonConfig): number {
  const o = cfg.operations;
  return o.scopeAckTimeoutMs + 4 * o.quietMs + 5000;
}

/**
 * How long a stopping FD waits for the manager to disengage it:
 * operations.timeoutMs + operations.scopeAckTimeoutMs + 4 × quietMs + 5 s
 * (40.4 s with the defaults). The process exits by itself 2 s after that at
 * the latest (cli/node-main.ts), the launcher's SIGTERM grace for an FD is
 * this bound + 4 s, and docs/baton-fd.service's TimeoutStopSec covers it.
 */
export function fdStopBoundMs(cfg: BatonConfig): number {
  return cfg.operations.timeoutMs + tailMs(cfg);
}

/** Refusals a stopping FD does not ask again (it stops at once): the manager will not disengage it. */
const FINAL_REFUSALS = new Set<ErrorCode>([ErrorCode.EMPTY_SCOPE, ErrorCode.UNKNOWN_NODE, ErrorCode.BAD_ARGUMENT]);

/** Pause between two asks (a manager away, changing leaders, or busy with this FD). */
const RETRY_MS = 200;

export interface FdStopDeps {
  cfg: BatonConfig;
  /** This FD's name and id (the request's target). */
  name: string;
  id: number;
  agent: Pick<MemberAgent, 'registered' | 'request'>;
  scheduler: Scheduler;
  counters: Counters;
  log?: Logger;
}

/** confirmed: the manager answered DISENGAGED; unconfirmed: bound, no manager, or a final refusal; cut-short: `cut` aborted. */
export type FdStopOutcome = 'confirmed' | 'unconfirmed' | 'cut-short';

/** The request: this FD, stopping, the config's default policy, a timeout that fits in what is left of the bound. */
function stopRequest(d: FdStopDeps, leftMs: number): Body {
  const timeoutMs = Math.round(Math.max(1000, Math.min(d.cfg.operations.timeoutMs, leftMs - tailMs(d.cfg))));
  return body('disengageRequest', {
    target: d.name,
    targetId: d.id,
    // The policy the manager uses for the disengages it starts itself (power-down).
    policy: d.cfg.powerdown.policy,
    inheritor: '',
    backup: '',
    timeoutMs,
    migrationId: 0,
    peers: [],
    nextScope: { version: 0, members: [], tableSize: 0, hashSeed: 0, anchor: [] },
    chunkRecords: 0,
    randomSeed: 0,
    stopping: true,
  });
}

/**
 * Asks the manager to disengage this FD and waits, bounded, until it answers
 * DISENGAGED (see the header). Never rejects.
 */
export async function disengageBeforeStop(d: FdStopDeps, cut?: AbortSignal): Promise<FdStopOutcome> {
  const sched = d.scheduler;
  const clock = sched.clock;
  const log = d.log ?? getLogger('fd-stop');
  const t0 = clock.now();
  const end = t0 + fdStopBoundMs(d.cfg);
  d.counters.inc(FDSTOP.stop_disengages);
  log.info('stopping: asking the manager to disengage this FD first', { node: d.name, boundMs: end - t0 });
  // Resolves when `cut` aborts, or at the bound (whatever the agent's own request timeout): every wait below races it.
  let onCut: () => void = () => {};
  const cutShort = new Promise<'cut'>((r) => (onCut = () => r('cut')));
  if (cut?.aborted) onCut();
  else cut?.addEventListener('abort', onCut, { once: true });
  const bound = sched.after(end - t0, onCut);
  let why = 'no answer';
  let asks = 0;
  // No manager link at all for control.deadAfterMs: the managers are gone (or
  // already count this FD FAILED); do not wait out the whole bound.
  let unlinkedSince = -1;
  try {
    while (!cut?.aborted && clock.now() < end) {
      if (!d.agent.registered) {
        if (unlinkedSince < 0) unlinkedSince = clock.now();
        else if (clock.now() - unlinkedSince >= d.cfg.control.deadAfterMs) {
          why = `registered with no manager for ${d.cfg.control.deadAfterMs} ms`;
          break;
        }
      } else unlinkedSince = -1;
      asks++;
      try {
        const left = end - clock.now();
        const r = await Promise.race([d.agent.request(stopRequest(d, left), Math.max(1, left)), cutShort]);
        if (r === 'cut') break;
        if (r.body.case === 'disengageReply') {
          const v = r.body.value;
          if (v.ok) {
            d.counters.inc(FDSTOP.stop_disengages_confirmed);
            log.info('disengaged: stopping', { node: d.name, ms: Math.round(clock.now() - t0), entries: v.entriesMoved, asks });
            return 'confirmed';
          }
          why = `${v.errorCode}: ${v.errorMessage}`;
          if (FINAL_REFUSALS.has(errorCodeFromWire(v.errorCode))) break;
        } else why = `answered ${r.body.case}`;
      } catch (e) {
        why = isBatonError(e) ? `${e.code}: ${e.message}` : String(e);
      }
      // A manager away or changing leaders, another operation on this FD, or a disengage that failed midway: ask again.
      const pause = new Promise<void>((r) => sched.after(Math.min(RETRY_MS, Math.max(1, end - clock.now())), r));
      if ((await Promise.race([pause, cutShort])) === 'cut') break;
    }
  } finally {
    cut?.removeEventListener('abort', onCut);
    bound.cancel();
  }
  d.counters.inc(FDSTOP.stop_disengages_unconfirmed);
  if (cut?.aborted) {
    d.counters.inc(FDSTOP.stop_disengages_cut_short);
    log.warn('stopping at once (asked again): the disengage was not waited for; flows this FD still owns are lost', { node: d.name, ms: Math.round(clock.now() - t0), last: why });
    return 'cut-short';
  }
  if (clock.now() >= end) why = `no DISENGAGED within ${end - t0} ms (last: ${why})`;
  log.warn('stopping without a confirmed disengage: flows this FD still owns are lost', { node: d.name, why, asks });
  return 'unconfirmed';
}
