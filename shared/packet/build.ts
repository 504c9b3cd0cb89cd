/**
 * IPv4 + TCP/UDP packet builder for tests, generators and the CLI. Not on the
 * hot path: validates its input and throws BatonError(BAD_ARGUMENT); it only
 * allocates when no output buffer is given.
 */
import { BatonError, ErrorCode } from '../errors.js';
import { IPPROTO_TCP, IPPROTO_UDP, TCP_ACK } from './meta.js';
import { ipv4HeaderChecksum, l4Checksum } from './checksum.js';

export interface PacketSpec {
  srcIp: number; // host-order uint32
  dstIp: number;
  srcPort: number;
  dstPort: number;
  proto: number; // 6 | 17
  tcpFlags?: number; // default TCP_ACK (a mid-flow segment)
  seq?: number; // default 0
  ack?: number; // default 0
  window?: number; // default 65535
  tcpOptions?: Uint8Array; // padded with zeros (EOL) to a multiple of 4 by the builder; <= 40 bytes
  payload?: Uint8Array;
  ttl?: number; // default 64
  id?: number; // IPv4 identification, default 0
  udpChecksum?: boolean; // default true; false stores 0 ("no checksum")
}

const IP_HEADER = 20;
const MAX_TOTAL = 65535;

function bad(field: string, value: unknown, why: string): never {
  throw new BatonError(ErrorCode.BAD_ARGUMENT, `PacketSpec.${field}: ${why} (got ${String(value)})`, { field, value });
}

function checkUint(field: string, v: unknown, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) bad(field, v, `must be an integer in 0..${max}`);
}

function optUint(field: string, v: unknown, max: number): void {
  if (v !== undefined) checkUint(field, v, max);
}

function paddedOptionsLength(spec: PacketSpec): number {
  const n = spec.tcpOptions === undefined ? 0 : spec.tcpOptions.length;
  return (n + 3) & ~3;
}

function l4HeaderLength(spec: PacketSpec): number {
  return spec.proto === IPPROTO_TCP ? 20 + paddedOptionsLength(spec) : 8;
}

function validate(spec: PacketSpec): number {
  checkUint('srcIp', spec.srcIp, 0xffffffff);
  checkUint('dstIp', spec.dstIp, 0xffffffff);
  checkUint('srcPort', spec.srcPort, 0xffff);
  checkUint('dstPort', spec.dstPort, 0xffff);
  if (spec.proto !== IPPROTO_TCP && spec.proto !== IPPROTO_UDP) bad('proto', spec.proto, 'must be 6 (TCP) or 17 (UDP)');
  optUint('tcpFlags', spec.tcpFlags, 0xff);
  optUint('seq', spec.seq, 0xffffffff);
  optUint('ack', spec.ack, 0xffffffff);
  optUint('window', spec.window, 0xffff);
  optUint('ttl', spec.ttl, 0xff);
  optUint('id', spec.id, 0xffff);
  // tcpFlags/seq/ack/window are ignored for UDP (generators may set them for
  // both); options are refused because they would change the layout.
  if (spec.proto === IPPROTO_UDP && spec.tcpOptions !== undefined && spec.tcpOptions.length > 0) {
    bad('tcpOptions', spec.tcpOptions.length, 'TCP options given but proto is UDP');
  }
  if (spec.tcpOptions !== undefined && !(spec.tcpOptions instanceof Uint8Array)) bad('tcpOptions', spec.tcpOptions, 'must be a Uint8Array');
  if (paddedOptionsLength(spec) > 40) bad('tcpOptions', spec.tcpOptions?.length, 'at most 40 bytes of TCP options');
  if (spec.payload !== undefined && !(spec.payload instanceof Uint8Array)) bad('payload', spec.payload, 'must be a Uint8Array');
  const total = IP_HEADER + l4HeaderLength(spec) + (spec.payload === undefined ? 0 : spec.payload.length);
  if (total > MAX_TOTAL) bad('payload', spec.payload?.length, `packet would be ${total} bytes, IPv4 allows ${MAX_TOTAL}`);
  return total;
}

/** Total IPv4 length in bytes of the packet `spec` describes (validates it). */
export function packetLength(spec: PacketSpec): number {
  return validate(spec);
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/**
 * Writes a complete IPv4 (IHL 5, DF set, not fragmented) + TCP/UDP packet
 * with correct checksums into out[off..] (or a fresh buffer) and returns the
 * view of exactly the written bytes. Throws BatonError(BAD_ARGUMENT) on an
 * impossible spec or when `out` is too small.
 */
export function buildPacket(spec: PacketSpec, out?: Uint8Array, off = 0): Uint8Array {
  const total = validate(spec);
  if (out === undefined) {
    out = new Uint8Array(total);
    off = 0;
  } else {
    if (!Number.isInteger(off) || off < 0) throw new BatonError(ErrorCode.BAD_ARGUMENT, `buildPacket: off must be a non-negative integer (got ${off})`, { off });
    if (off + total > out.length) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `buildPacket: out too small: need ${total} bytes at offset ${off}, buffer has ${out.length}`, {
        need: total,
        off,
        have: out.length,
      });
    }
  }
  const p = out.subarray(off, off + total);
  const isTcp = spec.proto === IPPROTO_TCP;
  const l4h = l4HeaderLength(spec);

  // IPv4 header.
  p[0] = 0x45;
  p[1] = 0; // DSCP/ECN
  put16(p, 2, total);
  put16(p, 4, spec.id ?? 0);
  put16(p, 6, 0x4000); // DF, offset 0
  p[8] = spec.ttl ?? 64;
  p[9] = spec.proto;
  put16(p, 10, 0);
  put32(p, 12, spec.srcIp);
  put32(p, 16, spec.dstIp);

  // L4 header (checksum zero for now).
  const l4 = IP_HEADER;
  put16(p, l4, spec.srcPort);
  put16(p, l4 + 2, spec.dstPort);
  if (isTcp) {
    put32(p, l4 + 4, spec.seq ?? 0);
    put32(p, l4 + 8, spec.ack ?? 0);
    p[l4 + 12] = (l4h >>> 2) << 4;
    p[l4 + 13] = spec.tcpFlags ?? TCP_ACK;
    put16(p, l4 + 14, spec.window ?? 65535);
    put16(p, l4 + 16, 0);
    put16(p, l4 + 18, 0); // urgent pointer
    p.fill(0, l4 + 20, l4 + l4h);
    if (spec.tcpOptions !== undefined) p.set(spec.tcpOptions, l4 + 20);
  } else {
    put16(p, l4 + 4, total - IP_HEADER);
    put16(p, l4 + 6, 0);
  }
  if (spec.payload !== undefined) p.set(spec.payload, l4 + l4h);

  put16(p, 10, ipv4HeaderChecksum(p, 0, IP_HEADER));
  if (isTcp) put16(p, l4 + 16, l4Checksum(p, 0));
  else if (spec.udpChecksum !== false) put16(p, l4 + 6, l4Checksum(p, 0));
  return p;
}
