/**
 * ControlChannel (shared/control/channel.ts) receiving frames: nothing
 * throws out of the connection's message callback; every frame is counted
 * once, as a message or by its failure (rx_messages, rx_bad_protobuf,
 * rx_bad_version, rx_empty_body, rx_unknown_body); a request is answered
 * (by the handler, or with an ErrorReply naming a known code when it cannot
 * be served), a reply or a message never is, and everything the channel
 * sends decodes. One request of our own is pending, so a frame can also be
 * the reply it waits for.
 */
import fc from 'fast-check';
import { ControlChannel, CHANNEL_COUNTERS } from '../../../shared/control/channel.js';
import { decodeEnvelope } from '../../../shared/control/codec.js';
import { isErrorCode } from '../../../shared/errors.js';
import { VirtualScheduler } from '../../../shared/runtime/scheduler.js';
import type { CloseReason, MessageConnection } from '../../../shared/io/stream.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { arbControlFrame } from './control.js';

class FakeConnection implements MessageConnection {
  readonly remote = { host: '192.0.2.1', port: 7400 };
  closed = false;
  sent: Uint8Array[] = [];
  deliver: (m: Uint8Array) => void = () => {};
  private closeFns: ((r: CloseReason) => void)[] = [];
  send(msg: Uint8Array): boolean {
    if (this.closed) return false;
    this.sent.push(Uint8Array.from(msg));
    return true;
  }
  onMessage(fn: (m: Uint8Array) => void): void {
    this.deliver = fn;
  }
  onClose(fn: (r: CloseReason) => void): void {
    this.closeFns.push(fn);
  }
  pendingBytes(): number {
    return 0;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.closeFns) f('local');
  }
}

const C = CHANNEL_COUNTERS;
const RX = [C.rx_messages, C.rx_bad_protobuf, C.rx_bad_version, C.rx_empty_body, C.rx_unknown_body] as const;
const RX_NAMES = ['message', 'bad_protobuf', 'bad_version', 'empty_body', 'unknown_body'] as const;

const tally = new Tally();
const sched = new VirtualScheduler();

export const channelTarget: FuzzTarget<Uint8Array[]> = {
  name: 'control/channel',
  covers: 'shared/control/channel.ts ControlChannel receive path (frames of one connection)',
  arbitrary: fc.array(arbControlFrame, { minLength: 1, maxLength: 2 }),
  tally,
  mustReach: ['request', 'reply', 'unexpected_reply', 'unsolicited', 'bad_protobuf', 'bad_version', 'empty_body', 'unknown_body'],
  check(frames) {
    const conn = new FakeConnection();
    const ch = new ControlChannel(conn, sched);
    let handled = 0;
    let messages = 0;
    ch.onRequest(() => {
      handled++;
      return { case: 'pong', value: {} };
    });
    ch.onMessage(() => {
      messages++;
    });
    let settled = false;
    ch.request({ case: 'ping', value: {} }, 1000).then(
      () => (settled = true),
      () => (settled = true),
    );
    conn.sent = []; // the request itself
    for (const f of frames) {
      const before = RX.map((id) => ch.counters.get(id));
      const sentBefore = conn.sent.length;
      const repliesBefore = ch.counters.get(C.rx_replies);
      const pendingBefore = ch.pendingRequests;
      noThrow('ControlChannel frame callback', () => conn.deliver(f));
      const what = (): string => `frame ${hex(f, 80)}`;
      const inc = RX.map((id, i) => ch.counters.get(id) - before[i]!);
      ensure(inc.reduce((a, b) => a + b, 0) === 1 && inc.every((x) => x === 0 || x === 1), () => `${what()}: counted ${JSON.stringify(inc)} (once, by one reason)`);
      const kind = RX_NAMES[inc.indexOf(1)]!;
      const sent = conn.sent.slice(sentBefore);
      const r = decodeEnvelope(f);
      // Known, reported (docs/fuzzing.md): a request with seq 0, which no
      // Baton sender writes (seqs start at 1), is served and answered with
      // reply_to 0, so the answer reaches the peer as a message, not a reply.
      const seq0Request = r.ok && r.env.replyTo === 0 && r.env.wantsReply && r.env.seq === 0;
      ensure((r.ok ? 'message' : r.code) === kind, () => `${what()}: counted as ${kind}, decodes as ${r.ok ? 'ok' : r.code}`);
      for (const s of sent) {
        const d = decodeEnvelope(s);
        ensure(d.ok && (d.env.replyTo !== 0 || seq0Request) && !d.env.wantsReply, () => `${what()}: the channel sent ${hex(s)}, not a reply`);
        if (d.env.body.case === 'errorReply') ensure(isErrorCode(d.env.body.value.code), () => `${what()}: ErrorReply with code ${JSON.stringify((d.env.body.value as { code: string }).code)}`);
      }
      let label: string = kind;
      if (r.ok) {
        const e = r.env;
        if (e.replyTo !== 0) {
          ensure(sent.length === 0, () => `${what()}: a reply was answered`);
          const matched = ch.counters.get(C.rx_replies) - repliesBefore;
          ensure(matched === (pendingBefore === 1 && e.replyTo === 1 ? 1 : 0), () => `${what()}: reply to ${e.replyTo} matched ${matched}`);
          label = matched ? 'reply' : 'unexpected_reply';
        } else if (e.wantsReply) {
          ensure(sent.length === 1, () => `${what()}: a request got ${sent.length} answers`);
          const d = decodeEnvelope(sent[0]!);
          ensure(d.ok && d.env.replyTo === e.seq && d.env.body.case === 'pong', () => `${what()}: the answer is not the handler's pong to seq ${e.seq}`);
          label = seq0Request ? 'request_seq0' : 'request';
        } else {
          ensure(sent.length === 0, () => `${what()}: a message was answered`);
          label = 'unsolicited';
        }
      } else {
        const answerable = r.seq !== 0 && r.replyTo === 0 && (r.code === 'bad_version' || ((r.code === 'unknown_body' || r.code === 'empty_body') && r.wantsReply));
        ensure(sent.length === (answerable ? 1 : 0), () => `${what()}: ${r.code} (seq ${r.seq}, replyTo ${r.replyTo}) got ${sent.length} answers`);
        if (answerable) {
          const d = decodeEnvelope(sent[0]!);
          ensure(d.ok && d.env.replyTo === r.seq && d.env.body.case === 'errorReply', () => `${what()}: the answer is not an ErrorReply to seq ${r.seq}`);
        }
      }
      tally.add(label);
    }
    ensure(ch.counters.get(C.rx_requests) === handled && ch.counters.get(C.handler_errors) === 0, 'handler calls != rx_requests');
    ensure(ch.counters.get(C.rx_unsolicited) === messages, 'onMessage calls != rx_unsolicited');
    ch.close();
    ensure(ch.pendingRequests === 0, 'a request still pending after close');
    void settled;
  },
};
