/**
 * The bounded share of npm run fuzz (docs/fuzzing.md): every decoder's
 * fuzz target (test/fuzz/targets.ts) with a few thousand inputs, each on
 * its fixed seed, so a run is deterministic and takes seconds. A failure
 * reports fast-check's seed and path and the shrunk input; replay it with
 *   BATON_FUZZ_SEED=<seed> BATON_FUZZ_PATH=<path> npx vitest run --project unit test/fuzz.test.ts -t '<target>'
 * or `npm run fuzz -- --only <target> --seed <seed> --path <path>`.
 * With the default seeds and counts, each target must also reach every
 * outcome it names (mustReach): the generators' coverage, pinned.
 *
 * Then the regressions the fuzzing found, each pinned as a plain test.
 */
import { describe, expect, it } from 'vitest';
import { QueueProbe } from '../shared/dataplane/queue-probe.js';
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import type { DatagramSocket } from '../shared/io/datagram.js';
import { parseConfig } from '../shared/config/config.js';
import { decodeEnvelope, encodeEnvelope } from '../shared/control/codec.js';
import { isBatonError, ErrorCode } from '../shared/errors.js';
import { TARGETS, seedOf } from './fuzz/targets.js';
import { runTarget } from './fuzz/harness.js';

/** Inputs per target here (npm run fuzz runs 1,000,000): the config targets cost ~0.3-0.7 ms an input, the others 10-200 µs. */
const UNIT_RUNS: Record<string, number> = { 'config/parseConfig': 2000, 'config/loadConfig': 1000, 'control/channel': 2000 };
const DEFAULT_RUNS = 3000;

const envRuns = process.env['BATON_FUZZ_RUNS'];
const envSeed = process.env['BATON_FUZZ_SEED'];
const envPath = process.env['BATON_FUZZ_PATH'];

describe('fuzzing, the bounded share (npm run fuzz runs a million inputs per target)', () => {
  it.each(TARGETS.map((t) => [t.name, t] as const))('%s', async (name, t) => {
    const numRuns = envRuns ? Number(envRuns) : (UNIT_RUNS[name] ?? DEFAULT_RUNS);
    const seed = envSeed ? Number(envSeed) : seedOf(name);
    const r = await runTarget(t, { numRuns, seed, ...(envPath ? { path: envPath } : {}) });
    expect(r.failed, `${name} (seed ${seed}):\n${r.report}`).toBe(false);
    if (envRuns || envSeed || envPath) return;
    const missed = (t.mustReach ?? []).filter((o) => !t.tally.counts.has(o));
    expect(missed, `${name}: ${numRuns} inputs on seed ${seed} never came out as ${missed.join(', ')} (outcomes: ${t.tally.format(100)})`).toEqual([]);
  });
});

describe('regressions found by fuzzing', () => {
  it('queue probe: before any probe came back, the 64th send gives up the oldest instead of reusing its slot under it', () => {
    const sched = new VirtualScheduler(1000);
    const sent: { d: Uint8Array; at: number }[] = [];
    const sock = {
      address: { host: '127.0.0.1', port: 9 },
      send: (d: Uint8Array) => void sent.push({ d: Uint8Array.from(d), at: sched.clock.now() }),
      onMessage: () => {},
      sendQueueBytes: () => 0,
      sendQueueCount: () => 0,
      close: () => Promise.resolve(),
    } as unknown as DatagramSocket;
    const probe = new QueueProbe(sock, sched, 5, 1);
    probe.start();
    sched.runFor(5 * 120); // 120 probes out, none back (a receive queue that drops or holds them all)
    // The delay never falls while nothing comes back: at least the age of the oldest probe still held (63 intervals).
    const delays: number[] = [];
    for (let i = 0; i < 70; i++) {
      sched.runFor(5);
      delays.push(probe.delayMs());
    }
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(63 * 5 - 5);
    // Probe 0, given up, is refused when it finally arrives (it was taken, with probe 64's send time: a sojourn of 305 ms for 945).
    expect(probe.onArrival(sent[0]!.d)).toBe(false);
    // The newest probe is taken with its own sojourn.
    const last = sent[sent.length - 1]!;
    sched.runFor(2);
    expect(probe.onArrival(last.d)).toBe(true);
    expect(probe.lastSojournMs).toBe(sched.clock.now() - last.at);
    probe.stop();
  });

  it('config: a hash.tableSize above the maximum is refused without a primality test (9007195909437503 = 94906249 x 94906247 took 0.9 s of trial division)', () => {
    let err: unknown;
    try {
      parseConfig({ hash: { tableSize: 9007195909437503 } });
    } catch (e) {
      err = e;
    }
    expect(isBatonError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    // The range issue alone: the prime check (which would have failed it too, slowly) did not run.
    expect((err as Error).message).toBe('config invalid: hash.tableSize: Too big: expected number to be <=1000003');
    expect(() => parseConfig({ hash: { tableSize: 100 } })).toThrow(/hash\.tableSize: must be a prime number/);
  });

  it('control codec: a 64-bit integer beyond 2^53 - 1 is refused as bad_protobuf, not rounded (seq 2^64 - 1 decoded as 1.8e19 and re-encoded as 0)', () => {
    // version 1, seq = 2^64 - 1 (ten-byte varint), ping
    const hugeSeq = Uint8Array.from([8, 1, 16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x52, 0]);
    expect(decodeEnvelope(hugeSeq)).toEqual({ ok: false, code: 'bad_protobuf', protocolVersion: 0, seq: 0, replyTo: 0, wantsReply: false });
    // 2^53 in a body's uint64 (a migration id): refused; 2^53 - 1 is the largest taken, and round-trips.
    const chunk = (id: number): Uint8Array => encodeEnvelope({ protocolVersion: 1, seq: 5, replyTo: 0, wantsReply: true, body: { case: 'syncReply', value: { records: id } } });
    expect(decodeEnvelope(chunk(2 ** 53))).toMatchObject({ ok: false, code: 'bad_protobuf' });
    const ok = decodeEnvelope(chunk(Number.MAX_SAFE_INTEGER));
    expect(ok.ok && ok.env.body).toEqual({ case: 'syncReply', value: { records: Number.MAX_SAFE_INTEGER } });
  });
});
