/**
 * The lab's real server (docs/lab.md): what `baton lab up` runs in each
 * server namespace next to `iperf3 -s`. Plain Node `http` and `dgram`, no
 * Baton code — the kernel of the namespace does the TCP and UDP, as on a
 * real backend.
 *
 *   TCP (default :80), HTTP/1.1 with keep-alive:
 *     GET /bytes/<n>   200, n bytes (Content-Length n, streamed)
 *     GET /stats       200, JSON: LabServerStats (below)
 *     GET /reset       200, zeroes the counters (open connections are forgotten)
 *     GET /            200, "baton lab server <name>\n"
 *     every response carries `X-Server: <name>`.
 *   UDP (default :53), "DNS-like" request/response: a request of at least 2
 *   bytes is answered, to its source, with
 *     [id hi, id lo] (the request's first two bytes), 0x80 0x00 (QR set), <name> in ASCII
 *   shorter datagrams are counted and not answered.
 *
 * Connections that carried only /stats or /reset requests are not counted in
 * `connections`/`perConnection`, so a test that reads the stats does not
 * change them. Prints `READY {json}` on stdout once both sockets listen, then
 * writes nothing more there (the lab closes that pipe); logs go to stderr.
 *
 *   node --import tsx cli/lab/server.ts --name s1 [--http 80] [--udp 53] [--host 0.0.0.0]
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';

/** What GET /stats answers. */
export interface LabServerStats {
  name: string;
  /** TCP connections accepted since start (or /reset), whatever they carried. */
  accepted: number;
  /** Connections that carried at least one request other than /stats and /reset. */
  connections: number;
  /** Requests other than /stats and /reset. */
  requests: number;
  /** Of those, answered with status 200. */
  ok: number;
  /** Response body bytes sent for /bytes requests (counted as written). */
  bytesSent: number;
  /** Connections open now (all of them). */
  open: number;
  /** One row per counted connection, in accept order. */
  perConnection: { remote: string; requests: number; open: boolean }[];
  udp: { requests: number; answered: number; tooShort: number };
}

/** The UDP answer's flag bytes after the id (DNS's QR bit). */
export const UDP_REPLY_FLAGS = [0x80, 0x00] as const;

/** Largest /bytes/<n> served (1 TiB: any test's size, and a bound on a typo). */
const MAX_BYTES = 2 ** 40;
const CHUNK = new Uint8Array(64 * 1024).fill(0x61); // 'a'

interface ConnState {
  remote: string;
  requests: number;
  open: boolean;
  counted: boolean;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      name: { type: 'string', default: 'server' },
      host: { type: 'string', default: '0.0.0.0' },
      http: { type: 'string', default: '80' },
      udp: { type: 'string', default: '53' },
    },
  });
  const name = values.name!;
  let conns: ConnState[] = [];
  const stateOf = new WeakMap<Socket, ConnState>();
  let accepted = 0;
  let requests = 0;
  let ok = 0;
  let bytesSent = 0;
  let open = 0;
  const udp = { requests: 0, answered: 0, tooShort: 0 };

  const stats = (): LabServerStats => {
    const counted = conns.filter((c) => c.counted);
    return {
      name,
      accepted,
      connections: counted.length,
      requests,
      ok,
      bytesSent,
      open,
      perConnection: counted.map((c) => ({ remote: c.remote, requests: c.requests, open: c.open })),
      udp: { ...udp },
    };
  };

  const send = (res: ServerResponse, status: number, body: string, type = 'text/plain'): void => {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'X-Server': name });
    res.end(body);
  };

  const streamBytes = (res: ServerResponse, n: number): void => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': n, 'X-Server': name });
    let left = n;
    const pump = (): void => {
      while (left > 0) {
        const k = Math.min(left, CHUNK.length);
        left -= k;
        bytesSent += k;
        if (!res.write(k === CHUNK.length ? CHUNK : CHUNK.subarray(0, k))) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  };

  const http = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    if (req.method === 'GET' && url === '/stats') return send(res, 200, JSON.stringify(stats()), 'application/json');
    if (req.method === 'GET' && url === '/reset') {
      conns = [];
      accepted = requests = ok = bytesSent = 0;
      udp.requests = udp.answered = udp.tooShort = 0;
      return send(res, 200, 'reset\n');
    }
    const c = stateOf.get(req.socket);
    if (c) {
      if (!c.counted) {
        c.counted = true;
        conns.push(c);
      }
      c.requests++;
    }
    requests++;
    const m = /^\/bytes\/(\d{1,15})$/.exec(url);
    if (req.method === 'GET' && m) {
      const n = Number(m[1]);
      if (n > MAX_BYTES) return send(res, 400, `at most ${MAX_BYTES} bytes\n`);
      ok++;
      return streamBytes(res, n);
    }
    if (req.method === 'GET' && url === '/') {
      ok++;
      return send(res, 200, `baton lab server ${name}\n`);
    }
    send(res, 404, 'not found\n');
  });
  // Keep-alive as real servers run it for long-lived clients: idle connections stay open for minutes.
  http.keepAliveTimeout = 600_000;
  http.headersTimeout = 60_000;
  http.requestTimeout = 0;
  http.on('connection', (s: Socket) => {
    accepted++;
    open++;
    const c: ConnState = { remote: `${s.remoteAddress}:${s.remotePort}`, requests: 0, open: true, counted: false };
    stateOf.set(s, c);
    s.on('close', () => {
      open--;
      c.open = false;
    });
  });

  const dns = createSocket('udp4');
  dns.on('message', (msg, rinfo) => {
    udp.requests++;
    if (msg.length < 2) {
      udp.tooShort++;
      return;
    }
    const reply = Buffer.concat([Buffer.from([msg[0]!, msg[1]!, ...UDP_REPLY_FLAGS]), Buffer.from(name, 'ascii')]);
    dns.send(reply, rinfo.port, rinfo.address, (err) => {
      if (!err) udp.answered++;
    });
  });

  const host = values.host!;
  let ready = 0;
  const listening = (): void => {
    if (++ready < 2) return;
    const a = http.address();
    const u = dns.address();
    process.stdout.write(`READY ${JSON.stringify({ name, pid: process.pid, http: typeof a === 'object' && a ? a.port : 0, udp: u.port })}\n`);
  };
  // The lab closes our stdout after READY; never let a late write kill the server.
  process.stdout.on('error', () => {});
  http.listen(Number(values.http), host, listening);
  dns.bind(Number(values.udp), host, listening);
  const fail = (what: string) => (e: Error) => {
    console.error(`lab server ${name}: ${what}: ${e.message}`);
    process.exit(1);
  };
  http.on('error', fail('http'));
  dns.on('error', fail('udp'));
  const stop = (): void => {
    dns.close();
    http.close();
    http.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
