/**
 * Operator workflows built on disengage/engage (seed 003's users: rolling
 * upgrades of FD hosts, scheduled power-down of idle nodes):
 *
 *   upgrade:   for each ACTIVE FD, `batch` at a time: disengage → wait until
 *              no packet reaches it → the orchestrator restarts its process
 *              → the new process registers and is engaged → next batch.
 *   powerdown: disengage (and stop) the FDs whose load stayed under a
 *              threshold, keeping at least `minActive` FDs.
 *
 * Stopping and starting processes is the orchestrator's job (the `baton up`
 * launcher registers as one); the manager never spawns anything.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import { BatonError, ErrorCode, errorMessage, isBatonError } from '../shared/errors.js';
import { body, MemberStatus, Role, type DisengageReply, type UpgradeReply, type PowerdownReply } from '../shared/control/messages.js';
import type { ControlChannel } from '../shared/control/channel.js';
import type { Registry } from './registry.js';
import type { Operations } from './operations.js';
import { getLogger, type Logger } from '../shared/observability/logger.js';

export interface WorkflowDeps {
  registry: Registry;
  ops: Operations;
  scheduler: Scheduler;
  orchestrator: () => ControlChannel | null;
  heartbeatMs: number;
  logger?: Logger;
}

export class Workflows {
  private readonly log: Logger;
  /** When each FD's load was last seen at or above the power-down threshold (for `sustainMs`). */
  private readonly busySince = new Map<number, number>();
  private running: string | null = null;

  constructor(private readonly d: WorkflowDeps) {
    this.log = d.logger ?? getLogger('workflows');
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.d.scheduler.after(ms, r));
  }

  private async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const end = this.d.scheduler.clock.now() + timeoutMs;
    while (!cond()) {
      if (this.d.scheduler.clock.now() > end) throw new BatonError(ErrorCode.TIMEOUT, `${what}: not done within ${timeoutMs} ms`);
      await this.sleep(Math.max(5, this.d.heartbeatMs / 4));
    }
  }

  /** Waits until two heartbeats in a row show no new packet at `id` (stragglers drained). */
  async waitQuiet(id: number, timeoutMs: number): Promise<void> {
    const rec = () => this.d.registry.get(id);
    let last = -1;
    let stable = 0;
    let lastBeat = -1;
    await this.until(
      () => {
        const r = rec();
        if (!r || !r.connected) return true;
        if (r.lastHeartbeatAt !== lastBeat) {
          lastBeat = r.lastHeartbeatAt;
          stable = r.stats.rxPackets === last ? stable + 1 : 0;
          last = r.stats.rxPackets;
        }
        return stable >= 2;
      },
      timeoutMs,
      `waiting for ${rec()?.info.name ?? id} to go quiet`,
    );
  }

  /** Asks the orchestrator; `build` names what a start/restart runs (empty: see OrchestratorCommand). Resolves with the build id it started. */
  private async orchestrate(op: 'stop' | 'start' | 'restart', node: string, timeoutMs: number, build: { bundle?: string; command?: string[] } = {}): Promise<string> {
    const ch = this.d.orchestrator();
    if (!ch || ch.closed) {
      throw new BatonError(ErrorCode.CONNECTION_CLOSED, `no orchestrator is registered to ${op} ${node}: run the cluster with \`baton up\` (or register a supervisor)`);
    }
    const r = await ch.request(body('orchestratorCommand', { op, node, bundle: build.bundle ?? '', command: build.command ?? [] }), timeoutMs);
    if (r.body.case !== 'orchestratorReply' || !r.body.value.ok) {
      const msg = r.body.case === 'orchestratorReply' ? r.body.value.errorMessage : r.body.case;
      throw new BatonError(ErrorCode.REMOTE_ERROR, `orchestrator could not ${op} ${node}: ${msg}`);
    }
    return r.body.value.version; // "" from an orchestrator that does not report builds
  }

  private lock(name: string): () => void {
    if (this.running) throw new BatonError(ErrorCode.INVALID_TRANSITION, `cannot start ${name}: ${this.running} is in progress`);
    this.running = name;
    return () => {
      this.running = null;
    };
  }

  async upgrade(o: { batch: number; policy: string; timeoutMs: number; bundle?: string; command?: string[] }, say: (msg: string) => void): Promise<UpgradeReply> {
    const unlock = this.lock('an upgrade');
    const t0 = this.d.scheduler.clock.now();
    const reg = this.d.registry;
    const upgraded: string[] = [];
    const disengages: DisengageReply[] = [];
    try {
      if (!this.d.orchestrator()) throw new BatonError(ErrorCode.CONNECTION_CLOSED, 'no orchestrator is registered: a rolling upgrade needs `baton up` (or another supervisor) to restart processes');
      const fds = reg.all().filter((m) => m.info.role === Role.FD && m.machine.status === MemberStatus.ACTIVE).map((m) => m.info.name);
      const k = Math.max(1, o.batch || 1);
      if (fds.length - k < 1) throw new BatonError(ErrorCode.BAD_ARGUMENT, `batch ${k} would take all ${fds.length} ACTIVE FDs out at once`);
      say(`rolling upgrade of ${fds.length} FDs, ${k} at a time, inheritor policy ${o.policy}`);
      for (let i = 0; i < fds.length; i += k) {
        const group = fds.slice(i, i + k);
        say(`[${i + 1}-${Math.min(i + k, fds.length)}/${fds.length}] disengaging ${group.join(', ')}`);
        const replies = await Promise.all(group.map((name) => this.d.ops.disengage({ target: name, policy: o.policy, timeoutMs: o.timeoutMs })));
        disengages.push(...replies);
        for (const name of group) {
          const id = reg.byName(name)!.info.id;
          await this.waitQuiet(id, o.timeoutMs);
          say(`${name}: disengaged and quiet; restarting its process`);
          const version = await this.orchestrate('restart', name, o.timeoutMs, { bundle: o.bundle, command: o.command });
          // ACTIVE again, and registered by the new process (its build id, when the orchestrator knows it).
          const back = (): boolean => {
            const m = reg.byName(name);
            return m?.machine.status === MemberStatus.ACTIVE && m.connected && (version === '' || m.info.version === version);
          };
          await this.until(back, o.timeoutMs, `${name} to come back ACTIVE${version ? ` running ${version}` : ''}`);
          say(`${name}: new process registered and engaged${version ? ` (build ${version})` : ''}`);
          upgraded.push(name);
        }
      }
      return { ok: true, errorCode: '', errorMessage: '', upgraded, durationMs: this.d.scheduler.clock.now() - t0, disengages };
    } catch (e) {
      this.log.warn('upgrade failed', { err: errorMessage(e), upgraded });
      return { ok: false, errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL, errorMessage: errorMessage(e), upgraded, durationMs: this.d.scheduler.clock.now() - t0, disengages };
    } finally {
      unlock();
    }
  }

  /** Call on every heartbeat: tracks how long each FD's load has been under `thresholdPps`. */
  observeLoad(id: number, pps: number, thresholdPps: number, now: number): void {
    if (pps >= thresholdPps || !this.busySince.has(id)) this.busySince.set(id, now);
  }

  /** FDs whose load stayed under the threshold for `sustainMs` (needs observeLoad with the same threshold). */
  idleFds(thresholdPps: number, sustainMs: number, now: number): string[] {
    return this.d.registry
      .all()
      .filter((m) => m.info.role === Role.FD && m.machine.status === MemberStatus.ACTIVE)
      .filter((m) => m.stats.pps < thresholdPps && now - (this.busySince.get(m.info.id) ?? now) >= sustainMs)
      .sort((a, b) => a.stats.pps - b.stats.pps || b.info.id - a.info.id)
      .map((m) => m.info.name);
  }

  async powerdown(
    o: { thresholdPps: number; minActive: number; sustainMs: number; policy: string; stopProcesses: boolean; timeoutMs: number },
    say: (msg: string) => void,
  ): Promise<PowerdownReply> {
    const unlock = this.lock('a power-down');
    const reg = this.d.registry;
    const done: string[] = [];
    const disengages: DisengageReply[] = [];
    try {
      const now = this.d.scheduler.clock.now();
      const active = reg.all().filter((m) => m.info.role === Role.FD && m.machine.status === MemberStatus.ACTIVE).length;
      const minActive = Math.max(1, o.minActive);
      const idle = o.sustainMs > 0 ? this.idleFds(o.thresholdPps, o.sustainMs, now) : reg.all().filter((m) => m.info.role === Role.FD && m.machine.status === MemberStatus.ACTIVE && m.stats.pps < o.thresholdPps).sort((a, b) => a.stats.pps - b.stats.pps).map((m) => m.info.name);
      const n = Math.max(0, Math.min(idle.length, active - minActive));
      say(`${idle.length} FD(s) under ${o.thresholdPps} pps${o.sustainMs ? ` for ${o.sustainMs} ms` : ''}; ${active} ACTIVE, keeping at least ${minActive}: powering down ${n}`);
      for (const name of idle.slice(0, n)) {
        const r = await this.d.ops.disengage({ target: name, policy: o.policy, timeoutMs: o.timeoutMs });
        disengages.push(r);
        if (o.stopProcesses) {
          await this.waitQuiet(reg.byName(name)!.info.id, o.timeoutMs);
          await this.orchestrate('stop', name, o.timeoutMs);
          say(`${name}: disengaged and stopped`);
        } else say(`${name}: disengaged (process left running, idle)`);
        done.push(name);
      }
      return { ok: true, errorCode: '', errorMessage: '', poweredDown: done, disengages };
    } catch (e) {
      return { ok: false, errorCode: isBatonError(e) ? e.code : ErrorCode.INTERNAL, errorMessage: errorMessage(e), poweredDown: done, disengages };
    } finally {
      unlock();
    }
  }
}
