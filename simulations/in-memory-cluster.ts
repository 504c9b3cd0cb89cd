/**
 * A whole Baton cluster in one process on virtual time: the same HashTierNode,
 * FdNode and ServiceMember code as the real processes, wired to an in-memory
 * datagram network and in-memory control connections, all driven by one
 * deterministic VirtualScheduler.
 */
import { VirtualScheduler } from '../shared/runtime/scheduler.js';
import { MemoryNetwork } from '../shared/io/datagram.js';
import { MemoryMessageNet } from '../shared/io/stream.js';
import type { Address } from '../shared/io/address.js';
import { parseConfig, type BatonConfig } from '../shared/config/config.js';
import { HashTierNode } from '../nodes/hash-tier-node.js';
import { FdNode } from '../nodes/fd-node.js';
import type { NodeIo } from '../shared/io/node-io.js';
import { ServiceMember } from '../nodes/service-member.js';
import { MemoryBackend, MemoryStore } from '../shared/store/memory.js';

export class InMemoryCluster {
  readonly scheduler: VirtualScheduler;
  readonly net: MemoryNetwork;
  readonly messages: MemoryMessageNet;
  readonly io: NodeIo;
  readonly cfg: BatonConfig;
  /** The first hash tier (aggregation A); all of them in `hashTiers`. */
  hashTier!: HashTierNode;
  readonly hashTiers: HashTierNode[] = [];
  /** One control address per hash tier (what members connect to). */
  managers: Address[] = [];
  readonly fds: FdNode[] = [];
  readonly services: ServiceMember[] = [];
  hashTierData!: Address;
  manager!: Address;

  constructor(raw: unknown = {}, latencyMs = 0.05) {
    this.cfg = parseConfig(raw);
    this.scheduler = new VirtualScheduler(0);
    this.net = new MemoryNetwork(this.scheduler, latencyMs);
    this.messages = new MemoryMessageNet(this.scheduler);
    this.io = { scheduler: this.scheduler, datagrams: this.net, messages: this.messages };
  }

  /**
   * Advances virtual time in small steps, letting promise continuations run
   * between steps, until `cond()` holds or `limitMs` of virtual time passed.
   */
  async runUntil(cond: () => boolean, limitMs: number, stepMs = 1): Promise<boolean> {
    const end = this.scheduler.clock.now() + limitMs;
    for (;;) {
      await settle();
      if (cond()) return true;
      if (this.scheduler.clock.now() >= end) return false;
      this.scheduler.runFor(stepMs);
    }
  }

  async runFor(ms: number, stepMs = 1): Promise<void> {
    await this.runUntil(() => false, ms, stepMs);
  }

  /** Starts a promise while pumping virtual time until it settles. */
  async drive<T>(p: Promise<T>, limitMs = 10_000): Promise<T> {
    let done = false;
    let value: T | undefined;
    let error: unknown;
    p.then(
      (v) => {
        done = true;
        value = v;
      },
      (e) => {
        done = true;
        error = e;
      },
    );
    await this.runUntil(() => done, limitMs);
    if (!done) throw new Error(`did not settle within ${limitMs} ms of virtual time`);
    // eslint-disable-next-line @typescript-eslint/only-throw-error -- the driven promise's own rejection, passed on as it was
    if (error !== undefined) throw error;
    return value as T;
  }

  async start(): Promise<void> {
    // Several tiers share one in-memory store backend (as they would share etcd).
    const backend = this.cfg.hashTiers.length > 1 ? new MemoryBackend(this.scheduler) : null;
    for (const t of this.cfg.hashTiers) {
      const store = backend ? new MemoryStore({ backend, scheduler: this.scheduler }) : undefined;
      const node = new HashTierNode(this.cfg, this.io, t.name, store);
      const { control } = await this.drive(node.start());
      this.hashTiers.push(node);
      this.managers.push(control);
    }
    this.hashTier = this.hashTiers[0]!;
    this.hashTierData = this.hashTier.engine.dp.socket.address;
    this.manager = this.managers[0]!;
    if (backend) {
      const ok = await this.runUntil(() => this.hashTier.manager.isLeader, 10_000);
      if (!ok) throw new Error('no hash tier was elected');
    }
    const control = this.managers;
    for (const s of this.cfg.services) {
      const m = new ServiceMember(this.cfg, s, this.io, control);
      await this.drive(m.start());
      this.services.push(m);
    }
    for (const f of this.cfg.fds) {
      const n = new FdNode(this.cfg, f, this.io, control);
      await this.drive(n.start());
      this.fds.push(n);
    }
    // Converged: every member applied the latest scope and the engine has all FDs.
    const ok = await this.runUntil(() => this.converged(), 5_000);
    if (!ok) throw new Error('in-memory cluster did not converge');
  }

  converged(): boolean {
    const v = this.hashTier.manager.registry.scopeVersion;
    return (
      this.hashTier.engine.scope?.members.length === this.cfg.fds.length &&
      this.hashTiers.every((h) => h.engine.scope?.version === v) &&
      this.fds.every((f) => f.agent.scopeVersion === v) &&
      this.services.every((s) => s.agent.scopeVersion === v && s.node !== null)
    );
  }

  async stop(): Promise<void> {
    for (const f of this.fds) await f.stop();
    for (const s of this.services) await s.stop({ drain: false }); // a teardown: no drain (it would wait on virtual time)
    for (const h of this.hashTiers) await h.stop();
  }
}

function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
