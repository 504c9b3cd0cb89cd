/**
 * Maglev lookup-table population (Eisenbud et al., "Maglev: A Fast and
 * Reliable Software Network Load Balancer", NSDI'16, section 3.4).
 *
 * Member i owns the permutation  p_i(j) = (offset_i + j * skip_i) mod M  with
 *   offset_i = h1(name_i) mod M
 *   skip_i   = h2(name_i) mod (M - 1) + 1
 * where h1 / h2 are xxh32 of the UTF-8 name under two fixed seeds (below,
 * XOR-ed with the caller's seed). M prime makes every skip coprime with M, so
 * each p_i is a full permutation. Members take turns claiming their next free
 * preferred slot until the table is full, which gives near-equal shares and
 * minimal disruption when a member leaves. Parameters: docs/hashing.md.
 *
 * Off the hot path (runs on a scope change), but kept fast: typed arrays for
 * the per-member state and an incremental permutation position (pos += skip;
 * if (pos >= M) pos -= M) instead of a multiply and % per probe.
 */
import { BatonError, ErrorCode } from '../errors.js';
import { xxh32Utf8 } from '../hash/xxh32.js';

/** Default table size M: prime, and > 100 x 256 members. */
export const MAGLEV_DEFAULT_SIZE = 65537;
/** Largest accepted M (the table is a Uint16Array of M entries). */
export const MAGLEV_MAX_SIZE = 1 << 24;
/** Most members a table can index: entries are uint16 and 0xFFFF marks "empty" while building. */
export const MAGLEV_MAX_MEMBERS = 65535;
/** h1 (offset) seed, "MAGO"; the build seed is XOR-ed in. Frozen. */
export const MAGLEV_OFFSET_SEED = 0x4d41474f;
/** h2 (skip) seed, "MAGS"; the build seed is XOR-ed in. Frozen. */
export const MAGLEV_SKIP_SEED = 0x4d414753;

const EMPTY = 0xffff;

/** Deterministic primality test by trial division (fine for n < 2^32). */
export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n < 4) return true;
  if (n % 2 === 0 || n % 3 === 0) return false;
  for (let d = 5; d * d <= n; d += 6) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
  }
  return true;
}

/**
 * Validates the arguments shared by buildMaglevTable and HashScope.build.
 * Throws BatonError naming the bad field/value.
 */
export function checkMaglevArgs(members: readonly string[], size: number, seed: number): void {
  if (members.length === 0) {
    throw new BatonError(ErrorCode.EMPTY_SCOPE, 'maglev: members is empty; a hash scope needs at least one member');
  }
  if (members.length > MAGLEV_MAX_MEMBERS) {
    throw new BatonError(
      ErrorCode.BAD_ARGUMENT,
      `maglev: ${members.length} members is more than the maximum of ${MAGLEV_MAX_MEMBERS}`,
      { members: members.length },
    );
  }
  if (!Number.isInteger(size) || size > MAGLEV_MAX_SIZE || !isPrime(size)) {
    throw new BatonError(
      ErrorCode.BAD_ARGUMENT,
      `maglev: size ${size} must be a prime integer no larger than ${MAGLEV_MAX_SIZE}`,
      { size },
    );
  }
  if (size <= members.length) {
    throw new BatonError(
      ErrorCode.BAD_ARGUMENT,
      `maglev: size ${size} must be greater than the number of members (${members.length})`,
      { size, members: members.length },
    );
  }
  if (!Number.isInteger(seed) || seed < -0x80000000 || seed > 0xffffffff) {
    throw new BatonError(ErrorCode.BAD_ARGUMENT, `maglev: seed ${seed} must be a 32-bit integer`, { seed });
  }
  const seen = new Set<string>();
  for (let i = 0; i < members.length; i++) {
    const m = members[i];
    if (typeof m !== 'string' || m.length === 0) {
      throw new BatonError(
        ErrorCode.BAD_ARGUMENT,
        `maglev: members[${i}] must be a non-empty string, got ${JSON.stringify(m)}`,
        { index: i },
      );
    }
    if (seen.has(m)) {
      throw new BatonError(ErrorCode.BAD_ARGUMENT, `maglev: duplicate member ${JSON.stringify(m)} at index ${i}`, {
        member: m,
        index: i,
      });
    }
    seen.add(m);
  }
}

/**
 * Builds the Maglev table: entry[j] = index into `members` of the owner of
 * bucket j. Members are used in the order given (HashScope passes them
 * sorted so that every node builds the identical table).
 */
export function buildMaglevTable(members: readonly string[], size = MAGLEV_DEFAULT_SIZE, seed = 0): Uint16Array {
  checkMaglevArgs(members, size, seed);
  const n = members.length;
  const M = size;
  const pos = new Uint32Array(n); // current permutation position = p_i(next_i)
  const skip = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const name = members[i]!;
    pos[i] = xxh32Utf8(name, seed ^ MAGLEV_OFFSET_SEED) % M;
    skip[i] = (xxh32Utf8(name, seed ^ MAGLEV_SKIP_SEED) % (M - 1)) + 1;
  }
  const entry = new Uint16Array(M).fill(EMPTY);
  let filled = 0;
  // Round-robin over members; each claims its next preferred free slot.
  // Terminates: every p_i is a full permutation and n < M.
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = pos[i]!;
      const s = skip[i]!;
      while (entry[c] !== EMPTY) {
        c += s;
        if (c >= M) c -= M;
      }
      entry[c] = i;
      c += s;
      if (c >= M) c -= M;
      pos[i] = c;
      if (++filled === M) return entry;
    }
  }
}
