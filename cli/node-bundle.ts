/**
 * What a launched node runs, and how a rolling upgrade gets new code.
 *
 * Under tsx every node process would spend ~0.6 s of CPU at start-up loading
 * tsx and transforming ~100 modules; on a 2-core machine that is CPU taken
 * from the running cluster each time a rolling upgrade restarts an FD. So the
 * launcher bundles cli/baton.ts with esbuild (the bundler tsx itself uses; npm
 * packages stay external and resolve from node_modules) into
 * node_modules/.cache/baton/, and nodes start from that plain ESM file in
 * ~0.25 s. A bundle is named by the sha256 of its content and never rewritten
 * or deleted, so a new build is a new file and the previous one stays valid for
 * the nodes still running it (and for a node restarted from it).
 *
 * The bundle is built when `baton up` starts (if that fails it falls back to
 * tsx, slower but equivalent) and again for every rolling upgrade
 * (`baton upgrade` builds the sources as they are when it is asked; see
 * `upgradeEntry`), unless the upgrade names a bundle (`--bundle <file>`, e.g.
 * from `baton build`) or a command (`--command "<argv>"`, e.g. another
 * installation's `node /opt/baton-2/bin/baton.js`). Whatever it is, it is run
 * once as `<entry> version --json` before any FD is touched: a file that is
 * missing, does not load, or does not print a build id is refused with
 * BATON_BAD_ARGUMENT naming the option; sources that do not compile with
 * BATON_BUILD_FAILED.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BatonError, ErrorCode } from '../shared/errors.js';

const here = dirname(fileURLToPath(import.meta.url));
export const PROJECT_ROOT = resolve(here, '..');
const CLI_SOURCE = join(here, 'baton.ts');
export const BUNDLE_DIR = join(PROJECT_ROOT, 'node_modules', '.cache', 'baton');

/** How to run the CLI: `exec ...args <baton command>`. */
export interface NodeEntry {
  /** The program: Node itself for a bundle or tsx, the first word of a `--command`. */
  exec: string;
  /** Arguments before the baton command: loader flags and the script (bundle, tsx), or the rest of the command. */
  args: string[];
  bundled: boolean;
  /** The bundle file, when bundled. */
  bundle?: string;
  /** A `--command` entry: Node flags (BATON_NODE_ARGS) do not apply. */
  command?: boolean;
  /** The build id the entry reports (`baton version`), once probed. */
  version?: string;
  /** Why the bundle was not used (fallback to tsx), if it was not. */
  fallbackReason?: string;
}

export const TSX_ENTRY: NodeEntry = { exec: process.execPath, args: ['--import', 'tsx', CLI_SOURCE], bundled: false };

export function describeEntry(e: NodeEntry): string {
  if (e.command) return `command ${JSON.stringify([e.exec, ...e.args].join(' '))}`;
  if (e.bundle) return `bundle ${e.bundle}`;
  return 'the sources (tsx)';
}

export interface BundleOptions {
  outDir?: string;
  /** A label for the build, part of its version (`<package>-<tag>+<hash>`): letters, digits, `.` and `-`. */
  tag?: string;
}

const TAG = /^[0-9A-Za-z][0-9A-Za-z.-]{0,63}$/;

/**
 * Bundles the current sources (cli/baton.ts and everything it imports) into
 * `<outDir>/baton-<sha256/16>.mjs`. Throws BATON_BAD_ARGUMENT for a bad tag,
 * BATON_BUILD_FAILED when esbuild cannot build them.
 */
export async function buildNodeBundle(o: BundleOptions = {}): Promise<NodeEntry> {
  const tag = o.tag ?? '';
  if (tag && !TAG.test(tag)) throw new BatonError(ErrorCode.BAD_ARGUMENT, `--tag ${JSON.stringify(tag)}: letters, digits, '.' and '-' only (at most 64)`, { option: '--tag' });
  const outDir = resolve(o.outDir ?? BUNDLE_DIR);
  let code: Uint8Array;
  try {
    const { build } = await import('esbuild');
    const pkg = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version?: string };
    const out = await build({
      entryPoints: [CLI_SOURCE],
      write: false,
      outfile: join(outDir, 'baton.mjs'), // names only (write: false); the file is named by content below
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      sourcemap: 'inline',
      logLevel: 'silent',
      // shared/build-info.ts: the version a node reports.
      define: { __BATON_PACKAGE_VERSION__: JSON.stringify(pkg.version ?? '0.0.0'), __BATON_BUILD_TAG__: JSON.stringify(tag) },
    });
    code = out.outputFiles[0]!.contents;
  } catch (err) {
    throw new BatonError(ErrorCode.BUILD_FAILED, `cannot bundle ${CLI_SOURCE}: ${(err as Error).message}`, undefined, { cause: err });
  }
  // Named by content: the same sources give the same file (no pile-up), a new
  // build never replaces a file a running node was started from, and a
  // concurrent launcher never reads a half-written one (write, then rename).
  const outfile = join(outDir, `baton-${createHash('sha256').update(code).digest('hex').slice(0, 16)}.mjs`);
  if (!existsSync(outfile)) {
    mkdirSync(outDir, { recursive: true });
    const tmp = `${outfile}.${process.pid}.tmp`;
    writeFileSync(tmp, code);
    renameSync(tmp, outfile);
  }
  return bundleFile(outfile);
}

/** `baton up`: the bundle of the current sources, or tsx if bundling fails (or BATON_NO_BUNDLE=1). */
export async function buildNodeEntry(outDir = BUNDLE_DIR): Promise<NodeEntry> {
  if (process.env.BATON_NO_BUNDLE === '1') return { ...TSX_ENTRY, fallbackReason: 'BATON_NO_BUNDLE=1' };
  try {
    return await buildNodeBundle({ outDir });
  } catch (err) {
    return { ...TSX_ENTRY, fallbackReason: (err as Error).message };
  }
}

function bundleFile(file: string): NodeEntry {
  return { exec: process.execPath, args: ['--enable-source-maps', file], bundled: true, bundle: file };
}

function badOption(option: string, message: string, cause?: unknown): BatonError {
  return new BatonError(ErrorCode.BAD_ARGUMENT, `${option}: ${message}`, { option }, cause === undefined ? undefined : { cause });
}

/** A bundle named by an upgrade (`--bundle <file>`): it must be a readable file. */
export function bundleEntry(file: string): NodeEntry {
  const path = resolve(file);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw badOption('--bundle', `${JSON.stringify(file)} does not exist (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, e);
  }
  if (!st.isFile()) throw badOption('--bundle', `${JSON.stringify(file)} is not a file`);
  return bundleFile(path);
}

/** A command named by an upgrade (`--command "<argv>"`, split on whitespace, no shell): the node is `<argv> node --role …`. */
export function commandEntry(argv: readonly string[]): NodeEntry {
  const words = argv.flatMap((w) => w.split(/\s+/)).filter(Boolean);
  if (words.length === 0) throw badOption('--command', 'is empty');
  return { exec: words[0]!, args: words.slice(1), bundled: false, command: true };
}

/**
 * Runs `<entry> version --json` once and returns the entry with the build id
 * it printed. Anything else (cannot start, exits non-zero, no version within
 * `timeoutMs`) is BATON_BAD_ARGUMENT naming `option`, with the output's tail.
 */
export async function probeEntry(entry: NodeEntry, option: string, timeoutMs = 20_000): Promise<NodeEntry> {
  const args = [...entry.args, 'version', '--json'];
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string; error?: string }>((res) => {
    let stdout = '';
    let stderr = '';
    let settled = false;
    const child = spawn(entry.exec, args, { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      done(null, `no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    const done = (code: number | null, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      res({ code, stdout, stderr, ...(error ? { error } : {}) });
    };
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (e) => done(null, e.message));
    child.once('close', (code) => done(code)); // after exit and the pipes' end: the output is complete
  });
  const what = describeEntry(entry);
  const tail = (s: string): string => s.trim().split('\n').slice(-6).join('\n');
  if (out.error || out.code !== 0) {
    // The error's own line (e.g. "SyntaxError: …", "Error [ERR_MODULE_NOT_FOUND]: …") says more than a stack tail.
    const why = out.stderr.split('\n').find((l) => /^\s*\w*Error\b/.test(l))?.trim() ?? tail(out.stderr);
    throw badOption(option, `${what} does not run (${out.error ?? `exit ${out.code}`})${why ? `: ${why}` : ''}`);
  }
  let version = '';
  try {
    const v = (JSON.parse(out.stdout.trim().split('\n').pop() ?? '') as { version?: unknown }).version;
    if (typeof v === 'string') version = v;
  } catch {
    // not JSON: refused below
  }
  if (!version) throw badOption(option, `${what} printed no build id for \`version --json\` (got ${JSON.stringify(tail(out.stdout))}); is it Baton?`);
  return { ...entry, version };
}

/** What an upgrade asks for: a bundle file, a command, or neither (build the current sources). */
export interface UpgradeBuild {
  bundle?: string;
  command?: readonly string[];
}

/** Probe results by what was probed (a bundle path names one build: bundles are content-named). */
export type ProbeCache = Map<string, Promise<NodeEntry>>;

function probeOnce(entry: NodeEntry, option: string, cache: ProbeCache | undefined, timeoutMs: number | undefined): Promise<NodeEntry> {
  if (!cache) return probeEntry(entry, option, timeoutMs);
  const key = JSON.stringify([entry.exec, ...entry.args]);
  let p = cache.get(key);
  if (!p) {
    p = probeEntry(entry, option, timeoutMs);
    cache.set(key, p);
    p.catch(() => cache.delete(key)); // a refused build is checked again if asked again
  }
  return p;
}

/**
 * The entry a rolling upgrade starts FDs with, probed: the named bundle or
 * command, else a bundle of the sources as they are now (tsx if
 * BATON_NO_BUNDLE=1). `baton upgrade` calls it once, before it asks the
 * manager; the orchestrator again per restart (with a `cache`, so each
 * distinct build is run once), before it stops the old process.
 */
export async function upgradeEntry(b: UpgradeBuild, o: { timeoutMs?: number; cache?: ProbeCache } = {}): Promise<NodeEntry> {
  const bundle = b.bundle ?? '';
  const command = (b.command ?? []).filter((w) => w.trim() !== '');
  if (bundle && command.length > 0) throw badOption('--bundle', 'give --bundle or --command, not both');
  if (bundle) return probeOnce(bundleEntry(bundle), '--bundle', o.cache, o.timeoutMs);
  if (command.length > 0) return probeOnce(commandEntry(command), '--command', o.cache, o.timeoutMs);
  const built = process.env.BATON_NO_BUNDLE === '1' ? { ...TSX_ENTRY, fallbackReason: 'BATON_NO_BUNDLE=1' } : await buildNodeBundle();
  try {
    return await probeOnce(built, 'the current sources', o.cache, o.timeoutMs);
  } catch (e) {
    // It compiled but does not run: that is the build's fault, not an option's.
    throw new BatonError(ErrorCode.BUILD_FAILED, (e as Error).message, undefined, { cause: e });
  }
}
