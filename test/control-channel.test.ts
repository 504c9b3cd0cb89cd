import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { ControlChannel, CHANNEL_COUNTERS } from '../shared/control/channel.js';
import { decodeEnvelope, encodeEnvelope } from '../shared/control/codec.js';
import { PROTOCOL_VERSION, Role, body, emptyFlowStats, nodeInfo, type Body, type EnvelopeObject } from '../shared/control/messages.js';
import { MemoryMessageNet, TcpNet, type CloseReason, type MessageConnection, type MessageListener } from '../shared/io/stream.js';
import { RealScheduler, VirtualScheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, isBatonError } from '../shared/errors.js';
import { mulberry32 } from '../shared/random.js';

const C = CHANNEL_COUNTERS;
const STATUS: Body = body('statusResponse', { scopeVersion: 3, nodes: [] });

function frame(e: Partial<EnvelopeObject> & { body: Body }): Uint8Array {
  return encodeEnvelope({ protocolVersion: PROTOCOL_VERSION, seq: 1, replyTo: 0, wantsReply: false, ...e });
}

/** Settles a promise's outcome without awaiting it (so tests can check "not yet"). */
function track<T>(p: Promise<T>): { state: 'pending' | 'resolved' | 'rejected'; value?: T; error?: unknown } {
  const t: { state: 'pending' | 'resolved' | 'rejected'; value?: T; error?: unknown } = { state: 'pending' };
  p.then(
    (v) => Object.assign(t, { state: 'resolved', value: v }),
    (e: unknown) => Object.assign(t, { state: 'rejected', error: e }),
  );
  return t;
}

function expectCode(err: unknown, code: string): BatonError {
  expect(isBatonError(err), String(err)).toBe(true);
  expect((err as BatonError).code).toBe(code);
  return err as BatonError;
}

// ------------------------------------------------------ memory + virtual ----

/**
 * Runs everything due at the current virtual instant, interleaved with
 * microtasks (promise handlers), until neither produces more work. Never
 * advances virtual time, so pending timeouts do not fire.
 */
async function settle(sched: VirtualScheduler): Promise<void> {
  for (;;) {
    await new Promise<void>((r) => setImmediate(r));
    const before = sched.executed;
    sched.runUntil(sched.clock.now());
    if (sched.executed === before) return;
  }
}

async function memSetup() {
  const sched = new VirtualScheduler(1000);
  const mnet = new MemoryMessageNet(sched);
  const accepted: MessageConnection[] = [];
  await mnet.listen({ host: 'manager', port: 7000 }, (c) => accepted.push(c));
  const connect = async (): Promise<{ raw: MessageConnection; peer: MessageConnection }> => {
    const raw = await mnet.connect({ host: 'manager', port: 7000 });
    await settle(sched);
    return { raw, peer: accepted[accepted.length - 1]! };
  };
  const { raw, peer } = await connect();
  const client = new ControlChannel(raw, sched);
  const server = new ControlChannel(peer, sched);
  return { sched, client, server, connect };
}

describe('ControlChannel over MemoryMessageNet (virtual time)', () => {
  it('request -> reply: seq assigned, reply_to matched, counters', async () => {
    const { sched, client, server } = await memSetup();
    const seen: EnvelopeObject[] = [];
    server.onRequest((env) => {
      seen.push(env);
      return STATUS;
    });
    const t = track(client.request(body('statusRequest', {}), 500));
    await settle(sched);
    expect(t.state).toBe('resolved');
    expect(seen).toHaveLength(1);
    expect(seen[0]!).toMatchObject({ protocolVersion: 1, seq: 1, replyTo: 0, wantsReply: true, body: { case: 'statusRequest' } });
    expect(t.value).toMatchObject({ replyTo: 1, wantsReply: false, body: STATUS });
    expect(client.counters.snapshot()).toMatchObject({ tx_messages: 1, rx_messages: 1, rx_replies: 1, timeouts: 0 });
    expect(server.counters.snapshot()).toMatchObject({ rx_messages: 1, rx_requests: 1, tx_messages: 1 });
    expect(client.pendingRequests).toBe(0);
  });

  it('async handlers reply when their promise resolves', async () => {
    const { sched, client, server } = await memSetup();
    server.onRequest(async (env) => {
      await Promise.resolve();
      if (env.body.case !== 'register') throw new Error('unexpected');
      return body('registerAck', { accepted: true, errorCode: '', errorMessage: '', scopeVersion: env.body.value.node.id * 10, heartbeatIntervalMs: 100 });
    });
    const t = track(client.request(body('register', { node: nodeInfo({ id: 4, role: Role.FD }) }), 500));
    await settle(sched);
    expect(t.value?.body).toEqual(body('registerAck', { accepted: true, errorCode: '', errorMessage: '', scopeVersion: 40, heartbeatIntervalMs: 100 }));
  });

  it('many concurrent requests answered out of order each get their own reply', async () => {
    const { sched, client, server } = await memSetup();
    const held: EnvelopeObject[] = [];
    server.onRequest((env) => void held.push(env)); // answer later, via reply()
    const N = 40;
    const ts = Array.from({ length: N }, (_, i) => track(client.request(body('register', { node: nodeInfo({ id: i + 1, role: Role.FD }) }), 1000)));
    await settle(sched);
    expect(held).toHaveLength(N);
    expect(client.pendingRequests).toBe(N);
    const rnd = mulberry32(0x5eed);
    for (let i = held.length - 1; i > 0; i--) {
      const j = rnd() % (i + 1);
      [held[i], held[j]] = [held[j]!, held[i]!];
    }
    for (const req of held) {
      if (req.body.case !== 'register') throw new Error('unexpected');
      server.reply(req, body('registerAck', { accepted: true, errorCode: '', errorMessage: '', scopeVersion: req.body.value.node.id, heartbeatIntervalMs: 0 }));
    }
    await settle(sched);
    ts.forEach((t, i) => {
      expect(t.state).toBe('resolved');
      expect(t.value!.body.case === 'registerAck' && t.value!.body.value.scopeVersion).toBe(i + 1);
    });
    expect(client.counters.get(C.rx_unexpected_reply)).toBe(0);
  });

  it('times out on virtual time; a reply after the timeout is counted as unexpected', async () => {
    const { sched, client, server } = await memSetup();
    const held: EnvelopeObject[] = [];
    server.onRequest((env) => void held.push(env));
    const t = track(client.request(body('ping', {}), 100));
    await settle(sched);
    sched.runFor(99);
    await settle(sched);
    expect(t.state).toBe('pending');
    sched.runFor(1);
    await settle(sched);
    expect(t.state).toBe('rejected');
    const err = expectCode(t.error, ErrorCode.TIMEOUT);
    expect(err.message).toContain('ping');
    expect(err.details).toMatchObject({ case: 'ping', seq: 1, timeoutMs: 100 });
    expect(client.counters.get(C.timeouts)).toBe(1);
    expect(client.pendingRequests).toBe(0);

    server.reply(held[0]!, body('pong', {}));
    await settle(sched);
    expect(client.counters.get(C.rx_unexpected_reply)).toBe(1);
    expect(client.counters.get(C.rx_replies)).toBe(0);
  });

  it('a reply in time cancels the timeout', async () => {
    const { sched, client, server } = await memSetup();
    server.onRequest(() => body('pong', {}));
    const t = track(client.request(body('ping', {}), 100));
    await settle(sched);
    sched.runFor(1000);
    await settle(sched);
    expect(t.state).toBe('resolved');
    expect(client.counters.get(C.timeouts)).toBe(0);
  });

  // [handler, expected remote code]
  const FAILING: [string, (env: EnvelopeObject) => Body | Promise<Body>, string][] = [
    [
      'throws a BatonError',
      () => {
        throw new BatonError(ErrorCode.UNKNOWN_NODE, 'node 99 is not registered');
      },
      ErrorCode.UNKNOWN_NODE,
    ],
    [
      'throws a plain Error',
      () => {
        throw new TypeError('boom');
      },
      ErrorCode.INTERNAL,
    ],
    ['rejects with a BatonError', () => Promise.reject(new BatonError(ErrorCode.CONFIG_INVALID, 'bad config')), ErrorCode.CONFIG_INVALID],
    ['returns a body that cannot be encoded', () => ({ case: 'nope', value: {} }) as unknown as Body, ErrorCode.BAD_ARGUMENT],
  ];
  it.each(FAILING)('handler %s -> BATON_REMOTE_ERROR carrying the remote code', async (_name, handler, remoteCode) => {
    const { sched, client, server } = await memSetup();
    const reported: unknown[] = [];
    const srv = new ControlChannel(server.conn, sched, { onHandlerError: (e) => reported.push(e) }); // replaces the connection's callbacks
    srv.onRequest(handler);
    const t = track(client.request(body('statusRequest', {}), 500));
    await settle(sched);
    const err = expectCode(t.error, ErrorCode.REMOTE_ERROR);
    expect(err.details).toMatchObject({ remoteCode, case: 'statusRequest', seq: 1 });
    expect(srv.counters.get(C.handler_errors)).toBe(1);
    expect(reported).toHaveLength(1);
    expect(client.counters.get(C.rx_error_replies)).toBe(1);
  });

  it('a request with no handler installed is answered BATON_NO_HANDLER', async () => {
    const { sched, client, server } = await memSetup();
    const t = track(client.request(body('statusRequest', {}), 500));
    await settle(sched);
    expect(expectCode(t.error, ErrorCode.REMOTE_ERROR).details).toMatchObject({ remoteCode: ErrorCode.NO_HANDLER });
    expect(server.counters.get(C.rx_no_handler)).toBe(1);
  });

  it('send() delivers to onMessage; without onMessage it is counted unhandled; a throwing callback is counted', async () => {
    const { sched, client, server } = await memSetup();
    expect(client.send(body('heartbeat', { nodeId: 1, stats: emptyFlowStats(), appliedScopeVersion: 0, counters: {} }))).toBe(true);
    await settle(sched);
    expect(server.counters.get(C.rx_unhandled)).toBe(1);

    const got: EnvelopeObject[] = [];
    server.onMessage((env) => {
      got.push(env);
      if (got.length === 1) throw new Error('callback bug');
    });
    client.send(body('heartbeat', { nodeId: 2, stats: emptyFlowStats(), appliedScopeVersion: 5, counters: { x: 1 } }));
    client.send(body('heartbeat', { nodeId: 3, stats: emptyFlowStats(), appliedScopeVersion: 5, counters: {} }));
    await settle(sched);
    expect(got.map((e) => [e.wantsReply, e.replyTo, e.body.case === 'heartbeat' && e.body.value.nodeId])).toEqual([
      [false, 0, 2],
      [false, 0, 3],
    ]);
    expect(got.map((e) => e.seq)).toEqual([2, 3]); // seq counts every message the client sent
    expect(server.counters.snapshot()).toMatchObject({ rx_unsolicited: 2, rx_unhandled: 1, handler_errors: 1, tx_messages: 0 });
  });

  it('close(): pending requests reject at once, the peer sees the close, later calls fail cleanly', async () => {
    const { sched, client, server } = await memSetup();
    server.onRequest(() => undefined);
    const reasons: CloseReason[] = [];
    const serverReasons: CloseReason[] = [];
    client.onClose((r) => reasons.push(r));
    server.onClose((r) => serverReasons.push(r));
    const t = track(client.request(body('ping', {}), 10_000));
    await settle(sched);
    client.close();
    await settle(sched);
    expect(t.state).toBe('rejected');
    expectCode(t.error, ErrorCode.CONNECTION_CLOSED);
    expect(reasons).toEqual(['local']);
    expect(serverReasons).toEqual(['remote']);
    expect(client.closed && server.closed).toBe(true);

    const late = track(client.request(body('ping', {}), 100));
    await settle(sched);
    expectCode(late.error, ErrorCode.CONNECTION_CLOSED);
    expect(client.send(body('ping', {}))).toBe(false);
    expect(server.send(body('ping', {}))).toBe(false);
    expect(client.counters.get(C.tx_failed)).toBe(1);
    sched.runFor(20_000); // the cancelled timeout must not count
    expect(client.counters.get(C.timeouts)).toBe(0);
    const calledLate: CloseReason[] = [];
    client.onClose((r) => calledLate.push(r));
    expect(calledLate).toEqual(['local']);
  });

  it('the peer closing rejects pending requests with BATON_CONNECTION_CLOSED', async () => {
    const { sched, client, server } = await memSetup();
    server.onRequest(() => undefined);
    const t = track(client.request(body('ping', {}), 10_000));
    await settle(sched);
    server.close();
    await settle(sched);
    expect(expectCode(t.error, ErrorCode.CONNECTION_CLOSED).details).toMatchObject({ reason: 'remote' });
  });

  it('rejects a bad timeout with BATON_BAD_ARGUMENT', async () => {
    const { client } = await memSetup();
    for (const ms of [0, -5, Number.NaN, Infinity]) {
      let err: unknown;
      await client.request(body('ping', {}), ms).catch((e: unknown) => (err = e));
      expect(expectCode(err, ErrorCode.BAD_ARGUMENT).message).toContain('timeoutMs');
    }
    expect(client.counters.get(C.tx_messages)).toBe(0);
  });

  it('garbage frames are counted by reason; answerable requests get a stable ErrorReply; the connection stays up', async () => {
    const { sched, server, connect } = await memSetup();
    server.onRequest(() => STATUS);
    const { raw, peer } = await connect(); // a raw peer: we write frames by hand and read the answers
    const srv = new ControlChannel(peer, sched);
    srv.onRequest(() => STATUS);
    const answers: EnvelopeObject[] = [];
    raw.onMessage((m) => {
      const r = decodeEnvelope(m);
      if (!r.ok) throw new Error(`server sent garbage: ${r.code}`);
      answers.push(r.env);
    });
    const sends: [Uint8Array, string][] = [
      [Buffer.from('0f', 'hex'), 'bad_protobuf'],
      [Buffer.from('ffffffffffffffffffffff', 'hex'), 'bad_protobuf'],
      [frame({ protocolVersion: 2, seq: 10, wantsReply: true, body: body('statusRequest', {}) }), 'bad_version (request: answered)'],
      [frame({ protocolVersion: 2, seq: 11, wantsReply: false, body: body('ping', {}) }), 'bad_version (not a reply: answered)'],
      [frame({ protocolVersion: 2, seq: 12, replyTo: 3, body: body('pong', {}) }), 'bad_version (a reply: never answered)'],
      [Buffer.from('0801' + '100d' + '2001' + 'b20200', 'hex'), 'unknown_body request seq 13 (answered)'],
      [Buffer.from('0801' + '100e' + 'b20200', 'hex'), 'unknown_body fire-and-forget (not answered)'],
      [Buffer.from('0801' + '100f' + '2001', 'hex'), 'empty_body request seq 15 (answered)'],
      [Buffer.from('0801' + '1010', 'hex'), 'empty_body, not a request (not answered)'],
      [frame({ seq: 20, replyTo: 999, body: body('pong', {}) }), 'reply to nothing'],
    ];
    for (const [f] of sends) expect(raw.send(f)).toBe(true);
    raw.send(frame({ seq: 21, wantsReply: true, body: body('statusRequest', {}) }));
    await settle(sched);
    expect(srv.counters.snapshot()).toMatchObject({
      rx_bad_protobuf: 2,
      rx_bad_version: 3,
      rx_unknown_body: 2,
      rx_empty_body: 2,
      rx_unexpected_reply: 1,
      rx_messages: 2,
      rx_requests: 1,
    });
    expect(answers.map((a) => [a.replyTo, a.body.case === 'errorReply' ? a.body.value.code : a.body.case])).toEqual([
      [10, ErrorCode.BAD_VERSION],
      [11, ErrorCode.BAD_VERSION],
      [13, ErrorCode.UNKNOWN_MESSAGE],
      [15, ErrorCode.EMPTY_BODY],
      [21, 'statusResponse'],
    ]);
    expect(answers.every((a) => a.protocolVersion === PROTOCOL_VERSION && !a.wantsReply)).toBe(true);
    expect(srv.closed).toBe(false);
  });
});

// ------------------------------------------------------------ real TCP ----

/** A raw TCP client that writes arbitrary bytes and reads length-prefixed frames. */
class RawClient {
  readonly sock: net.Socket;
  private buf = Buffer.alloc(0);
  private readonly frames: Buffer[] = [];
  private waiters: ((f: Buffer) => void)[] = [];
  readonly closed: Promise<void>;
  constructor(port: number) {
    this.sock = net.connect({ host: '127.0.0.1', port });
    this.closed = new Promise((r) => this.sock.on('close', () => r()));
    this.sock.on('error', () => {});
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const n = this.buf.readUInt32BE(0);
        const f = this.buf.subarray(4, 4 + n);
        this.buf = this.buf.subarray(4 + n);
        const w = this.waiters.shift();
        if (w) w(f);
        else this.frames.push(f);
      }
    });
  }
  /** Local port, remembered at connect (the socket forgets it once closed). */
  port = 0;
  ready(): Promise<void> {
    return new Promise((r) =>
      this.sock.once('connect', () => {
        this.port = this.sock.localPort!;
        r();
      }),
    );
  }
  writeFrame(payload: Uint8Array): void {
    const h = Buffer.alloc(4);
    h.writeUInt32BE(payload.length, 0);
    this.sock.write(Buffer.concat([h, payload]));
  }
  nextFrame(): Promise<Buffer> {
    const f = this.frames.shift();
    return f ? Promise.resolve(f) : new Promise((r) => this.waiters.push(r));
  }
  /** Next frame that answers `seq` (other frames are answers to garbage that happened to decode). */
  async replyTo(seq: number): Promise<EnvelopeObject> {
    for (;;) {
      const r = decodeEnvelope(await this.nextFrame());
      if (r.ok && r.env.replyTo === seq) return r.env;
    }
  }
}

describe('ControlChannel over real TcpNet on 127.0.0.1', () => {
  const cleanups: (() => void | Promise<void>)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  async function tcpServer() {
    const sched = new RealScheduler();
    const tnet = new TcpNet();
    const channels: { ch: ControlChannel; port: number; reasons: CloseReason[] }[] = [];
    const listener: MessageListener = await tnet.listen({ host: '127.0.0.1', port: 0 }, (conn) => {
      const ch = new ControlChannel(conn, sched);
      const entry = { ch, port: conn.remote.port, reasons: [] as CloseReason[] };
      ch.onClose((r) => entry.reasons.push(r));
      ch.onRequest((env) => (env.body.case === 'statusRequest' ? STATUS : body('pong', {})));
      channels.push(entry);
    });
    cleanups.push(() => listener.close());
    const client = new ControlChannel(await tnet.connect(listener.address), sched);
    cleanups.push(() => client.close());
    const raw = async () => {
      const c = new RawClient(listener.address.port);
      cleanups.push(() => void c.sock.destroy());
      await c.ready();
      return c;
    };
    const serverChannelOf = (c: RawClient) => channels.find((e) => e.port === c.port)!;
    return { sched, listener, client, raw, serverChannelOf };
  }

  it('request/response', async () => {
    const { client } = await tcpServer();
    const rep = await client.request(body('statusRequest', {}), 5000);
    expect(rep.body).toEqual(STATUS);
    expect(rep.replyTo).toBe(1);
    const pong = await client.request(body('ping', {}), 5000);
    expect(pong).toMatchObject({ replyTo: 2, body: { case: 'pong' } });
  });

  it('garbage written to the raw socket is counted, then a valid request on the same connection still works', async () => {
    const { raw, serverChannelOf } = await tcpServer();
    const c = await raw();
    c.writeFrame(Buffer.from('0f', 'hex')); // invalid wire type
    c.writeFrame(Buffer.from('ffffffffffffffffffffff', 'hex')); // endless varint
    c.writeFrame(Buffer.from('080182010a', 'hex')); // truncated field
    c.writeFrame(frame({ protocolVersion: 9, seq: 5, wantsReply: true, body: body('statusRequest', {}) }));
    c.writeFrame(frame({ seq: 6, wantsReply: true, body: body('statusRequest', {}) }));
    const bad = await c.replyTo(5);
    expect(bad.body).toEqual(body('errorReply', { code: ErrorCode.BAD_VERSION, message: expect.stringContaining('9') as unknown as string }));
    const good = await c.replyTo(6); // TCP is ordered: every frame above was processed before this answer
    expect(good.body).toEqual(STATUS);
    const s = serverChannelOf(c);
    expect(s.ch.counters.snapshot()).toMatchObject({ rx_bad_protobuf: 3, rx_bad_version: 1, rx_messages: 1, rx_requests: 1 });
    expect(s.ch.closed).toBe(false);

    // Seeded random frames: whatever each decodes to, it is accounted for exactly once and the connection survives.
    const rnd = mulberry32(0x9a7ba9e);
    const N = 200;
    for (let i = 0; i < N; i++) {
      const f = new Uint8Array(rnd() % 64);
      for (let j = 0; j < f.length; j++) f[j] = rnd() & 0xff;
      c.writeFrame(f);
    }
    c.writeFrame(frame({ seq: 7, wantsReply: true, body: body('ping', {}) }));
    expect((await c.replyTo(7)).body.case).toBe('pong');
    const k = s.ch.counters.snapshot();
    const accounted = k.rx_bad_protobuf! + k.rx_bad_version! + k.rx_empty_body! + k.rx_unknown_body! + k.rx_messages!;
    expect(accounted).toBe(3 + 1 + 1 + N + 1);
    expect(s.ch.closed).toBe(false);
  });

  it('an over-size length prefix closes only that connection', async () => {
    const { client, raw, serverChannelOf } = await tcpServer();
    const ok = await raw();
    const evil = await raw();
    evil.sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await evil.closed;
    const s = serverChannelOf(evil);
    await new Promise<void>((r) => s.ch.onClose(() => r()));
    expect(s.reasons).toEqual(['frame_too_large']);
    // Everyone else is unaffected.
    expect((await client.request(body('statusRequest', {}), 5000)).body).toEqual(STATUS);
    ok.writeFrame(frame({ seq: 1, wantsReply: true, body: body('ping', {}) }));
    expect((await ok.replyTo(1)).body.case).toBe('pong');
    expect(serverChannelOf(ok).ch.closed).toBe(false);
  });

  it('a request to a peer that never answers times out on real time', async () => {
    const silent = await new TcpNet().listen({ host: '127.0.0.1', port: 0 }, () => {}); // accepts, never reads or answers
    cleanups.push(() => silent.close());
    const ch = new ControlChannel(await new TcpNet().connect(silent.address), new RealScheduler());
    cleanups.push(() => ch.close());
    let err: unknown;
    await ch.request(body('ping', {}), 50).catch((e: unknown) => (err = e));
    expectCode(err, ErrorCode.TIMEOUT);
    expect(ch.counters.get(C.timeouts)).toBe(1);
  });
});
