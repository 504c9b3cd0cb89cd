/**
 * 5-tuple hashing rate: hashFiveTuple (xxh32 straight from the integer
 * fields) vs the two ways of hashing the same 13-byte canonical key from a
 * buffer -- the generic byte-wise JS xxh32, and xxhash-wasm's h32Raw.
 * All three produce the same value (checked before timing).
 */
import xxhash from 'xxhash-wasm';
import { consume, mulberry32, rateResult, sampleRate } from '../lib.js';
import type { BenchCase, BenchResult } from '../lib.js';
import {
  FIVE_TUPLE_KEY_LEN,
  hashFiveTuple,
  hashFiveTupleSymmetric,
  writeFiveTupleKey,
  xxh32,
} from '../../shared/hash/xxh32.js';

const N = 4096; // distinct tuples, cycled (fits in L1/L2 so we time hashing, not memory)
const MASK = N - 1;
const SEED = 0x5eed;

const bench: BenchCase = {
  id: 'hash',
  title: '5-tuple xxHash32: integer-field JS vs buffer JS vs xxhash-wasm',
  async run(progress) {
    const { h32Raw } = await xxhash();
    const rnd = mulberry32(0xba70);
    const src = new Uint32Array(N);
    const dst = new Uint32Array(N);
    const sp = new Uint16Array(N);
    const dp = new Uint16Array(N);
    const pr = new Uint8Array(N);
    for (let i = 0; i < N; i++) {
      src[i] = rnd();
      dst[i] = rnd();
      sp[i] = rnd();
      dp[i] = rnd();
      pr[i] = rnd() & 1 ? 6 : 17;
    }
    const key = new Uint8Array(FIVE_TUPLE_KEY_LEN);

    // Same answers before we time anything.
    for (let i = 0; i < N; i++) {
      writeFiveTupleKey(key, 0, src[i]!, dst[i]!, sp[i]!, dp[i]!, pr[i]!);
      const h = hashFiveTuple(src[i]!, dst[i]!, sp[i]!, dp[i]!, pr[i]!, SEED);
      if (h !== xxh32(key, 0, FIVE_TUPLE_KEY_LEN, SEED) || h !== h32Raw(key, SEED)) {
        throw new Error(`hash bench: implementations disagree at tuple ${i}`);
      }
    }

    const fields = (n: number) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const j = i & MASK;
        acc ^= hashFiveTuple(src[j]!, dst[j]!, sp[j]!, dp[j]!, pr[j]!, SEED);
      }
      consume(acc);
    };
    const symmetric = (n: number) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const j = i & MASK;
        acc ^= hashFiveTupleSymmetric(src[j]!, dst[j]!, sp[j]!, dp[j]!, pr[j]!, SEED);
      }
      consume(acc);
    };
    const jsBuffer = (n: number) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const j = i & MASK;
        writeFiveTupleKey(key, 0, src[j]!, dst[j]!, sp[j]!, dp[j]!, pr[j]!);
        acc ^= xxh32(key, 0, FIVE_TUPLE_KEY_LEN, SEED);
      }
      consume(acc);
    };
    const wasmBuffer = (n: number) => {
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const j = i & MASK;
        writeFiveTupleKey(key, 0, src[j]!, dst[j]!, sp[j]!, dp[j]!, pr[j]!);
        acc ^= h32Raw(key, SEED);
      }
      consume(acc);
    };

    progress('hashFiveTuple (integer fields)');
    const rFields = sampleRate(fields);
    progress('hashFiveTupleSymmetric');
    const rSym = sampleRate(symmetric);
    progress('writeFiveTupleKey + generic JS xxh32');
    const rJs = sampleRate(jsBuffer);
    progress('writeFiveTupleKey + xxhash-wasm h32Raw');
    const rWasm = sampleRate(wasmBuffer);

    const out: BenchResult[] = [
      rateResult('hashFiveTuple vs JS xxh32 over 13-byte key', rFields, 'hashes/s', rJs, 'writeFiveTupleKey + xxh32 (generic JS)'),
      rateResult('hashFiveTuple vs wasm h32Raw over 13-byte key', rFields, 'hashes/s', rWasm, 'writeFiveTupleKey + xxhash-wasm h32Raw'),
      rateResult(
        'hashFiveTupleSymmetric',
        rSym,
        'hashes/s',
        rFields,
        'hashFiveTuple',
        'ratio < 1 is the cost of ordering the endpoints',
      ),
    ];
    return out;
  },
};

export default bench;
