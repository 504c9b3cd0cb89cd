/**
 * Encapsulation between Baton tiers: Geneve (RFC 8926) over UDP, carrying one
 * inner IPv4 packet per frame and Baton's metadata in one Geneve option TLV,
 * optionally followed by the client-locator option (where the client's
 * packets came from, so that any hash tier can deliver the replies).
 * The byte layout is specified bit by bit in docs/wire-encapsulation.md;
 * keep the two in sync (test/encap.test.ts pins a golden vector).
 *
 * Hot path: writeEncapHeader / encodeEncap / decodeEncap allocate nothing,
 * never throw, and report failures as numbers (-1 or a Reject code).
 * All multi-byte fields are network order (big-endian).
 */
import { Reject } from '../packet/reject.js';

/** Which tier sent the frame (4 bits on the wire). */
export const Tier = { HASH: 1, FD: 2, SERVICE: 3, CLIENT: 4 } as const;
export type Tier = (typeof Tier)[keyof typeof Tier];

/** Bits of the option's 8-bit flags field. Unknown bits are carried through untouched. */
export const EncapFlag = {
  REDIRECTED: 1,
  MIGRATED: 2,
  /** Set by a hash tier that is shedding load (hash-tier/admission.ts): the receiving FD creates no new flow for this frame. */
  SHED: 4,
} as const;
export type EncapFlag = (typeof EncapFlag)[keyof typeof EncapFlag];

/** IANA-assigned Geneve port; Baton's ports are configurable. */
export const GENEVE_DEFAULT_PORT = 6081;
/** Baton option data version (top 4 bits of the first option-data byte). */
export const ENCAP_VERSION = 1;

/** Geneve base header (RFC 8926 §3.4). */
export const GENEVE_BASE_LEN = 8;
/** Geneve Protocol Type for the inner packet: IPv4 EtherType. */
export const GENEVE_PROTO_IPV4 = 0x0800;
/**
 * Baton option class. RFC 8926 §7 reserves Option Classes 0xFF00..0xFFFF for
 * Experimental Use; Wireshark labels 0xFFF0..0xFFFF "Experimental", so a value
 * in that sub-range is shown as experimental by every decoder.
 */
export const ENCAP_OPTION_CLASS = 0xfffb;
/** Option type: high bit (critical) CLEAR, so non-Baton receivers may skip it. */
export const ENCAP_OPTION_TYPE = 0x01;
/** Option data bytes (multiple of 4): ver/tier, flags, hops, rsvd | sender, owner hint | scope version. */
export const ENCAP_OPTION_DATA_LEN = 12;
/** Option header (class, type, R|length) + data. */
const OPTION_TOTAL_LEN = 4 + ENCAP_OPTION_DATA_LEN;
/** Everything Baton writes in front of the inner IPv4 packet without a locator: 8 + 4 + 12 = 24. */
export const ENCAP_HEADER_LEN: number = GENEVE_BASE_LEN + OPTION_TOTAL_LEN;

/**
 * The client-locator option (same class, type 0x02, critical bit clear): the
 * client's underlay address, as the hash tier its packet entered through saw
 * it. Data version first (its own version, independent of the Baton option's).
 */
export const ENCAP_LOCATOR_TYPE = 0x02;
/** Locator option data version (top 4 bits of its first data byte). */
export const ENCAP_LOCATOR_VERSION = 1;
/** Address family nibble of a locator: IPv4 (the only one version 1 defines). */
export const LOCATOR_AF_IPV4 = 4;
/** Locator option data bytes: ver/af, reserved, port | IPv4 address. */
export const ENCAP_LOCATOR_DATA_LEN = 8;
/** Option header + locator data. */
export const ENCAP_LOCATOR_LEN = 4 + ENCAP_LOCATOR_DATA_LEN;
/** Header Baton writes when the frame carries a locator: 24 + 12 = 36. */
export const ENCAP_HEADER_LEN_LOCATOR: number = ENCAP_HEADER_LEN + ENCAP_LOCATOR_LEN;

/**
 * Suggested receiver limit on `hopCount` (redirects so far). A legitimate path
 * is hash tier -> FD -> (redirect) owner -> (migration redirect) inheritor; a
 * frame above the limit is looping and the receiver drops and counts it.
 */
export const ENCAP_DEFAULT_HOP_LIMIT = 4;

const MIN_IPV4_HEADER = 20;
const GENEVE_OPT_LEN_WORDS = OPTION_TOTAL_LEN >>> 2; // Geneve "Opt Len" (6 bits, 4-byte words)
const GENEVE_OPT_LEN_WORDS_LOCATOR = (OPTION_TOTAL_LEN + ENCAP_LOCATOR_LEN) >>> 2;
const OPTION_DATA_WORDS = ENCAP_OPTION_DATA_LEN >>> 2; // option "Length" (5 bits, 4-byte words)
const LOCATOR_DATA_WORDS = ENCAP_LOCATOR_DATA_LEN >>> 2;
const OAM_BIT = 0x80; // second byte of the base header
const OPTION_CRITICAL_BIT = 0x80; // high bit of an option's type

/**
 * Baton's view of one frame. One instance is reused for every frame: decode
 * fills it (offsets are absolute indexes into the decoded buffer), the writer
 * reads tier/flags/hopCount/senderId/scopeVersion/vni from it.
 */
export class EncapMeta {
  version: number = ENCAP_VERSION;
  tier = 0;
  flags = 0;
  hopCount = 0;
  senderId = 0;
  /** Owner FD of the flow, as far as the sender knows (service nodes echo it back); 0xFFFF = none. */
  ownerHint = 0xffff;
  scopeVersion = 0;
  vni = 0; // 24-bit cluster id
  /**
   * Client locator: the underlay IPv4 address (uint32) and UDP port the
   * client's packets came from. Port 0 = no locator (decode: the frame had
   * none; write: none is written). A forwarder copies both fields from the
   * frame it received to the frame it sends.
   */
  locatorIp = 0;
  locatorPort = 0;
  /**
   * How the client at the locator speaks (shared/encap/edge.ts EdgeEncap):
   * 0 Baton's own encapsulation (a Baton client, batched), 1 VXLAN-GPE,
   * 2 Geneve without options (a real host's kernel: one packet per datagram).
   */
  locatorEncap = 0;
  /** Decode: the frame carried a locator option this build cannot read (other version or family); it was skipped. */
  locatorUnreadable = false;
  innerOffset = 0; // where the inner IPv4 packet starts
  innerLength = 0; // inner IPv4 total length
  frameLength = 0; // whole frame (Geneve header incl. all options + inner); next frame starts here

  /** Copy every field (off the hot path: tests, building a reply from a received frame). */
  copyFrom(o: EncapMeta): void {
    this.version = o.version;
    this.tier = o.tier;
    this.flags = o.flags;
    this.hopCount = o.hopCount;
    this.senderId = o.senderId;
    this.ownerHint = o.ownerHint;
    this.scopeVersion = o.scopeVersion;
    this.vni = o.vni;
    this.locatorIp = o.locatorIp;
    this.locatorPort = o.locatorPort;
    this.locatorEncap = o.locatorEncap;
    this.locatorUnreadable = o.locatorUnreadable;
    this.innerOffset = o.innerOffset;
    this.innerLength = o.innerLength;
    this.frameLength = o.frameLength;
  }
}

/** Bytes writeEncapHeader writes for `meta`: ENCAP_HEADER_LEN, or ENCAP_HEADER_LEN_LOCATOR with a locator. */
export function encapHeaderLen(meta: EncapMeta): number {
  return meta.locatorPort !== 0 ? ENCAP_HEADER_LEN_LOCATOR : ENCAP_HEADER_LEN;
}

/**
 * Writes the header at `off` and returns its length, encapHeaderLen(meta):
 * ENCAP_HEADER_LEN bytes (Baton's option only), or ENCAP_HEADER_LEN_LOCATOR
 * when `meta.locatorPort` is not 0 (Baton's option, then the locator
 * option). The inner packet is expected right after, so a forwarder can
 * rewrite the header in place in front of a frame it received when that
 * frame's header has the same length. Always writes version ENCAP_VERSION
 * (and ENCAP_LOCATOR_VERSION); fields are masked to their wire width (vni 24,
 * tier 4, flags/hopCount 8, senderId/locatorPort 16, scopeVersion/locatorIp
 * 32 bits). Reserved bits are written as zero.
 * The caller guarantees `off + encapHeaderLen(meta) <= buf.length`.
 */
export function writeEncapHeader(buf: Uint8Array, off: number, meta: EncapMeta): number {
  const vni = meta.vni;
  const sender = meta.senderId;
  const scope = meta.scopeVersion;
  const lport = meta.locatorPort & 0xffff;
  // Geneve base header.
  buf[off] = lport !== 0 ? GENEVE_OPT_LEN_WORDS_LOCATOR : GENEVE_OPT_LEN_WORDS; // Ver=0 (2 bits) | Opt Len (6 bits)
  buf[off + 1] = 0; // O=0, C=0 (our option is not critical), Rsvd=0
  buf[off + 2] = GENEVE_PROTO_IPV4 >>> 8;
  buf[off + 3] = GENEVE_PROTO_IPV4 & 0xff;
  buf[off + 4] = (vni >>> 16) & 0xff;
  buf[off + 5] = (vni >>> 8) & 0xff;
  buf[off + 6] = vni & 0xff;
  buf[off + 7] = 0; // Reserved
  // Baton option header.
  buf[off + 8] = ENCAP_OPTION_CLASS >>> 8;
  buf[off + 9] = ENCAP_OPTION_CLASS & 0xff;
  buf[off + 10] = ENCAP_OPTION_TYPE;
  buf[off + 11] = OPTION_DATA_WORDS; // R|R|R = 0, Length (5 bits)
  // Baton option data (version first).
  buf[off + 12] = (ENCAP_VERSION << 4) | (meta.tier & 0x0f);
  buf[off + 13] = meta.flags & 0xff;
  buf[off + 14] = meta.hopCount & 0xff;
  buf[off + 15] = 0; // Reserved
  buf[off + 16] = (sender >>> 8) & 0xff;
  buf[off + 17] = sender & 0xff;
  buf[off + 18] = (meta.ownerHint >>> 8) & 0xff;
  buf[off + 19] = meta.ownerHint & 0xff;
  buf[off + 20] = (scope >>> 24) & 0xff;
  buf[off + 21] = (scope >>> 16) & 0xff;
  buf[off + 22] = (scope >>> 8) & 0xff;
  buf[off + 23] = scope & 0xff;
  if (lport === 0) return ENCAP_HEADER_LEN;
  // Client-locator option (version first).
  const lip = meta.locatorIp;
  buf[off + 24] = ENCAP_OPTION_CLASS >>> 8;
  buf[off + 25] = ENCAP_OPTION_CLASS & 0xff;
  buf[off + 26] = ENCAP_LOCATOR_TYPE;
  buf[off + 27] = LOCATOR_DATA_WORDS;
  buf[off + 28] = (ENCAP_LOCATOR_VERSION << 4) | LOCATOR_AF_IPV4;
  buf[off + 29] = meta.locatorEncap & 0xff; // Encap (was Reserved: older builds write 0 and ignore it)
  buf[off + 30] = lport >>> 8;
  buf[off + 31] = lport & 0xff;
  buf[off + 32] = (lip >>> 24) & 0xff;
  buf[off + 33] = (lip >>> 16) & 0xff;
  buf[off + 34] = (lip >>> 8) & 0xff;
  buf[off + 35] = lip & 0xff;
  return ENCAP_HEADER_LEN_LOCATOR;
}

/**
 * Header + a copy of the inner IPv4 packet `inner[innerOff, innerOff+innerLen)`.
 * Returns the bytes written (encapHeaderLen(meta) + innerLen), or -1 (no throw)
 * when `out` is too small, the source range is out of bounds, or the inner
 * range is not one whole IPv4 packet (shorter than 20 bytes, or innerLen !=
 * its IPv4 total length) — such a frame would break frame walking in a batch.
 * `inner` may be `out` itself (overlapping ranges are handled).
 */
export function encodeEncap(
  out: Uint8Array,
  off: number,
  meta: EncapMeta,
  inner: Uint8Array,
  innerOff: number,
  innerLen: number,
): number {
  if (off < 0 || innerOff < 0 || innerLen < MIN_IPV4_HEADER) return -1;
  const hl = encapHeaderLen(meta);
  const total = hl + innerLen;
  if (off + total > out.length || innerOff + innerLen > inner.length) return -1;
  if (((inner[innerOff + 2]! << 8) | inner[innerOff + 3]!) !== innerLen) return -1;
  const dst = off + hl;
  // Copy the inner packet first: if it overlaps the header area (same buffer),
  // writing the header first would clobber it.
  if (inner === out) {
    out.copyWithin(dst, innerOff, innerOff + innerLen);
  } else if (innerOff === 0 && innerLen === inner.length) {
    out.set(inner, dst); // no view needed
  } else if (innerLen <= 128 && inner.buffer !== out.buffer) {
    // Small packets (SYNs, ACKs): a byte loop beats allocating a subarray view.
    // (Not for two views of one buffer: a forward loop is wrong when they overlap.)
    for (let i = 0; i < innerLen; i++) out[dst + i] = inner[innerOff + i]!;
  } else {
    out.set(inner.subarray(innerOff, innerOff + innerLen), dst);
  }
  writeEncapHeader(out, off, meta);
  return total;
}

/**
 * Decodes one frame of `buf[off, off+len)` into `out`. Returns Reject.OK (0)
 * or a Reject code; on a reject `out` is partially filled and must not be used.
 * Never throws, never allocates.
 *
 * BAD_ENCAP: shorter than the Geneve base header; Geneve version != 0; O (OAM)
 * bit set (control packets are not carried); Protocol Type != 0x0800; options
 * longer than the frame or an option TLV overrunning the options area; an
 * unknown option with the critical bit set (RFC 8926 §3.5: must drop); Baton's
 * option missing or with a Length other than 3 words; inner packet shorter
 * than 20 bytes, its IPv4 total length < 20 or beyond the frame.
 * BAD_ENCAP_VERSION: Baton's option present with a data version != ENCAP_VERSION
 * (checked before its length, so a future longer layout reports the version).
 *
 * The client-locator option (Baton's class, type 0x02) fills locatorIp and
 * locatorPort; one this build cannot read (data version other than 1,
 * family other than IPv4, length other than 2 words) is skipped, never a
 * reject: it is not critical, and the frame is still delivered where the
 * client is known otherwise (`out.locatorUnreadable` says so). A locator
 * with port 0 is no locator.
 * Other (non-critical) options, including other types in Baton's class, are
 * skipped by walking the TLVs; the first Baton option (and locator) wins. The inner packet
 * starts after ALL options, so frames from other senders may have a header
 * longer than ENCAP_HEADER_LEN. `len` may extend beyond this frame (batching):
 * the frame ends at out.frameLength. The VNI, tier and hop count are reported,
 * not judged: comparing the VNI with the local cluster id and enforcing the
 * hop limit are the receiver's job (each with its own drop counter).
 */
export function decodeEncap(buf: Uint8Array, off: number, len: number, out: EncapMeta): number {
  if (off < 0 || len < GENEVE_BASE_LEN || off + len > buf.length) return Reject.BAD_ENCAP;
  const b0 = buf[off]!;
  if (b0 >>> 6 !== 0) return Reject.BAD_ENCAP; // Geneve version
  if ((buf[off + 1]! & OAM_BIT) !== 0) return Reject.BAD_ENCAP;
  if (((buf[off + 2]! << 8) | buf[off + 3]!) !== GENEVE_PROTO_IPV4) return Reject.BAD_ENCAP;
  const headerLen = GENEVE_BASE_LEN + ((b0 & 0x3f) << 2);
  if (headerLen > len) return Reject.BAD_ENCAP;

  // Walk the option TLVs looking for Baton's option.
  const optEnd = off + headerLen;
  let p = off + GENEVE_BASE_LEN;
  let ours = -1; // offset of Baton's option data
  let loc = -1; // offset of the locator option's data
  let locBad = false;
  // The options area and every TLV are whole 4-byte words, so p < optEnd
  // implies a complete 4-byte option header is present.
  while (p < optEnd) {
    const cls = (buf[p]! << 8) | buf[p + 1]!;
    const type = buf[p + 2]!;
    const dataLen = (buf[p + 3]! & 0x1f) << 2;
    if (p + 4 + dataLen > optEnd) return Reject.BAD_ENCAP;
    if (cls === ENCAP_OPTION_CLASS && type === ENCAP_OPTION_TYPE) {
      if (ours < 0) {
        if (dataLen === 0) return Reject.BAD_ENCAP;
        if (buf[p + 4]! >>> 4 !== ENCAP_VERSION) return Reject.BAD_ENCAP_VERSION;
        if (dataLen !== ENCAP_OPTION_DATA_LEN) return Reject.BAD_ENCAP;
        ours = p + 4;
      }
    } else if (cls === ENCAP_OPTION_CLASS && type === ENCAP_LOCATOR_TYPE) {
      if (loc < 0 && !locBad) {
        if (dataLen === ENCAP_LOCATOR_DATA_LEN && buf[p + 4]! === ((ENCAP_LOCATOR_VERSION << 4) | LOCATOR_AF_IPV4)) loc = p + 4;
        else locBad = true;
      }
    } else if ((type & OPTION_CRITICAL_BIT) !== 0) {
      return Reject.BAD_ENCAP; // a critical option we do not understand
    }
    p += 4 + dataLen;
  }
  if (ours < 0) return Reject.BAD_ENCAP;

  const innerOff = optEnd;
  const remaining = len - headerLen;
  if (remaining < MIN_IPV4_HEADER) return Reject.BAD_ENCAP;
  const innerLen = (buf[innerOff + 2]! << 8) | buf[innerOff + 3]!;
  if (innerLen < MIN_IPV4_HEADER || innerLen > remaining) return Reject.BAD_ENCAP;

  const d0 = buf[ours]!;
  out.version = d0 >>> 4;
  out.tier = d0 & 0x0f;
  out.flags = buf[ours + 1]!;
  out.hopCount = buf[ours + 2]!;
  out.senderId = (buf[ours + 4]! << 8) | buf[ours + 5]!;
  out.ownerHint = (buf[ours + 6]! << 8) | buf[ours + 7]!;
  out.scopeVersion =
    ((buf[ours + 8]! << 24) | (buf[ours + 9]! << 16) | (buf[ours + 10]! << 8) | buf[ours + 11]!) >>> 0;
  out.vni = (buf[off + 4]! << 16) | (buf[off + 5]! << 8) | buf[off + 6]!;
  if (loc >= 0) {
    out.locatorPort = (buf[loc + 2]! << 8) | buf[loc + 3]!;
    out.locatorEncap = buf[loc + 1]!;
    out.locatorIp = ((buf[loc + 4]! << 24) | (buf[loc + 5]! << 16) | (buf[loc + 6]! << 8) | buf[loc + 7]!) >>> 0;
  } else {
    out.locatorPort = 0;
    out.locatorIp = 0;
    out.locatorEncap = 0;
  }
  out.locatorUnreadable = locBad;
  out.innerOffset = innerOff;
  out.innerLength = innerLen;
  out.frameLength = headerLen + innerLen;
  return Reject.OK;
}

/**
 * True when a received frame has been redirected more often than `limit`
 * allows; the receiver drops it and counts it (this stops forwarding loops).
 */
export function hopLimitExceeded(meta: EncapMeta, limit: number = ENCAP_DEFAULT_HOP_LIMIT): boolean {
  return meta.hopCount > limit;
}
