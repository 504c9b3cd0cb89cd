/**
 * Real packets on the wire: Geneve frames sent over UDP on loopback, captured
 * by tshark and decoded by Wireshark's own Geneve/IPv4/TCP/UDP dissectors (no
 * plugin), which must see the inner 5-tuple, flags and good inner checksums.
 * Needs root (capture on lo) and tshark (installed by ensureTshark if missing).
 */
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENCAP_HEADER_LEN, EncapFlag, EncapMeta, Tier, decodeEncap, encapHeaderLen, encodeEncap } from '../shared/encap/geneve.js';
import { buildPacket, type PacketSpec } from '../shared/packet/build.js';
import { IPPROTO_TCP, IPPROTO_UDP, TCP_SYN, intToIpv4, ipv4ToInt } from '../shared/packet/meta.js';
import { Reject } from '../shared/packet/reject.js';
import { type Capture, ensureTshark, startTsharkCapture, tsharkFields } from './setup/tshark.js';

interface FrameSpec {
  meta: Partial<EncapMeta>;
  inner: PacketSpec;
}

const VNI = 0x00c0de;
const SYN_A: FrameSpec = {
  meta: { tier: Tier.HASH, senderId: 3, scopeVersion: 42, vni: VNI },
  inner: { srcIp: ipv4ToInt('10.1.2.3'), dstIp: ipv4ToInt('192.0.2.9'), srcPort: 40000, dstPort: 443, proto: IPPROTO_TCP, tcpFlags: TCP_SYN, seq: 1000 },
};
const SYN_B: FrameSpec = {
  meta: { tier: Tier.FD, flags: EncapFlag.REDIRECTED, hopCount: 1, senderId: 0x0102, scopeVersion: 0xfeedf00d, vni: VNI },
  inner: { srcIp: ipv4ToInt('172.16.0.77'), dstIp: ipv4ToInt('203.0.113.5'), srcPort: 51515, dstPort: 8080, proto: IPPROTO_TCP, tcpFlags: TCP_SYN, seq: 0xabcdef01 },
};
// Ports without a Wireshark dissector, so the payload shows as plain data.
const UDP_C: FrameSpec = {
  meta: { tier: Tier.SERVICE, flags: EncapFlag.MIGRATED, senderId: 65535, scopeVersion: 1, vni: VNI },
  inner: {
    srcIp: ipv4ToInt('198.51.100.200'),
    dstIp: ipv4ToInt('10.0.0.1'),
    srcPort: 47011,
    dstPort: 47012,
    proto: IPPROTO_UDP,
    payload: new Uint8Array([0x62, 0x61, 0x74, 0x6f, 0x6e, 0x21]),
  },
};
// With the client-locator option (docs/wire-encapsulation.md §3a): 127.0.0.1:40000.
const SYN_L: FrameSpec = { meta: { ...SYN_A.meta, locatorIp: 0x7f000001, locatorPort: 40000 }, inner: SYN_A.inner };
// One datagram per entry; the last ones are batches of two frames back to back.
const DATAGRAMS: FrameSpec[][] = [[SYN_A], [SYN_B], [UDP_C], [SYN_L], [SYN_B, UDP_C], [SYN_L, UDP_C]];

function metaOf(f: Partial<EncapMeta>): EncapMeta {
  return Object.assign(new EncapMeta(), f);
}

function datagramOf(frames: FrameSpec[]): Uint8Array {
  const inners = frames.map((f) => buildPacket(f.inner));
  const out = new Uint8Array(inners.reduce((a, p, i) => a + encapHeaderLen(metaOf(frames[i]!.meta)) + p.length, 0));
  let off = 0;
  frames.forEach((f, i) => {
    const inner = inners[i]!;
    const n = encodeEncap(out, off, metaOf(f.meta), inner, 0, inner.length);
    if (n < 0) throw new Error('encodeEncap failed');
    off += n;
  });
  return out;
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** tshark prints booleans as 1/0 (4.0) or True/False (newer). */
function truthy(v: string | undefined): boolean {
  return v === '1' || v === 'True';
}

const FIELDS = [
  'frame.protocols',
  'geneve.version',
  'geneve.proto_type',
  'geneve.vni',
  'geneve.option.class',
  'geneve.option.type',
  'geneve.option.unknown.data',
  'ip.src',
  'ip.dst',
  'ip.proto',
  'ip.checksum.status',
  'tcp.srcport',
  'tcp.dstport',
  'tcp.flags.syn',
  'tcp.flags.ack',
  'tcp.seq_raw',
  'tcp.checksum.status',
  'udp.srcport',
  'udp.dstport',
  'udp.checksum.status',
  'data.data',
  '_ws.expert.message',
] as const;
type Field = (typeof FIELDS)[number];

const CHECKSUM_GOOD = '1'; // Wireshark PROTO_CHECKSUM_E_GOOD (0 bad, 2 unverified)

describe('Geneve frames decoded by tshark (real capture on loopback)', () => {
  let tshark = '';
  let dir = '';
  let sock: dgram.Socket | undefined;
  let capture: Capture | undefined;

  beforeAll(async () => {
    tshark = await ensureTshark();
    dir = mkdtempSync(join(tmpdir(), 'baton-encap-'));
  }, 16 * 60_000);

  afterAll(async () => {
    await capture?.stop();
    sock?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('captures the datagrams and tshark decodes Geneve, the Baton option and the inner packets', async () => {
    // Receiver on an ephemeral port: the capture filter and the decode-as use it.
    const rx = dgram.createSocket('udp4');
    sock = rx;
    await new Promise<void>((resolve, reject) => {
      rx.once('error', reject);
      rx.bind(0, '127.0.0.1', () => resolve());
    });
    const port = rx.address().port;
    const received: Uint8Array[] = [];
    const allReceived = new Promise<void>((resolve) =>
      rx.on('message', (msg) => {
        received.push(new Uint8Array(msg));
        if (received.length === DATAGRAMS.length) resolve();
      }),
    );

    const file = join(dir, 'geneve.pcap');
    capture = await startTsharkCapture(tshark, {
      iface: 'lo',
      filter: `udp port ${port}`,
      count: DATAGRAMS.length,
      file,
      readyTimeoutMs: 30_000,
    });

    const sent = DATAGRAMS.map(datagramOf);
    const tx = dgram.createSocket('udp4');
    let txPort = 0;
    try {
      await new Promise<void>((resolve, reject) => {
        tx.once('error', reject);
        tx.bind(0, '127.0.0.1', () => resolve());
      });
      txPort = tx.address().port;
      for (const d of sent) {
        await new Promise<void>((resolve, reject) => tx.send(d, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
      }
    } finally {
      tx.close();
    }
    expect(await capture.waitForExit(30_000)).toBe(0);
    await Promise.race([
      allReceived,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`received ${received.length}/${DATAGRAMS.length} datagrams`)), 10_000).unref()),
    ]);

    // Our own decoder on what the socket received: every frame, walked by frameLength.
    const m = new EncapMeta();
    received.forEach((dg, i) => {
      expect(toHex(dg)).toBe(toHex(sent[i]!)); // loopback keeps order
      let p = 0;
      for (const f of DATAGRAMS[i]!) {
        expect(decodeEncap(dg, p, dg.length - p, m)).toBe(Reject.OK);
        expect(m.senderId).toBe(f.meta.senderId);
        expect(toHex(dg.subarray(m.innerOffset, m.innerOffset + m.innerLength))).toBe(toHex(buildPacket(f.inner)));
        p += m.frameLength;
      }
      expect(p).toBe(dg.length);
    });

    const rows = await tsharkFields(
      tshark,
      file,
      ['-d', `udp.port==${port},geneve`, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE'],
      [...FIELDS],
    );
    expect(rows).toHaveLength(DATAGRAMS.length);

    rows.forEach((cols, i) => {
      const get = (f: Field): string[] => cols[FIELDS.indexOf(f)] ?? [];
      const last = (f: Field): string | undefined => get(f).at(-1);
      // tshark decodes the first frame of a datagram (a batch's later frames are trailing bytes to it).
      const first = DATAGRAMS[i]![0]!;
      const inner = first.inner;
      const isTcp = inner.proto === IPPROTO_TCP;
      const where = `datagram ${i}`;

      expect(get('frame.protocols'), where).toEqual([isTcp ? 'eth:ethertype:ip:udp:geneve:ip:tcp' : 'eth:ethertype:ip:udp:geneve:ip:udp:data']);
      expect(get('_ws.expert.message').filter((s) => /malformed/i.test(s)), where).toEqual([]);

      // Geneve base header and the Baton option.
      expect(get('geneve.version'), where).toEqual(['0']);
      expect(get('geneve.proto_type'), where).toEqual(['0x0800']);
      expect(get('geneve.vni').map(Number), where).toEqual([first.meta.vni]);
      const header = sent[i]!.subarray(12, ENCAP_HEADER_LEN);
      if (first.meta.locatorPort) {
        // Two options, both in Baton's (experimental) class: Baton's, then the locator.
        expect(get('geneve.option.class'), where).toEqual(['0xfffb', '0xfffb']);
        expect(get('geneve.option.type'), where).toEqual(['0x01', '0x02']);
        expect(get('geneve.option.unknown.data'), where).toEqual([toHex(header), '14009c407f000001']);
      } else {
        expect(get('geneve.option.class'), where).toEqual(['0xfffb']);
        expect(get('geneve.option.type'), where).toEqual(['0x01']);
        expect(get('geneve.option.unknown.data'), where).toEqual([toHex(header)]);
      }

      // Inner IPv4: [outer, inner] occurrences; exactly one inner packet decoded.
      expect(get('ip.src'), where).toEqual(['127.0.0.1', intToIpv4(inner.srcIp)]);
      expect(get('ip.dst'), where).toEqual(['127.0.0.1', intToIpv4(inner.dstIp)]);
      expect(get('ip.proto'), where).toEqual(['17', String(inner.proto)]);
      expect(last('ip.checksum.status'), where).toBe(CHECKSUM_GOOD);

      if (isTcp) {
        expect(get('tcp.srcport'), where).toEqual([String(inner.srcPort)]);
        expect(get('tcp.dstport'), where).toEqual([String(inner.dstPort)]);
        expect(truthy(last('tcp.flags.syn')), where).toBe(true);
        expect(truthy(last('tcp.flags.ack')), where).toBe(false);
        expect(get('tcp.seq_raw'), where).toEqual([String(inner.seq)]);
        expect(get('tcp.checksum.status'), where).toEqual([CHECKSUM_GOOD]);
        expect(get('udp.srcport'), where).toEqual([String(txPort)]); // only the outer UDP
      } else {
        expect(get('tcp.srcport'), where).toEqual([]);
        // The outer UDP's checksum is not asserted: on loopback the kernel
        // leaves it to (absent) offload, so the capture shows it unfinished.
        expect(get('udp.srcport'), where).toEqual([String(txPort), String(inner.srcPort)]);
        expect(get('udp.dstport'), where).toEqual([String(port), String(inner.dstPort)]);
        expect(last('udp.checksum.status'), where).toBe(CHECKSUM_GOOD);
        expect(get('data.data'), where).toEqual([toHex(inner.payload!)]);
      }
    });
  }, 120_000);
});
