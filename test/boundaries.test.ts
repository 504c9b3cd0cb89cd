/**
 * The import-boundary check itself (`npm run lint:boundaries`,
 * .dependency-cruiser.mjs): run the way the lint runs it, over a small tree
 * written to a temporary directory with deliberate violations (a cycle, a
 * library importing nodes/, a type-only upward import, a sideways import
 * against the arrow) and allowed imports beside them, it reports exactly the
 * violations and fails; over the real tree it reports none. The table in
 * docs/architecture.md names the same arrows as the config.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CONFIG = join(ROOT, '.dependency-cruiser.mjs');
const DEPCRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  rule: string;
  from: string;
  to: string;
  cycle: string[];
}

function depcruise(cwd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [DEPCRUISE, '--config', CONFIG, ...args, '.'], { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exactly what `npm run lint:boundaries` runs, over `cwd`: its exit status and what it prints. */
function lintBoundaries(cwd: string): { status: number | null; output: string } {
  const r = depcruise(cwd, []);
  return { status: r.status, output: r.stdout + r.stderr };
}

/** The same check with the JSON reporter: the violations, one by one. */
function violations(cwd: string): Violation[] {
  const r = depcruise(cwd, ['--output-type', 'json']);
  let out: { summary: { violations: { rule: { name: string }; from: string; to: string; cycle?: { name: string }[] }[] } };
  try {
    out = JSON.parse(r.stdout) as typeof out;
  } catch {
    throw new Error(`dependency-cruiser printed no JSON (exit ${r.status}): ${r.stderr}`);
  }
  return out.summary.violations.map((v) => ({ rule: v.rule.name, from: v.from, to: v.to, cycle: (v.cycle ?? []).map((c) => c.name) }));
}

/** A small tree in the repository's layout; `files` maps a path to its source. */
function writeTree(dir: string, files: Record<string, string>): void {
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'boundaries-fixture', private: true, type: 'module' }));
  for (const [path, src] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), src);
  }
}

describe('import boundaries (.dependency-cruiser.mjs)', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'baton-boundaries-'));
    writeTree(dir, {
      // A cycle inside one layer.
      'shared/a.ts': "import { b } from './b.js';\nexport const a = (): number => b + 1;\n",
      'shared/b.ts': "import { a } from './a.js';\nexport const b = 2;\nexport const twice = (): number => a() * 2;\n",
      'shared/c.ts': 'export const c = 3;\n',
      // A library importing a process assembly (upward).
      'distributor/table.ts': "import { FdNode } from '../nodes/fd-node.js';\nexport const node = new FdNode();\n",
      // Sideways against the arrow (migration-client sits on distributor, not the other way).
      'distributor/handler.ts': "import { client } from '../migration-client/client.js';\nexport const handler = client;\n",
      // Upward with a type only: the layers hold for types too.
      'hash-tier/engine.ts': "import type { FdNode } from '../nodes/fd-node.js';\nexport const engine = (n: FdNode): FdNode => n;\n",
      // Allowed: library -> shared, migration-client -> distributor, nodes -> libraries, cli -> nodes.
      'migration-client/client.ts': "import { c } from '../shared/c.js';\nexport const client = c;\n",
      'migration-client/uses-table.ts': "import { handler } from '../distributor/handler.js';\nexport const h = handler;\n",
      'nodes/fd-node.ts': "import { c } from '../shared/c.js';\nimport { client } from '../migration-client/client.js';\nexport class FdNode {\n  readonly v = c + client;\n}\n",
      'cli/main.ts': "import { FdNode } from '../nodes/fd-node.js';\nimport { c } from '../shared/c.js';\nexport const main = (): FdNode => (c ? new FdNode() : new FdNode());\n",
    });
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('reports a cycle, upward imports (values and types) and a sideways import against the arrow, and fails', () => {
    const lint = lintBoundaries(dir);
    expect(lint.status).not.toBe(0);
    expect(lint.output).toMatch(/4 dependency violations \(4 errors/);
    const found = violations(dir);
    expect(found.map((v) => `${v.rule}: ${v.from} -> ${v.to}`).sort()).toEqual(
      [
        'layer-distributor: distributor/handler.ts -> migration-client/client.ts',
        'layer-distributor: distributor/table.ts -> nodes/fd-node.ts',
        'layer-hash-tier: hash-tier/engine.ts -> nodes/fd-node.ts',
        // One violation per cycle, named at its first module.
        'no-cycle: shared/a.ts -> shared/b.ts',
      ].sort(),
    );
    const cycle = found.find((v) => v.rule === 'no-cycle' && v.from === 'shared/a.ts');
    expect(cycle?.cycle).toEqual(['shared/b.ts', 'shared/a.ts']);
  });

  it('npm run lint runs this check and .ci/run runs the lint before the tests', () => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts['lint:boundaries']).toBe('depcruise --config .dependency-cruiser.mjs .');
    expect(scripts['lint']).toMatch(/npm run lint:boundaries/);
    const ci = readFileSync(join(ROOT, '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/^set -euo pipefail$/m);
    const lintAt = ci.search(/^npm run lint$/m);
    expect(lintAt).toBeGreaterThan(0);
    expect(lintAt).toBeLessThan(ci.search(/^npm test$/m));
  });

  it('the real tree has no violation', () => {
    const lint = lintBoundaries(ROOT);
    expect(lint.output).toMatch(/no dependency violations found/);
    expect(lint.status).toBe(0);
  });

  it("docs/architecture.md's table names the config's arrows", async () => {
    const { ARROWS } = (await import(pathToFileURL(CONFIG).href)) as { ARROWS: Record<string, string[]> };
    const doc = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
    const start = doc.indexOf('## Layers and allowed imports');
    expect(start).toBeGreaterThanOrEqual(0);
    const end = doc.indexOf('\n## ', start + 1);
    const section = doc.slice(start, end < 0 ? undefined : end);
    const rows: Record<string, string[]> = {};
    // | `distributor/` | `shared/` |
    for (const m of section.matchAll(/^\| `([a-z/-]+)\/` \| ([^|]*) \|/gm)) {
      const imports = [...m[2]!.matchAll(/`([a-z/-]+)\/`/g)].map((x) => x[1]!);
      rows[m[1]!] = imports.sort();
    }
    const expected = Object.fromEntries(Object.entries(ARROWS).map(([from, to]) => [from, to.filter((t) => t !== from).sort()]));
    expect(rows).toEqual(expected);
  });
});
