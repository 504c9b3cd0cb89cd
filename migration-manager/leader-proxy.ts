/**
 * The follower-to-leader proxy.
 *
 * Job: a follower runs an operation (disengage, engage, upgrade, power-down:
 * FORWARDED) on the leading manager and relays its progress and reply, so a
 * disengage started through either hash tier is the same single operation
 * (the leader's status machine refuses a second). A leader that dies midway
 * through a disengage is taken over by some manager; when that is this one,
 * the reply is the resumed disengage's (take-over.ts).
 *
 * Lifecycle: created with the manager; one connection to the leader per
 * forwarded request, closed when the request ends or the client goes away.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { MessageNet } from '../shared/io/stream.js';
import { parseAddress } from '../shared/io/address.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body, type Body, type DisengageReply } from '../shared/control/messages.js';
import { ErrorCode, isBatonError } from '../shared/errors.js';
import type { Logger } from '../shared/observability/logger.js';
import type { Counters } from '../shared/counters.js';
import { MGR } from './counters.js';

/** Operations only the leading manager runs; a follower forwards them. */
export const FORWARDED = new Set<string>(['disengageRequest', 'engageRequest', 'upgradeRequest', 'powerdownRequest']);

export interface LeaderProxyDeps {
  selfName: string;
  net: MessageNet;
  scheduler: Scheduler;
  counters: Counters;
  /** The leading manager as the store names it (the coordinator's leader()). */
  leader: () => Promise<{ name: string; controlAddr: string } | null>;
  /** The disengage of `target` this manager resumed after taking over, if it did. */
  awaitResumed: (target: string) => Promise<DisengageReply | null>;
  log: Logger;
}

export class LeaderProxy {
  constructor(private readonly d: LeaderProxyDeps) {}

  async forward(req: Body, client: ControlChannel): Promise<Body> {
    const d = this.d;
    const fail = (code: ErrorCode, message: string): Body => body('errorReply', { code, message });
    let leader: { name: string; controlAddr: string } | null;
    try {
      leader = await d.leader();
    } catch (e) {
      return fail(ErrorCode.STORE_UNAVAILABLE, `cannot find the leading manager: ${(e as Error).message}`);
    }
    if (!leader || leader.name === d.selfName) return fail(ErrorCode.NO_LEADER, `no manager leads the cluster right now (election under way); try again`);
    d.counters.inc(MGR.requests_forwarded);
    d.log.info('forwarding to the leader', { op: req.case, leader: leader.name });
    let ch: ControlChannel;
    try {
      ch = new ControlChannel(await d.net.connect(parseAddress(leader.controlAddr)), d.scheduler);
    } catch (e) {
      return fail(ErrorCode.CONNECTION_CLOSED, `cannot reach the leading manager ${leader.name} at ${leader.controlAddr}: ${(e as Error).message}`);
    }
    ch.onMessage((m) => {
      if (m.body.case === 'migrationProgress' || m.body.case === 'operationProgress') client.send(m.body);
    });
    client.onClose(() => ch.close());
    try {
      // The leader bounds the operation itself; a leader that dies closes the connection.
      return (await ch.request(req, 3_600_000)).body;
    } catch (e) {
      // The leader died midway through a disengage: this manager takes over
      // and resumes it; answer with the resumed disengage's result.
      if (req.case === 'disengageRequest') {
        const resumed = await d.awaitResumed(req.value.target);
        if (resumed) return body('disengageReply', resumed);
      }
      return fail(isBatonError(e) ? e.code : ErrorCode.REMOTE_ERROR, `the leading manager ${leader.name} did not answer: ${(e as Error).message}`);
    } finally {
      ch.close();
    }
  }
}
