/**
 * The edge encapsulations: what unmodified hosts' kernels send and receive
 * (docs/edge-encapsulation.md). Baton's own tiers speak Geneve with Baton's
 * option, batched (shared/encap/geneve.ts); a real client or server speaks
 * one of these, one inner IPv4 packet per datagram, no Baton metadata:
 *
 *   VXLAN-GPE (UDP 4790; draft-ietf-nvo3-vxlan-gpe), next protocol IPv4 —
 *     what `ip link add … type vxlan external gpe` produces on Linux:
 *       byte 0  flags 0x0c (I: VNI valid, P: next protocol present; version 0, B=0, O=0)
 *       1-2     reserved 0
 *       3       next protocol 0x01 (IPv4)
 *       4-6     VNI
 *       7       reserved 0
 *   Geneve without options (UDP 6081; RFC 8926), protocol 0x0800 — what a
 *     kernel `type geneve` device sends (none on this project's machines):
 *       byte 0  version 0, option length 0
 *       1       O=0, C=0
 *       2-3     0x0800
 *       4-6     VNI
 *       7       reserved 0
 *
 * Both headers are 8 bytes. Accepted: exactly these fields (reserved bytes
 * are ignored, as the drafts say), the cluster's VNI, then one whole IPv4
 * packet that fills the rest of the datagram. Anything else is rejected with
 * a reason the caller counts; nothing is thrown. Allocates nothing.
 */
export const EdgeEncap = { NONE: 0, VXLAN_GPE: 1, GENEVE: 2 } as const;
export type EdgeEncap = (typeof EdgeEncap)[keyof typeof EdgeEncap];
export const EDGE_ENCAP_NAMES = ['none', 'vxlan-gpe', 'geneve'] as const;

/** IANA ports. */
export const VXLAN_GPE_PORT = 4790;
export const GENEVE_EDGE_PORT = 6081;
export const EDGE_HEADER_LEN = 8;

const GPE_FLAGS = 0x0c; // I | P
const GPE_NEXT_IPV4 = 0x01;
const GENEVE_PROTO_IPV4 = 0x0800;

/** Why an edge datagram was refused (beyond Reject's generic codes): the caller's counter names. */
export const EdgeReject = {
  OK: 0,
  TRUNCATED: 1, // shorter than the header + a minimal IPv4 header
  BAD_FLAGS: 2, // VXLAN-GPE: I or P missing, version != 0, O (OAM) or B set; Geneve: version != 0, O or C set
  BAD_NEXT_PROTOCOL: 3, // not IPv4
  HAS_OPTIONS: 4, // Geneve with options: not an edge frame (Baton's tiers use their own port)
  WRONG_VNI: 5,
  BAD_INNER_LENGTH: 6, // the IPv4 total length does not fill the datagram exactly
} as const;
export type EdgeReject = (typeof EdgeReject)[keyof typeof EdgeReject];
export const EDGE_REJECT_NAMES = ['ok', 'edge_truncated', 'edge_bad_flags', 'edge_bad_next_protocol', 'edge_has_options', 'edge_wrong_vni', 'edge_bad_inner_length'] as const;

/**
 * Checks an edge datagram `buf[0, len)` of encapsulation `kind` for VNI
 * `vni`; on success the inner IPv4 packet is `buf[EDGE_HEADER_LEN, len)`.
 * Returns an EdgeReject code (0 = OK).
 */
export function decodeEdge(kind: EdgeEncap, buf: Uint8Array, len: number, vni: number): EdgeReject {
  if (len < EDGE_HEADER_LEN + 20 || len > buf.length) return EdgeReject.TRUNCATED;
  if (kind === EdgeEncap.VXLAN_GPE) {
    if (buf[0]! !== GPE_FLAGS) return EdgeReject.BAD_FLAGS;
    if (buf[3]! !== GPE_NEXT_IPV4) return EdgeReject.BAD_NEXT_PROTOCOL;
  } else if (kind === EdgeEncap.GENEVE) {
    const b0 = buf[0]!;
    if (b0 >>> 6 !== 0 || (buf[1]! & 0xc0) !== 0) return EdgeReject.BAD_FLAGS;
    if ((b0 & 0x3f) !== 0) return EdgeReject.HAS_OPTIONS;
    if (((buf[2]! << 8) | buf[3]!) !== GENEVE_PROTO_IPV4) return EdgeReject.BAD_NEXT_PROTOCOL;
  } else return EdgeReject.BAD_FLAGS;
  if (((buf[4]! << 16) | (buf[5]! << 8) | buf[6]!) !== (vni & 0xffffff)) return EdgeReject.WRONG_VNI;
  const total = (buf[EDGE_HEADER_LEN + 2]! << 8) | buf[EDGE_HEADER_LEN + 3]!;
  if (total !== len - EDGE_HEADER_LEN) return EdgeReject.BAD_INNER_LENGTH;
  return EdgeReject.OK;
}

/** Writes the 8-byte edge header of `kind` for `vni` at buf[off]; returns EDGE_HEADER_LEN. */
export function writeEdgeHeader(kind: EdgeEncap, buf: Uint8Array, off: number, vni: number): number {
  if (kind === EdgeEncap.VXLAN_GPE) {
    buf[off] = GPE_FLAGS;
    buf[off + 1] = 0;
    buf[off + 2] = 0;
    buf[off + 3] = GPE_NEXT_IPV4;
  } else {
    buf[off] = 0;
    buf[off + 1] = 0;
    buf[off + 2] = GENEVE_PROTO_IPV4 >>> 8;
    buf[off + 3] = GENEVE_PROTO_IPV4 & 0xff;
  }
  buf[off + 4] = (vni >>> 16) & 0xff;
  buf[off + 5] = (vni >>> 8) & 0xff;
  buf[off + 6] = vni & 0xff;
  buf[off + 7] = 0;
  return EDGE_HEADER_LEN;
}
