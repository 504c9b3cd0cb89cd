/**
 * Starts Baton nodes as real child processes and reaps them. Each child runs
 * `baton node ...` (cli/node-main.ts) and announces itself with a READY line;
 * its logs go to <runDir>/<name>.log. Children also exit when the launcher's
 * pipe to their stdin closes, so a killed launcher leaves no orphans.
 *
 * What a node runs is a NodeEntry (cli/node-bundle.ts): by default the bundle
 * built when the launcher first starts a node; a rolling upgrade's restarts
 * name a newer one (cli/orchestrator.ts), which then becomes the default.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { BatonConfig } from '../shared/config/config.js';
import type { ReadyLine, Role } from './node-main.js';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { buildNodeEntry, PROJECT_ROOT, type NodeEntry } from './node-bundle.js';
import { serviceStopBoundMs } from '../nodes/service-member.js';
import { fdStopBoundMs } from '../nodes/fd-stop.js';

export interface LaunchedNode extends ReadyLine {
  proc: ChildProcess;
  logFile: string;
}

export interface LauncherOptions {
  /** Folder for the resolved config and per-node logs. */
  runDir: string;
  readyTimeoutMs?: number;
  /**
   * The network namespace a node runs in (as on a host of its own: the lab's
   * btn-node-K, docs/lab.md), or undefined for this one. The node is started
   * with `ip netns exec`, which execs it: its pid, stdin and stdout are the
   * node's own.
   */
  netnsOf?: (name: string) => string | undefined;
}

export class Launcher {
  readonly nodes = new Map<string, LaunchedNode>();
  readonly configPath: string;
  /** Control address of each hash tier started (READY), by name. */
  private readonly managers = new Map<string, string>();
  private entry: Promise<NodeEntry> | null = null;
  /** The last /metrics scrape of every node stopped through stopNode(), in stop order. */
  readonly retired: { name: string; pid: number; metrics: string; id?: number; data?: string }[] = [];

  constructor(
    readonly cfg: BatonConfig,
    readonly opts: LauncherOptions,
  ) {
    mkdirSync(opts.runDir, { recursive: true });
    this.configPath = join(opts.runDir, 'config.json');
    writeFileSync(this.configPath, JSON.stringify(cfg, null, 2));
  }

  /** The first hash tier's control address. */
  get managerAddress(): string {
    const first = this.managers.get(this.cfg.hashTiers[0]!.name) ?? [...this.managers.values()][0];
    if (!first) throw new BatonError(ErrorCode.INVALID_TRANSITION, 'no hash tier started: the manager address is known after up()');
    return first;
  }

  /** Every started hash tier's control address, in config order. */
  get managerAddresses(): string[] {
    return this.cfg.hashTiers.map((t) => this.managers.get(t.name)).filter((a): a is string => a !== undefined);
  }

  /** What nodes start from unless told otherwise (built on first use). */
  defaultEntry(): Promise<NodeEntry> {
    return (this.entry ??= buildNodeEntry());
  }

  /** Nodes started from now on without an entry of their own run `entry` (an upgrade's build). */
  setDefaultEntry(entry: NodeEntry): void {
    this.entry = Promise.resolve(entry);
  }

  /**
   * Starts one node and resolves with its READY line (rejects with its log
   * tail if it dies first). `entry`: what to run, default `defaultEntry()`.
   */
  async startNode(role: Role, name: string, entry?: NodeEntry): Promise<LaunchedNode> {
    entry ??= await this.defaultEntry();
    const logFile = join(this.opts.runDir, `${name}.log`);
    const fd = openSync(logFile, 'a');
    // BATON_NODE_ARGS: extra Node flags for every node (e.g. --cpu-prof for profiling); not for a --command entry.
    const extra = entry.command ? [] : (process.env.BATON_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const args = [...extra, ...entry.args, 'node', '--role', role, '--name', name, '--config', this.configPath];
    if (role !== 'hash' && this.managers.size > 0) args.push('--manager', this.managerAddresses.join(','));
    const ns = this.opts.netnsOf?.(name);
    const proc = ns
      ? spawn('ip', ['netns', 'exec', ns, entry.exec, ...args], { stdio: ['pipe', 'pipe', fd], cwd: PROJECT_ROOT, env: { ...process.env } })
      : spawn(entry.exec, args, { stdio: ['pipe', 'pipe', fd], cwd: PROJECT_ROOT, env: { ...process.env } });
    closeSync(fd);
    const timeoutMs = this.opts.readyTimeoutMs ?? 20_000;
    return new Promise<LaunchedNode>((resolveP, reject) => {
      let done = false;
      const fail = (why: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        proc.kill('SIGKILL');
        reject(new BatonError(ErrorCode.BAD_ARGUMENT, `${role} ${name} did not start: ${why}\n--- ${logFile} (tail) ---\n${tail(logFile)}`));
      };
      const timer = setTimeout(() => fail(`no READY line within ${timeoutMs} ms`), timeoutMs);
      proc.once('exit', (code, sig) => fail(`exited (${code ?? sig}) before it was ready`));
      proc.once('error', (e) => fail(e.message));
      const rl = createInterface({ input: proc.stdout! });
      let readyLine: ReadyLine | null = null;
      rl.on('line', (line) => {
        if (line.startsWith('FINAL ')) {
          // The node's counters after it closed (cli/node-main.ts): they replace the pre-stop scrape.
          try {
            const text = (JSON.parse(line.slice(6)) as { metrics: string }).metrics;
            const r = this.retired.find((x) => x.pid === proc.pid);
            if (r) r.metrics = text;
            else {
              this.retired.push({ name, pid: proc.pid!, metrics: text, id: readyLine?.id, data: readyLine?.data });
            }
          } catch {
            // a torn line: the pre-stop scrape stays
          }
          return;
        }
        if (done || !line.startsWith('READY ')) return;
        done = true;
        clearTimeout(timer);
        const r = JSON.parse(line.slice(6)) as ReadyLine;
        readyLine = r;
        const n: LaunchedNode = { ...r, proc, logFile };
        this.nodes.set(name, n);
        if (role === 'hash' && r.control) this.managers.set(name, r.control);
        resolveP(n);
      });
    });
  }

  /** Hash tiers first, in order (the others need their control addresses), then service nodes and FDs. */
  async up(onNode?: (n: LaunchedNode) => void): Promise<void> {
    for (const t of this.cfg.hashTiers) {
      const h = await this.startNode('hash', t.name); // (not inside onNode?.(…): that would skip it without a callback)
      onNode?.(h);
    }
    const rest = [
      ...this.cfg.services.map((s) => this.startNode('service', s.name)),
      ...this.cfg.fds.map((f) => this.startNode('fd', f.name)),
    ];
    const started = await Promise.allSettled(rest);
    for (const s of started) if (s.status === 'fulfilled') onNode?.(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * How long a node may take to stop after SIGTERM before it is killed: a
   * service node is drained first (its flows end, every FD drops its route:
   * nodes/service-member.ts, bounded by serviceStopBoundMs), an FD disengages
   * itself first (nodes/fd-stop.ts, bounded by fdStopBoundMs); each exits on
   * its own 2 s after its bound at the latest; the hash tiers 5 s.
   */
  stopGraceMs(role: Role): number {
    return role === 'service' ? serviceStopBoundMs(this.cfg) + 4000 : role === 'fd' ? fdStopBoundMs(this.cfg) + 4000 : 5000;
  }

  /**
   * Stops one node (SIGTERM, then SIGKILL after `graceMs`, default
   * stopGraceMs of its role) and waits until it is reaped. Its last /metrics
   * text is kept in `retired` first, so the counters of a process replaced by
   * a rolling upgrade can still be read. An FD disengages itself before it
   * exits (zero loss); `now` sends SIGINT instead, which stops an FD at once
   * (a whole cluster torn down: there is nobody to hand its flows to).
   */
  async stopNode(name: string, graceMs?: number, opts: { now?: boolean } = {}): Promise<void> {
    const n = this.nodes.get(name);
    if (!n) return;
    graceMs ??= this.stopGraceMs(n.role);
    this.nodes.delete(name);
    if (n.proc.exitCode === null && n.proc.signalCode === null) {
      try {
        const res = await fetch(n.metrics, { signal: AbortSignal.timeout(1000) });
        this.retired.push({ name, pid: n.pid, metrics: await res.text(), id: n.id, data: n.data });
      } catch {
        // not answering (stopped, frozen): nothing to keep
      }
    }
    await reap(n.proc, graceMs, opts.now ? 'SIGINT' : 'SIGTERM');
  }

  /**
   * Stops everything: FDs (at once: the whole cluster goes, so an FD that
   * disengaged itself would only hand its flows to another one that is
   * stopping too) and service nodes (drained) first, the hash tiers last;
   * `graceMs` default: stopGraceMs of each role.
   */
  async down(graceMs?: number): Promise<void> {
    const tiers = new Set(this.cfg.hashTiers.map((t) => t.name));
    await Promise.all([...this.nodes.entries()].filter(([k]) => !tiers.has(k)).map(([k, n]) => this.stopNode(k, graceMs, { now: n.role === 'fd' })));
    await Promise.all([...tiers].map((k) => this.stopNode(k, graceMs)));
  }
}

function reap(proc: ChildProcess, graceMs: number, signal: 'SIGTERM' | 'SIGINT'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    proc.once('exit', () => {
      clearTimeout(t);
      r();
    });
    proc.kill(signal);
    proc.stdin?.end();
  });
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
