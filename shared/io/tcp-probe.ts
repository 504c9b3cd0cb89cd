/** A TCP connect probe (the real Prober of distributor/endpoint-health.ts): connect, then close at once. */
import { connect } from 'node:net';

export class TcpConnectProber {
  probe(host: string, port: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const s = connect({ host, port });
      const done = (ok: boolean) => {
        clearTimeout(t);
        s.removeAllListeners();
        s.on('error', () => {});
        s.destroy();
        resolve(ok);
      };
      const t = setTimeout(() => done(false), timeoutMs);
      s.once('connect', () => done(true));
      s.once('error', () => done(false));
    });
  }
}
