/**
 * The traffic verifier: pure bookkeeping, no I/O, no clock (every time is
 * passed in), so it is unit-testable on crafted sequences.
 *
 * Per flow it keeps two bitmaps over the sequence space (sent, echoed) and a
 * few numeric columns, all in typed arrays grown by doubling; 1000 flows x
 * 1000 packets cost 2 x 125 KB of bitmaps, no objects per packet or flow.
 * The bitmaps are paged: a page covers min(packetsPerFlow rounded up to a
 * power of two, 65536) sequence numbers and is taken from a shared store the
 * first time a flow sends into it, so a huge packetsPerFlow (a run bounded by
 * time instead) costs only what is actually sent.
 *
 * Definitions (also in docs/traffic.md):
 *   lost       = sent but never echoed (at report time: after the drain)
 *   duplicated = echoes of a (flow, seq) beyond the first
 *   reordered  = first echoes whose seq is lower than the highest seq already
 *                echoed in that flow (duplicates are not also counted here)
 *   malformed  = replies that could not be matched to a sent packet, by kind
 * Latency (echo time - send time carried in the payload) goes into one
 * HdrHistogram in microseconds; per flow only mean and max are kept.
 */
import { build, type Histogram } from 'hdr-histogram-js';
import { BatonError, ErrorCode } from '../shared/errors.js';

export const FlowKind = { TCP: 0, UDP: 1 } as const;
export type FlowKind = (typeof FlowKind)[keyof typeof FlowKind];

/** What recordEcho made of an echo. */
export const Echo = {
  FIRST: 0, // first echo of a sent packet
  DUPLICATE: 1,
  UNKNOWN: 2, // no such flow, seq out of range, or never sent (counted as malformed unknown_flow)
} as const;
export type Echo = (typeof Echo)[keyof typeof Echo];

export const Malformed = {
  BAD_ENCAP: 0, // the Geneve frame did not decode (or wrong VNI)
  BAD_PACKET: 1, // inner IPv4/TCP/UDP malformed (other than a checksum)
  BAD_CHECKSUM: 2, // IPv4 header or TCP/UDP checksum wrong
  UNKNOWN_FLOW: 3, // addresses or payload name no flow / packet we sent
  WRONG_ADDRESS: 4, // payload names flow F but the packet's addresses/protocol are another flow's
  BAD_PAYLOAD: 5, // payload header missing where one is required, or padding corrupted
} as const;
export type Malformed = (typeof Malformed)[keyof typeof Malformed];
const MALFORMED_KEYS = ['badEncap', 'badPacket', 'badChecksum', 'unknownFlow', 'wrongAddress', 'badPayload'] as const;

/** Flow outcome bits. */
export const FlowStatus = {
  COMPLETED: 1, // TCP: FIN-ACK received; UDP: all datagrams sent
  HANDSHAKE_FAILED: 2, // TCP: no SYN-ACK after all retries
  FIN_UNANSWERED: 4, // TCP: no FIN-ACK after all retries / by the end of the drain
  RESET: 8, // TCP: an RST came back
} as const;

export interface VerifierOptions {
  /** Sequence numbers per flow are 0 .. packetsPerFlow-1. */
  packetsPerFlow: number;
  /** Initial flow capacity (grows by doubling). Default 64. */
  initialFlows?: number;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export interface FlowReport {
  flow: number;
  kind: 'tcp' | 'udp';
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  reordered: number;
  synRetries: number;
  finRetries: number;
  status: 'completed' | 'handshake_failed' | 'fin_unanswered' | 'reset' | 'open';
  latencyMeanMs: number;
  latencyMaxMs: number;
}

export interface MalformedReport {
  badEncap: number;
  badPacket: number;
  badChecksum: number;
  unknownFlow: number;
  wrongAddress: number;
  badPayload: number;
  total: number;
}

export interface VerifierReport {
  /** lost, duplicated, malformed, failed handshakes, unanswered FINs and resets are all 0. */
  ok: boolean;
  flows: {
    total: number;
    tcp: number;
    udp: number;
    completed: number;
    handshakeFailed: number;
    finUnanswered: number;
    reset: number;
  };
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  reordered: number;
  synRetries: number;
  finRetries: number;
  /** Data packets per second between the first and the last send / first and last echo. */
  sendPps: number;
  recvPps: number;
  latencyMs: LatencySummary;
  malformed: MalformedReport;
  /** One row per flow, in flow-id order, at most `maxFlowRows` (see perFlowTruncated). */
  perFlow: FlowReport[];
  perFlowTruncated: boolean;
}

function bad(field: string, value: unknown, why: string): never {
  throw new BatonError(ErrorCode.BAD_ARGUMENT, `Verifier: ${field} ${why} (got ${String(value)})`, { field, value });
}

function grow<T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(a: T, n: number, fill = 0): T {
  const b = new (a.constructor as new (n: number) => T)(n);
  b.set(a);
  if (fill !== 0) b.fill(fill, a.length);
  return b;
}

/** Events per second over [first, last] ms: (n - 1) intervals in the span; 0 if the span is empty. */
function ratePerSec(n: number, firstMs: number, lastMs: number): number {
  const span = lastMs - firstMs;
  return n >= 2 && span > 0 ? ((n - 1) * 1000) / span : 0;
}

export class Verifier {
  readonly packetsPerFlow: number;
  private readonly pageShift: number; // log2(sequence numbers per page)
  private readonly pageMask: number;
  private readonly pageWords: number; // words per bitmap page
  private readonly pagesPerFlow: number;
  private pageOf: Int32Array; // [flow * pagesPerFlow + page] -> page id in the store, -1 = none yet
  private pageCap: number;
  private pagesUsed = 0;
  private cap: number;
  private n = 0;
  private bits: Uint32Array; // page id p: sent words at p * 2 * pageWords, echoed words right after
  private kind: Uint8Array;
  private status: Uint8Array;
  private fSent: Uint32Array;
  private fRecv: Uint32Array;
  private fDup: Uint32Array;
  private fReord: Uint32Array;
  private fHigh: Int32Array;
  private fSyn: Uint32Array;
  private fFin: Uint32Array;
  private fLatSumUs: Float64Array; // integer-valued sums of microseconds
  private fLatMaxUs: Float64Array;
  private readonly hist: Histogram;
  private readonly malformed = new Float64Array(MALFORMED_KEYS.length);
  private totSent = 0;
  private totRecv = 0;
  private totDup = 0;
  private totReord = 0;
  private firstSend = -1;
  private lastSend = -1;
  private firstRecv = -1;
  private lastRecv = -1;

  constructor(opts: VerifierOptions) {
    const ppf = opts.packetsPerFlow;
    if (!Number.isInteger(ppf) || ppf < 0 || ppf > 0x7fffffff) bad('packetsPerFlow', ppf, 'must be an integer in 0..2^31-1');
    const init = opts.initialFlows ?? 64;
    if (!Number.isInteger(init) || init < 1) bad('initialFlows', init, 'must be a positive integer');
    this.packetsPerFlow = ppf;
    let shift = 5;
    while (shift < 16 && 1 << shift < ppf) shift++;
    this.pageShift = shift;
    this.pageMask = (1 << shift) - 1;
    this.pageWords = 1 << (shift - 5);
    this.pagesPerFlow = Math.ceil(ppf / (1 << shift));
    this.cap = init;
    this.pageOf = new Int32Array(init * this.pagesPerFlow).fill(-1);
    // Small pages (short flows): one per flow up front; 16 KB pages: start with 64.
    this.pageCap = Math.max(1, Math.min(init, (1 << 20) / (8 * this.pageWords)));
    this.bits = new Uint32Array(this.pageCap * 2 * this.pageWords);
    this.kind = new Uint8Array(init);
    this.status = new Uint8Array(init);
    this.fSent = new Uint32Array(init);
    this.fRecv = new Uint32Array(init);
    this.fDup = new Uint32Array(init);
    this.fReord = new Uint32Array(init);
    this.fHigh = new Int32Array(init).fill(-1);
    this.fSyn = new Uint32Array(init);
    this.fFin = new Uint32Array(init);
    this.fLatSumUs = new Float64Array(init);
    this.fLatMaxUs = new Float64Array(init);
    // 1 us .. 60 s at 3 significant digits; autoResize keeps larger values instead of throwing.
    this.hist = build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
  }

  get flowCount(): number {
    return this.n;
  }

  /** Registers the next flow and returns its id (0, 1, 2, ...). */
  addFlow(kind: FlowKind): number {
    if (this.n === this.cap) this.growTo(this.cap * 2);
    const f = this.n++;
    this.kind[f] = kind;
    return f;
  }

  kindOf(flow: number): FlowKind {
    return this.kind[flow] as FlowKind;
  }

  /** Records a data packet as sent. False (nothing recorded) for an unknown flow, bad seq or a second send of the same seq. */
  recordSent(flow: number, seq: number, nowMs: number): boolean {
    if (flow < 0 || flow >= this.n || seq < 0 || seq >= this.packetsPerFlow) return false;
    const pi = flow * this.pagesPerFlow + (seq >>> this.pageShift);
    let page = this.pageOf[pi]!;
    if (page < 0) page = this.newPage(pi);
    const i = page * 2 * this.pageWords + ((seq & this.pageMask) >>> 5);
    const bit = 1 << (seq & 31);
    if ((this.bits[i]! & bit) !== 0) return false;
    this.bits[i] = this.bits[i]! | bit;
    this.fSent[flow]!++;
    this.totSent++;
    if (this.firstSend < 0) this.firstSend = nowMs;
    this.lastSend = nowMs;
    return true;
  }

  /** Records an echo of (flow, seq) that carried send time `sentAtMs`, received at `nowMs`. */
  recordEcho(flow: number, seq: number, sentAtMs: number, nowMs: number): Echo {
    const lat = nowMs - sentAtMs;
    // NaN or a clock oddity counts as 0.
    return this.recordEchoUs(flow, seq, lat > 0 ? Math.min(Math.round(lat * 1000), 0x3fffffff) : 0, nowMs);
  }

  /**
   * As recordEcho, with the latency already in whole microseconds (>= 0). The
   * generator's per-packet path uses this one: an integer argument is never
   * boxed, a computed double may be.
   */
  recordEchoUs(flow: number, seq: number, latencyUs: number, nowMs: number): Echo {
    if (flow < 0 || flow >= this.n || seq < 0 || seq >= this.packetsPerFlow) {
      this.malformed[Malformed.UNKNOWN_FLOW]!++;
      return Echo.UNKNOWN;
    }
    const i = this.wordIndex(flow, seq);
    const bit = 1 << (seq & 31);
    if (i < 0 || (this.bits[i]! & bit) === 0) {
      this.malformed[Malformed.UNKNOWN_FLOW]!++;
      return Echo.UNKNOWN;
    }
    const r = i + this.pageWords; // the echoed bitmap of the same page
    if ((this.bits[r]! & bit) !== 0) {
      this.fDup[flow]!++;
      this.totDup++;
      return Echo.DUPLICATE;
    }
    this.bits[r] = this.bits[r]! | bit;
    this.fRecv[flow]!++;
    this.totRecv++;
    if (seq < this.fHigh[flow]!) {
      this.fReord[flow]!++;
      this.totReord++;
    } else {
      this.fHigh[flow] = seq;
    }
    this.hist.recordValue(latencyUs);
    this.fLatSumUs[flow]! += latencyUs;
    if (latencyUs > this.fLatMaxUs[flow]!) this.fLatMaxUs[flow] = latencyUs;
    if (this.firstRecv < 0) this.firstRecv = nowMs;
    this.lastRecv = nowMs;
    return Echo.FIRST;
  }

  isSent(flow: number, seq: number): boolean {
    if (flow < 0 || flow >= this.n || seq < 0 || seq >= this.packetsPerFlow) return false;
    const i = this.wordIndex(flow, seq);
    return i >= 0 && (this.bits[i]! & (1 << (seq & 31))) !== 0;
  }

  isEchoed(flow: number, seq: number): boolean {
    if (flow < 0 || flow >= this.n || seq < 0 || seq >= this.packetsPerFlow) return false;
    const i = this.wordIndex(flow, seq);
    return i >= 0 && (this.bits[i + this.pageWords]! & (1 << (seq & 31))) !== 0;
  }

  recordMalformed(kind: Malformed): void {
    this.malformed[kind]!++; // a Malformed value: one slot each
  }

  /** A SYN sent again for `flow` (an unknown flow is ignored, as recordSent does). */
  synRetry(flow: number): void {
    if (flow >= 0 && flow < this.n) this.fSyn[flow]!++;
  }
  /** A FIN sent again for `flow` (an unknown flow is ignored). */
  finRetry(flow: number): void {
    if (flow >= 0 && flow < this.n) this.fFin[flow]!++;
  }
  /** Sets a FlowStatus bit on a flow. */
  markFlow(flow: number, status: number): void {
    this.status[flow] = this.status[flow]! | status;
  }
  flowStatus(flow: number): number {
    return this.status[flow]!;
  }

  get sent(): number {
    return this.totSent;
  }
  get received(): number {
    return this.totRecv;
  }
  /** Data packets sent and not (yet) echoed. */
  get outstanding(): number {
    return this.totSent - this.totRecv;
  }
  get duplicated(): number {
    return this.totDup;
  }
  get malformedTotal(): number {
    let s = 0;
    for (let i = 0; i < this.malformed.length; i++) s += this.malformed[i]!;
    return s;
  }

  flowReport(f: number): FlowReport {
    const st = this.status[f]!;
    const recv = this.fRecv[f]!;
    return {
      flow: f,
      kind: this.kind[f] === FlowKind.TCP ? 'tcp' : 'udp',
      sent: this.fSent[f]!,
      received: recv,
      lost: this.fSent[f]! - recv,
      duplicated: this.fDup[f]!,
      reordered: this.fReord[f]!,
      synRetries: this.fSyn[f]!,
      finRetries: this.fFin[f]!,
      // Worst outcome wins.
      status:
        st & FlowStatus.RESET
          ? 'reset'
          : st & FlowStatus.HANDSHAKE_FAILED
            ? 'handshake_failed'
            : st & FlowStatus.FIN_UNANSWERED
              ? 'fin_unanswered'
              : st & FlowStatus.COMPLETED
                ? 'completed'
                : 'open',
      latencyMeanMs: recv > 0 ? this.fLatSumUs[f]! / recv / 1000 : 0,
      latencyMaxMs: this.fLatMaxUs[f]! / 1000,
    };
  }

  latency(): LatencySummary {
    const h = this.hist;
    const count = h.totalCount;
    if (count === 0) return { count: 0, p50: 0, p99: 0, p999: 0, max: 0, mean: 0 };
    return {
      count,
      p50: h.getValueAtPercentile(50) / 1000,
      p99: h.getValueAtPercentile(99) / 1000,
      p999: h.getValueAtPercentile(99.9) / 1000,
      max: h.maxValue / 1000,
      mean: h.mean / 1000,
    };
  }

  report(opts: { maxFlowRows?: number } = {}): VerifierReport {
    const maxRows = opts.maxFlowRows ?? 10_000;
    const flows = { total: this.n, tcp: 0, udp: 0, completed: 0, handshakeFailed: 0, finUnanswered: 0, reset: 0 };
    let syn = 0;
    let fin = 0;
    for (let f = 0; f < this.n; f++) {
      if (this.kind[f] === FlowKind.TCP) flows.tcp++;
      else flows.udp++;
      const st = this.status[f]!;
      if (st & FlowStatus.COMPLETED) flows.completed++;
      if (st & FlowStatus.HANDSHAKE_FAILED) flows.handshakeFailed++;
      if (st & FlowStatus.FIN_UNANSWERED) flows.finUnanswered++;
      if (st & FlowStatus.RESET) flows.reset++;
      syn += this.fSyn[f]!;
      fin += this.fFin[f]!;
    }
    const m = this.malformed;
    const malformed: MalformedReport = {
      badEncap: m[Malformed.BAD_ENCAP]!,
      badPacket: m[Malformed.BAD_PACKET]!,
      badChecksum: m[Malformed.BAD_CHECKSUM]!,
      unknownFlow: m[Malformed.UNKNOWN_FLOW]!,
      wrongAddress: m[Malformed.WRONG_ADDRESS]!,
      badPayload: m[Malformed.BAD_PAYLOAD]!,
      total: this.malformedTotal,
    };
    const lost = this.totSent - this.totRecv;
    const perFlow: FlowReport[] = [];
    const rows = Math.min(this.n, Math.max(0, maxRows));
    for (let f = 0; f < rows; f++) perFlow.push(this.flowReport(f));
    return {
      ok:
        lost === 0 &&
        this.totDup === 0 &&
        malformed.total === 0 &&
        flows.handshakeFailed === 0 &&
        flows.finUnanswered === 0 &&
        flows.reset === 0,
      flows,
      sent: this.totSent,
      received: this.totRecv,
      lost,
      duplicated: this.totDup,
      reordered: this.totReord,
      synRetries: syn,
      finRetries: fin,
      sendPps: ratePerSec(this.totSent, this.firstSend, this.lastSend),
      recvPps: ratePerSec(this.totRecv, this.firstRecv, this.lastRecv),
      latencyMs: this.latency(),
      malformed,
      perFlow,
      perFlowTruncated: rows < this.n,
    };
  }

  /** Index of the sent-bitmap word holding (flow, seq) (range already checked), or -1 if its page was never used. */
  private wordIndex(flow: number, seq: number): number {
    const page = this.pageOf[flow * this.pagesPerFlow + (seq >>> this.pageShift)]!;
    return page < 0 ? -1 : page * 2 * this.pageWords + ((seq & this.pageMask) >>> 5);
  }

  /** Takes the next page from the store (doubling it when full). Once per page, not per packet. */
  private newPage(pi: number): number {
    if (this.pagesUsed === this.pageCap) {
      const cap = this.pageCap * 2;
      const b = new Uint32Array(cap * 2 * this.pageWords);
      b.set(this.bits);
      this.bits = b;
      this.pageCap = cap;
    }
    const p = this.pagesUsed++;
    this.pageOf[pi] = p;
    return p;
  }

  private growTo(cap: number): void {
    const po = new Int32Array(cap * this.pagesPerFlow).fill(-1);
    po.set(this.pageOf);
    this.pageOf = po;
    this.kind = grow(this.kind, cap);
    this.status = grow(this.status, cap);
    this.fSent = grow(this.fSent, cap);
    this.fRecv = grow(this.fRecv, cap);
    this.fDup = grow(this.fDup, cap);
    this.fReord = grow(this.fReord, cap);
    this.fHigh = grow(this.fHigh, cap, -1);
    this.fSyn = grow(this.fSyn, cap);
    this.fFin = grow(this.fFin, cap);
    this.fLatSumUs = grow(this.fLatSumUs, cap);
    this.fLatMaxUs = grow(this.fLatMaxUs, cap);
    this.cap = cap;
  }
}
