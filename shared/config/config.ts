/**
 * Baton's configuration: parsed and validated once (zod), with defaults that
 * run a local cluster with no file at all. A bad value is a
 * BatonError(CONFIG_INVALID) whose message names the field, e.g.
 *   config invalid: fds[1].dataPort: Too big: expected number to be <=65535
 */
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { BatonError, ErrorCode } from '../errors.js';
import { ipv4ToInt } from '../packet/meta.js';
import { isPrime } from '../scope/maglev.js';
import { DEFAULT_REBALANCE_ABOVE_PCT } from '../scope/scope-plan.js';
import { parseStoreUrl } from '../store/store.js';

/**
 * How a disengage picks the FDs that inherit the leaver's flows
 * (migration-client/inheritor-selector.ts implements them; `baton disengage
 * --policy`). The one list: config, CLI and selector take it from here.
 */
export const INHERITOR_POLICIES = ['least-flows', 'spread', 'named', 'random', 'hash-aligned'] as const;
export type InheritorPolicy = (typeof INHERITOR_POLICIES)[number];

const ipv4 = z.string().refine((s) => {
  try {
    ipv4ToInt(s);
    return true;
  } catch {
    return false;
  }
}, 'must be a dotted IPv4 address');
const port = z.number().int().min(0).max(65535);
const nodeId = z.number().int().min(1).max(65534);
const host = z.string().min(1).default('127.0.0.1');

const nodeBase = {
  id: nodeId,
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i, 'must be 1-63 letters, digits, . _ -'),
  host,
  dataPort: port.default(0),
  controlPort: port.default(0),
  /** Prometheus endpoint port; 0 = ephemeral. */
  metricsPort: port.default(0),
  /**
   * Address the Prometheus endpoint binds to: loopback unless the config
   * says otherwise (an admin surface stays local by default; a Prometheus
   * on another host needs the node's own address here).
   */
  metricsHost: z.string().min(1).default('127.0.0.1'),
};

/**
 * The underlay address a node uses toward real (unmodified) hosts: a hash
 * tier listens there for their edge encapsulation (docs/edge-encapsulation.md),
 * an FD sends to real servers from it. Absent: the node has no edge.
 */
const edgeHost = ipv4.optional();
const HashTierSchema = z.strictObject({ ...nodeBase, controlPort: port.default(7400), edgeHost });
/** The hash tier (aggregation switch) a node sends its egress and replies through; default the first. */
const uplink = z.string().optional();
const FdSchema = z.strictObject({ ...nodeBase, uplink, edgeHost });
const ServiceSchema = z.strictObject({ ...nodeBase, uplink, virtualIp: ipv4, virtualPort: z.number().int().min(1).max(65535).default(8080) });

/** A client table's slots: a power of two from 32 (hash-tier/client-table.ts PROBE_LIMIT) to 2^24. */
const clientTableCapacity = z
  .number()
  .int()
  .min(32)
  .max(1 << 24)
  .refine((n) => (n & (n - 1)) === 0, { message: 'must be a power of two' });

const defaultFds = [1, 2, 3].map((i) => ({ id: 10 + i, name: `fd-${i}` }));
const defaultServices = [1, 2, 3, 4].map((i) => ({ id: 20 + i, name: `svc-${i}`, virtualIp: `10.1.0.${i}` }));

export const ConfigSchema = z
  .strictObject({
    cluster: z
      .strictObject({
        vni: z.number().int().min(0).max(0xffffff).default(1),
        vip: ipv4.default('198.51.100.1'),
        services: z
          .array(
            z.strictObject({
              port: z.number().int().min(1).max(65535),
              proto: z.enum(['tcp', 'udp']),
              /**
               * What picks a new flow's backend: 'flow' (default) a hash of the 5-tuple; 'source' a hash of
               * the client address alone, so all of a client's connections to this port reach one backend
               * (iperf3's control and data connections must).
               */
              affinity: z.enum(['flow', 'source']).default('flow'),
              /**
               * What an established flow gets when its backend dies (a service node FAILED or
               * DISENGAGED, a real server DOWN; docs/disengage.md, "Dead backends"): 'rehome' moves it
               * to the backend a new flow would get now; 'reset' ends it (TCP: an RST to the client).
               * Default: 'reset' for TCP (a new backend has no state for the connection: a real server's
               * kernel would reset it anyway, one round trip later), 'rehome' for UDP.
               */
              onBackendDeath: z.enum(['reset', 'rehome']).optional(),
            })
            .transform((s) => ({ ...s, onBackendDeath: s.onBackendDeath ?? (s.proto === 'tcp' ? ('reset' as const) : ('rehome' as const)) })),
          )
          .min(1)
          .default([
            { port: 80, proto: 'tcp', affinity: 'flow', onBackendDeath: 'reset' },
            { port: 53, proto: 'udp', affinity: 'flow', onBackendDeath: 'rehome' },
          ]),
      })
      .prefault({}),
    hashTier: HashTierSchema.prefault({ id: 1, name: 'agg-a' }),
    /**
     * Several hash tiers (aggregation A, B, ...) sharing one cluster state in
     * a store; when given it replaces `hashTier`, whose value becomes the first.
     */
    hashTiers: z.array(HashTierSchema).min(1).max(8).optional(),
    /** Where membership, status and the scope live: embedded (in the manager), etcd://… or consul://… */
    store: z
      .strictObject({
        url: z
          .string()
          .default('embedded')
          .superRefine((u, ctx) => {
            try {
              parseStoreUrl(u);
            } catch (e) {
              ctx.addIssue({ code: 'custom', message: (e as Error).message });
            }
          }),
        /** Liveness of hash tiers and leadership in the store (etcd rounds up to whole seconds). */
        ttlMs: z.number().int().min(1000).default(2000),
        timeoutMs: z.number().int().min(100).default(3000),
      })
      .prefault({}),
    fds: z.array(FdSchema).min(1).prefault(defaultFds as never),
    services: z.array(ServiceSchema).prefault(defaultServices as never),
    /** Edge encapsulation ports: what real hosts' tunnel devices listen on and send to. */
    edge: z
      .strictObject({
        vxlanGpePort: port.min(1).default(4790),
        /** Optionless Geneve from real hosts (kernels with Geneve); 0 = off. */
        genevePort: port.default(0),
      })
      .prefault({}),
    /**
     * Real servers (running no Baton code) as the backends instead of Baton's
     * service nodes: the FDs rewrite the VIP to an endpoint's address (the
     * port kept) and send it in `encap` to the endpoint's tunnel port; only
     * endpoints that pass the TCP health check get new flows.
     */
    realServers: z
      .strictObject({
        encap: z.enum(['vxlan-gpe', 'geneve']).default('vxlan-gpe'),
        endpoints: z.array(z.strictObject({ host: ipv4, name: z.string().min(1).optional() })).min(1),
        health: z
          .strictObject({
            /** TCP port a connect probe opens on each endpoint. */
            port: port.min(1).default(80),
            intervalMs: z.number().int().min(10).default(500),
            timeoutMs: z.number().int().min(10).default(300),
            /** Consecutive passes that make a failed endpoint healthy again, and failures that make a healthy one fail. */
            rise: z.number().int().min(1).default(2),
            fall: z.number().int().min(1).default(2),
          })
          .prefault({}),
      })
      .optional(),
    hash: z
      .strictObject({
        seed: z.number().int().min(0).max(0xffffffff).default(0x5eed),
        // The refinement runs even when max failed: above it, no trial division (up to 2^53 it took 0.9 s).
        tableSize: z.number().int().min(3).max(1_000_003).refine((n) => n > 1_000_003 || isPrime(n), 'must be a prime number').default(65537),
        symmetric: z.boolean().default(false),
        /**
         * What the hash tier picks an FD by: 'five-tuple', or 'client' — the client's end of the flow
         * alone (address, port, protocol), so that a real server's reply, which names no owner,
         * reaches the FD that owns its flow (docs/edge-encapsulation.md). Default: 'client' with
         * realServers, else 'five-tuple'.
         */
        key: z.enum(['five-tuple', 'client']).optional(),
        /**
         * The hash scope keeps the FDs that left in its anchor, so a removal moves
         * only the leaver's buckets; once a member's share would be more than this
         * percentage off the mean, the anchor is reset (docs/hashing.md). 0: always
         * a plain Maglev table of the in-scope FDs.
         */
        rebalanceAbovePct: z.number().min(0).max(100).default(DEFAULT_REBALANCE_ABOVE_PCT),
        /** The hash tier sends a service node's reply to the FD its owner hint names (saves a redirect hop). */
        replyByOwnerHint: z.boolean().default(true),
      })
      .prefault({}),
    /**
     * Continuous flow-state replication (docs/failure.md): every FD sends the
     * entries of the connections it owns to each connection's backup FD (the
     * FD the scope without the owner picks for it), so that an FD that dies
     * takes no established flow with it.
     */
    replication: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Longest a change waits before it is sent (the bound on what a failure can lose of it). */
        lagMs: z.number().min(0.5).max(1000).default(5),
        /** Changes queued for sending, at most; beyond, the backups get a full resync instead (counted). */
        maxPendingChanges: z.number().int().min(64).max(1 << 22).default(1 << 16),
        /** Replicas a backup holds, at most (default: flowTable.maxFlows). */
        maxReplicas: z.number().int().min(16).max(16_000_000).optional(),
        /** Unacknowledged batches per backup, at most; more waits (and queues up to maxPendingChanges). */
        maxInFlight: z.number().int().min(1).max(4096).default(64),
        /** Every backup gets a full resync this often: replicas of flows that ended by idle expiry go (anti-entropy). */
        resyncEveryMs: z.number().int().min(100).default(60_000),
      })
      .prefault({}),
    flowTable: z
      .strictObject({
        maxFlows: z.number().int().min(16).max(16_000_000).default(262_144),
        idleMs: z.number().positive().default(120_000),
        /**
         * Entries an FD learned from a peer's ownership broadcast age out
         * after this idle time (default 10 x idleMs). Their owner announces
         * when its flow ends and re-announces every owned flow three times
         * within it, so only lost records wait for it.
         */
        learnedIdleMs: z.number().positive().optional(),
        /**
         * Flow entries of TCP connections in their handshake (SYN seen, no
         * ACK from the client yet) a table holds at most, the FD's own and
         * those it learned from its peers: each FD keeps its share (this / 2
         * entries per connection / FDs in scope) of its own and evicts the
         * oldest for a newer SYN (counted embryonic_evicted). Default a
         * quarter of maxFlows: a SYN flood cannot fill the table, and
         * established flows are never evicted.
         */
        maxEmbryonic: z.number().int().min(1).optional(),
        lingerMs: z.number().positive().default(2_000),
        /**
         * Hash seed of every FD's flow table. FDs that share it lay their
         * tables out in the same order, so a migrated table arrives in the
         * inheritor's slot order and its import walks memory sequentially
         * (docs/decisions/0007-shared-flow-table-seed.md). It also
         * keys the table against hash flooding, so keep it secret. Default:
         * random at each parse; `baton up` hands every node the same parsed
         * config. Nodes started from their own config files should all be
         * given the same value (any value works, mismatched ones are slower).
         */
        seed: z
          .number()
          .int()
          .min(0)
          .max(0xffffffff)
          .default(() => randomBytes(4).readUInt32LE(0)),
      })
      .prefault({}),
    /**
     * The hash tier's per-client state (hash-tier/client-table.ts), fixed-size
     * tables with counted eviction: the client underlay addresses it sends to,
     * each with its own TX lane (addrCapacity bounds those lanes: an evicted
     * address's lane is reused), and the client virtual IPs it learned, for
     * frames without a locator (capacity). An entry not seen for idleMs is
     * evicted by a sweep of sweepBudget slots per batch; a full table evicts
     * the least recently seen entry near the new one.
     */
    clientTable: z
      .strictObject({
        addrCapacity: clientTableCapacity.default(4096),
        capacity: clientTableCapacity.default(65_536),
        idleMs: z.number().int().min(1).default(300_000),
        sweepBudget: z.number().int().min(1).max(65_536).default(64),
      })
      .prefault({}),
    dataplane: z
      .strictObject({
        rxCapacity: z.number().int().min(16).default(4096),
        batchDatagrams: z.number().int().min(1).default(64),
        maxDatagramBytes: z.number().int().min(1500).max(65507).default(32768),
        /**
         * Datagram buffers of maxDatagramBytes each, allocated at start: all a
         * node's TX memory. A lane holds one while it has frames queued and a
         * buffer returns when its send completes (after the batch), so one
         * batch reaches at most txPoolBuffers destinations (past that:
         * tx_dropped_full) — with many clients, the hash tier's egress bound.
         */
        txPoolBuffers: z.number().int().min(8).default(512),
        hopLimit: z.number().int().min(1).max(255).default(4),
        socketBufferBytes: z.number().int().min(65536).default(8 * 1024 * 1024),
        /**
         * FDs verify TCP/UDP checksums of what they receive (a corrupt packet is
         * a counted drop instead of being forwarded). Off by default: like a
         * hardware load balancer, the FD forwards and the end host verifies
         * (rewrites update checksums incrementally, so a bad one stays bad).
         */
        verifyL4Checksum: z.boolean().default(false),
      })
      .prefault({}),
    /**
     * Admission control at the hash tier's ingress (hash-tier/admission.ts,
     * docs/loss-accounting.md "Overload"): the hash tier measures its receive
     * queue's delay with a self-probe every probeMs; above synAboveMs it
     * refuses client SYNs (TCP retries them), above shedAboveMs also new UDP
     * flows (refused by the FD), above dropAboveMs it drops client frames at
     * the head of the queue until the delay is back under half of it. All counted.
     */
    admission: z
      .strictObject({
        enabled: z.boolean().default(true),
        probeMs: z.number().min(1).max(1000).default(5),
        synAboveMs: z.number().positive().default(50),
        shedAboveMs: z.number().positive().default(200),
        dropAboveMs: z.number().positive().default(400),
        holdMs: z.number().min(0).default(200),
        trendMs: z.number().positive().default(100),
      })
      .refine((a) => a.shedAboveMs > a.synAboveMs, { message: 'shedAboveMs must be greater than synAboveMs', path: ['shedAboveMs'] })
      .refine((a) => a.dropAboveMs > a.shedAboveMs, { message: 'dropAboveMs must be greater than shedAboveMs', path: ['dropAboveMs'] })
      .prefault({}),
    control: z
      .strictObject({
        heartbeatMs: z.number().int().min(10).default(200),
        deadAfterMs: z.number().int().min(50).default(3000),
        /**
         * A member whose data plane answers no echo probe of the hash tier
         * for this long is declared FAILED even while its heartbeats go on
         * (docs/failure.md). Well above the overload bound (10 x
         * admission dropAboveMs): a queue that is only slow is not dead.
         */
        dataDeadAfterMs: z.number().int().min(100).default(10_000),
        ownershipFlushMs: z.number().min(0.1).default(1),
        requestTimeoutMs: z.number().int().min(10).default(5000),
      })
      .prefault({}),
    powerdown: z
      .strictObject({
        /** Run the power-down check on a schedule (every `everyMs`). */
        enabled: z.boolean().default(false),
        everyMs: z.number().int().min(100).default(60_000),
        thresholdPps: z.number().min(0).default(100),
        sustainMs: z.number().int().min(0).default(30_000),
        minActive: z.number().int().min(1).default(2),
        // Any policy but 'named', which needs an inheritor named for each disengage.
        policy: z.enum(INHERITOR_POLICIES).exclude(['named']).default('least-flows'),
        stopProcesses: z.boolean().default(true),
      })
      .prefault({}),
    operations: z
      .strictObject({
        timeoutMs: z.number().int().min(100).default(30_000),
        /**
         * A disengaged FD is DISENGAGED only once nothing reached it for this
         * long, with its rings and send queue empty and its kernel receive
         * queue empty (docs/disengage.md, "quiet"). The same default as
         * DEFAULT_QUIET_MS in migration-manager/operations.ts.
         */
        quietMs: z.number().int().min(1).max(60_000).default(100),
        /**
         * Bound of the wait until every hash tier and connected member runs the
         * scope without a disengaging FD (docs/disengage.md, step 5). The same
         * default as DEFAULT_SCOPE_ACK_TIMEOUT_MS in migration-manager/operations.ts.
         */
        scopeAckTimeoutMs: z.number().int().min(100).max(600_000).default(5000),
        /**
         * A service node that leaves (`baton disengage svc-N`, or SIGTERM of its
         * process) is drained (docs/disengage.md, "Service nodes"): FDs stop
         * choosing it for new flows but keep its route, and it is DISENGAGED
         * (its route removed) once no frame reached it for serviceQuietMs, or at
         * serviceDrainTimeoutMs whatever still arrives (then counted). A stopping
         * service process waits for that, bounded (serviceStopBoundMs).
         */
        serviceDrainTimeoutMs: z.number().int().min(100).max(3_600_000).default(30_000),
        serviceQuietMs: z.number().int().min(10).max(600_000).default(1000),
      })
      .refine((o) => o.serviceQuietMs < o.serviceDrainTimeoutMs, { message: 'serviceQuietMs must be less than serviceDrainTimeoutMs', path: ['serviceQuietMs'] })
      .prefault({}),
    log: z.strictObject({ level: z.enum(['error', 'warn', 'info', 'debug']).default('info') }).prefault({}),
  })
  .transform((c) => {
    const hashTiers = c.hashTiers ?? [c.hashTier];
    const hash = { ...c.hash, key: c.hash.key ?? (c.realServers ? 'client' : 'five-tuple') } as const;
    return { ...c, hashTiers, hashTier: hashTiers[0]!, hash };
  })
  .superRefine((c, ctx) => {
    const seen = new Map<number, string>();
    const names = new Set<string>();
    const all = [
      ...c.hashTiers.map((n, i) => [c.hashTiers.length > 1 ? `hashTiers[${i}]` : 'hashTier', n] as const),
      ...c.fds.map((n, i) => [`fds[${i}]`, n] as const),
      ...c.services.map((n, i) => [`services[${i}]`, n] as const),
    ];
    for (const [where, n] of all) {
      const prev = seen.get(n.id);
      if (prev) ctx.addIssue({ code: 'custom', path: [...where.replace(/\[(\d+)\]/, '.$1').split('.'), 'id'], message: `id ${n.id} is also used by ${prev}` });
      seen.set(n.id, where);
      if (names.has(n.name)) ctx.addIssue({ code: 'custom', path: [...where.replace(/\[(\d+)\]/, '.$1').split('.'), 'name'], message: `name ${JSON.stringify(n.name)} is used twice` });
      names.add(n.name);
    }
    if (c.fds.length >= c.hash.tableSize) ctx.addIssue({ code: 'custom', path: ['hash', 'tableSize'], message: 'must be larger than the number of FDs' });
    const ports = new Map<string, string>();
    c.hashTiers.forEach((t, i) => {
      if (t.controlPort === 0) return;
      const k = `${t.host}:${t.controlPort}`;
      if (ports.has(k)) ctx.addIssue({ code: 'custom', path: ['hashTiers', i, 'controlPort'], message: `${k} is also ${ports.get(k)}'s control address` });
      ports.set(k, t.name);
    });
    const tierNames = new Set(c.hashTiers.map((t) => t.name));
    for (const [list, key] of [[c.fds, 'fds'], [c.services, 'services']] as const) {
      list.forEach((n, i) => {
        if (n.uplink !== undefined && !tierNames.has(n.uplink)) ctx.addIssue({ code: 'custom', path: [key, i, 'uplink'], message: `${JSON.stringify(n.uplink)} is not a hash tier (have ${[...tierNames].join(', ')})` });
      });
    }
    if (c.services.length === 0 && !c.realServers) ctx.addIssue({ code: 'custom', path: ['services'], message: 'needs at least one service node, or realServers' });
    if (c.realServers && !c.fds.every((f) => f.edgeHost)) {
      const i = c.fds.findIndex((f) => !f.edgeHost);
      ctx.addIssue({ code: 'custom', path: ['fds', i, 'edgeHost'], message: 'realServers are reached from each FD\'s edgeHost: set it (the FD\'s underlay address)' });
    }
    const vips = new Set<string>();
    c.services.forEach((s, i) => {
      if (vips.has(s.virtualIp)) ctx.addIssue({ code: 'custom', path: ['services', i, 'virtualIp'], message: `${s.virtualIp} is used twice` });
      vips.add(s.virtualIp);
    });
  });

export type BatonConfig = z.infer<typeof ConfigSchema>;
export type NodeConfig = z.infer<typeof FdSchema>;
export type ServiceConfig = z.infer<typeof ServiceSchema>;

function formatPath(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' || /^\d+$/.test(String(p)) ? `[${String(p)}]` : s ? `.${String(p)}` : String(p);
  return s || '(root)';
}

/**
 * The same configuration with `tiers` hash tiers (aggregation A, B, ...: the
 * missing ones are added with free ids and the next control ports) and/or
 * another store URL — what `baton up --tiers N --store URL` runs. Validated.
 */
export function withTopology(cfg: BatonConfig, o: { tiers?: number; store?: string }): BatonConfig {
  const hashTiers = cfg.hashTiers.slice();
  const used = new Set([...cfg.hashTiers, ...cfg.fds, ...cfg.services].map((n) => n.id));
  const names = new Set(hashTiers.map((t) => t.name));
  for (let i = hashTiers.length; i < (o.tiers ?? hashTiers.length); i++) {
    let id = 1;
    while (used.has(id)) id++;
    used.add(id);
    let name = `agg-${String.fromCharCode(97 + i)}`;
    while (names.has(name)) name += 'x';
    names.add(name);
    const first = hashTiers[0]!;
    hashTiers.push({ ...first, id, name, dataPort: first.dataPort && first.dataPort + i, controlPort: first.controlPort && first.controlPort + i, metricsPort: first.metricsPort && first.metricsPort + i });
  }
  if (o.tiers !== undefined && o.tiers < hashTiers.length) hashTiers.length = Math.max(1, o.tiers);
  const raw = { ...cfg, hashTier: hashTiers[0], hashTiers, store: { ...cfg.store, ...(o.store ? { url: o.store } : {}) } };
  const out = parseConfig(raw, o.tiers !== undefined || o.store ? 'config with --tiers/--store' : 'config');
  checkSharedStore(out);
  return out;
}

/**
 * Hash tiers in separate processes share their cluster state through etcd or
 * Consul: an embedded store lives in one process. (Simulations run several
 * tiers in one process on one in-memory backend and do not call this.)
 */
export function checkSharedStore(cfg: BatonConfig): void {
  if (cfg.hashTiers.length > 1 && parseStoreUrl(cfg.store.url).kind === 'memory') {
    throw new BatonError(ErrorCode.CONFIG_INVALID, `config invalid: store.url: ${cfg.hashTiers.length} hash tiers share their cluster state through etcd or Consul; an embedded store lives in one process (e.g. --store etcd://127.0.0.1:2379)`);
  }
}

/** Validates a plain object (from JSON/YAML or code). Throws BatonError(CONFIG_INVALID). */
export function parseConfig(raw: unknown, source = 'config'): BatonConfig {
  const r = ConfigSchema.safeParse(raw ?? {});
  if (!r.success) {
    const lines = r.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
    throw new BatonError(ErrorCode.CONFIG_INVALID, `${source} invalid: ${lines.join('; ')}`, { issues: lines });
  }
  return r.data;
}

/** Reads a .json, .yaml or .yml file and validates it; no path = all defaults. */
export function loadConfig(path?: string): BatonConfig {
  if (!path) return parseConfig({});
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new BatonError(ErrorCode.CONFIG_INVALID, `cannot read config file ${path}: ${(e as Error).message}`, undefined, { cause: e });
  }
  let raw: unknown;
  try {
    raw = /\.ya?ml$/i.test(path) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new BatonError(ErrorCode.CONFIG_INVALID, `${path} is not valid ${/\.ya?ml$/i.test(path) ? 'YAML' : 'JSON'}: ${(e as Error).message}`, undefined, { cause: e });
  }
  return parseConfig(raw, path);
}
