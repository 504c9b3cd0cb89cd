/**
 * Packet codec throughput on 64-byte TCP packets (20 IP + 20 TCP + 24 payload):
 * parse + full verification (IP and TCP checksums), and in-place rewriteDst.
 *
 * Baselines, measured in the same run, are what a typical JS implementation
 * does: a Buffer view per packet, Buffer read/write methods, a fresh object
 * per parsed packet, and checksums recomputed from scratch after a rewrite.
 */
import type { BenchCase, BenchResult } from '../lib.js';
import { consume, mulberry32, rateResult, sampleRate } from '../lib.js';
import { buildPacket } from '../../shared/packet/build.js';
import { parseIPv4 } from '../../shared/packet/parse.js';
import { rewriteDst } from '../../shared/packet/rewrite.js';
import { PacketMeta } from '../../shared/packet/meta.js';
import { Reject } from '../../shared/packet/reject.js';

const PKT = 64;
const SLOTS = 256; // distinct packets, cycled, so nothing is constant-folded

function makePackets(): Uint8Array {
  const rnd = mulberry32(0xc0dec);
  const buf = new Uint8Array(PKT * SLOTS);
  for (let i = 0; i < SLOTS; i++) {
    const payload = new Uint8Array(24);
    for (let j = 0; j < 24; j++) payload[j] = rnd() & 0xff;
    buildPacket(
      { srcIp: rnd(), dstIp: rnd(), srcPort: rnd() & 0xffff, dstPort: rnd() & 0xffff, proto: 6, seq: rnd(), ack: rnd(), payload },
      buf,
      i * PKT,
    );
  }
  return buf;
}

// ---- naive baseline -------------------------------------------------------

interface NaivePacket {
  version: number; ihl: number; totalLength: number; id: number; flags: number; fragOffset: number; ttl: number;
  protocol: number; srcIp: number; dstIp: number; srcPort: number; dstPort: number; seq: number; ack: number;
  dataOffset: number; tcpFlags: number; window: number; payloadLength: number; valid: boolean;
}

function naiveSum(b: Buffer, start: number, end: number, init: number): number {
  let s = init;
  for (let i = start; i < end; i += 2) s += i + 1 < end ? b.readUInt16BE(i) : b.readUInt8(i) << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function naiveTcpSum(b: Buffer, ihl: number, total: number): number {
  const pseudo = b.readUInt16BE(12) + b.readUInt16BE(14) + b.readUInt16BE(16) + b.readUInt16BE(18) + b.readUInt8(9) + (total - ihl);
  return naiveSum(b, ihl, total, pseudo);
}

function naiveParse(mem: Buffer, off: number, len: number): NaivePacket {
  const b = mem.subarray(off, off + len);
  const vihl = b.readUInt8(0);
  const ihl = (vihl & 15) * 4;
  const totalLength = b.readUInt16BE(2);
  const ff = b.readUInt16BE(6);
  const dataOffset = (b.readUInt8(ihl + 12) >> 4) * 4;
  const p: NaivePacket = {
    version: vihl >> 4, ihl, totalLength, id: b.readUInt16BE(4), flags: ff >> 13, fragOffset: ff & 0x1fff,
    ttl: b.readUInt8(8), protocol: b.readUInt8(9), srcIp: b.readUInt32BE(12), dstIp: b.readUInt32BE(16),
    srcPort: b.readUInt16BE(ihl), dstPort: b.readUInt16BE(ihl + 2), seq: b.readUInt32BE(ihl + 4), ack: b.readUInt32BE(ihl + 8),
    dataOffset, tcpFlags: b.readUInt8(ihl + 13), window: b.readUInt16BE(ihl + 14), payloadLength: totalLength - ihl - dataOffset,
    valid: false,
  };
  p.valid = p.version === 4 && naiveSum(b, 0, ihl, 0) === 0xffff && naiveTcpSum(b, ihl, totalLength) === 0xffff;
  return p;
}

function naiveRewriteDst(mem: Buffer, off: number, ip: number, port: number): void {
  const b = mem.subarray(off, off + PKT);
  const ihl = (b.readUInt8(0) & 15) * 4;
  const total = b.readUInt16BE(2);
  b.writeUInt32BE(ip >>> 0, 16);
  b.writeUInt16BE(port, ihl + 2);
  b.writeUInt16BE(0, 10);
  b.writeUInt16BE(~naiveSum(b, 0, ihl, 0) & 0xffff, 10);
  b.writeUInt16BE(0, ihl + 16);
  b.writeUInt16BE(~naiveTcpSum(b, ihl, total) & 0xffff, ihl + 16);
}

const codec: BenchCase = {
  id: 'codec',
  title: 'IPv4/TCP codec: parse+verify and rewriteDst, 64-byte TCP packets',
  async run(progress) {
    const mem = makePackets();
    const memBuf = Buffer.from(mem.buffer, mem.byteOffset, mem.byteLength);
    const meta = new PacketMeta();
    const metas: PacketMeta[] = [];
    for (let i = 0; i < SLOTS; i++) {
      const m = new PacketMeta();
      if (parseIPv4(mem, i * PKT, PKT, m) !== Reject.OK || !naiveParse(memBuf, i * PKT, PKT).valid) {
        throw new Error(`codec bench: generated packet ${i} does not parse`);
      }
      metas.push(m);
    }

    progress('codec: parse+verify (Baton)');
    const parseRate = sampleRate((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        acc += parseIPv4(mem, (i & (SLOTS - 1)) * PKT, PKT, meta, true) + meta.dstPort;
      }
      consume(acc);
    });
    progress('codec: parse+verify (naive Buffer + object)');
    const naiveParseRate = sampleRate((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const p = naiveParse(memBuf, (i & (SLOTS - 1)) * PKT, PKT);
        acc += (p.valid ? 0 : 1) + p.dstPort;
      }
      consume(acc);
    });

    progress('codec: rewriteDst (Baton, incremental checksum)');
    const rewriteRate = sampleRate((n) => {
      for (let i = 0; i < n; i++) {
        const s = i & (SLOTS - 1);
        rewriteDst(mem, metas[s]!, 0x0a000000 + (i & 0xffff), i & 0xffff);
      }
      consume(metas[0]!.dstPort);
    });
    progress('codec: rewriteDst (naive, full recompute)');
    const naiveRewriteRate = sampleRate((n) => {
      for (let i = 0; i < n; i++) naiveRewriteDst(memBuf, (i & (SLOTS - 1)) * PKT, 0x0a000000 + (i & 0xffff), i & 0xffff);
      consume(memBuf[17]!);
    });

    // Both rewrite loops must have left valid packets behind.
    for (let i = 0; i < SLOTS; i++) {
      if (parseIPv4(mem, i * PKT, PKT, meta) !== Reject.OK) throw new Error(`codec bench: packet ${i} invalid after rewrites`);
    }

    const results: BenchResult[] = [
      rateResult('parse+verify 64B TCP', parseRate, 'pkt/s', naiveParseRate, 'naive Buffer/object parse+verify'),
      rateResult('rewriteDst 64B TCP', rewriteRate, 'pkt/s', naiveRewriteRate, 'naive Buffer write + full checksum recompute'),
    ];
    return results;
  },
};

export default codec;
