/** Edge encapsulations (shared/encap/edge.ts) and the edge port (shared/dataplane/edge-port.ts). */
import { describe, it, expect } from 'vitest';
import { decodeEdge, writeEdgeHeader, EdgeEncap, EdgeReject, EDGE_HEADER_LEN } from '../shared/encap/edge.js';
import { EdgePort, EDGE, EDGE_SENDER_ID } from '../shared/dataplane/edge-port.js';
import { MemoryNetwork } from '../shared/io/datagram.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { buildPacket } from '../shared/packet/build.js';
import { IPPROTO_UDP, ipv4ToInt } from '../shared/packet/meta.js';

const VNI = 0x123456;
const inner = buildPacket({ srcIp: ipv4ToInt('172.16.0.1'), dstIp: ipv4ToInt('198.51.100.1'), srcPort: 40000, dstPort: 53, proto: IPPROTO_UDP, payload: new Uint8Array([1, 2, 3, 4]) });

function frame(kind: EdgeEncap, vni = VNI, body: Uint8Array = inner): Uint8Array {
  const d = new Uint8Array(EDGE_HEADER_LEN + body.length);
  writeEdgeHeader(kind, d, 0, vni);
  d.set(body, EDGE_HEADER_LEN);
  return d;
}

describe('edge encapsulation codec', () => {
  it('writes the headers Linux writes: VXLAN-GPE 0c 00 00 01 | VNI | 00, Geneve 00 00 08 00 | VNI | 00', () => {
    expect([...frame(EdgeEncap.VXLAN_GPE).subarray(0, 8)]).toEqual([0x0c, 0, 0, 0x01, 0x12, 0x34, 0x56, 0]);
    expect([...frame(EdgeEncap.GENEVE).subarray(0, 8)]).toEqual([0, 0, 0x08, 0x00, 0x12, 0x34, 0x56, 0]);
  });

  it('accepts one whole IPv4 packet of the cluster VNI, in either kind', () => {
    for (const k of [EdgeEncap.VXLAN_GPE, EdgeEncap.GENEVE]) {
      const d = frame(k);
      expect(decodeEdge(k, d, d.length, VNI)).toBe(EdgeReject.OK);
    }
  });

  it('refuses, with a reason, everything else', () => {
    const gpe = (mut: (d: Uint8Array) => void, body?: Uint8Array) => {
      const d = frame(EdgeEncap.VXLAN_GPE, VNI, body);
      mut(d);
      return decodeEdge(EdgeEncap.VXLAN_GPE, d, d.length, VNI);
    };
    const gen = (mut: (d: Uint8Array) => void) => {
      const d = frame(EdgeEncap.GENEVE);
      mut(d);
      return decodeEdge(EdgeEncap.GENEVE, d, d.length, VNI);
    };
    expect(decodeEdge(EdgeEncap.VXLAN_GPE, new Uint8Array(20), 20, VNI)).toBe(EdgeReject.TRUNCATED);
    expect(gpe((d) => (d[0] = 0x08))).toBe(EdgeReject.BAD_FLAGS); // P missing (plain VXLAN)
    expect(gpe((d) => (d[0] = 0x0d))).toBe(EdgeReject.BAD_FLAGS); // O (OAM)
    expect(gpe((d) => (d[0] = 0x2c))).toBe(EdgeReject.BAD_FLAGS); // version 2
    expect(gpe((d) => (d[3] = 0x03))).toBe(EdgeReject.BAD_NEXT_PROTOCOL); // Ethernet
    expect(gpe((d) => (d[6] = 0x57))).toBe(EdgeReject.WRONG_VNI);
    expect(gpe(() => {}, new Uint8Array([...inner, 0, 0]))).toBe(EdgeReject.BAD_INNER_LENGTH); // two bytes of trailer
    expect(gpe((d) => (d[EDGE_HEADER_LEN + 3] = d[EDGE_HEADER_LEN + 3]! + 20))).toBe(EdgeReject.BAD_INNER_LENGTH); // a second packet would follow
    expect(gen((d) => (d[0] = 0x01))).toBe(EdgeReject.HAS_OPTIONS);
    expect(gen((d) => (d[1] = 0x80))).toBe(EdgeReject.BAD_FLAGS); // OAM
    expect(gen((d) => (d[0] = 0x40))).toBe(EdgeReject.BAD_FLAGS); // version 1
    expect(gen((d) => (d[2] = 0x65))).toBe(EdgeReject.BAD_NEXT_PROTOCOL); // Ethernet (0x6558)
  });

  it('never throws on garbage', () => {
    for (let i = 0; i < 2000; i++) {
      const n = i % 64;
      const d = new Uint8Array(n).map((_, j) => (i * 31 + j * 17) & 0xff);
      expect(() => decodeEdge(EdgeEncap.VXLAN_GPE, d, n, VNI)).not.toThrow();
      expect(() => decodeEdge(EdgeEncap.GENEVE, d, n, VNI)).not.toThrow();
    }
  });
});

describe('EdgePort', () => {
  it('hands accepted inner packets to the node with their sender, counts refusals, sends one packet per datagram', async () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, 0);
    const sock = net.bindSync({ host: '10.99.0.1', port: 4790 });
    const host = net.bindSync({ host: '10.99.0.101', port: 4790 });
    const port = new EdgePort(sock, sched, { kind: EdgeEncap.VXLAN_GPE, vni: VNI, peerPort: 4790 });
    const got: { len: number; from: string }[] = [];
    port.start((buf, off, len, from) => {
      got.push({ len, from: `${from.host}:${from.port}` });
      port.send(ipv4ToInt(from.host), buf, off, len); // echo it back to the host's tunnel port
    });
    const back: Uint8Array[] = [];
    host.onMessage((d) => back.push(d));
    host.send(frame(EdgeEncap.VXLAN_GPE), sock.address);
    host.send(frame(EdgeEncap.VXLAN_GPE, 7), sock.address);
    host.send(new Uint8Array([1, 2, 3]), sock.address);
    sched.runFor(10);
    expect(got).toEqual([{ len: inner.length, from: '10.99.0.101:4790' }]);
    expect(back.length).toBe(1);
    expect([...back[0]!]).toEqual([...frame(EdgeEncap.VXLAN_GPE)]);
    const c = port.counters;
    expect(c.get(EDGE.edge_rx_frames)).toBe(1);
    expect(c.get(EDGE.drop_edge_wrong_vni)).toBe(1);
    expect(c.get(EDGE.drop_edge_truncated)).toBe(1);
    expect(c.get(EDGE.edge_tx_frames)).toBe(1);
    expect(port.txAccepted).toBe(1);
    expect(port.links.entries()).toEqual([[EDGE_SENDER_ID, 1]]);
    expect(port.depth).toBe(0);
    await port.close();
  });

  it('counts a send it has no buffer for, and a packet too big for its buffers', () => {
    const sched = new VirtualScheduler();
    const net = new MemoryNetwork(sched, 0);
    const sock = net.bindSync({ host: '10.99.0.1', port: 4790 });
    const port = new EdgePort(sock, sched, { kind: EdgeEncap.VXLAN_GPE, vni: VNI, peerPort: 4790, txBuffers: 1, txBufferBytes: 64 });
    expect(port.send(ipv4ToInt('10.99.0.101'), new Uint8Array(100), 0, 100)).toBe(false);
    expect(port.counters.get(EDGE.drop_edge_tx_too_big)).toBe(1);
    expect(port.send(ipv4ToInt('10.99.0.101'), inner, 0, inner.length)).toBe(true);
    expect(port.send(ipv4ToInt('10.99.0.101'), inner, 0, inner.length)).toBe(false);
    expect(port.counters.get(EDGE.drop_edge_tx_pool_empty)).toBe(1);
  });
});
