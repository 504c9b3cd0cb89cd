/**
 * Admission control at the hash tier's ingress: what Baton does when it is
 * offered more than it can carry. Policy only — the signal is the receive
 * path's measured queueing delay (shared/dataplane/queue-probe.ts), the
 * mechanism is the forwarding engine refusing client frames. The cheapest
 * work to refuse is refused first:
 *
 *   OPEN       every client frame is forwarded.
 *   SHED_SYN   delay > synAboveMs: a client TCP SYN is dropped here
 *              (drop_admission_syn). The client's TCP retries it: a slower
 *              connect, no data lost. Everything else goes on.
 *   SHED_NEW   delay > shedAboveMs: also no new UDP flow — client frames are
 *              forwarded with the SHED flag and the FD creates no flow for
 *              one (drop_shed_new_flow). Established flows go on.
 *   DROPPING   delay > dropAboveMs: the queue is at its bound; client frames
 *              are dropped at the head of the queue (drop_admission_overload)
 *              until it drains, so no client frame that is forwarded has
 *              waited much longer than dropAboveMs here. Replies (FD and
 *              service frames) are never refused: work already admitted.
 *
 * Transitions (checked once per RX batch, O(1)); level thresholds
 * T = [_, synAboveMs, shedAboveMs, dropAboveMs]:
 *   up to the highest level L with delay > T[L], while the queue is not draining
 *   down one level when delay ≤ T[level] / 2 (to OPEN: for holdMs)
 * "Not draining": the delay is no lower than it was trendMs ago. A node that
 * was stalled (a process start on a busy machine, a GC pause) comes back to a
 * backlog that it then drains — a long delay that falls is a stall, not
 * overload, and refuses nothing; a delay that stands or grows is more
 * arriving than leaving. After a gap in the checks longer than trendMs (the
 * stall itself) the trend starts over.
 * Every entry into a state is counted (admission_to_<state>).
 */
import type { Clock } from '../shared/clock.js';
import type { QueueProbe } from '../shared/dataplane/queue-probe.js';

export const AdmissionState = { OPEN: 0, SHED_SYN: 1, SHED_NEW: 2, DROPPING: 3 } as const;
export type AdmissionState = (typeof AdmissionState)[keyof typeof AdmissionState];
export const ADMISSION_STATE_NAMES = ['open', 'shed_syn', 'shed_new', 'dropping'] as const;

export interface AdmissionOptions {
  synAboveMs: number;
  shedAboveMs: number;
  dropAboveMs: number;
  /** How long the delay must stay low before SHED_SYN returns to OPEN. */
  holdMs: number;
  /** The delay's trend is taken over this interval (default 100 ms). */
  trendMs?: number;
}

export class Admission {
  state: AdmissionState = AdmissionState.OPEN;
  /** Entries into each state (index = AdmissionState). */
  readonly entered = new Float64Array(4);
  /** Time spent in each state (ms), up to the last update. */
  readonly timeIn = new Float64Array(4);
  /** The largest delay seen (ms) — the bound as observed. */
  maxDelayMs = 0;
  private lowSince = -1;
  private last: number;
  private readonly trendMs: number;
  private readonly t: Float64Array;
  private refAt: number;
  private refDelay = 0;
  /** The delay is not falling (over the last trendMs): more arrives than leaves. */
  private rising = false;

  constructor(
    private readonly probe: QueueProbe,
    private readonly clock: Clock,
    readonly opts: AdmissionOptions,
  ) {
    this.last = clock.now();
    this.trendMs = opts.trendMs ?? 100;
    this.refAt = this.last;
    this.t = Float64Array.from([0, opts.synAboveMs, opts.shedAboveMs, opts.dropAboveMs]);
  }

  /** Re-reads the delay and moves between states; returns the state. Once per batch. */
  update(): AdmissionState {
    const now = this.clock.now();
    const d = this.probe.delayMs();
    if (d > this.maxDelayMs) this.maxDelayMs = d;
    this.timeIn[this.state] = this.timeIn[this.state]! + (now - this.last);
    if (now - this.last > this.trendMs) {
      // A gap in the checks: this node was stalled. What follows is a backlog; judge its trend afresh.
      this.rising = false;
      this.refAt = now;
      this.refDelay = d;
    } else if (now - this.refAt >= this.trendMs) {
      this.rising = d >= this.refDelay;
      this.refAt = now;
      this.refDelay = d;
    }
    this.last = now;
    const t = this.t;
    let s: number = this.state;
    if (this.rising && s < 3 && d > t[s + 1]!) {
      while (s < 3 && d > t[s + 1]!) s++;
      this.enter(s as AdmissionState);
    } else if (s > 0 && d <= t[s]! / 2) {
      if (s > 1) this.enter((s - 1) as AdmissionState);
      else if (this.lowSince < 0) this.lowSince = now;
      else if (now - this.lowSince >= this.opts.holdMs) this.enter(AdmissionState.OPEN);
    } else this.lowSince = -1;
    return this.state;
  }

  private enter(s: AdmissionState): void {
    this.state = s;
    this.lowSince = -1;
    this.entered[s] = this.entered[s]! + 1;
  }
}
