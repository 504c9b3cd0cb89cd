/**
 * The member side of the control plane, shared by FDs and service nodes:
 * connect to the manager(s), register, heartbeat statistics, receive
 * versioned scope updates (applied only when newer: applying one twice, or
 * the same version from two managers, changes nothing), and reconnect with
 * backoff when a manager goes away.
 *
 * With several hash tiers (aggregation A and B) a member keeps one link to
 * each tier's manager: whichever leads already has its channel, heartbeats
 * and statistics when it takes over, and requests (disengage, sync) may come
 * from any of them; the reply and progress go back on the same link.
 */
import type { Scheduler, Timer } from '../runtime/scheduler.js';
import type { MessageNet } from '../io/stream.js';
import { formatAddress, type Address } from '../io/address.js';
import { ControlChannel } from '../control/channel.js';
import { body, type FlowStats, type NodeInfo, type ScopeUpdate, type EnvelopeObject, type Body } from '../control/messages.js';
import { getLogger, type Logger } from '../observability/logger.js';
import { BatonError, ErrorCode, errorCodeFromWire } from '../errors.js';

export interface MemberAgentOptions {
  node: NodeInfo;
  /** The manager, or every hash tier's manager. */
  manager: Address | Address[];
  net: MessageNet;
  scheduler: Scheduler;
  heartbeatMs: number;
  requestTimeoutMs: number;
  stats: () => FlowStats;
  counters?: () => Record<string, number>;
  onScope: (u: ScopeUpdate) => void;
  /** A manager link came up (registered) or went down: the member may re-pick its uplink tier (shared/cluster/uplink.ts). */
  onLinkChange?: () => void;
  /** Requests from a manager other than scope updates (disengage, sync); `from` is the link it came on. */
  onRequest?: (env: EnvelopeObject, from: ControlChannel) => Body | void | Promise<Body | void>;
  logger?: Logger;
}

/** One manager connection: register, heartbeat, reconnect. */
class ManagerLink {
  channel: ControlChannel | null = null;
  registered = false;
  /** The link was lost (closed, or a connection attempt failed) and is not registered again yet. */
  down = false;
  private hb: Timer | null = null;
  private retry: Timer | null = null;

  constructor(
    private readonly agent: MemberAgent,
    readonly manager: Address,
  ) {}

  async connect(): Promise<void> {
    try {
      await this.open();
    } catch (e) {
      this.down = true;
      throw e;
    }
  }

  private async open(): Promise<void> {
    const a = this.agent;
    const o = a.opts;
    const conn = await o.net.connect(this.manager);
    const ch = new ControlChannel(conn, o.scheduler, {
      onHandlerError: (err) => a.log.warn('control handler failed', { err: String(err) }),
    });
    this.channel = ch;
    ch.onMessage((env) => {
      if (env.body.case === 'scopeUpdate') a.applyScope(env.body.value);
    });
    ch.onRequest((env) => {
      if (env.body.case === 'scopeUpdate') {
        a.applyScope(env.body.value);
        return body('pong', {});
      }
      return o.onRequest?.(env, ch);
    });
    ch.onClose((reason) => {
      const was = this.registered;
      this.registered = false;
      this.down = true;
      this.hb?.cancel();
      this.hb = null;
      if (a.stopped) return;
      if (was) a.opts.onLinkChange?.();
      a.log.warn('manager connection closed; reconnecting', { manager: `${this.manager.host}:${this.manager.port}`, reason });
      this.scheduleReconnect(200);
    });
    const ack = await ch.request(body('register', { node: o.node }), o.requestTimeoutMs);
    if (ack.body.case !== 'registerAck' || !ack.body.value.accepted) {
      const v = ack.body.case === 'registerAck' ? ack.body.value : null;
      ch.close();
      throw new BatonError(ErrorCode.REMOTE_ERROR, `manager refused registration of ${o.node.name}: ${v?.errorCode ?? ack.body.case} ${v?.errorMessage ?? ''}`.trim(), {
        remoteCode: v ? errorCodeFromWire(v.errorCode) : ErrorCode.REMOTE_ERROR,
      });
    }
    this.registered = true;
    this.down = false;
    a.opts.onLinkChange?.();
    a.log.info('registered', { manager: `${this.manager.host}:${this.manager.port}`, scopeVersion: ack.body.value.scopeVersion });
    this.hb = o.scheduler.every(o.heartbeatMs, () => this.heartbeat());
  }

  scheduleReconnect(ms: number): void {
    if (this.retry) return;
    this.retry = this.agent.opts.scheduler.after(ms, () => {
      this.retry = null;
      if (this.agent.stopped) return;
      this.connect().catch((e: Error) => {
        if (this.agent.stopped) return;
        this.agent.log.debug('reconnect failed', { err: e.message });
        this.scheduleReconnect(Math.min(ms * 2, 2000));
      });
    });
  }

  heartbeat(): void {
    const ch = this.channel;
    if (!ch || ch.closed) return;
    const o = this.agent.opts;
    ch.send(
      body('heartbeat', {
        nodeId: o.node.id,
        stats: o.stats(),
        appliedScopeVersion: this.agent.scopeVersion,
        counters: o.counters?.() ?? {},
      }),
    );
  }

  stop(): void {
    this.retry?.cancel();
    this.hb?.cancel();
    this.channel?.close();
  }
}

export class MemberAgent {
  private appliedVersion = 0;
  /** @internal */ stopped = false;
  /** @internal */ readonly log: Logger;
  private readonly links: ManagerLink[];

  constructor(/** @internal */ readonly opts: MemberAgentOptions) {
    this.log = opts.logger ?? getLogger('member-agent');
    const managers = Array.isArray(opts.manager) ? opts.manager : [opts.manager];
    if (managers.length === 0) throw new BatonError(ErrorCode.BAD_ARGUMENT, 'a member needs at least one manager address');
    this.links = managers.map((m) => new ManagerLink(this, m));
  }

  get scopeVersion(): number {
    return this.appliedVersion;
  }

  /** The last scope update applied (null before the first). */
  get lastScope(): ScopeUpdate | null {
    return this.last;
  }
  private last: ScopeUpdate | null = null;

  /**
   * Is this member's link to the manager at `controlAddr` ("host:port") up?
   * true: connected and registered; false: lost (closed, or the last attempt
   * failed) and not back yet; undefined: no link to that address, or its
   * first connection is still being made. A tier whose process died shows
   * false at once (its connections close), well before its store lease runs
   * out.
   */
  linkUp(controlAddr: string): boolean | undefined {
    const l = this.links.find((x) => formatAddress(x.manager) === controlAddr);
    if (l === undefined) return undefined;
    if (l.registered && l.channel !== null && !l.channel.closed) return true;
    return l.down ? false : undefined;
  }

  /** Registered with at least one manager and connected to it. */
  get registered(): boolean {
    return this.links.some((l) => l.registered);
  }

  /**
   * Connects and registers with every manager; resolves once one accepted
   * (the others keep trying in the background). Rejects on a refusal (e.g. a
   * duplicate id) or when no manager can be reached.
   */
  async start(): Promise<void> {
    const results = await Promise.allSettled(this.links.map((l) => l.connect()));
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && r.reason instanceof BatonError && r.reason.code === ErrorCode.REMOTE_ERROR);
    if (refused) {
      this.stop();
      throw refused.reason;
    }
    if (!results.some((r) => r.status === 'fulfilled')) {
      const first = results[0] as PromiseRejectedResult;
      this.stop();
      throw first.reason;
    }
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.links[i]!.scheduleReconnect(200);
    });
  }

  /**
   * A request to a manager (this member asking something of the cluster, e.g.
   * a service node's own drain when it stops): sent on the first registered
   * link; a follower forwards it to the leader. Rejects CONNECTION_CLOSED
   * when no link is registered, else as ControlChannel.request.
   */
  request(b: Body, timeoutMs: number): Promise<EnvelopeObject> {
    const l = this.links.find((x) => x.registered && x.channel !== null && !x.channel.closed);
    if (!l) return Promise.reject(new BatonError(ErrorCode.CONNECTION_CLOSED, `${this.opts.node.name} is registered with no manager right now`));
    return l.channel!.request(b, timeoutMs);
  }

  /** Sends a heartbeat now to every manager (e.g. right after a big change in flow counts). */
  heartbeatNow(): void {
    for (const l of this.links) l.heartbeat();
  }

  /** @internal */
  applyScope(u: ScopeUpdate): void {
    if (u.version <= this.appliedVersion) return; // idempotent: same or older version changes nothing
    this.appliedVersion = u.version;
    this.last = u;
    this.opts.onScope(u);
  }

  stop(): void {
    this.stopped = true;
    for (const l of this.links) l.stop();
  }
}
