/**
 * The `baton up` launcher as the cluster's orchestrator: it registers with
 * the manager and carries out its stop / start / restart commands on the
 * processes it owns (rolling upgrade, power-down).
 */
import { RealScheduler } from '../shared/runtime/scheduler.js';
import { TcpNet } from '../shared/io/stream.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body } from '../shared/control/messages.js';
import type { Address } from '../shared/io/address.js';
import type { Launcher } from './launcher.js';
import type { Role } from './node-main.js';

export async function attachOrchestrator(launcher: Launcher, manager: Address, log: (msg: string) => void = () => {}): Promise<ControlChannel> {
  const ch = new ControlChannel(await new TcpNet().connect(manager), new RealScheduler());
  const roleOf = (name: string): Role | null =>
    launcher.cfg.fds.some((f) => f.name === name) ? 'fd' : launcher.cfg.services.some((s) => s.name === name) ? 'service' : null;
  ch.onRequest(async (env) => {
    if (env.body.case !== 'orchestratorCommand') return undefined;
    const { op, node } = env.body.value;
    const role = roleOf(node);
    if (!role) return body('orchestratorReply', { ok: false, errorMessage: `no FD or service node named ${node} in the config`, pid: 0 });
    try {
      if (op === 'stop' || op === 'restart') {
        log(`orchestrator: stopping ${node}`);
        await launcher.stopNode(node);
      }
      let pid = 0;
      if (op === 'start' || op === 'restart') {
        log(`orchestrator: starting ${node}`);
        pid = (await launcher.startNode(role, node)).pid;
      }
      if (op !== 'stop' && op !== 'start' && op !== 'restart') return body('orchestratorReply', { ok: false, errorMessage: `unknown op ${op}`, pid: 0 });
      return body('orchestratorReply', { ok: true, errorMessage: '', pid });
    } catch (e) {
      return body('orchestratorReply', { ok: false, errorMessage: (e as Error).message, pid: 0 });
    }
  });
  const r = await ch.request(body('orchestratorHello', { name: `launcher-${process.pid}` }), 5000);
  if (r.body.case !== 'pong') throw new Error(`manager refused the orchestrator (${r.body.case})`);
  return ch;
}
