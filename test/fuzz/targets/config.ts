/**
 * Configuration (shared/config/config.ts): parseConfig of any value, and
 * loadConfig of any file text (YAML or JSON by the file's extension), throw
 * only BatonError CONFIG_INVALID, whose message names the source and a
 * field. An accepted configuration is stable: handed on as JSON (what `baton
 * up` does with it for every node) it parses to the same value.
 *
 * Inputs: random JSON and JS values, and mutants of valid configurations
 * (a value anywhere set to an extreme or to another type, a key deleted,
 * renamed or added, an array element duplicated); for the loader, those
 * written as YAML or JSON text and mutated as text (lines dropped,
 * duplicated, indented; YAML features spliced in: anchors and aliases, tags,
 * merge keys, flow collections, several documents, deep nesting).
 */
import fc from 'fast-check';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as yamlStringify } from 'yaml';
import { loadConfig, parseConfig, type BatonConfig } from '../../../shared/config/config.js';
import { ErrorCode } from '../../../shared/errors.js';
import { ensure, sameValue, Tally, typedOnly, type FuzzTarget } from '../check.js';

// ------------------------------------------------------------ valid seeds

const nodeName = fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/);
const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
const port = fc.integer({ min: 0, max: 65535 });

/** Valid configurations: all defaults, or sections and node lists drawn within their bounds. */
export const arbValidConfig: fc.Arbitrary<Record<string, unknown>> = fc
  .record(
    {
      cluster: fc.record({ vni: fc.integer({ min: 0, max: 0xffffff }), vip: ip, services: fc.constant([{ port: 80, proto: 'tcp' }, { port: 53, proto: 'udp', affinity: 'source' }]) }, { requiredKeys: [] }),
      fds: fc.integer({ min: 1, max: 4 }).map((n) => Array.from({ length: n }, (_, i) => ({ id: 100 + i, name: `fd-${i}`, dataPort: 0, controlPort: 0 }))),
      services: fc.integer({ min: 1, max: 3 }).map((n) => Array.from({ length: n }, (_, i) => ({ id: 200 + i, name: `svc-${i}`, virtualIp: `10.9.0.${i + 1}`, virtualPort: 8080 + i }))),
      hash: fc.record({ seed: fc.integer({ min: 0, max: 0xffffffff }), tableSize: fc.constantFrom(251, 1009, 65537), symmetric: fc.boolean(), rebalanceAbovePct: fc.integer({ min: 0, max: 100 }) }, { requiredKeys: [] }),
      flowTable: fc.record({ maxFlows: fc.integer({ min: 16, max: 1 << 20 }), idleMs: fc.integer({ min: 1, max: 1e6 }), seed: fc.integer({ min: 0, max: 0xffffffff }) }, { requiredKeys: [] }),
      dataplane: fc.record({ rxCapacity: fc.integer({ min: 16, max: 8192 }), maxDatagramBytes: fc.integer({ min: 1500, max: 65507 }), verifyL4Checksum: fc.boolean() }, { requiredKeys: [] }),
      admission: fc.constant({ synAboveMs: 10, shedAboveMs: 20, dropAboveMs: 40 }),
      store: fc.constantFrom({ url: 'embedded' }, { url: 'etcd://127.0.0.1:2379/c1', ttlMs: 2000 }, { url: 'consul://127.0.0.1:8500' }),
      log: fc.record({ level: fc.constantFrom('error', 'warn', 'info', 'debug') }),
      edge: fc.record({ vxlanGpePort: fc.integer({ min: 1, max: 65535 }), genevePort: port }, { requiredKeys: [] }),
      clientTable: fc.record({ addrCapacity: fc.constantFrom(32, 4096), capacity: fc.constantFrom(1024, 65536) }, { requiredKeys: [] }),
    },
    { requiredKeys: [] },
  )
  .chain((c) =>
    fc.oneof(
      { weight: 4, arbitrary: fc.constant(c) },
      // Real servers: every FD needs an edgeHost.
      {
        weight: 1,
        arbitrary: fc.tuple(ip, fc.array(ip, { minLength: 1, maxLength: 2 })).map(([edge, hosts]) => ({
          ...c,
          fds: ((c.fds as Record<string, unknown>[] | undefined) ?? [{ id: 11, name: 'fd-1' }]).map((f) => ({ ...f, edgeHost: edge })),
          realServers: { encap: 'vxlan-gpe', endpoints: hosts.map((host, i) => ({ host, name: `s${i}` })) },
        })),
      },
      // Several hash tiers (they share etcd).
      { weight: 1, arbitrary: nodeName.map((n) => ({ ...c, store: { url: 'etcd://127.0.0.1:2379' }, hashTiers: [{ id: 1, name: `${n}-a`, controlPort: 7400 }, { id: 2, name: `${n}-b`, controlPort: 7401 }] })) },
    ),
  );

// ---------------------------------------------------------- value mutants

/** Values a field may be set to: the edges of every type the schema has. */
const EXTREMES: readonly unknown[] = [
  0, -0, 1, -1, 0.5, 65535, 65536, 0xffffff, 0x1000000, 0xffffffff, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 9007199254740881, 1e308, -1e308, 5e-324,
  Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, '', '0', '80', 'tcp', 'embedded', '10.0.0.1', '256.0.0.1', '1.2.3', ' 1.2.3.4',
  'etcd://', 'etcd://h:0', 'consul://a:1,b:2', true, false, null, undefined, [], [{}], {}, { id: 1 }, '__proto__', 'x'.repeat(300),
];

type JsonOp = { k: 'set'; path: number; v: unknown } | { k: 'delete'; path: number } | { k: 'rename'; path: number; to: string } | { k: 'add'; path: number; key: string; v: unknown } | { k: 'dupElem'; path: number } | { k: 'wrap'; path: number };

const anyValue: fc.Arbitrary<unknown> = fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...EXTREMES) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) });
const jsonOp: fc.Arbitrary<JsonOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('set' as const), path: fc.nat(), v: anyValue }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('delete' as const), path: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('rename' as const), path: fc.nat(), to: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'hashTier', 'id', 'name', 'port', ''), fc.string({ maxLength: 6 })) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('add' as const), path: fc.nat(), key: fc.oneof(fc.constantFrom('__proto__', 'bogus', 'seed', 'hashTiers', 'realServers', 'uplink', 'edgeHost'), fc.string({ maxLength: 6 })), v: anyValue }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dupElem' as const), path: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('wrap' as const), path: fc.nat() }) },
);

/** Every container and (container, key) in a JSON-like value, depth first. */
function slots(root: unknown): { parent: Record<string, unknown> | unknown[]; key: string | number }[] {
  const out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (v: unknown, depth: number): void => {
    if (depth > 6 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) v.forEach((x, i) => (out.push({ parent: v, key: i }), walk(x, depth + 1)));
    else for (const k of Object.keys(v)) out.push({ parent: v as Record<string, unknown>, key: k }), walk((v as Record<string, unknown>)[k], depth + 1);
  };
  walk(root, 0);
  return out;
}

function defineKey(o: Record<string, unknown>, key: string, v: unknown): void {
  Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true }); // an own "__proto__" key, as JSON.parse and YAML make it
}

export function applyJsonOps(value: unknown, ops: readonly JsonOp[]): unknown {
  const root = { v: structuredClone(value) as unknown };
  for (const op of ops) {
    const all = [{ parent: root as Record<string, unknown>, key: 'v' as string | number }, ...slots(root.v)];
    const s = all[op.path % all.length]!;
    const p = s.parent as Record<string | number, unknown>;
    switch (op.k) {
      case 'set':
        p[s.key] = op.v;
        break;
      case 'delete':
        if (Array.isArray(p)) p.splice(s.key as number, 1);
        else if (p !== root) delete p[s.key];
        break;
      case 'rename':
        if (!Array.isArray(p) && p !== root) {
          const v = p[s.key];
          delete p[s.key];
          defineKey(p, op.to, v);
        }
        break;
      case 'add': {
        const t = p[s.key];
        if (t !== null && typeof t === 'object' && !Array.isArray(t)) defineKey(t as Record<string, unknown>, op.key, op.v);
        break;
      }
      case 'dupElem': {
        const t = p[s.key];
        if (Array.isArray(t) && t.length > 0) t.push(structuredClone(t[0]));
        break;
      }
      case 'wrap':
        p[s.key] = [p[s.key]];
        break;
    }
  }
  return root.v;
}

export const arbRawConfig: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.anything({ maxDepth: 2, withMap: true, withSet: true, withDate: true, withTypedArray: true, withNullPrototype: true, withBigInt: true, withSparseArray: true }) },
  { weight: 2, arbitrary: arbValidConfig },
  { weight: 8, arbitrary: fc.tuple(arbValidConfig, fc.array(jsonOp, { minLength: 1, maxLength: 3 })).map(([c, ops]) => applyJsonOps(c, ops)) },
);

// ------------------------------------------------------------ the checks

/** What a refusal must look like, and the same configuration again from JSON for an acceptance. */
function checkOutcome(what: () => string, out: ReturnType<typeof typedOnly<BatonConfig>>, source: string, tally: Tally): void {
  if (!out.ok) {
    const m = out.error.message;
    ensure(m.startsWith(`${source} `) && m.length > source.length + 10, () => `${what()}: CONFIG_INVALID message ${JSON.stringify(m.slice(0, 200))} does not name ${source}`);
    const issues = (out.error.details as { issues?: unknown } | undefined)?.issues;
    if (m.startsWith(`${source} invalid: `)) ensure(Array.isArray(issues) && issues.length > 0 && issues.every((i) => typeof i === 'string' && /^[^:]+: /.test(i)), () => `${what()}: issues ${JSON.stringify(issues)?.slice(0, 200)} do not each name a field`);
    tally.add(m.startsWith(`${source} invalid: `) ? `invalid:${firstField(issues)}` : m.includes('is not valid') ? 'unparsable' : 'unreadable');
    return;
  }
  tally.add('ok');
  const cfg = out.value;
  const again = typedOnly('parseConfig (the accepted config as JSON)', [ErrorCode.CONFIG_INVALID], () => parseConfig(JSON.parse(JSON.stringify(cfg))));
  ensure(again.ok, () => `${what()}: accepted, but refused as JSON: ${again.ok ? '' : again.error.message.slice(0, 300)}`);
  const diff = sameValue(again.value, cfg, '$', true);
  ensure(diff === null, () => `${what()}: accepted config changes when handed on as JSON: ${diff}`);
}

function firstField(issues: unknown): string {
  const f = Array.isArray(issues) && typeof issues[0] === 'string' ? issues[0].split(':')[0]! : '?';
  return f.replace(/\[\d+\]/g, '[]').split('.').slice(0, 2).join('.');
}

function describe(v: unknown): string {
  try {
    const s = JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x instanceof Map || x instanceof Set ? `[${x.constructor.name}]` : x));
    return s === undefined ? String(v) : s.slice(0, 300);
  } catch {
    return String(v);
  }
}

const parseTally = new Tally();

export const parseConfigTarget: FuzzTarget<unknown> = {
  name: 'config/parseConfig',
  covers: 'shared/config/config.ts parseConfig (zod schema, cross-field checks)',
  arbitrary: arbRawConfig,
  tally: parseTally,
  mustReach: ['ok', 'invalid:fds', 'invalid:(root)', 'invalid:hash.tableSize', 'invalid:cluster.vip', 'invalid:store.url'],
  check(raw) {
    const out = typedOnly('parseConfig', [ErrorCode.CONFIG_INVALID], () => parseConfig(raw));
    checkOutcome(() => `config ${describe(raw)}`, out, 'config', parseTally);
  },
};

// ------------------------------------------------------------ the loader

const YAML_SNIPPETS: readonly string[] = [
  'a: &x [*x]\n', 'fds: &f [{id: 11, name: a}]\nservices: *f\n', '<<: {log: {level: info}}\n', 'log: !!binary aGVsbG8=\n', 'log: !!set {a, b}\n',
  'log: !!omap [a: 1]\n', 'log: !foo bar\n', 'cluster: {vni: .nan}\n', 'cluster: {vni: .inf}\n', 'cluster: {vni: 0x1F}\n', 'cluster: {vni: 1e400}\n', 'cluster: {vni: 0o17}\n',
  'hash: {tableSize: 9007199254740881}\n', '---\nlog: {level: info}\n', '%YAML 1.1\n---\n', '? [a]\n: 1\n', '__proto__: {x: 1}\n', 'log: ~\n', '- 1\n- 2\n', '"unterminated\n',
  '{'.repeat(64), '['.repeat(100) + ']'.repeat(100) + '\n', 'a: b: c\n', '\t- tab\n', 'fds: []\n', 'log: {level: info, level: debug}\n', '\u0000\n', '\uFEFFlog: {level: info}\n',
  'k: ' + 'x'.repeat(2000) + '\n', 'k: &a [&b [&c [*a]]]\n', 'a: &a x\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n',
];

type TextOp = { k: 'dropLine' | 'dupLine' | 'indent' | 'dedent' | 'truncate'; i: number } | { k: 'insert'; i: number; s: string } | { k: 'char'; i: number; c: string };

const textOp: fc.Arbitrary<TextOp> = fc.oneof(
  fc.record({ k: fc.constantFrom('dropLine' as const, 'dupLine' as const, 'indent' as const, 'dedent' as const, 'truncate' as const), i: fc.nat() }),
  fc.record({ k: fc.constant('insert' as const), i: fc.nat(), s: fc.oneof(fc.constantFrom(...YAML_SNIPPETS), fc.constantFrom(': ', '- ', '{', '}', '[', ']', ',', '&a ', '*a', '!!str ', '#', '"', "'", '|', '>', '\n', '  ')) }),
  fc.record({ k: fc.constant('char' as const), i: fc.nat(), c: fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }) }),
);

function applyTextOps(text: string, ops: readonly TextOp[]): string {
  let t = text;
  for (const op of ops) {
    const lines = t.split('\n');
    const li = op.i % Math.max(1, lines.length);
    switch (op.k) {
      case 'dropLine':
        lines.splice(li, 1);
        t = lines.join('\n');
        break;
      case 'dupLine':
        lines.splice(li, 0, lines[li] ?? '');
        t = lines.join('\n');
        break;
      case 'indent':
        lines[li] = `  ${lines[li] ?? ''}`;
        t = lines.join('\n');
        break;
      case 'dedent':
        lines[li] = (lines[li] ?? '').replace(/^ {1,2}/, '');
        t = lines.join('\n');
        break;
      case 'truncate':
        t = t.slice(0, op.i % (t.length + 1));
        break;
      case 'insert': {
        const at = op.i % (t.length + 1);
        t = t.slice(0, at) + op.s + t.slice(at);
        break;
      }
      case 'char': {
        if (t.length === 0) break;
        const at = op.i % t.length;
        t = t.slice(0, at) + op.c + t.slice(at + 1);
        break;
      }
    }
  }
  return t;
}

export interface FileInput {
  ext: 'yaml' | 'yml' | 'YAML' | 'json';
  text: string;
}

/**
 * Texts of configurations, made once (yaml's stringify costs more than the
 * rest of an input): valid ones and mutants, as block or flow YAML and as JSON.
 */
let pool: FileInput[] | null = null;
function texts(): FileInput[] {
  pool ??= fc.sample(
    fc.record({ cfg: fc.oneof({ weight: 3, arbitrary: arbValidConfig }, { weight: 1, arbitrary: arbRawConfig }), ext: fc.constantFrom('yaml' as const, 'yml' as const, 'YAML' as const, 'json' as const), flow: fc.boolean() }).map(({ cfg, ext, flow }) => {
      let text: string;
      try {
        text = (ext === 'json' ? JSON.stringify(cfg, null, flow ? 0 : 2) : (yamlStringify(cfg, { collectionStyle: flow ? 'flow' : 'any' }) as string | undefined)) ?? '';
      } catch {
        text = ''; // a BigInt, a cycle: no text of it
      }
      return { ext, text };
    }),
    { numRuns: 512, seed: 0x5eed },
  );
  return pool;
}

const arbFile: fc.Arbitrary<FileInput> = fc.oneof(
  { weight: 1, arbitrary: fc.record({ ext: fc.constantFrom('yaml' as const, 'json' as const), text: fc.string({ maxLength: 80, unit: 'binary' }) }) },
  { weight: 1, arbitrary: fc.record({ ext: fc.constant('yaml' as const), text: fc.array(fc.constantFrom(...YAML_SNIPPETS), { maxLength: 3 }).map((s) => s.join('')) }) },
  {
    weight: 6,
    arbitrary: fc.record({ i: fc.nat(), ops: fc.array(textOp, { maxLength: 3 }) }).map(({ i, ops }) => {
      const t = texts();
      const f = t[i % t.length]!;
      return { ext: f.ext, text: applyTextOps(f.text, ops) };
    }),
  },
);

const loadTally = new Tally();
let dir = '';
let yamlWarnings = 0;
let savedEmitWarning: typeof process.emitWarning | null = null;

export const loadConfigTarget: FuzzTarget<FileInput> = {
  name: 'config/loadConfig',
  covers: 'shared/config/config.ts loadConfig (the YAML loader: yaml parse, JSON.parse, then parseConfig)',
  arbitrary: arbFile,
  tally: loadTally,
  mustReach: ['ok', 'unparsable', 'invalid:fds'],
  setup() {
    // A million rewrites of one file: in memory where there is a tmpfs (on this machine's /tmp a write took 2.8 ms, on /dev/shm 48 µs).
    dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'baton-fuzz-config-'));
    // The yaml library reports warnings (an unresolved tag, a collection as a key) through process.emitWarning:
    // counted here, not printed a million times.
    savedEmitWarning = process.emitWarning;
    process.emitWarning = ((w: string | Error, ...rest: unknown[]) => {
      const name = w instanceof Error ? w.name : typeof rest[0] === 'string' ? rest[0] : '';
      if (name === 'YAMLWarning' || String(w).includes('YAMLWarning') || String(w).includes('Keys with collection values')) yamlWarnings++;
      else (savedEmitWarning as (...a: unknown[]) => void).call(process, w, ...rest);
    }) as typeof process.emitWarning;
    return Promise.resolve();
  },
  teardown() {
    if (savedEmitWarning) process.emitWarning = savedEmitWarning;
    savedEmitWarning = null;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = '';
    if (yamlWarnings > 0) loadTally.notes.set('yaml warnings', yamlWarnings);
    yamlWarnings = 0;
    return Promise.resolve();
  },
  check(input) {
    const path = join(dir, `c.${input.ext}`);
    writeFileSync(path, input.text);
    const out = typedOnly('loadConfig', [ErrorCode.CONFIG_INVALID], () => loadConfig(path));
    checkOutcome(() => `${input.ext} file ${JSON.stringify(input.text.slice(0, 300))}`, out, path, loadTally);
  },
};
