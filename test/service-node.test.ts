import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ServiceNode, SN, REPLY_TTL, SERVER_ISN_XOR } from '../service-node/service-node.js';
import { MemoryNetwork, type MemorySocket } from '../shared/io/datagram.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { buildPacket, type PacketSpec } from '../shared/packet/build.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { decodeEncap, encodeEncap, EncapMeta, ENCAP_HEADER_LEN, Tier } from '../shared/encap/geneve.js';
import { PacketMeta, ipv4ToInt, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { flipped } from './helpers/bytes.js';

const VNI = 0x00abcd;
const SN_ID = 0x0123;
const CLIENT = ipv4ToInt('192.0.2.7');
const SERVICE = ipv4ToInt('10.1.0.3');

interface Rig {
  sched: VirtualScheduler;
  net: MemoryNetwork;
  node: ServiceNode;
  nodeSock: MemorySocket;
  fd: MemorySocket; // plays the FD sending in, and the hash tier receiving replies
  got: Uint8Array[];
}

function rig(): Rig {
  const sched = new VirtualScheduler();
  const net = new MemoryNetwork(sched);
  const nodeSock = net.bindSync({ host: '10.9.0.3', port: 0 });
  const fd = net.bindSync({ host: '10.9.0.100', port: 0 });
  const got: Uint8Array[] = [];
  fd.onMessage((d) => got.push(d));
  const node = new ServiceNode({ id: SN_ID, socket: nodeSock, scheduler: sched, returnTo: fd.address, vni: VNI });
  return { sched, net, node, nodeSock, fd, got };
}

function frameMeta(ownerHint: number, vni = VNI): EncapMeta {
  const m = new EncapMeta();
  m.tier = Tier.FD;
  m.senderId = 5;
  m.ownerHint = ownerHint;
  m.vni = vni;
  m.scopeVersion = 42;
  return m;
}

/** Frames back to back in one datagram. */
function datagram(frames: { pkt: Uint8Array; hint?: number; vni?: number }[]): Uint8Array {
  const total = frames.reduce((n, f) => n + ENCAP_HEADER_LEN + f.pkt.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const f of frames) {
    const n = encodeEncap(out, off, frameMeta(f.hint ?? 0xffff, f.vni), f.pkt, 0, f.pkt.length);
    expect(n).toBeGreaterThan(0);
    off += n;
  }
  return out;
}

interface Decoded {
  meta: EncapMeta;
  pkt: Uint8Array;
}
function frames(d: Uint8Array): Decoded[] {
  const out: Decoded[] = [];
  let off = 0;
  while (off < d.length) {
    const m = new EncapMeta();
    expect(decodeEncap(d, off, d.length - off, m)).toBe(Reject.OK);
    out.push({ meta: m, pkt: d.slice(m.innerOffset, m.innerOffset + m.innerLength) });
    off += m.frameLength;
  }
  return out;
}

function send(r: Rig, d: Uint8Array): void {
  r.fd.send(d, r.nodeSock.address);
  r.sched.runUntilIdle();
}

const tcp = (o: Partial<PacketSpec>): PacketSpec => ({ srcIp: CLIENT, dstIp: SERVICE, srcPort: 40001, dstPort: 8080, proto: IPPROTO_TCP, ttl: 61, id: 0x1234, ...o });
const udp = (o: Partial<PacketSpec>): PacketSpec => ({ srcIp: CLIENT, dstIp: SERVICE, srcPort: 40002, dstPort: 5353, proto: IPPROTO_UDP, ttl: 61, id: 0x4321, ...o });

/** The reply an independent builder produces: swapped ends, TTL 64, same id/window/payload. */
function expectedReply(req: PacketSpec, o: Partial<PacketSpec>): Uint8Array {
  return buildPacket({ ...req, srcIp: req.dstIp, dstIp: req.srcIp, srcPort: req.dstPort, dstPort: req.srcPort, ttl: REPLY_TTL, ...o });
}

const PAYLOAD = Uint8Array.from({ length: 37 }, (_, i) => (i * 7 + 3) & 0xff);

describe('ServiceNode replies', () => {
  const cases: { name: string; req: PacketSpec; reply: Partial<PacketSpec> | null; counter: number }[] = [
    {
      name: 'SYN -> SYN|ACK, ack = seq + 1',
      req: tcp({ tcpFlags: TCP_SYN, seq: 1000, ack: 0 }),
      reply: { tcpFlags: TCP_SYN | TCP_ACK, seq: (1000 ^ SERVER_ISN_XOR) >>> 0, ack: 1001 },
      counter: SN.replies_tcp,
    },
    {
      name: 'SYN near 2^32 wraps the ack',
      req: tcp({ tcpFlags: TCP_SYN, seq: 0xffffffff }),
      reply: { tcpFlags: TCP_SYN | TCP_ACK, seq: (0xffffffff ^ SERVER_ISN_XOR) >>> 0, ack: 0 },
      counter: SN.replies_tcp,
    },
    {
      name: 'data -> ACK|PSH echoing the payload',
      req: tcp({ tcpFlags: TCP_ACK | TCP_PSH, seq: 5001, ack: 77, payload: PAYLOAD }),
      reply: { tcpFlags: TCP_ACK | TCP_PSH, seq: 77, ack: 5001 + PAYLOAD.length },
      counter: SN.replies_tcp,
    },
    {
      name: 'data without PSH is echoed too',
      req: tcp({ tcpFlags: TCP_ACK, seq: 9, ack: 10, payload: PAYLOAD.subarray(0, 1) }),
      reply: { tcpFlags: TCP_ACK | TCP_PSH, seq: 10, ack: 10 },
      counter: SN.replies_tcp,
    },
    {
      name: 'FIN -> FIN|ACK, ack = seq + 1',
      req: tcp({ tcpFlags: TCP_FIN | TCP_ACK, seq: 7000, ack: 300 }),
      reply: { tcpFlags: TCP_FIN | TCP_ACK, seq: 300, ack: 7001 },
      counter: SN.replies_tcp,
    },
    {
      name: 'UDP -> echo',
      req: udp({ payload: PAYLOAD }),
      reply: {},
      counter: SN.replies_udp,
    },
    {
      name: 'UDP without checksum -> echo without checksum',
      req: udp({ payload: PAYLOAD, udpChecksum: false }),
      reply: {},
      counter: SN.replies_udp,
    },
    {
      name: 'TCP with options keeps them',
      req: tcp({ tcpFlags: TCP_SYN, seq: 1, tcpOptions: Uint8Array.of(2, 4, 5, 0xb4) }),
      reply: { tcpFlags: TCP_SYN | TCP_ACK, seq: (1 ^ SERVER_ISN_XOR) >>> 0, ack: 2 },
      counter: SN.replies_tcp,
    },
    { name: 'RST -> no reply', req: tcp({ tcpFlags: TCP_RST | TCP_ACK, seq: 1 }), reply: null, counter: SN.rx_no_reply },
    { name: 'pure ACK -> no reply', req: tcp({ tcpFlags: TCP_ACK, seq: 1, ack: 2 }), reply: null, counter: SN.rx_no_reply },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const r = rig();
      const req = buildPacket(c.req);
      send(r, datagram([{ pkt: req, hint: 0x0007 }]));
      expect(r.node.counters.get(c.counter)).toBe(1);
      expect(r.node.counters.get(SN.rx_frames)).toBe(1);
      if (c.reply === null) {
        expect(r.got).toHaveLength(0);
        expect(r.node.counters.get(SN.tx_frames)).toBe(0);
        return;
      }
      expect(r.got).toHaveLength(1);
      const [f] = frames(r.got[0]!);
      // Byte-exact against an independently built reply (so both checksums are right).
      expect(Array.from(f!.pkt)).toEqual(Array.from(expectedReply(c.req, c.reply)));
      const pm = new PacketMeta();
      expect(parseIPv4(f!.pkt, 0, f!.pkt.length, pm, true)).toBe(Reject.OK);
      expect(f!.meta.tier).toBe(Tier.SERVICE);
      expect(f!.meta.senderId).toBe(SN_ID);
      expect(f!.meta.ownerHint).toBe(0x0007);
      expect(f!.meta.vni).toBe(VNI);
      expect(f!.meta.hopCount).toBe(0);
      expect(r.node.counters.get(SN.tx_frames)).toBe(1);
      expect(r.node.counters.get(SN.tx_datagrams)).toBe(1);
    });
  }

  it('a batch in gives one batch out, in order, skipping the frames without a reply', () => {
    const r = rig();
    const reqs = [
      tcp({ tcpFlags: TCP_SYN, seq: 10 }),
      tcp({ tcpFlags: TCP_RST, seq: 11 }),
      udp({ payload: PAYLOAD }),
      tcp({ tcpFlags: TCP_ACK | TCP_PSH, seq: 11, ack: 5, payload: PAYLOAD }),
    ];
    send(r, datagram(reqs.map((q, i) => ({ pkt: buildPacket(q), hint: 100 + i }))));
    expect(r.got).toHaveLength(1);
    const fs = frames(r.got[0]!);
    expect(fs.map((f) => f.meta.ownerHint)).toEqual([100, 102, 103]);
    expect(Array.from(fs[0]!.pkt)).toEqual(Array.from(expectedReply(reqs[0]!, { tcpFlags: TCP_SYN | TCP_ACK, seq: (10 ^ SERVER_ISN_XOR) >>> 0, ack: 11 })));
    expect(Array.from(fs[1]!.pkt)).toEqual(Array.from(expectedReply(reqs[2]!, {})));
    expect(Array.from(fs[2]!.pkt)).toEqual(Array.from(expectedReply(reqs[3]!, { tcpFlags: TCP_ACK | TCP_PSH, seq: 5, ack: 11 + PAYLOAD.length })));
    expect(r.node.counters.snapshot()).toMatchObject({ rx_frames: 4, tx_frames: 3, tx_datagrams: 1, rx_no_reply: 1, replies_tcp: 2, replies_udp: 1 });
  });

  it('a frame with a longer Geneve header (foreign option) is answered with a 24-byte header', () => {
    const r = rig();
    const req = buildPacket(udp({ payload: PAYLOAD }));
    const plain = datagram([{ pkt: req, hint: 9 }]);
    // Insert a non-critical 8-byte option (class 0x0102, type 0x05, 1 word of data) before Baton's.
    const foreign = Uint8Array.of(0x01, 0x02, 0x05, 0x01, 0xde, 0xad, 0xbe, 0xef);
    const d = new Uint8Array(plain.length + foreign.length);
    d.set(plain.subarray(0, 8), 0);
    d.set(foreign, 8);
    d.set(plain.subarray(8), 16);
    d[0] = (d[0]! & 0xc0) | ((d[0]! & 0x3f) + 2); // Opt Len += 2 words
    const second = buildPacket(tcp({ tcpFlags: TCP_SYN, seq: 3 }));
    const both = new Uint8Array(d.length + ENCAP_HEADER_LEN + second.length);
    both.set(d);
    encodeEncap(both, d.length, frameMeta(10), second, 0, second.length);
    send(r, both);
    const fs = frames(r.got[0]!);
    expect(fs).toHaveLength(2);
    expect(fs[0]!.meta.innerOffset).toBe(ENCAP_HEADER_LEN);
    expect(Array.from(fs[0]!.pkt)).toEqual(Array.from(expectedReply(udp({ payload: PAYLOAD }), {})));
    expect(fs[0]!.meta.ownerHint).toBe(9);
    expect(Array.from(fs[1]!.pkt)).toEqual(Array.from(expectedReply(tcp({ tcpFlags: TCP_SYN, seq: 3 }), { tcpFlags: TCP_SYN | TCP_ACK, seq: (3 ^ SERVER_ISN_XOR) >>> 0, ack: 4 })));
    expect(fs[1]!.meta.ownerHint).toBe(10);
  });
});

describe('ServiceNode malformed input is counted, never thrown', () => {
  it('garbage datagram -> rx_bad_encap, no reply', () => {
    const r = rig();
    send(r, Uint8Array.from({ length: 50 }, (_, i) => (i * 31) & 0xff));
    send(r, new Uint8Array(0));
    send(r, new Uint8Array(3));
    expect(r.node.counters.get(SN.rx_bad_encap)).toBe(2); // the empty datagram has no frame at all
    expect(r.got).toHaveLength(0);
  });

  it('good frame followed by a garbage tail: the good one is answered, the tail counted', () => {
    const r = rig();
    const good = datagram([{ pkt: buildPacket(udp({ payload: PAYLOAD })) }]);
    const d = new Uint8Array(good.length + 11).fill(0xee);
    d.set(good);
    send(r, d);
    expect(r.node.counters.get(SN.rx_bad_encap)).toBe(1);
    expect(r.node.counters.get(SN.replies_udp)).toBe(1);
    expect(frames(r.got[0]!)).toHaveLength(1);
  });

  it('bad IPv4 checksum, bad TCP checksum, unsupported protocol -> rx_bad_packet', () => {
    const r = rig();
    const badIp = flipped(buildPacket(tcp({ tcpFlags: TCP_SYN })), 10, 0x01);
    const badTcp = flipped(buildPacket(tcp({ tcpFlags: TCP_ACK, payload: PAYLOAD })), -1, 0xff);
    const icmp = buildPacket(udp({ payload: PAYLOAD }));
    icmp[9] = 1; // protocol ICMP (header checksum now wrong too; either way a bad packet)
    send(r, datagram([{ pkt: badIp }, { pkt: badTcp }, { pkt: icmp }]));
    expect(r.node.counters.get(SN.rx_bad_packet)).toBe(3);
    expect(r.node.counters.get(SN.rx_frames)).toBe(3);
    expect(r.got).toHaveLength(0);
  });

  it('wrong VNI -> rx_wrong_vni, no reply', () => {
    const r = rig();
    send(r, datagram([{ pkt: buildPacket(udp({ payload: PAYLOAD })), vni: VNI + 1 }]));
    expect(r.node.counters.get(SN.rx_wrong_vni)).toBe(1);
    expect(r.got).toHaveLength(0);
  });

  it('random bytes never throw and never produce a reply that does not parse', () => {
    const r = rig();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (bytes) => {
        const before = r.got.length;
        expect(() => r.node.process(Uint8Array.from(bytes), bytes.length)).not.toThrow();
        expect(r.got.length).toBe(before);
      }),
      { seed: 0x5e41, numRuns: 500 },
    );
    // Geneve-framed random inner bytes: whatever is answered must be a valid packet.
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 20, maxLength: 120 }), (inner) => {
        inner[0] = 0x45;
        inner[2] = inner.length >>> 8;
        inner[3] = inner.length & 0xff;
        const d = new Uint8Array(ENCAP_HEADER_LEN + inner.length);
        encodeEncap(d, 0, frameMeta(1), inner, 0, inner.length);
        const w = r.node.process(d, d.length);
        if (w > 0) {
          const m = new EncapMeta();
          expect(decodeEncap(d, 0, w, m)).toBe(Reject.OK);
          expect(parseIPv4(d, m.innerOffset, m.innerLength, new PacketMeta(), true)).toBe(Reject.OK);
        }
      }),
      { seed: 0x5e42, numRuns: 500 },
    );
  });

  it('constructor rejects bad arguments with BAD_ARGUMENT naming the field', () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched);
    const socket = net.bindSync({ host: 'x', port: 0 });
    const base = { id: 1, socket, scheduler: sched, returnTo: { host: 'h', port: 1 }, vni: 1 };
    for (const [field, over] of [
      ['id', { id: 70000 }],
      ['id', { id: 1.5 }],
      ['vni', { vni: -1 }],
      ['vni', { vni: 1 << 24 }],
      ['returnTo', { returnTo: { host: 'h', port: 0 } }],
    ] as const) {
      try {
        new ServiceNode({ ...base, ...over });
        expect.unreachable(`${field} accepted`);
      } catch (e) {
        expect(isBatonError(e, ErrorCode.BAD_ARGUMENT)).toBe(true);
        expect((e as Error).message).toContain(field);
      }
    }
  });
});

describe('ServiceNode property: every valid request gets a valid mirrored reply', () => {
  it('random TCP/UDP packets', () => {
    const r = rig();
    const pm = new PacketMeta();
    const req = new PacketMeta();
    fc.assert(
      fc.property(
        fc.record({
          srcIp: fc.nat({ max: 0xffffffff }),
          dstIp: fc.nat({ max: 0xffffffff }),
          srcPort: fc.nat({ max: 0xffff }),
          dstPort: fc.nat({ max: 0xffff }),
          isTcp: fc.boolean(),
          flags: fc.constantFrom(TCP_SYN, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK, TCP_ACK, TCP_SYN | TCP_ACK),
          seq: fc.nat({ max: 0xffffffff }),
          ack: fc.nat({ max: 0xffffffff }),
          ttl: fc.integer({ min: 1, max: 255 }),
          id: fc.nat({ max: 0xffff }),
          payload: fc.uint8Array({ minLength: 0, maxLength: 300 }),
          hint: fc.nat({ max: 0xffff }),
        }),
        (p) => {
          const spec: PacketSpec = {
            srcIp: p.srcIp,
            dstIp: p.dstIp,
            srcPort: p.srcPort,
            dstPort: p.dstPort,
            proto: p.isTcp ? IPPROTO_TCP : IPPROTO_UDP,
            tcpFlags: p.flags,
            seq: p.seq,
            ack: p.ack,
            ttl: p.ttl,
            id: p.id,
            payload: p.payload,
          };
          const pkt = buildPacket(spec);
          expect(parseIPv4(pkt, 0, pkt.length, req, true)).toBe(Reject.OK);
          const d = new Uint8Array(ENCAP_HEADER_LEN + pkt.length);
          encodeEncap(d, 0, frameMeta(p.hint), pkt, 0, pkt.length);
          const w = r.node.process(d, d.length);
          // No SYN/FIN and no payload (a pure ACK, with or without PSH): deliberately unanswered.
          const silent = p.isTcp && (p.flags & (TCP_SYN | TCP_FIN)) === 0 && p.payload.length === 0;
          if (silent) {
            expect(w).toBe(0);
            return;
          }
          expect(w).toBe(d.length);
          const m = new EncapMeta();
          expect(decodeEncap(d, 0, w, m)).toBe(Reject.OK);
          expect(m.ownerHint).toBe(p.hint);
          expect(parseIPv4(d, m.innerOffset, m.innerLength, pm, true)).toBe(Reject.OK);
          expect([pm.srcIp, pm.dstIp, pm.srcPort, pm.dstPort, pm.ttl]).toEqual([p.dstIp, p.srcIp, p.dstPort, p.srcPort, REPLY_TTL]);
          expect(Array.from(d.subarray(pm.payloadOffset, pm.payloadOffset + pm.payloadLength))).toEqual(Array.from(p.payload));
          if (p.isTcp) {
            const l4 = pm.l4Offset;
            const ackOut = ((d[l4 + 8]! << 24) | (d[l4 + 9]! << 16) | (d[l4 + 10]! << 8) | d[l4 + 11]!) >>> 0;
            const extra = (p.flags & (TCP_SYN | TCP_FIN)) !== 0 ? 1 : 0;
            expect(ackOut).toBe((p.seq + p.payload.length + extra) >>> 0);
            expect(pm.tcpFlags & TCP_ACK).toBe(TCP_ACK);
          }
        },
      ),
      { seed: 0x5e43, numRuns: 400 },
    );
  });
});
