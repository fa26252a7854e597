import xxhash from "xxhash-wasm";

/** One shard of the tenant-hash space and the node serving it. */
export interface ShardRoute {
  shardId: string;
  rangeStart: string;
  rangeEnd: string;
  addr: string;
  /** Raft node id of the owner, when the server named it. */
  nodeId?: string;
}

/** The tenant every job belongs to when tenancy is off. */
export const DEFAULT_TENANT = "-";

let loading: Promise<void> | undefined;
let h64: ((input: string) => bigint) | undefined;

/**
 * Loads the XXH64 hasher (WebAssembly). The client does this itself; call it
 * only before using {@link hashTenant} directly.
 */
export function initHasher(): Promise<void> {
  loading ??= xxhash().then((api) => {
    h64 = (s) => api.h64(s);
  });
  return loading;
}

/**
 * XXH64 (seed 0) of the tenant as 16 lowercase hex digits (SEMANTICS §2.2).
 * Synchronous; `await initHasher()` first.
 */
export function hashTenant(tenant: string): string {
  if (!h64) throw new Error("XXH64 hasher not initialized: await initHasher() first");
  return h64(tenant).toString(16).padStart(16, "0");
}

/** {@link hashTenant}, loading the hasher first if needed. */
export async function tenantHash(tenant: string): Promise<string> {
  await initHasher();
  return hashTenant(tenant);
}

/** The shard whose half-open range holds `hash`, from shards sorted by range start. */
export function findShard<S extends { rangeStart: string; rangeEnd: string }>(shards: S[], hash: string): S | undefined {
  let found: S | undefined;
  for (const r of shards) {
    if (r.rangeStart === "" || r.rangeStart <= hash) found = r;
    else break;
  }
  if (found && (found.rangeEnd === "" || hash < found.rangeEnd)) return found;
  return undefined;
}

/**
 * The shard whose range holds `key` (a hash from {@link hashTenant}), from
 * shards sorted by `rangeStart` (Silo's client's name and argument order).
 */
export function shardForTenant<S extends { rangeStart: string; rangeEnd: string }>(key: string, shards: S[]): S | undefined {
  return findShard(shards, key);
}
