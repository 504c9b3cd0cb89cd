/**
 * The third tier: a test backend that answers every packet it is given.
 *
 * Each received datagram holds one or more Geneve frames. Every inner IPv4
 * packet is turned into its reply IN PLACE, in the received buffer, and the
 * reply frames are packed back to back at the front of that same buffer; at
 * the end of the datagram the packed prefix is sent to `returnTo` (the hash
 * tier) as ONE datagram. So a batch in gives a batch out, with no copy of
 * the payload and no allocation besides the send view.
 *
 * Reply rules (addresses and ports are swapped; the ones'-complement sums are
 * order-independent, so a swap leaves both checksums valid):
 *   TCP RST            -> no reply
 *   TCP SYN            -> SYN|ACK, seq = ISN derived from the client's seq, ack = seq + 1 (+ payload)
 *   TCP FIN            -> FIN|ACK, seq = their ack, ack = seq + payload + 1, payload echoed
 *   TCP with payload   -> ACK|PSH, seq = their ack, ack = seq + payload, payload echoed
 *   TCP without payload and without SYN/FIN/RST (a pure ACK) -> no reply
 *   UDP                -> echo
 * The reply's TTL is reset to 64 (it is a new packet); changed header words
 * are patched incrementally (RFC 1624), so the cost does not depend on size.
 *
 * The reply carries the request's owner hint and client locator back (the
 * hash tier that receives it hands the locator on to the FD, which puts it
 * on the egress frame: any tier can then deliver the reply to the client).
 *
 * Writing a reply frame at `w` never overtakes the frame being read: the
 * reply's header holds Baton's option and, if the request had one, the
 * locator, so it is never longer than the received header, and frames that
 * produce no reply only leave more room.
 *
 * Malformed input is counted, never thrown. The buffer handed to onMessage is
 * owned by this node (UdpNet and MemoryNetwork give every datagram its own
 * buffer), so rewriting it and handing it to send() is safe.
 */
import type { Address } from '../shared/io/address.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { Counters, defineCounters } from '../shared/counters.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { decodeEncap, encodeEncap, encapHeaderLen, writeEncapHeader, EncapMeta, Tier } from '../shared/encap/geneve.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { csumReplace16, csumReplace32 } from '../shared/packet/checksum.js';
import { PacketMeta, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { LinkRx, LinkTx } from '../shared/dataplane/link-counters.js';
import { isQueueProbe, reflectQueueProbe } from '../shared/dataplane/queue-probe.js';

export const SN = defineCounters([
  'rx_datagrams',
  'rx_frames',
  'rx_bad_encap', // decodeEncap rejected a frame; the rest of that datagram is skipped
  'queue_probes_reflected', // a hash tier's echo probes sent straight back (its admission control measures this node's queue): not frames
  'rx_wrong_vni', // frame for another cluster
  'rx_bad_packet', // inner IPv4/TCP/UDP failed parsing or checksum verification
  'rx_no_reply', // TCP RST or pure ACK: valid, deliberately not answered
  'replies_tcp',
  'replies_udp',
  'tx_frames',
  'tx_datagrams',
  'tx_send_errors', // datagrams
  'tx_send_error_frames', // the frames those datagrams carried
  'drop_after_stop', // frames that arrived once the node had stopped answering
  'uplink_changes', // replies moved to another hash tier (the uplink died or came back)
  'drains', // the manager asked this node to drain: answer once no frame arrived for the quiet interval
  'drain_quiet_restarts', // a frame arrived while draining: the quiet interval started again
  'drain_timeouts', // the drain's timeout came before the node was quiet (the manager makes it DISENGAGED anyway)
  'stop_drains', // stopping (SIGTERM): asked the manager to drain this node before exiting
  'stop_drains_confirmed', // ... and the manager answered DISENGAGED (its route removed everywhere)
  'stop_drains_unconfirmed', // ... and got no such answer in time (no manager, refused): stopped anyway
] as const);

/** Per-link frame counts of a service node, shared by its successive ServiceNode instances. */
export class ServiceLinks {
  readonly rx = new LinkRx();
  readonly tx = new LinkTx();
}

/** Send callbacks of one socket come back in send order: frames per pending send, as a ring. */
const PENDING_RING = 1 << 16;

/** TTL of every reply. */
export const REPLY_TTL = 64;
/** Mixed into the client's ISN to make the server's ISN (deterministic, so tests can predict it). */
export const SERVER_ISN_XOR = 0x5bd1e995;

export interface ServiceNodeOptions {
  /** Node id (uint16); written as the reply frames' sender id. */
  id: number;
  socket: DatagramSocket;
  scheduler: Scheduler;
  /** The hash tier's data address, where replies go. */
  returnTo: Address;
  /** Cluster id (24-bit VNI): frames with another VNI are dropped, replies carry this one. */
  vni: number;
  counters?: Counters;
  /** Per-link counts (kept across instances by the member). */
  links?: ServiceLinks;
}

function bad(field: string, value: unknown, why: string): never {
  throw new BatonError(ErrorCode.BAD_ARGUMENT, `ServiceNode: ${field} ${why} (got ${String(value)})`, { field, value });
}

export class ServiceNode {
  readonly id: number;
  readonly vni: number;
  readonly returnTo: Address;
  readonly counters: Counters;
  readonly socket: DatagramSocket;
  private readonly rxMeta = new EncapMeta();
  private readonly txMeta = new EncapMeta();
  private readonly pkt = new PacketMeta();
  private stopped = false;
  readonly links: ServiceLinks;
  private readonly txLink: number;
  private readonly pending = new Uint32Array(PENDING_RING);
  private pendHead = 0;
  private pendCount = 0;

  constructor(opts: ServiceNodeOptions) {
    if (!Number.isInteger(opts.id) || opts.id < 0 || opts.id > 0xffff) bad('id', opts.id, 'must be an integer in 0..65535');
    if (!Number.isInteger(opts.vni) || opts.vni < 0 || opts.vni > 0xffffff) bad('vni', opts.vni, 'must be an integer in 0..16777215');
    const rt = opts.returnTo;
    if (!rt || typeof rt.host !== 'string' || rt.host === '' || !Number.isInteger(rt.port) || rt.port < 1 || rt.port > 65535) {
      bad('returnTo', rt && `${rt.host}:${rt.port}`, 'must be a host and a port in 1..65535');
    }
    if (!opts.socket) bad('socket', opts.socket, 'is required');
    if (!opts.scheduler) bad('scheduler', opts.scheduler, 'is required');
    this.id = opts.id;
    this.vni = opts.vni;
    this.returnTo = { host: rt.host, port: rt.port };
    this.socket = opts.socket;
    this.counters = opts.counters ?? new Counters(SN);
    this.links = opts.links ?? new ServiceLinks();
    this.txLink = this.links.tx.slot(this.returnTo);
    const t = this.txMeta;
    t.tier = Tier.SERVICE;
    t.senderId = opts.id;
    t.vni = opts.vni;
    t.flags = 0;
    t.hopCount = 0;
    // A service node has no view of the hash scope; 0 says "none".
    t.scopeVersion = 0;
    this.socket.onMessage(this.onDatagram);
  }

  /**
   * Stops answering (the socket belongs to the caller, who closes it or
   * hands it to a new instance). Until then, frames that still arrive are
   * counted as drop_after_stop, not silently ignored.
   */
  stop(): void {
    this.stopped = true;
    this.socket.onMessage(this.onDatagramStopped);
  }

  /** Sends handed to the socket and not yet reported (frames in them: pendingFrames). */
  get pendingSends(): number {
    return this.pendCount;
  }

  // One callback for every send: no closure per datagram. Callbacks arrive in send order.
  private readonly onSent = (err: Error | null): void => {
    const frames = this.pending[this.pendHead]!;
    this.pendHead = (this.pendHead + 1) & (PENDING_RING - 1);
    this.pendCount--;
    if (err) {
      this.counters.inc(SN.tx_send_errors);
      this.counters.inc(SN.tx_send_error_frames, frames);
    } else this.links.tx.add(this.txLink, frames);
  };

  private readonly onDatagram = (data: Uint8Array, from: Address | null): void => {
    if (this.stopped) return this.onDatagramStopped(data);
    if (from !== null && isQueueProbe(data) && reflectQueueProbe(data)) {
      this.socket.send(data, from);
      this.counters.inc(SN.queue_probes_reflected);
      return;
    }
    const before = this.counters.get(SN.tx_frames);
    const w = this.process(data, data.length);
    if (w > 0) {
      this.counters.inc(SN.tx_datagrams);
      if (this.pendCount === PENDING_RING) {
        // 65536 sends unreported: the socket is stuck; count rather than overrun the ring.
        const frames = this.counters.get(SN.tx_frames) - before;
        this.counters.inc(SN.tx_send_errors);
        this.counters.inc(SN.tx_send_error_frames, frames);
        return;
      }
      this.pending[(this.pendHead + this.pendCount) & (PENDING_RING - 1)] = this.counters.get(SN.tx_frames) - before;
      this.pendCount++;
      this.socket.send(w === data.length ? data : data.subarray(0, w), this.returnTo, this.onSent);
    }
  };

  private readonly onDatagramStopped = (data: Uint8Array): void => {
    const c = this.counters;
    const rm = this.rxMeta;
    c.inc(SN.rx_datagrams);
    let off = 0;
    while (off < data.length) {
      if (decodeEncap(data, off, data.length - off, rm) !== Reject.OK) {
        c.inc(SN.rx_bad_encap);
        break;
      }
      c.inc(SN.rx_frames);
      this.links.rx.add(rm.senderId);
      c.inc(SN.drop_after_stop);
      off += rm.frameLength;
    }
  };

  /**
   * Turns the frames of buf[0, len) into reply frames packed at buf[0, w) and
   * returns w (0 = nothing to send). Exposed for tests and benchmarks.
   */
  process(buf: Uint8Array, len: number): number {
    const c = this.counters;
    const rm = this.rxMeta;
    const tm = this.txMeta;
    const pm = this.pkt;
    c.inc(SN.rx_datagrams);
    let off = 0;
    let w = 0;
    while (off < len) {
      if (decodeEncap(buf, off, len - off, rm) !== Reject.OK) {
        c.inc(SN.rx_bad_encap); // the rest of the datagram cannot be delimited
        break;
      }
      c.inc(SN.rx_frames);
      this.links.rx.add(rm.senderId);
      const next = off + rm.frameLength;
      if (rm.vni !== this.vni) {
        c.inc(SN.rx_wrong_vni);
        off = next;
        continue;
      }
      const ip = rm.innerOffset;
      const innerLen = rm.innerLength;
      if (parseIPv4(buf, ip, innerLen, pm, true) !== Reject.OK) {
        c.inc(SN.rx_bad_packet);
        off = next;
        continue;
      }
      if (!this.reply(buf, pm)) {
        off = next;
        continue;
      }
      tm.ownerHint = rm.ownerHint;
      tm.locatorIp = rm.locatorIp;
      tm.locatorPort = rm.locatorPort;
      tm.locatorEncap = rm.locatorEncap;
      const hl = encapHeaderLen(tm);
      if (w + hl === ip) writeEncapHeader(buf, w, tm); // the usual case: no move
      else encodeEncap(buf, w, tm, buf, ip, innerLen); // moves the inner packet down (overlap-safe)
      w += hl + innerLen;
      c.inc(SN.tx_frames);
      off = next;
    }
    return w;
  }

  /** Rewrites the parsed packet into its reply in place; false = no reply. */
  private reply(buf: Uint8Array, pm: PacketMeta): boolean {
    const ip = pm.ipOffset;
    const l4 = pm.l4Offset;
    const isTcp = pm.proto === IPPROTO_TCP;
    let seq = 0;
    let ack = 0;
    let flags = 0;
    if (isTcp) {
      const f = pm.tcpFlags;
      const theirSeq = ((buf[l4 + 4]! << 24) | (buf[l4 + 5]! << 16) | (buf[l4 + 6]! << 8) | buf[l4 + 7]!) >>> 0;
      const theirAck = ((buf[l4 + 8]! << 24) | (buf[l4 + 9]! << 16) | (buf[l4 + 10]! << 8) | buf[l4 + 11]!) >>> 0;
      const plen = pm.payloadLength;
      if ((f & TCP_RST) !== 0) {
        this.counters.inc(SN.rx_no_reply);
        return false;
      }
      if ((f & TCP_SYN) !== 0) {
        flags = TCP_SYN | TCP_ACK;
        seq = (theirSeq ^ SERVER_ISN_XOR) >>> 0;
        ack = (theirSeq + 1 + plen) >>> 0;
      } else if ((f & TCP_FIN) !== 0) {
        flags = TCP_FIN | TCP_ACK;
        seq = theirAck;
        ack = (theirSeq + plen + 1) >>> 0;
      } else if (plen > 0) {
        flags = TCP_ACK | TCP_PSH;
        seq = theirAck;
        ack = (theirSeq + plen) >>> 0;
      } else {
        this.counters.inc(SN.rx_no_reply); // answering an ACK with an ACK would never end
        return false;
      }
      // TCP checksum: seq, ack and the data-offset/flags word change.
      let cs = (buf[l4 + 16]! << 8) | buf[l4 + 17]!;
      cs = csumReplace32(cs, theirSeq, seq);
      cs = csumReplace32(cs, theirAck, ack);
      const oldWord = (buf[l4 + 12]! << 8) | buf[l4 + 13]!;
      const newWord = (oldWord & 0xff00) | flags;
      cs = csumReplace16(cs, oldWord, newWord);
      buf[l4 + 4] = seq >>> 24;
      buf[l4 + 5] = seq >>> 16;
      buf[l4 + 6] = seq >>> 8;
      buf[l4 + 7] = seq;
      buf[l4 + 8] = ack >>> 24;
      buf[l4 + 9] = ack >>> 16;
      buf[l4 + 10] = ack >>> 8;
      buf[l4 + 11] = ack;
      buf[l4 + 13] = flags;
      buf[l4 + 16] = cs >>> 8;
      buf[l4 + 17] = cs;
    }
    // Swap addresses and ports: sums unchanged, so no checksum work.
    for (let i = 0; i < 4; i++) {
      const t = buf[ip + 12 + i]!;
      buf[ip + 12 + i] = buf[ip + 16 + i]!;
      buf[ip + 16 + i] = t;
    }
    for (let i = 0; i < 2; i++) {
      const t = buf[l4 + i]!;
      buf[l4 + i] = buf[l4 + 2 + i]!;
      buf[l4 + 2 + i] = t;
    }
    // Fresh TTL (IP header checksum only: TTL is not in the pseudo-header).
    const ttlWord = (buf[ip + 8]! << 8) | buf[ip + 9]!;
    const newTtlWord = (REPLY_TTL << 8) | (ttlWord & 0xff);
    if (newTtlWord !== ttlWord) {
      const ipcs = csumReplace16((buf[ip + 10]! << 8) | buf[ip + 11]!, ttlWord, newTtlWord);
      buf[ip + 8] = REPLY_TTL;
      buf[ip + 10] = ipcs >>> 8;
      buf[ip + 11] = ipcs;
    }
    this.counters.inc(isTcp ? SN.replies_tcp : SN.replies_udp);
    return true;
  }
}
