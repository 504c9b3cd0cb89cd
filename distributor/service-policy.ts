/**
 * Service policy: what a NEW flow's network action is. Called once per flow
 * (on the SYN or the first UDP datagram), never per packet, so it may be
 * arbitrarily clever; it must not allocate per call either, though, because
 * a SYN flood is still a packet path.
 *
 * Mechanism (the flow handler) stays apart from policy (this file).
 */
import { NetAction } from './flow-table.js';
import type { PacketMeta } from '../shared/packet/meta.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { hashFiveTuple } from '../shared/hash/xxh32.js';

/** Reusable out-struct a policy fills. */
export class FlowAction {
  netAction: number = NetAction.FORWARD;
  appAction = 0;
  rewriteIp = 0;
  rewritePort = 0;
}

export interface ServicePolicy {
  /** Fill `out` for the new flow of `meta`; return false to refuse it (counted drop `no_backend`). */
  choose(meta: PacketMeta, out: FlowAction): boolean;
  /**
   * The choice is a pure function of the packet's 5-tuple and the backend
   * set: any FD makes the same one, at any time while the backends stay the
   * same (the failure second line relies on it: docs/failure.md).
   */
  readonly pure?: boolean;
}

export interface Backend {
  ip: number; // host-order uint32
  /** 1..65535; 0 = keep the packet's destination port (a real server listens on the service's own port). */
  port: number;
}

/** Pass packets through unchanged (the seed's "forward" action). */
export class ForwardPolicy implements ServicePolicy {
  readonly pure = true;
  constructor(private readonly appAction = 0) {}
  choose(_meta: PacketMeta, out: FlowAction): boolean {
    out.netAction = NetAction.FORWARD;
    out.appAction = this.appAction;
    out.rewriteIp = 0;
    out.rewritePort = 0;
    return true;
  }
}

/**
 * Load balancing by destination rewrite (the seed's "rewrite" action): each
 * new flow is NATed to one backend picked by a hash of its 5-tuple, so the
 * same flow picks the same backend on every FD. The backend list is a
 * snapshot swapped whole with `setBackends` (off the hot path).
 */
export class HashRewritePolicy implements ServicePolicy {
  /** A hash of the 5-tuple (or the client address) over the backend list: the same on every FD. */
  readonly pure = true;
  private ips: Uint32Array;
  private ports: Uint16Array;
  constructor(
    backends: readonly Backend[],
    private readonly appAction = 0,
    private readonly seed = 0x42a70,
  ) {
    this.ips = new Uint32Array(0);
    this.ports = new Uint16Array(0);
    this.setBackends(backends);
  }
  setBackends(backends: readonly Backend[]): void {
    const ips = new Uint32Array(backends.length);
    const ports = new Uint16Array(backends.length);
    backends.forEach((b, i) => {
      if (!Number.isInteger(b.ip) || b.ip < 0 || b.ip > 0xffffffff) {
        throw new BatonError(ErrorCode.BAD_ARGUMENT, `backends[${i}].ip must be a uint32 address, got ${b.ip}`);
      }
      if (!Number.isInteger(b.port) || b.port < 0 || b.port > 65535) {
        throw new BatonError(ErrorCode.BAD_ARGUMENT, `backends[${i}].port must be 0 (keep) or 1..65535, got ${b.port}`);
      }
      ips[i] = b.ip;
      ports[i] = b.port;
    });
    this.ips = ips;
    this.ports = ports;
  }
  get backendCount(): number {
    return this.ips.length;
  }
  /**
   * Only flows to these service addresses (VIP, port, proto) are created; a
   * packet to anything else (e.g. a stray reply) is refused. Empty = any.
   * `affinity: 'source'` picks the backend by the client address alone, so
   * every connection of one client to that service reaches the same backend.
   */
  setServices(services: readonly { ip: number; port: number; proto: number; affinity?: 'flow' | 'source' }[]): void {
    const keys = new Float64Array(services.length);
    const bySource = new Uint8Array(services.length);
    services.forEach((s, i) => {
      keys[i] = serviceKey(s.ip, s.port, s.proto);
      bySource[i] = s.affinity === 'source' ? 1 : 0;
    });
    this.services = keys;
    this.bySource = bySource;
  }
  private services = new Float64Array(0);
  private bySource = new Uint8Array(0);

  choose(meta: PacketMeta, out: FlowAction): boolean {
    const n = this.ips.length;
    if (n === 0) return false;
    const sv = this.services;
    let source = false;
    if (sv.length > 0) {
      const k = serviceKey(meta.dstIp, meta.dstPort, meta.proto);
      let hit = -1;
      for (let i = 0; i < sv.length; i++) if (sv[i] === k) hit = i;
      if (hit < 0) return false;
      source = this.bySource[hit] === 1;
    }
    const h = source ? hashFiveTuple(meta.srcIp, meta.dstIp, 0, meta.dstPort, meta.proto, this.seed) : hashFiveTuple(meta.srcIp, meta.dstIp, meta.srcPort, meta.dstPort, meta.proto, this.seed);
    const i = h % n;
    out.netAction = NetAction.REWRITE;
    out.appAction = this.appAction;
    out.rewriteIp = this.ips[i]!;
    const p = this.ports[i]!;
    out.rewritePort = p === 0 ? meta.dstPort : p;
    return true;
  }
}

/** (ip, port, proto) packed into one exact double: ip * 2^24 + port * 2^8 + proto < 2^56... kept < 2^53 by using ip * 2^21. */
function serviceKey(ip: number, port: number, proto: number): number {
  return (ip >>> 0) * 2 ** 21 + (port & 0xffff) * 32 + (proto & 31);
}
