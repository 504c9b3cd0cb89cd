/**
 * The control connection's framing (shared/io/stream.ts TcpConnection, a
 * 4-byte big-endian length per message) fed chunk by chunk: a stream of
 * frames cut at arbitrary points (partial length prefixes included) comes
 * out as exactly those messages, in order; a length above MAX_FRAME_BYTES
 * closes that one connection with reason 'frame_too_large' and nothing
 * after it is delivered. Nothing throws out of the socket's data callback.
 *
 * The chunks are handed to the connection's socket as 'data' events (its
 * private `sock`, reached by a cast): the real deframer on a real loopback
 * connection, with the chunk boundaries the input chooses, which TCP itself
 * would not preserve.
 */
import fc from 'fast-check';
import type net from 'node:net';
import { TcpNet, MAX_FRAME_BYTES, type CloseReason, type MessageConnection, type MessageListener } from '../../../shared/io/stream.js';
import { ensure, hex, Tally, violated, type FuzzTarget } from '../check.js';

export interface StreamInput {
  frames: Uint8Array[];
  /** A length prefix above MAX_FRAME_BYTES after the frames (and some bytes after it). */
  oversize: { n: number; tail: Uint8Array } | null;
  /** Where the stream is cut into chunks (fractions of its length). */
  cuts: number[];
}

const arbInput: fc.Arbitrary<StreamInput> = fc.record({
  frames: fc.array(fc.oneof({ weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 70_000 }).map((n) => new Uint8Array(n).fill(n & 0xff)) }), { maxLength: 5 }),
  oversize: fc.oneof(
    { weight: 12, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.record({ n: fc.oneof(fc.constant(MAX_FRAME_BYTES + 1), fc.integer({ min: MAX_FRAME_BYTES + 1, max: 0xffffffff }), fc.constant(0xffffffff)), tail: fc.uint8Array({ maxLength: 12 }) }) },
  ),
  cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }),
});

function encodeStream(i: StreamInput): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const f of i.frames) {
    const h = new Uint8Array(4);
    new DataView(h.buffer).setUint32(0, f.length);
    parts.push(h, f);
  }
  if (i.oversize) {
    const h = new Uint8Array(4);
    new DataView(h.buffer).setUint32(0, i.oversize.n);
    parts.push(h, i.oversize.tail);
  }
  return new Uint8Array(Buffer.concat(parts));
}

const tally = new Tally();
const net_ = new TcpNet();
let listener: MessageListener | null = null;
let client: MessageConnection | null = null;
let server: MessageConnection | null = null;
let received: Uint8Array[] = [];
let closedWith: CloseReason | null = null;
let closed: Promise<void> = Promise.resolve();
let pendingServer: ((c: MessageConnection) => void) | null = null;

async function connection(): Promise<MessageConnection> {
  if (server && !server.closed && closedWith === null) return server;
  client?.close();
  listener ??= await net_.listen({ host: '127.0.0.1', port: 0 }, (c) => pendingServer?.(c));
  const accepted = new Promise<MessageConnection>((r) => (pendingServer = r));
  client = await net_.connect(listener.address);
  const s = await accepted;
  received = [];
  closedWith = null;
  closed = new Promise<void>((r) =>
    s.onClose((reason) => {
      closedWith = reason;
      r();
    }),
  );
  s.onMessage((m) => received.push(Uint8Array.from(m)));
  server = s;
  return s;
}

export const streamTarget: FuzzTarget<StreamInput> = {
  name: 'control/tcp-framing',
  covers: 'shared/io/stream.ts TcpConnection deframer (4-byte length prefix), chunked at arbitrary points',
  arbitrary: arbInput,
  tally,
  async: true,
  mustReach: ['frames', 'frame_too_large'],
  async check(input) {
    const conn = await connection();
    const sock = (conn as unknown as { sock: net.Socket }).sock;
    const stream = encodeStream(input);
    const points = [...new Set(input.cuts.map((c) => Math.floor(c * stream.length)))].sort((a, b) => a - b);
    let prev = 0;
    received = [];
    try {
      for (const p of [...points, stream.length]) {
        if (p > prev) sock.emit('data', Buffer.from(stream.subarray(prev, p)));
        prev = p;
        if (sock.destroyed) break;
      }
    } catch (e) {
      return violated(`the data callback threw ${(e as Error).message}`, e);
    }
    const what = (): string => `stream ${hex(stream, 64)} cut at ${points.join(',')}`;
    ensure(received.length === input.frames.length, () => `${what()}: ${received.length} messages out of ${input.frames.length} frames`);
    for (let i = 0; i < received.length; i++) {
      const a = received[i]!;
      const b = input.frames[i]!;
      ensure(a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0, () => `${what()}: message ${i} differs`);
    }
    if (input.oversize) {
      await closed;
      ensure(closedWith === 'frame_too_large', () => `${what()}: closed with ${String(closedWith)}, want frame_too_large`);
      tally.add('frame_too_large');
    } else {
      ensure(!sock.destroyed && closedWith === null, () => `${what()}: the connection closed (${String(closedWith)})`);
      tally.add('frames');
    }
  },
  async teardown() {
    client?.close();
    server?.close();
    await listener?.close();
    listener = null;
    client = null;
    server = null;
  },
};
