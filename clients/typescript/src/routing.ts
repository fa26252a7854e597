import xxhash from "xxhash-wasm";

/** One shard of the tenant-hash space and the node serving it. */
export interface ShardRoute {
  shardId: string;
  rangeStart: string;
  rangeEnd: string;
  addr: string;
}

/** The tenant every job belongs to when tenancy is off. */
export const DEFAULT_TENANT = "-";

let hasher: Promise<Awaited<ReturnType<typeof xxhash>>> | undefined;

/** XXH64 (seed 0) of the tenant as 16 lowercase hex digits (SEMANTICS §2.2). */
export async function tenantHash(tenant: string): Promise<string> {
  hasher ??= xxhash();
  const h = await hasher;
  return h.h64(tenant).toString(16).padStart(16, "0");
}

/** The shard whose half-open range holds `hash`, from routes sorted by start. */
export function findShard(routes: ShardRoute[], hash: string): ShardRoute | undefined {
  let found: ShardRoute | undefined;
  for (const r of routes) {
    if (r.rangeStart === "" || r.rangeStart <= hash) found = r;
    else break;
  }
  if (found && (found.rangeEnd === "" || hash < found.rangeEnd)) return found;
  return undefined;
}
