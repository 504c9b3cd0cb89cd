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

  /**
   * Chunks of a frame that is still incomplete are kept in a list and joined
   * once, when the frame is whole: joining on every chunk would copy a large
   * frame (a flow-table chunk of megabytes) quadratically.
   */
  private pending: Buffer[] = [];
  private rxBuffered = 0;
  private need = 0; // bytes the buffered data must reach before parsing again

  private onData(chunk: Buffer): void {
    if (this.rxBuffered + chunk.length < this.need) {
      this.pending.push(chunk);
      this.rxBuffered += chunk.length;
      return;
    }
    if (this.pending.length > 0) {
      this.pending.push(chunk);
      chunk = Buffer.concat(this.pending, this.rxBuffered + chunk.length);
      this.pending = [];
      this.rxBuffered = 0;
    }
    const buf = chunk;
    let off = 0;
    this.need = 0;
    while (buf.length - off >= 4) {
      const n = buf.readUInt32BE(off);
      if (n > MAX_FRAME_BYTES) {
        this.reason = 'frame_too_large';
        this.sock.destroy();
        return;
      }
      if (buf.length - off - 4 < n) {
        this.need = 4 + n;
        break;
      }
      const msg = buf.subarray(off + 4, off + 4 + n);
      off += 4 + n;
      this.msgFn(msg);
      if (this.closed) return;
    }
    if (off < buf.length) {
      const rest = buf.subarray(off);
      this.pending.push(rest);
      this.rxBuffered = rest.length;
      if (this.need === 0) this.need = 4; // a partial length prefix
    }
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
