/**
 * `baton lab up | down | status` (docs/lab.md): the commands over cli/lab.ts.
 * `up` returns once the lab is built and its servers listen (they keep
 * running; `down` stops them); Ctrl-C during `up` removes what was made.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { MAX_CLIENTS, MAX_NODE_NAMESPACES, MAX_SERVERS, formatLab, labDown, labPreflight, labStatus, labUp } from './lab.js';

function int(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function addLabCommands(program: Command): void {
  const lab = program
    .command('lab')
    .description('network namespaces with real kernel clients and servers around Baton (docs/lab.md); needs root');

  lab
    .command('up')
    .description('build the lab (removing any leftovers first): bridge, Baton namespace, clients and servers with VXLAN-GPE tunnels, HTTP/UDP servers and iperf3 -s')
    .addOption(new Option('-c, --config <file>', "config whose cluster.vni and cluster.vip are the defaults"))
    .option('--clients <n>', 'client namespaces btn-c1..N', int('--clients', 0, MAX_CLIENTS), 2)
    .option('--servers <m>', 'server namespaces btn-s1..M', int('--servers', 0, MAX_SERVERS), 2)
    .option('--node-namespaces <k>', "also btn-node-1..K (10.99.0.11..), one per Baton node, as on separate hosts", int('--node-namespaces', 0, MAX_NODE_NAMESPACES), 0)
    .option('--vip <addr...>', "VIPs the clients send through the tunnel (default: the config's cluster.vip)")
    .option('--vni <n>', "VXLAN VNI of the tunnel routes (default: the config's cluster.vni)", int('--vni', 0, 0xffffff))
    .option('--edge <addr>', 'underlay address clients and servers tunnel to (default 10.99.0.1, btn-baton)')
    .option('--mtu <bytes>', 'underlay MTU (vx0 gets 36 less)', int('--mtu', 104, 65535))
    .option('--no-services', 'do not start the HTTP/UDP servers and iperf3 -s')
    .option('--json', 'print the description as JSON')
    .action(async (o) => {
      const why = await labPreflight();
      if (why) {
        console.error(why);
        process.exitCode = 1;
        return;
      }
      const ac = new AbortController();
      const interrupt = (): void => {
        console.error('interrupted: removing the lab');
        ac.abort();
      };
      process.on('SIGINT', interrupt);
      process.on('SIGTERM', interrupt);
      try {
        const l = await labUp({
          config: o.config,
          clients: o.clients,
          servers: o.servers,
          nodeNamespaces: o.nodeNamespaces,
          vips: o.vip,
          vni: o.vni,
          edge: o.edge,
          underlayMtu: o.mtu,
          services: o.services,
          signal: ac.signal,
          log: o.json ? undefined : (line) => console.log(line),
        });
        console.log(o.json ? JSON.stringify(l, null, 2) : `${formatLab(l)}\n\nlab up. Try: ip netns exec btn-baton curl -s http://10.99.0.201/stats   |   npm run baton -- lab down`);
      } catch (e) {
        if (!ac.signal.aborted) throw e;
        process.exitCode = 130;
      } finally {
        process.off('SIGINT', interrupt);
        process.off('SIGTERM', interrupt);
      }
    });

  lab
    .command('down')
    .description('stop every process in every btn-* namespace and delete the namespaces (idempotent)')
    .action(async () => {
      const r = await labDown();
      console.log(r.namespaces.length ? `lab down: removed ${r.namespaces.join(' ')}; stopped ${r.killed} processes${r.forced ? ` (${r.forced} with SIGKILL)` : ''}` : 'lab down: nothing to remove');
    });

  lab
    .command('status')
    .description('what the state file says and what exists now')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const s = await labStatus();
      if (o.json) return console.log(JSON.stringify(s, null, 2));
      if (!s.lab) {
        console.log(s.namespaces.length ? `no lab state file, but these namespaces exist: ${s.namespaces.join(' ')} (baton lab down removes them)` : 'no lab');
        return;
      }
      console.log(`${formatLab(s.lab)}\nphase ${s.lab.phase}, built ${s.lab.createdAt}`);
      const dead = s.processes.filter((p) => !p.alive);
      if (dead.length) console.log(`not running: ${dead.map((p) => `${p.name} in ${p.ns} (pid ${p.pid}, log ${p.log})`).join(', ')}`);
      if (s.missing.length) console.log(`missing namespaces: ${s.missing.join(' ')}`);
      if (s.unexpected.length) console.log(`other btn-* namespaces: ${s.unexpected.join(' ')}`);
      if (!dead.length && !s.missing.length) console.log('all namespaces present, all processes running');
      if (dead.length || s.missing.length) process.exitCode = 1;
    });
}
