/** Packets per second from a monotonically growing counter, sampled off the hot path. */
import type { Clock } from '../clock.js';

export class PpsMeter {
  private lastT: number;
  private lastN: number;
  private rate = 0;
  constructor(
    private readonly clock: Clock,
    private readonly read: () => number,
    private readonly minIntervalMs = 100,
  ) {
    this.lastT = clock.now();
    this.lastN = read();
  }
  /** Rate since the previous sample (kept if called again within minIntervalMs). */
  sample(): number {
    const t = this.clock.now();
    const dt = t - this.lastT;
    if (dt < this.minIntervalMs) return this.rate;
    const n = this.read();
    this.rate = ((n - this.lastN) * 1000) / dt;
    this.lastT = t;
    this.lastN = n;
    return this.rate;
  }
}
