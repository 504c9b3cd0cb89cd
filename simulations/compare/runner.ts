/**
 * Replays one trace and one churn scenario through one strategy on virtual
 * time, and counts (docs/comparison.md, "What is counted"):
 *
 *  - broken connections: a packet of an open connection reaches a backend
 *    that does not hold it, or is dropped for good; the connection ends
 *    there (the client gets a reset). Attributed to the churn event in
 *    force (the last one that started).
 *  - packets lost in a failure window: sent to a dead balancer the router
 *    still uses; the connection survives (TCP retransmits) unless the
 *    strategy cannot route it afterwards.
 *  - extra hops per packet: redirects, second chances, daisy-chain
 *    forwards, summed over packets (each connection's packets spread evenly
 *    over its life), per event window [event, next event) and overall.
 *  - state per flow at the balancer tier (strategy.state() over open
 *    connections), sampled on every evaluation.
 *  - time to converge: from an event to the last packet that took an extra
 *    hop because of it (a connection's first extra hop names the event);
 *    "censored" when some still did at the end of the trace.
 *
 * Evaluations: every connection is routed once right after each churn
 * step, and every `evalMs` (a connection's path only changes at a step, but
 * Baton's tables see the packet, which keeps entries from idling out);
 * strategy.tick() runs every `tickMs`.
 */
import { DROPPED, LOST_IN_WINDOW, type Env, type Step, type Strategy } from './strategy.js';
import type { Scenario } from './churn.js';
import type { Trace } from './trace.js';

export interface RunOptions {
  evalMs: number;
  tickMs: number;
  binMs: number;
}

export const DEFAULT_RUN: RunOptions = { evalMs: 2000, tickMs: 250, binMs: 500 };

export interface EventResult {
  label: string;
  atS: number;
  graceful: boolean;
  broken: number;
  /** Connections open when the event started. */
  openAtStart: number;
  lostInWindowPackets: number;
  packets: number;
  extraHopPackets: number;
  extraHopsPerPacket: number;
  convergeS: number;
  convergeCensored: boolean;
  statePerFlow: number;
  stateBytesPerFlow: number;
}

export interface RunResult {
  strategy: string;
  follows: string;
  scenario: string;
  runMs: number;
  heapMB: number;
  arrayBuffersMB: number;
  rssMB: number;
  connections: number;
  maxOpen: number;
  refusedAtOpen: number;
  synLostInWindow: number;
  events: EventResult[];
  total: { broken: number; packets: number; extraHopPackets: number; extraHopsPerPacket: number; lostInWindowPackets: number; statePerFlow: number; stateBytesPerFlow: number; worstConvergeS: number };
  series: { binS: number; packets: number[]; extraHopPackets: number[]; broken: number[] };
}

class Bins {
  readonly v: Float64Array;
  private readonly d: Float64Array;
  constructor(
    readonly n: number,
    readonly w: number,
  ) {
    this.v = new Float64Array(n + 1);
    this.d = new Float64Array(n + 2);
  }
  /** Adds rate r (per ms) over [a, b). */
  add(a: number, b: number, r: number): void {
    if (!(b > a) || r === 0) return;
    const w = this.w;
    const ia = Math.min(this.n, Math.floor(a / w));
    const ib = Math.min(this.n, Math.floor(b / w));
    if (ia === ib) {
      this.v[ia]! += r * (b - a);
      return;
    }
    this.v[ia]! += r * ((ia + 1) * w - a);
    this.v[ib]! += r * (b - ib * w);
    this.d[ia + 1]! += r * w;
    this.d[ib]! -= r * w;
  }
  finish(): Float64Array {
    let acc = 0;
    for (let i = 0; i <= this.n; i++) {
      acc += this.d[i]!;
      this.v[i]! += acc;
    }
    return this.v;
  }
}

export function run(strategy: Strategy, trace: Trace, sc: Scenario, o: RunOptions = DEFAULT_RUN): RunResult {
  const t0 = performance.now();
  const n = trace.n;
  const T = trace.params.durationS * 1000;
  const env: Env = {
    trace,
    fds: sc.fds,
    allFds: sc.allFds,
    backends: sc.backends,
    allBackends: sc.allBackends,
    backendOf: new Int32Array(n).fill(-1),
    alive: new Uint8Array(n),
  };
  strategy.init(env);
  const steps: { t: number; ev: number; step: Step }[] = [];
  sc.events.forEach((e, ev) => e.steps.forEach((s) => steps.push({ t: s.atS * 1000, ev, step: s.step })));
  steps.sort((a, b) => a.t - b.t);
  const evStart = sc.events.map((e) => e.atS * 1000);
  const nEv = sc.events.length;
  const broken = new Float64Array(nEv);
  const openAtStart = new Float64Array(nEv);
  const converge = new Float64Array(nEv);
  const censored = new Uint8Array(nEv);
  const stateSum = new Float64Array(nEv);
  const stateBytes = new Float64Array(nEv);
  const stateN = new Float64Array(nEv);
  let stateAll = 0;
  let stateBytesAll = 0;
  let stateAllN = 0;

  const byEnd = new Int32Array(n);
  for (let i = 0; i < n; i++) byEnd[i] = i;
  byEnd.sort((a, b) => trace.end[a]! - trace.end[b]!);
  const aliveList = new Int32Array(n);
  const pos = new Int32Array(n).fill(-1);
  let nAlive = 0;
  let maxOpen = 0;
  const lastT = new Float64Array(n);
  const hops = new Int8Array(n); // -1: lost (in a failure window)
  const hopEv = new Int16Array(n).fill(-1);
  const load = new Int32Array(sc.allBackends.length);
  const draining = new Set<number>();
  const nb = Math.ceil(T / o.binMs);
  const pk = new Bins(nb, o.binMs);
  const hopPk = new Bins(nb, o.binMs);
  const lostPk = new Bins(nb, o.binMs);
  const brokenBins = new Float64Array(nb + 1);
  let refused = 0;
  let synLost = 0;
  let ev = -1; // event in force

  const rate = (f: number): number => trace.packets[f]! / Math.max(1, trace.end[f]! - trace.start[f]!);
  const account = (f: number, t: number): void => {
    const a = Math.max(0, lastT[f]!);
    const b = Math.min(t, trace.end[f]!, T);
    if (b > a) {
      const r = rate(f);
      if (hops[f]! < 0) lostPk.add(a, b, r);
      else {
        pk.add(a, b, r);
        if (hops[f]! > 0) hopPk.add(a, b, r * hops[f]!);
      }
    }
    lastT[f] = t;
  };
  const endHops = (f: number, t: number): void => {
    const e = hopEv[f]!;
    if (e >= 0) {
      converge[e] = Math.max(converge[e]!, Math.min(t, T) - evStart[e]!);
      hopEv[f] = -1;
    }
  };
  const removeAlive = (f: number): void => {
    const p = pos[f]!;
    const last = aliveList[--nAlive]!;
    aliveList[p] = last;
    pos[last] = p;
    pos[f] = -1;
    env.alive[f] = 0;
  };
  const release = (f: number, t: number): void => {
    const b = env.backendOf[f]!;
    load[b]!--;
    if (load[b] === 0 && draining.has(b)) {
      draining.delete(b);
      strategy.step({ kind: 'backend-remove', backend: sc.allBackends[b]! }, t);
    }
  };
  const breakFlow = (f: number, t: number): void => {
    account(f, t);
    endHops(f, t);
    removeAlive(f);
    strategy.close(f, t, true);
    broken[Math.max(0, ev)]!++;
    brokenBins[Math.min(nb, Math.floor(t / o.binMs))]!++;
    release(f, t);
  };
  const evaluate = (t: number): void => {
    // Iterate backwards: a broken connection is swapped out of the list.
    for (let i = nAlive - 1; i >= 0; i--) {
      const f = aliveList[i]!;
      account(f, t);
      const r = strategy.route(f, t);
      if (r === LOST_IN_WINDOW) {
        hops[f] = -1;
        continue;
      }
      if (r === DROPPED || r !== env.backendOf[f]) {
        breakFlow(f, t);
        continue;
      }
      const h = strategy.hops;
      if (h > 0 && hops[f]! <= 0 && hopEv[f]! < 0 && ev >= 0) hopEv[f] = ev;
      if (h === 0 && hops[f]! > 0) endHops(f, t);
      hops[f] = h;
    }
    const s = strategy.state();
    const per = nAlive > 0 ? s.entries / nAlive : 0;
    const perB = nAlive > 0 ? s.bytes / nAlive : 0;
    stateAll += per;
    stateBytesAll += perB;
    stateAllN++;
    if (ev >= 0) {
      stateSum[ev]! += per;
      stateBytes[ev]! += perB;
      stateN[ev]!++;
    }
  };

  let nextOpen = 0;
  let nextClose = 0;
  let nextStep = 0;
  let nextTick = 0;
  let nextEval = o.evalMs;
  for (;;) {
    const tOpen = nextOpen < n ? Math.max(0, trace.start[nextOpen]!) : Infinity;
    const tClose = nextClose < n ? trace.end[byEnd[nextClose]!]! : Infinity;
    const tStep = nextStep < steps.length ? steps[nextStep]!.t : Infinity;
    const t = Math.min(tOpen, tClose, tStep, nextTick, nextEval);
    if (t >= T) break;
    if (t === tClose) {
      const f = byEnd[nextClose++]!;
      if (env.alive[f]) {
        account(f, t);
        endHops(f, t);
        removeAlive(f);
        strategy.close(f, t, false);
        release(f, t);
      }
    } else if (t === tStep) {
      const s = steps[nextStep++]!;
      if (s.ev !== ev && evStart[s.ev] === s.t) {
        ev = s.ev;
        openAtStart[ev] = nAlive;
      }
      if (s.step.kind === 'backend-drain') {
        const b = sc.allBackends.indexOf(s.step.backend);
        draining.add(b);
        strategy.step(s.step, t);
        if (load[b] === 0) release2(b, t);
      } else strategy.step(s.step, t);
      evaluate(t);
    } else if (t === tOpen) {
      const f = nextOpen++;
      const r = strategy.open(f, t);
      if (r === LOST_IN_WINDOW) {
        synLost++;
        continue;
      }
      if (r < 0) {
        refused++;
        broken[Math.max(0, ev)]!++;
        continue;
      }
      env.backendOf[f] = r;
      env.alive[f] = 1;
      load[r]!++;
      pos[f] = nAlive;
      aliveList[nAlive++] = f;
      if (nAlive > maxOpen) maxOpen = nAlive;
      lastT[f] = t;
      hops[f] = strategy.hops;
      if (strategy.hops > 0 && ev >= 0) hopEv[f] = ev;
    } else if (t === nextTick) {
      strategy.tick(t);
      nextTick += o.tickMs;
    } else {
      evaluate(t);
      nextEval += o.evalMs;
    }
  }
  function release2(b: number, t: number): void {
    draining.delete(b);
    strategy.step({ kind: 'backend-remove', backend: sc.allBackends[b]! }, t);
  }
  for (let i = 0; i < nAlive; i++) {
    const f = aliveList[i]!;
    account(f, T);
    const e = hopEv[f]!;
    if (e >= 0) {
      converge[e] = Math.max(converge[e]!, T - evStart[e]!);
      censored[e] = 1;
    }
  }
  const P = pk.finish();
  const H = hopPk.finish();
  const L = lostPk.finish();
  const sum = (v: Float64Array, a: number, b: number): number => {
    let s = 0;
    for (let i = Math.floor(a / o.binMs); i < Math.min(v.length, Math.floor(b / o.binMs)); i++) s += v[i]!;
    return s;
  };
  const events: EventResult[] = sc.events.map((e, k) => {
    const a = evStart[k]!;
    const b = k + 1 < nEv ? evStart[k + 1]! : T;
    const packets = sum(P, a, b);
    const extra = sum(H, a, b);
    return {
      label: e.label,
      atS: e.atS,
      graceful: e.graceful,
      broken: broken[k]!,
      openAtStart: openAtStart[k]!,
      lostInWindowPackets: Math.round(sum(L, a, b)),
      packets: Math.round(packets),
      extraHopPackets: Math.round(extra),
      extraHopsPerPacket: packets > 0 ? extra / packets : 0,
      convergeS: converge[k]! / 1000,
      convergeCensored: censored[k] === 1,
      statePerFlow: stateN[k]! > 0 ? stateSum[k]! / stateN[k]! : 0,
      stateBytesPerFlow: stateN[k]! > 0 ? stateBytes[k]! / stateN[k]! : 0,
    };
  });
  const totalP = sum(P, 0, T);
  const totalH = sum(H, 0, T);
  const mem = process.memoryUsage();
  const result: RunResult = {
    strategy: strategy.name,
    follows: strategy.follows,
    scenario: sc.name,
    runMs: performance.now() - t0,
    heapMB: mem.heapUsed / 2 ** 20,
    arrayBuffersMB: mem.arrayBuffers / 2 ** 20,
    rssMB: mem.rss / 2 ** 20,
    connections: n,
    maxOpen,
    refusedAtOpen: refused,
    synLostInWindow: synLost,
    events,
    total: {
      broken: events.reduce((s, e) => s + e.broken, 0),
      packets: Math.round(totalP),
      extraHopPackets: Math.round(totalH),
      extraHopsPerPacket: totalP > 0 ? totalH / totalP : 0,
      lostInWindowPackets: Math.round(sum(L, 0, T)),
      statePerFlow: stateAllN > 0 ? stateAll / stateAllN : 0,
      stateBytesPerFlow: stateAllN > 0 ? stateBytesAll / stateAllN : 0,
      worstConvergeS: Math.max(0, ...events.map((e) => e.convergeS)),
    },
    series: { binS: o.binMs / 1000, packets: Array.from(P.subarray(0, nb), Math.round), extraHopPackets: Array.from(H.subarray(0, nb), Math.round), broken: Array.from(brokenBins.subarray(0, nb)) },
  };
  strategy.dispose?.();
  return result;
}
