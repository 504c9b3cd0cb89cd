/**
 * decodeEncap (shared/encap/geneve.ts), one frame: never throws, returns
 * OK, BAD_ENCAP or BAD_ENCAP_VERSION (the drop_bad_encap /
 * drop_bad_encap_version counters), reads nothing outside [off, off+len).
 * An accepted frame is what an independent walk of its Geneve options says
 * it is, and encodeEncap of the decoded meta and inner packet decodes to the
 * same meta (byte for byte the same frame when it was in Baton's own form).
 */
import fc from 'fast-check';
import { decodeEncap, encodeEncap, EncapMeta, encapHeaderLen, ENCAP_OPTION_CLASS, ENCAP_OPTION_TYPE, ENCAP_LOCATOR_TYPE } from '../../../shared/encap/geneve.js';
import { Reject, REJECT_NAMES } from '../../../shared/packet/reject.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { fuzzBytes } from '../mutate.js';
import { arbEncapFrame, encapFields } from '../frames.js';

export interface EncapInput {
  bytes: Uint8Array;
  pre: number;
  post: Uint8Array;
  /** len: the rest of the buffer, shorter by `cut`, or past its end. */
  len: { k: 'rest' } | { k: 'cut'; v: number } | { k: 'beyond'; v: number };
}

const arbInput: fc.Arbitrary<EncapInput> = fc.record({
  bytes: fuzzBytes(arbEncapFrame, { fields: encapFields }),
  pre: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
  post: fc.oneof({ weight: 3, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
  len: fc.oneof(
    { weight: 8, arbitrary: fc.constant({ k: 'rest' as const }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('cut' as const), v: fc.integer({ min: 1, max: 64 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('beyond' as const), v: fc.integer({ min: 1, max: 64 }) }) },
  ),
});

interface Tlv {
  at: number;
  cls: number;
  type: number;
  dataLen: number;
}

/** Independent walk of a Geneve header at b[off] within len bytes: null when the options do not tile the options area. */
export function walkGeneve(b: Uint8Array, off: number, len: number): { headerLen: number; tlvs: Tlv[] } | null {
  if (len < 8) return null;
  const headerLen = 8 + (b[off]! & 0x3f) * 4;
  if (headerLen > len) return null;
  const tlvs: Tlv[] = [];
  let p = off + 8;
  while (p < off + headerLen) {
    const dataLen = (b[p + 3]! & 0x1f) * 4;
    if (p + 4 + dataLen > off + headerLen) return null;
    tlvs.push({ at: p, cls: (b[p]! << 8) | b[p + 1]!, type: b[p + 2]!, dataLen });
    p += 4 + dataLen;
  }
  return { headerLen, tlvs };
}

const META_FIELDS = ['version', 'tier', 'flags', 'hopCount', 'senderId', 'ownerHint', 'scopeVersion', 'vni', 'locatorIp', 'locatorPort', 'locatorEncap', 'innerLength'] as const;

const tally = new Tally();
const m = new EncapMeta();
const m2 = new EncapMeta();
const out = new Uint8Array(36 + 65535);
const out2 = new Uint8Array(36 + 65535);

export const encapTarget: FuzzTarget<EncapInput> = {
  name: 'encap/decodeEncap',
  covers: "shared/encap/geneve.ts decodeEncap (Geneve + Baton's option + client locator), encodeEncap",
  arbitrary: arbInput,
  tally,
  mustReach: ['ok', 'bad_encap', 'bad_encap_version', 'ok+locator', 'ok+locator_unreadable'],
  check(input) {
    const buf = new Uint8Array(input.pre + input.bytes.length + input.post.length);
    buf.set(input.bytes, input.pre);
    buf.set(input.post, input.pre + input.bytes.length);
    const off = input.pre;
    const len = input.len.k === 'rest' ? buf.length - off : input.len.k === 'cut' ? buf.length - off - input.len.v : buf.length - off + input.len.v;
    const code = noThrow('decodeEncap', () => decodeEncap(buf, off, len, m));
    ensure(code === Reject.OK || code === Reject.BAD_ENCAP || code === Reject.BAD_ENCAP_VERSION, `decodeEncap returned ${code}`);
    tally.add(code === Reject.OK && m.locatorPort !== 0 ? 'ok+locator' : code === Reject.OK && m.locatorUnreadable ? 'ok+locator_unreadable' : REJECT_NAMES[code]!);
    if (len < 0 || off + len > buf.length) {
      ensure(code === Reject.BAD_ENCAP, `a range past the buffer (len ${len}) decoded as ${REJECT_NAMES[code]}`);
      return;
    }
    // Reads stay inside [off, off+len): the same bytes alone decode the same.
    const alone = buf.slice(off, off + len);
    const codeAlone = decodeEncap(alone, 0, len, m2);
    ensure(codeAlone === code, () => `decodeEncap is ${REJECT_NAMES[code]} in place but ${REJECT_NAMES[codeAlone]} on the same ${len} bytes alone`);
    if (code !== Reject.OK) return;
    for (const f of META_FIELDS) ensure(m2[f] === m[f], () => `${f} ${m[f]} in place, ${m2[f]} alone`);
    ensure(m2.innerOffset + off === m.innerOffset && m2.frameLength === m.frameLength, 'offsets differ alone');
    checkAccepted(buf, off, len);
  },
};

function checkAccepted(buf: Uint8Array, off: number, len: number): void {
  const what = (): string => `accepted frame ${hex(buf.subarray(off, off + Math.min(len, 96)))}`;
  ensure(buf[off]! >>> 6 === 0 && (buf[off + 1]! & 0x80) === 0 && buf[off + 2] === 0x08 && buf[off + 3] === 0x00, () => `${what()}: base header`);
  const w = walkGeneve(buf, off, len);
  ensure(w !== null, () => `${what()}: its options do not tile the options area`);
  const baton = w.tlvs.find((t) => t.cls === ENCAP_OPTION_CLASS && t.type === ENCAP_OPTION_TYPE);
  ensure(baton !== undefined && baton.dataLen === 12 && buf[baton.at + 4]! >>> 4 === 1, () => `${what()}: no Baton option of version 1, 12 bytes`);
  for (const t of w.tlvs) {
    const known = t.cls === ENCAP_OPTION_CLASS && (t.type === ENCAP_OPTION_TYPE || t.type === ENCAP_LOCATOR_TYPE);
    ensure(known || (t.type & 0x80) === 0, () => `${what()}: accepted with an unknown critical option`);
  }
  const d = baton.at + 4;
  const u16 = (o: number): number => (buf[o]! << 8) | buf[o + 1]!;
  const u32 = (o: number): number => ((buf[o]! << 24) | (buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!) >>> 0;
  ensure(
    m.version === 1 && m.tier === (buf[d]! & 0x0f) && m.flags === buf[d + 1] && m.hopCount === buf[d + 2] && m.senderId === u16(d + 4) && m.ownerHint === u16(d + 6) && m.scopeVersion === u32(d + 8),
    () => `${what()}: meta differs from Baton's option`,
  );
  ensure(m.vni === ((buf[off + 4]! << 16) | (buf[off + 5]! << 8) | buf[off + 6]!), () => `${what()}: vni`);
  const loc = w.tlvs.find((t) => t.cls === ENCAP_OPTION_CLASS && t.type === ENCAP_LOCATOR_TYPE);
  const readable = loc !== undefined && loc.dataLen === 8 && buf[loc.at + 4] === 0x14;
  ensure(m.locatorUnreadable === (loc !== undefined && !readable), () => `${what()}: locatorUnreadable ${m.locatorUnreadable}`);
  if (readable) ensure(m.locatorPort === u16(loc.at + 6) && m.locatorIp === u32(loc.at + 8) && m.locatorEncap === buf[loc.at + 5], () => `${what()}: locator`);
  else ensure(m.locatorPort === 0 && m.locatorIp === 0, () => `${what()}: a locator without a readable option`);
  ensure(m.innerOffset === off + w.headerLen, () => `${what()}: innerOffset`);
  ensure(m.innerLength >= 20 && m.innerLength === u16(m.innerOffset + 2) && m.innerOffset + m.innerLength <= off + len, () => `${what()}: inner length ${m.innerLength}`);
  ensure(m.frameLength === w.headerLen + m.innerLength, () => `${what()}: frameLength`);

  // Round trip: re-encode the decoded meta and inner packet; it decodes to the same meta.
  const n = encodeEncap(out, 0, m, buf, m.innerOffset, m.innerLength);
  ensure(n === encapHeaderLen(m) + m.innerLength, () => `${what()}: encodeEncap of the decoded frame returned ${n}`);
  ensure(decodeEncap(out, 0, n, m2) === Reject.OK, () => `${what()}: its re-encoding does not decode`);
  for (const f of META_FIELDS) {
    const want = (f === 'locatorIp' || f === 'locatorEncap') && m.locatorPort === 0 ? 0 : m[f];
    ensure(m2[f] === want, () => `${what()}: ${f} ${m[f]} re-encoded decodes as ${m2[f]}`);
  }
  ensure(m2.frameLength === n && !m2.locatorUnreadable, () => `${what()}: re-encoded frameLength ${m2.frameLength} != ${n}`);
  for (let i = 0; i < m.innerLength; i++) ensure(out[m2.innerOffset + i] === buf[m.innerOffset + i], () => `${what()}: inner byte ${i} changed`);
  // ... and encoding that again gives the same bytes (Baton's form is a fixed point).
  const n2 = encodeEncap(out2, 0, m2, out, m2.innerOffset, m2.innerLength);
  ensure(n2 === n, 'second re-encoding has another length');
  for (let i = 0; i < n; i++) ensure(out2[i] === out[i], () => `${what()}: re-encoding is not a fixed point at byte ${i}`);
  // A frame in Baton's form (its option, then a readable locator with a port, nothing else) is re-encoded byte for byte,
  // but for what decode ignores: C and reserved bits, reserved bytes.
  const form = w.tlvs.length === 1 || (w.tlvs.length === 2 && readable && w.tlvs[1] === loc && m.locatorPort !== 0);
  if (!form || w.tlvs[0] !== baton) return;
  const ignored = new Set([1, 7, 11, 15, 27]);
  for (let i = 0; i < n; i++) {
    if (ignored.has(i)) continue;
    ensure(out[i] === buf[off + i], () => `${what()}: re-encoded byte ${i} is ${out[i]}, was ${buf[off + i]}`);
  }
}
