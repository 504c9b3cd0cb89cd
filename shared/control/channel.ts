/**
 * Request/response over one control connection. A ControlChannel owns a
 * MessageConnection (shared/io/stream.ts: one Envelope per frame) and a
 * Scheduler (timeouts run on real or virtual time):
 *
 * - request(body, timeoutMs): sends with wants_reply, resolves with the reply
 *   envelope (matched by reply_to = our seq); rejects with BatonError
 *   BATON_TIMEOUT, BATON_CONNECTION_CLOSED, or BATON_REMOTE_ERROR when the
 *   peer answered ErrorReply (details.remoteCode / remoteMessage).
 * - send(body): fire and forget.
 * - onRequest(handler): incoming requests; the handler's return value (or
 *   resolved promise) is sent back as the reply; a throw/rejection becomes an
 *   ErrorReply with the BatonError code (else BATON_INTERNAL); returning
 *   nothing means the handler will answer itself with reply().
 * - onMessage(fn): incoming messages that are neither requests nor replies.
 *
 * Garbage frames are counted by reason and dropped; the connection stays up.
 * Requests that cannot be decoded far enough to be served are answered with
 * an ErrorReply when the sender can match it (wrong protocol_version ->
 * BATON_BAD_VERSION, unknown body -> BATON_UNKNOWN_MESSAGE). Replies are
 * never answered, so two channels can never bounce errors back and forth.
 */
import { BatonError, ErrorCode, errorCodeFromWire, isBatonError } from '../errors.js';
import { Counters, defineCounters } from '../counters.js';
import type { CloseReason, MessageConnection } from '../io/stream.js';
import type { Scheduler, Timer } from '../runtime/scheduler.js';
import { decodeEnvelope, encodeEnvelope } from './codec.js';
import { PROTOCOL_VERSION, type Body, type BodyCase, type EnvelopeObject } from './messages.js';

export const CHANNEL_COUNTERS = defineCounters([
  /** Frames that decoded to a valid envelope. */
  'rx_messages',
  /** Envelopes handed to the connection (requests, replies, fire-and-forget). */
  'tx_messages',
  'rx_bytes',
  'tx_bytes',
  'rx_requests',
  /** Replies matched to a pending request (including ErrorReply). */
  'rx_replies',
  'rx_error_replies',
  /** Fire-and-forget messages delivered to onMessage. */
  'rx_unsolicited',
  /** Fire-and-forget messages dropped because no onMessage callback is set. */
  'rx_unhandled',
  'rx_bad_protobuf',
  'rx_bad_version',
  'rx_empty_body',
  'rx_unknown_body',
  /** A reply whose reply_to matches no pending request (e.g. it came after the timeout). */
  'rx_unexpected_reply',
  'timeouts',
  /** Sends refused because the connection is closed. */
  'tx_failed',
  /** Request/message callbacks that threw or rejected. */
  'handler_errors',
  /** Requests answered with BATON_NO_HANDLER. */
  'rx_no_handler',
] as const);

export type RequestHandler = (env: EnvelopeObject) => Body | void | Promise<Body | void>;
export type MessageHandler = (env: EnvelopeObject) => void;

export interface ControlChannelOptions {
  /** Told about every callback that threw or rejected (after it was counted and, for requests, answered). */
  onHandlerError?: (err: unknown, env: EnvelopeObject) => void;
  /**
   * Count into this (CHANNEL_COUNTERS layout) instead of a private set, so a
   * server can aggregate every connection it ever accepted (garbage ones too).
   */
  counters?: Counters;
}

interface Pending {
  resolve: (env: EnvelopeObject) => void;
  reject: (err: BatonError) => void;
  timer: Timer;
  kase: BodyCase;
}

export class ControlChannel {
  readonly counters: Counters;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private requestHandler: RequestHandler | null = null;
  private messageHandler: MessageHandler | null = null;
  private closeFns: ((reason: CloseReason) => void)[] = [];
  private closeReason: CloseReason | null = null;
  private readonly onHandlerError: ((err: unknown, env: EnvelopeObject) => void) | undefined;

  constructor(
    readonly conn: MessageConnection,
    private readonly sched: Scheduler,
    opts: ControlChannelOptions = {},
  ) {
    this.onHandlerError = opts.onHandlerError;
    this.counters = opts.counters ?? new Counters(CHANNEL_COUNTERS);
    conn.onMessage((frame) => this.onFrame(frame));
    conn.onClose((reason) => this.shutdown(reason));
  }

  get closed(): boolean {
    return this.closeReason !== null;
  }

  /** Requests sent and not yet answered, timed out or failed. */
  get pendingRequests(): number {
    return this.pending.size;
  }

  request(body: Body, timeoutMs: number): Promise<EnvelopeObject> {
    if (!(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
      return Promise.reject(
        new BatonError(ErrorCode.BAD_ARGUMENT, `request(${body.case}): timeoutMs must be a finite number > 0, got ${timeoutMs}`, {
          field: 'timeoutMs',
          value: timeoutMs,
        }),
      );
    }
    if (this.closeReason !== null) return Promise.reject(this.closedError(body.case, this.closeReason));
    const seq = ++this.seq;
    let bytes: Uint8Array;
    try {
      bytes = encodeEnvelope({ protocolVersion: PROTOCOL_VERSION, seq, replyTo: 0, wantsReply: true, body });
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<EnvelopeObject>((resolve, reject) => {
      const timer = this.sched.after(timeoutMs, () => {
        if (!this.pending.delete(seq)) return;
        this.counters.inc(CHANNEL_COUNTERS.timeouts);
        reject(
          new BatonError(ErrorCode.TIMEOUT, `control request ${body.case} (seq ${seq}) to ${this.peerName()} got no reply within ${timeoutMs} ms`, {
            case: body.case,
            seq,
            timeoutMs,
          }),
        );
      });
      this.pending.set(seq, { resolve, reject, timer, kase: body.case });
      if (!this.write(bytes)) {
        this.pending.delete(seq);
        timer.cancel();
        reject(this.closedError(body.case, this.closeReason ?? 'remote'));
      }
    });
  }

  /** Fire and forget. Returns false if the connection is closed. */
  send(body: Body): boolean {
    if (this.closeReason !== null) {
      this.counters.inc(CHANNEL_COUNTERS.tx_failed);
      return false;
    }
    return this.write(encodeEnvelope({ protocolVersion: PROTOCOL_VERSION, seq: ++this.seq, replyTo: 0, wantsReply: false, body }));
  }

  /**
   * Answers `request` (for handlers that returned nothing and reply later).
   * Answer each request once: the peer counts any extra reply as unexpected.
   */
  reply(request: Pick<EnvelopeObject, 'seq'>, body: Body): boolean {
    if (this.closeReason !== null) {
      this.counters.inc(CHANNEL_COUNTERS.tx_failed);
      return false;
    }
    return this.write(encodeEnvelope({ protocolVersion: PROTOCOL_VERSION, seq: ++this.seq, replyTo: request.seq, wantsReply: false, body }));
  }

  onRequest(handler: RequestHandler): void {
    this.requestHandler = handler;
  }

  onMessage(fn: MessageHandler): void {
    this.messageHandler = fn;
  }

  /** Called once when the channel closes, with the connection's reason ('local' after close()). */
  onClose(fn: (reason: CloseReason) => void): void {
    if (this.closeReason !== null) fn(this.closeReason);
    else this.closeFns.push(fn);
  }

  /** Closes the connection; pending requests reject with BATON_CONNECTION_CLOSED at once. */
  close(): void {
    if (this.closeReason !== null) return;
    this.shutdown('local');
    this.conn.close();
  }

  // ------------------------------------------------------------ receive ----

  private onFrame(frame: Uint8Array): void {
    if (this.closeReason !== null) return;
    const C = CHANNEL_COUNTERS;
    this.counters.inc(C.rx_bytes, frame.length);
    const r = decodeEnvelope(frame);
    if (!r.ok) {
      switch (r.code) {
        case 'bad_protobuf':
          this.counters.inc(C.rx_bad_protobuf);
          return;
        case 'bad_version':
          this.counters.inc(C.rx_bad_version);
          // Answer anything that is not itself a reply, so the peer learns why it is ignored.
          if (r.seq !== 0 && r.replyTo === 0) {
            this.sendError(r.seq, ErrorCode.BAD_VERSION, `protocol_version ${r.protocolVersion} not supported; this node speaks ${PROTOCOL_VERSION}`);
          }
          return;
        case 'unknown_body':
          this.counters.inc(C.rx_unknown_body);
          if (r.wantsReply && r.seq !== 0 && r.replyTo === 0) this.sendError(r.seq, ErrorCode.UNKNOWN_MESSAGE, 'request body unknown to this node (newer protocol?)');
          return;
        case 'empty_body':
          this.counters.inc(C.rx_empty_body);
          if (r.wantsReply && r.seq !== 0 && r.replyTo === 0) this.sendError(r.seq, ErrorCode.EMPTY_BODY, 'request has no body');
          return;
      }
    }
    this.counters.inc(C.rx_messages);
    const env = r.env;
    if (env.replyTo !== 0) this.onReply(env);
    else if (env.wantsReply) this.onIncomingRequest(env);
    else if (this.messageHandler !== null) {
      this.counters.inc(C.rx_unsolicited);
      try {
        this.messageHandler(env);
      } catch (e) {
        this.handlerFailed(e, env);
      }
    } else this.counters.inc(C.rx_unhandled);
  }

  private onReply(env: EnvelopeObject): void {
    const p = this.pending.get(env.replyTo);
    if (p === undefined) {
      this.counters.inc(CHANNEL_COUNTERS.rx_unexpected_reply);
      return;
    }
    this.pending.delete(env.replyTo);
    p.timer.cancel();
    this.counters.inc(CHANNEL_COUNTERS.rx_replies);
    if (env.body.case === 'errorReply') {
      this.counters.inc(CHANNEL_COUNTERS.rx_error_replies);
      const { code, message } = env.body.value;
      p.reject(
        new BatonError(ErrorCode.REMOTE_ERROR, `control request ${p.kase} (seq ${env.replyTo}) failed at ${this.peerName()}: ${code}: ${message}`, {
          case: p.kase,
          seq: env.replyTo,
          // Checked: a code this build does not know is REMOTE_ERROR (its text stays in the message).
          remoteCode: errorCodeFromWire(code),
          remoteMessage: message,
        }),
      );
    } else p.resolve(env);
  }

  private onIncomingRequest(env: EnvelopeObject): void {
    this.counters.inc(CHANNEL_COUNTERS.rx_requests);
    const h = this.requestHandler;
    if (h === null) {
      this.counters.inc(CHANNEL_COUNTERS.rx_no_handler);
      this.sendError(env.seq, ErrorCode.NO_HANDLER, `no request handler for ${env.body.case}`);
      return;
    }
    let out: Body | void | Promise<Body | void>;
    try {
      out = h(env);
    } catch (e) {
      this.handlerFailed(e, env, true);
      return;
    }
    if (out === undefined) return;
    if (isPromiseLike(out)) {
      out.then(
        (b) => {
          if (b !== undefined) this.replySafely(env, b);
        },
        (e: unknown) => this.handlerFailed(e, env, true),
      );
    } else this.replySafely(env, out);
  }

  /** A handler's reply that cannot be encoded becomes an ErrorReply instead of an exception in the I/O callback. */
  private replySafely(env: EnvelopeObject, b: Body): void {
    try {
      this.reply(env, b);
    } catch (e) {
      this.handlerFailed(e, env, true);
    }
  }

  private handlerFailed(err: unknown, env: EnvelopeObject, answer = false): void {
    this.counters.inc(CHANNEL_COUNTERS.handler_errors);
    if (answer) {
      const code = isBatonError(err) ? err.code : ErrorCode.INTERNAL;
      this.sendError(env.seq, code, err instanceof Error ? err.message : String(err));
    }
    this.onHandlerError?.(err, env);
  }

  // ------------------------------------------------------------- helpers ----

  private sendError(replyTo: number, code: ErrorCode, message: string): void {
    this.reply({ seq: replyTo }, { case: 'errorReply', value: { code, message } });
  }

  private write(bytes: Uint8Array): boolean {
    if (!this.conn.send(bytes)) {
      this.counters.inc(CHANNEL_COUNTERS.tx_failed);
      return false;
    }
    this.counters.inc(CHANNEL_COUNTERS.tx_messages);
    this.counters.inc(CHANNEL_COUNTERS.tx_bytes, bytes.length);
    return true;
  }

  private shutdown(reason: CloseReason): void {
    if (this.closeReason !== null) return;
    this.closeReason = reason;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      p.timer.cancel();
      p.reject(this.closedError(p.kase, reason));
    }
    const fns = this.closeFns;
    this.closeFns = [];
    for (const f of fns) f(reason);
  }

  private closedError(kase: BodyCase, reason: CloseReason): BatonError {
    return new BatonError(ErrorCode.CONNECTION_CLOSED, `control request ${kase}: connection to ${this.peerName()} closed (${reason})`, {
      case: kase,
      reason,
    });
  }

  private peerName(): string {
    return `${this.conn.remote.host}:${this.conn.remote.port}`;
  }
}

function isPromiseLike<T>(v: unknown): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}
