import { describe, it, expect } from 'vitest';
import { warmUpMigrationPath } from '../migration-client/warm-up.js';

describe('migration path warm-up', () => {
  it('runs export, codec and import end to end on scratch tables (every record of every round imported)', () => {
    expect(warmUpMigrationPath(3)).toBe(3 * 2048);
    expect(warmUpMigrationPath(0)).toBe(0);
  });
});
