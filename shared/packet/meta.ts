/**
 * The result of parsing one IPv4 packet: plain numeric fields, one instance
 * reused for every packet (the parser fills it, never allocates).
 * All addresses are host-order uint32 (e.g. 127.0.0.1 === 0x7f000001),
 * ports host-order uint16. Offsets are absolute indexes into the buffer.
 */
import { BatonError, ErrorCode } from '../errors.js';

export class PacketMeta {
  srcIp = 0;
  dstIp = 0;
  srcPort = 0;
  dstPort = 0;
  proto = 0; // 6 TCP, 17 UDP
  tcpFlags = 0; // TCP flag byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 ...); 0 for UDP
  ipOffset = 0; // where the IPv4 header starts
  ipHeaderLength = 0; // bytes
  totalLength = 0; // IPv4 total length (bytes)
  l4Offset = 0; // where the TCP/UDP header starts
  l4HeaderLength = 0; // TCP data offset * 4, or 8 for UDP
  payloadOffset = 0;
  payloadLength = 0;
  ttl = 0;

  /** Copy every field from another meta (used by tests and the encap layer). */
  copyFrom(o: PacketMeta): void {
    this.srcIp = o.srcIp;
    this.dstIp = o.dstIp;
    this.srcPort = o.srcPort;
    this.dstPort = o.dstPort;
    this.proto = o.proto;
    this.tcpFlags = o.tcpFlags;
    this.ipOffset = o.ipOffset;
    this.ipHeaderLength = o.ipHeaderLength;
    this.totalLength = o.totalLength;
    this.l4Offset = o.l4Offset;
    this.l4HeaderLength = o.l4HeaderLength;
    this.payloadOffset = o.payloadOffset;
    this.payloadLength = o.payloadLength;
    this.ttl = o.ttl;
  }
}

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

/** "10.0.0.1" -> 0x0a000001. Not for the hot path. */
export function ipv4ToInt(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4) throw new BatonError(ErrorCode.BAD_ARGUMENT, `not an IPv4 address: ${JSON.stringify(s)}`);
  let v = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) throw new BatonError(ErrorCode.BAD_ARGUMENT, `not an IPv4 address: ${JSON.stringify(s)}`);
    const n = Number(p);
    if (n > 255) throw new BatonError(ErrorCode.BAD_ARGUMENT, `not an IPv4 address: ${JSON.stringify(s)}`);
    v = v * 256 + n;
  }
  return v >>> 0;
}

/** 0x0a000001 -> "10.0.0.1". Not for the hot path. */
export function intToIpv4(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}
