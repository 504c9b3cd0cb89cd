/**
 * What every strategy model implements, and the setting they share
 * (docs/comparison.md, "Strategies").
 *
 * The setting: clients -> a router that sprays flows over a tier of
 * balancers ("FDs" in Baton's words: Maglev machines, Katran hosts, GLB
 * directors, Beamer muxes) -> backends. Every strategy gets the same router:
 * the anchored Maglev table of shared/scope/ over the balancers in service
 * (Baton's own hash tier), so a balancer that leaves moves only its own
 * flows and the differences come from the balancers and the backends.
 *
 * The runner (runner.ts) calls open() when a connection starts, route() to
 * ask where a packet of it goes now (after every churn step and on a
 * periodic tick), close() when it ends, and step() for the churn.
 */
import type { Trace } from './trace.js';

/** route() results below 0. */
export const DROPPED = -1; // the packet is dropped and no later packet of the connection will get through: broken
export const LOST_IN_WINDOW = -2; // dropped at a dead balancer the router still sends to (until it is detected); the connection survives that

export type Step =
  | { kind: 'fd-leave'; fds: string[] }
  | { kind: 'fd-join'; fds: string[] }
  | { kind: 'fd-fail'; fds: string[] }
  | { kind: 'fd-fail-detected'; fds: string[] }
  | { kind: 'backend-add'; backend: string }
  | { kind: 'backend-drain'; backend: string }
  | { kind: 'backend-remove'; backend: string };

export interface Env {
  trace: Trace;
  /** Balancers in service at t = 0, in order (fd-1 ...). */
  fds: string[];
  /** Every balancer name the churn may bring in (joiners too). */
  allFds: string[];
  /** Backends in service at t = 0. */
  backends: string[];
  /** Every backend name the churn may bring in; backend index = position here. */
  allBackends: string[];
  /**
   * backendOf[f]: the backend that holds connection f (set by the runner
   * from open()'s answer; -1 before). A server's own connection table, which
   * GLB's and Beamer's servers consult on a miss.
   */
  backendOf: Int32Array;
  /** alive[f] = 1 while connection f is open and not broken. */
  alive: Uint8Array;
}

export interface Strategy {
  readonly name: string;
  /** One line: the paper or repository the model follows. */
  readonly follows: string;
  init(env: Env): void;
  /** A new connection's first packet at time t (ms): the backend index it reaches, or DROPPED. */
  open(f: number, t: number): number;
  /** Where a packet of connection f goes now: backend index, DROPPED or LOST_IN_WINDOW; `hops` = extra hops on the way. */
  route(f: number, t: number): number;
  /** Extra hops (redirects, second chances, daisy-chain forwards) of the last open() or route(). */
  hops: number;
  /** Connection f ended (normally, or broken: `broken`). */
  close(f: number, t: number, broken: boolean): void;
  step(s: Step, t: number): void;
  /** Periodic housekeeping (the clock moved to t). */
  tick(t: number): void;
  /** Per-connection state held at the balancer tier now: entries, bytes. */
  state(): { entries: number; bytes: number };
  /** Free what can be freed (big tables). */
  dispose?(): void;
}

/** Backend names and addresses: svc-N is 10.1.0.N (as the config's service nodes). */
export function backendIp(index: number): number {
  return (0x0a010000 + index + 1) >>> 0;
}
