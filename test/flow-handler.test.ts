import { describe, it, expect, beforeEach } from 'vitest';
import { FlowHandler, Verdict, type OwnershipSink } from '../distributor/flow-handler.js';
import { FlowTable, NetAction, FlowFlag } from '../distributor/flow-table.js';
import { HashRewritePolicy, ForwardPolicy, type ServicePolicy } from '../distributor/service-policy.js';
import { FD } from '../distributor/fd-counters.js';
import { ManualClock } from '../shared/clock.js';
import { buildPacket, type PacketSpec } from '../shared/packet/build.js';
import { parseIPv4 } from '../shared/packet/parse.js';
import { PacketMeta, ipv4ToInt, IPPROTO_TCP, IPPROTO_UDP, TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, TCP_PSH } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { flipped } from './helpers/bytes.js';

const CLIENT = ipv4ToInt('192.0.2.10');
const VIP = ipv4ToInt('198.51.100.1');
const B1 = ipv4ToInt('10.1.0.1');
const B2 = ipv4ToInt('10.1.0.2');
const SELF = 1;
const PEER = 2;

class RecordingSink implements OwnershipSink {
  created: number[][] = [];
  removed: number[][] = [];
  flowCreated(s: number, d: number, sp: number, dp: number, p: number, o: number): void {
    this.created.push([s, d, sp, dp, p, o]);
  }
  flowRemoved(s: number, d: number, sp: number, dp: number, p: number): void {
    this.removed.push([s, d, sp, dp, p]);
  }
}

function tcp(flags: number, over: Partial<PacketSpec> = {}): Uint8Array {
  return buildPacket({ srcIp: CLIENT, dstIp: VIP, srcPort: 40000, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: flags, ...over });
}

function parsed(buf: Uint8Array): PacketMeta {
  const m = new PacketMeta();
  expect(parseIPv4(buf, 0, buf.length, m, true)).toBe(Reject.OK); // checksums verified
  return m;
}

describe('FlowHandler (seed 003 flow-handling algorithm)', () => {
  let clock: ManualClock;
  let table: FlowTable;
  let sink: RecordingSink;
  let h: FlowHandler;
  const mk = (policy: ServicePolicy = new HashRewritePolicy([{ ip: B1, port: 8080 }]), maxFlows = 1024) => {
    clock = new ManualClock(1000);
    table = new FlowTable(maxFlows);
    sink = new RecordingSink();
    h = new FlowHandler({ selfId: SELF, table, policy, clock, ownership: sink, lingerMs: 500, idleMs: 10_000 });
  };
  beforeEach(() => mk());

  it('SYN creates the flow and its reverse flow, rewrites to the backend and reports ownership', () => {
    const syn = tcp(TCP_SYN);
    expect(h.handle(syn, 0, syn.length)).toBe(Verdict.FORWARD);
    const m = parsed(syn);
    expect([m.srcIp, m.srcPort, m.dstIp, m.dstPort]).toEqual([CLIENT, 40000, B1, 8080]);
    expect(table.size).toBe(2);
    const fwd = table.find(CLIENT, VIP, 40000, 80, IPPROTO_TCP);
    const rev = table.find(B1, CLIENT, 8080, 40000, IPPROTO_TCP);
    expect(fwd).toBeGreaterThanOrEqual(0);
    expect(rev).toBeGreaterThanOrEqual(0);
    expect(table.netAction(fwd)).toBe(NetAction.REWRITE);
    expect(table.owner(fwd)).toBe(SELF);
    expect(table.flags(rev) & (FlowFlag.REVERSE | FlowFlag.REWRITE_SRC)).toBe(FlowFlag.REVERSE | FlowFlag.REWRITE_SRC);
    expect(sink.created).toEqual([
      [CLIENT, VIP, 40000, 80, IPPROTO_TCP, SELF],
      [B1, CLIENT, 8080, 40000, IPPROTO_TCP, SELF],
    ]);
    expect(h.counters.get(FD.flows_created)).toBe(1);
    expect(h.counters.get(FD.rewritten)).toBe(1);
  });

  it('the backend reply is matched by the reverse flow and rewritten back to the VIP', () => {
    const syn = tcp(TCP_SYN);
    h.handle(syn, 0, syn.length);
    const synAck = buildPacket({ srcIp: B1, dstIp: CLIENT, srcPort: 8080, dstPort: 40000, proto: IPPROTO_TCP, tcpFlags: TCP_SYN | TCP_ACK });
    expect(h.handle(synAck, 0, synAck.length)).toBe(Verdict.FORWARD);
    const m = parsed(synAck);
    expect([m.srcIp, m.srcPort, m.dstIp, m.dstPort]).toEqual([VIP, 80, CLIENT, 40000]);
  });

  it('counts packets and bytes on the flow entry', () => {
    const syn = tcp(TCP_SYN);
    h.handle(syn, 0, syn.length);
    const data = tcp(TCP_ACK | TCP_PSH, { payload: new Uint8Array(100) });
    h.handle(data, 0, data.length);
    const fwd = table.find(CLIENT, VIP, 40000, 80, IPPROTO_TCP);
    expect(table.packets(fwd)).toBe(2);
    expect(table.bytes(fwd)).toBe(syn.length + data.length);
  });

  it('a TCP non-SYN packet with no entry and no known owner is a counted drop', () => {
    const ack = tcp(TCP_ACK);
    expect(h.handle(ack, 0, ack.length)).toBe(Verdict.DROP);
    expect(h.dropCounter).toBe(FD.drop_no_flow);
    expect(h.counters.get(FD.drop_no_flow)).toBe(1);
    expect(table.size).toBe(0);
  });

  it('a UDP datagram with no entry creates the flow', () => {
    mk(new ForwardPolicy());
    const u = buildPacket({ srcIp: CLIENT, dstIp: VIP, srcPort: 5000, dstPort: 53, proto: IPPROTO_UDP, payload: new Uint8Array(12) });
    const before = Uint8Array.from(u);
    expect(h.handle(u, 0, u.length)).toBe(Verdict.FORWARD);
    expect(u).toEqual(before); // forward action leaves the packet untouched
    expect(table.find(VIP, CLIENT, 53, 5000, IPPROTO_UDP)).toBeGreaterThanOrEqual(0);
    expect(h.counters.get(FD.forwarded)).toBe(1);
  });

  it('a packet whose flow a peer owns is redirected to the owner, unchanged', () => {
    expect(h.learnOwnership(CLIENT, VIP, 40000, 80, IPPROTO_TCP, PEER)).toBe(true);
    const data = tcp(TCP_ACK);
    const before = Uint8Array.from(data);
    expect(h.handle(data, 0, data.length)).toBe(Verdict.REDIRECT);
    expect(h.redirectOwner).toBe(PEER);
    expect(data).toEqual(before);
    // even a SYN for a peer-owned 5-tuple goes to the owner
    const syn = tcp(TCP_SYN);
    expect(h.handle(syn, 0, syn.length)).toBe(Verdict.REDIRECT);
    expect(h.counters.get(FD.redirected)).toBe(2);
  });

  it('two FDs that both created a flow (race at a scope change) settle on the lower id, with no redirect loop', () => {
    // FD 1 and FD 4 each saw the first packet of the same UDP flow before the other's broadcast.
    const mkFd = (id: number) => {
      const t = new FlowTable(64);
      const out = new RecordingSink();
      const fd = new FlowHandler({ selfId: id, table: t, policy: new HashRewritePolicy([{ ip: B1, port: 8080 }]), clock: new ManualClock(1000), ownership: out, lingerMs: 500, idleMs: 10_000 });
      return { fd, t, out };
    };
    const a = mkFd(1);
    const b = mkFd(4);
    const udp = () => buildPacket({ srcIp: CLIENT, dstIp: VIP, srcPort: 5000, dstPort: 53, proto: IPPROTO_UDP, payload: new Uint8Array(12) });
    for (const x of [a, b]) {
      const p = udp();
      expect(x.fd.handle(p, 0, p.length)).toBe(Verdict.FORWARD);
    }
    // Each broadcast reaches the other (forward and reverse records).
    const aClaims = a.out.created.splice(0);
    const bClaims = b.out.created.splice(0);
    for (const c of bClaims) a.fd.learnOwnership(c[0]!, c[1]!, c[2]!, c[3]!, c[4]!, c[5]!);
    for (const c of aClaims) b.fd.learnOwnership(c[0]!, c[1]!, c[2]!, c[3]!, c[4]!, c[5]!);
    expect(a.fd.counters.get(FD.ownership_conflicts_kept)).toBe(2);
    expect(b.fd.counters.get(FD.ownership_conflicts_yielded)).toBe(2);
    expect(a.out.created.map((c) => c[5])).toEqual([1, 1]); // the keeper says so again
    for (const x of [a, b]) {
      for (const c of aClaims) expect(x.t.owner(x.t.find(c[0]!, c[1]!, c[2]!, c[3]!, c[4]!))).toBe(1);
    }
    // FD 1 forwards, FD 4 redirects to FD 1: one hop, not a loop.
    let p = udp();
    expect(a.fd.handle(p, 0, p.length)).toBe(Verdict.FORWARD);
    p = udp();
    expect(b.fd.handle(p, 0, p.length)).toBe(Verdict.REDIRECT);
    expect(b.fd.redirectOwner).toBe(1);
    // The re-announcement changes nothing at FD 4 any more.
    for (const c of a.out.created) b.fd.learnOwnership(c[0]!, c[1]!, c[2]!, c[3]!, c[4]!, c[5]!);
    expect(b.fd.counters.get(FD.ownership_conflicts_yielded)).toBe(2);
  });

  it('a FIN one way is a half-close: the other side goes on sending, for longer than the linger', () => {
    const syn = tcp(TCP_SYN);
    h.handle(syn, 0, syn.length);
    const fin = tcp(TCP_FIN | TCP_ACK);
    expect(h.handle(fin, 0, fin.length)).toBe(Verdict.FORWARD);
    expect(h.lingering).toBe(0);
    expect(h.counters.get(FD.flows_half_closed)).toBe(1);
    // The server keeps sending data long after the client's FIN (e.g. the rest of a download).
    for (let i = 0; i < 5; i++) {
      clock.advance(1000);
      h.tick();
      const data = buildPacket({ srcIp: B1, dstIp: CLIENT, srcPort: 8080, dstPort: 40000, proto: IPPROTO_TCP, tcpFlags: TCP_ACK | TCP_PSH, payload: new Uint8Array(100) });
      expect(h.handle(data, 0, data.length)).toBe(Verdict.FORWARD);
      const ack = tcp(TCP_ACK);
      expect(h.handle(ack, 0, ack.length)).toBe(Verdict.FORWARD);
    }
    expect(table.size).toBe(2);
  });

  it('FIN both ways lingers: closing packets still pass, then both directions are removed', () => {
    const syn = tcp(TCP_SYN);
    h.handle(syn, 0, syn.length);
    const fin = tcp(TCP_FIN | TCP_ACK);
    expect(h.handle(fin, 0, fin.length)).toBe(Verdict.FORWARD);
    const finBack = buildPacket({ srcIp: B1, dstIp: CLIENT, srcPort: 8080, dstPort: 40000, proto: IPPROTO_TCP, tcpFlags: TCP_FIN | TCP_ACK });
    expect(h.handle(finBack, 0, finBack.length)).toBe(Verdict.FORWARD);
    expect(h.lingering).toBe(1);
    clock.advance(499);
    h.tick();
    const lastAck = tcp(TCP_ACK);
    expect(h.handle(lastAck, 0, lastAck.length)).toBe(Verdict.FORWARD);
    expect(table.size).toBe(2);
    clock.advance(1);
    h.tick();
    expect(table.size).toBe(0);
    expect(h.counters.get(FD.flows_closed)).toBe(1);
    expect(sink.removed.length).toBe(2);
    const late = tcp(TCP_ACK);
    expect(h.handle(late, 0, late.length)).toBe(Verdict.DROP);
  });

  it('RST from the backend side also ends the flow after the linger', () => {
    const syn = tcp(TCP_SYN);
    h.handle(syn, 0, syn.length);
    const rst = buildPacket({ srcIp: B1, dstIp: CLIENT, srcPort: 8080, dstPort: 40000, proto: IPPROTO_TCP, tcpFlags: TCP_RST });
    expect(h.handle(rst, 0, rst.length)).toBe(Verdict.FORWARD);
    clock.advance(500);
    h.tick();
    expect(table.size).toBe(0);
  });

  it('a new SYN on a lingering 5-tuple starts a fresh flow', () => {
    mk(new HashRewritePolicy([{ ip: B1, port: 8080 }]));
    const syn = tcp(TCP_SYN);
    h.handle(syn, 0, syn.length);
    const fin = tcp(TCP_FIN | TCP_ACK);
    h.handle(fin, 0, fin.length);
    const syn2 = tcp(TCP_SYN);
    expect(h.handle(syn2, 0, syn2.length)).toBe(Verdict.FORWARD);
    const fwd = table.find(CLIENT, VIP, 40000, 80, IPPROTO_TCP);
    expect(table.flags(fwd) & FlowFlag.CLOSING).toBe(0);
    clock.advance(1000);
    h.tick(); // the old linger must not remove the new flow
    expect(table.size).toBe(2);
  });

  it('malformed packets are counted drops with their reason, never exceptions', () => {
    const syn = tcp(TCP_SYN);
    const bad = flipped(syn, 10, 0xff); // IP header checksum
    expect(h.handle(bad, 0, bad.length)).toBe(Verdict.DROP);
    expect(h.counters.snapshot()['drop_bad_ip_checksum']).toBe(1);
    expect(h.handle(syn, 0, 10)).toBe(Verdict.DROP);
    expect(h.counters.snapshot()['drop_truncated']).toBe(1);
    const rnd = new Uint8Array(64);
    for (let i = 0; i < 64; i++) rnd[i] = (i * 37 + 11) & 0xff;
    expect(h.handle(rnd, 0, rnd.length)).toBe(Verdict.DROP);
    expect(table.size).toBe(0);
  });

  it('a full table drops new flows (counted) and keeps serving existing ones', () => {
    mk(new HashRewritePolicy([{ ip: B1, port: 8080 }]), 2);
    const syn = tcp(TCP_SYN);
    expect(h.handle(syn, 0, syn.length)).toBe(Verdict.FORWARD);
    const syn2 = tcp(TCP_SYN, { srcPort: 40001 });
    expect(h.handle(syn2, 0, syn2.length)).toBe(Verdict.DROP);
    expect(h.counters.get(FD.drop_table_full)).toBe(1);
    expect(table.size).toBe(2);
    const data = tcp(TCP_ACK);
    expect(h.handle(data, 0, data.length)).toBe(Verdict.FORWARD);
  });

  it('a policy that refuses gives drop_no_backend', () => {
    mk(new HashRewritePolicy([]));
    const syn = tcp(TCP_SYN);
    expect(h.handle(syn, 0, syn.length)).toBe(Verdict.DROP);
    expect(h.counters.get(FD.drop_no_backend)).toBe(1);
  });

  it('idle flows expire through amortized tick() housekeeping', () => {
    mk(new HashRewritePolicy([{ ip: B1, port: 8080 }, { ip: B2, port: 8080 }]));
    for (let i = 0; i < 50; i++) {
      const s = tcp(TCP_SYN, { srcPort: 30000 + i });
      h.handle(s, 0, s.length);
    }
    expect(table.size).toBe(100);
    clock.advance(5000);
    h.tick();
    expect(table.size).toBe(100);
    clock.advance(5000);
    for (let i = 0; i < 20 && table.size > 0; i++) h.tick();
    expect(table.size).toBe(0);
    expect(h.counters.get(FD.flows_expired)).toBe(100);
  });
});
