/**
 * The Baton command line (commander).
 *   baton up        start the local cluster (hash tier, FDs, service nodes) as processes
 *   baton status    the manager's view: node, role, status, flows, RX/TX depth, pps
 *   baton traffic   verified traffic against a running cluster
 *   baton upgrade   rolling upgrade of every FD to the current sources, a bundle or a command
 *   baton build     bundle the current sources (a build `upgrade --bundle` can name)
 *   baton version   this build's id
 *   baton lab       network namespaces with real clients and servers around Baton (docs/lab.md)
 */
import { Command, Option, InvalidArgumentError } from 'commander';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadConfig, withTopology, INHERITOR_POLICIES, type BatonConfig } from '../shared/config/config.js';
import { parseAddress, type Address } from '../shared/io/address.js';
import { BatonError, ErrorCode, isBatonError } from '../shared/errors.js';
import { Launcher, type LaunchedNode } from './launcher.js';
import { fetchStatus, formatStatus, statusRows } from './status.js';
import { trafficAgainst, progressLine } from './traffic-cmd.js';
import { formatReport } from '../traffic/report.js';
import type { TrafficOptions } from '../traffic/options.js';
import type { Role } from './node-main.js';
import { operation, progressBar, formatDisengage, formatEngage, body, disengageRequest } from './operations-cmd.js';
import { attachOrchestrator } from './orchestrator.js';
import { realDemo, realDemoUnavailable, syntheticDemo } from './demo.js';
import { buildInfo } from '../shared/build-info.js';
import { buildNodeBundle, describeEntry, probeEntry, upgradeEntry } from './node-bundle.js';
import { addLabCommands } from './lab-cmd.js';

function num(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a number in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

function managerOf(cfg: BatonConfig, opt?: string): Address {
  return opt ? parseAddress(opt) : { host: cfg.hashTier.host, port: cfg.hashTier.controlPort };
}

function trafficOptions(o: Record<string, unknown>): TrafficOptions {
  const t: TrafficOptions = {
    concurrency: o.flows as number,
    totalFlows: 10_000_000, // effectively unbounded: --duration ends the run
    packetsPerFlow: o.packetsPerFlow as number,
    udpRatio: o.udpRatio as number,
    durationMs: (o.duration as number) * 1000,
    payloadSize: o.payload as number,
  };
  if (o.rate !== undefined) t.ratePps = o.rate as number;
  return t;
}

const program = new Command();
program.name('baton').description('Baton: a cluster flow distributor whose nodes can leave without dropping a packet').showHelpAfterError();

const configOpt = () => new Option('-c, --config <file>', 'config file (JSON or YAML); defaults apply without one');

function addTrafficOptions(c: Command): Command {
  return c
    .option('--flows <k>', 'concurrent flows', num('--flows', 1, 100_000), 64)
    .option('--packets-per-flow <n>', 'data packets per flow', num('--packets-per-flow', 1), 200)
    .option('--udp-ratio <r>', 'fraction of UDP flows', num('--udp-ratio', 0, 1), 0.5)
    .option('--rate <pps>', 'target packets per second (default: as fast as a window of 256 allows)', num('--rate', 1))
    .option('--payload <bytes>', 'payload bytes per data packet (>= 20)', num('--payload', 20, 1400), 64);
}

const up = program
  .command('up')
  .description('start the local cluster as processes; Ctrl-C stops it')
  .addOption(configOpt())
  .option('--run-dir <dir>', 'where node logs and the resolved config go')
  .option('--tiers <n>', 'hash tiers (aggregation A, B, ...); more than one needs --store etcd://… or consul://…', num('--tiers', 1, 8))
  .option('--store <url>', 'cluster-state store: embedded (default), etcd://host:port[,host:port][/cluster], consul://host:port[/cluster]')
  .option('--demo <seconds>', 'run traffic for this long with a live disengage and engage of an FD, print what was seen, stop the cluster and exit: real clients and servers in the lab (docs/lab.md) when it can be built here (root, VXLAN-GPE, iperf3), else verified synthetic traffic', num('--demo', 1, 3600))
  .option('--json', 'with --demo: print the report as JSON');
addTrafficOptions(up).action(async (o) => {
  const cfg = withTopology(loadConfig(o.config), { tiers: o.tiers, store: o.store });
  if (o.demo !== undefined) {
    const why = cfg.hashTiers.length > 1 ? 'the real-traffic demo runs one hash tier' : await realDemoUnavailable((l) => console.log(l));
    if (why === null) process.exit(await realDemo(cfg, o.demo, (l) => console.log(l)));
    console.log(`not using real traffic (${why}): Baton's own verified synthetic traffic instead`);
  }
  const runDir = o.runDir ?? join(tmpdir(), `baton-${process.pid}`);
  const launcher = new Launcher(cfg, { runDir });
  let stopping = false;
  const stop = async (code: number): Promise<never> => {
    if (!stopping) {
      stopping = true;
      console.log('stopping the cluster…');
      await launcher.down();
    }
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(130));
  process.on('SIGTERM', () => void stop(143));
  const tiers = cfg.hashTiers.length;
  console.log(`starting ${tiers} hash tier${tiers > 1 ? 's' : ''}, ${cfg.fds.length} FDs, ${cfg.services.length} service nodes, store ${cfg.store.url} (logs: ${runDir})`);
  try {
    await launcher.up();
  } catch (e) {
    console.error((e as Error).message);
    await stop(1);
  }
  printNodes([...launcher.nodes.values()]);
  const manager = parseAddress(launcher.managerAddress);
  // Every tier's manager may lead (now or after a take-over): each gets the orchestrator.
  for (const m of launcher.managerAddresses) await attachOrchestrator(launcher, parseAddress(m), (msg) => console.log(msg));
  if (o.demo === undefined) {
    console.log(`\ncluster up. Try: npm run baton -- status --manager ${launcher.managerAddress}   |   npm run baton -- traffic --manager ${launcher.managerAddress} --duration 5\nCtrl-C stops it.`);
    return; // children keep the event loop alive until a signal
  }
  console.log(`\nrunning verified traffic for ${o.demo} s, with a live disengage and engage of ${cfg.fds[0]?.name ?? 'an FD'}…`);
  // The loss books (docs/loss-accounting.md): every frame the client got no answer for, counted by a node or a link.
  const code = await syntheticDemo(cfg, launcher, manager, trafficOptions({ ...o, duration: o.demo }), o.demo, o.json === true, (l) => console.log(l), (p) => console.log(progressLine(p)));
  await stop(code);
});

program
  .command('status')
  .description("print the manager's view of the cluster")
  .addOption(configOpt())
  .option('--manager <host:port>', 'manager control address (default: from the config)')
  .option('--json', 'print JSON')
  .action(async (o) => {
    const cfg = loadConfig(o.config);
    const s = await fetchStatus(managerOf(cfg, o.manager));
    console.log(o.json ? JSON.stringify({ scopeVersion: s.scopeVersion, nodes: statusRows(s) }, null, 2) : formatStatus(s));
  });

const traffic = program
  .command('traffic')
  .description('send verified traffic through a running cluster and report loss, duplicates, reordering and latency')
  .addOption(configOpt())
  .option('--manager <host:port>', 'manager control address (default: from the config)')
  .option('--duration <seconds>', 'how long to send', num('--duration', 0.1, 86400), 10)
  .option('--all-tiers', 'spread the clients over every hash tier (client i enters through tier i mod n)')
  .option('--json', 'print the report as JSON');
addTrafficOptions(traffic).action(async (o) => {
  const cfg = loadConfig(o.config);
  const report = await trafficAgainst(cfg, managerOf(cfg, o.manager), trafficOptions(o), (p) => {
    if (!o.json) console.log(progressLine(p));
  }, o.allTiers === true);
  console.log(o.json ? JSON.stringify(report, null, 2) : formatReport(report));
  process.exitCode = report.ok ? 0 : 1;
});

program
  .command('disengage <node>')
  .description('an FD: move its flows to inheritors with zero packet loss, then take it out of the hash scope; a service node: send it no new flow and wait until its flows are done (quiet), then remove its route')
  .addOption(configOpt())
  .option('--manager <host:port>', 'manager control address (default: from the config)')
  .addOption(new Option('--policy <policy>', 'inheritor selection').choices([...INHERITOR_POLICIES]).default('least-flows'))
  .option('--inheritor <fd>', 'with --policy named: the inheritor')
  .option('--backup <fd>', 'a backup inheritor that also receives the entries')
  .option('--timeout <seconds>', 'how long the manager waits for the confirmation', num('--timeout', 0.1, 3600), 30)
  .option('--json', 'print the summary as JSON')
  .action(async (fd: string, o) => {
    const cfg = loadConfig(o.config);
    const tty = process.stdout.isTTY && !o.json;
    const req = disengageRequest(fd, { policy: o.policy, inheritor: o.inheritor, backup: o.backup, timeoutMs: Math.round(o.timeout * 1000) });
    let last = '';
    const r = await operation(managerOf(cfg, o.manager), req, o.timeout * 1000 + 5000, ({ migration }) => {
      if (!migration || o.json) return;
      last = progressBar(migration);
      if (tty) process.stdout.write(`\r${last}\x1b[K`);
      else console.log(last);
    });
    if (tty && last) process.stdout.write('\n');
    if (r.case !== 'disengageReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `manager answered ${r.case}`);
    console.log(o.json ? JSON.stringify(r.value, null, 2) : formatDisengage(r.value));
    process.exitCode = r.value.ok ? 0 : 1;
  });

program
  .command('engage <node>')
  .description('(re-)add a disengaged FD (it learns its peers\' flows, then the scope grows; existing flows keep their owner) or service node (new flows may go to it again)')
  .addOption(configOpt())
  .option('--manager <host:port>', 'manager control address (default: from the config)')
  .option('--timeout <seconds>', 'how long to wait', num('--timeout', 0.1, 3600), 30)
  .action(async (fd: string, o) => {
    const cfg = loadConfig(o.config);
    const r = await operation(managerOf(cfg, o.manager), body('engageRequest', { target: fd, timeoutMs: Math.round(o.timeout * 1000) }), o.timeout * 1000 + 5000, () => {});
    if (r.case !== 'engageReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `manager answered ${r.case}`);
    console.log(formatEngage(fd, r.value));
    process.exitCode = r.value.ok ? 0 : 1;
  });

program
  .command('upgrade')
  .description('rolling upgrade: disengage each FD (k at a time), restart its process on the new build, engage it again')
  .addOption(configOpt())
  .option('--manager <host:port>', 'manager control address (default: from the config)')
  .option('--batch <k>', 'FDs upgraded at the same time', num('--batch', 1, 1000), 1)
  .addOption(new Option('--policy <policy>', 'inheritor selection for each disengage').choices([...INHERITOR_POLICIES]).default('hash-aligned'))
  .option('--timeout <seconds>', 'per step', num('--timeout', 1, 3600), 60)
  .option('--bundle <file>', 'restart FDs from this node bundle (e.g. from `baton build`); default: bundle the sources as they are now')
  .option('--command <argv>', 'restart FDs with this command running `baton` (split on spaces, no shell), e.g. "node /opt/baton-2/bin/baton.js"')
  .option('--json', 'print the result as JSON')
  .action(async (o) => {
    const cfg = loadConfig(o.config);
    // The build, checked once before the manager is asked: it must run and print a build id.
    const entry = await upgradeEntry({ bundle: o.bundle, command: o.command !== undefined ? [o.command] : [] });
    const build = entry.bundle ? { bundle: entry.bundle, command: [] } : { bundle: '', command: [entry.exec, ...entry.args] };
    if (!o.json) console.log(`upgrading FDs to build ${entry.version} (${describeEntry(entry)})`);
    const req = body('upgradeRequest', { batch: o.batch, policy: o.policy, timeoutMs: Math.round(o.timeout * 1000), ...build });
    const r = await operation(managerOf(cfg, o.manager), req, 24 * 3600 * 1000, ({ operation: p, migration }) => {
      if (o.json) return;
      if (p) console.log(p.message);
      else if (migration && migration.phase === 'done') console.log(progressBar(migration));
    });
    if (r.case !== 'upgradeReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `manager answered ${r.case}`);
    const v = r.value;
    if (o.json) console.log(JSON.stringify(v, null, 2));
    else {
      for (const d of v.disengages) console.log(formatDisengage(d));
      console.log(v.ok ? `upgrade done: ${v.upgraded.join(', ')} in ${(v.durationMs / 1000).toFixed(1)} s` : `upgrade FAILED [${v.errorCode}]: ${v.errorMessage} (upgraded so far: ${v.upgraded.join(', ') || 'none'})`);
    }
    process.exitCode = v.ok ? 0 : 1;
  });

program
  .command('build')
  .description('bundle the current sources into node_modules/.cache/baton (content-named); print the file and its build id')
  .option('--tag <tag>', 'a label in the build id (<package>-<tag>+<hash>)')
  .option('--out-dir <dir>', 'where the bundle goes (it resolves npm packages from the node_modules above it)')
  .option('--json', 'print JSON')
  .action(async (o) => {
    const entry = await probeEntry(await buildNodeBundle({ tag: o.tag, outDir: o.outDir }), o.outDir ? '--out-dir' : 'the new bundle');
    console.log(o.json ? JSON.stringify({ bundle: entry.bundle, version: entry.version }) : `${entry.bundle}\nbuild ${entry.version}\nupgrade to it: npm run baton -- upgrade --bundle ${entry.bundle}`);
  });

program
  .command('version')
  .description("print this build's id (package version, tag, bundle content hash)")
  .option('--json', 'print JSON')
  .action((o) => {
    const b = buildInfo();
    console.log(o.json ? JSON.stringify(b) : b.version);
  });

program
  .command('powerdown')
  .description('disengage (and stop) FDs whose load is under a threshold, keeping a minimum number ACTIVE')
  .addOption(configOpt())
  .option('--manager <host:port>', 'manager control address (default: from the config)')
  .option('--threshold <pps>', 'an FD under this many packets/s is idle', num('--threshold', 0), 100)
  .option('--min <n>', 'FDs that stay ACTIVE whatever the load', num('--min', 1), 2)
  .option('--sustain <seconds>', 'the load must have stayed under the threshold this long (needs powerdown.enabled in the config to be tracked); 0 = now', num('--sustain', 0), 0)
  .addOption(new Option('--policy <policy>', 'inheritor selection').choices([...INHERITOR_POLICIES]).default('least-flows'))
  .option('--keep-running', 'disengage only; leave the processes running idle')
  .option('--json', 'print the result as JSON')
  .action(async (o) => {
    const cfg = loadConfig(o.config);
    const req = body('powerdownRequest', { thresholdPps: o.threshold, minActive: o.min, sustainMs: Math.round(o.sustain * 1000), policy: o.policy, stopProcesses: !o.keepRunning });
    const r = await operation(managerOf(cfg, o.manager), req, 24 * 3600 * 1000, ({ operation: p }) => {
      if (p && !o.json) console.log(p.message);
    });
    if (r.case !== 'powerdownReply') throw new BatonError(ErrorCode.REMOTE_ERROR, `manager answered ${r.case}`);
    const v = r.value;
    if (o.json) console.log(JSON.stringify(v, null, 2));
    else {
      for (const d of v.disengages) console.log(formatDisengage(d));
      console.log(v.ok ? `powered down: ${v.poweredDown.join(', ') || 'none'}` : `powerdown FAILED [${v.errorCode}]: ${v.errorMessage}`);
    }
    process.exitCode = v.ok ? 0 : 1;
  });

program
  .command('node', { hidden: true })
  .description('run one node in this process (used by baton up)')
  .requiredOption('--role <role>', 'hash | fd | service')
  .requiredOption('--name <name>', 'node name from the config')
  .addOption(configOpt().makeOptionMandatory())
  .option('--manager <host:port>', 'manager control address')
  .action(async (o) => {
    const { runNode } = await import('./node-main.js');
    if (!['hash', 'fd', 'service'].includes(o.role)) throw new InvalidArgumentError(`--role must be hash, fd or service, got ${o.role}`);
    await runNode(loadConfig(o.config), o.role as Role, o.name, o.manager);
  });

program
  .command('simulate')
  .description('on virtual time: the disengage timeline, or with --compare the comparison with Maglev/Katran, GLB, Beamer and modulo (docs/comparison.md); options as npm run simulate')
  .allowUnknownOption()
  .helpOption(false)
  .argument('[args...]')
  .action(async (args: string[]) => {
    // simulations/ sits above cli/ in the layers (docs/architecture.md): run it as its own process, not an import.
    const { spawnSync } = await import('node:child_process');
    const script = new URL('../simulations/compare/simulate.ts', import.meta.url);
    const r = spawnSync(process.execPath, ['--import', 'tsx', script.pathname, ...args], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  });

addLabCommands(program);

function printNodes(nodes: LaunchedNode[]): void {
  const rows = nodes
    .sort((a, b) => a.id - b.id)
    .map((n) => [n.name, n.role, String(n.pid), n.data, n.control ?? '', n.metrics, n.logFile]);
  const head = ['NODE', 'ROLE', 'PID', 'DATA (udp)', 'CONTROL (tcp)', 'METRICS', 'LOG'];
  const all = [head, ...rows];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  for (const r of all) console.log(r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd());
}

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(isBatonError(e) ? `error [${e.code}]: ${e.message}` : e instanceof Error ? `error: ${e.message}` : String(e));
  process.exit(1);
});
