/**
 * Control-plane message I/O: reliable, ordered, message-framed connections.
 * Real: TCP with a 4-byte big-endian length prefix per message (see
 * docs/control-protocol.md). In memory: connected pairs that deliver through
 * a Scheduler. Garbage on the wire never crashes a node: an impossible length
 * closes that one connection (counted by the owner via onClose's reason).
 */
import net from 'node:net';
import type { Address } from './address.js';
import type { Scheduler } from '../runtime/scheduler.js';

/** Largest control message accepted (a flow-table chunk is far below this). */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

export type CloseReason = 'local' | 'remote' | 'error' | 'frame_too_large';

export interface MessageConnection {
  readonly remote: Address;
  /** Queue one message. Returns false once the connection is closed. */
  send(msg: Uint8Array): boolean;
  onMessage(fn: (msg: Uint8Array) => void): void;
  onClose(fn: (reason: CloseReason) => void): void;
  /** Bytes written but not yet flushed to the kernel. */
  pendingBytes(): number;
  close(): void;
  readonly closed: boolean;
}

export interface MessageListener {
  readonly address: Address;
  close(): Promise<void>;
}

export interface MessageNet {
  listen(addr: Address, onConnection: (c: MessageConnection) => void): Promise<MessageListener>;
  connect(addr: Address): Promise<MessageConnection>;
}

// ---------------------------------------------------------------- TCP ----

class TcpConnection implements MessageConnection {
  private msgFn: (m: Uint8Array) => void = () => {};
  private closeFns: ((r: CloseReason) => void)[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private reason: CloseReason | null = null;
  closed = false;

  constructor(
    private readonly sock: net.Socket,
    readonly remote: Address,
  ) {
    sock.setNoDelay(true);
    sock.on('data', (chunk) => this.onData(chunk));
    sock.on('error', () => {
      this.reason ??= 'error';
    });
    sock.on('close', () => this.finish(this.reason ?? 'remote'));
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let off = 0;
    while (this.buf.length - off >= 4) {
      const n = this.buf.readUInt32BE(off);
      if (n > MAX_FRAME_BYTES) {
        this.reason = 'frame_too_large';
        this.sock.destroy();
        this.buf = Buffer.alloc(0);
        return;
      }
      if (this.buf.length - off - 4 < n) break;
      const msg = this.buf.subarray(off + 4, off + 4 + n);
      off += 4 + n;
      this.msgFn(msg);
      if (this.closed) return;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }

  send(msg: Uint8Array): boolean {
    if (this.closed || this.sock.destroyed) return false;
    const hdr = Buffer.allocUnsafe(4);
    hdr.writeUInt32BE(msg.length, 0);
    this.sock.cork();
    this.sock.write(hdr);
    this.sock.write(msg);
    this.sock.uncork();
    return true;
  }
  onMessage(fn: (m: Uint8Array) => void): void {
    this.msgFn = fn;
  }
  onClose(fn: (r: CloseReason) => void): void {
    if (this.closed) fn(this.reason ?? 'remote');
    else this.closeFns.push(fn);
  }
  pendingBytes(): number {
    return this.sock.writableLength;
  }
  close(): void {
    if (this.closed) return;
    this.reason ??= 'local';
    this.sock.end();
    this.sock.destroySoon();
  }
  private finish(r: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.closeFns) f(r);
    this.closeFns = [];
  }
}

export class TcpNet implements MessageNet {
  listen(addr: Address, onConnection: (c: MessageConnection) => void): Promise<MessageListener> {
    return new Promise((resolve, reject) => {
      const sockets = new Set<net.Socket>();
      const server = net.createServer((s) => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        onConnection(new TcpConnection(s, { host: s.remoteAddress ?? '?', port: s.remotePort ?? 0 }));
      });
      server.once('error', reject);
      server.listen(addr.port, addr.host, () => {
        server.off('error', reject);
        server.on('error', () => {});
        const a = server.address() as net.AddressInfo;
        resolve({
          address: { host: a.address, port: a.port },
          close: () =>
            new Promise<void>((r) => {
              for (const s of sockets) s.destroy();
              server.close(() => r());
            }),
        });
      });
    });
  }
  connect(addr: Address): Promise<MessageConnection> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: addr.host, port: addr.port });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new TcpConnection(s, addr));
      });
    });
  }
}

// ------------------------------------------------------------- memory ----

class MemoryConnection implements MessageConnection {
  peer!: MemoryConnection;
  private msgFn: (m: Uint8Array) => void = () => {};
  private closeFns: ((r: CloseReason) => void)[] = [];
  closed = false;
  constructor(
    private readonly sched: Scheduler,
    readonly remote: Address,
  ) {}
  send(msg: Uint8Array): boolean {
    if (this.closed) return false;
    const copy = Uint8Array.from(msg);
    const peer = this.peer;
    this.sched.defer(() => {
      if (!peer.closed) peer.msgFn(copy);
    });
    return true;
  }
  onMessage(fn: (m: Uint8Array) => void): void {
    this.msgFn = fn;
  }
  onClose(fn: (r: CloseReason) => void): void {
    if (this.closed) fn('remote');
    else this.closeFns.push(fn);
  }
  pendingBytes(): number {
    return 0;
  }
  close(): void {
    if (this.closed) return;
    this.finish('local');
    const peer = this.peer;
    this.sched.defer(() => peer.finish('remote'));
  }
  finish(r: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.closeFns) f(r);
    this.closeFns = [];
  }
}

export class MemoryMessageNet implements MessageNet {
  private readonly listeners = new Map<string, (c: MessageConnection) => void>();
  private nextPort = 50000;
  constructor(private readonly sched: Scheduler) {}

  listen(addr: Address, onConnection: (c: MessageConnection) => void): Promise<MessageListener> {
    let port = addr.port;
    if (port === 0) port = this.nextPort++;
    const key = `${addr.host}:${port}`;
    if (this.listeners.has(key)) return Promise.reject(Object.assign(new Error(`EADDRINUSE ${key}`), { code: 'EADDRINUSE' }));
    this.listeners.set(key, onConnection);
    return Promise.resolve({
      address: { host: addr.host, port },
      close: () => {
        this.listeners.delete(key);
        return Promise.resolve();
      },
    });
  }
  connect(addr: Address): Promise<MessageConnection> {
    const accept = this.listeners.get(`${addr.host}:${addr.port}`);
    if (!accept) return Promise.reject(Object.assign(new Error(`ECONNREFUSED ${addr.host}:${addr.port}`), { code: 'ECONNREFUSED' }));
    const client = new MemoryConnection(this.sched, addr);
    const server = new MemoryConnection(this.sched, { host: 'memory', port: this.nextPort++ });
    client.peer = server;
    server.peer = client;
    this.sched.defer(() => accept(server));
    return Promise.resolve(client);
  }
}
