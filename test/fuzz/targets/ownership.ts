/**
 * Ownership batches (shared/control/ownership.ts): forEachOwnership and
 * forEachOwnershipBatch never throw and return an OwnershipCheck code
 * (OWNERSHIP_CHECK_NAMES: the mesh's nack reasons). BAD_LENGTH and
 * BAD_RECORD_VERSION apply nothing; OK calls back once per record, in
 * order, with values in their field widths, and packOwnership of what was
 * called back rebuilds the records byte for byte.
 */
import fc from 'fast-check';
import { forEachOwnership, forEachOwnershipBatch, packOwnership, OwnershipCheck, OWNERSHIP_CHECK_NAMES, OWNERSHIP_RECORD_SIZE, OWNERSHIP_RECORD_VERSION } from '../../../shared/control/ownership.js';
import { ensure, hex, noThrow, Tally, type FuzzTarget } from '../check.js';
import { fuzzBytes } from '../mutate.js';
import { u8, u16, u32 } from '../frames.js';

export interface OwnershipInput {
  records: Uint8Array;
  /** count as sent: the records' (mostly), one off, or garbage. */
  count: number | 'exact';
  recordVersion: number;
  /** Through forEachOwnershipBatch (record version checked) or forEachOwnership. */
  batch: boolean;
}

const arbRecords: fc.Arbitrary<Uint8Array> = fc.array(fc.tuple(u32, u32, u16, u16, fc.oneof(fc.constantFrom(6, 17), u8), fc.oneof(fc.constantFrom(0, 1, 2, 3), u8), u16), { maxLength: 8 }).map((rs) => {
  const out = new Uint8Array(rs.length * OWNERSHIP_RECORD_SIZE);
  rs.forEach((r, i) => packOwnership(out, i * OWNERSHIP_RECORD_SIZE, ...r));
  return out;
});

const arbInput: fc.Arbitrary<OwnershipInput> = fc.record({
  records: fuzzBytes(arbRecords),
  count: fc.oneof(
    { weight: 8, arbitrary: fc.constant('exact' as const) },
    { weight: 2, arbitrary: fc.integer({ min: 0, max: 12 }) },
    { weight: 1, arbitrary: fc.constantFrom(-1, 0.5, 1.5, Number.NaN, Number.POSITIVE_INFINITY, -0, 2 ** 32, 2 ** 53, Number.MAX_VALUE) },
  ),
  recordVersion: fc.oneof({ weight: 8, arbitrary: fc.constant(OWNERSHIP_RECORD_VERSION) }, { weight: 1, arbitrary: fc.oneof(u32, fc.constantFrom(0, 2, -1, Number.NaN)) }),
  batch: fc.boolean(),
});

const tally = new Tally();

export const ownershipTarget: FuzzTarget<OwnershipInput> = {
  name: 'ownership/forEachOwnership',
  covers: 'shared/control/ownership.ts forEachOwnership, forEachOwnershipBatch (packOwnership for the round trip)',
  arbitrary: arbInput,
  tally,
  mustReach: OWNERSHIP_CHECK_NAMES,
  check(input) {
    const { records } = input;
    const count = input.count === 'exact' ? Math.floor(records.length / OWNERSHIP_RECORD_SIZE) : input.count;
    const calls: number[][] = [];
    const fn = (...v: number[]): void => {
      calls.push(v);
    };
    const code = noThrow('forEachOwnership', () =>
      input.batch ? forEachOwnershipBatch({ owner: 1, recordVersion: input.recordVersion, count, records, remapFrom: 0, remapTo: 0 }, fn) : forEachOwnership(records, count, fn),
    );
    const what = (): string => `${records.length}-byte records ${hex(records, 48)}, count ${count}, version ${input.recordVersion}`;
    ensure(OWNERSHIP_CHECK_NAMES[code] !== undefined, () => `${what()}: returned ${code}`);
    tally.add(OWNERSHIP_CHECK_NAMES[code]!);
    const wantVersion = !input.batch || input.recordVersion === OWNERSHIP_RECORD_VERSION;
    const wantLength = Number.isInteger(count) && count >= 0 && records.length === count * OWNERSHIP_RECORD_SIZE;
    const want = !wantVersion ? OwnershipCheck.BAD_RECORD_VERSION : !wantLength ? OwnershipCheck.BAD_LENGTH : OwnershipCheck.OK;
    ensure(code === want, () => `${what()}: ${OWNERSHIP_CHECK_NAMES[code]}, want ${OWNERSHIP_CHECK_NAMES[want]}`);
    if (code !== OwnershipCheck.OK) {
      ensure(calls.length === 0, () => `${what()}: ${OWNERSHIP_CHECK_NAMES[code]} after applying ${calls.length} records`);
      return;
    }
    ensure(calls.length === count, () => `${what()}: ${calls.length} callbacks for ${count} records`);
    const rebuilt = new Uint8Array(records.length);
    const max = [0xffffffff, 0xffffffff, 0xffff, 0xffff, 0xff, 0xff, 0xffff];
    calls.forEach((c, i) => {
      ensure(c.length === 7 && c.every((v, j) => Number.isInteger(v) && v >= 0 && v <= max[j]!), () => `${what()}: record ${i} called back with ${JSON.stringify(c)}`);
      packOwnership(rebuilt, i * OWNERSHIP_RECORD_SIZE, c[0]!, c[1]!, c[2]!, c[3]!, c[4]!, c[5]!, c[6]!);
    });
    ensure(Buffer.compare(Buffer.from(rebuilt), Buffer.from(records)) === 0, () => `${what()}: repacked records differ`);
  },
};
