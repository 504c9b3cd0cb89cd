/** openStore / parseStoreUrl: which URL opens which store; bad URLs are CONFIG_INVALID naming the URL. */
import { describe, expect, it } from 'vitest';
import { BatonError, ErrorCode } from '../shared/errors.js';
import { MemoryStore } from '../shared/store/memory.js';
import { parseStoreUrl } from '../shared/store/store.js';
import { openStore } from '../shared/store/open.js';

describe('parseStoreUrl', () => {
  it.each([
    ['memory:', { kind: 'memory', hosts: [] }],
    ['embedded:', { kind: 'memory', hosts: [] }],
    ['embedded', { kind: 'memory', hosts: [] }],
    ['memory', { kind: 'memory', hosts: [] }],
    ['etcd://127.0.0.1:2379', { kind: 'etcd', hosts: ['127.0.0.1:2379'] }],
    ['etcd://a:1,b.example:2379/prod', { kind: 'etcd', hosts: ['a:1', 'b.example:2379'], cluster: 'prod' }],
    ['etcd://[::1]:2379', { kind: 'etcd', hosts: ['[::1]:2379'] }],
    ['consul://localhost:8500', { kind: 'consul', hosts: ['localhost:8500'] }],
  ])('%s', (url, want) => {
    expect(parseStoreUrl(url)).toEqual(want);
  });

  it.each(['', 'memory:x', 'embeded', 'redis://h:1', 'etcd://', 'etcd://host', 'etcd://h:0', 'etcd://h:70000', 'etcd://h:1,', 'consul://a:1,b:2', 'etcd://h:1/bad name', 'etcd://h:1/a/b'])(
    'rejects %j with CONFIG_INVALID naming the URL',
    (url) => {
      let err: unknown;
      try {
        parseStoreUrl(url);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BatonError);
      expect((err as BatonError).code).toBe(ErrorCode.CONFIG_INVALID);
      expect((err as BatonError).message).toContain(JSON.stringify(url));
    },
  );
});

describe('openStore', () => {
  it('memory: and embedded: open a MemoryStore; the URL path names the cluster', async () => {
    const m = await openStore('embedded:', { cluster: 'c1' });
    expect(m).toBeInstanceOf(MemoryStore);
    expect(m.cluster).toBe('c1');
    await m.close();
    const e = await openStore('etcd://127.0.0.1:1/c2', { cluster: 'ignored', timeoutMs: 500 });
    expect([e.kind, e.cluster]).toEqual(['etcd', 'c2']);
    await e.close();
  });
  it('rejects a bad cluster name', async () => {
    await expect(openStore('memory:', { cluster: '../x' })).rejects.toMatchObject({ code: ErrorCode.CONFIG_INVALID });
  });
});
