/**
 * Beamer (Olteanu et al., "Stateless Datacenter Load-balancing with
 * Beamer", NSDI 2018).
 *
 * Muxes are stateless and share a bucket table: a flow's bucket is a hash
 * of its 5-tuple, and each bucket names its current server, the server it
 * had before, and when it changed. The mux sends a packet to the current
 * server with the previous server and the change time in the encapsulation;
 * a server that does not hold the connection (and the packet is not a SYN)
 * forwards it to the previous server ("daisy chaining", one extra hop),
 * while the change is younger than the chaining timeout. The controller
 * moves as few buckets as it can: a removed server's buckets go to the
 * servers with the fewest, a new server takes buckets from those with the
 * most.
 *
 * The known weakness: a bucket remembers one previous server. A bucket that
 * changes twice while a connection from two servers back is still alive
 * breaks it (more often the faster servers come and go); and a chain that
 * outlives its timeout breaks the connections still on the previous server.
 *
 * Modelled: 128 buckets per initial server (at least 1024); chaining timeout
 * 240 s (a parameter: longer than the trace's churn, so only the one-step
 * memory shows); mux churn breaks nothing (one table for all muxes).
 */
import { LOST_IN_WINDOW, type Env, type Step, type Strategy } from '../strategy.js';
import { Router, flowHash } from '../router.js';

const SEED = 0x6265616d; // "beam"

export class BeamerModel implements Strategy {
  readonly name = 'beamer';
  readonly follows = 'Beamer (NSDI 2018): bucket table with daisy chaining';
  hops = 0;
  private env!: Env;
  private router!: Router;
  buckets = 0;
  cur = new Int16Array(0);
  prev = new Int16Array(0);
  changed = new Float64Array(0);
  private active: number[] = [];
  private now = 0;

  constructor(readonly chainTimeoutMs = 240_000) {}

  init(env: Env): void {
    this.env = env;
    this.router = new Router(env.trace, env.fds, env.allFds);
    this.active = env.backends.map((b) => env.allBackends.indexOf(b));
    this.buckets = Math.max(1024, 128 * this.active.length);
    this.cur = new Int16Array(this.buckets);
    this.prev = new Int16Array(this.buckets).fill(-1);
    this.changed = new Float64Array(this.buckets).fill(-Infinity);
    for (let i = 0; i < this.buckets; i++) this.cur[i] = this.active[i % this.active.length]!;
  }

  private move(bucket: number, to: number): void {
    this.prev[bucket] = this.cur[bucket]!;
    this.cur[bucket] = to;
    this.changed[bucket] = this.now;
  }

  private counts(): Map<number, number[]> {
    const m = new Map<number, number[]>(this.active.map((b) => [b, []]));
    for (let i = 0; i < this.buckets; i++) m.get(this.cur[i]!)?.push(i);
    return m;
  }

  open(f: number): number {
    this.hops = 0;
    if (this.router.failed.has(this.router.pick(f))) return LOST_IN_WINDOW;
    return this.cur[flowHash(this.env.trace, f, SEED) % this.buckets]!; // the current server accepts a SYN
  }

  route(f: number, t: number): number {
    this.hops = 0;
    if (this.router.failed.has(this.router.pick(f))) return LOST_IN_WINDOW;
    const k = flowHash(this.env.trace, f, SEED) % this.buckets;
    const c = this.cur[k]!;
    if (this.env.backendOf[f] === c) return c;
    const p = this.prev[k]!;
    if (p >= 0 && t - this.changed[k]! < this.chainTimeoutMs) {
      this.hops = 1; // daisy chained to the previous server
      return p;
    }
    return c;
  }

  close(): void {}

  step(s: Step, t: number): void {
    this.now = t;
    this.router.step(s);
    if (s.kind === 'backend-add') {
      const b = this.env.allBackends.indexOf(s.backend);
      const have = this.counts();
      this.active.push(b);
      const want = Math.floor(this.buckets / this.active.length);
      // Take from the servers with the most buckets, one at a time.
      for (let got = 0; got < want; got++) {
        let from = -1;
        let most = -1;
        for (const [srv, list] of have) if (list.length > most) [from, most] = [srv, list.length];
        this.move(have.get(from)!.pop()!, b);
      }
    } else if (s.kind === 'backend-drain') {
      const b = this.env.allBackends.indexOf(s.backend);
      this.active = this.active.filter((x) => x !== b);
      const have = this.counts();
      for (let i = 0; i < this.buckets; i++) {
        if (this.cur[i] !== b) continue;
        let to = -1;
        let least = Infinity;
        for (const [srv, list] of have) if (list.length < least) [to, least] = [srv, list.length];
        have.get(to)!.push(i);
        this.move(i, to);
      }
    }
  }

  tick(): void {}

  state(): { entries: number; bytes: number } {
    return { entries: 0, bytes: 0 };
  }
}
