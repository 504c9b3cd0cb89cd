/**
 * The traffic run's report (JSON-serialisable as is: no Infinity, no Maps)
 * and its compact human rendering. Field meanings: docs/traffic.md.
 */
import type { FlowReport, VerifierReport } from './verifier.js';

export interface TrafficIoStats {
  framesSent: number;
  datagramsSent: number;
  framesReceived: number;
  datagramsReceived: number;
  sendErrors: number;
  /** SYN-ACK / FIN-ACK for a flow that no longer waits for one (e.g. the answer to a retransmission). */
  lateControl: number;
  /** Valid replies that carry nothing to verify (e.g. a pure ACK). */
  ignored: number;
  /** Window mode: times the window was reopened because no echo came for echoTimeoutMs. */
  windowResets: number;
  /** Times sending paused because every send buffer was in the socket. */
  sendBlocked: number;
}

export interface TrafficReport extends VerifierReport {
  mode: 'rate' | 'window';
  /** Target frames/s (rate mode) or null. */
  targetPps: number | null;
  /** In-flight bound (window mode) or null. */
  window: number | null;
  concurrency: number;
  packetsPerFlow: number;
  payloadSize: number;
  /** Start to end of the whole run, ms on the scheduler's clock. */
  elapsedMs: number;
  /** Start until nothing was left to send. */
  sendPhaseMs: number;
  /** Time spent waiting for the last echoes / FIN-ACKs. */
  drainMs: number;
  /** The drain ended by its timeout, not because everything was answered. */
  drainTimedOut: boolean;
  /** stop() ended the run early. */
  aborted: boolean;
  io: TrafficIoStats;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function row(cells: string[], widths: number[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

function problem(f: FlowReport): boolean {
  return f.lost > 0 || f.duplicated > 0 || f.reordered > 0 || f.synRetries > 0 || f.finRetries > 0 || (f.status !== 'completed' && f.status !== 'open');
}

/** A compact table for humans; `--json` prints the report object itself. */
export function formatReport(r: TrafficReport, maxProblemFlows = 10): string {
  const out: string[] = [];
  const mode = r.mode === 'rate' ? `rate ${fmt(r.targetPps ?? 0)} pps` : `window ${r.window}`;
  out.push(
    `traffic ${r.ok ? 'OK' : 'FAILED'}${r.aborted ? ' (aborted)' : ''}: ${mode}, ${r.concurrency} concurrent, ` +
      `${r.packetsPerFlow} pkts/flow x ${r.payloadSize} B, ${fmt(r.elapsedMs / 1000, 2)} s ` +
      `(send ${fmt(r.sendPhaseMs / 1000, 2)} s, drain ${fmt(r.drainMs / 1000, 2)} s${r.drainTimedOut ? ' timed out' : ''})`,
  );
  const f = r.flows;
  out.push(
    `flows: ${f.total} (tcp ${f.tcp}, udp ${f.udp}), completed ${f.completed}, handshake failed ${f.handshakeFailed}, ` +
      `fin unanswered ${f.finUnanswered}, reset ${f.reset}; retries: syn ${r.synRetries}, fin ${r.finRetries}`,
  );
  const w = [8, 10, 10, 8, 8, 10, 11, 11];
  out.push(row(['', 'sent', 'received', 'lost', 'dup', 'reordered', 'send pps', 'recv pps'], w));
  out.push(
    row(['total', fmt(r.sent), fmt(r.received), fmt(r.lost), fmt(r.duplicated), fmt(r.reordered), fmt(r.sendPps), fmt(r.recvPps)], w),
  );
  const l = r.latencyMs;
  out.push(`latency ms: p50 ${fmt(l.p50, 3)}  p99 ${fmt(l.p99, 3)}  p99.9 ${fmt(l.p999, 3)}  max ${fmt(l.max, 3)}  (${fmt(l.count)} samples)`);
  const m = r.malformed;
  out.push(
    m.total === 0
      ? 'malformed replies: none'
      : `malformed replies: ${m.total} (bad encap ${m.badEncap}, bad packet ${m.badPacket}, bad checksum ${m.badChecksum}, ` +
          `unknown flow ${m.unknownFlow}, wrong address ${m.wrongAddress}, bad payload ${m.badPayload})`,
  );
  const io = r.io;
  out.push(
    `io: ${fmt(io.framesSent)} frames in ${fmt(io.datagramsSent)} datagrams sent, ${fmt(io.framesReceived)} frames in ` +
      `${fmt(io.datagramsReceived)} datagrams received, send errors ${io.sendErrors}, late control ${io.lateControl}` +
      (io.windowResets > 0 ? `, window resets ${io.windowResets}` : ''),
  );
  const bad = r.perFlow.filter(problem);
  if (bad.length > 0) {
    out.push(`flows with problems (${bad.length}${r.perFlowTruncated ? '+' : ''}, first ${Math.min(bad.length, maxProblemFlows)}):`);
    const fw = [8, 4, 8, 8, 6, 6, 9, 4, 4, 16];
    out.push(row(['flow', 'kind', 'sent', 'received', 'lost', 'dup', 'reordered', 'syn', 'fin', 'status'], fw));
    for (const x of bad.slice(0, maxProblemFlows)) {
      out.push(
        row(
          [String(x.flow), x.kind, String(x.sent), String(x.received), String(x.lost), String(x.duplicated), String(x.reordered), String(x.synRetries), String(x.finRetries), x.status],
          fw,
        ),
      );
    }
  }
  return out.join('\n');
}
