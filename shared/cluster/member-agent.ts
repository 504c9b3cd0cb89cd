/**
 * The member side of the control plane, shared by FDs and service nodes:
 * connect to the manager, register, heartbeat statistics, receive versioned
 * scope updates (applied only when newer: applying one twice changes
 * nothing), and reconnect with backoff when the manager goes away.
 */
import type { Scheduler, Timer } from '../runtime/scheduler.js';
import type { MessageNet } from '../io/stream.js';
import type { Address } from '../io/address.js';
import { ControlChannel } from '../control/channel.js';
import { body, type FlowStats, type NodeInfo, type ScopeUpdate, type EnvelopeObject, type Body } from '../control/messages.js';
import { getLogger, type Logger } from '../observability/logger.js';
import { BatonError, ErrorCode } from '../errors.js';

export interface MemberAgentOptions {
  node: NodeInfo;
  manager: Address;
  net: MessageNet;
  scheduler: Scheduler;
  heartbeatMs: number;
  requestTimeoutMs: number;
  stats: () => FlowStats;
  counters?: () => Record<string, number>;
  onScope: (u: ScopeUpdate) => void;
  /** Requests from the manager other than scope updates (e.g. disengage, later). */
  onRequest?: (env: EnvelopeObject) => Body | void | Promise<Body | void>;
  logger?: Logger;
}

export class MemberAgent {
  private channel: ControlChannel | null = null;
  private hb: Timer | null = null;
  private appliedVersion = 0;
  private stopped = false;
  private retry: Timer | null = null;
  private readonly log: Logger;
  /** Registered with the manager and connected. */
  registered = false;

  constructor(private readonly o: MemberAgentOptions) {
    this.log = o.logger ?? getLogger('member-agent');
  }

  get scopeVersion(): number {
    return this.appliedVersion;
  }

  /** Connects and registers; resolves once registered (rejects on a refusal, e.g. a duplicate id). */
  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const o = this.o;
    const conn = await o.net.connect(o.manager);
    const ch = new ControlChannel(conn, o.scheduler, {
      onHandlerError: (err) => this.log.warn('control handler failed', { err: String(err) }),
    });
    this.channel = ch;
    ch.onMessage((env) => {
      if (env.body.case === 'scopeUpdate') this.applyScope(env.body.value);
    });
    ch.onRequest((env) => {
      if (env.body.case === 'scopeUpdate') {
        this.applyScope(env.body.value);
        return body('pong', {});
      }
      return o.onRequest?.(env);
    });
    ch.onClose((reason) => {
      this.registered = false;
      this.hb?.cancel();
      this.hb = null;
      if (this.stopped) return;
      this.log.warn('manager connection closed; reconnecting', { reason });
      this.scheduleReconnect(200);
    });
    const ack = await ch.request(body('register', { node: o.node }), o.requestTimeoutMs);
    if (ack.body.case !== 'registerAck' || !ack.body.value.accepted) {
      const v = ack.body.case === 'registerAck' ? ack.body.value : null;
      ch.close();
      this.stopped = true;
      throw new BatonError(ErrorCode.REMOTE_ERROR, `manager refused registration of ${o.node.name}: ${v?.errorCode ?? ack.body.case} ${v?.errorMessage ?? ''}`.trim());
    }
    this.registered = true;
    this.log.info('registered', { manager: `${o.manager.host}:${o.manager.port}`, scopeVersion: ack.body.value.scopeVersion });
    this.hb = o.scheduler.every(o.heartbeatMs, () => this.heartbeat());
  }

  private scheduleReconnect(ms: number): void {
    this.retry = this.o.scheduler.after(ms, () => {
      this.retry = null;
      if (this.stopped) return;
      this.connect().catch((e: Error) => {
        if (this.stopped) return;
        this.log.debug('reconnect failed', { err: e.message });
        this.scheduleReconnect(Math.min(ms * 2, 2000));
      });
    });
  }

  private heartbeat(): void {
    const ch = this.channel;
    if (!ch || ch.closed) return;
    ch.send(
      body('heartbeat', {
        nodeId: this.o.node.id,
        stats: this.o.stats(),
        appliedScopeVersion: this.appliedVersion,
        counters: this.o.counters?.() ?? {},
      }),
    );
  }

  /** Sends a heartbeat now (e.g. right after a big change in flow counts). */
  heartbeatNow(): void {
    this.heartbeat();
  }

  private applyScope(u: ScopeUpdate): void {
    if (u.version <= this.appliedVersion) return; // idempotent: same or older version changes nothing
    this.appliedVersion = u.version;
    this.o.onScope(u);
  }

  /** The live channel to the manager (for requests a member initiates). */
  get managerChannel(): ControlChannel | null {
    return this.channel;
  }

  stop(): void {
    this.stopped = true;
    this.retry?.cancel();
    this.hb?.cancel();
    this.channel?.close();
  }
}
