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
 *   OPEN → SHEDDING       delay > shedAboveMs
 *   SHEDDING → DROPPING   delay > dropAboveMs
 *   DROPPING → SHEDDING   delay ≤ dropAboveMs / 2
 *   SHEDDING → OPEN       delay ≤ shedAboveMs / 2 for holdMs
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

  constructor(
    private readonly probe: QueueProbe,
    private readonly clock: Clock,
    readonly opts: AdmissionOptions,
  ) {
    this.last = clock.now();
  }

  /** Re-reads the delay and moves between states; returns the state. Once per batch. */
  update(): AdmissionState {
    const now = this.clock.now();
    const d = this.probe.delayMs();
    if (d > this.maxDelayMs) this.maxDelayMs = d;
    this.timeIn[this.state] = this.timeIn[this.state]! + (now - this.last);
    this.last = now;
    const o = this.opts;
    switch (this.state) {
      case AdmissionState.OPEN:
        if (d > o.dropAboveMs) this.enter(AdmissionState.DROPPING);
        else if (d > o.shedAboveMs) this.enter(AdmissionState.SHEDDING);
        break;
      case AdmissionState.SHEDDING:
        if (d > o.dropAboveMs) this.enter(AdmissionState.DROPPING);
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
