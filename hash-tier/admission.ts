/**
 * Admission control at the hash tier's ingress: what Baton does when it is
 * offered more than it can carry. Policy only — the signal is the receive
 * path's measured queueing delay (shared/dataplane/queue-probe.ts), the
 * mechanism is the forwarding engine refusing client frames.
 *
 *   OPEN      every client frame is forwarded.
 *   SHEDDING  delay > shedAboveMs: new work is refused at the edge — a client
 *             TCP SYN is dropped here (drop_admission_syn), and every other
 *             client frame is forwarded with the SHED flag, so the FD creates
 *             no new UDP flow for it (drop_shed_new_flow). Established flows
 *             go on.
 *   DROPPING  delay > dropAboveMs: the queue is at its bound; client frames
 *             are dropped at the head of the queue (drop_admission_overload)
 *             until it drains, so no frame that is forwarded has waited much
 *             longer than dropAboveMs here. Replies (FD and service frames)
 *             are never refused: they are work already admitted.
 *
 * Transitions (checked once per RX batch, O(1)):
 *   OPEN → SHEDDING       delay > shedAboveMs and the queue is not draining
 *   SHEDDING → DROPPING   delay > dropAboveMs and the queue is not draining
 *   DROPPING → SHEDDING   delay ≤ dropAboveMs / 2
 *   SHEDDING → OPEN       delay ≤ shedAboveMs / 2 for holdMs
 * "Not draining": the delay is no lower than it was trendMs ago. A node that
 * was stalled (a process start on a busy machine, a GC pause) comes back to a
 * backlog that it then drains — a long delay that falls is a stall, not
 * overload, and refuses nothing; a delay that stands or grows is more
 * arriving than leaving. After a gap in the checks longer than trendMs (the
 * stall itself) the trend starts over.
 * Every entry into a state is counted (admission_to_shedding, ...).
 */
import type { Clock } from '../shared/clock.js';
import type { QueueProbe } from '../shared/dataplane/queue-probe.js';

export const AdmissionState = { OPEN: 0, SHEDDING: 1, DROPPING: 2 } as const;
export type AdmissionState = (typeof AdmissionState)[keyof typeof AdmissionState];
export const ADMISSION_STATE_NAMES = ['open', 'shedding', 'dropping'] as const;

export interface AdmissionOptions {
  shedAboveMs: number;
  dropAboveMs: number;
  /** How long the delay must stay low before SHEDDING returns to OPEN. */
  holdMs: number;
  /** The delay's trend is taken over this interval (default 50 ms). */
  trendMs?: number;
}

export class Admission {
  state: AdmissionState = AdmissionState.OPEN;
  /** Entries into each state (index = AdmissionState). */
  readonly entered = new Float64Array(3);
  /** Time spent in each state (ms), up to the last update. */
  readonly timeIn = new Float64Array(3);
  /** The largest delay seen (ms) — the bound as observed. */
  maxDelayMs = 0;
  private lowSince = -1;
  private last: number;
  private readonly trendMs: number;
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
    this.trendMs = opts.trendMs ?? 50;
    this.refAt = this.last;
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
    const rising = this.rising;
    const o = this.opts;
    switch (this.state) {
      case AdmissionState.OPEN:
        if (rising && d > o.dropAboveMs) this.enter(AdmissionState.DROPPING);
        else if (rising && d > o.shedAboveMs) this.enter(AdmissionState.SHEDDING);
        break;
      case AdmissionState.SHEDDING:
        if (rising && d > o.dropAboveMs) this.enter(AdmissionState.DROPPING);
        else if (d <= o.shedAboveMs / 2) {
          if (this.lowSince < 0) this.lowSince = now;
          else if (now - this.lowSince >= o.holdMs) this.enter(AdmissionState.OPEN);
        } else this.lowSince = -1;
        break;
      case AdmissionState.DROPPING:
        if (d <= o.dropAboveMs / 2) this.enter(AdmissionState.SHEDDING);
        break;
    }
    return this.state;
  }

  private enter(s: AdmissionState): void {
    this.state = s;
    this.lowSince = -1;
    this.entered[s] = this.entered[s]! + 1;
  }
}
