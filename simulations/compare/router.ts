/**
 * The router in front of the balancer tier, the same for every strategy
 * model: flows are sprayed by the 5-tuple over the balancers in service
 * with the anchored Maglev table (shared/scope/, Baton's own hash tier), so
 * a balancer that leaves moves only its own flows and gets exactly them back
 * when it returns — what resilient ECMP hashing in a router gives at best.
 * A failed balancer stays in the table until it is detected (the runner's
 * failure window): packets sent to it meanwhile are lost.
 */
import { planScope } from '../../shared/scope/scope-plan.js';
import type { HashScope } from '../../shared/scope/hash-scope.js';
import { hashFiveTuple } from '../../shared/hash/xxh32.js';
import type { Step } from './strategy.js';
import { VIP, dstPortOf, type Trace } from './trace.js';

const SEED = 24301;

export class Router {
  private members: string[];
  private anchor: readonly string[] = [];
  private version = 0;
  scope!: HashScope;
  /** Balancer index (into allFds) of scope member i. */
  private index = new Int32Array(0);
  readonly failed = new Set<number>();

  constructor(
    private readonly trace: Trace,
    fds: readonly string[],
    private readonly allFds: readonly string[],
  ) {
    this.members = fds.slice();
    this.replan();
  }

  private replan(): void {
    const p = planScope(++this.version, this.anchor, this.members, 65537, SEED, 3);
    this.scope = p.scope;
    this.anchor = p.anchor;
    this.index = Int32Array.from(p.scope.members, (n) => this.allFds.indexOf(n));
  }

  /** Balancer index the router sends flow f to. */
  pick(f: number): number {
    const t = this.trace;
    const pr = t.proto[f]!;
    return this.index[this.scope.pick(hashFiveTuple(t.srcIp[f]!, VIP, t.srcPort[f]!, dstPortOf(pr), pr, SEED))]!;
  }

  /** Applies the balancer part of a churn step; returns the balancer indexes that left, failed or joined. */
  step(s: Step): number[] {
    if (s.kind === 'fd-leave' || s.kind === 'fd-fail-detected') {
      this.members = this.members.filter((m) => !s.fds.includes(m));
      for (const n of s.fds) this.failed.delete(this.allFds.indexOf(n));
      this.replan();
    } else if (s.kind === 'fd-join') {
      this.members = [...this.members, ...s.fds];
      this.replan();
    } else if (s.kind === 'fd-fail') {
      for (const n of s.fds) this.failed.add(this.allFds.indexOf(n));
    } else return [];
    return s.fds.map((n) => this.allFds.indexOf(n));
  }
}

/** A hash of the 5-tuple for a balancer's own choice of backend (not the router's). */
export function flowHash(trace: Trace, f: number, seed: number): number {
  const pr = trace.proto[f]!;
  return hashFiveTuple(trace.srcIp[f]!, VIP, trace.srcPort[f]!, dstPortOf(pr), pr, seed) >>> 0;
}
