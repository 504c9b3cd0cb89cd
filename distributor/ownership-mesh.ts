/**
 * Flow-ownership broadcast among peer FDs (seed 003: "FD A broadcasts to its
 * peer nodes that it is the owner of flow_a and reverse_flow_a"). Records are
 * batched in an OwnershipBuffer (fixed 16-byte layout) and flushed every
 * `flushMs` to every peer over its control connection; batches received from
 * peers are applied to the local flow table as learned (redirect) entries.
 */
import type { Scheduler, Timer } from '../shared/runtime/scheduler.js';
import type { MessageNet, MessageListener } from '../shared/io/stream.js';
import type { Address } from '../shared/io/address.js';
import { parseAddress } from '../shared/io/address.js';
import { ControlChannel, CHANNEL_COUNTERS } from '../shared/control/channel.js';
import { body, type EnvelopeObject, type Body } from '../shared/control/messages.js';
import { OwnershipBuffer, forEachOwnershipBatch, OwnershipFlag, OWNERSHIP_RECORD_VERSION, OwnershipCheck } from '../shared/control/ownership.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import type { FlowHandler, OwnershipSink } from './flow-handler.js';

export const MESH = defineCounters([
  'batches_sent',
  'records_sent',
  'batches_received',
  'records_received',
  'batches_rejected',
  'peer_connect_failures',
] as const);

export interface MeshPeer {
  id: number;
  controlAddr: string;
}

export class OwnershipMesh implements OwnershipSink {
  readonly counters = new Counters(MESH);
  /** Every peer control connection accepted, summed (garbage ones included). */
  readonly channelCounters = new Counters(CHANNEL_COUNTERS);
  private readonly buffer: OwnershipBuffer;
  private readonly out = new Map<number, ControlChannel>();
  private readonly connecting = new Set<number>();
  private listener: MessageListener | null = null;
  private flushTimer: Timer | null = null;
  private readonly log: Logger;
  private wanted = new Map<number, Address>();
  /** Extra request handling for peer connections (the migration client plugs in here). */
  peerRequestHandler: ((env: EnvelopeObject, ch: ControlChannel) => Body | void | Promise<Body | void>) | null = null;

  constructor(
    private readonly selfId: number,
    private readonly handler: FlowHandler,
    private readonly net: MessageNet,
    private readonly scheduler: Scheduler,
    private readonly flushMs: number,
  ) {
    this.log = getLogger('ownership-mesh');
    this.buffer = new OwnershipBuffer(4096, (records, count) => this.broadcast(records, count));
  }

  /** Listens for peers; returns the bound control address. */
  async start(listen: Address): Promise<Address> {
    this.listener = await this.net.listen(listen, (conn) => {
      const ch = new ControlChannel(conn, this.scheduler, { counters: this.channelCounters });
      ch.onMessage((env) => this.onPeerMessage(env));
      ch.onRequest((env) => {
        // An acknowledged ownership batch (migration broadcasts, joiner syncs):
        // applied before the answer goes back, so the sender knows we know.
        if (env.body.case === 'ownershipBatch') {
          return this.onPeerMessage(env) ? body('pong', {}) : body('errorReply', { code: 'BATON_BAD_OWNERSHIP_BATCH', message: 'ownership batch rejected (length or record version)' });
        }
        return this.peerRequestHandler?.(env, ch);
      });
    });
    this.flushTimer = this.scheduler.every(this.flushMs, () => this.buffer.flush());
    return this.listener.address;
  }

  // OwnershipSink (called by the flow handler per created/removed flow: no allocation)
  flowCreated(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number, owner: number): void {
    this.buffer.add(srcIp, dstIp, srcPort, dstPort, proto, 0, owner);
  }
  flowRemoved(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): void {
    this.buffer.add(srcIp, dstIp, srcPort, dstPort, proto, OwnershipFlag.REMOVED, this.selfId);
  }

  /** Flushes pending records now. */
  flush(): void {
    this.buffer.flush();
  }

  get pendingRecords(): number {
    return this.buffer.pending;
  }

  /** The peer set changed (from a scope update): connect to new peers, drop gone ones. */
  setPeers(peers: readonly MeshPeer[]): void {
    const wanted = new Map<number, Address>();
    for (const p of peers) if (p.id !== this.selfId && p.controlAddr) wanted.set(p.id, parseAddress(p.controlAddr));
    this.wanted = wanted;
    for (const [id, ch] of this.out) {
      if (!wanted.has(id)) {
        ch.close();
        this.out.delete(id);
      }
    }
    for (const [id, addr] of wanted) if (!this.out.has(id)) this.connect(id, addr);
  }

  /** Outbound channel to a peer (null when not connected). */
  peer(id: number): ControlChannel | null {
    return this.out.get(id) ?? null;
  }

  private connect(id: number, addr: Address): void {
    if (this.connecting.has(id)) return;
    this.connecting.add(id);
    this.net.connect(addr).then(
      (conn) => {
        this.connecting.delete(id);
        const cur = this.wanted.get(id);
        if (!cur || cur.host !== addr.host || cur.port !== addr.port) {
          conn.close();
          return;
        }
        const ch = new ControlChannel(conn, this.scheduler);
        this.out.set(id, ch);
        ch.onClose(() => {
          if (this.out.get(id) === ch) this.out.delete(id);
          const again = this.wanted.get(id);
          if (again) this.scheduler.after(100, () => this.connect(id, again));
        });
      },
      (e: Error) => {
        this.connecting.delete(id);
        this.counters.inc(MESH.peer_connect_failures);
        this.log.debug('peer connect failed', { peer: id, err: e.message });
        const again = this.wanted.get(id);
        if (again) this.scheduler.after(200, () => this.connect(id, again));
      },
    );
  }

  private broadcast(records: Uint8Array, count: number): void {
    const msg = body('ownershipBatch', { owner: this.selfId, recordVersion: OWNERSHIP_RECORD_VERSION, count, records, remapFrom: 0, remapTo: 0 });
    for (const ch of this.out.values()) {
      if (ch.send(msg)) {
        this.counters.inc(MESH.batches_sent);
        this.counters.inc(MESH.records_sent, count);
      }
    }
  }

  private onPeerMessage(env: EnvelopeObject): boolean {
    if (env.body.case !== 'ownershipBatch') return false;
    const h = this.handler;
    const b = env.body.value;
    if (b.remapTo !== 0 && b.remapFrom !== 0) h.remapOwner(b.remapFrom, b.remapTo);
    const r = forEachOwnershipBatch(b, (srcIp, dstIp, srcPort, dstPort, proto, flags, owner) => {
      if (owner === this.selfId) return;
      if ((flags & OwnershipFlag.REMOVED) !== 0) h.forgetOwnership(srcIp, dstIp, srcPort, dstPort, proto, owner);
      else h.learnOwnership(srcIp, dstIp, srcPort, dstPort, proto, owner);
    });
    if (r !== OwnershipCheck.OK) {
      this.counters.inc(MESH.batches_rejected);
      return false;
    }
    this.counters.inc(MESH.batches_received);
    this.counters.inc(MESH.records_received, b.count);
    return true;
  }

  /**
   * The outbound channel to peer `id`, connecting first if needed (to
   * `addr`, or the address the last scope update gave). Off the hot path.
   */
  async channelTo(id: number, addr?: Address, timeoutMs = 3000): Promise<ControlChannel> {
    const have = this.out.get(id);
    if (have && !have.closed) return have;
    const to = addr ?? this.wanted.get(id);
    if (!to) throw new BatonError(ErrorCode.UNKNOWN_NODE, `no control address known for peer ${id}`);
    if (!this.wanted.has(id)) this.wanted.set(id, to);
    const conn = await withTimeout(this.net.connect(to), this.scheduler, timeoutMs, `connect to peer ${id} at ${to.host}:${to.port}`);
    const again = this.out.get(id);
    if (again && !again.closed) {
      conn.close();
      return again;
    }
    const ch = new ControlChannel(conn, this.scheduler);
    this.out.set(id, ch);
    ch.onClose(() => {
      if (this.out.get(id) === ch) this.out.delete(id);
    });
    return ch;
  }

  async stop(): Promise<void> {
    this.flushTimer?.cancel();
    for (const ch of this.out.values()) ch.close();
    this.out.clear();
    this.wanted.clear();
    await this.listener?.close();
  }
}

/** Rejects with BATON_TIMEOUT when `p` has not settled within `ms` (scheduler time). */
export function withTimeout<T>(p: Promise<T>, scheduler: Scheduler, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = scheduler.after(ms, () => reject(new BatonError(ErrorCode.TIMEOUT, `${what}: no answer within ${ms} ms`)));
    p.then(
      (v) => {
        t.cancel();
        resolve(v);
      },
      (e) => {
        t.cancel();
        reject(e);
      },
    );
  });
}
