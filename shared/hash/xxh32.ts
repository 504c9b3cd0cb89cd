/**
 * xxHash32 (Yann Collet's XXH32) in pure JS, plus the canonical 5-tuple key
 * and a buffer-free 5-tuple hash that is bit-identical to xxh32 over that key.
 *
 * Why pure JS and not xxhash-wasm: a 13-byte key is far too short to amortise
 * the JS->wasm call and the copy into wasm memory; hashing straight from the
 * integer fields measured several times faster than h32Raw
 * (docs/decisions/0004-xxh32-pure-js.md; bench/cases/hash.ts measures it).
 * xxhash-wasm stays the test oracle. Layout and seeds: docs/hashing.md.
 */
import { BatonError, ErrorCode } from '../errors.js';

// The five XXH32 primes, as int32 values for Math.imul.
const P1 = 0x9e3779b1 | 0;
const P2 = 0x85ebca77 | 0;
const P3 = 0xc2b2ae3d | 0;
const P4 = 0x27d4eb2f | 0;
const P5 = 0x165667b1 | 0;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function readLE32(b: Uint8Array, i: number): number {
  return b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
}

function round(acc: number, lane: number): number {
  return Math.imul(rotl((acc + Math.imul(lane, P2)) | 0, 13), P1);
}

/**
 * Generic XXH32 over buf[off, off+len). Straightforward reference code (the
 * "JS baseline" in benches; also used to hash node names). Returns a uint32.
 * Throws BatonError(BAD_ARGUMENT) if the range is not inside the buffer.
 */
export function xxh32(buf: Uint8Array, off: number, len: number, seed = 0): number {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > buf.length) {
    throw new BatonError(
      ErrorCode.BAD_ARGUMENT,
      `xxh32: range off=${off} len=${len} is not inside a buffer of length ${buf.length}`,
      { off, len, bufferLength: buf.length },
    );
  }
  seed |= 0;
  const end = off + len;
  let i = off;
  let acc: number;
  if (len >= 16) {
    let v1 = (seed + P1 + P2) | 0;
    let v2 = (seed + P2) | 0;
    let v3 = seed;
    let v4 = (seed - P1) | 0;
    const limit = end - 16;
    while (i <= limit) {
      v1 = round(v1, readLE32(buf, i));
      v2 = round(v2, readLE32(buf, i + 4));
      v3 = round(v3, readLE32(buf, i + 8));
      v4 = round(v4, readLE32(buf, i + 12));
      i += 16;
    }
    acc = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    acc = (seed + P5) | 0;
  }
  acc = (acc + len) | 0;
  while (i + 4 <= end) {
    acc = Math.imul(rotl((acc + Math.imul(readLE32(buf, i), P3)) | 0, 17), P4);
    i += 4;
  }
  while (i < end) {
    acc = Math.imul(rotl((acc + Math.imul(buf[i]!, P5)) | 0, 11), P1);
    i++;
  }
  acc ^= acc >>> 15;
  acc = Math.imul(acc, P2);
  acc ^= acc >>> 13;
  acc = Math.imul(acc, P3);
  acc ^= acc >>> 16;
  return acc >>> 0;
}

const utf8 = new TextEncoder();

/** xxh32 of the UTF-8 bytes of a string (node names; not for the hot path). */
export function xxh32Utf8(s: string, seed = 0): number {
  const b = utf8.encode(s);
  return xxh32(b, 0, b.length, seed);
}

/** Length in bytes of the canonical 5-tuple key. */
export const FIVE_TUPLE_KEY_LEN = 13;

/**
 * Writes the canonical 5-tuple key (frozen layout, network byte order):
 *   [0..3]  srcIp   big-endian
 *   [4..7]  dstIp   big-endian
 *   [8..9]  srcPort big-endian
 *   [10..11] dstPort big-endian
 *   [12]    proto
 * IPs are host-order uint32 (as in PacketMeta); only the low 16 bits of the
 * ports and the low 8 bits of proto are used. out must have 13 bytes at off.
 */
export function writeFiveTupleKey(
  out: Uint8Array,
  off: number,
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
): void {
  out[off] = srcIp >>> 24;
  out[off + 1] = srcIp >>> 16;
  out[off + 2] = srcIp >>> 8;
  out[off + 3] = srcIp;
  out[off + 4] = dstIp >>> 24;
  out[off + 5] = dstIp >>> 16;
  out[off + 6] = dstIp >>> 8;
  out[off + 7] = dstIp;
  out[off + 8] = srcPort >>> 8;
  out[off + 9] = srcPort;
  out[off + 10] = dstPort >>> 8;
  out[off + 11] = dstPort;
  out[off + 12] = proto;
}

/**
 * xxh32(canonical 13-byte key, seed) computed from the integer fields, with
 * no buffer. Hot path: no allocation, no calls (rotl and byte swaps inlined).
 *
 * xxh32 reads 4-byte lanes little-endian, while the key stores the fields
 * big-endian, so lanes 0 and 1 are the byte-swapped IPs and lane 2 is
 * srcPort and dstPort each byte-swapped into the low/high halves. With
 * len = 13 < 16 only the short path runs: acc = seed + P5 + 13, three lanes,
 * one trailing byte (proto), avalanche.
 *
 * A thin wrapper over hashFiveTupleI32: the body is too large for V8 to
 * inline, and a uint32 returned from a call that is not inlined is boxed
 * (an allocation per packet for half the hashes), and so is a uint32
 * argument above 2^31 (an IPv4 address from 128.0.0.0 up) passed to it. The
 * wrapper hands the addresses over as int32 and gets an int32 back (same
 * bits), and is small enough to be inlined at every caller.
 */
export function hashFiveTuple(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, seed: number): number {
  return hashFiveTupleI32(srcIp | 0, dstIp | 0, srcPort, dstPort, proto, seed) >>> 0;
}

/** hashFiveTuple as an int32 (the same 32 bits, `| 0`). */
export function hashFiveTupleI32(
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
  seed: number,
): number {
  // Lanes as they would be read little-endian from the big-endian key bytes.
  const l0 = (srcIp << 24) | ((srcIp & 0xff00) << 8) | ((srcIp >>> 8) & 0xff00) | (srcIp >>> 24);
  const l1 = (dstIp << 24) | ((dstIp & 0xff00) << 8) | ((dstIp >>> 8) & 0xff00) | (dstIp >>> 24);
  const l2 =
    ((srcPort >>> 8) & 0xff) | ((srcPort & 0xff) << 8) | ((dstPort & 0xff00) << 8) | ((dstPort & 0xff) << 24);

  let acc = (seed + (P5 + 13)) | 0;
  let t: number;
  t = (acc + Math.imul(l0, P3)) | 0;
  acc = Math.imul((t << 17) | (t >>> 15), P4);
  t = (acc + Math.imul(l1, P3)) | 0;
  acc = Math.imul((t << 17) | (t >>> 15), P4);
  t = (acc + Math.imul(l2, P3)) | 0;
  acc = Math.imul((t << 17) | (t >>> 15), P4);
  t = (acc + Math.imul(proto & 0xff, P5)) | 0;
  acc = Math.imul((t << 11) | (t >>> 21), P1);
  acc ^= acc >>> 15;
  acc = Math.imul(acc, P2);
  acc ^= acc >>> 13;
  acc = Math.imul(acc, P3);
  acc ^= acc >>> 16;
  return acc | 0;
}

/**
 * Direction-independent 5-tuple hash: A->B and B->A give the same value.
 * The two endpoints are put in canonical order first -- the (ip, port) pair
 * that is smaller (ip compared as unsigned, then port) goes in the "src"
 * slot -- and the result is hashFiveTuple of that ordered tuple. Equal
 * endpoints need no swap. Same cost as hashFiveTuple plus two compares.
 */
export function hashFiveTupleSymmetric(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, seed: number): number {
  return hashFiveTupleSymmetricI32(srcIp | 0, dstIp | 0, srcPort, dstPort, proto, seed) >>> 0;
}

/** hashFiveTupleSymmetric as an int32 (see hashFiveTuple for why); addresses may be passed as int32 or uint32. */
export function hashFiveTupleSymmetricI32(
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
  seed: number,
): number {
  const a = srcIp >>> 0;
  const b = dstIp >>> 0;
  const ap = srcPort & 0xffff;
  const bp = dstPort & 0xffff;
  if (a > b || (a === b && ap > bp)) return hashFiveTupleI32(dstIp | 0, srcIp | 0, bp, ap, proto, seed);
  return hashFiveTupleI32(srcIp | 0, dstIp | 0, ap, bp, proto, seed);
}
