/**
 * The FD's 5-tuple flow table (seed 003, "flow table entries": key = 5-tuple,
 * value = network action, application action, owner; plus rewrite target,
 * flags and counters). It also holds entries of flows owned by OTHER FDs
 * (learned from ownership broadcasts, netAction REDIRECT) so a packet whose
 * flow a peer owns can be redirected to it.
 *
 * Layout: open addressing (linear probing, backward-shift deletion, no
 * tombstones) over two typed arrays of `slots` = ceil(maxFlows / loadFactor)
 * entries; no per-entry objects, no string keys.
 *
 *   words  Uint32Array(slots * 9), array-of-structs, 36 bytes per slot:
 *            w0 srcIp          w1 dstIp        w2 srcPort<<16 | dstPort
 *            w3 proto(bits 0-7) | flags(8-15) | owner(16-31)
 *            w4 netAction(0-3) | appAction(4-15) | rewritePort(16-31)
 *            w5 rewriteIp      w6 packets      w7 bytes      w8 lastSeen (ms)
 *   hints  Uint8Array(slots): 0 = empty, else an 8-bit fingerprint (1..255)
 *          of the key's hash (low bits; the home slot uses the high bits).
 *
 * At the default load factor 0.8 that is 37 / 0.8 = 46.25 bytes per flow.
 *
 * Probing walks the 1.25 MB hint array (cache-resident) and touches the big
 * word array only where the fingerprint matches, so a hit costs one DRAM
 * access whose key comparison is almost always predicted right, and a miss
 * usually costs none. The layouts measured against this one, and their
 * numbers: docs/decisions/0001-flow-table-layout.md.
 *
 * Home slot = floor(hash * slots / 2^32) computed in doubles (`slots` need
 * not be a power of two). The product may round for slots > 2^21, but it is
 * deterministic and always < slots, which is all probing needs.
 *
 * Semantics worth knowing:
 *   - Slots move: removeAt/remove/expireStep backward-shift later entries of
 *     the same run. Callers must not hold slot indexes across a removal.
 *   - owner: uint16 node id; OWNER_NONE (0xFFFF) is reserved for "no owner".
 *   - packets and bytes are uint32 counters that wrap modulo 2^32 (like SNMP
 *     Counter32): consumers compute deltas modulo 2^32.
 *   - lastSeen is `nowMs >>> 0` (1 ms resolution, modulo 2^32). Idle time is
 *     ((now >>> 0) - lastSeen) >>> 0, exact for idle spans < 2^32 ms (49.7 days).
 *   - Hot-path methods (find, insert, touch, accessors, setters, removeAt,
 *     remove, nextOccupied, expireStep) never allocate and never throw; field
 *     values are masked to their widths. Slot arguments must come from
 *     find/insert/nextOccupied since the last removal; others read garbage.
 *   - Addresses may be passed as uint32 or int32 (`ip | 0`): both name the same
 *     key. Accessors return uint32. Boxing caveat for hot callers: V8 passes a
 *     uint32 >= 2^31 or a fractional number (performance.now()) to a call it
 *     did not inline as a freshly allocated HeapNumber. Per-packet callers
 *     should pass int32 addresses and integer milliseconds (lastSeen keeps
 *     whole ms anyway) to stay allocation-free whatever the JIT inlines.
 */
import { BatonError, ErrorCode } from '../shared/errors.js';

export const NetAction = { FORWARD: 0, REWRITE: 1, REDIRECT: 2 } as const;
export type NetAction = (typeof NetAction)[keyof typeof NetAction];

/**
 * Per-flow flags (8 bits).
 * REVERSE: this is the reverse flow of a connection. REWRITE_SRC: the rewrite
 * applies to the source (reverse NAT) rather than the destination. CLOSING:
 * RST, or a FIN each way, seen: lingering. STAGED: imported by a staged
 * migration copy and not yet committed (owned by its sender until then;
 * migration-receiver.ts sets it on import and clears it at the commit, abort
 * or expiry, so an entry this FD owns, the only kind it exports, never
 * carries it). FIN_SEEN: this direction sent a FIN (half-closed until the
 * other direction's FIN). EMBRYONIC: a TCP connection created by a SYN whose
 * client has not yet sent an ACK (a SYN flood's entries stay embryonic; the
 * handler bounds how many there are). Bits 6-7 are free.
 */
export const FlowFlag = { REVERSE: 1, REWRITE_SRC: 2, CLOSING: 4, STAGED: 8, FIN_SEEN: 16, EMBRYONIC: 32 } as const;
/** FlowFlag.STAGED in the meta word. */
const STAGED_BIT = 8 << 8;

/** Reserved owner id meaning "no owner known". */
export const OWNER_NONE = 0xffff;

/** Largest maxFlows a table accepts (16 Mi flows, ~776 MB at load factor 0.8). */
export const MAX_FLOWS_LIMIT = 1 << 24;
/** Most slots a table allocates (bounds memory for small load factors). */
export const MAX_SLOTS = 1 << 26;
export const DEFAULT_LOAD_FACTOR = 0.8;
export const MAX_LOAD_FACTOR = 0.95;

// Words per slot and word offsets. This module uses the unexported names:
// V8 reads an exported `const` through its module cell, with a hole check,
// on every use, while an unexported one is folded into optimized code
// (docs/decisions/0002-v8-field-typing-and-local-constants.md).
const STRIDE = 9;
const SRC = 0;
const DST = 1;
const PORTS = 2;
const META = 3;
const ACT = 4;
const RWIP = 5;
const PKTS = 6;
const BYTES = 7;
const SEEN = 8;

/** The same, exported for flow-export.ts. */
export const SLOT_WORDS = STRIDE;
export const W_SRC = SRC;
export const W_DST = DST;
export const W_PORTS = PORTS;
export const W_META = META;
export const W_ACT = ACT;
export const W_RWIP = RWIP;
export const W_PKTS = PKTS;
export const W_BYTES = BYTES;
export const W_SEEN = SEEN;

/** 2^-32: maps a uint32 hash onto [0, slots) by multiplication. */
const INV_2_32 = 2.3283064365386963e-10;

export interface FlowTableOptions {
  /** Occupancy at maxFlows, in (0, 0.95]; default 0.8. */
  loadFactor?: number;
  /** Hash seed, any integer; default random per table (hash-flooding resistance). */
  seed?: number;
}

/**
 * Table hash of the key words (not the hash tier's consistent hash): one
 * multiply / xor-shift round per word plus a final avalanche round. Checked
 * against structured key sets (sequential addresses, ports) in the tests.
 */
export function flowHash(seed: number, srcIp: number, dstIp: number, ports: number, proto: number): number {
  let h = Math.imul(seed ^ srcIp, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 15) ^ dstIp, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 13) ^ ports, 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 16) ^ proto, 0x165667b1);
  // Final avalanche: without it, keys differing only in the source port
  // (high half of the ports word) probed ~3x longer than random keys.
  h = Math.imul(h ^ (h >>> 15), 0x735a2d97);
  // int32, not uint32: a uint32 >= 2^31 returned from a call V8 did not
  // inline is boxed (allocated). Callers use `h >>> 0` where they need uint32.
  return h ^ (h >>> 16);
}

function badArg(msg: string, field: string, value: unknown): BatonError {
  return new BatonError(ErrorCode.BAD_ARGUMENT, msg, { field, value });
}

export class FlowTable {
  // Fields set in the constructor are `declare`d: with the define semantics
  // of class fields (ES2022 target) a plain declaration first creates the
  // field as undefined, so V8 records its type as "any" and the optimized
  // find() re-checks each typed array's map on every lookup. Declared
  // fields are created by the constructor's first store, with their real
  // type (docs/decisions/0002-v8-field-typing-and-local-constants.md).
  declare readonly maxFlows: number;
  /** Slot count: slot indexes are in [0, slots). */
  declare readonly slots: number;
  declare readonly loadFactor: number;
  declare readonly seed: number;
  /** Slot words (SLOT_WORDS per slot). Read-only for other modules (flow-export). */
  declare readonly words: Uint32Array;
  /** Per-slot fingerprint, 0 = empty. Read-only for other modules (flow-export). */
  declare readonly hints: Uint8Array;
  /**
   * Int32 view of `words` for the internal hot paths: keys are compared and
   * hashed as int32 so no value ever needs a HeapNumber box (uint32 >= 2^31
   * is not a Smi) when a call is not inlined.
   */
  private declare readonly w32: Int32Array;
  private declare readonly hashSeed: number;
  /**
   * slots / 2^32: home = floor(hash * homeScale). One multiply; exact, since
   * hash * slots < 2^53 and scaling by 2^-32 only moves the exponent.
   */
  private declare readonly homeScale: number;

  private count = 0;
  private cursor = 0;
  private examinedLast = 0;
  private mutationCount = 0;
  /** Latest nowMs given to insert/touch/expireStep (a typed array: no boxing on store). */
  private readonly clock = new Float64Array(1);

  constructor(maxFlows: number, opts?: FlowTableOptions) {
    if (typeof maxFlows !== 'number' || !Number.isInteger(maxFlows) || maxFlows < 1 || maxFlows > MAX_FLOWS_LIMIT) {
      throw badArg(`maxFlows must be an integer in [1, ${MAX_FLOWS_LIMIT}], got ${String(maxFlows)}`, 'maxFlows', maxFlows);
    }
    const lf = opts?.loadFactor ?? DEFAULT_LOAD_FACTOR;
    if (typeof lf !== 'number' || !(lf > 0 && lf <= MAX_LOAD_FACTOR)) {
      throw badArg(`loadFactor must be a number in (0, ${MAX_LOAD_FACTOR}], got ${String(lf)}`, 'loadFactor', lf);
    }
    // > maxFlows guarantees an empty slot, which terminates every probe.
    const slots = Math.max(Math.ceil(maxFlows / lf), maxFlows + 1);
    if (slots > MAX_SLOTS) {
      throw badArg(`loadFactor ${lf} with maxFlows ${maxFlows} needs ${slots} slots, more than ${MAX_SLOTS}; raise loadFactor`, 'loadFactor', lf);
    }
    const seed = opts?.seed ?? Math.floor(Math.random() * 0x100000000);
    if (typeof seed !== 'number' || !Number.isInteger(seed)) {
      throw badArg(`seed must be an integer, got ${String(seed)}`, 'seed', seed);
    }
    this.maxFlows = maxFlows;
    this.slots = slots;
    this.loadFactor = lf;
    this.seed = seed >>> 0;
    this.hashSeed = seed | 0;
    this.homeScale = this.slots * INV_2_32;
    this.words = new Uint32Array(slots * STRIDE);
    this.w32 = new Int32Array(this.words.buffer);
    this.hints = new Uint8Array(slots);
  }

  get size(): number {
    return this.count;
  }

  /** Bytes of all typed arrays the table holds. */
  get bytesAllocated(): number {
    return this.words.byteLength + this.hints.byteLength + this.clock.byteLength;
  }

  /**
   * Incremented by every structural change (new key inserted, entry removed,
   * clear). A chunked walk (export) can compare it before/after to know
   * whether slots may have moved under it.
   */
  get mutations(): number {
    return this.mutationCount;
  }

  /** Slots the last expireStep() examined (metrics, tests). */
  get lastExpireExamined(): number {
    return this.examinedLast;
  }

  /** Latest nowMs passed to insert/touch/expireStep (0 before any). */
  get latestNowMs(): number {
    return this.clock[0]!;
  }

  // ---------------------------------------------------------------- lookup

  /** Slot of the flow, or -1. */
  find(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): number {
    const a = srcIp | 0;
    const b = dstIp | 0;
    const p = (srcPort << 16) | (dstPort & 0xffff);
    const pr = proto & 0xff;
    const h = flowHash(this.hashSeed, a, b, p, pr);
    const W = this.w32;
    const H = this.hints;
    const cap = this.slots;
    const f = h & 0xff;
    const fp = f === 0 ? 1 : f;
    let i = ((h >>> 0) * this.homeScale) | 0;
    for (;;) {
      const t = H[i]!;
      if (t === fp) {
        const o = i * STRIDE;
        if (W[o] === a && W[o + 1] === b && W[o + 2] === p && (W[o + 3]! & 0xff) === pr) return i;
      } else if (t === 0) {
        return -1;
      }
      if (++i === cap) i = 0;
    }
  }

  // ---------------------------------------------------------------- insert

  /**
   * Inserts the flow and returns its slot. If the key exists its value is
   * overwritten (counters reset, lastSeen = nowMs) and its slot returned —
   * also when the table is full. Returns -1 for a new key when size ===
   * maxFlows (the caller counts the drop). Never throws.
   */
  insert(
    srcIp: number,
    dstIp: number,
    srcPort: number,
    dstPort: number,
    proto: number,
    owner: number,
    netAction: number,
    appAction: number,
    rewriteIp: number,
    rewritePort: number,
    flags: number,
    nowMs: number,
  ): number {
    const a = srcIp | 0;
    const b = dstIp | 0;
    const p = (srcPort << 16) | (dstPort & 0xffff);
    const pr = proto & 0xff;
    this.clock[0] = nowMs;
    const i = this.claim(flowHash(this.hashSeed, a, b, p, pr), a, b, p, pr);
    if (i < 0) return -1;
    const W = this.w32;
    const o = i * STRIDE;
    // New or existing key: (over)write the value; written inline, not via a
    // helper, so no double/uint32 argument is ever boxed for a call.
    W[o + META] = pr | ((flags & 0xff) << 8) | ((owner & 0xffff) << 16);
    W[o + ACT] = (netAction & 0xf) | ((appAction & 0xfff) << 4) | ((rewritePort & 0xffff) << 16);
    W[o + RWIP] = rewriteIp;
    W[o + PKTS] = 0;
    W[o + BYTES] = 0;
    W[o + SEEN] = nowMs;
    return i;
  }

  /**
   * Bulk insert of records in the slot layout (9 words each; word 8 holds
   * the idle time in ms, stored back as lastSeen = nowMs - idle), as the
   * flow-export format carries them. Existing keys are overwritten. `owner`
   * >= 0 replaces every record's owner. Returns how many records were
   * stored: less than `count` only when the table filled up. Validation is
   * the caller's (importFlows checks the chunk first). `flags` (FlowFlag
   * bits) are added to every record's flags.
   *
   * One plain pass: a pass touching each group's home slots first (so
   * their cache misses overlap) made the import slower once the fields were
   * typed (docs/decisions/0003-put-records-single-pass.md).
   */
  putRecords(src: Uint32Array, count: number, owner: number, nowMs: number, flags = 0): number {
    const W = this.w32;
    const S = new Int32Array(src.buffer, src.byteOffset, count * STRIDE);
    const seed = this.hashSeed;
    const now = nowMs | 0;
    const ownerBits = (owner & 0xffff) << 16;
    const setOwner = owner >= 0;
    const add = (flags & 0xff) << 8;
    this.clock[0] = nowMs;
    for (let r = 0; r < count; r++) {
      const q = r * STRIDE;
      const meta = S[q + 3]!;
      const i = this.claim(flowHash(seed, S[q]!, S[q + 1]!, S[q + 2]!, meta & 0xff), S[q]!, S[q + 1]!, S[q + 2]!, meta & 0xff);
      if (i < 0) return r;
      const o = i * STRIDE;
      W[o + META] = (setOwner ? (meta & 0xffff) | ownerBits : meta) | add;
      W[o + ACT] = S[q + 4]!;
      W[o + RWIP] = S[q + 5]!;
      W[o + PKTS] = S[q + 6]!;
      W[o + BYTES] = S[q + 7]!;
      W[o + SEEN] = (now - S[q + 8]!) | 0;
    }
    return count;
  }

  /**
   * Slot of the key (hash h, int32 key words), claimed for it (key written,
   * fingerprint set, size + 1) when absent; -1 when absent and the table is
   * full. The value words are the caller's to write.
   */
  private claim(h: number, a: number, b: number, p: number, pr: number): number {
    const W = this.w32;
    const H = this.hints;
    const cap = this.slots;
    const f = h & 0xff;
    const fp = f === 0 ? 1 : f;
    let i = ((h >>> 0) * this.homeScale) | 0;
    for (;;) {
      const t = H[i]!;
      const o = i * STRIDE;
      if (t === 0) {
        if (this.count === this.maxFlows) return -1;
        W[o] = a;
        W[o + 1] = b;
        W[o + 2] = p;
        H[i] = fp;
        this.count++;
        this.mutationCount++;
        return i;
      }
      if (t === fp && W[o] === a && W[o + 1] === b && W[o + 2] === p && (W[o + 3]! & 0xff) === pr) return i;
      if (++i === cap) i = 0;
    }
  }

  /**
   * Every entry owned by `from` now names `to`; returns how many. One pass
   * over the slots' owner words; moves nothing.
   */
  reassignOwner(from: number, to: number): number {
    const W = this.w32;
    const H = this.hints;
    const f = from & 0xffff;
    const nt = (to & 0xffff) << 16;
    let n = 0;
    for (let i = 0, o = META; i < this.slots; i++, o += STRIDE) {
      if (H[i] !== 0 && W[o]! >>> 16 === f) {
        W[o] = (W[o]! & 0xffff) | nt;
        n++;
      }
    }
    return n;
  }

  /**
   * Every entry owned by `from` and flagged STAGED now names `to`, its STAGED
   * flag cleared; returns how many (a staged migration copy's commit). One
   * pass over the slots' owner words; moves nothing.
   */
  commitStaged(from: number, to: number): number {
    const W = this.w32;
    const H = this.hints;
    const f = from & 0xffff;
    const nt = (to & 0xffff) << 16;
    let n = 0;
    for (let i = 0, o = META; i < this.slots; i++, o += STRIDE) {
      const m = W[o]!;
      if (H[i] !== 0 && m >>> 16 === f && (m & STAGED_BIT) !== 0) {
        W[o] = (m & 0xffff & ~STAGED_BIT) | nt;
        n++;
      }
    }
    return n;
  }

  /**
   * Writes the slots of the entries owned by `owner`, in slot order, to
   * `out` (at most out.length) and returns how many; `reverse`, when given,
   * receives (at index 0) how many of them carry FlowFlag.REVERSE. One pass
   * over the hint and owner words (migration's snapshot of what to move).
   */
  slotsOwnedBy(owner: number, out: Int32Array, reverse?: Int32Array): number {
    const W = this.w32;
    const H = this.hints;
    const cap = this.slots;
    const max = out.length;
    const f = owner & 0xffff;
    let n = 0;
    let rev = 0;
    for (let i = 0; i < cap && n < max; i++) {
      if (H[i] === 0) continue;
      const meta = W[i * STRIDE + META]!;
      if (meta >>> 16 !== f) continue;
      out[n++] = i;
      rev += (meta >>> 8) & FlowFlag.REVERSE;
    }
    if (reverse) reverse[0] = rev;
    return n;
  }

  /**
   * owner of the entry at slots[i] := owners[pick[i]] for every i (migration's
   * switch to the inheritors). The slots must be valid: no removal since
   * they were taken (a frozen table).
   */
  setOwners(slots: Int32Array, pick: Uint16Array, owners: ArrayLike<number>): void {
    const W = this.w32;
    const bits = new Int32Array(owners.length);
    for (let k = 0; k < owners.length; k++) bits[k] = (owners[k]! & 0xffff) << 16;
    for (let i = 0; i < slots.length; i++) {
      const o = slots[i]! * STRIDE + META;
      W[o] = (W[o]! & 0xffff) | bits[pick[i]!]!;
    }
  }

  /** insert() for off-hot-path callers: throws BatonError(TABLE_FULL) instead of returning -1. */
  insertOrThrow(
    srcIp: number,
    dstIp: number,
    srcPort: number,
    dstPort: number,
    proto: number,
    owner: number,
    netAction: number,
    appAction: number,
    rewriteIp: number,
    rewritePort: number,
    flags: number,
    nowMs: number,
  ): number {
    const s = this.insert(srcIp, dstIp, srcPort, dstPort, proto, owner, netAction, appAction, rewriteIp, rewritePort, flags, nowMs);
    if (s < 0) {
      throw new BatonError(ErrorCode.TABLE_FULL, `flow table full: all ${this.maxFlows} flows of its capacity are in use`, {
        capacity: this.maxFlows,
        size: this.count,
      });
    }
    return s;
  }

  // ---------------------------------------------------------------- removal

  /**
   * Removes the flow at `slot` (no-op for an empty or out-of-range slot).
   * Backward shift: later entries of the same run may move into freed slots,
   * so do not hold slot indexes across a removal.
   */
  removeAt(slot: number): void {
    const cap = this.slots;
    if (!(slot >= 0 && slot < cap)) return;
    const H = this.hints;
    let j = slot | 0;
    if (H[j] === 0) return;
    const W = this.w32;
    const seed = this.hashSeed;
    let k = j;
    for (;;) {
      if (++k === cap) k = 0;
      const t = H[k]!;
      if (t === 0) break;
      const o = k * STRIDE;
      const home = ((flowHash(seed, W[o]!, W[o + 1]!, W[o + 2]!, W[o + 3]! & 0xff) >>> 0) * this.homeScale) | 0;
      // The entry at k may fill the hole at j iff j lies on its probe path,
      // i.e. its home is not (cyclically) in (j, k].
      if (j <= k ? home <= j || home > k : home <= j && home > k) {
        const d = j * STRIDE;
        for (let w = 0; w < STRIDE; w++) W[d + w] = W[o + w]!;
        H[j] = t;
        j = k;
      }
    }
    H[j] = 0;
    this.count--;
    this.mutationCount++;
  }

  /** Removes the flow with this key; false when absent. */
  remove(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): boolean {
    const s = this.find(srcIp, dstIp, srcPort, dstPort, proto);
    if (s < 0) return false;
    this.removeAt(s);
    return true;
  }

  /** Removes every flow. O(slots) on the 1-byte hint array only. */
  clear(): void {
    this.hints.fill(0);
    this.count = 0;
    this.cursor = 0;
    this.mutationCount++;
  }

  // ---------------------------------------------------------------- iteration & expiry

  /** First occupied slot >= fromSlot, or -1. */
  nextOccupied(fromSlot: number): number {
    const H = this.hints;
    const cap = this.slots;
    for (let s = fromSlot > 0 ? Math.ceil(fromSlot) : 0; s < cap; s++) {
      if (H[s] !== 0) return s;
    }
    return -1;
  }

  /**
   * Amortized idle expiry: examines at most `budget` slots (empty ones count)
   * from an internal cursor that wraps at the end, removes entries idle >=
   * idleMs and returns how many it removed. After a removal the same slot is
   * examined again, because backward shift may have moved an unexamined entry
   * into it. A full pass takes about slots / budget steps.
   */
  expireStep(nowMs: number, idleMs: number, budget: number): number {
    const W = this.words;
    const H = this.hints;
    const cap = this.slots;
    const now = nowMs >>> 0;
    this.clock[0] = nowMs;
    // Bound the work even for a huge budget: one pass is <= cap advances + count re-examinations.
    const limit = budget < 2 * cap ? budget : 2 * cap;
    let c = this.cursor;
    let removed = 0;
    let examined = 0;
    while (examined < limit && this.count > 0) {
      examined++;
      if (H[c] !== 0 && ((now - W[c * STRIDE + SEEN]!) >>> 0) >= idleMs) {
        this.removeAt(c);
        removed++;
      } else if (++c === cap) {
        c = 0;
      }
    }
    this.cursor = c;
    this.examinedLast = examined;
    return removed;
  }

  /**
   * expireStep for an FD's table, where entries it owns and entries it
   * learned from peers age differently: an entry owned by `self` is removed
   * once idle >= idleMs and its key words written to `keysOut` (4 per
   * entry: srcIp, dstIp, srcPort << 16 | dstPort, meta) so the caller can
   * tell its peers; any other entry (a learned redirect, whose packets
   * mostly go straight to their owner and so seldom touch it here) once
   * idle >= learnedIdleMs. Stops early when keysOut is full. Returns how
   * many entries it removed; lastExpiredOwned says how many keys it wrote.
   * Never allocates.
   */
  expireStepOwned(nowMs: number, idleMs: number, learnedIdleMs: number, self: number, budget: number, keysOut: Uint32Array): number {
    const W = this.words;
    const H = this.hints;
    const cap = this.slots;
    const now = nowMs >>> 0;
    const me = self & 0xffff;
    const maxKeys = keysOut.length >>> 2;
    this.clock[0] = nowMs;
    const limit = budget < 2 * cap ? budget : 2 * cap;
    let c = this.cursor;
    let removed = 0;
    let owned = 0;
    let examined = 0;
    while (examined < limit && this.count > 0 && owned < maxKeys) {
      examined++;
      if (H[c] !== 0) {
        const o = c * STRIDE;
        const idle = (now - W[o + SEEN]!) >>> 0;
        const mine = W[o + META]! >>> 16 === me;
        if (idle >= (mine ? idleMs : learnedIdleMs)) {
          if (mine) {
            const k = owned * 4;
            keysOut[k] = W[o]!;
            keysOut[k + 1] = W[o + 1]!;
            keysOut[k + 2] = W[o + 2]!;
            keysOut[k + 3] = W[o + 3]!;
            owned++;
          }
          this.removeAt(c);
          removed++;
          continue; // re-examine this slot: backward shift may have moved an entry into it
        }
      }
      if (++c === cap) c = 0;
    }
    this.cursor = c;
    this.examinedLast = examined;
    this.expiredOwned = owned;
    return removed;
  }
  /** Keys expireStepOwned wrote in its last call. */
  get lastExpiredOwned(): number {
    return this.expiredOwned;
  }
  private expiredOwned = 0;

  /** lastSeen := nowMs (a learned entry its owner announced again). */
  refresh(slot: number, nowMs: number): void {
    this.words[slot * STRIDE + SEEN] = nowMs;
  }

  // ---------------------------------------------------------------- value accessors

  owner(slot: number): number {
    return this.words[slot * STRIDE + META]! >>> 16;
  }
  flags(slot: number): number {
    return (this.words[slot * STRIDE + META]! >>> 8) & 0xff;
  }
  netAction(slot: number): number {
    return this.words[slot * STRIDE + ACT]! & 0xf;
  }
  appAction(slot: number): number {
    return (this.words[slot * STRIDE + ACT]! >>> 4) & 0xfff;
  }
  rewritePort(slot: number): number {
    return this.words[slot * STRIDE + ACT]! >>> 16;
  }
  rewriteIp(slot: number): number {
    return this.words[slot * STRIDE + RWIP]!;
  }
  /** uint32, wraps modulo 2^32. */
  packets(slot: number): number {
    return this.words[slot * STRIDE + PKTS]!;
  }
  /** uint32, wraps modulo 2^32. */
  bytes(slot: number): number {
    return this.words[slot * STRIDE + BYTES]!;
  }
  /** `nowMs >>> 0` of the last touch/insert (ms, modulo 2^32). */
  lastSeen(slot: number): number {
    return this.words[slot * STRIDE + SEEN]!;
  }
  /** Milliseconds since lastSeen, wrap-safe: ((nowMs >>> 0) - lastSeen) >>> 0. */
  idleFor(slot: number, nowMs: number): number {
    return ((nowMs >>> 0) - this.words[slot * STRIDE + SEEN]!) >>> 0;
  }

  setOwner(slot: number, owner: number): void {
    const o = slot * STRIDE + META;
    const W = this.words;
    W[o] = (W[o]! & 0xffff) | ((owner & 0xffff) << 16);
  }
  setFlags(slot: number, flags: number): void {
    const o = slot * STRIDE + META;
    const W = this.words;
    W[o] = (W[o]! & 0xffff00ff) | ((flags & 0xff) << 8);
  }
  setAction(slot: number, netAction: number, appAction: number, rewriteIp: number, rewritePort: number): void {
    const o = slot * STRIDE;
    const W = this.words;
    W[o + ACT] = (netAction & 0xf) | ((appAction & 0xfff) << 4) | ((rewritePort & 0xffff) << 16);
    W[o + RWIP] = rewriteIp;
  }
  /** Sets the counters and lastSeen (ms, stored modulo 2^32) — used by flow import. */
  setCounters(slot: number, packets: number, bytes: number, lastSeenMs: number): void {
    const o = slot * STRIDE;
    const W = this.words;
    W[o + PKTS] = packets;
    W[o + BYTES] = bytes;
    W[o + SEEN] = lastSeenMs;
  }

  /** Per packet: packets += 1, bytes += bytes (both wrap mod 2^32), lastSeen = nowMs. */
  touch(slot: number, bytes: number, nowMs: number): void {
    const o = slot * STRIDE;
    const W = this.words;
    W[o + PKTS] = W[o + PKTS]! + 1;
    W[o + BYTES] = W[o + BYTES]! + bytes;
    W[o + SEEN] = nowMs;
    this.clock[0] = nowMs;
  }

  // ---------------------------------------------------------------- key accessors

  srcIp(slot: number): number {
    return this.words[slot * STRIDE + SRC]!;
  }
  dstIp(slot: number): number {
    return this.words[slot * STRIDE + DST]!;
  }
  srcPort(slot: number): number {
    return this.words[slot * STRIDE + PORTS]! >>> 16;
  }
  dstPort(slot: number): number {
    return this.words[slot * STRIDE + PORTS]! & 0xffff;
  }
  proto(slot: number): number {
    return this.words[slot * STRIDE + META]! & 0xff;
  }

  // ---------------------------------------------------------------- diagnostics (off the hot path)

  /** Home slot of the entry at `slot` (tests, tuning). */
  homeOf(slot: number): number {
    const o = slot * STRIDE;
    const W = this.w32;
    return ((flowHash(this.hashSeed, W[o]!, W[o + 1]!, W[o + 2]!, W[o + 3]! & 0xff) >>> 0) * this.homeScale) | 0;
  }

  /** Probe-distance statistics over occupied slots (tests, tuning). */
  probeStats(): { mean: number; max: number; atHome: number } {
    let sum = 0;
    let max = 0;
    let atHome = 0;
    const cap = this.slots;
    for (let s = this.nextOccupied(0); s >= 0; s = this.nextOccupied(s + 1)) {
      let d = s - this.homeOf(s);
      if (d < 0) d += cap;
      sum += d;
      if (d > max) max = d;
      if (d === 0) atHome++;
    }
    return { mean: this.count > 0 ? sum / this.count : 0, max, atHome: this.count > 0 ? atHome / this.count : 0 };
  }

  /**
   * Checks the structural invariants (tests only, O(slots)): occupancy count,
   * fingerprints, and that every slot between an entry's home and its slot is
   * occupied (so probing finds it). Returns a problem description or null.
   */
  checkInvariants(): string | null {
    const H = this.hints;
    const cap = this.slots;
    let n = 0;
    for (let s = 0; s < cap; s++) {
      if (H[s] === 0) continue;
      n++;
      const o = s * STRIDE;
      const W = this.w32;
      const h = flowHash(this.hashSeed, W[o]!, W[o + 1]!, W[o + 2]!, W[o + 3]! & 0xff);
      const f = h & 0xff;
      if (H[s] !== (f === 0 ? 1 : f)) return `slot ${s}: hint ${H[s]} does not match the key's fingerprint`;
      for (let i = this.homeOf(s); i !== s; i = i + 1 === cap ? 0 : i + 1) {
        if (H[i] === 0) return `slot ${s}: empty slot ${i} between its home and its slot`;
      }
    }
    if (n !== this.count) return `${n} occupied slots, size ${this.count}`;
    return null;
  }
}
