/**
 * tshark for integration tests: make sure it is installed (ensureTshark),
 * capture on an interface until N packets were seen (startTsharkCapture), and
 * decode a capture file into fields (tsharkFields). Off the hot path; every
 * process started here is bounded by a timeout and killed when it expires.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

const SETUID_PRESEED = 'wireshark-common wireshark-common/install-setuid boolean false\n';
/** apt waits this long for the dpkg lock (another install may be running). */
const APT_LOCK_WAIT_S = 600;
const APT_TIMEOUT_MS = 15 * 60_000;

function findExecutable(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/local/bin', '/usr/bin', '/usr/sbin', '/bin', '/sbin']);
  for (const dir of dirs) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed after timeoutMs), optional stdin. */
export function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: timed out after ${opts.timeoutMs} ms\n${stderr.slice(-2000)}`));
    }, opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * Returns the path of tshark. When it is missing and we are root on a system
 * with apt-get, installs Debian's `tshark` non-interactively (no setuid
 * dumpcap prompt; `apt-get update` only if the first install attempt fails;
 * apt itself waits for a dpkg lock held by a concurrent install). Otherwise
 * throws an Error saying what to install.
 */
export async function ensureTshark(): Promise<string> {
  const found = findExecutable('tshark');
  if (found !== undefined) return found;
  const apt = findExecutable('apt-get');
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || apt === undefined) {
    throw new Error(
      `tshark is not installed (not on PATH) and cannot be installed automatically ` +
        `(${!isRoot ? 'not running as root' : 'apt-get not found'}); install Wireshark's tshark, e.g. \`apt-get install tshark\``,
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const debconf = findExecutable('debconf-set-selections');
  if (debconf !== undefined) await run(debconf, [], { input: SETUID_PRESEED, env, timeoutMs: 60_000 });
  const lock = ['-o', `DPkg::Lock::Timeout=${APT_LOCK_WAIT_S}`];
  const install = () => run(apt, [...lock, 'install', '-y', '--no-install-recommends', 'tshark'], { env, timeoutMs: APT_TIMEOUT_MS });
  let r = await install();
  if (r.code !== 0) {
    const u = await run(apt, [...lock, 'update'], { env, timeoutMs: APT_TIMEOUT_MS });
    if (u.code !== 0) throw new Error(`apt-get update failed (exit ${u.code}):\n${u.stderr.slice(-2000)}`);
    r = await install();
  }
  if (r.code !== 0) throw new Error(`apt-get install tshark failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  const installed = findExecutable('tshark');
  if (installed === undefined) throw new Error('apt-get install tshark succeeded but tshark is still not on PATH');
  return installed;
}

export interface Capture {
  readonly process: ChildProcess;
  /** Resolves with tshark's exit code once it stopped (after `count` packets); rejects (and kills it) after timeoutMs. */
  waitForExit(timeoutMs: number): Promise<number | null>;
  /** Kills tshark if it still runs and waits until it is reaped. Safe to call twice. */
  stop(): Promise<void>;
  stderr(): string;
}

function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/**
 * tshark's readiness line. NOT "Capturing on 'Loopback: lo'": tshark prints
 * that before its dumpcap child has opened the interface, and packets sent
 * right after it are lost (seen on tshark 4.0). "Capture started." is logged
 * when dumpcap reports the capture file open, i.e. after the interface and
 * filter are set up.
 */
const CAPTURE_STARTED = /\bCapture started\b/;

/**
 * Starts `tshark -i iface -f filter -c count -w file` and resolves once tshark
 * reports on stderr that the capture has started, i.e. packets sent from now
 * on are seen. Rejects (after killing tshark) if it exits first or does not
 * get there within readyTimeoutMs.
 */
export function startTsharkCapture(
  tshark: string,
  o: { iface: string; filter: string; count: number; file: string; readyTimeoutMs: number },
): Promise<Capture> {
  const child = spawn(tshark, ['-i', o.iface, '-f', o.filter, '-c', String(o.count), '-w', o.file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const capture: Capture = {
    process: child,
    stderr: () => err,
    waitForExit(timeoutMs) {
      if (exited(child)) return closed;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`tshark did not stop within ${timeoutMs} ms (expected ${o.count} packets)\n${err.slice(-2000)}`));
        }, timeoutMs);
        void closed.then((code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
    },
    async stop() {
      if (!exited(child)) child.kill('SIGKILL');
      await closed;
    },
  };
  child.stdout.resume(); // nothing expected on stdout with -w; never let the pipe fill
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      void closed.then(() => reject(new Error(`tshark capture did not start: ${why}\n${err.slice(-2000)}`)));
    };
    const timer = setTimeout(() => fail(`no "Capturing on" within ${o.readyTimeoutMs} ms`), o.readyTimeoutMs);
    child.on('error', (e) => fail(e.message));
    child.on('exit', (code, sig) => fail(`exited early (code ${code}, signal ${sig})`));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (!settled && CAPTURE_STARTED.test(err)) {
        settled = true;
        clearTimeout(timer);
        resolve(capture);
      }
    });
  });
}

/**
 * Decodes a capture file: `tshark -r file <extraArgs> -T fields -e f1 -e f2 ...`.
 * Returns one row per packet, one entry per field; each entry lists every
 * occurrence of the field in that packet (outer layers first), e.g. ip.src of
 * an encapsulated packet is [outer, inner].
 */
export async function tsharkFields(tshark: string, file: string, extraArgs: string[], fields: string[]): Promise<string[][][]> {
  const args = ['-r', file, ...extraArgs, '-T', 'fields', '-E', 'header=n', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=|'];
  for (const f of fields) args.push('-e', f);
  const r = await run(tshark, args, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`tshark -r ${file} failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  return r.stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('\t').map((v) => (v === '' ? [] : v.split('|'))));
}
