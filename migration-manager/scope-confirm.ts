/**
 * The leader's confirmation of a scope version across the cluster, the asking side.
 *
 * Job: `confirm()` waits at most `timeoutMs` until every hash tier and every
 * member runs scope `version` or a newer one. Members get the current
 * ScopeUpdate as a request (their Pong says they applied it, or a newer one);
 * other tiers are asked the same over a control connection (kept here, one
 * per control address) and answer once their engine runs it (scope-ack.ts).
 * Not waited for (and listed as skipped): FAILED members, members not
 * connected to this manager (they get the current scope when they register
 * again, before anything else), tiers whose control address refuses
 * connections (their process, and so their forwarding engine, does not run).
 * Everything else that does not answer in time is a failure.
 *
 * Lifecycle: created with the manager; tier connections open on the first
 * confirmation that needs them, are dropped when they close, and `stop()`
 * closes them with the manager.
 */
import type { Scheduler } from '../shared/runtime/scheduler.js';
import type { MessageNet } from '../shared/io/stream.js';
import { parseAddress } from '../shared/io/address.js';
import { ControlChannel } from '../shared/control/channel.js';
import { body, MemberStatus } from '../shared/control/messages.js';
import { BatonError, ErrorCode, isBatonError } from '../shared/errors.js';
import type { Logger } from '../shared/observability/logger.js';
import type { Counters } from '../shared/counters.js';
import { MGR } from './counters.js';
import type { Registry } from './registry.js';
import type { ScopeConfirmation } from './operations.js';

export interface ScopeConfirmDeps {
  selfName: string;
  net: MessageNet;
  scheduler: Scheduler;
  registry: Registry;
  counters: Counters;
  /** The control channel of a registered member. */
  channelTo: (id: number) => ControlChannel | undefined;
  log: Logger;
}

export class ScopeConfirm {
  /** Leader: control channels to the other hash tiers (scope acknowledgements), by control address. */
  private readonly tierChannels = new Map<string, ControlChannel>();

  constructor(private readonly d: ScopeConfirmDeps) {}

  private async tierChannel(addr: string, timeoutMs: number): Promise<ControlChannel> {
    const have = this.tierChannels.get(addr);
    if (have && !have.closed) return have;
    const conn = await new Promise<Awaited<ReturnType<MessageNet['connect']>>>((resolve, reject) => {
      const timer = this.d.scheduler.after(timeoutMs, () => reject(new BatonError(ErrorCode.TIMEOUT, `no connection within ${timeoutMs} ms`)));
      this.d.net.connect(parseAddress(addr)).then(
        (c) => {
          timer.cancel();
          resolve(c);
        },
        (e: Error) => {
          timer.cancel();
          reject(new BatonError(ErrorCode.CONNECTION_CLOSED, e.message, undefined, { cause: e }));
        },
      );
    });
    const ch = new ControlChannel(conn, this.d.scheduler);
    this.tierChannels.set(addr, ch);
    ch.onClose(() => {
      if (this.tierChannels.get(addr) === ch) this.tierChannels.delete(addr);
    });
    return ch;
  }

  async confirm(version: number, timeoutMs: number): Promise<ScopeConfirmation> {
    const d = this.d;
    const acked: string[] = [d.selfName]; // this tier's engine was installed with the scope
    const skipped: string[] = [];
    const failed: { name: string; why: string }[] = [];
    const update = d.registry.scopeUpdate();
    const asks: Promise<void>[] = [];
    const ask = (name: string, ch: ControlChannel): Promise<void> =>
      ch.request(body('scopeUpdate', update), Math.max(1, timeoutMs)).then(
        (r) => {
          if (r.body.case === 'pong') acked.push(name);
          else failed.push({ name, why: `answered ${r.body.case}` });
        },
        (e: Error) => {
          failed.push({ name, why: isBatonError(e) && e.details?.['remoteMessage'] ? String(e.details['remoteMessage']) : e.message });
        },
      );
    for (const t of d.registry.otherTiers()) {
      if (!t.controlAddr) {
        skipped.push(`${t.name} (no control address)`);
        continue;
      }
      asks.push(
        this.tierChannel(t.controlAddr, timeoutMs).then(
          (ch) => ask(t.name, ch),
          (e: BatonError) => {
            if (e.code === ErrorCode.CONNECTION_CLOSED) skipped.push(`${t.name} (not running: ${e.message})`);
            else failed.push({ name: t.name, why: e.message });
          },
        ),
      );
    }
    for (const m of d.registry.all()) {
      const ch = d.channelTo(m.info.id);
      if (m.machine.status === MemberStatus.FAILED) skipped.push(`${m.info.name} (FAILED)`);
      else if (!ch || ch.closed) skipped.push(`${m.info.name} (not connected)`);
      else asks.push(ask(m.info.name, ch));
    }
    await Promise.all(asks);
    d.counters.inc(MGR.scope_acks, acked.length);
    d.counters.inc(MGR.scope_acks_skipped, skipped.length);
    d.counters.inc(MGR.scope_ack_failures, failed.length);
    if (skipped.length > 0) d.log.warn('scope acknowledgements: not waited for', { version, skipped });
    if (failed.length > 0) d.log.warn('scope acknowledgements missing', { version, failed });
    return { acked, skipped, failed };
  }

  stop(): void {
    for (const ch of this.tierChannels.values()) ch.close();
  }
}
