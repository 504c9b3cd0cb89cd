/**
 * Timers behind an interface, so that the same node code runs on real time
 * (RealScheduler: setTimeout/setImmediate + the monotonic clock) and on
 * virtual time (VirtualScheduler: a deterministic event queue over a
 * ManualClock, used by in-memory cluster tests and simulations/).
 */
import { ManualClock, SystemClock, type Clock } from '../clock.js';
import { BatonError, ErrorCode } from '../errors.js';

export interface Timer {
  cancel(): void;
}

export interface Scheduler {
  readonly clock: Clock;
  /** Run `fn` once after `ms` milliseconds. */
  after(ms: number, fn: () => void): Timer;
  /** Run `fn` every `ms` milliseconds until cancelled. */
  every(ms: number, fn: () => void): Timer;
  /** Run `fn` soon, after the current batch of I/O (setImmediate). */
  defer(fn: () => void): void;
}

export class RealScheduler implements Scheduler {
  readonly clock: Clock;
  constructor(clock: Clock = new SystemClock()) {
    this.clock = clock;
  }
  after(ms: number, fn: () => void): Timer {
    const t = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(t) };
  }
  every(ms: number, fn: () => void): Timer {
    const t = setInterval(fn, ms);
    return { cancel: () => clearInterval(t) };
  }
  defer(fn: () => void): void {
    setImmediate(fn);
  }
}

interface VEvent {
  at: number;
  seq: number;
  fn: () => void;
  period: number; // 0 = one-shot
  cancelled: boolean;
}

/**
 * Deterministic discrete-event scheduler. Events run in (time, insertion)
 * order; the clock jumps to each event's time. Nothing runs until the owner
 * calls runUntil / runFor / runUntilIdle / runUntilTrue.
 */
export class VirtualScheduler implements Scheduler {
  readonly clock: ManualClock;
  private heap: VEvent[] = [];
  private seq = 0;
  /** Events executed so far (for progress reports and runaway detection). */
  executed = 0;

  constructor(startMs = 0) {
    this.clock = new ManualClock(startMs);
  }

  after(ms: number, fn: () => void): Timer {
    return this.push(this.clock.now() + Math.max(0, ms), fn, 0);
  }
  every(ms: number, fn: () => void): Timer {
    if (!(ms > 0)) throw new BatonError(ErrorCode.BAD_ARGUMENT, `every(): period must be > 0, got ${ms}`);
    return this.push(this.clock.now() + ms, fn, ms);
  }
  defer(fn: () => void): void {
    this.push(this.clock.now(), fn, 0);
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Runs events with time <= t, then sets the clock to t. */
  runUntil(t: number): void {
    while (this.heap.length > 0 && this.heap[0]!.at <= t) this.step();
    if (t > this.clock.now()) this.clock.set(t);
  }
  runFor(ms: number): void {
    this.runUntil(this.clock.now() + ms);
  }
  /**
   * Runs until `cond()` holds (checked after every event) or virtual time
   * passes `limitMs` from now. Returns whether the condition held.
   */
  runUntilTrue(cond: () => boolean, limitMs: number): boolean {
    const end = this.clock.now() + limitMs;
    if (cond()) return true;
    while (this.heap.length > 0 && this.heap[0]!.at <= end) {
      this.step();
      if (cond()) return true;
    }
    if (end > this.clock.now()) this.clock.set(end);
    return cond();
  }
  /** Runs one-shot events until none is left (periodic timers would never end: bounded by maxEvents). */
  runUntilIdle(maxEvents = 10_000_000): void {
    let n = 0;
    while (this.heap.length > 0 && n++ < maxEvents) this.step();
  }

  private step(): void {
    const e = this.popMin();
    if (e.cancelled) return;
    if (e.at > this.clock.now()) this.clock.set(e.at);
    this.executed++;
    if (e.period > 0) {
      e.at += e.period;
      e.seq = this.seq++;
      this.insert(e);
    }
    e.fn();
  }

  private push(at: number, fn: () => void, period: number): Timer {
    const e: VEvent = { at, seq: this.seq++, fn, period, cancelled: false };
    this.insert(e);
    return {
      cancel: () => {
        e.cancelled = true;
        e.period = 0;
      },
    };
  }

  // Binary min-heap on (at, seq).
  private less(a: VEvent, b: VEvent): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
  private insert(e: VEvent): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }
  private popMin(): VEvent {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
