/**
 * Data-plane datagram I/O behind a small interface. Real: a UDP socket
 * (node:dgram). In memory: MemoryNetwork, driven by a Scheduler, so a whole
 * cluster can run deterministically on virtual time with the same node code.
 *
 * A datagram may carry many encapsulated packets back to back (batching):
 * one send per batch, not per packet, is what makes a Node relay fast.
 */
import dgram from 'node:dgram';
import type { Address } from './address.js';
import type { Scheduler } from '../runtime/scheduler.js';

export type DatagramHandler = (data: Uint8Array, from: Address) => void;

export interface DatagramSocket {
  readonly address: Address;
  /**
   * Queue `data` for `to`. The caller must not modify `data` until `onSent`
   * runs (then the buffer may be reused). Errors are reported to onSent and
   * counted by the caller, never thrown.
   */
  send(data: Uint8Array, to: Address, onSent?: (err: Error | null) => void): void;
  onMessage(handler: DatagramHandler): void;
  /** Bytes and datagrams queued in the socket but not yet handed to the kernel. */
  sendQueueBytes(): number;
  sendQueueCount(): number;
  close(): Promise<void>;
}

export interface DatagramNet {
  bind(addr: Address): Promise<DatagramSocket>;
}

// ---------------------------------------------------------------- UDP ----

export interface UdpOptions {
  recvBufferSize?: number;
  sendBufferSize?: number;
}

class UdpSocket implements DatagramSocket {
  private handler: DatagramHandler = () => {};
  constructor(
    private readonly sock: dgram.Socket,
    readonly address: Address,
  ) {
    sock.on('message', (msg, rinfo) => this.handler(msg, { host: rinfo.address, port: rinfo.port }));
    // A send error (e.g. ECONNREFUSED from an ICMP unreachable) must never crash a node.
    sock.on('error', () => {});
  }
  send(data: Uint8Array, to: Address, onSent?: (err: Error | null) => void): void {
    try {
      this.sock.send(data, 0, data.length, to.port, to.host, onSent ?? noop);
    } catch (e) {
      // Closed socket (ERR_SOCKET_DGRAM_NOT_RUNNING) or a bad address: reported, never thrown.
      const cb = onSent ?? noop;
      queueMicrotask(() => cb(e as Error));
    }
  }
  onMessage(handler: DatagramHandler): void {
    this.handler = handler;
  }
  sendQueueBytes(): number {
    return this.sock.getSendQueueSize();
  }
  sendQueueCount(): number {
    return this.sock.getSendQueueCount();
  }
  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.sock.close(() => resolve());
      } catch {
        resolve(); // already closed
      }
    });
  }
}

function noop(): void {}

export class UdpNet implements DatagramNet {
  constructor(private readonly opts: UdpOptions = {}) {}
  bind(addr: Address): Promise<DatagramSocket> {
    return new Promise((resolve, reject) => {
      const type = addr.host.includes(':') ? 'udp6' : 'udp4';
      const sock = dgram.createSocket({ type, reuseAddr: false });
      sock.once('error', reject);
      sock.bind(addr.port, addr.host, () => {
        sock.off('error', reject);
        try {
          if (this.opts.recvBufferSize) sock.setRecvBufferSize(this.opts.recvBufferSize);
          if (this.opts.sendBufferSize) sock.setSendBufferSize(this.opts.sendBufferSize);
        } catch {
          // the kernel may cap buffer sizes; keep its defaults
        }
        const a = sock.address();
        resolve(new UdpSocket(sock, { host: a.address, port: a.port }));
      });
    });
  }
}

// ------------------------------------------------------------- memory ----

/**
 * An in-memory datagram network. Delivery is scheduled on the given
 * Scheduler after `latencyMs`, in send order; `dropFilter` can inject loss
 * for tests. Port 0 binds an ephemeral port.
 */
export class MemoryNetwork implements DatagramNet {
  private readonly sockets = new Map<string, MemorySocket>();
  private nextPort = 40000;
  /** Datagrams sent to an address nobody is bound to. */
  undeliverable = 0;
  dropFilter: ((data: Uint8Array, from: Address, to: Address) => boolean) | null = null;

  constructor(
    readonly scheduler: Scheduler,
    readonly latencyMs = 0,
  ) {}

  bind(addr: Address): Promise<DatagramSocket> {
    return Promise.resolve(this.bindSync(addr));
  }

  bindSync(addr: Address): MemorySocket {
    let port = addr.port;
    if (port === 0) {
      do port = this.nextPort++;
      while (this.sockets.has(`${addr.host}:${port}`));
    }
    const key = `${addr.host}:${port}`;
    if (this.sockets.has(key)) throw Object.assign(new Error(`EADDRINUSE ${key}`), { code: 'EADDRINUSE' });
    const s = new MemorySocket(this, { host: addr.host, port });
    this.sockets.set(key, s);
    return s;
  }

  /** @internal */
  deliver(data: Uint8Array, from: Address, to: Address): void {
    if (this.dropFilter && this.dropFilter(data, from, to)) return;
    const copy = Uint8Array.from(data); // the sender may reuse its buffer once onSent ran
    const run = (): void => {
      const s = this.sockets.get(`${to.host}:${to.port}`);
      if (!s || s.closed) {
        this.undeliverable++;
        return;
      }
      s.receive(copy, from);
    };
    if (this.latencyMs > 0) this.scheduler.after(this.latencyMs, run);
    else this.scheduler.defer(run);
  }

  /** @internal */
  unbind(s: MemorySocket): void {
    this.sockets.delete(`${s.address.host}:${s.address.port}`);
  }
}

export class MemorySocket implements DatagramSocket {
  closed = false;
  private handler: DatagramHandler = () => {};
  constructor(
    private readonly net: MemoryNetwork,
    readonly address: Address,
  ) {}
  send(data: Uint8Array, to: Address, onSent?: (err: Error | null) => void): void {
    if (this.closed) {
      onSent?.(new Error('socket closed'));
      return;
    }
    this.net.deliver(data, this.address, to);
    if (onSent) this.net.scheduler.defer(() => onSent(null));
  }
  onMessage(handler: DatagramHandler): void {
    this.handler = handler;
  }
  /** @internal */
  receive(data: Uint8Array, from: Address): void {
    this.handler(data, from);
  }
  sendQueueBytes(): number {
    return 0;
  }
  sendQueueCount(): number {
    return 0;
  }
  close(): Promise<void> {
    this.closed = true;
    this.net.unbind(this);
    return Promise.resolve();
  }
}
