/**
 * Health of real-server endpoints (config `realServers`): each FD probes
 * every endpoint with a TCP connect to `health.port` every `intervalMs`
 * (`Prober`, I/O behind an interface: a real socket in processes, a fake in
 * tests), and only healthy endpoints get new flows; the established flows of
 * one that is not up are rehomed or reset at their next packet, per service
 * (the FD's data plane is told which are down: FdDataplane.setDownEndpoints;
 * docs/disengage.md, "Dead backends"). Each FD checks on its own,
 * as Katran's and GLB's per-host health checkers do; only the FD that
 * creates a flow picks its backend, so FDs that see an endpoint change a
 * moment apart never split a flow.
 *
 * Per endpoint (explicit lifecycle):
 *   UNKNOWN ──pass──▶ UP      UNKNOWN ──fail──▶ DOWN   (the first result decides)
 *   UP ──`fall` consecutive failures──▶ DOWN
 *   DOWN ──`rise` consecutive passes──▶ UP
 * Every check, pass, failure and transition is counted; transitions are
 * logged and reported to `onChange` with the new healthy set (in config
 * order, so every FD that agrees on health picks from the same list).
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import { Counters, defineCounters } from '../shared/counters.js';

export const EndpointState = { UNKNOWN: 0, UP: 1, DOWN: 2 } as const;
export type EndpointState = (typeof EndpointState)[keyof typeof EndpointState];
export const ENDPOINT_STATE_NAMES = ['unknown', 'up', 'down'] as const;

export const HEALTH = defineCounters(['health_checks', 'health_passes', 'health_failures', 'endpoint_to_up', 'endpoint_to_down'] as const);

/** One probe: resolves true when `host:port` accepted a TCP connection within `timeoutMs`. Never rejects. */
export interface Prober {
  probe(host: string, port: number, timeoutMs: number): Promise<boolean>;
}

export interface Endpoint {
  host: string;
  name: string;
}

export interface HealthOptions {
  port: number;
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
}

export interface EndpointStatus extends Endpoint {
  state: EndpointState;
  /** Consecutive passes / failures so far. */
  passes: number;
  fails: number;
}

export class EndpointHealth {
  readonly counters = new Counters(HEALTH);
  private readonly st: EndpointStatus[];
  private timer: Timer | null = null;
  private inFlight = false;

  constructor(
    endpoints: readonly Endpoint[],
    private readonly opts: HealthOptions,
    private readonly prober: Prober,
    private readonly scheduler: Scheduler,
    private readonly onChange: (healthy: readonly Endpoint[], changed: EndpointStatus) => void,
  ) {
    this.st = endpoints.map((e) => ({ ...e, state: EndpointState.UNKNOWN, passes: 0, fails: 0 }));
  }

  start(): void {
    if (this.timer) return;
    void this.round();
    this.timer = this.scheduler.every(this.opts.intervalMs, () => void this.round());
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** The endpoints that get new flows now, in config order. */
  healthy(): Endpoint[] {
    return this.st.filter((e) => e.state === EndpointState.UP).map(({ host, name }) => ({ host, name }));
  }

  status(): EndpointStatus[] {
    return this.st.map((e) => ({ ...e }));
  }

  /** One round: every endpoint probed in parallel; a round still running when the next is due is skipped (a slow network is not a pile-up). */
  async round(): Promise<void> {
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      const results = await Promise.all(this.st.map((e) => this.prober.probe(e.host, this.opts.port, this.opts.timeoutMs).catch(() => false)));
      results.forEach((ok, i) => this.record(this.st[i]!, ok));
    } finally {
      this.inFlight = false;
    }
  }

  private record(e: EndpointStatus, ok: boolean): void {
    const c = this.counters;
    c.inc(HEALTH.health_checks);
    c.inc(ok ? HEALTH.health_passes : HEALTH.health_failures);
    if (ok) {
      e.passes++;
      e.fails = 0;
    } else {
      e.fails++;
      e.passes = 0;
    }
    const was = e.state;
    if (was === EndpointState.UNKNOWN) e.state = ok ? EndpointState.UP : EndpointState.DOWN;
    else if (was === EndpointState.UP && e.fails >= this.opts.fall) e.state = EndpointState.DOWN;
    else if (was === EndpointState.DOWN && e.passes >= this.opts.rise) e.state = EndpointState.UP;
    if (e.state === was) return;
    c.inc(e.state === EndpointState.UP ? HEALTH.endpoint_to_up : HEALTH.endpoint_to_down);
    this.onChange(this.healthy(), { ...e });
  }
}
