/**
 * Every connection is two flow entries: the forward flow (client → VIP, as
 * the client sent it) and the reverse flow (the reply as it comes back). With
 * a destination rewrite to backend B the pair is
 *   forward  C:cp → VIP:vp   rewrite dst to B:bp
 *   reverse  B:bp → C:cp     rewrite src to VIP:vp   (flags REVERSE | REWRITE_SRC)
 * and with a plain forward action the reverse key is the swapped forward key.
 * Given either entry, these compute the other one's key without a lookup.
 */
import { FlowTable, NetAction, FlowFlag } from './flow-table.js';

/** Reusable out-struct for a flow key. */
export class FlowKey {
  srcIp = 0;
  dstIp = 0;
  srcPort = 0;
  dstPort = 0;
  proto = 0;
}

/** The key of the other direction of the flow at `slot`. */
export function partnerKey(t: FlowTable, slot: number, out: FlowKey): void {
  out.proto = t.proto(slot);
  if (t.netAction(slot) === NetAction.REWRITE) {
    if ((t.flags(slot) & FlowFlag.REWRITE_SRC) !== 0) {
      out.srcIp = t.dstIp(slot);
      out.srcPort = t.dstPort(slot);
      out.dstIp = t.rewriteIp(slot);
      out.dstPort = t.rewritePort(slot);
    } else {
      out.srcIp = t.rewriteIp(slot);
      out.srcPort = t.rewritePort(slot);
      out.dstIp = t.srcIp(slot);
      out.dstPort = t.srcPort(slot);
    }
  } else {
    out.srcIp = t.dstIp(slot);
    out.srcPort = t.dstPort(slot);
    out.dstIp = t.srcIp(slot);
    out.dstPort = t.srcPort(slot);
  }
}

/** The key of the forward (client-direction) entry of the connection the entry at `slot` belongs to. */
export function forwardKey(t: FlowTable, slot: number, out: FlowKey): void {
  if ((t.flags(slot) & FlowFlag.REVERSE) !== 0) {
    partnerKey(t, slot, out);
  } else {
    out.srcIp = t.srcIp(slot);
    out.dstIp = t.dstIp(slot);
    out.srcPort = t.srcPort(slot);
    out.dstPort = t.dstPort(slot);
    out.proto = t.proto(slot);
  }
}
