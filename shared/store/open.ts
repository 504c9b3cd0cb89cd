/**
 * Opens a cluster-state store by URL (docs/store.md). Apart from store.ts
 * (the contract every implementation imports) so that the factory, which
 * loads the implementations, sits above them: store.ts loading memory.ts,
 * etcd.ts and consul.ts while they import store.ts was an import cycle.
 */
import { parseStoreUrl, type ClusterStore, type StoreOptions } from './store.js';

/**
 * Opens a store by URL. The etcd and Consul clients are loaded only when
 * used. Does not contact the store: the first call that does reports
 * STORE_UNAVAILABLE if it cannot be reached.
 */
export async function openStore(url: string, opts: StoreOptions = {}): Promise<ClusterStore> {
  const p = parseStoreUrl(url);
  const o: StoreOptions = p.cluster !== undefined ? { ...opts, cluster: p.cluster } : opts;
  switch (p.kind) {
    case 'memory': {
      const { MemoryStore } = await import('./memory.js');
      return new MemoryStore(o);
    }
    case 'etcd': {
      const { EtcdStore } = await import('./etcd.js');
      return new EtcdStore(p.hosts, o);
    }
    case 'consul': {
      const { ConsulStore } = await import('./consul.js');
      return new ConsulStore(p.hosts[0]!, o);
    }
  }
}
