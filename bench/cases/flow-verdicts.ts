/**
 * Per-verdict cost of an FD's per-frame path, driven by the packet fixture
 * table (test/fixtures/flow-handler-cases.ts): each row's packet, in the
 * state the row sets up, is pushed through the real path (Datapath decode
 * -> hop limit -> FlowHandler -> lane -> encode -> flush, on a socket that
 * only counts) again and again; the result is ns per frame.
 *
 * - Frames go 32 to a datagram, as the hash tier batches them, unless a row's
 *   frame ends the datagram's walk (a malformed frame) or is not a frame (a
 *   queue probe): then one per datagram. Which applies is found by a trial
 *   run and said in the note.
 * - A row whose packet creates or ends state (SYN, first UDP datagram, FIN,
 *   port reuse) would take the established path when repeated, so each
 *   repetition gets its own connection (a variant: another client port):
 *   before each sample a fresh range of 2,048 is set up untimed on the
 *   row's fixture, then one timed pass over it (twice as many samples as
 *   the other rows: each is one short pass). Every fixture's flow table is
 *   written once before setup (FdFixture, bench mode): a first pass over
 *   fresh memory is page faults, ~10x the steady per-SYN cost here, which a
 *   real FD pays once, while its table is young.
 * - Every sample is checked afterwards: the counters the row names moved by
 *   exactly (frames pushed) x (the row's count), so a time is never reported
 *   for another outcome than the row's.
 * - Every row runs once, briefly, before any is measured: the JIT has seen
 *   every path (and its type feedback is as mixed as in an FD that sees all
 *   kinds of frames) by the time the first row is timed.
 *
 * Baseline, measured in the same run: what every frame that reaches the
 * handler costs at least — copy the established-flow row's datagram
 * (32 frames), decodeEncap each frame and parseIPv4 it (checksums
 * verified), nothing else. One baseline for all rows, so the ratios compare
 * rows with each other: ratio = baseline / value (a time, bench/lib.ts), so
 * 0.25 = the row costs four times that floor; a frame dropped before it is
 * parsed can cost less than the floor (ratio > 1). The note gives each row
 * against the established-flow row too. The per-verdict lines are the
 * medians over the rows of that verdict.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import type { BenchCase, BenchResult, Spread } from '../lib.js';
import { consume, calibrate, sampleTimeMs, scaleSpread } from '../lib.js';
import { decodeEncap, EncapMeta } from '../../shared/encap/geneve.js';
import { parseIPv4 } from '../../shared/packet/parse.js';
import { PacketMeta } from '../../shared/packet/meta.js';
import { Reject } from '../../shared/packet/reject.js';
import { FLOW_CASES, Flows, HINT_NONE, datagram, prepare, type FdFixture, type FixtureOptions, type FlowCase } from '../../test/fixtures/flow-handler-cases.js';

/** Frames per datagram where a row allows it. */
const BATCH = 32;
/** Connections set up per sample for rows that create or end state (a pass of a few ms). */
const VARIANTS = 2048;
type Sampling = { timeMs: number; minSamples: number; warmupMs: number };
const SAMPLE: Sampling = { timeMs: 60, minSamples: 10, warmupMs: 10 };
/** The warm-up pass over every row. */
const WARM: Sampling = { timeMs: 0, minSamples: 2, warmupMs: 0 };
const ESTABLISHED = 'an established client segment is rewritten to svc-1';

/** A full GC, untimed, before each sample: fixtures for the create/end rows are garbage a sample later. */
function getGc(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}
const gc = getGc();

/**
 * The row's fixture options, smaller where the row does not care (a linger
 * ring of 4,096 instead of 65,536, four TX buffers): less memory per
 * fixture, less to collect. `flows`: table room the bench needs.
 */
function benchOptions(c: FlowCase, flows = 0): FixtureOptions {
  const o: FixtureOptions = { lingerCapacity: 4096, poolBuffers: 4, ...c.options };
  if (flows > (o.maxFlows ?? 4096)) o.maxFlows = flows;
  return o;
}

/** Counter deltas since `before`, for the row's named counters. */
function deltas(fx: FdFixture, before: Record<string, number>, names: readonly string[]): Record<string, number> {
  const now = fx.counters();
  return Object.fromEntries(names.map((n) => [n, (now[n] ?? 0) - (before[n] ?? 0)]));
}

function checkMoved(c: FlowCase, fx: FdFixture, before: Record<string, number>, times: number): void {
  const names = Object.keys(c.expect.counters);
  const got = deltas(fx, before, names);
  for (const n of names) {
    const want = c.expect.counters[n]! * times;
    if (got[n] !== want) throw new Error(`flow-verdicts bench: "${c.name}": ${n} moved ${got[n]}, expected ${want} (${times} x the row)`);
  }
}

/** The row's datagram bytes for variant v (frame-path rows with one datagram). */
function datagramOf(c: FlowCase, v: number): Uint8Array {
  const input = c.input(new Flows(v));
  if (!('datagrams' in input) || input.datagrams.length !== 1) throw new Error(`flow-verdicts bench: "${c.name}" is not one datagram`);
  return input.datagrams[0]!;
}

/** Frames (or handler calls) per row repetition: what one "packet" of the row is. */
function framesOfRow(c: FlowCase): number {
  const input = c.input(new Flows(0));
  return 'packet' in input ? 1 : c.expect.verdicts.length || 1;
}

/** ns per frame of copy + decodeEncap + parseIPv4 over `unit` (the floor). */
function floorNs(unit: Uint8Array, frames: number, sampling: Sampling): Spread {
  const scratch = new Uint8Array(unit.length);
  const em = new EncapMeta();
  const pm = new PacketMeta();
  const fn = (n: number): void => {
    let acc = 0;
    for (let i = 0; i < n; i++) {
      scratch.set(unit);
      let off = 0;
      while (off < scratch.length) {
        const r = decodeEncap(scratch, off, scratch.length - off, em);
        if (r !== Reject.OK) {
          acc += r;
          break;
        }
        acc += parseIPv4(scratch, em.innerOffset, em.innerLength, pm, true);
        off += em.frameLength;
      }
    }
    consume(acc);
  };
  const n = calibrate(fn, 5);
  return scaleSpread(sampleTimeMs(() => fn(n), sampling), 1e6 / (n * frames));
}

interface Measured {
  row: FlowCase;
  ns: Spread;
  perDatagram: number;
}

/** A row whose packet leaves the state as it found it: the same bytes again and again on one fixture. */
function measureRepeatable(c: FlowCase, sampling: Sampling): Measured {
  const input = c.input(new Flows(0));
  if ('packet' in input) {
    // Handler level: FlowHandler.handle() on a fresh copy each time.
    const fx = prepare(c, 'bench', [0], benchOptions(c));
    const src = input.packet;
    const len = input.len ?? src.length;
    const hint = input.hint ?? HINT_NONE;
    const shed = input.shed ?? false;
    const scratch = new Uint8Array(src.length);
    const h = fx.handler;
    let calls = 0;
    const before = fx.counters();
    const fn = (n: number): void => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        scratch.set(src);
        acc += h.handle(scratch, 0, len, hint, shed);
      }
      calls += n;
      consume(acc);
    };
    const n = calibrate(fn, 5);
    gc();
    const ns = scaleSpread(sampleTimeMs(() => fn(n), sampling), 1e6 / n);
    checkMoved(c, fx, before, calls);
    return { row: c, ns, perDatagram: 1 };
  }
  const one = datagramOf(c, 0);
  const frames = framesOfRow(c);
  // Trial: do BATCH copies in one datagram give BATCH x the row's outcome? (A malformed frame ends the walk; a probe is no frame.)
  let copies = BATCH;
  {
    const fx = prepare(c, 'bench', [0], benchOptions(c));
    const before = fx.counters();
    fx.push(datagram(...Array.from({ length: BATCH }, () => one)));
    try {
      checkMoved(c, fx, before, BATCH);
    } catch {
      copies = 1;
    }
  }
  const unit = copies === 1 ? one : datagram(...Array.from({ length: copies }, () => one));
  const fx = prepare(c, 'bench', [0], benchOptions(c));
  const scratch = new Uint8Array(unit.length);
  let pushed = 0;
  const before = fx.counters();
  const fn = (n: number): void => {
    for (let i = 0; i < n; i++) {
      scratch.set(unit);
      fx.push(scratch);
    }
    pushed += n;
  };
  const n = calibrate(fn, 5);
  gc();
  const ns = scaleSpread(sampleTimeMs(() => fn(n), sampling), 1e6 / (n * copies * frames));
  checkMoved(c, fx, before, pushed * copies);
  return { row: c, ns, perDatagram: copies * frames };
}

/**
 * A row whose packet creates or ends state: one fixture (its table written
 * once up front), and before each sample a fresh range of VARIANTS
 * connections is set up on it, untimed; the sample is one pass over them.
 * Exactly ONCE_SAMPLES samples after 2 warm-up calls, each its own range.
 * No forced GC here: a full GC may drop compiled code (test/helpers/alloc.ts),
 * and the pass after it would be timed half unoptimised.
 */
function measureOnce(c: FlowCase, samples: number): Measured {
  const frames = framesOfRow(c);
  const WARMUP = 2;
  const ranges = samples + WARMUP;
  // Every datagram of every range, built before anything is timed.
  const units: Uint8Array[][] = [];
  for (let r = 0; r < ranges; r++) {
    const u: Uint8Array[] = [];
    for (let v = r * VARIANTS; v < (r + 1) * VARIANTS; v += BATCH) u.push(datagram(...Array.from({ length: BATCH }, (_, i) => datagramOf(c, v + i))));
    units.push(u);
  }
  const scratch = units[0]!.map((u) => new Uint8Array(u.length));
  // Room for every range's entries (up to four per connection: the row's pair and another's) and their lingers.
  const options = { ...benchOptions(c, 4 * ranges * VARIANTS + 64), lingerCapacity: c.options?.lingerCapacity ?? 2 * ranges * VARIANTS };
  const fx = prepare(c, 'bench', [], options);
  let range = -1;
  let before: Record<string, number> = {};
  const verify = (): void => {
    if (range >= 0) checkMoved(c, fx, before, VARIANTS);
  };
  const ms = sampleTimeMs(
    () => {
      const u = units[range]!;
      for (let i = 0; i < u.length; i++) {
        scratch[i]!.set(u[i]!);
        fx.push(scratch[i]!);
      }
    },
    {
      timeMs: 0,
      minSamples: samples,
      warmupMs: 0,
      warmup: WARMUP,
      beforeEach: () => {
        verify();
        if (++range >= ranges) throw new Error(`flow-verdicts bench: "${c.name}": more samples than the ${ranges} connection ranges built`);
        for (let v = range * VARIANTS; v < (range + 1) * VARIANTS; v++) c.setup?.(fx, new Flows(v));
        before = fx.counters();
      },
    },
  );
  verify();
  return { row: c, ns: scaleSpread(ms, 1e6 / (VARIANTS * frames)), perDatagram: BATCH * frames };
}

function nsResult(name: string, ns: Spread, floor: Spread, note: string): BenchResult {
  // A time: ratio = baseline / value, medians (bench/lib.ts contract).
  return {
    name,
    value: ns.median,
    unit: 'ns/frame',
    spread: ns,
    baseline: floor.median,
    baselineSpread: floor,
    baselineName: 'copy + decodeEncap + parseIPv4, established-flow frames',
    ratio: floor.median / ns.median,
    note,
  };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length & 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const VERDICT_ORDER = ['FORWARD', 'REDIRECT', 'DROP', 'none'] as const;
const verdictOf = (c: FlowCase): string => c.expect.verdicts[0] ?? 'none';

const bench: BenchCase = {
  id: 'flow-verdicts',
  title: 'FD per-frame path by verdict (the packet fixture table): ns per frame vs copy + decode + parse',
  async run(progress) {
    const rows = FLOW_CASES.filter((c) => !c.noBench && !c.bug);
    const estRow = rows.find((c) => c.name === ESTABLISHED);
    if (!estRow) throw new Error(`flow-verdicts bench: no row named ${JSON.stringify(ESTABLISHED)}`);
    const measure = (c: FlowCase, s: Sampling): Measured => (c.once ? measureOnce(c, s.minSamples * 2) : measureRepeatable(c, s));
    progress(`warm-up: every row once (${rows.length} rows)`);
    for (const c of rows) measure(c, WARM);
    const estUnit = datagram(...Array.from({ length: BATCH }, () => datagramOf(estRow, 0)));
    progress('baseline: copy + decodeEncap + parseIPv4 of the established-flow datagram');
    const floor = floorNs(estUnit, BATCH, { timeMs: 300, minSamples: 20, warmupMs: 50 });
    const measured: Measured[] = [];
    for (const c of rows) {
      progress(`${verdictOf(c)}: ${c.name}`);
      measured.push(measure(c, SAMPLE));
    }
    const est = measured.find((m) => m.row === estRow)!;
    measured.sort((a, b) => VERDICT_ORDER.indexOf(verdictOf(a.row) as never) - VERDICT_ORDER.indexOf(verdictOf(b.row) as never));

    const out: BenchResult[] = [];
    // Per verdict: the median over its rows (and their floors).
    for (const v of VERDICT_ORDER) {
      const ms = measured.filter((m) => verdictOf(m.row) === v);
      if (ms.length === 0) continue;
      const ns = ms.map((m) => m.ns.median);
      const spread = { min: Math.min(...ns), median: median(ns), max: Math.max(...ns), n: ns.length };
      const label = v === 'none' ? 'dropped before the handler' : v;
      out.push(nsResult(`${label}: median of ${ms.length} rows`, spread, floor, 'spread = min/median/max over the rows (each row its median)'));
    }
    for (const m of measured) {
      const how = m.row.once ? `a new connection per frame, ${m.perDatagram}/datagram` : `${m.perDatagram} frame(s)/datagram`;
      out.push(nsResult(`${verdictOf(m.row)} | ${m.row.name}`, m.ns, floor, `${how}; ${(m.ns.median / est.ns.median).toFixed(2)}x the established-flow row`));
    }
    return out;
  },
};

export default bench;
