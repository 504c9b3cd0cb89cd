import { BatonError, ErrorCode } from '../errors.js';

/** A real transport address (UDP or TCP): host and port. */
export interface Address {
  host: string;
  port: number;
}

export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** "127.0.0.1:7000" -> { host, port }; throws BatonError BAD_ARGUMENT naming the input. */
export function parseAddress(s: string): Address {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) throw new BatonError(ErrorCode.BAD_ARGUMENT, `not a host:port address: ${JSON.stringify(s)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new BatonError(ErrorCode.BAD_ARGUMENT, `port out of range in ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}

export function sameAddress(a: Address, b: Address): boolean {
  return a.port === b.port && a.host === b.host;
}
