/**
 * Structured JSON logs (winston), one child logger per module. Never called
 * per packet: the data plane counts, the control plane logs.
 * Output goes to stderr so that stdout stays free for a process's machine-
 * readable lines (e.g. the READY line a child prints to its launcher).
 */
import winston from 'winston';

let root: winston.Logger | null = null;

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export function configureLogging(opts: { level?: LogLevel; node?: string; silent?: boolean } = {}): void {
  root = winston.createLogger({
    level: opts.level ?? (process.env.BATON_LOG_LEVEL as LogLevel | undefined) ?? 'info',
    silent: opts.silent ?? false,
    defaultMeta: opts.node ? { node: opts.node, pid: process.pid } : { pid: process.pid },
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json()),
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] })],
  });
}

export type Logger = Pick<winston.Logger, 'error' | 'warn' | 'info' | 'debug'>;

/** A logger for one module ("fd-agent", "manager", ...). */
export function getLogger(module: string): Logger {
  if (root === null) configureLogging({ silent: process.env.VITEST !== undefined && process.env.BATON_LOG_LEVEL === undefined });
  return root!.child({ module });
}
