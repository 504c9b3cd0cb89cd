import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Verifier, Echo, FlowKind, FlowStatus, Malformed } from '../traffic/verifier.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';

/** Sends seq 0..n-1 of `flow` at 1 ms intervals starting at t0. */
function sendAll(v: Verifier, flow: number, n: number, t0 = 0): void {
  for (let s = 0; s < n; s++) expect(v.recordSent(flow, s, t0 + s)).toBe(true);
}

describe('Verifier: loss, duplicates, reordering', () => {
  const cases: { name: string; sent: number; echoes: number[]; lost: number; dup: number; reord: number }[] = [
    { name: 'all echoed in order', sent: 10, echoes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], lost: 0, dup: 0, reord: 0 },
    { name: 'two lost', sent: 10, echoes: [0, 1, 2, 4, 5, 6, 8, 9], lost: 2, dup: 0, reord: 0 },
    { name: 'nothing echoed', sent: 5, echoes: [], lost: 5, dup: 0, reord: 0 },
    { name: 'one duplicated twice', sent: 4, echoes: [0, 1, 2, 2, 2, 3], lost: 0, dup: 2, reord: 0 },
    { name: 'one swap', sent: 5, echoes: [0, 1, 3, 2, 4], lost: 0, dup: 0, reord: 1 },
    { name: 'fully reversed', sent: 6, echoes: [5, 4, 3, 2, 1, 0], lost: 0, dup: 0, reord: 5 },
    { name: 'late duplicate of a low seq is a duplicate, not a reorder', sent: 4, echoes: [0, 1, 2, 3, 0], lost: 0, dup: 1, reord: 0 },
    { name: 'loss + dup + reorder together', sent: 8, echoes: [1, 0, 0, 3, 2, 2, 7, 5], lost: 2, dup: 2, reord: 3 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const v = new Verifier({ packetsPerFlow: 16 });
      const f = v.addFlow(FlowKind.UDP);
      sendAll(v, f, c.sent);
      for (const s of c.echoes) v.recordEcho(f, s, s, s + 1);
      const r = v.report();
      expect([r.sent, r.received, r.lost, r.duplicated, r.reordered]).toEqual([c.sent, c.sent - c.lost, c.lost, c.dup, c.reord]);
      expect(r.perFlow[0]).toMatchObject({ flow: 0, kind: 'udp', sent: c.sent, lost: c.lost, duplicated: c.dup, reordered: c.reord });
      expect(r.ok).toBe(c.lost === 0 && c.dup === 0);
    });
  }

  it('recordEcho tells first, duplicate and unknown apart; unknowns are malformed unknown_flow', () => {
    const v = new Verifier({ packetsPerFlow: 4 });
    const f = v.addFlow(FlowKind.TCP);
    v.recordSent(f, 0, 0);
    v.recordSent(f, 1, 0);
    expect(v.recordEcho(f, 0, 0, 1)).toBe(Echo.FIRST);
    expect(v.recordEcho(f, 0, 0, 1)).toBe(Echo.DUPLICATE);
    expect(v.recordEcho(f, 2, 0, 1)).toBe(Echo.UNKNOWN); // never sent
    expect(v.recordEcho(f, 4, 0, 1)).toBe(Echo.UNKNOWN); // beyond packetsPerFlow
    expect(v.recordEcho(f, -1, 0, 1)).toBe(Echo.UNKNOWN);
    expect(v.recordEcho(7, 0, 0, 1)).toBe(Echo.UNKNOWN); // no such flow
    const r = v.report();
    expect(r.malformed).toEqual({ badEncap: 0, badPacket: 0, badChecksum: 0, unknownFlow: 4, wrongAddress: 0, badPayload: 0, total: 4 });
    expect(r.received).toBe(1);
    expect(r.lost).toBe(1);
    expect(r.ok).toBe(false);
  });

  it('a second send of the same (flow, seq) is refused and not counted', () => {
    const v = new Verifier({ packetsPerFlow: 4 });
    const f = v.addFlow(FlowKind.UDP);
    expect(v.recordSent(f, 1, 0)).toBe(true);
    expect(v.recordSent(f, 1, 0)).toBe(false);
    expect(v.recordSent(f, 4, 0)).toBe(false);
    expect(v.recordSent(f + 1, 0, 0)).toBe(false);
    expect(v.sent).toBe(1);
  });

  it('malformed kinds are reported separately and make the run not ok', () => {
    const v = new Verifier({ packetsPerFlow: 1 });
    v.recordMalformed(Malformed.BAD_ENCAP);
    v.recordMalformed(Malformed.BAD_CHECKSUM);
    v.recordMalformed(Malformed.BAD_CHECKSUM);
    v.recordMalformed(Malformed.WRONG_ADDRESS);
    v.recordMalformed(Malformed.BAD_PAYLOAD);
    v.recordMalformed(Malformed.BAD_PACKET);
    const r = v.report();
    expect(r.malformed).toEqual({ badEncap: 1, badPacket: 1, badChecksum: 2, unknownFlow: 0, wrongAddress: 1, badPayload: 1, total: 6 });
    expect(r.lost).toBe(0);
    expect(r.ok).toBe(false);
  });

  it('flow outcomes and retries: counted per flow and in total; failures make the run not ok', () => {
    const v = new Verifier({ packetsPerFlow: 1 });
    const ok = v.addFlow(FlowKind.TCP);
    const hs = v.addFlow(FlowKind.TCP);
    const fin = v.addFlow(FlowKind.TCP);
    const rst = v.addFlow(FlowKind.TCP);
    const u = v.addFlow(FlowKind.UDP);
    v.synRetry(ok);
    v.synRetry(ok);
    v.finRetry(ok);
    v.markFlow(ok, FlowStatus.COMPLETED);
    v.synRetry(hs);
    v.markFlow(hs, FlowStatus.HANDSHAKE_FAILED);
    v.markFlow(fin, FlowStatus.FIN_UNANSWERED);
    v.markFlow(rst, FlowStatus.COMPLETED);
    v.markFlow(rst, FlowStatus.RESET);
    v.markFlow(u, FlowStatus.COMPLETED);
    const r = v.report();
    expect(r.flows).toEqual({ total: 5, tcp: 4, udp: 1, completed: 3, handshakeFailed: 1, finUnanswered: 1, reset: 1 });
    expect([r.synRetries, r.finRetries]).toEqual([3, 1]);
    expect(r.perFlow.map((f) => f.status)).toEqual(['completed', 'handshake_failed', 'fin_unanswered', 'reset', 'completed']);
    expect(r.perFlow[0]).toMatchObject({ synRetries: 2, finRetries: 1 });
    expect(r.ok).toBe(false);

    // Retries alone (the retransmission worked) do not fail a run.
    const w = new Verifier({ packetsPerFlow: 1 });
    const g = w.addFlow(FlowKind.TCP);
    w.synRetry(g);
    w.markFlow(g, FlowStatus.COMPLETED);
    expect(w.report().ok).toBe(true);
  });
});

describe('Verifier: latency and rates', () => {
  it('percentiles of 1..1000 ms', () => {
    const v = new Verifier({ packetsPerFlow: 1000 });
    const f = v.addFlow(FlowKind.UDP);
    // Echo seq s with latency (s+1) ms, in a shuffled order (the histogram must not care).
    const order = Array.from({ length: 1000 }, (_, i) => (i * 337) % 1000);
    for (const s of order) v.recordSent(f, s, 10_000 + s);
    for (const s of order) v.recordEcho(f, s, 10_000 + s, 10_000 + s + (s + 1));
    const l = v.report().latencyMs;
    expect(l.count).toBe(1000);
    // HdrHistogram with 3 significant digits: within 0.1 %.
    expect(l.p50).toBeGreaterThanOrEqual(500 * 0.999);
    expect(l.p50).toBeLessThanOrEqual(500 * 1.001);
    expect(l.p99).toBeGreaterThanOrEqual(990 * 0.999);
    expect(l.p99).toBeLessThanOrEqual(990 * 1.001);
    expect(l.p999).toBeGreaterThanOrEqual(999 * 0.999);
    expect(l.p999).toBeLessThanOrEqual(999 * 1.001);
    expect(l.max).toBeGreaterThanOrEqual(1000 * 0.999);
    expect(l.max).toBeLessThanOrEqual(1000 * 1.001);
    expect(l.mean).toBeCloseTo(500.5, 0);
    const pf = v.flowReport(f);
    expect(pf.latencyMeanMs).toBeCloseTo(500.5, 6);
    expect(pf.latencyMaxMs).toBe(1000);
  });

  it('sub-millisecond latencies are kept at microsecond resolution', () => {
    const v = new Verifier({ packetsPerFlow: 4 });
    const f = v.addFlow(FlowKind.UDP);
    const lat = [0.05, 0.1, 0.25, 0.75];
    lat.forEach((l, s) => {
      v.recordSent(f, s, 1);
      v.recordEcho(f, s, 1, 1 + l);
    });
    const r = v.report().latencyMs;
    expect(r.p50).toBeCloseTo(0.1, 3);
    expect(r.max).toBeCloseTo(0.75, 3);
  });

  it('a negative or NaN latency (clock oddity, corrupt stamp) is recorded as 0, never thrown', () => {
    const v = new Verifier({ packetsPerFlow: 2 });
    const f = v.addFlow(FlowKind.UDP);
    v.recordSent(f, 0, 5);
    v.recordSent(f, 1, 5);
    expect(v.recordEcho(f, 0, 10, 5)).toBe(Echo.FIRST);
    expect(v.recordEcho(f, 1, NaN, 5)).toBe(Echo.FIRST);
    expect(v.report().latencyMs).toMatchObject({ count: 2, max: 0 });
  });

  it('send and receive rates: 1000 packets 1 ms apart = 1000 pps; receive over its own span', () => {
    const v = new Verifier({ packetsPerFlow: 1000 });
    const f = v.addFlow(FlowKind.UDP);
    for (let s = 0; s < 1000; s++) v.recordSent(f, s, 100 + s);
    for (let s = 0; s < 500; s++) v.recordEcho(f, s, 100 + s, 200 + 2 * s); // every 2 ms
    const r = v.report();
    expect(r.sendPps).toBeCloseTo(1000, 6);
    expect(r.recvPps).toBeCloseTo(500, 6);
    expect(new Verifier({ packetsPerFlow: 1 }).report()).toMatchObject({ sendPps: 0, recvPps: 0 });
  });
});

describe('Verifier: scale and report shape', () => {
  it('1000 flows x 1000 packets with typed-array state; exact totals; JSON round trip', () => {
    const F = 1000;
    const P = 1000;
    const v = new Verifier({ packetsPerFlow: P, initialFlows: 8 }); // forces several growths
    for (let f = 0; f < F; f++) expect(v.addFlow(f % 3 === 0 ? FlowKind.UDP : FlowKind.TCP)).toBe(f);
    let t = 0;
    for (let s = 0; s < P; s++) for (let f = 0; f < F; f++) v.recordSent(f, s, t++);
    // Lose (f, s) when (f * 7 + s) % 101 === 0; duplicate when % 211 === 5.
    let lost = 0;
    let dup = 0;
    for (let f = 0; f < F; f++) {
      for (let s = 0; s < P; s++) {
        if ((f * 7 + s) % 101 === 0) {
          lost++;
          continue;
        }
        v.recordEcho(f, s, 0, 1);
        if ((f * 7 + s) % 211 === 5) {
          v.recordEcho(f, s, 0, 1);
          dup++;
        }
      }
    }
    const r = v.report({ maxFlowRows: 100 });
    expect(r.sent).toBe(F * P);
    expect(r.lost).toBe(lost);
    expect(r.duplicated).toBe(dup);
    expect(r.reordered).toBe(0);
    expect(r.flows).toMatchObject({ total: F, udp: 334, tcp: 666 });
    expect(r.perFlow).toHaveLength(100);
    expect(r.perFlowTruncated).toBe(true);
    expect(r.perFlow.reduce((n, x) => n + x.lost, 0)).toBe(
      Array.from({ length: 100 }, (_, f) => Array.from({ length: P }, (_, s) => ((f * 7 + s) % 101 === 0 ? 1 : 0) as number).reduce((a, b) => a + b, 0)).reduce((a, b) => a + b, 0),
    );
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it('rejects bad options with BAD_ARGUMENT', () => {
    for (const o of [{ packetsPerFlow: -1 }, { packetsPerFlow: 1.5 }, { packetsPerFlow: 1, initialFlows: 0 }]) {
      try {
        new Verifier(o);
        expect.unreachable();
      } catch (e) {
        expect(isBatonError(e, ErrorCode.BAD_ARGUMENT)).toBe(true);
      }
    }
  });
});

describe('Verifier: paged bitmaps', () => {
  it('a huge packetsPerFlow (time-bounded runs) costs only what is sent', () => {
    const before = process.memoryUsage().arrayBuffers;
    const v = new Verifier({ packetsPerFlow: 0x7fffffff, initialFlows: 64 });
    const flows = Array.from({ length: 64 }, () => v.addFlow(FlowKind.UDP));
    const far = [0, 1, 65535, 65536, 1_000_000, 0x7ffffffe];
    for (const f of flows) for (const s of far) expect(v.recordSent(f, s, 0)).toBe(true);
    for (const f of flows) for (const s of far) expect(v.recordEcho(f, s, 0, 1)).toBe(Echo.FIRST);
    expect(v.recordEcho(0, 65537, 0, 1)).toBe(Echo.UNKNOWN); // same page as a sent one, never sent
    expect(v.recordEcho(0, 5_000_000, 0, 1)).toBe(Echo.UNKNOWN); // a page never touched
    expect(v.isSent(3, 0x7ffffffe)).toBe(true);
    expect(v.isEchoed(3, 0x7ffffffd)).toBe(false);
    const r = v.report({ maxFlowRows: 0 });
    expect([r.sent, r.received, r.lost, r.malformed.unknownFlow]).toEqual([64 * 6, 64 * 6, 0, 2]);
    // 64 flows x 32768 page slots x 4 B of page table + 5 pages x 16 KB each per flow: ~13 MB, not 2 x 16 GB.
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 * 1024 * 1024);
  });
});

describe('Verifier property: matches a naive model on random sequences', () => {
  it('lost / duplicated / reordered / unknown', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.oneof(fc.integer({ min: 1, max: 70 }), fc.constant(3 * 65536 + 5)),
        fc.array(fc.tuple(fc.boolean(), fc.nat({ max: 7 }), fc.oneof(fc.nat({ max: 80 }), fc.constantFrom(65535, 65536, 131072, 196612, 196613, 196614))), { maxLength: 400 }),
        (flows, ppf, ops) => {
          const v = new Verifier({ packetsPerFlow: ppf, initialFlows: 1 });
          for (let f = 0; f < flows; f++) v.addFlow(FlowKind.UDP);
          const sent = new Set<string>();
          const recv = new Map<string, number>();
          const high = new Map<number, number>();
          let dup = 0;
          let reord = 0;
          let unknown = 0;
          for (const [isSend, f, s] of ops) {
            const k = `${f}/${s}`;
            if (isSend) {
              const okSend = f < flows && s < ppf && !sent.has(k);
              expect(v.recordSent(f, s, 0)).toBe(okSend);
              if (okSend) sent.add(k);
            } else {
              v.recordEcho(f, s, 0, 0);
              if (!sent.has(k)) unknown++;
              else if (recv.has(k)) dup++;
              else {
                recv.set(k, 1);
                if (s < (high.get(f) ?? -1)) reord++;
                else high.set(f, s);
              }
            }
          }
          const r = v.report();
          expect(r.sent).toBe(sent.size);
          expect(r.received).toBe(recv.size);
          expect(r.lost).toBe(sent.size - recv.size);
          expect(r.duplicated).toBe(dup);
          expect(r.reordered).toBe(reord);
          expect(r.malformed.unknownFlow).toBe(unknown);
          for (let f = 0; f < flows; f++) {
            expect(v.isEchoed(f, 0)).toBe(recv.has(`${f}/0`));
            expect(v.isSent(f, ppf - 1)).toBe(sent.has(`${f}/${ppf - 1}`));
          }
        },
      ),
      { seed: 0x7e41f1, numRuns: 300 },
    );
  });
});
