/** TCP message framing: frames split anywhere (even inside the length prefix) or packed together arrive whole and in order. */
import { it, expect } from 'vitest';
import net from 'node:net';
import { TcpNet, type MessageConnection } from '../shared/io/stream.js';
import { mulberry32 } from '../shared/random.js';

it('reassembles frames from arbitrary TCP segmentation', async () => {
  const got: Uint8Array[] = [];
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => (resolveDone = r));
  const rnd = mulberry32(42);
  const frames = Array.from({ length: 60 }, (_, i) => Uint8Array.from({ length: i === 7 ? 3_000_000 : rnd() % 3000 }, () => rnd() & 0xff));
  const l = await new TcpNet().listen({ host: '127.0.0.1', port: 0 }, (c: MessageConnection) =>
    c.onMessage((m) => {
      got.push(Uint8Array.from(m));
      if (got.length === frames.length) resolveDone();
    }),
  );
  const wire = Buffer.concat(frames.flatMap((f) => [Buffer.from([f.length >>> 24, (f.length >>> 16) & 255, (f.length >>> 8) & 255, f.length & 255]), Buffer.from(f)]));
  const s = net.connect(l.address.port, l.address.host);
  s.setNoDelay(true);
  await new Promise((r) => s.once('connect', r));
  // Cut the byte stream at random places: 1..70000-byte writes, each flushed on its own.
  for (let off = 0; off < wire.length; ) {
    const n = Math.min(wire.length - off, 1 + (rnd() % (rnd() % 4 === 0 ? 3 : 70_000)));
    await new Promise<void>((r) => s.write(wire.subarray(off, off + n), () => r()));
    off += n;
  }
  await done;
  s.destroy();
  await l.close();
  expect(got.length).toBe(frames.length);
  got.forEach((g, i) => expect(Buffer.compare(Buffer.from(g), Buffer.from(frames[i]!))).toBe(0));
});
