import { v7 as uuidv7 } from "uuid";
import { isIPv4, isIPv6 } from "node:net";
import { credentials, type ChannelCredentials } from "@grpc/grpc-js";
import { GrpcTransport } from "@protobuf-ts/grpc-transport";
import { RpcError, type RpcOptions } from "@protobuf-ts/runtime-rpc";
import { pack, unpack } from "msgpackr";

import {
  isConnectivityError,
  JobAlreadyExistsError,
  JobNotFoundError,
  JobNotTerminalError,
  TaskNotFoundError,
  toSiloError,
} from "./errors";
import { SiloClient } from "./pb/silo.client";
import * as pb from "./pb/silo";
import { DEFAULT_TENANT, findShard, hashTenant, initHasher, type ShardRoute } from "./routing";

/** Rate-limit algorithms and behaviour flags, as in the proto (and Silo's client). */
export { GubernatorAlgorithm, GubernatorBehavior } from "./pb/silo";
export type { ShardOwner, Failure } from "./pb/silo";

/** What a worker call needs to route and name a lease. */
export interface TaskRef {
  id: string;
  shard: string;
  tenantId?: string;
}

/** Status of a job, as the server reports it. */
/** Most jobs {@link SiloGRPCClient.importJobs} sends in one ImportJobs call (the server takes 1,000). */
export const IMPORT_BATCH_JOBS = 500;
/** Bytes of requests {@link SiloGRPCClient.importJobs} puts in one call, about (gRPC messages stop at 4 MiB by default). */
export const IMPORT_BATCH_BYTES = 2 * 1024 * 1024;

export enum JobStatus {
  Scheduled = "Scheduled",
  Running = "Running",
  Succeeded = "Succeeded",
  Failed = "Failed",
  Cancelled = "Cancelled",
}

export enum AttemptStatus {
  Running = "Running",
  Succeeded = "Succeeded",
  Failed = "Failed",
  Cancelled = "Cancelled",
}

const JOB_STATUS: Record<number, JobStatus> = {
  [pb.JobStatus.SCHEDULED]: JobStatus.Scheduled,
  [pb.JobStatus.RUNNING]: JobStatus.Running,
  [pb.JobStatus.SUCCEEDED]: JobStatus.Succeeded,
  [pb.JobStatus.FAILED]: JobStatus.Failed,
  [pb.JobStatus.CANCELLED]: JobStatus.Cancelled,
};

const ATTEMPT_STATUS: Record<number, AttemptStatus> = {
  [pb.AttemptStatus.RUNNING]: AttemptStatus.Running,
  [pb.AttemptStatus.SUCCEEDED]: AttemptStatus.Succeeded,
  [pb.AttemptStatus.FAILED]: AttemptStatus.Failed,
  [pb.AttemptStatus.CANCELLED]: AttemptStatus.Cancelled,
};

export interface RetryPolicy {
  retryCount: number;
  initialIntervalMs: bigint | number;
  maxIntervalMs: bigint | number;
  randomizeInterval?: boolean;
  backoffFactor?: number;
}

/** At most `maxConcurrency` jobs with this key run at once. */
export interface ConcurrencyLimitConfig {
  type: "concurrency";
  key: string;
  maxConcurrency: number;
}

/**
 * A concurrency limit whose maximum a worker's `refreshHandler` recomputes
 * every `refreshIntervalMs`; `metadata` is handed to that handler.
 */
export interface FloatingConcurrencyLimitConfig {
  type: "floatingConcurrency";
  key: string;
  defaultMaxConcurrency: number;
  refreshIntervalMs: bigint | number;
  metadata?: Record<string, string>;
}

/** How a job held back by a rate limit is retried. */
export interface RateLimitRetryPolicyConfig {
  initialBackoffMs: bigint | number;
  maxBackoffMs: bigint | number;
  backoffMultiplier?: number;
  maxRetries?: number;
}

/** A Gubernator-style rate limit: `limit` hits per `durationMs` per `uniqueKey`. */
export interface RateLimitConfig {
  type: "rateLimit";
  name: string;
  uniqueKey: string;
  limit: bigint | number;
  durationMs: bigint | number;
  hits?: number;
  /**
   * `GubernatorAlgorithm.TOKEN_BUCKET` (default) or `LEAKY_BUCKET`; the strings
   * `"tokenBucket"` / `"leakyBucket"` are accepted too. Read back as the string.
   */
  algorithm?: pb.GubernatorAlgorithm | "tokenBucket" | "leakyBucket";
  /** Bitwise OR of `GubernatorBehavior` flags. */
  behavior?: number;
  retryPolicy?: RateLimitRetryPolicyConfig;
}

/** A limit declared on a job. */
export type Limit = ConcurrencyLimitConfig | FloatingConcurrencyLimitConfig | RateLimitConfig;
/** Silo's client's name for {@link Limit}. */
export type JobLimit = Limit;
/** Silo's client's name for a concurrency limit as a task carries it. */
export type ConcurrencyLimit = ConcurrencyLimitConfig;
/** Silo's client's name for a floating limit as a task carries it. */
export type FloatingConcurrencyLimit = FloatingConcurrencyLimitConfig;
/** Silo's client's name for a rate limit as a task carries it. */
export type GubernatorRateLimit = RateLimitConfig;

/** What to enqueue: the payload (MessagePack-encoded) and the job's options. */
export interface EnqueueOptions<P = unknown> {
  payload: P;
  taskGroup?: string;
  id?: string;
  priority?: number;
  startAtMs?: bigint | number;
  retryPolicy?: RetryPolicy;
  limits?: Limit[];
  tenant?: string;
  metadata?: Record<string, string>;
}

export interface JobAttempt {
  jobId: string;
  attemptNumber: number;
  taskId: string;
  status: AttemptStatus;
  startedAtMs: bigint;
  finishedAtMs?: bigint;
  result?: unknown;
  errorCode?: string;
  errorData?: unknown;
}

export interface Job<P = unknown> {
  id: string;
  priority: number;
  enqueueTimeMs: bigint;
  payload: P;
  retryPolicy?: RetryPolicy;
  limits: Limit[];
  metadata: Record<string, string>;
  status: JobStatus;
  statusChangedAtMs: bigint;
  attempts: JobAttempt[];
  nextAttemptStartsAfterMs?: bigint;
  taskGroup: string;
  result?: unknown;
}

/** Silo's client's name for {@link EnqueueOptions}. */
export type EnqueueJobOptions<P = unknown> = EnqueueOptions<P>;

/** Options of `getJob`. */
export interface GetJobOptions {
  /** Include every attempt (default false). */
  includeAttempts?: boolean;
}

/** Options of `awaitResult`. */
export interface AwaitJobOptions {
  /** How often to poll, in ms (default 500). */
  pollIntervalMs?: number;
  /** Give up with `JobNotTerminalError` after this many ms (default: wait forever). */
  timeoutMs?: number;
}

export type JobResult<R = unknown> =
  | { status: JobStatus.Succeeded; finishedAtMs: bigint; result: R }
  | { status: JobStatus.Failed; finishedAtMs: bigint; errorCode: string; errorData: unknown }
  | { status: JobStatus.Cancelled; finishedAtMs: bigint; cancelledAtMs: bigint };

/** A finished attempt of an imported job. */
export interface ImportJobAttempt {
  status: AttemptStatus.Succeeded | AttemptStatus.Failed | AttemptStatus.Cancelled;
  startedAtMs: bigint | number;
  finishedAtMs: bigint | number;
  result?: unknown;
  errorCode?: string;
  errorData?: unknown;
}

/** A job migrated from another system: its id, options and finished attempts. */
export interface ImportJobOptions<P = unknown> extends EnqueueOptions<P> {
  id: string;
  /** Original enqueue time (epoch ms; 0 or absent = now). */
  enqueueTimeMs?: bigint | number;
  attempts?: ImportJobAttempt[];
}

/** What the server made of one imported job. */
export interface ImportJobResult {
  id: string;
  success: boolean;
  error?: string;
  status: JobStatus;
}

/** A column of a {@link SiloGRPCClient.query} result: name and Arrow type (`Utf8`, `Int64`, ...). */
export interface QueryColumn {
  name: string;
  dataType: string;
}

/** Rows of a SQL statement, decoded from MessagePack (Silo's `QueryResult`). */
export interface QueryResult<Row = Record<string, unknown>> {
  columns: QueryColumn[];
  rows: Row[];
  rowCount: number;
}

/** A positional bind value for `$1`, `$2`, ... (numbers: integers as Int64, others as Float64). */
export type QueryParam = boolean | number | bigint | string | Uint8Array | null;

function queryParameter(v: QueryParam): pb.QueryParameter {
  const I64_MAX = 9223372036854775807n;
  if (v === null) return { value: { oneofKind: "nullValue", nullValue: {} } };
  if (typeof v === "boolean") return { value: { oneofKind: "boolValue", boolValue: v } };
  if (typeof v === "string") return { value: { oneofKind: "stringValue", stringValue: v } };
  if (v instanceof Uint8Array) return { value: { oneofKind: "bytesValue", bytesValue: v } };
  if (typeof v === "bigint") {
    return v > I64_MAX
      ? { value: { oneofKind: "uint64Value", uint64Value: v } }
      : { value: { oneofKind: "int64Value", int64Value: v } };
  }
  if (typeof v === "number" && Number.isSafeInteger(v)) {
    return { value: { oneofKind: "int64Value", int64Value: BigInt(v) } };
  }
  if (typeof v === "number") return { value: { oneofKind: "float64Value", float64Value: v } };
  throw new TypeError(`unsupported query parameter type: ${typeof v}`);
}

/** Routing knobs, grouped as Silo's client groups them (`shardRouting`). */
export interface ShardRoutingConfig {
  /** Routing retries before an error surfaces (default 8). */
  maxRetries?: number;
  /** First backoff after an outage, in ms, doubling up to 5 s (default 250). */
  retryDelayMs?: number;
  /** Background topology refresh interval in ms (default 30 s; 0 disables). */
  topologyRefreshIntervalMs?: number;
  /** Deadline of one GetClusterInfo call while refreshing, in ms (default 10 s). */
  topologyRefreshTimeoutMs?: number;
}

/** A seed server: `"host:port"` or `{ host, port }`. */
export type ServerAddress = string | { host: string; port: number };

export interface SiloClientOptions {
  /** Seed servers (`"host:port"` or `{ host, port }`); the client discovers the rest. */
  servers: ServerAddress | ServerAddress[];
  /** Bearer token, or a function returning one per call. */
  token?: string | (() => string | Promise<string>);
  /**
   * TLS on or off. When not given: plaintext if every seed server is a
   * loopback address (`localhost`, `127.x.x.x`, `::1`) and no
   * `tlsCredentials` are given, TLS otherwise.
   */
  useTls?: boolean;
  /** Channel credentials for TLS (defaults to the system roots, or to `tls`). */
  tlsCredentials?: ChannelCredentials;
  /**
   * PEM material for TLS, an alternative to `tlsCredentials` (implies
   * `useTls`): `ca`, the CA that signed the servers' certificates (the nodes'
   * `tls.ca_file`; default the system roots, which `NODE_EXTRA_CA_CERTS`
   * extends); `cert` and `key`, a client certificate for servers with
   * `tls.client_auth = "all"`.
   */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
  /** Per-call deadline in ms (default 30 s). */
  timeoutMs?: number;
  /** Routing retries before an error surfaces (default 8; `shardRouting.maxRetries` wins). */
  maxRetries?: number;
  /** Background topology refresh interval in ms (default 30 s; 0 disables; `shardRouting` wins). */
  topologyRefreshIntervalMs?: number;
  /** Silo's client's grouping of the routing options. */
  shardRouting?: ShardRoutingConfig;
}

/** Silo's client's name for {@link SiloClientOptions}. */
export type SiloGRPCClientOptions = SiloClientOptions;

/** One shard in {@link ClusterTopology}. */
export interface ShardInfoWithRange {
  shardId: string;
  /** gRPC address of the node serving the shard. */
  serverAddr: string;
  /** Raft node id of that node ("" if the server did not say). */
  nodeId: string;
  /** Inclusive start of the shard's tenant-hash range ("" = unbounded). */
  rangeStart: string;
  /** Exclusive end of the range ("" = unbounded). */
  rangeEnd: string;
}

/** A node of the cluster, as GetClusterInfo lists it. */
export interface ClusterMember {
  nodeId: string;
  grpcAddr: string;
  placementRings: string[];
}

/** The topology the client routes by (see `getTopology`). */
export interface ClusterTopology {
  /** Shard id → address of the node serving it. */
  shardToServer: Map<string, string>;
  /** Shards sorted by `rangeStart`. */
  shards: ShardInfoWithRange[];
  /** The cluster's nodes. */
  members: ClusterMember[];
}

/**
 * True for a loopback address: `localhost`, `127.x.x.x` or `::1` (with or
 * without a port; `[::1]:7450` for IPv6 with a port).
 */
export function isLoopbackAddress(addr: string): boolean {
  let host = addr.trim().replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, "");
  if (host.startsWith("[")) host = host.slice(1, host.indexOf("]"));
  else if (host.split(":").length === 2) host = host.split(":")[0];
  host = host.toLowerCase();
  if (host === "localhost") return true;
  if (isIPv4(host)) return host.startsWith("127.");
  if (isIPv6(host)) {
    const norm = new URL(`http://[${host}]`).hostname; // "[::1]", "[::ffff:7f00:1]"
    return norm === "[::1]" || norm.startsWith("[::ffff:7f");
  }
  return false;
}

function addressString(a: ServerAddress): string {
  if (typeof a === "string") return a;
  return a.host.includes(":") && !a.host.startsWith("[") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Decodes MessagePack strictly (payloads): empty bytes throw. */
export function decodeStrict(b: Uint8Array | undefined): unknown {
  if (!b || b.length === 0) throw new Error("empty payload");
  return unpack(b);
}

/** Decodes result/error blobs tolerantly: empty → undefined, not MessagePack → UTF-8 text. */
export function decodeLoose(b: Uint8Array | undefined): unknown {
  if (!b || b.length === 0) return undefined;
  try {
    return unpack(b);
  } catch {
    return Buffer.from(b).toString("utf8");
  }
}

export function serialized(v: unknown): pb.SerializedBytes {
  const bytes = v instanceof Uint8Array ? v : pack(v);
  return { encoding: { oneofKind: "msgpack", msgpack: bytes } };
}

function bytesOf(s: pb.SerializedBytes | undefined): Uint8Array | undefined {
  return s?.encoding.oneofKind === "msgpack" ? s.encoding.msgpack : undefined;
}

export function retryPolicyToPb(p: RetryPolicy | undefined): pb.RetryPolicy | undefined {
  return (
    p && {
      retryCount: p.retryCount,
      initialIntervalMs: BigInt(p.initialIntervalMs),
      maxIntervalMs: BigInt(p.maxIntervalMs),
      randomizeInterval: p.randomizeInterval ?? false,
      backoffFactor: p.backoffFactor ?? 2.0,
    }
  );
}

export function limitToPb(l: Limit): pb.Limit {
  switch (l.type) {
    case "concurrency":
      return { limit: { oneofKind: "concurrency", concurrency: { key: l.key, maxConcurrency: l.maxConcurrency } } };
    case "floatingConcurrency":
      return {
        limit: {
          oneofKind: "floatingConcurrency",
          floatingConcurrency: {
            key: l.key,
            defaultMaxConcurrency: l.defaultMaxConcurrency,
            refreshIntervalMs: BigInt(l.refreshIntervalMs),
            metadata: l.metadata ?? {},
          },
        },
      };
    case "rateLimit":
      return {
        limit: {
          oneofKind: "rateLimit",
          rateLimit: {
            name: l.name,
            uniqueKey: l.uniqueKey,
            limit: BigInt(l.limit),
            durationMs: BigInt(l.durationMs),
            hits: l.hits ?? 1,
            algorithm:
              l.algorithm === "leakyBucket" || l.algorithm === pb.GubernatorAlgorithm.LEAKY_BUCKET
                ? pb.GubernatorAlgorithm.LEAKY_BUCKET
                : pb.GubernatorAlgorithm.TOKEN_BUCKET,
            behavior: l.behavior ?? 0,
            retryPolicy: l.retryPolicy
              ? {
                  initialBackoffMs: BigInt(l.retryPolicy.initialBackoffMs),
                  maxBackoffMs: BigInt(l.retryPolicy.maxBackoffMs),
                  backoffMultiplier: l.retryPolicy.backoffMultiplier ?? 2.0,
                  maxRetries: l.retryPolicy.maxRetries ?? 0,
                }
              : undefined,
          },
        },
      };
  }
}

export function limitFromPb(l: pb.Limit): Limit | undefined {
  switch (l.limit.oneofKind) {
    case "concurrency":
      return { type: "concurrency", key: l.limit.concurrency.key, maxConcurrency: l.limit.concurrency.maxConcurrency };
    case "floatingConcurrency": {
      const f = l.limit.floatingConcurrency;
      return {
        type: "floatingConcurrency",
        key: f.key,
        defaultMaxConcurrency: f.defaultMaxConcurrency,
        refreshIntervalMs: f.refreshIntervalMs,
        metadata: f.metadata,
      };
    }
    case "rateLimit": {
      const r = l.limit.rateLimit;
      return {
        type: "rateLimit",
        name: r.name,
        uniqueKey: r.uniqueKey,
        limit: r.limit,
        durationMs: r.durationMs,
        hits: r.hits,
        algorithm: r.algorithm === pb.GubernatorAlgorithm.LEAKY_BUCKET ? "leakyBucket" : "tokenBucket",
        behavior: r.behavior,
        retryPolicy: r.retryPolicy && {
          initialBackoffMs: r.retryPolicy.initialBackoffMs,
          maxBackoffMs: r.retryPolicy.maxBackoffMs,
          backoffMultiplier: r.retryPolicy.backoffMultiplier,
          maxRetries: r.retryPolicy.maxRetries,
        },
      };
    }
    default:
      return undefined;
  }
}

function jobFromPb<P>(r: pb.GetJobResponse): Job<P> {
  return {
    id: r.id,
    priority: r.priority,
    enqueueTimeMs: r.enqueueTimeMs,
    payload: decodeLoose(bytesOf(r.payload)) as P,
    retryPolicy: r.retryPolicy && {
      retryCount: r.retryPolicy.retryCount,
      initialIntervalMs: r.retryPolicy.initialIntervalMs,
      maxIntervalMs: r.retryPolicy.maxIntervalMs,
      randomizeInterval: r.retryPolicy.randomizeInterval,
      backoffFactor: r.retryPolicy.backoffFactor,
    },
    limits: r.limits.map(limitFromPb).filter((l): l is Limit => l !== undefined),
    metadata: r.metadata,
    status: JOB_STATUS[r.status],
    statusChangedAtMs: r.statusChangedAtMs,
    attempts: r.attempts.map((a) => ({
      jobId: a.jobId,
      attemptNumber: a.attemptNumber,
      taskId: a.taskId,
      status: ATTEMPT_STATUS[a.status],
      startedAtMs: a.startedAtMs,
      finishedAtMs: a.finishedAtMs,
      result: decodeLoose(bytesOf(a.result)),
      errorCode: a.errorCode,
      errorData: decodeLoose(bytesOf(a.errorData)),
    })),
    nextAttemptStartsAfterMs: r.nextAttemptStartsAfterMs,
    taskGroup: r.taskGroup,
    result: decodeLoose(bytesOf(r.result)),
  };
}

function metaString(e: RpcError, key: string): string | undefined {
  const v = e.meta?.[key];
  return Array.isArray(v) ? v[0] : v;
}

/** What a TLS-only node answers a plaintext client (FAILED_PRECONDITION). */
const TLS_ONLY = "serves gRPC over TLS only";

function retryable(e: unknown): boolean {
  if (!(e instanceof RpcError)) return false;
  // A statement over the server's SQL time limit would only time out again.
  if (e.code === "DEADLINE_EXCEEDED" && e.message.includes("statement_timeout_ms")) return false;
  if (isConnectivityError(e)) return true;
  switch (e.code) {
    case "CANCELLED":
    case "UNKNOWN":
      return true;
    case "NOT_FOUND":
      return e.message.includes("shard not found");
    default:
      return false;
  }
}

const isShardNotFound = (e: RpcError) => e.message.includes("shard not found");

/** The job's status named in GetJobResult's "job is not complete: status is X". */
function statusInMessage(message: string): JobStatus | undefined {
  const m = message.match(/status is (\w+)/);
  return Object.values(JobStatus).find((s) => s.toLowerCase() === m?.[1].toLowerCase());
}

/**
 * Turns errors of job calls into typed ones: NOT_FOUND → JobNotFoundError,
 * ALREADY_EXISTS → JobAlreadyExistsError, "job is not complete" →
 * JobNotTerminalError, any other RpcError → its SiloGrpcError subclass.
 */
function mapJobError(e: unknown, jobId: string, tenant?: string): unknown {
  if (e instanceof RpcError && !(e instanceof JobNotTerminalError)) {
    if (e.code === "NOT_FOUND" && !isShardNotFound(e)) return new JobNotFoundError(jobId, e.message, e.meta, tenant);
    if (e.code === "ALREADY_EXISTS") return new JobAlreadyExistsError(jobId, e.message, e.meta, tenant);
    if (e.code === "FAILED_PRECONDITION" && e.message.startsWith("job is not complete")) {
      return new JobNotTerminalError(jobId, statusInMessage(e.message), e.message);
    }
  }
  return toSiloError(e);
}

/** NOT_FOUND on a worker call → TaskNotFoundError; any other RpcError → its SiloGrpcError subclass. */
function mapTaskError(e: unknown, taskId: string): unknown {
  if (e instanceof RpcError && e.code === "NOT_FOUND" && !isShardNotFound(e)) {
    return new TaskNotFoundError(taskId, e.message, e.meta);
  }
  return toSiloError(e);
}

/**
 * A client for a Silo cluster: routes each tenant to its shard's owner,
 * follows redirects and retries outages (SEMANTICS §2, §13).
 */
export class SiloGRPCClient {
  private readonly seeds: string[];
  private readonly opts: SiloClientOptions;
  /**
   * Whether connections use TLS: from the options, else plaintext for
   * loopback seeds, upgraded once to TLS if such a server says it serves
   * TLS only ({@link upgradeToTls}).
   */
  private useTls: boolean;
  private readonly connections = new Map<string, { transport: GrpcTransport; client: SiloClient }>();
  private routes: ShardRoute[] = [];
  private members: ClusterMember[] = [];
  private topology?: Promise<void>;
  private refreshTimer?: NodeJS.Timeout;
  private pollCounter = 0;

  constructor(opts: SiloClientOptions) {
    this.opts = opts;
    this.seeds = (Array.isArray(opts.servers) ? opts.servers : [opts.servers]).map(addressString);
    if (this.seeds.length === 0) throw new Error("SiloGRPCClient needs at least one server");
    // Local servers speak plaintext (scripts/serve, the seed documents'
    // localhost:7450); anything else defaults to TLS.
    this.useTls =
      opts.useTls ?? (opts.tlsCredentials !== undefined || opts.tls !== undefined || !this.seeds.every(isLoopbackAddress));
    if (opts.useTls === false && (opts.tls !== undefined || opts.tlsCredentials !== undefined)) {
      throw new Error("useTls: false contradicts the tls / tlsCredentials options given");
    }
    if ((opts.tls?.cert === undefined) !== (opts.tls?.key === undefined)) {
      throw new Error("tls.cert and tls.key go together (a client certificate and its private key)");
    }
    const every = opts.shardRouting?.topologyRefreshIntervalMs ?? opts.topologyRefreshIntervalMs ?? 30_000;
    if (every > 0) {
      this.refreshTimer = setInterval(() => void this.refreshTopology().catch(() => undefined), every);
      this.refreshTimer.unref();
    }
  }

  /**
   * When TLS was not chosen explicitly (loopback seeds default to plaintext)
   * and a server answered that it serves TLS only, switches every connection
   * to TLS (trusting the system roots, which `NODE_EXTRA_CA_CERTS` or
   * `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` extend) and returns true: the caller
   * retries. So the seed documents' `new SiloGRPCClient({ servers:
   * ["localhost:7450"] })` works against a local TLS node too.
   */
  private upgradeToTls(e: unknown): boolean {
    const explicit = this.opts.useTls !== undefined || this.opts.tls !== undefined || this.opts.tlsCredentials !== undefined;
    if (explicit || this.useTls || !(e instanceof RpcError) || !e.message.includes(TLS_ONLY)) return false;
    this.useTls = true;
    for (const c of this.connections.values()) c.transport.close();
    this.connections.clear();
    return true;
  }

  private tlsCredentials(): ChannelCredentials {
    if (this.opts.tlsCredentials) return this.opts.tlsCredentials;
    const pem = (v?: string | Buffer) => (v === undefined ? null : Buffer.from(v));
    const t = this.opts.tls;
    return credentials.createSsl(pem(t?.ca), pem(t?.key), pem(t?.cert));
  }

  private connection(addr: string) {
    let c = this.connections.get(addr);
    if (!c) {
      const transport = new GrpcTransport({
        host: addr,
        channelCredentials: this.useTls ? this.tlsCredentials() : credentials.createInsecure(),
        clientOptions: {
          "grpc.keepalive_time_ms": 5_000,
          "grpc.keepalive_permit_without_calls": 1,
          "grpc.max_receive_message_length": 128 * 1024 * 1024,
          "grpc.max_send_message_length": 128 * 1024 * 1024,
        },
      });
      c = { transport, client: new SiloClient(transport) };
      this.connections.set(addr, c);
    }
    return c.client;
  }

  private async callOptions(timeoutMs?: number): Promise<RpcOptions> {
    const meta: Record<string, string> = {};
    const t = this.opts.token;
    if (t) meta.authorization = `Bearer ${typeof t === "function" ? await t() : t}`;
    return { meta, timeout: timeoutMs ?? this.opts.timeoutMs ?? 30_000 };
  }

  /** Re-reads the topology from the first server that answers. */
  async refreshTopology(): Promise<void> {
    await initHasher();
    const candidates = [...new Set([...this.seeds, ...this.connections.keys(), ...this.routes.map((r) => r.addr)])];
    const timeout = this.opts.shardRouting?.topologyRefreshTimeoutMs ?? 10_000;
    let last: unknown = new Error("no server answered GetClusterInfo");
    for (const addr of candidates) {
      try {
        const info = await this.connection(addr).getClusterInfo({}, await this.callOptions(timeout)).response;
        const routes = info.shardOwners
          .map((o) => ({ shardId: o.shardId, rangeStart: o.rangeStart, rangeEnd: o.rangeEnd, addr: o.grpcAddr, nodeId: o.nodeId }))
          .filter((r) => r.addr !== "")
          .sort((a, b) => (a.rangeStart < b.rangeStart ? -1 : a.rangeStart > b.rangeStart ? 1 : 0));
        if (routes.length === 0) throw new RpcError("no shard has an owner yet", "UNAVAILABLE");
        this.routes = routes;
        this.members = info.members.map((m) => ({ nodeId: m.nodeId, grpcAddr: m.grpcAddr, placementRings: [...m.placementRings] }));
        const owners = new Set(routes.map((r) => r.addr));
        for (const [a, c] of this.connections) {
          if (!owners.has(a) && !this.seeds.includes(a)) {
            c.transport.close();
            this.connections.delete(a);
          }
        }
        return;
      } catch (e) {
        if (this.upgradeToTls(e)) return this.refreshTopology();
        last = e;
      }
    }
    throw toSiloError(last);
  }

  /**
   * The topology the client routes by: each shard with its tenant-hash range
   * and the address and node id of its owner, and the cluster's members. It
   * is the last one read (at the first call, every
   * `topologyRefreshIntervalMs`, after an outage); empty before the first
   * call, so `await client.refreshTopology()` first for a fresh one.
   */
  getTopology(): ClusterTopology {
    const shards = this.routes.map((r) => ({
      shardId: r.shardId,
      serverAddr: r.addr,
      nodeId: r.nodeId ?? "",
      rangeStart: r.rangeStart,
      rangeEnd: r.rangeEnd,
    }));
    return {
      shardToServer: new Map(shards.map((s) => [s.shardId, s.serverAddr])),
      shards,
      members: this.members.map((m) => ({ ...m, placementRings: [...m.placementRings] })),
    };
  }

  /**
   * The id of the shard that holds `tenant`'s jobs (XXH64 of the tenant in the
   * shard ranges of {@link getTopology}). Throws if no topology has been read
   * yet: `await client.refreshTopology()` (or any call) first.
   */
  getShardForTenant(tenant: string): string {
    if (this.routes.length === 0) throw new Error("Cluster topology not discovered yet: await client.refreshTopology() first");
    const hash = hashTenant(tenant);
    const route = findShard(this.routes, hash);
    if (!route) throw new Error(`No shard found for tenant ${tenant} (hash ${hash})`);
    return route.shardId;
  }

  private async ensureTopology(): Promise<void> {
    if (this.routes.length > 0) return;
    this.topology ??= this.refreshTopology().finally(() => (this.topology = undefined));
    await this.topology;
  }

  private async routeTenant(tenant: string | undefined): Promise<ShardRoute> {
    await this.ensureTopology();
    const hash = hashTenant(tenant ?? DEFAULT_TENANT);
    const route = findShard(this.routes, hash);
    if (!route) throw new Error(`No shard found for tenant ${tenant ?? DEFAULT_TENANT} (hash ${hash})`);
    return route;
  }

  /**
   * Runs `f` against the owner of the shard (by tenant or shard id), following
   * `x-silo-shard-owner-addr` redirects; after an outage it refreshes the
   * topology and retries at once when the owner changed, else backs off.
   */
  private async retryLoop<T>(
    target: { tenant?: string; shard?: string },
    f: (client: SiloClient, shard: string, opts: RpcOptions) => Promise<T>,
  ): Promise<T> {
    const maxRetries = this.opts.shardRouting?.maxRetries ?? this.opts.maxRetries ?? 8;
    let delay = this.opts.shardRouting?.retryDelayMs ?? 250;
    let triedAtOnce: string | undefined;
    for (let attempt = 0; ; attempt++) {
      let route: ShardRoute | undefined;
      try {
        route = await this.resolve(target);
        return await f(this.connection(route.addr), route.shardId, await this.callOptions());
      } catch (e) {
        if (this.upgradeToTls(e)) continue;
        if (!retryable(e) || attempt >= maxRetries) throw toSiloError(e);
        const owner = e instanceof RpcError ? metaString(e, "x-silo-shard-owner-addr") : undefined;
        if (route && owner && owner !== route.addr) {
          const node = e instanceof RpcError ? metaString(e, "x-silo-shard-owner-node") : undefined;
          for (const r of this.routes) {
            if (r.shardId !== route.shardId) continue;
            r.addr = owner;
            r.nodeId = node;
          }
          continue;
        }
        // Ask the cluster who owns the shard now: a follower answers once an
        // election has settled, so a new owner is tried at once; the same
        // owner (or none) only after a back-off.
        // One immediate try per new owner, so owners that flap cannot use
        // up the retries without a pause.
        await this.refreshTopology().catch(() => undefined);
        const failed = route;
        const now = failed && this.routes.find((r) => r.shardId === failed.shardId);
        if (failed && now && now.addr !== failed.addr && now.addr !== triedAtOnce) {
          triedAtOnce = now.addr;
          continue;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  private async resolve(target: { tenant?: string; shard?: string }): Promise<ShardRoute> {
    if (target.shard === undefined) return this.routeTenant(target.tenant);
    await this.ensureTopology().catch(() => undefined);
    return (
      this.routes.find((r) => r.shardId === target.shard) ?? {
        shardId: target.shard,
        rangeStart: "",
        rangeEnd: "",
        addr: this.routes[0]?.addr ?? this.seeds[0],
      }
    );
  }

  /** Enqueues a job and returns its handle. */
  async enqueue<P = unknown>(o: EnqueueOptions<P>): Promise<JobHandle> {
    // An id chosen here makes a retry after an ambiguous failure recognisable.
    // Time-ordered (UUID version 7): the server stores the job's records next
    // to the tenant's newest ones instead of at random places, which costs it
    // less per job than a random id (docs/BENCHMARKS.md, "Ordered job ids").
    const id = o.id ?? uuidv7();
    let tries = 0;
    try {
      await this.retryLoop({ tenant: o.tenant }, async (c, shard, opts) => {
        tries++;
        const req: pb.EnqueueRequest = {
          shard,
          id,
          priority: o.priority ?? 50,
          startAtMs: BigInt(o.startAtMs ?? Date.now()),
          retryPolicy: retryPolicyToPb(o.retryPolicy),
          payload: serialized(o.payload),
          limits: (o.limits ?? []).map(limitToPb),
          tenant: o.tenant,
          metadata: o.metadata ?? {},
          taskGroup: o.taskGroup ?? "default",
        };
        return (await c.enqueue(req, opts).response).id;
      });
    } catch (e) {
      const mapped = mapJobError(e, id, o.tenant);
      if (!(mapped instanceof JobAlreadyExistsError && tries > 1 && o.id === undefined)) throw mapped;
    }
    return new JobHandle(this, id, o.tenant);
  }

  /** A handle for an existing job. */
  handle(id: string, tenant?: string): JobHandle {
    return new JobHandle(this, id, tenant);
  }

  /** Reads a job (with its attempts if asked); JobNotFoundError if there is none. */
  async getJob<P = unknown>(id: string, tenant?: string, opts?: GetJobOptions): Promise<Job<P>> {
    try {
      const r = await this.retryLoop({ tenant }, async (c, shard, o) =>
        c.getJob({ shard, id, tenant, includeAttempts: opts?.includeAttempts ?? false }, o).response,
      );
      return jobFromPb<P>(r);
    } catch (e) {
      throw mapJobError(e, id, tenant);
    }
  }

  /**
   * Runs read-only SQL over the jobs of the shard `tenant` routes to (tables
   * `jobs`, `tasks`, `queues`, `tenant_counts`, `queue_counts`; see the server
   * README "Querying jobs with SQL"). With tenancy on, the statement sees only
   * `tenant`'s rows. `params` bind `$1`, `$2`, ... by position. Bad SQL is an
   * `INVALID_ARGUMENT` error carrying the engine's message; the server's
   * limits answer `RESOURCE_EXHAUSTED` or `DEADLINE_EXCEEDED`.
   */
  async query<Row = Record<string, unknown>>(sql: string, tenant?: string, params?: QueryParam[]): Promise<QueryResult<Row>> {
    const parameters = (params ?? []).map(queryParameter);
    const r = await this.retryLoop({ tenant }, async (c, shard, o) => c.query({ shard, sql, tenant, parameters }, o).response);
    return {
      columns: r.columns.map((c) => ({ name: c.name, dataType: c.dataType })),
      rows: r.rows.map((row) => decodeStrict(bytesOf(row)) as Row),
      rowCount: r.rowCount,
    };
  }

  /** The job's current status; JobNotFoundError if there is no such job. */
  async getJobStatus(id: string, tenant?: string): Promise<JobStatus> {
    return (await this.getJob(id, tenant)).status;
  }

  /**
   * The outcome of a finished job. JobNotTerminalError (FAILED_PRECONDITION)
   * while it is scheduled or running, JobNotFoundError if there is no such job.
   */
  async getJobResult<R = unknown>(id: string, tenant?: string): Promise<JobResult<R>> {
    let r: pb.GetJobResultResponse;
    try {
      r = await this.retryLoop({ tenant }, async (c, shard, o) => c.getJobResult({ shard, id, tenant }, o).response);
    } catch (e) {
      throw mapJobError(e, id, tenant);
    }
    const status = JOB_STATUS[r.status];
    switch (r.result.oneofKind) {
      case "successData":
        return { status: JobStatus.Succeeded, finishedAtMs: r.finishedAtMs, result: decodeLoose(bytesOf(r.result.successData)) as R };
      case "failure":
        return {
          status: JobStatus.Failed,
          finishedAtMs: r.finishedAtMs,
          errorCode: r.result.failure.errorCode,
          errorData: decodeLoose(bytesOf(r.result.failure.errorData)),
        };
      default:
        return {
          status: JobStatus.Cancelled,
          finishedAtMs: r.finishedAtMs,
          cancelledAtMs: r.result.oneofKind === "cancelled" ? r.result.cancelled.cancelledAtMs : r.finishedAtMs,
        } as JobResult<R> & { status: typeof status };
    }
  }

  /**
   * Polls GetJobResult until the job is terminal. After `timeoutMs` it throws
   * JobNotTerminalError, message `Timeout waiting for job <id> to complete
   * after <ms>ms`, as Silo's client does.
   */
  async awaitResult<R = unknown>(id: string, tenant?: string, opts?: AwaitJobOptions): Promise<JobResult<R>> {
    const started = Date.now();
    const every = opts?.pollIntervalMs ?? 500;
    // Without a timeout, transient errors are still surfaced after this long.
    const transientBudgetMs = opts?.timeoutMs ?? 60_000;
    for (;;) {
      try {
        return await this.getJobResult<R>(id, tenant);
      } catch (e) {
        // An election or a dead node is transient: keep polling within the
        // caller's timeout rather than surfacing it (issue #15).
        if (retryable(e) && Date.now() - started < transientBudgetMs) {
          await sleep(every);
          continue;
        }
        if (!(e instanceof JobNotTerminalError)) throw e;
        if (opts?.timeoutMs !== undefined && Date.now() - started >= opts.timeoutMs) {
          throw new JobNotTerminalError(id, e.status, `Timeout waiting for job ${id} to complete after ${opts.timeoutMs}ms`);
        }
      }
      await sleep(every);
    }
  }

  private async jobCall(id: string, tenant: string | undefined, call: (c: SiloClient, shard: string, o: RpcOptions) => Promise<unknown>) {
    try {
      await this.retryLoop({ tenant }, call);
    } catch (e) {
      throw mapJobError(e, id, tenant);
    }
  }

  /** Cancels a job (SiloFailedPreconditionError if already cancelled or finished). */
  cancelJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.cancelJob({ shard, id, tenant }, o).response);
  }
  /** Erases a finished job (INTERNAL while it is scheduled or running). */
  deleteJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.deleteJob({ shard, id, tenant }, o).response);
  }
  /** Re-queues a failed or cancelled job with a fresh retry counter (SiloFailedPreconditionError otherwise). */
  restartJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.restartJob({ shard, id, tenant }, o).response);
  }
  /** Makes a future-scheduled job runnable now (SiloFailedPreconditionError otherwise). */
  expediteJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.expediteJob({ shard, id, tenant }, o).response);
  }

  /** Test helper: lease one named job now, ignoring its start time and limits. */
  async leaseTask(id: string, workerId: string, tenant?: string): Promise<pb.Task> {
    try {
      const r = await this.retryLoop({ tenant }, async (c, shard, o) => c.leaseTask({ shard, id, tenant, workerId }, o).response);
      return r.task!;
    } catch (e) {
      throw mapJobError(e, id, tenant);
    }
  }

  /** One LeaseTasks poll, sent to the next owner in turn (workers). */
  async leaseTasks(req: { workerId: string; taskGroup: string; maxTasks: number; tenant?: string }): Promise<pb.LeaseTasksResponse> {
    await this.ensureTopology();
    const owners = [...new Set(this.routes.map((r) => r.addr))];
    const addr = owners[this.pollCounter++ % owners.length];
    try {
      return await this.connection(addr).leaseTasks(
        { workerId: req.workerId, taskGroup: req.taskGroup, maxTasks: req.maxTasks, tenant: req.tenant },
        await this.callOptions(),
      ).response;
    } catch (e) {
      if (retryable(e)) await this.refreshTopology().catch(() => undefined);
      throw toSiloError(e);
    }
  }

  /** Runs a worker call routed by the task's shard; a missing lease becomes TaskNotFoundError. */
  private async taskCall<T>(task: TaskRef, call: (c: SiloClient, shard: string, o: RpcOptions) => Promise<T>): Promise<T> {
    try {
      return await this.retryLoop({ shard: task.shard }, call);
    } catch (e) {
      throw mapTaskError(e, task.id);
    }
  }

  heartbeat(task: TaskRef, workerId: string): Promise<pb.HeartbeatResponse> {
    return this.taskCall(task, (c, shard, o) =>
      c.heartbeat({ shard, workerId, taskId: task.id, tenantId: task.tenantId }, o).response,
    );
  }

  async reportOutcome(task: TaskRef, outcome: pb.ReportOutcomeRequest["outcome"]): Promise<void> {
    await this.taskCall(task, (c, shard, o) =>
      c.reportOutcome({ shard, taskId: task.id, outcome, tenantId: task.tenantId }, o).response,
    );
  }

  async reportRefreshOutcome(task: TaskRef, outcome: pb.ReportRefreshOutcomeRequest["outcome"]): Promise<void> {
    await this.taskCall(task, (c, shard, o) =>
      c.reportRefreshOutcome({ shard, taskId: task.id, outcome, tenantId: task.tenantId }, o).response,
    );
  }

  /**
   * Bulk-creates jobs migrated from another system, each with its finished
   * attempts, or updates them: an id that already exists is reimported as
   * Silo does (its stored attempts must come first, unchanged, followed by at
   * least one new one; a running or succeeded job is refused). Every attempt
   * but the last must be failed. Jobs are sent in batches per shard of at most
   * {@link IMPORT_BATCH_JOBS} jobs and about {@link IMPORT_BATCH_BYTES} bytes.
   * Returns one result per job, in the order given; a job the server refused
   * has `success: false` and the server's reason in `error`.
   */
  async importJobs(jobs: ImportJobOptions[]): Promise<ImportJobResult[]> {
    const toPb: Record<string, pb.AttemptStatus> = {
      [AttemptStatus.Succeeded]: pb.AttemptStatus.SUCCEEDED,
      [AttemptStatus.Failed]: pb.AttemptStatus.FAILED,
      [AttemptStatus.Cancelled]: pb.AttemptStatus.CANCELLED,
    };
    const toRequest = (j: ImportJobOptions, shard: string): pb.ImportJobRequest => ({
      shard,
      id: j.id,
      priority: j.priority ?? 50,
      enqueueTimeMs: BigInt(j.enqueueTimeMs ?? 0),
      startAtMs: BigInt(j.startAtMs ?? 0),
      retryPolicy: retryPolicyToPb(j.retryPolicy),
      payload: serialized(j.payload),
      limits: (j.limits ?? []).map(limitToPb),
      tenant: j.tenant,
      metadata: j.metadata ?? {},
      taskGroup: j.taskGroup ?? "default",
      attempts: (j.attempts ?? []).map((a) => ({
        status: toPb[a.status],
        startedAtMs: BigInt(a.startedAtMs),
        finishedAtMs: BigInt(a.finishedAtMs),
        result: a.result === undefined ? undefined : serialized(a.result),
        errorCode: a.errorCode,
        errorData: a.errorData === undefined ? undefined : serialized(a.errorData),
      })),
    });
    // Group by shard (the tenant decides it), then cut each group into batches.
    const byShard = new Map<string, { job: ImportJobOptions; index: number }[]>();
    for (const [index, job] of jobs.entries()) {
      const route = await this.routeTenant(job.tenant);
      const group = byShard.get(route.shardId) ?? [];
      group.push({ job, index });
      byShard.set(route.shardId, group);
    }
    const out: ImportJobResult[] = new Array(jobs.length);
    for (const group of byShard.values()) {
      let batch: { job: ImportJobOptions; index: number; request?: pb.ImportJobRequest }[] = [];
      let bytes = 0;
      const flush = async () => {
        if (batch.length === 0) return;
        const sending = batch;
        batch = [];
        bytes = 0;
        const reply = await this.retryLoop({ tenant: sending[0].job.tenant }, async (c, shard, o) =>
          c.importJobs({ jobs: sending.map((b) => toRequest(b.job, shard)) }, o).response,
        );
        reply.results.forEach((res, i) => {
          out[sending[i].index] = { id: res.id, success: res.success, error: res.error, status: JOB_STATUS[res.status] };
        });
      };
      for (const entry of group) {
        const size = pb.ImportJobRequest.toBinary(toRequest(entry.job, "")).length;
        if (batch.length > 0 && (batch.length >= IMPORT_BATCH_JOBS || bytes + size > IMPORT_BATCH_BYTES)) await flush();
        batch.push(entry);
        bytes += size;
      }
      await flush();
    }
    return out;
  }

  /** Wipes every job on the servers (dev mode only; test suites). */
  async resetShards(): Promise<void> {
    await this.ensureTopology();
    for (const addr of new Set(this.routes.map((r) => r.addr))) {
      await this.connection(addr)
        .resetShards({}, await this.callOptions())
        .response.catch((e: unknown) => Promise.reject(toSiloError(e)));
    }
  }

  /** Stops the topology refresh and closes every connection. */
  close(): void {
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    for (const c of this.connections.values()) c.transport.close();
    this.connections.clear();
  }
}

/** A job by id (and tenant), with the calls that act on it. */
export class JobHandle {
  constructor(
    private readonly client: SiloGRPCClient,
    public readonly id: string,
    public readonly tenant?: string,
  ) {}

  /** See `SiloGRPCClient.getJob`. */
  getJob<P = unknown>(opts?: GetJobOptions): Promise<Job<P>> {
    return this.client.getJob<P>(this.id, this.tenant, opts);
  }
  /** See `SiloGRPCClient.getJobStatus`. */
  getStatus(): Promise<JobStatus> {
    return this.client.getJobStatus(this.id, this.tenant);
  }
  /** See `SiloGRPCClient.awaitResult`. */
  awaitResult<R = unknown>(opts?: AwaitJobOptions): Promise<JobResult<R>> {
    return this.client.awaitResult<R>(this.id, this.tenant, opts);
  }
  /** See `SiloGRPCClient.cancelJob`. */
  cancel(): Promise<void> {
    return this.client.cancelJob(this.id, this.tenant);
  }
  /** See `SiloGRPCClient.deleteJob`. */
  delete(): Promise<void> {
    return this.client.deleteJob(this.id, this.tenant);
  }
  /** See `SiloGRPCClient.restartJob`. */
  restart(): Promise<void> {
    return this.client.restartJob(this.id, this.tenant);
  }
  /** See `SiloGRPCClient.expediteJob`. */
  expedite(): Promise<void> {
    return this.client.expediteJob(this.id, this.tenant);
  }
}
