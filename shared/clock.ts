/**
 * Time is injected everywhere: real processes use the monotonic system clock,
 * tests and simulations use a ManualClock that only moves when told to.
 * Units: milliseconds (fractional allowed).
 */
import { BatonError, ErrorCode } from './errors.js';

export interface Clock {
  /** Monotonic milliseconds. Never goes backwards. */
  now(): number;
}

export class SystemClock implements Clock {
  now(): number {
    return performance.now();
  }
}

export class ManualClock implements Clock {
  private t: number;
  constructor(startMs = 0) {
    this.t = startMs;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    if (!(ms >= 0)) throw new BatonError(ErrorCode.BAD_ARGUMENT, `ManualClock.advance: ms must be >= 0, got ${ms}`);
    this.t += ms;
  }
  set(ms: number): void {
    if (ms < this.t) throw new BatonError(ErrorCode.BAD_ARGUMENT, `ManualClock.set: time cannot go backwards (${ms} < ${this.t})`);
    this.t = ms;
  }
}
