/**
 * A private etcd for the store tests: ensureEtcd() finds the `etcd` binary
 * (Debian's etcd-server; installed with apt when missing and running as root),
 * starts one member on 127.0.0.1 with free ports and a temporary data dir,
 * waits until it reports healthy (polling /health, no fixed sleep) and
 * returns its URL and stop() (kill, reap, remove the data dir).
 * Does not use the system etcd service the Debian package may install.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { run } from './tshark.js';

function findExecutable(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/local/bin', '/usr/bin', '/usr/sbin', '/bin', '/sbin']);
  for (const dir of dirs) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

const APT_LOCK_WAIT_S = 600;
const APT_TIMEOUT_MS = 15 * 60_000;

export interface EtcdInstance {
  /** `etcd://127.0.0.1:<port>` for openStore. */
  url: string;
  /** `127.0.0.1:<port>` */
  endpoint: string;
  /** Kills etcd and removes its data. */
  stop(): Promise<void>;
  /** Kills etcd (SIGKILL), keeping its data: a store crash. */
  kill(): Promise<void>;
  /** Starts it again on the same ports with the same data; resolves when healthy. */
  restart(): Promise<void>;
}

/** A port that was free a moment ago (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** The etcd binary; installs Debian's etcd-server when missing (root + apt only). */
export async function findOrInstallEtcd(): Promise<string> {
  const found = findExecutable('etcd');
  if (found !== undefined) return found;
  const apt = findExecutable('apt-get');
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || apt === undefined) {
    throw new Error(`etcd is not installed and cannot be installed automatically (${!isRoot ? 'not root' : 'no apt-get'}); install it, e.g. \`apt-get install etcd-server\``);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const lock = ['-o', `DPkg::Lock::Timeout=${APT_LOCK_WAIT_S}`];
  const install = () => run(apt, [...lock, 'install', '-y', '--no-install-recommends', 'etcd-server'], { env, timeoutMs: APT_TIMEOUT_MS });
  let r = await install();
  if (r.code !== 0) {
    const u = await run(apt, [...lock, 'update'], { env, timeoutMs: APT_TIMEOUT_MS });
    if (u.code !== 0) throw new Error(`apt-get update failed (exit ${u.code}):\n${u.stderr.slice(-2000)}`);
    r = await install();
  }
  const installed = findExecutable('etcd');
  // A failing postinst (the package's own service could not start) still leaves a usable binary.
  if (r.code !== 0 && installed === undefined) throw new Error(`apt-get install etcd-server failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  if (installed === undefined) throw new Error('apt-get install etcd-server succeeded but etcd is still not on PATH');
  return installed;
}

async function healthy(clientPort: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${clientPort}/health`, { signal: AbortSignal.timeout(1000) });
    if (!res.ok) return false;
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

/** Starts a private single-member etcd; retries with new ports if a port was taken meanwhile. */
export async function ensureEtcd(readyTimeoutMs = 30_000): Promise<EtcdInstance> {
  const bin = await findOrInstallEtcd();
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startEtcd(bin, readyTimeoutMs);
    } catch (e) {
      lastErr = e;
    }
  }
  throw lastErr;
}

async function startEtcd(bin: string, readyTimeoutMs: number): Promise<EtcdInstance> {
  const clientPort = await freePort();
  let peerPort = await freePort();
  while (peerPort === clientPort) peerPort = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'baton-etcd-'));
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  let proc: { kill: () => Promise<void> } | null = null;

  /** Spawns etcd on the fixed ports and data dir and waits until it is healthy. */
  const launch = async (state: 'new' | 'existing'): Promise<void> => {
    const child = spawn(
      bin,
      [
        '--name', 'baton-test',
        '--data-dir', dataDir,
        '--listen-client-urls', client,
        '--advertise-client-urls', client,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `baton-test=${peer}`,
        '--initial-cluster-state', state,
        '--log-level', 'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000);
    });
    const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
    let exited = false;
    void closed.then(() => (exited = true));
    child.on('error', () => undefined); // reported through `exited`
    proc = {
      kill: async () => {
        if (!exited) child.kill('SIGKILL');
        await closed;
      },
    };
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (exited) throw new Error(`etcd exited before it was ready:\n${stderr}`);
      if (await healthy(clientPort)) return;
      if (Date.now() > deadline) {
        await proc.kill();
        throw new Error(`etcd not healthy within ${readyTimeoutMs} ms:\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50)); // poll interval, not a wait for a condition
    }
  };

  const stop = async () => {
    await proc?.kill();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await launch('new');
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url: `etcd://127.0.0.1:${clientPort}`,
    endpoint: `127.0.0.1:${clientPort}`,
    stop,
    kill: async () => {
      await proc?.kill();
    },
    restart: () => launch('existing'),
  };
}
