/**
 * Plain modulo hashing, the floor: every balancer sends a flow to
 * backends[hash(5-tuple) mod n], n the backends in service, with no state
 * anywhere. Any change of n moves about (n-1)/n of all flows; a backend
 * cannot be drained (it leaves the list at once). Balancer churn costs
 * nothing but the packets a failed balancer gets before it is detected.
 */
import { LOST_IN_WINDOW, type Env, type Step, type Strategy } from '../strategy.js';
import { Router, flowHash } from '../router.js';

const SEED = 0x6d6f64; // "mod"

export class ModuloModel implements Strategy {
  readonly name = 'modulo';
  readonly follows = 'hash mod n over the backends, no state (the textbook floor)';
  hops = 0;
  private env!: Env;
  private router!: Router;
  private list = new Int32Array(0);
  private active: string[] = [];

  init(env: Env): void {
    this.env = env;
    this.router = new Router(env.trace, env.fds, env.allFds);
    this.active = env.backends.slice();
    this.rebuild();
  }

  private rebuild(): void {
    this.list = Int32Array.from(this.active.map((b) => this.env.allBackends.indexOf(b)).sort((a, b) => a - b));
  }

  open(f: number): number {
    return this.route(f);
  }

  route(f: number): number {
    this.hops = 0;
    if (this.router.failed.has(this.router.pick(f))) return LOST_IN_WINDOW;
    return this.list[flowHash(this.env.trace, f, SEED) % this.list.length]!;
  }

  close(): void {}

  step(s: Step): void {
    this.router.step(s);
    if (s.kind === 'backend-add') this.active.push(s.backend);
    else if (s.kind === 'backend-drain') this.active = this.active.filter((x) => x !== s.backend);
    this.rebuild();
  }

  tick(): void {}

  state(): { entries: number; bytes: number } {
    return { entries: 0, bytes: 0 };
  }
}
