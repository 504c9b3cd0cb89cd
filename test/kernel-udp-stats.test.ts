import { describe, it, expect } from 'vitest';
import dgram from 'node:dgram';
import { parseUdpDrops, kernelUdpDrops } from '../shared/io/kernel-udp-stats.js';

const FIXTURE = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:1F90 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 81234 2 0000000000000000 17
  102: 0200007F:1F90 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 81235 2 0000000000000000 5
  103: 00000000:0035 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 81236 2 0000000000000000 0
`;

describe('kernel UDP drop counter (/proc/net/udp)', () => {
  it('finds the socket by address and port, wildcard binds included', () => {
    const le = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
    if (!le) return; // the fixture is written for little-endian hosts
    expect(parseUdpDrops(FIXTURE, { host: '127.0.0.1', port: 8080 })).toBe(17);
    expect(parseUdpDrops(FIXTURE, { host: '127.0.0.2', port: 8080 })).toBe(5);
    expect(parseUdpDrops(FIXTURE, { host: '127.0.0.9', port: 53 })).toBe(0); // bound to 0.0.0.0
    expect(parseUdpDrops(FIXTURE, { host: '127.0.0.1', port: 9999 })).toBeNull();
    expect(parseUdpDrops('garbage\n\n1 2 3', { host: '127.0.0.1', port: 8080 })).toBeNull();
  });

  it.runIf(process.platform === 'linux')('counts what a full receive buffer drops on a real socket', async () => {
    const rx = dgram.createSocket('udp4');
    const tx = dgram.createSocket('udp4');
    await new Promise<void>((r) => rx.bind(0, '127.0.0.1', () => r()));
    await new Promise<void>((r) => tx.bind(0, '127.0.0.1', () => r())); // bound: sends go out at once, not queued behind a bind
    rx.setRecvBufferSize(4096);
    const addr = { host: '127.0.0.1', port: rx.address().port };
    expect(kernelUdpDrops(addr)).toBe(0);
    let received = 0;
    rx.on('message', () => received++);
    const payload = Buffer.alloc(1000);
    const sent = 2000;
    // Synchronous burst: the event loop cannot read until it ends, so the small buffer overflows.
    await new Promise<void>((r) => {
      let done = 0;
      for (let i = 0; i < sent; i++) tx.send(payload, addr.port, addr.host, () => ++done === sent && r());
    });
    await new Promise<void>((r) => tx.close(() => r()));
    const drops = kernelUdpDrops(addr)!;
    await new Promise<void>((r) => rx.close(() => r()));
    expect(drops).toBeGreaterThan(0);
    expect(received + drops).toBeLessThanOrEqual(sent);
  });
});
