/**
 * The one error-code set (shared/errors.ts): every code unique, named
 * BATON_<key> and documented in a line; codes off the wire are checked
 * (errorCodeFromWire); a wrapped error keeps its cause; and no source file
 * outside shared/errors.ts spells a code as a string literal (a scan of every
 * non-test .ts file with the TypeScript parser, so comments and message text
 * do not count, only literals whose whole text is code-shaped).
 */
import { describe, it, expect } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { BatonError, ErrorCode, errorCodeFromWire, errorFromWire, isBatonError, isErrorCode, remoteCodeOf } from '../shared/errors.js';
import { loadConfig } from '../shared/config/config.js';
import { parseAddress } from '../shared/io/address.js';
import { unavailable } from '../shared/store/store.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CODES = Object.entries(ErrorCode);

describe('ErrorCode: the one list', () => {
  it('every code is unique, BATON_<its key>, and a string', () => {
    const values = CODES.map(([, v]) => v);
    expect(new Set(values).size).toBe(values.length);
    for (const [k, v] of CODES) {
      expect(v).toMatch(/^BATON_[A-Z0-9_]+$/);
      expect(v).toBe(`BATON_${k}`);
    }
  });

  it('every code is documented by the line above it in shared/errors.ts', () => {
    const lines = readFileSync(join(ROOT, 'shared', 'errors.ts'), 'utf8').split('\n');
    for (const [k, v] of CODES) {
      const at = lines.findIndex((l) => l.trim() === `${k}: '${v}',`);
      expect(at, k).toBeGreaterThan(0);
      expect(lines[at - 1]!.trim(), k).toMatch(/^\/\*\* .+ \*\/$/);
    }
  });

  it('docs/control-protocol.md lists every code', () => {
    const doc = readFileSync(join(ROOT, 'docs', 'control-protocol.md'), 'utf8');
    for (const [, v] of CODES) expect(doc, v).toMatch(new RegExp(`^\\| \`${v}\` \\|`, 'm'));
  });
});

describe('codes off the wire', () => {
  it('errorCodeFromWire round-trips every known code', () => {
    for (const [, v] of CODES) {
      expect(isErrorCode(v)).toBe(true);
      expect(errorCodeFromWire(v)).toBe(v);
      // What a peer sends is a string, not the constant: the same text decoded from a frame.
      expect(errorCodeFromWire(String(v).slice())).toBe(v);
    }
  });

  it.each(['', 'garbage', 'BATON_', 'BATON_NOT_A_CODE', 'baton_timeout', ' BATON_TIMEOUT', 'BATON_TIMEOUT ', 'toString', '__proto__', 'constructor'])(
    'maps %j to REMOTE_ERROR',
    (s) => {
      expect(isErrorCode(s)).toBe(false);
      expect(errorCodeFromWire(s)).toBe(ErrorCode.REMOTE_ERROR);
    },
  );

  it('errorFromWire keeps a code it does not know as details.wireCode, a known one as the code', () => {
    const known = errorFromWire(ErrorCode.PEER_MIGRATING, 'peer is migrating', { peer: 3 });
    expect(known.code).toBe(ErrorCode.PEER_MIGRATING);
    expect(known.details).toEqual({ peer: 3 });
    const unknown = errorFromWire('BATON_FROM_A_NEWER_BUILD', 'something new', { peer: 3 });
    expect(unknown.code).toBe(ErrorCode.REMOTE_ERROR);
    expect(unknown.details).toEqual({ peer: 3, wireCode: 'BATON_FROM_A_NEWER_BUILD' });
    const empty = errorFromWire('', 'no code');
    expect(empty.code).toBe(ErrorCode.REMOTE_ERROR);
    expect(empty.details).toBeUndefined();
  });

  it('remoteCodeOf reads the checked remote code of a REMOTE_ERROR only', () => {
    expect(remoteCodeOf(new BatonError(ErrorCode.REMOTE_ERROR, 'x', { remoteCode: ErrorCode.OWNERSHIP_DEFERRED }))).toBe(ErrorCode.OWNERSHIP_DEFERRED);
    expect(remoteCodeOf(new BatonError(ErrorCode.REMOTE_ERROR, 'x', { remoteCode: 'garbage' }))).toBe(ErrorCode.REMOTE_ERROR);
    expect(remoteCodeOf(new BatonError(ErrorCode.REMOTE_ERROR, 'x'))).toBeUndefined();
    expect(remoteCodeOf(new BatonError(ErrorCode.TIMEOUT, 'x', { remoteCode: ErrorCode.TIMEOUT }))).toBeUndefined();
    expect(remoteCodeOf(new Error('x'))).toBeUndefined();
  });
});

describe('cause', () => {
  it('a BatonError keeps the error it wraps (ES2022 Error.cause)', () => {
    const inner = new Error('ECONNRESET');
    const e = new BatonError(ErrorCode.STORE_UNAVAILABLE, 'store: get: ECONNRESET', { op: 'get' }, { cause: inner });
    expect(e.cause).toBe(inner);
    expect(e.code).toBe(ErrorCode.STORE_UNAVAILABLE);
    expect(e.details).toEqual({ op: 'get' });
    expect(isBatonError(e, ErrorCode.STORE_UNAVAILABLE)).toBe(true);
    expect(new BatonError(ErrorCode.TIMEOUT, 'no cause').cause).toBeUndefined();
  });

  it('a config file that cannot be read is CONFIG_INVALID with the I/O error as its cause', () => {
    let err: unknown;
    try {
      loadConfig(join(ROOT, 'no-such-dir', 'baton.yaml'));
    } catch (e) {
      err = e;
    }
    expect(isBatonError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect(((err as BatonError).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('a store error wraps what the client threw', () => {
    const inner = new Error('socket hang up');
    const e = unavailable('etcd', 'get', inner);
    expect(e.code).toBe(ErrorCode.STORE_UNAVAILABLE);
    expect(e.cause).toBe(inner);
  });

  it('bad input to a parser is BAD_ARGUMENT, not a RangeError', () => {
    expect(() => parseAddress('nope')).toThrow(expect.objectContaining({ code: ErrorCode.BAD_ARGUMENT }) as unknown as Error);
  });
});

/** Every .ts file of the project outside test/ and node_modules (and dot-directories). */
function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    if (d.name.startsWith('.') || d.name === 'node_modules') continue;
    const p = join(dir, d.name);
    if (d.isDirectory()) {
      if (relative(ROOT, p) !== 'test') sourceFiles(p, out);
    } else if (d.name.endsWith('.ts') && !d.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

/** String and template literals whose whole text (a template's each part) is code-shaped: BATON_ and capitals. */
function codeLiterals(file: string): string[] {
  const src = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: string[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isStringLiteralLike(n) || ts.isTemplateHead(n) || ts.isTemplateMiddle(n) || ts.isTemplateTail(n)) {
      if (/^BATON_[A-Z0-9_]*$/.test(n.text)) {
        const { line } = src.getLineAndCharacterOfPosition(n.getStart(src));
        found.push(`${relative(ROOT, file).split(sep).join('/')}:${line + 1}: ${n.getText(src)}`);
      }
    }
    ts.forEachChild(n, visit);
  };
  visit(src);
  return found;
}

describe('source scan', () => {
  const ERRORS_TS = join(ROOT, 'shared', 'errors.ts');

  it('finds code literals where there are some (the scanner works)', () => {
    expect(codeLiterals(ERRORS_TS).length).toBe(CODES.length);
  });

  it("no 'BATON_*' code literal in non-test source outside shared/errors.ts: write ErrorCode.X", () => {
    const files = sourceFiles(ROOT).filter((f) => f !== ERRORS_TS);
    expect(files.length).toBeGreaterThan(50);
    expect(files.flatMap(codeLiterals)).toEqual([]);
  });
});
