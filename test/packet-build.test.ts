import { describe, expect, it } from 'vitest';
import { buildPacket, packetLength, type PacketSpec } from '../shared/packet/build.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { bytesToHex, hexToBytes, KAT } from './fixtures/packets.js';

const BASE: PacketSpec = { srcIp: 0x0a000001, dstIp: 0x0a000002, srcPort: 1234, dstPort: 80, proto: 6 };

describe('buildPacket known answers (python3-built bytes)', () => {
  it.each(KAT.map((k) => [k.name, k] as const))('%s', (_n, k) => {
    const p = buildPacket(k.spec);
    expect(bytesToHex(p)).toBe(k.hex);
    expect(packetLength(k.spec)).toBe(k.hex.length / 2);
  });

  it('writes at an offset into a caller buffer, touching only the packet bytes', () => {
    const k = KAT[1]!;
    const n = k.hex.length / 2;
    const out = new Uint8Array(n + 10).fill(0xee);
    const view = buildPacket(k.spec, out, 7);
    expect(view.buffer).toBe(out.buffer);
    expect(view.byteOffset).toBe(7);
    expect(view.length).toBe(n);
    expect(bytesToHex(view)).toBe(k.hex);
    expect([...out.subarray(0, 7), ...out.subarray(7 + n)]).toEqual(new Array(10).fill(0xee));
  });

  it('zeroes stale bytes in the option padding of a reused buffer', () => {
    const k = KAT[1]!; // 3-byte options, padded with one zero
    const out = new Uint8Array(k.hex.length / 2).fill(0xff);
    expect(bytesToHex(buildPacket(k.spec, out))).toBe(k.hex);
  });

  it('empty tcpOptions/payload arrays equal omitted ones', () => {
    expect(buildPacket({ ...BASE, tcpOptions: new Uint8Array(0), payload: new Uint8Array(0) })).toEqual(buildPacket(BASE));
  });

  it('accepts the largest IPv4 packet (65535 bytes)', () => {
    const p = buildPacket({ ...BASE, proto: 17, payload: new Uint8Array(65535 - 28) });
    expect(p.length).toBe(65535);
    expect(p[2]).toBe(0xff);
    expect(p[3]).toBe(0xff);
  });
});

describe('buildPacket rejects impossible specs with BAD_ARGUMENT naming the field', () => {
  const cases: [string, PacketSpec, string][] = [
    ['srcPort > 65535', { ...BASE, srcPort: 65536 }, 'srcPort'],
    ['dstPort negative', { ...BASE, dstPort: -1 }, 'dstPort'],
    ['srcPort fractional', { ...BASE, srcPort: 1.5 }, 'srcPort'],
    ['srcIp > 2^32-1', { ...BASE, srcIp: 2 ** 32 }, 'srcIp'],
    ['dstIp NaN', { ...BASE, dstIp: NaN }, 'dstIp'],
    ['proto ICMP', { ...BASE, proto: 1 }, 'proto'],
    ['tcpFlags 256', { ...BASE, tcpFlags: 256 }, 'tcpFlags'],
    ['seq 2^32', { ...BASE, seq: 2 ** 32 }, 'seq'],
    ['ack negative', { ...BASE, ack: -1 }, 'ack'],
    ['window 65536', { ...BASE, window: 65536 }, 'window'],
    ['ttl 256', { ...BASE, ttl: 256 }, 'ttl'],
    ['id 65536', { ...BASE, id: 65536 }, 'id'],
    ['41 bytes of TCP options', { ...BASE, tcpOptions: new Uint8Array(41) }, 'tcpOptions'],
    ['TCP options on UDP', { ...BASE, proto: 17, tcpOptions: new Uint8Array(4) }, 'tcpOptions'],
    ['payload too large for IPv4 (TCP)', { ...BASE, payload: new Uint8Array(65535 - 40 + 1) }, 'payload'],
    ['payload too large for IPv4 (UDP)', { ...BASE, proto: 17, payload: new Uint8Array(65535 - 28 + 1) }, 'payload'],
  ];
  it.each(cases)('%s', (_n, spec, field) => {
    let err: unknown;
    try {
      buildPacket(spec);
    } catch (e) {
      err = e;
    }
    expect(isBatonError(err, ErrorCode.BAD_ARGUMENT)).toBe(true);
    expect((err as Error).message).toContain(field);
    expect(() => packetLength(spec)).toThrow();
  });

  it('out too small / bad offset', () => {
    const n = packetLength(BASE);
    for (const [out, off] of [
      [new Uint8Array(n - 1), 0],
      [new Uint8Array(n), 1],
      [new Uint8Array(n + 5), -1],
      [new Uint8Array(n + 5), 0.5],
    ] as const) {
      expect(() => buildPacket(BASE, out, off)).toThrow(expect.objectContaining({ code: ErrorCode.BAD_ARGUMENT }));
    }
    expect(() => buildPacket(BASE, new Uint8Array(n), 0)).not.toThrow();
  });

  it('TCP-only scalar fields are ignored for UDP', () => {
    const udp: PacketSpec = { ...BASE, proto: 17, payload: hexToBytes('00') };
    expect(buildPacket({ ...udp, tcpFlags: 0x12, seq: 9, ack: 9, window: 9 })).toEqual(buildPacket(udp));
  });
});
