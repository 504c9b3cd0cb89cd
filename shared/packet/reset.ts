/**
 * A TCP RST in answer to a segment, as a host without the connection sends
 * it (RFC 9293 §3.10.7.1, and Linux's tcp_v4_send_reset):
 *   the segment has ACK:  <SEQ=SEG.ACK><CTL=RST>
 *   otherwise:            <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
 * (SEG.LEN counts SYN and FIN). Written whole into a caller's buffer —
 * IPv4 (IHL 5, DF, TTL 64, id 0) + a 20-byte TCP header, window 0, correct
 * checksums — with no allocation: an FD answers a client whose backend died
 * from a preallocated scratch buffer (distributor/flow-handler.ts).
 */
import { ipv4HeaderChecksum, l4Checksum } from './checksum.js';
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, type PacketMeta } from './meta.js';

/** Bytes of the RST `writeTcpReset` writes. */
export const TCP_RESET_LENGTH = 40;

/**
 * Writes into out[0, 40) the RST that answers the TCP segment parsed into
 * `m` (buf holds it), sent from `srcIp:srcPort` (what the client believes it
 * talks to: the VIP) to the segment's source. Returns the length (40), or 0
 * when the segment is itself an RST (never answered) or `out` is too small.
 * Addresses: uint32 or int32.
 */
export function writeTcpReset(buf: Uint8Array, m: PacketMeta, srcIp: number, srcPort: number, out: Uint8Array): number {
  const flags = m.tcpFlags;
  if ((flags & TCP_RST) !== 0 || out.length < TCP_RESET_LENGTH) return 0;
  const l4 = m.l4Offset;
  let seq = 0;
  let ack = 0;
  let ctl = TCP_RST;
  if ((flags & TCP_ACK) !== 0) seq = get32(buf, l4 + 8);
  else {
    ack = (get32(buf, l4 + 4) + m.payloadLength + ((flags & TCP_SYN) !== 0 ? 1 : 0) + ((flags & TCP_FIN) !== 0 ? 1 : 0)) >>> 0;
    ctl = TCP_RST | TCP_ACK;
  }
  const o = out;
  o[0] = 0x45;
  o[1] = 0;
  o[2] = 0;
  o[3] = TCP_RESET_LENGTH;
  o[4] = 0;
  o[5] = 0;
  o[6] = 0x40; // DF
  o[7] = 0;
  o[8] = 64;
  o[9] = 6;
  o[10] = 0;
  o[11] = 0;
  put32(o, 12, srcIp);
  put32(o, 16, m.srcIp);
  o[20] = srcPort >>> 8;
  o[21] = srcPort;
  o[22] = m.srcPort >>> 8;
  o[23] = m.srcPort;
  put32(o, 24, seq);
  put32(o, 28, ack);
  o[32] = 5 << 4;
  o[33] = ctl;
  o[34] = 0; // window 0
  o[35] = 0;
  o[36] = 0;
  o[37] = 0;
  o[38] = 0; // urgent pointer
  o[39] = 0;
  const ipcs = ipv4HeaderChecksum(o, 0, 20);
  o[10] = ipcs >>> 8;
  o[11] = ipcs;
  const cs = l4Checksum(o, 0);
  o[36] = cs >>> 8;
  o[37] = cs;
  return TCP_RESET_LENGTH;
}

function get32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}
