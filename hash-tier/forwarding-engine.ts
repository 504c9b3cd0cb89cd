/**
 * The hash tier's forwarding engine (the aggregation switch of seed 003):
 *   - CLIENT frames (ingress) and SERVICE frames (replies) are hashed on the
 *     inner 5-tuple over the current hash scope and sent to the chosen FD;
 *   - FD frames whose inner destination is a client go out to that client
 *     (the engine learned the client's real address from its traffic).
 * The routing snapshot (scope + lanes) is built off the hot path and
 * swapped whole.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import type { Address } from '../shared/io/address.js';
import { sameAddress } from '../shared/io/address.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { Datapath, type DatapathOptions } from '../shared/dataplane/datapath.js';
import { DP } from '../shared/dataplane/counters.js';
import { EncapFlag, EncapMeta, Tier } from '../shared/encap/geneve.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { PacketMeta } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { hashFiveTuple, hashFiveTupleSymmetric } from '../shared/hash/xxh32.js';
import type { HashScope } from '../shared/scope/hash-scope.js';
import { IPPROTO_TCP, TCP_ACK, TCP_SYN } from '../shared/packet/meta.js';
import { Admission, AdmissionState, type AdmissionOptions } from './admission.js';

const HT_STATIC = ['to_fd', 'to_fd_by_hint', 'to_client', 'clients_learned', 'drop_bad_inner', 'drop_empty_scope', 'drop_unknown_client', 'drop_bad_tier',
  // Admission control (hash-tier/admission.ts): frames refused at the edge, frames marked SHED, state entries.
  'drop_admission_syn', 'drop_admission_overload', 'admission_shed_marked', 'admission_to_open', 'admission_to_shedding', 'admission_to_dropping'] as const;
export const HT = defineCounters([...DP.names, ...HT_STATIC] as unknown as readonly [...typeof DP.names, ...typeof HT_STATIC]);

export interface ForwardingEngineOptions extends DatapathOptions {
  id: number;
  hashSeed: number;
  symmetricHash?: boolean;
  /**
   * Send a service node's reply straight to the FD its owner hint names (when
   * that FD is in scope) instead of hashing it: saves the redirect hop a reply
   * takes when the hash picks another FD. Default true.
   */
  replyByOwnerHint?: boolean;
  /** Admission control at ingress (absent: every client frame is admitted). */
  admission?: AdmissionOptions & { probeMs: number };
}

/** One immutable routing snapshot: scope + the TX lane of each scope member (by index and by node id). */
export interface Routing {
  scope: HashScope | null;
  laneOfMember: Int32Array;
  laneOfId: Int32Array;
}

export interface ScopeMember {
  name: string;
  id: number;
  data: Address;
}

export class ForwardingEngine {
  readonly dp: Datapath;
  readonly counters: Counters;
  private routing: Routing = { scope: null, laneOfMember: new Int32Array(0), laneOfId: new Int32Array(65536).fill(-1) };
  private readonly clientLane = new Map<number, number>(); // client virtual IP -> lane
  private readonly out = new EncapMeta();
  private readonly pkt = new PacketMeta();
  private readonly id: number;
  private readonly seed: number;
  private readonly symmetric: boolean;
  private readonly byHint: boolean;
  /** Admission control, or null when off; `admit` is its state as of this batch. */
  readonly admission: Admission | null;
  private admit: AdmissionState = AdmissionState.OPEN;

  constructor(socket: DatagramSocket, scheduler: Scheduler, opts: ForwardingEngineOptions) {
    this.counters = new Counters(HT);
    this.dp = new Datapath(socket, scheduler, this.counters, opts.admission ? { ...opts, queueProbeMs: opts.admission.probeMs } : opts);
    this.admission = opts.admission && this.dp.probe ? new Admission(this.dp.probe, scheduler.clock, opts.admission) : null;
    this.id = opts.id;
    this.seed = opts.hashSeed >>> 0;
    this.symmetric = opts.symmetricHash ?? false;
    this.byHint = opts.replyByOwnerHint ?? true;
    this.out.vni = opts.vni;
    this.dp.start((buf, m, from) => this.frame(buf, m, from), this.admission ? this.beforeBatch : undefined);
  }

  get address(): Address {
    return this.dp.socket.address;
  }
  get scope(): HashScope | null {
    return this.routing.scope;
  }

  /** Installs a new scope; `fds` gives every FD's id and data address. Built off the hot path, swapped whole. */
  setScope(scope: HashScope | null, fds: readonly ScopeMember[]): void {
    const lanes = new Int32Array(scope ? scope.members.length : 0).fill(-1);
    const byId = new Int32Array(65536).fill(-1);
    if (scope) {
      const byName = new Map(fds.map((f) => [f.name, f]));
      scope.members.forEach((name, i) => {
        const f = byName.get(name);
        if (!f) return;
        lanes[i] = this.dp.laneTo(f.data);
        byId[f.id] = lanes[i]!;
      });
    }
    this.routing = { scope, laneOfMember: lanes, laneOfId: byId };
  }

  private readonly beforeBatch = (): void => {
    const before = this.admit;
    const now = this.admission!.update();
    if (now === before) return;
    this.admit = now;
    this.counters.inc(now === AdmissionState.OPEN ? HT.admission_to_open : now === AdmissionState.SHEDDING ? HT.admission_to_shedding : HT.admission_to_dropping);
  };

  private frame(buf: Uint8Array, m: EncapMeta, from: Address | null): void {
    const c = this.counters;
    const p = this.pkt;
    // The switch does not verify L4 checksums (the FD does); it needs the 5-tuple.
    const r = parseIPv4(buf, m.innerOffset, m.innerLength, p, false);
    if (r !== Reject.OK) {
      c.inc(HT.drop_bad_inner);
      return;
    }
    const o = this.out;
    o.tier = Tier.HASH;
    o.senderId = this.id;
    o.flags = m.flags;
    o.hopCount = m.hopCount;
    o.ownerHint = m.ownerHint;
    const tier = m.tier;
    if (tier === Tier.FD) {
      // Egress toward a client.
      const lane = this.clientLane.get(p.dstIp);
      if (lane === undefined) {
        c.inc(HT.drop_unknown_client);
        return;
      }
      o.scopeVersion = m.scopeVersion;
      if (this.dp.emit(lane, o, buf, m.innerOffset, m.innerLength)) c.inc(HT.to_client);
      return;
    }
    if (tier === Tier.CLIENT) {
      const a = this.admit;
      if (a !== AdmissionState.OPEN) {
        // Offered more than the cluster carries: refuse new work here, counted.
        if (a === AdmissionState.DROPPING) {
          c.inc(HT.drop_admission_overload);
          return;
        }
        if (p.proto === IPPROTO_TCP && (p.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN) {
          c.inc(HT.drop_admission_syn);
          return;
        }
        o.flags = m.flags | EncapFlag.SHED;
        c.inc(HT.admission_shed_marked);
      } else o.flags = m.flags & ~EncapFlag.SHED;
      this.learnClient(p.srcIp, from);
    } else if (tier !== Tier.SERVICE) {
      c.inc(HT.drop_bad_tier);
      return;
    }
    const rt = this.routing;
    const scope = rt.scope;
    if (scope === null) {
      c.inc(HT.drop_empty_scope);
      return;
    }
    if (tier === Tier.SERVICE && this.byHint) {
      const hinted = rt.laneOfId[m.ownerHint]!; // -1 for NO_OWNER (0xFFFF) and FDs out of scope
      if (hinted >= 0) {
        o.scopeVersion = scope.version;
        if (this.dp.emit(hinted, o, buf, m.innerOffset, m.innerLength)) c.inc(HT.to_fd_by_hint);
        return;
      }
    }
    const h = this.symmetric
      ? hashFiveTupleSymmetric(p.srcIp, p.dstIp, p.srcPort, p.dstPort, p.proto, this.seed)
      : hashFiveTuple(p.srcIp, p.dstIp, p.srcPort, p.dstPort, p.proto, this.seed);
    const lane = rt.laneOfMember[scope.pick(h)]!;
    if (lane < 0) {
      c.inc(DP.drop_no_route);
      return;
    }
    o.scopeVersion = scope.version;
    if (this.dp.emit(lane, o, buf, m.innerOffset, m.innerLength)) c.inc(HT.to_fd);
  }

  /** Remembers which real address a client virtual IP sends from (a map write only when it changes). */
  private learnClient(ip: number, from: Address | null): void {
    if (from === null) return;
    const lane = this.clientLane.get(ip);
    if (lane !== undefined && sameAddress(this.dp.tx.laneAddress(lane), from)) return;
    this.clientLane.set(ip, this.dp.laneTo(from));
    this.counters.inc(HT.clients_learned);
  }

  close(): Promise<void> {
    return this.dp.close();
  }
}
