/**
 * Stateless consistent hashing, Maglev / Katran style.
 *
 * Follows Eisenbud et al., "Maglev: A Fast and Reliable Software Network
 * Load Balancer" (NSDI 2016), sections 3.3-3.4, and Katran
 * (github.com/facebookincubator/katran: Maglev ring per VIP, per-CPU LRU
 * connection table): every balancer maps a flow to a backend with the same
 * Maglev table over the backends in service (shared/scope/maglev.ts, the
 * paper's population algorithm, M = 65537), and remembers the choice in a
 * connection table of its own. A packet whose balancer has the flow in its
 * table goes to the remembered backend; otherwise the balancer looks the
 * flow up in the current table (and remembers that).
 *
 * The known weakness: the connection table is local. A flow that moves to
 * another balancer (one left, failed, joined, or restarted in an upgrade)
 * is looked up again, and breaks if the backend table changed for it since
 * it started. A backend that is drained leaves the table; its flows stay on
 * it through the connection tables for as long as they stay on their
 * balancer.
 *
 * `conntrack: false` is plain consistent hashing with no connection table
 * (the baseline of Cheetah's churn experiment): every backend change breaks
 * the flows whose table entry moved.
 *
 * Modelled: one connection-table entry per flow, on the balancer that holds
 * it; a balancer that leaves or fails loses its table, and an entry on a
 * balancer the flow left is not used again (LRU eviction, restart). No
 * table size limit (no eviction under load).
 */
import { buildMaglevTable } from '../../../shared/scope/maglev.js';
import { LOST_IN_WINDOW, type Env, type Step, type Strategy } from '../strategy.js';
import { Router, flowHash } from '../router.js';

const M = 65537;
const SEED = 0x6b617472; // "katr"
/** Bytes of one Katran LRU entry, roughly: flow key (v6-sized, 40 B) + value (backend, atime: 16 B) + map overhead. */
const ENTRY_BYTES = 64;

export class MaglevModel implements Strategy {
  readonly name: string;
  readonly follows: string;
  hops = 0;
  private env!: Env;
  private router!: Router;
  private table: Uint16Array = new Uint16Array(0);
  private tableIdx = new Int32Array(0); // table member index -> backend index
  private active: string[] = [];
  private ctFd = new Int32Array(0);
  private ctGen = new Int32Array(0);
  private ctBackend = new Int32Array(0);
  private gen = new Int32Array(0);
  private entries = 0;

  constructor(private readonly conntrack = true) {
    this.name = conntrack ? 'maglev/katran' : 'consistent hashing (stateless)';
    this.follows = conntrack ? 'Maglev (NSDI 2016) sec. 3.3-3.4; Katran (facebookincubator/katran)' : 'consistent hashing without a connection table (Cheetah, NSDI 2020, sec. 2)';
  }

  init(env: Env): void {
    this.env = env;
    this.router = new Router(env.trace, env.fds, env.allFds);
    const n = env.trace.n;
    this.ctFd = new Int32Array(n).fill(-1);
    this.ctGen = new Int32Array(n);
    this.ctBackend = new Int32Array(n);
    this.gen = new Int32Array(env.allFds.length);
    this.active = env.backends.slice();
    this.rebuild();
  }

  private rebuild(): void {
    const names = [...this.active].sort();
    this.table = buildMaglevTable(names, M, SEED);
    this.tableIdx = Int32Array.from(names, (b) => this.env.allBackends.indexOf(b));
  }

  private lookup(f: number): number {
    return this.tableIdx[this.table[flowHash(this.env.trace, f, SEED) % M]!]!;
  }

  open(f: number): number {
    this.hops = 0;
    const b = this.router.pick(f);
    if (this.router.failed.has(b)) return LOST_IN_WINDOW;
    const be = this.lookup(f);
    if (this.conntrack) {
      this.ctFd[f] = b;
      this.ctGen[f] = this.gen[b]!;
      this.ctBackend[f] = be;
      this.entries++;
    }
    return be;
  }

  route(f: number): number {
    this.hops = 0;
    const b = this.router.pick(f);
    if (this.router.failed.has(b)) return LOST_IN_WINDOW;
    if (!this.conntrack) return this.lookup(f);
    if (this.ctFd[f] === b && this.ctGen[f] === this.gen[b]) return this.ctBackend[f]!;
    // Not in this balancer's table: look it up again and remember the answer.
    if (this.ctFd[f]! < 0) this.entries++;
    const be = this.lookup(f);
    this.ctFd[f] = b;
    this.ctGen[f] = this.gen[b]!;
    this.ctBackend[f] = be;
    return be;
  }

  close(f: number): void {
    if (this.conntrack && this.ctFd[f]! >= 0) {
      this.ctFd[f] = -1;
      this.entries--;
    }
  }

  step(s: Step): void {
    for (const b of this.router.step(s)) if (s.kind !== 'fd-fail') this.gen[b]!++; // a balancer that stops (or starts) has an empty table
    if (s.kind === 'backend-add') {
      this.active.push(s.backend);
      this.rebuild();
    } else if (s.kind === 'backend-drain') {
      this.active = this.active.filter((x) => x !== s.backend);
      this.rebuild();
    }
  }

  tick(): void {}

  state(): { entries: number; bytes: number } {
    return { entries: this.entries, bytes: this.entries * ENTRY_BYTES };
  }
}

