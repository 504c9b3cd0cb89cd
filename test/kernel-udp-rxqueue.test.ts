/**
 * The kernel receive queue of a UDP socket (/proc/net/udp rx_queue), which a
 * disengaging FD must see empty before it reports DISENGAGED.
 */
import { it, expect } from 'vitest';
import dgram from 'node:dgram';
import { parseUdpRxQueue, kernelUdpRxQueue } from '../shared/io/kernel-udp-stats.js';

// As the kernel prints it: tx_queue:rx_queue is one field.
const PROC = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:1F90 00000000:0000 07 00000000:00000A40 00:00000000 00000000     0        0 81234 2 0000000000000000 17
  102: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 81236 2 0000000000000000 0
`;

it('reads the rx_queue bytes of the socket by address and port', () => {
  const le = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  if (!le) return; // the fixture is written for little-endian hosts
  expect(parseUdpRxQueue(PROC, { host: '127.0.0.1', port: 8080 })).toBe(0xa40);
  expect(parseUdpRxQueue(PROC, { host: '127.0.0.9', port: 53 })).toBe(0); // bound to 0.0.0.0
  expect(parseUdpRxQueue(PROC, { host: '127.0.0.1', port: 9999 })).toBeNull();
  expect(parseUdpRxQueue('garbage', { host: '127.0.0.1', port: 8080 })).toBeNull();
});

it.runIf(process.platform === 'linux')('is 0 for a live socket that reads what it gets, null for one that does not exist', async () => {
  const rx = dgram.createSocket('udp4');
  await new Promise<void>((r) => rx.bind(0, '127.0.0.1', () => r()));
  try {
    const addr = { host: '127.0.0.1', port: rx.address().port };
    expect(kernelUdpRxQueue(addr)).toBe(0);
  } finally {
    await new Promise<void>((r) => rx.close(() => r()));
  }
  expect(kernelUdpRxQueue({ host: '127.0.0.1', port: 1 })).toBeNull();
});
