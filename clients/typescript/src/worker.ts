import { RpcError } from "@protobuf-ts/runtime-rpc";

import { decodeStrict, limitFromPb, serialized, type Limit, type SiloGRPCClient } from "./client";
import type * as pb from "./pb/silo";

/** A task as a handler sees it. */
export interface Task<P = any, M extends object = Record<string, string>> {
  id: string;
  jobId: string;
  payload: P;
  attemptNumber: number;
  relativeAttemptNumber: number;
  isLastAttempt: boolean;
  metadata: M;
  limits: Limit[];
  priority: number;
  taskGroup: string;
  tenantId?: string;
  shard: string;
  leaseMs: bigint;
}

/** What a handler gets: the task, its cancellation signal and `cancel()`. */
export interface TaskContext<P = any, M extends object = Record<string, string>> {
  task: Task<P, M>;
  /** Aborted when the job is cancelled (seen on a heartbeat, or `cancel()`), or the lease is lost. */
  cancellationSignal: AbortSignal;
  /** Cancels the job on the server and aborts the signal; a cancelled outcome is reported. */
  cancel(): Promise<void>;
}

/** The job succeeded; `result` is stored (MessagePack) as its result. */
export interface SuccessOutcome<R = unknown> {
  type: "success";
  result?: R;
}

/** The attempt failed with an error code; the retry policy decides what next. */
export interface FailureOutcome {
  type: "failure";
  code: string;
  data?: unknown;
}

/** The job is reported cancelled. */
export interface CancelledOutcome {
  type: "cancelled";
}

/** What a handler returns. */
export type TaskOutcome<R = unknown> = SuccessOutcome<R> | FailureOutcome | CancelledOutcome;

/** Runs one task and says how it ended; a throw reports failure `HANDLER_ERROR`. */
export type TaskHandler<P = any, M extends object = Record<string, string>, R = unknown> = (
  ctx: TaskContext<P, M>,
) => Promise<TaskOutcome<R>>;

/** A floating concurrency limit that is due for a new maximum. */
export interface RefreshTask {
  /** The refresh task's id (its lease). */
  id: string;
  /** The floating limit's key. */
  queueKey: string;
  currentMaxConcurrency: number;
  /** When the maximum was last set (epoch ms). */
  lastRefreshedAtMs: bigint;
  /** The `metadata` declared with the limit. */
  metadata: Record<string, string>;
  /** The tenant of the limit's jobs (with tenancy on); same as `tenant`. */
  tenantId?: string;
  /** Silo's client's name for `tenantId`. */
  tenant?: string;
  taskGroup: string;
  /** The shard the task came from. */
  shard: string;
  /** Lease length in ms (the worker heartbeats it). */
  leaseMs: bigint;
}

/**
 * What `refreshHandler` gets, shaped as Silo's client's: `task`, `shard`,
 * `workerId` and `signal`. The task's fields are also on the context itself
 * (`ctx.queueKey`, `ctx.metadata`, ...), so handlers written for this
 * package's earlier bare-task argument keep working.
 */
export interface RefreshTaskContext extends RefreshTask {
  /** The refresh task. */
  task: RefreshTask;
  /** The shard the task came from. */
  shard: string;
  /** The worker running the handler. */
  workerId: string;
  /** Aborted when the worker is stopping. */
  signal: AbortSignal;
}

/**
 * Computes a floating limit's new max concurrency from the context (e.g. from
 * `ctx.task.metadata`); a throw reports the refresh failed and the server
 * retries it later.
 */
export type RefreshHandler = (ctx: RefreshTaskContext) => Promise<number>;

/** Options of {@link SiloWorker}; see the README for the defaults. */
export interface SiloWorkerOptions<P = any, M extends object = Record<string, string>, R = unknown> {
  client: SiloGRPCClient;
  workerId: string;
  taskGroup: string;
  handler: TaskHandler<P, M, R>;
  /** Only lease this tenant's tasks (servers with tenancy on). */
  tenant?: string;
  maxConcurrentTasks?: number;
  concurrentPollers?: number;
  tasksPerPoll?: number;
  pollIntervalMs?: number;
  heartbeatIntervalMs?: number;
  refreshHandler?: RefreshHandler;
  /** Errors of polls, heartbeats and reports (default: console.error); non-Errors arrive wrapped in an Error. */
  onError?: (error: Error, context?: { taskId?: string; jobId?: string }) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function leaseLost(e: unknown): boolean {
  return (
    e instanceof RpcError &&
    ((e.code === "NOT_FOUND" && e.message.includes("lease not found")) ||
      (e.code === "FAILED_PRECONDITION" && e.message.includes("lease owner mismatch")))
  );
}

function serializeError(e: unknown): unknown {
  if (e instanceof Error) return { name: e.name, message: e.message, stack: e.stack };
  return { message: String(e) };
}

/** Polls a task group, runs the handler per task, heartbeats and reports outcomes. */
export class SiloWorker<P = any, M extends object = Record<string, string>, R = unknown> {
  private readonly o: Required<Omit<SiloWorkerOptions<P, M, R>, "tenant" | "refreshHandler" | "onError">> &
    SiloWorkerOptions<P, M, R>;
  private running = false;
  private pollers: Promise<void>[] = [];
  private readonly active = new Map<string, Promise<void>>();
  private wake?: () => void;
  /** Aborted by `stop()`; handed to refresh handlers as `ctx.signal`. */
  private stopping = new AbortController();

  constructor(opts: SiloWorkerOptions<P, M, R>) {
    const max = opts.maxConcurrentTasks ?? 10;
    this.o = {
      ...opts,
      maxConcurrentTasks: max,
      concurrentPollers: opts.concurrentPollers ?? 1,
      tasksPerPoll: opts.tasksPerPoll ?? Math.ceil(max / 2),
      pollIntervalMs: opts.pollIntervalMs ?? 1000,
      heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 5000,
    };
  }

  private onError(e: unknown, context?: { taskId?: string; jobId?: string }) {
    const error = e instanceof Error ? e : new Error(String(e));
    if (this.o.onError) this.o.onError(error, context);
    else console.error("SiloWorker error", error, context ?? "");
  }

  /** Starts polling (idempotent). */
  start(): void {
    if (this.running) return;
    this.running = true;
    if (this.stopping.signal.aborted) this.stopping = new AbortController();
    for (let i = 0; i < this.o.concurrentPollers; i++) this.pollers.push(this.pollLoop());
  }

  /** Stops polling and waits up to `timeoutMs` for running tasks; the rest are abandoned. */
  async stop(timeoutMs = 30_000): Promise<void> {
    this.running = false;
    this.stopping.abort(new Error("worker stopping"));
    this.wake?.();
    await Promise.all(this.pollers);
    this.pollers = [];
    await Promise.race([Promise.all(this.active.values()), sleep(timeoutMs)]);
  }

  /** Whether the worker is polling (between `start()` and `stop()`). */
  get isRunning(): boolean {
    return this.running;
  }

  /** Tasks (and refresh tasks) running now. */
  get activeTasks(): number {
    return this.active.size;
  }

  private async pollLoop(): Promise<void> {
    while (this.running) {
      const free = this.o.maxConcurrentTasks - this.active.size;
      if (free <= 0) {
        await new Promise<void>((r) => {
          this.wake = r;
          setTimeout(r, this.o.pollIntervalMs);
        });
        continue;
      }
      const asked = Math.min(free, this.o.tasksPerPoll);
      let full = false;
      try {
        const resp = await this.o.client.leaseTasks({
          workerId: this.o.workerId,
          taskGroup: this.o.taskGroup,
          maxTasks: asked,
          tenant: this.o.tenant,
        });
        for (const t of resp.tasks) this.launch(t);
        for (const r of resp.refreshTasks) this.launchRefresh(r);
        full = resp.tasks.length >= asked;
      } catch (e) {
        this.onError(e);
      }
      if (!this.running) break;
      // A full batch means more work is waiting: poll again at once (Silo's
      // worker sleeps pollIntervalMs after every poll, which caps it near
      // tasksPerPoll / pollIntervalMs). A short batch means the queue is
      // drained: wait for the interval or a finished task.
      if (full) continue;
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, this.o.pollIntervalMs);
      });
    }
  }

  private track(id: string, run: Promise<void>) {
    this.active.set(id, run);
    void run.finally(() => {
      this.active.delete(id);
      this.wake?.();
    });
  }

  private launch(t: pb.Task) {
    if (this.active.has(t.id)) {
      this.onError(new Error(`duplicate delivery of task ${t.id}`), { taskId: t.id, jobId: t.jobId });
      return;
    }
    this.track(t.id, this.runTask(t));
  }

  private async runTask(t: pb.Task): Promise<void> {
    const ref = { id: t.id, shard: t.shard, tenantId: t.tenantId };
    const ctxInfo = { taskId: t.id, jobId: t.jobId };
    const abort = new AbortController();
    let cancelled = false;
    let lost = false;
    let settled = false;

    // Heartbeat until the handler returns (DECISIONS #9), also after a cancel.
    const beat = setInterval(async () => {
      if (settled || lost) return;
      try {
        const r = await this.o.client.heartbeat(ref, this.o.workerId);
        if (r.cancelled && !cancelled) {
          cancelled = true;
          abort.abort(new Error("job cancelled"));
        }
      } catch (e) {
        if (settled) return;
        if (leaseLost(e)) {
          lost = true;
          abort.abort(new Error("lease lost"));
        } else {
          this.onError(e, ctxInfo);
        }
      }
    }, this.o.heartbeatIntervalMs);

    let outcome: pb.ReportOutcomeRequest["outcome"];
    let payload: P;
    try {
      payload = decodeStrict(t.payload?.encoding.oneofKind === "msgpack" ? t.payload.encoding.msgpack : undefined) as P;
    } catch (e) {
      // One undecodable payload fails its own task only; the rest of the
      // batch runs (Silo's reference worker drops the whole batch here).
      settled = true;
      clearInterval(beat);
      this.onError(e, ctxInfo);
      const message = e instanceof Error ? e.message : String(e);
      const failure = { code: "PAYLOAD_UNDECODABLE", data: serialized({ message }) };
      await this.o.client.reportOutcome(ref, { oneofKind: "failure", failure }).catch((err) => this.onError(err, ctxInfo));
      return;
    }
    try {
      const task: Task<P, M> = {
        id: t.id,
        jobId: t.jobId,
        payload,
        attemptNumber: t.attemptNumber,
        relativeAttemptNumber: t.relativeAttemptNumber,
        isLastAttempt: t.isLastAttempt,
        metadata: t.metadata as M,
        limits: t.limits.map(limitFromPb).filter((l): l is Limit => l !== undefined),
        priority: t.priority,
        taskGroup: t.taskGroup,
        tenantId: t.tenantId,
        shard: t.shard,
        leaseMs: t.leaseMs,
      };
      const ctx: TaskContext<P, M> = {
        task,
        cancellationSignal: abort.signal,
        cancel: async () => {
          cancelled = true;
          abort.abort(new Error("job cancelled"));
          await this.o.client.cancelJob(t.jobId, t.tenantId).catch((e) => this.onError(e, ctxInfo));
        },
      };
      const result = await this.o.handler(ctx);
      if (cancelled || result.type === "cancelled") outcome = { oneofKind: "cancelled", cancelled: {} };
      else if (result.type === "success") outcome = { oneofKind: "success", success: serialized(result.result ?? null) };
      else outcome = { oneofKind: "failure", failure: { code: result.code, data: serialized(result.data ?? null) } };
    } catch (e) {
      outcome = cancelled
        ? { oneofKind: "cancelled", cancelled: {} }
        : { oneofKind: "failure", failure: { code: "HANDLER_ERROR", data: serialized(serializeError(e)) } };
    } finally {
      settled = true;
      clearInterval(beat);
    }
    if (lost) return; // the lease is gone: the server already moved on
    try {
      await this.o.client.reportOutcome(ref, outcome);
    } catch (e) {
      this.onError(e, ctxInfo);
    }
  }

  private launchRefresh(r: pb.RefreshFloatingLimitTask) {
    const ref = { id: r.id, shard: r.shard, tenantId: r.tenantId };
    const run = async () => {
      if (!this.o.refreshHandler) {
        this.onError(new Error(`refresh task ${r.id} for ${r.queueKey} received but no refreshHandler is set`), { taskId: r.id });
        return;
      }
      let settled = false;
      const beat = setInterval(() => {
        if (!settled) void this.o.client.heartbeat(ref, this.o.workerId).catch((e) => this.onError(e, { taskId: r.id }));
      }, this.o.heartbeatIntervalMs);
      let outcome: pb.ReportRefreshOutcomeRequest["outcome"];
      try {
        const task: RefreshTask = {
          id: r.id,
          queueKey: r.queueKey,
          currentMaxConcurrency: r.currentMaxConcurrency,
          lastRefreshedAtMs: r.lastRefreshedAtMs,
          metadata: r.metadata,
          tenantId: r.tenantId,
          tenant: r.tenantId,
          taskGroup: r.taskGroup,
          shard: r.shard,
          leaseMs: r.leaseMs,
        };
        const value = await this.o.refreshHandler({
          ...task,
          task,
          workerId: this.o.workerId,
          signal: this.stopping.signal,
        });
        outcome = { oneofKind: "success", success: { newMaxConcurrency: Math.max(0, Math.floor(value)) } };
      } catch (e) {
        outcome = { oneofKind: "failure", failure: { code: "REFRESH_HANDLER_ERROR", message: e instanceof Error ? e.message : String(e) } };
      } finally {
        settled = true;
        clearInterval(beat);
      }
      await this.o.client.reportRefreshOutcome(ref, outcome).catch((e) => this.onError(e, { taskId: r.id }));
    };
    this.track(r.id, run());
  }
}
