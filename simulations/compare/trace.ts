/**
 * The comparison's traffic: one seeded, reproducible trace of connections,
 * shared by every strategy (docs/comparison.md, "The trace").
 *
 *  - Arrivals: Poisson at `ratePerS` over [0, durationS).
 *  - Warm start: at t = 0 the system already holds the stationary population
 *    of an M/G/inf queue with that rate, about `concurrent` connections: each
 *    drawn from the length-biased duration distribution with a uniform age,
 *    so the run does not start empty (the long-lived connections a churn
 *    event breaks are there from the first second).
 *  - Durations: lognormal (median `medianS`, shape `sigma`), capped at
 *    `maxDurationS`: heavy-tailed in the sense that matters here (a few
 *    connections live much longer than the time between churn events).
 *  - Sizes: Pareto bytes (shape `sizeAlpha`, minimum `minBytes`), capped;
 *    packets = ceil(bytes / 1000), spread evenly over the connection's life.
 *  - Protocol: TCP with probability 1 - udpRatio (service port 80), else UDP
 *    (port 53), both to the cluster's VIP.
 *  - Clients: 2^22 addresses of 100.64.0.0/10 in a scrambled order, ports
 *    from 1024: every connection's 5-tuple is unique.
 *
 * Everything is in typed arrays sorted by start time: a million connections
 * cost ~50 MB here, whatever the strategy.
 */
import { mulberry32 } from '../../shared/random.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../../shared/packet/meta.js';

export interface TraceParams {
  seed: number;
  /** Expected connections alive at once (sets the arrival rate: concurrent / mean duration). */
  concurrent: number;
  durationS: number;
  medianS: number;
  sigma: number;
  maxDurationS: number;
  udpRatio: number;
  sizeAlpha: number;
  minBytes: number;
  maxBytes: number;
}

export const DEFAULT_TRACE: TraceParams = {
  seed: 15,
  concurrent: 100_000,
  durationS: 80,
  medianS: 20,
  sigma: 1.5,
  maxDurationS: 3600,
  udpRatio: 0.25,
  sizeAlpha: 1.2,
  minBytes: 2_000,
  maxBytes: 1e9,
};

export const VIP = 0xc6336401; // 198.51.100.1, the config's default VIP
export const TCP_PORT = 80;
export const UDP_PORT = 53;
const CLIENT_BASE = 0x64400000; // 100.64.0.0/10
const CLIENT_BITS = 22;

export interface Trace {
  params: TraceParams;
  n: number;
  /** Arrival rate (connections/s) and mean duration (s) of the uncapped distribution. */
  ratePerS: number;
  meanS: number;
  srcIp: Uint32Array;
  srcPort: Uint16Array;
  proto: Uint8Array;
  /** ms; negative for the warm-start population. */
  start: Float64Array;
  end: Float64Array;
  packets: Float64Array;
}

/** Mean of the lognormal: median * e^(sigma^2 / 2). */
export function lognormalMean(medianS: number, sigma: number): number {
  return medianS * Math.exp((sigma * sigma) / 2);
}

export function makeTrace(p: TraceParams): Trace {
  const rnd = mulberry32(p.seed);
  const u = (): number => (rnd() + 0.5) / 4294967296; // (0, 1)
  const normal = (): number => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  const mu = Math.log(p.medianS);
  const meanS = lognormalMean(p.medianS, p.sigma);
  const rate = p.concurrent / meanS;
  const cap = p.maxDurationS;
  // Warm start: length-biased lognormal is lognormal(mu + sigma^2, sigma).
  const warm = Math.round(p.concurrent);
  const arrivalsGuess = Math.ceil(rate * p.durationS * 1.1 + 10 * Math.sqrt(rate * p.durationS) + 16);
  const cap0 = warm + arrivalsGuess;
  const start = new Float64Array(cap0);
  const end = new Float64Array(cap0);
  const packets = new Float64Array(cap0);
  const proto = new Uint8Array(cap0);
  let n = 0;
  const size = (): number => {
    const b = Math.min(p.maxBytes, p.minBytes / Math.pow(u(), 1 / p.sizeAlpha));
    return Math.max(1, Math.ceil(b / 1000));
  };
  for (let i = 0; i < warm; i++) {
    const d = Math.min(cap, Math.exp(mu + p.sigma * p.sigma + p.sigma * normal()));
    const age = u() * d;
    start[n] = -age * 1000;
    end[n] = (d - age) * 1000;
    packets[n] = size();
    proto[n] = u() < p.udpRatio ? IPPROTO_UDP : IPPROTO_TCP;
    n++;
  }
  let t = 0;
  for (;;) {
    t += -Math.log(u()) / rate;
    if (t >= p.durationS || n === cap0) break;
    const d = Math.min(cap, Math.exp(mu + p.sigma * normal()));
    start[n] = t * 1000;
    end[n] = (t + d) * 1000;
    packets[n] = size();
    proto[n] = u() < p.udpRatio ? IPPROTO_UDP : IPPROTO_TCP;
    n++;
  }
  // Sort by start (the warm population is in random order).
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => start[a]! - start[b]!);
  const S = new Float64Array(n);
  const E = new Float64Array(n);
  const P = new Float64Array(n);
  const R = new Uint8Array(n);
  const ip = new Uint32Array(n);
  const port = new Uint16Array(n);
  const mask = (1 << CLIENT_BITS) - 1;
  for (let k = 0; k < n; k++) {
    const i = order[k]!;
    S[k] = start[i]!;
    E[k] = end[i]!;
    P[k] = packets[i]!;
    R[k] = proto[i]!;
    // Unique 5-tuples: client address from a bijective scramble of k, port from k's high part.
    ip[k] = (CLIENT_BASE + (Math.imul(k & mask, 0x9e3779b1) & mask)) >>> 0;
    port[k] = 1024 + Math.floor(k / (mask + 1));
  }
  return { params: p, n, ratePerS: rate, meanS, srcIp: ip, srcPort: port, proto: R, start: S, end: E, packets: P };
}

export function dstPortOf(proto: number): number {
  return proto === IPPROTO_TCP ? TCP_PORT : UDP_PORT;
}
