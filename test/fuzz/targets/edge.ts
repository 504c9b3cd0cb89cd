/**
 * decodeEdge (shared/encap/edge.ts), VXLAN-GPE and optionless Geneve from
 * real hosts: never throws, returns an EdgeReject code (EDGE_REJECT_NAMES:
 * the edge port's counters). Accepted means exactly the documented header
 * fields, the cluster's VNI and one IPv4 packet whose total length fills
 * the datagram; writeEdgeHeader over it changes only the reserved bytes.
 */
import fc from 'fast-check';
import { decodeEdge, EdgeEncap, EdgeReject, EDGE_REJECT_NAMES, EDGE_HEADER_LEN, writeEdgeHeader } from '../../../shared/encap/edge.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { fuzzBytes } from '../mutate.js';
import { arbEdgeFrame, edgeFields, u24 } from '../frames.js';

export interface EdgeInput {
  bytes: Uint8Array;
  /** The VNI the receiver expects: the frame's own (mostly) or another. */
  vni: number | null;
  /** len argument: the datagram's length, or shorter/longer by this much. */
  lenDelta: number;
}

/** Reserved bytes of each header (ignored on receipt; writeEdgeHeader writes 0). */
const RESERVED: Record<number, readonly number[]> = { [EdgeEncap.VXLAN_GPE]: [1, 2, 7], [EdgeEncap.GENEVE]: [7] };

function edgeTarget(kind: EdgeEncap, name: string): FuzzTarget<EdgeInput> {
  const tally = new Tally();
  const arbitrary: fc.Arbitrary<EdgeInput> = fc.record({
    bytes: fuzzBytes(arbEdgeFrame(kind), { fields: edgeFields }),
    vni: fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: u24 }),
    lenDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -40, max: 40 }) }),
  });
  return {
    name: `edge/${name}`,
    covers: `shared/encap/edge.ts decodeEdge(${name === 'vxlan-gpe' ? 'VXLAN_GPE' : 'GENEVE'}), writeEdgeHeader`,
    arbitrary,
    tally,
    mustReach: EDGE_REJECT_NAMES.filter((n) => !(kind === EdgeEncap.VXLAN_GPE && n === 'edge_has_options')),
    check({ bytes, vni: v, lenDelta }) {
      const vni = v ?? (bytes.length >= 7 ? (bytes[4]! << 16) | (bytes[5]! << 8) | bytes[6]! : 0);
      const len = bytes.length + lenDelta;
      const code = noThrow('decodeEdge', () => decodeEdge(kind, bytes, len, vni));
      ensure(Number.isInteger(code) && EDGE_REJECT_NAMES[code] !== undefined, `decodeEdge returned ${code}`);
      tally.add(EDGE_REJECT_NAMES[code]!);
      if (len > bytes.length || len < EDGE_HEADER_LEN + 20) ensure(code === EdgeReject.TRUNCATED, `len ${len} of a ${bytes.length}-byte datagram: ${EDGE_REJECT_NAMES[code]}`);
      if (code !== EdgeReject.OK) return;
      const what = (): string => `accepted ${name} datagram ${hex(bytes, 64)} (len ${len})`;
      if (kind === EdgeEncap.VXLAN_GPE) ensure(bytes[0] === 0x0c && bytes[3] === 0x01, () => `${what()}: flags/next protocol`);
      else ensure(bytes[0] === 0 && (bytes[1]! & 0xc0) === 0 && bytes[2] === 0x08 && bytes[3] === 0x00, () => `${what()}: Geneve header`);
      ensure(((bytes[4]! << 16) | (bytes[5]! << 8) | bytes[6]!) === (vni & 0xffffff), () => `${what()}: VNI`);
      ensure(((bytes[10]! << 8) | bytes[11]!) === len - EDGE_HEADER_LEN, () => `${what()}: the inner packet does not fill the datagram`);
      // Round trip: Baton's own header for the same VNI over it: still accepted, only reserved bits changed.
      const copy = bytes.slice(0, len);
      writeEdgeHeader(kind, copy, 0, vni);
      ensure(decodeEdge(kind, copy, len, vni) === EdgeReject.OK, () => `${what()}: refused with writeEdgeHeader's header`);
      for (let i = 0; i < EDGE_HEADER_LEN; i++) {
        if (RESERVED[kind]!.includes(i) || (kind === EdgeEncap.GENEVE && i === 1)) continue;
        ensure(copy[i] === bytes[i], () => `${what()}: header byte ${i} is ${bytes[i]}, Baton writes ${copy[i]}`);
      }
    },
  };
}

export const edgeGpeTarget = edgeTarget(EdgeEncap.VXLAN_GPE, 'vxlan-gpe');
export const edgeGeneveTarget = edgeTarget(EdgeEncap.GENEVE, 'geneve');
