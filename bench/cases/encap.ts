/**
 * Encapsulation throughput on 88-byte frames (24-byte Geneve+Baton header +
 * 64-byte TCP packet): what an FD does to redirect a received frame —
 * decode the header, bump the hop count, set REDIRECTED, rewrite the header in
 * place — and encapsulating a packet (header + copy of the inner packet).
 *
 * Baselines, measured in the same run, are what a typical JS implementation
 * does: a DataView per frame, a fresh object per decoded header, and for
 * encoding a fresh header Buffer concatenated with the inner packet.
 */
import type { BenchCase, BenchResult } from '../lib.js';
import { consume, mulberry32, rateResult, sampleRate } from '../lib.js';
import { buildPacket } from '../../shared/packet/build.js';
import { IPPROTO_TCP } from '../../shared/packet/meta.js';
import { Reject } from '../../shared/packet/reject.js';
import {
  ENCAP_HEADER_LEN,
  ENCAP_OPTION_CLASS,
  ENCAP_OPTION_TYPE,
  EncapFlag,
  EncapMeta,
  Tier,
  decodeEncap,
  encodeEncap,
  writeEncapHeader,
} from '../../shared/encap/geneve.js';

const INNER = 64;
const FRAME = ENCAP_HEADER_LEN + INNER;
const SLOTS = 256; // distinct frames, cycled

function makeInners(): Uint8Array[] {
  const rnd = mulberry32(0xe4ca9);
  const out: Uint8Array[] = [];
  for (let i = 0; i < SLOTS; i++) {
    const payload = new Uint8Array(24);
    for (let j = 0; j < 24; j++) payload[j] = rnd() & 0xff;
    out.push(buildPacket({ srcIp: rnd(), dstIp: rnd(), srcPort: rnd() & 0xffff, dstPort: rnd() & 0xffff, proto: IPPROTO_TCP, seq: rnd(), payload }));
  }
  return out;
}

// ---- naive baseline -------------------------------------------------------

interface NaiveEncap {
  version: number; tier: number; flags: number; hopCount: number; senderId: number; scopeVersion: number; vni: number;
  innerOffset: number; innerLength: number; frameLength: number;
}

/** Same checks as decodeEncap, written the usual way: DataView + fresh result object (null = reject). */
function naiveDecode(buf: Uint8Array, off: number, len: number): NaiveEncap | null {
  if (len < 8) return null;
  const v = new DataView(buf.buffer, buf.byteOffset + off, len);
  const b0 = v.getUint8(0);
  if (b0 >> 6 !== 0 || (v.getUint8(1) & 0x80) !== 0 || v.getUint16(2) !== 0x0800) return null;
  const headerLen = 8 + (b0 & 0x3f) * 4;
  if (headerLen > len) return null;
  let p = 8;
  let ours = -1;
  while (p < headerLen) {
    const dataLen = (v.getUint8(p + 3) & 0x1f) * 4;
    if (p + 4 + dataLen > headerLen) return null;
    const type = v.getUint8(p + 2);
    if (v.getUint16(p) === ENCAP_OPTION_CLASS && type === ENCAP_OPTION_TYPE) {
      if (ours < 0) {
        if (dataLen !== 12 || v.getUint8(p + 4) >> 4 !== 1) return null;
        ours = p + 4;
      }
    } else if (type & 0x80) return null;
    p += 4 + dataLen;
  }
  if (ours < 0 || len - headerLen < 20) return null;
  const innerLength = v.getUint16(headerLen + 2);
  if (innerLength < 20 || innerLength > len - headerLen) return null;
  return {
    version: v.getUint8(ours) >> 4,
    tier: v.getUint8(ours) & 15,
    flags: v.getUint8(ours + 1),
    hopCount: v.getUint8(ours + 2),
    senderId: v.getUint16(ours + 4),
    scopeVersion: v.getUint32(ours + 8),
    vni: v.getUint32(4) >>> 8,
    innerOffset: off + headerLen,
    innerLength,
    frameLength: headerLen + innerLength,
  };
}

function naiveWriteHeader(buf: Uint8Array, off: number, m: NaiveEncap): void {
  const v = new DataView(buf.buffer, buf.byteOffset + off, ENCAP_HEADER_LEN);
  v.setUint32(0, 0x04000800);
  v.setUint32(4, (m.vni << 8) >>> 0);
  v.setUint32(8, ((ENCAP_OPTION_CLASS << 16) | (ENCAP_OPTION_TYPE << 8) | 3) >>> 0);
  v.setUint32(12, (((0x10 | m.tier) << 24) | (m.flags << 16) | (m.hopCount << 8)) >>> 0);
  v.setUint32(16, (m.senderId << 16) >>> 0);
  v.setUint32(20, m.scopeVersion);
}

function naiveEncode(m: NaiveEncap, inner: Uint8Array): Buffer {
  const h = Buffer.alloc(ENCAP_HEADER_LEN);
  naiveWriteHeader(h, 0, m);
  return Buffer.concat([h, inner]);
}

const encap: BenchCase = {
  id: 'encap',
  title: 'Geneve encapsulation: decode + in-place redirect rewrite, and encode, 88-byte frames',
  async run(progress) {
    const inners = makeInners();
    const mem = new Uint8Array(FRAME * SLOTS);
    const meta = new EncapMeta();
    meta.tier = Tier.HASH;
    meta.vni = 0xc0de;
    meta.senderId = 1;
    meta.scopeVersion = 7;
    for (let i = 0; i < SLOTS; i++) {
      if (encodeEncap(mem, i * FRAME, meta, inners[i]!, 0, INNER) !== FRAME) throw new Error(`encap bench: encode ${i} failed`);
    }
    // Hop counts wrap at 256 in the loops below; reset them so the frames stay valid for both variants.
    const resetHops = () => {
      for (let i = 0; i < SLOTS; i++) mem[i * FRAME + 14] = 0;
    };

    progress('encap: decode + redirect rewrite in place (Baton)');
    const rewriteRate = sampleRate((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const off = (i & (SLOTS - 1)) * FRAME;
        if (decodeEncap(mem, off, FRAME, meta) !== Reject.OK) {
          acc++;
          continue;
        }
        meta.hopCount = (meta.hopCount + 1) & 0xff;
        meta.flags |= EncapFlag.REDIRECTED;
        meta.tier = Tier.FD;
        meta.senderId = 2;
        writeEncapHeader(mem, meta.innerOffset - ENCAP_HEADER_LEN, meta);
        acc += meta.innerLength;
      }
      consume(acc);
    });
    resetHops();
    progress('encap: decode + redirect rewrite (naive DataView + object)');
    const naiveRewriteRate = sampleRate((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const off = (i & (SLOTS - 1)) * FRAME;
        const m = naiveDecode(mem, off, FRAME);
        if (m === null) {
          acc++;
          continue;
        }
        m.hopCount = (m.hopCount + 1) & 0xff;
        m.flags |= EncapFlag.REDIRECTED;
        m.tier = Tier.FD;
        m.senderId = 2;
        naiveWriteHeader(mem, m.innerOffset - ENCAP_HEADER_LEN, m);
        acc += m.innerLength;
      }
      consume(acc);
    });
    resetHops();
    // Both loops must have left decodable frames behind.
    for (let i = 0; i < SLOTS; i++) {
      if (decodeEncap(mem, i * FRAME, FRAME, meta) !== Reject.OK) throw new Error(`encap bench: frame ${i} invalid after rewrites`);
    }

    const out = new Uint8Array(FRAME * SLOTS);
    progress('encap: encode header + copy inner (Baton)');
    const encodeRate = sampleRate((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const s = i & (SLOTS - 1);
        acc += encodeEncap(out, s * FRAME, meta, inners[s]!, 0, INNER);
      }
      consume(acc);
    });
    const naiveMeta = naiveDecode(mem, 0, FRAME)!;
    progress('encap: encode (naive Buffer.alloc + Buffer.concat)');
    const naiveEncodeRate = sampleRate((n) => {
      let acc = 0;
      for (let i = 0; i < n; i++) acc += naiveEncode(naiveMeta, inners[i & (SLOTS - 1)]!).length;
      consume(acc);
    });

    const results: BenchResult[] = [
      rateResult('decode + redirect rewrite 88B frame', rewriteRate, 'frame/s', naiveRewriteRate, 'DataView decode into a fresh object + DataView rewrite'),
      rateResult('encode 24B header + 64B inner', encodeRate, 'frame/s', naiveEncodeRate, 'Buffer.alloc header + Buffer.concat'),
    ];
    return results;
  },
};

export default encap;
