import { randomUUID } from "node:crypto";
import { credentials, type ChannelCredentials } from "@grpc/grpc-js";
import { GrpcTransport } from "@protobuf-ts/grpc-transport";
import { RpcError, type RpcOptions } from "@protobuf-ts/runtime-rpc";
import { pack, unpack } from "msgpackr";

import { JobAlreadyExistsError, JobNotFoundError, JobNotTerminalError, TaskNotFoundError } from "./errors";
import { SiloClient } from "./pb/silo.client";
import * as pb from "./pb/silo";
import { DEFAULT_TENANT, findShard, tenantHash, type ShardRoute } from "./routing";

/** What a worker call needs to route and name a lease. */
export interface TaskRef {
  id: string;
  shard: string;
  tenantId?: string;
}

/** Status of a job, as the server reports it. */
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

export type Limit =
  | { type: "concurrency"; key: string; maxConcurrency: number }
  | {
      type: "floatingConcurrency";
      key: string;
      defaultMaxConcurrency: number;
      refreshIntervalMs: bigint | number;
      metadata?: Record<string, string>;
    }
  | {
      type: "rateLimit";
      name: string;
      uniqueKey: string;
      limit: bigint | number;
      durationMs: bigint | number;
      hits?: number;
      algorithm?: "tokenBucket" | "leakyBucket";
      behavior?: number;
      retryPolicy?: {
        initialBackoffMs: bigint | number;
        maxBackoffMs: bigint | number;
        backoffMultiplier?: number;
        maxRetries?: number;
      };
    };

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

export type JobResult<R = unknown> =
  | { status: JobStatus.Succeeded; finishedAtMs: bigint; result: R }
  | { status: JobStatus.Failed; finishedAtMs: bigint; errorCode: string; errorData: unknown }
  | { status: JobStatus.Cancelled; finishedAtMs: bigint; cancelledAtMs: bigint };

export interface SiloClientOptions {
  /** Seed servers, `host:port`; the client discovers the rest. */
  servers: string[] | string;
  /** Bearer token, or a function returning one per call. */
  token?: string | (() => string | Promise<string>);
  /** Defaults to true (TLS); local plaintext servers need `useTls: false`. */
  useTls?: boolean;
  /** Channel credentials for TLS (defaults to the system roots). */
  tlsCredentials?: ChannelCredentials;
  /** Per-call deadline in ms (default 30 s). */
  timeoutMs?: number;
  /** Routing retries before an error surfaces (default 8). */
  maxRetries?: number;
  /** Background topology refresh interval in ms (default 30 s; 0 disables). */
  topologyRefreshIntervalMs?: number;
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
            algorithm: l.algorithm === "leakyBucket" ? pb.GubernatorAlgorithm.LEAKY_BUCKET : pb.GubernatorAlgorithm.TOKEN_BUCKET,
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

function retryable(e: unknown): boolean {
  if (!(e instanceof RpcError)) return false;
  switch (e.code) {
    case "UNAVAILABLE":
    case "DEADLINE_EXCEEDED":
    case "CANCELLED":
    case "UNKNOWN":
      return true;
    case "NOT_FOUND":
      return e.message.includes("shard not found");
    case "INTERNAL":
      return e.message.includes("RST_STREAM");
    default:
      return false;
  }
}

/** Turns NOT_FOUND / ALREADY_EXISTS on job calls into typed errors. */
function mapJobError(e: unknown, jobId: string): unknown {
  if (e instanceof RpcError) {
    if (e.code === "NOT_FOUND" && !e.message.includes("shard not found")) return new JobNotFoundError(jobId, e.message, e.meta);
    if (e.code === "ALREADY_EXISTS") return new JobAlreadyExistsError(jobId, e.message, e.meta);
  }
  return e;
}

function mapTaskError(e: unknown, taskId: string): unknown {
  if (e instanceof RpcError && e.code === "NOT_FOUND" && !e.message.includes("shard not found")) {
    return new TaskNotFoundError(taskId, e.message, e.meta);
  }
  return e;
}

/**
 * A client for a Silo cluster: routes each tenant to its shard's owner,
 * follows redirects and retries outages (SEMANTICS §2, §13).
 */
export class SiloGRPCClient {
  private readonly seeds: string[];
  private readonly opts: SiloClientOptions;
  private readonly connections = new Map<string, { transport: GrpcTransport; client: SiloClient }>();
  private routes: ShardRoute[] = [];
  private topology?: Promise<void>;
  private refreshTimer?: NodeJS.Timeout;
  private pollCounter = 0;

  constructor(opts: SiloClientOptions) {
    this.opts = opts;
    this.seeds = Array.isArray(opts.servers) ? [...opts.servers] : [opts.servers];
    if (this.seeds.length === 0) throw new Error("SiloGRPCClient needs at least one server");
    const every = opts.topologyRefreshIntervalMs ?? 30_000;
    if (every > 0) {
      this.refreshTimer = setInterval(() => void this.refreshTopology().catch(() => undefined), every);
      this.refreshTimer.unref();
    }
  }

  private connection(addr: string) {
    let c = this.connections.get(addr);
    if (!c) {
      const useTls = this.opts.useTls ?? true;
      const transport = new GrpcTransport({
        host: addr,
        channelCredentials: useTls ? this.opts.tlsCredentials ?? credentials.createSsl() : credentials.createInsecure(),
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
    const candidates = [...new Set([...this.seeds, ...this.connections.keys(), ...this.routes.map((r) => r.addr)])];
    let last: unknown = new Error("no server answered GetClusterInfo");
    for (const addr of candidates) {
      try {
        const info = await this.connection(addr).getClusterInfo({}, await this.callOptions(10_000)).response;
        const routes = info.shardOwners
          .map((o) => ({ shardId: o.shardId, rangeStart: o.rangeStart, rangeEnd: o.rangeEnd, addr: o.grpcAddr }))
          .filter((r) => r.addr !== "")
          .sort((a, b) => (a.rangeStart < b.rangeStart ? -1 : a.rangeStart > b.rangeStart ? 1 : 0));
        if (routes.length === 0) throw new RpcError("no shard has an owner yet", "UNAVAILABLE");
        this.routes = routes;
        const owners = new Set(routes.map((r) => r.addr));
        for (const [a, c] of this.connections) {
          if (!owners.has(a) && !this.seeds.includes(a)) {
            c.transport.close();
            this.connections.delete(a);
          }
        }
        return;
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  private async ensureTopology(): Promise<void> {
    if (this.routes.length > 0) return;
    this.topology ??= this.refreshTopology().finally(() => (this.topology = undefined));
    await this.topology;
  }

  private async routeTenant(tenant: string | undefined): Promise<ShardRoute> {
    await this.ensureTopology();
    const hash = await tenantHash(tenant ?? DEFAULT_TENANT);
    const route = findShard(this.routes, hash);
    if (!route) throw new Error(`No shard found for tenant ${tenant ?? DEFAULT_TENANT} (hash ${hash})`);
    return route;
  }

  /**
   * Runs `f` against the owner of the shard (by tenant or shard id), following
   * `x-silo-shard-owner-addr` redirects and retrying outages with backoff.
   */
  private async retryLoop<T>(
    target: { tenant?: string; shard?: string },
    f: (client: SiloClient, shard: string, opts: RpcOptions) => Promise<T>,
  ): Promise<T> {
    const maxRetries = this.opts.maxRetries ?? 8;
    let delay = 250;
    for (let attempt = 0; ; attempt++) {
      let route: ShardRoute | undefined;
      try {
        route = await this.resolve(target);
        return await f(this.connection(route.addr), route.shardId, await this.callOptions());
      } catch (e) {
        if (!retryable(e) || attempt >= maxRetries) throw e;
        const owner = e instanceof RpcError ? metaString(e, "x-silo-shard-owner-addr") : undefined;
        if (route && owner && owner !== route.addr) {
          for (const r of this.routes) if (r.shardId === route.shardId) r.addr = owner;
          continue;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 5_000);
        await this.refreshTopology().catch(() => undefined);
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
    const id = o.id ?? randomUUID();
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
      const mapped = mapJobError(e, id);
      if (!(mapped instanceof JobAlreadyExistsError && tries > 1 && o.id === undefined)) throw mapped;
    }
    return new JobHandle(this, id, o.tenant);
  }

  /** A handle for an existing job. */
  handle(id: string, tenant?: string): JobHandle {
    return new JobHandle(this, id, tenant);
  }

  async getJob<P = unknown>(id: string, tenant?: string, opts?: { includeAttempts?: boolean }): Promise<Job<P>> {
    try {
      const r = await this.retryLoop({ tenant }, async (c, shard, o) =>
        c.getJob({ shard, id, tenant, includeAttempts: opts?.includeAttempts ?? false }, o).response,
      );
      return jobFromPb<P>(r);
    } catch (e) {
      throw mapJobError(e, id);
    }
  }

  async getJobResult<R = unknown>(id: string, tenant?: string): Promise<JobResult<R>> {
    let r: pb.GetJobResultResponse;
    try {
      r = await this.retryLoop({ tenant }, async (c, shard, o) => c.getJobResult({ shard, id, tenant }, o).response);
    } catch (e) {
      throw mapJobError(e, id);
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

  /** Polls GetJobResult until the job is terminal (or `timeoutMs` passes). */
  async awaitResult<R = unknown>(
    id: string,
    tenant?: string,
    opts?: { pollIntervalMs?: number; timeoutMs?: number },
  ): Promise<JobResult<R>> {
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
        if (!(e instanceof RpcError && e.code === "FAILED_PRECONDITION")) throw e;
        if (opts?.timeoutMs !== undefined && Date.now() - started >= opts.timeoutMs) {
          const status = await this.getJob(id, tenant).then((j) => j.status, () => undefined);
          throw new JobNotTerminalError(id, status, `timed out after ${opts.timeoutMs} ms waiting for job ${id} (status ${status})`);
        }
      }
      await sleep(every);
    }
  }

  private async jobCall(id: string, tenant: string | undefined, call: (c: SiloClient, shard: string, o: RpcOptions) => Promise<unknown>) {
    try {
      await this.retryLoop({ tenant }, call);
    } catch (e) {
      throw mapJobError(e, id);
    }
  }

  cancelJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.cancelJob({ shard, id, tenant }, o).response);
  }
  deleteJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.deleteJob({ shard, id, tenant }, o).response);
  }
  restartJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.restartJob({ shard, id, tenant }, o).response);
  }
  expediteJob(id: string, tenant?: string): Promise<void> {
    return this.jobCall(id, tenant, (c, shard, o) => c.expediteJob({ shard, id, tenant }, o).response);
  }

  /** Test helper: lease one named job now, ignoring its start time and limits. */
  async leaseTask(id: string, workerId: string, tenant?: string): Promise<pb.Task> {
    try {
      const r = await this.retryLoop({ tenant }, async (c, shard, o) => c.leaseTask({ shard, id, tenant, workerId }, o).response);
      return r.task!;
    } catch (e) {
      throw mapJobError(e, id);
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
      throw e;
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
   * attempts. Returns one result per job, in order.
   */
  async importJobs(
    jobs: (EnqueueOptions & {
      id: string;
      enqueueTimeMs?: bigint | number;
      attempts?: {
        status: AttemptStatus.Succeeded | AttemptStatus.Failed | AttemptStatus.Cancelled;
        startedAtMs: bigint | number;
        finishedAtMs: bigint | number;
        result?: unknown;
        errorCode?: string;
        errorData?: unknown;
      }[];
    })[],
  ): Promise<{ id: string; success: boolean; error?: string; status: JobStatus }[]> {
    const toPb: Record<string, pb.AttemptStatus> = {
      [AttemptStatus.Succeeded]: pb.AttemptStatus.SUCCEEDED,
      [AttemptStatus.Failed]: pb.AttemptStatus.FAILED,
      [AttemptStatus.Cancelled]: pb.AttemptStatus.CANCELLED,
    };
    const out = [];
    for (const j of jobs) {
      const r = await this.retryLoop({ tenant: j.tenant }, async (c, shard, o) =>
        c.importJobs(
          {
            jobs: [
              {
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
              },
            ],
          },
          o,
        ).response,
      );
      const res = r.results[0];
      out.push({ id: res.id, success: res.success, error: res.error, status: JOB_STATUS[res.status] });
    }
    return out;
  }

  /** Wipes every job on the servers (dev mode only; test suites). */
  async resetShards(): Promise<void> {
    await this.ensureTopology();
    for (const addr of new Set(this.routes.map((r) => r.addr))) {
      await this.connection(addr).resetShards({}, await this.callOptions()).response;
    }
  }

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

  getJob<P = unknown>(opts?: { includeAttempts?: boolean }): Promise<Job<P>> {
    return this.client.getJob<P>(this.id, this.tenant, opts);
  }
  async getStatus(): Promise<JobStatus> {
    return (await this.client.getJob(this.id, this.tenant)).status;
  }
  awaitResult<R = unknown>(opts?: { pollIntervalMs?: number; timeoutMs?: number }): Promise<JobResult<R>> {
    return this.client.awaitResult<R>(this.id, this.tenant, opts);
  }
  cancel(): Promise<void> {
    return this.client.cancelJob(this.id, this.tenant);
  }
  delete(): Promise<void> {
    return this.client.deleteJob(this.id, this.tenant);
  }
  restart(): Promise<void> {
    return this.client.restartJob(this.id, this.tenant);
  }
  expedite(): Promise<void> {
    return this.client.expediteJob(this.id, this.tenant);
  }
}
