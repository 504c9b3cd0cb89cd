/** The hash tier's edge (docs/edge-encapsulation.md): real clients' and real servers' packets in, replies out. */
import { describe, it, expect } from 'vitest';
import { ForwardingEngine, HT } from '../hash-tier/forwarding-engine.js';
import { EdgePort } from '../shared/dataplane/edge-port.js';
import { EdgeEncap, writeEdgeHeader, decodeEdge, EdgeReject, EDGE_HEADER_LEN } from '../shared/encap/edge.js';
import { MemoryNetwork } from '../shared/io/datagram.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { HashScope } from '../shared/scope/hash-scope.js';
import { buildPacket } from '../shared/packet/build.js';
import { EncapMeta, Tier, decodeEncap, encodeEncap, ENCAP_HEADER_LEN_LOCATOR } from '../shared/encap/geneve.js';
import { IPPROTO_TCP, TCP_SYN, TCP_ACK, ipv4ToInt } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';

const VNI = 5;
const VIP = ipv4ToInt('198.51.100.1');
const CLIENT = ipv4ToInt('172.16.0.1');
const SERVER = ipv4ToInt('10.99.0.201');

function edgeDatagram(inner: Uint8Array): Uint8Array {
  const d = new Uint8Array(EDGE_HEADER_LEN + inner.length);
  writeEdgeHeader(EdgeEncap.VXLAN_GPE, d, 0, VNI);
  d.set(inner, EDGE_HEADER_LEN);
  return d;
}

function setup() {
  const sched = new VirtualScheduler();
  const net = new MemoryNetwork(sched, 0);
  const htSock = net.bindSync({ host: '127.0.0.1', port: 6000 });
  const edgeSock = net.bindSync({ host: '10.99.0.1', port: 4790 });
  const fdSock = net.bindSync({ host: '127.0.0.1', port: 6001 });
  const clientHost = net.bindSync({ host: '10.99.0.101', port: 4790 }); // the client host's kernel tunnel
  const clientSrc = net.bindSync({ host: '10.99.0.101', port: 51234 }); // the source port its datagrams use (varies per connection)
  const serverHost = net.bindSync({ host: '10.99.0.201', port: 40000 });
  const stranger = net.bindSync({ host: '10.99.0.250', port: 40000 });
  const eng = new ForwardingEngine(htSock, sched, { id: 1, vni: VNI, hashSeed: 1 });
  const edge = new EdgePort(edgeSock, sched, { kind: EdgeEncap.VXLAN_GPE, vni: VNI, peerPort: 4790 });
  eng.attachEdge(edge, { vips: [VIP], servers: [SERVER] });
  eng.setScope(HashScope.build(1, ['fd-1'], 251, 1), [{ name: 'fd-1', id: 11, data: fdSock.address }]);
  const atFd: EncapMeta[] = [];
  const atFdInner: Uint8Array[] = [];
  fdSock.onMessage((d) => {
    let off = 0;
    const m = new EncapMeta();
    while (off < d.length && decodeEncap(d, off, d.length - off, m) === Reject.OK) {
      const copy = new EncapMeta();
      copy.copyFrom(m);
      atFd.push(copy);
      atFdInner.push(d.slice(m.innerOffset, m.innerOffset + m.innerLength));
      off += m.frameLength;
    }
  });
  const atClient: Uint8Array[] = [];
  clientHost.onMessage((d) => atClient.push(d));
  return { sched, eng, edge, htSock, edgeSock, fdSock, clientSrc, serverHost, stranger, atFd, atFdInner, atClient };
}

describe('hash tier edge', () => {
  it("a real client's packet goes to an FD with a locator naming its host's tunnel port and how it speaks; the FD's reply goes back as VXLAN-GPE", () => {
    const s = setup();
    const syn = buildPacket({ srcIp: CLIENT, dstIp: VIP, srcPort: 40001, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_SYN, payload: new Uint8Array(0) });
    s.clientSrc.send(edgeDatagram(syn), s.edgeSock.address);
    s.sched.runFor(5);
    expect(s.atFd.length).toBe(1);
    const m = s.atFd[0]!;
    expect([m.tier, m.locatorIp, m.locatorPort, m.locatorEncap]).toEqual([Tier.HASH, ipv4ToInt('10.99.0.101'), 4790, EdgeEncap.VXLAN_GPE]);
    expect([...s.atFdInner[0]!]).toEqual([...syn]);
    // The FD's answer (tier FD), with the locator it received.
    const synAck = buildPacket({ srcIp: VIP, dstIp: CLIENT, srcPort: 80, dstPort: 40001, proto: IPPROTO_TCP, tcpFlags: TCP_SYN | TCP_ACK, payload: new Uint8Array(0) });
    const out = new EncapMeta();
    out.copyFrom(m);
    out.tier = Tier.FD;
    out.senderId = 11;
    const f = new Uint8Array(ENCAP_HEADER_LEN_LOCATOR + synAck.length);
    encodeEncap(f, 0, out, synAck, 0, synAck.length);
    s.fdSock.send(f, s.htSock.address);
    s.sched.runFor(5);
    expect(s.atClient.length).toBe(1);
    const d = s.atClient[0]!;
    expect(decodeEdge(EdgeEncap.VXLAN_GPE, d, d.length, VNI)).toBe(EdgeReject.OK);
    expect([...d.subarray(EDGE_HEADER_LEN)]).toEqual([...synAck]);
    expect(s.eng.counters.get(HT.to_client_edge)).toBe(1);
    expect(s.eng.counters.get(HT.edge_client_frames)).toBe(1);
  });

  it('without a locator, a reply reaches the client by what the tier learned (host tunnel port and encapsulation)', () => {
    const s = setup();
    const syn = buildPacket({ srcIp: CLIENT, dstIp: VIP, srcPort: 40001, dstPort: 80, proto: IPPROTO_TCP, tcpFlags: TCP_SYN, payload: new Uint8Array(0) });
    s.clientSrc.send(edgeDatagram(syn), s.edgeSock.address);
    s.sched.runFor(5);
    const synAck = buildPacket({ srcIp: VIP, dstIp: CLIENT, srcPort: 80, dstPort: 40001, proto: IPPROTO_TCP, tcpFlags: TCP_SYN | TCP_ACK, payload: new Uint8Array(0) });
    const out = new EncapMeta();
    out.vni = VNI;
    out.tier = Tier.FD;
    out.senderId = 11;
    const f = new Uint8Array(64 + synAck.length);
    const n = encodeEncap(f, 0, out, synAck, 0, synAck.length);
    s.fdSock.send(f.subarray(0, n), s.htSock.address);
    s.sched.runFor(5);
    expect(s.atClient.length).toBe(1);
    expect(s.eng.counters.get(HT.to_client_learned)).toBe(1);
  });

  it("a real server's reply is hashed to an FD as a service frame without owner hint; packets from strangers are dropped, counted", () => {
    const s = setup();
    const reply = buildPacket({ srcIp: SERVER, dstIp: CLIENT, srcPort: 80, dstPort: 40001, proto: IPPROTO_TCP, tcpFlags: TCP_SYN | TCP_ACK, payload: new Uint8Array(0) });
    s.serverHost.send(edgeDatagram(reply), s.edgeSock.address);
    s.stranger.send(edgeDatagram(reply), s.edgeSock.address);
    s.sched.runFor(5);
    expect(s.atFd.length).toBe(1);
    expect([s.atFd[0]!.tier, s.atFd[0]!.ownerHint, s.atFd[0]!.locatorPort]).toEqual([Tier.HASH, 0xffff, 0]);
    expect(s.eng.counters.get(HT.edge_server_frames)).toBe(1);
    expect(s.eng.counters.get(HT.drop_edge_unknown_source)).toBe(1);
  });
});
