/**
 * The `baton up` launcher as the cluster's orchestrator: it registers with
 * the manager and carries out its stop / start / restart commands on the
 * processes it owns (rolling upgrade, power-down).
 *
 * A start or restart runs the build the command names (the UpgradeRequest's
 * `bundle` or `command`); a restart that names none runs the sources as they
 * are now (bundled again: content-named, so unchanged sources reuse the same
 * file), a start that names none what the launcher ran last. The build is
 * checked (`<entry> version --json`, once per distinct build) BEFORE the old
 * process is stopped, so a bad build leaves the node running what it ran; the
 * reply carries the build id the new process reported in its READY line, and
 * the launcher starts later nodes from that build too.
 */
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TcpNet } from '../shared/io/stream.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body, type OrchestratorCommand } from '../shared/control/messages.js';
import type { Address } from '../shared/io/address.js';
import type { Launcher } from './launcher.js';
import type { Role } from './node-main.js';
import { upgradeEntry, type NodeEntry, type ProbeCache } from './node-bundle.js';
import { BatonError, ErrorCode } from '../shared/errors.js';

function entryFor(launcher: Launcher, cmd: OrchestratorCommand, cache: ProbeCache): Promise<NodeEntry> {
  const build = { bundle: cmd.bundle ?? '', command: cmd.command ?? [] };
  if (!build.bundle && build.command.length === 0 && cmd.op === 'start') return launcher.defaultEntry();
  return upgradeEntry(build, { cache }); // neither named: the sources as they are now
}

export async function attachOrchestrator(launcher: Launcher, manager: Address, log: (msg: string) => void = () => {}): Promise<ControlChannel> {
  const ch = new ControlChannel(await new TcpNet().connect(manager), new RealScheduler());
  const cache: ProbeCache = new Map();
  const roleOf = (name: string): Role | null =>
    launcher.cfg.fds.some((f) => f.name === name) ? 'fd' : launcher.cfg.services.some((s) => s.name === name) ? 'service' : null;
  const refuse = (errorMessage: string) => body('orchestratorReply', { ok: false, errorMessage, pid: 0, version: '' });
  ch.onRequest(async (env) => {
    if (env.body.case !== 'orchestratorCommand') return undefined;
    const cmd = env.body.value;
    const { op, node } = cmd;
    const role = roleOf(node);
    if (!role) return refuse(`no FD or service node named ${node} in the config`);
    if (op !== 'stop' && op !== 'start' && op !== 'restart') return refuse(`unknown op ${op}`);
    try {
      // The build first: a bad one must not cost the node its running process.
      const entry = op === 'stop' ? null : await entryFor(launcher, cmd, cache);
      if (op === 'stop' || op === 'restart') {
        log(`orchestrator: stopping ${node}`);
        await launcher.stopNode(node);
      }
      if (!entry) return body('orchestratorReply', { ok: true, errorMessage: '', pid: 0, version: '' });
      log(`orchestrator: starting ${node} (${entry.version ?? 'build not probed'})`);
      const started = await launcher.startNode(role, node, entry);
      launcher.setDefaultEntry(entry);
      return body('orchestratorReply', { ok: true, errorMessage: '', pid: started.pid, version: started.version ?? '' });
    } catch (e) {
      return refuse((e as Error).message);
    }
  });
  const r = await ch.request(body('orchestratorHello', { name: `launcher-${process.pid}` }), 5000);
  if (r.body.case !== 'pong') throw new BatonError(ErrorCode.REMOTE_ERROR, `manager refused the orchestrator (${r.body.case})`);
  return ch;
}
