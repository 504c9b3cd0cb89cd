/**
 * Import boundaries (`npm run lint`, `.ci/run`): the layers of
 * docs/architecture.md ("Layers and allowed imports") as rules that fail the
 * build. A folder may import only the folders its row of ARROWS names (its
 * own included); npm packages and Node's built-ins are not restricted here.
 * Type-only imports count like any other: a type taken from an upper layer
 * ties the lower one to it as much as a value does.
 *
 * test/boundaries.test.ts checks these rules on a small tree with a
 * deliberate cycle and a deliberate upward import.
 */

const LIBRARIES = ['shared', 'distributor', 'migration-client', 'migration-manager', 'hash-tier', 'service-node', 'traffic'];

/** Folder → the folders it may import (itself included). Keep docs/architecture.md's table the same. */
export const ARROWS = {
  shared: ['shared'],
  distributor: ['distributor', 'shared'],
  'hash-tier': ['hash-tier', 'shared'],
  'service-node': ['service-node', 'shared'],
  traffic: ['traffic', 'shared'],
  // The migration client runs on top of the FD's flow table, handler and mesh.
  'migration-client': ['migration-client', 'distributor', 'shared'],
  // The manager is hosted by the hash tier and installs its scopes in the forwarding engine.
  'migration-manager': ['migration-manager', 'hash-tier', 'shared'],
  // Process assemblies: one per role, built from the libraries.
  nodes: ['nodes', ...LIBRARIES],
  cli: ['cli', 'nodes', ...LIBRARIES],
  simulations: ['simulations', 'nodes', ...LIBRARIES],
  // Benchmarks may run the test fixture tables (the same rows drive a micro-benchmark), not the tests.
  bench: ['bench', 'test/fixtures', 'cli', 'simulations', 'nodes', ...LIBRARIES],
  test: ['test', 'bench', 'cli', 'simulations', 'nodes', ...LIBRARIES],
  bin: ['bin', 'cli'],
};

const anyOf = (folders) => `^(${folders.join('|')})/`;

const layerRules = Object.entries(ARROWS).map(([from, to]) => ({
  name: `layer-${from}`,
  severity: 'error',
  comment: `${from}/ may import only ${to.map((f) => `${f}/`).join(', ')} (docs/architecture.md, "Layers and allowed imports")`,
  from: { path: `^${from}/` },
  // Another folder of this repository that is not in the row (npm packages and Node's built-ins are not ours).
  to: { path: '^[^/]+/', pathNot: [anyOf(to), '(^|/)node_modules/'], dependencyTypesNot: ['core'] },
}));

/** @type {import('dependency-cruiser').IConfiguration} */
export default {
  forbidden: [
    {
      name: 'no-cycle',
      severity: 'error',
      comment: 'An import cycle: modules that load each other have no order to read (or initialise) them in. Move what both need down a layer.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to no file (a moved or misspelt path); it would also hide the import from the other rules.',
      from: {},
      to: { couldNotResolve: true },
    },
    ...layerRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|bench/results)/' },
    // See type-only imports (the layers hold for types too).
    tsPreCompilationDeps: true,
    // Resolve packages through their `exports` map as Node does (tsx/esm/api has no file of that name).
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
