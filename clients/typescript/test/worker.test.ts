// The seed page "Running Workers", against a real server.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import { credentials } from "@grpc/grpc-js";
import { GrpcTransport } from "@protobuf-ts/grpc-transport";

import { JobStatus, SiloGRPCClient, SiloWorker, type RefreshTaskContext, type TaskHandler } from "../src";
import { SiloClient as RawSilo } from "../src/pb/silo.client";
import { startServer, waitFor } from "./harness";

let server: Awaited<ReturnType<typeof startServer>>;
let client: SiloGRPCClient;

beforeAll(async () => {
  server = await startServer();
  client = new SiloGRPCClient({ servers: server.addr, useTls: false });
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});

interface EmailPayload {
  to: string;
  subject: string;
}
interface EmailMetadata extends Record<string, string> {
  source: string;
}
interface EmailResult {
  messageId: string;
}

describe("SiloWorker", () => {
  it("processes tasks with typed payloads and reports success", async () => {
    const seen: { attempt: number; relative: number; last: boolean; source: string }[] = [];
    const handler: TaskHandler<EmailPayload, EmailMetadata, EmailResult> = async (ctx) => {
      const { to } = ctx.task.payload;
      seen.push({
        attempt: ctx.task.attemptNumber,
        relative: ctx.task.relativeAttemptNumber,
        last: ctx.task.isLastAttempt,
        source: ctx.task.metadata.source,
      });
      return { type: "success", result: { messageId: `sent-to-${to}` } };
    };
    const worker = new SiloWorker<EmailPayload, EmailMetadata, EmailResult>({
      client,
      workerId: "email-worker-1",
      taskGroup: "emails",
      pollIntervalMs: 50,
      handler,
    });
    worker.start();
    const h = await client.enqueue<EmailPayload>({ payload: { to: "user@example.com", subject: "hi" }, taskGroup: "emails", metadata: { source: "signup" } });
    const result = await h.awaitResult<EmailResult>({ pollIntervalMs: 50, timeoutMs: 20_000 });
    await worker.stop();
    expect(result.status).toBe(JobStatus.Succeeded);
    if (result.status === JobStatus.Succeeded) expect(result.result).toEqual({ messageId: "sent-to-user@example.com" });
    expect(seen).toEqual([{ attempt: 1, relative: 1, last: true, source: "signup" }]);
  });

  it("reports a thrown error as HANDLER_ERROR and applies the retry policy", async () => {
    let calls = 0;
    const worker = new SiloWorker({
      client,
      workerId: "thrower",
      taskGroup: "throwing",
      pollIntervalMs: 50,
      onError: () => undefined,
      handler: async (ctx) => {
        calls++;
        if (ctx.task.attemptNumber === 1) throw new TypeError("bad input");
        return { type: "failure", code: "VALIDATION_ERROR", data: { field: "email" } };
      },
    });
    worker.start();
    const h = await client.enqueue({
      payload: { x: 1 },
      taskGroup: "throwing",
      retryPolicy: { retryCount: 1, initialIntervalMs: 10, maxIntervalMs: 10 },
    });
    const result = await h.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 });
    await worker.stop();
    expect(calls).toBe(2);
    expect(result.status).toBe(JobStatus.Failed);
    if (result.status === JobStatus.Failed) {
      expect(result.errorCode).toBe("VALIDATION_ERROR");
      expect(result.errorData).toEqual({ field: "email" });
    }
    const job = await h.getJob({ includeAttempts: true });
    expect(job.attempts[0].errorCode).toBe("HANDLER_ERROR");
    expect(job.attempts[0].errorData).toMatchObject({ name: "TypeError", message: "bad input" });
  });

  it("fails only the task whose payload cannot be decoded; the rest of the batch runs", async () => {
    // A raw Enqueue whose payload is not valid MessagePack (a str8 header cut short).
    const raw = new RawSilo(new GrpcTransport({ host: server.addr, channelCredentials: credentials.createInsecure() }));
    const info = await raw.getClusterInfo({}).response;
    const shard = info.shardOwners[0].shardId;
    await raw.enqueue({
      shard,
      id: "undecodable",
      priority: 0,
      startAtMs: 0n,
      payload: { encoding: { oneofKind: "msgpack", msgpack: new Uint8Array([0xd9]) } },
      limits: [],
      metadata: {},
      taskGroup: "mixed-batch",
    }).response;
    const good = [
      await client.enqueue({ payload: { n: 1 }, taskGroup: "mixed-batch", priority: 10 }),
      await client.enqueue({ payload: { n: 2 }, taskGroup: "mixed-batch", priority: 10 }),
    ];
    const handled: number[] = [];
    const errors: unknown[] = [];
    const worker = new SiloWorker<{ n: number }>({
      client,
      workerId: "mixed",
      taskGroup: "mixed-batch",
      tasksPerPoll: 10,
      pollIntervalMs: 50,
      onError: (e) => errors.push(e),
      handler: async (ctx) => {
        handled.push(ctx.task.payload.n);
        return { type: "success", result: null };
      },
    });
    worker.start();
    for (const h of good) expect((await h.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 })).status).toBe(JobStatus.Succeeded);
    const bad = client.handle("undecodable");
    const r = await bad.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 });
    await worker.stop();
    expect(r.status).toBe(JobStatus.Failed);
    if (r.status === JobStatus.Failed) expect(r.errorCode).toBe("PAYLOAD_UNDECODABLE");
    expect(handled.sort()).toEqual([1, 2]);
    expect(errors.length).toBeGreaterThan(0);
  });

  it("aborts the cancellation signal when the job is cancelled, and reports cancelled", async () => {
    let aborted = false;
    const started = new Promise<string>((resolveStarted) => {
      const worker = new SiloWorker({
        client,
        workerId: "cancellable",
        onError: () => undefined,
        taskGroup: "data-processing",
        pollIntervalMs: 50,
        heartbeatIntervalMs: 100,
        handler: async (ctx) => {
          resolveStarted(ctx.task.jobId);
          await new Promise<void>((r) => ctx.cancellationSignal.addEventListener("abort", () => r()));
          aborted = ctx.cancellationSignal.aborted;
          return { type: "success", result: "ignored" };
        },
      });
      worker.start();
      afterAll(() => worker.stop(1000));
    });
    const h = await client.enqueue({ payload: { items: [1, 2, 3] }, taskGroup: "data-processing" });
    expect(await started).toBe(h.id);
    expect(await h.getStatus()).toBe(JobStatus.Running);
    await h.cancel();
    const result = await h.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 });
    expect(aborted).toBe(true);
    expect(result.status).toBe(JobStatus.Cancelled);
  });

  it("ctx.cancel() cancels the job on the server", async () => {
    const worker = new SiloWorker({
      client,
      workerId: "self-cancel",
      taskGroup: "self-cancel",
      pollIntervalMs: 50,
      handler: async (ctx) => {
        await ctx.cancel();
        return { type: "success" };
      },
    });
    worker.start();
    const h = await client.enqueue({ payload: 1, taskGroup: "self-cancel" });
    const result = await h.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 });
    await worker.stop();
    expect(result.status).toBe(JobStatus.Cancelled);
  });

  it("respects maxConcurrentTasks and drains on stop()", async () => {
    let running = 0;
    let peak = 0;
    const worker = new SiloWorker({
      client,
      workerId: "bounded",
      taskGroup: "bounded",
      maxConcurrentTasks: 2,
      pollIntervalMs: 20,
      handler: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 100));
        running--;
        return { type: "success" };
      },
    });
    const handles = await Promise.all(Array.from({ length: 6 }, (_, i) => client.enqueue({ payload: i, taskGroup: "bounded" })));
    worker.start();
    await waitFor("all done", async () => {
      const s = await Promise.all(handles.map((h) => h.getStatus()));
      return s.every((x) => x === JobStatus.Succeeded) ? true : undefined;
    });
    await worker.stop(5_000);
    expect(peak).toBeLessThanOrEqual(2);
    expect(worker.activeTasks).toBe(0);
  });

  it("polls again at once after a full batch instead of waiting pollIntervalMs", async () => {
    // 40 handlers that all wait for each other: with a sleep after every
    // poll (Silo's worker) the second batch would come a minute later.
    let started = 0;
    let release!: () => void;
    const all = new Promise<void>((r) => (release = r));
    const worker = new SiloWorker({
      client,
      workerId: "eager",
      taskGroup: "eager",
      maxConcurrentTasks: 40,
      tasksPerPoll: 8,
      pollIntervalMs: 60_000,
      handler: async () => {
        if (++started === 40) release();
        await all;
        return { type: "success" };
      },
    });
    const handles = await Promise.all(Array.from({ length: 40 }, (_, i) => client.enqueue({ payload: i, taskGroup: "eager" })));
    worker.start();
    await waitFor("every job done", async () => {
      const s = await Promise.all(handles.map((h) => h.getStatus()));
      return s.every((x) => x === JobStatus.Succeeded) ? true : undefined;
    }, 20_000);
    await worker.stop(5_000);
    expect(started).toBe(40);
  });

  it("runs a task delivered twice only once, and reports it once", async () => {
    const errors: string[] = [];
    let runs = 0;
    const worker = new SiloWorker({
      client,
      workerId: "dup",
      taskGroup: "dup",
      handler: async () => {
        runs++;
        await new Promise((r) => setTimeout(r, 50));
        return { type: "success" };
      },
      onError: (e) => errors.push(e.message),
    });
    const report = vi.spyOn(client, "reportOutcome");
    const h = await client.enqueue({ payload: 1, taskGroup: "dup" });
    const task = await client.leaseTask(h.id, "dup");
    // The same task handed to the worker twice (a redelivery while it runs).
    const launch = (worker as unknown as { launch(t: unknown): void }).launch.bind(worker);
    launch(task);
    launch(task);
    await waitFor("succeeded", async () => ((await h.getStatus()) === JobStatus.Succeeded ? true : undefined));
    expect(runs).toBe(1);
    expect(report.mock.calls.filter(([t]) => (t as { id: string }).id === task.id)).toHaveLength(1);
    expect(errors).toEqual([`duplicate delivery of task ${task.id}`]);
    report.mockRestore();
  });

  it("a lost lease aborts the handler's signal and reports nothing", async () => {
    const short = await startServer("lease_ms = 500");
    const c = new SiloGRPCClient({ servers: short.addr, useTls: false });
    try {
      let reason = "";
      const worker = new SiloWorker({
        client: c,
        workerId: "slow",
        taskGroup: "slow",
        pollIntervalMs: 50,
        heartbeatIntervalMs: 1_500, // the 500 ms lease expires before the first heartbeat
        handler: async (ctx) => {
          await new Promise<void>((r) => ctx.cancellationSignal.addEventListener("abort", () => r()));
          reason = String((ctx.cancellationSignal.reason as Error).message);
          return { type: "success" };
        },
      });
      const report = vi.spyOn(c, "reportOutcome");
      const h = await c.enqueue({ payload: 1, taskGroup: "slow" });
      worker.start();
      await waitFor("the signal aborted", async () => (reason ? true : undefined), 20_000);
      await worker.stop(5_000);
      expect(reason).toBe("lease lost");
      expect(report).not.toHaveBeenCalled();
      const job = await c.getJob(h.id, undefined, { includeAttempts: true });
      expect(job.status).toBe(JobStatus.Failed);
      expect(job.attempts?.[0].errorCode).toBeTruthy();
    } finally {
      c.close();
      await short.stop();
    }
  });

  it("answers floating-limit refresh tasks with refreshHandler, passing a context", async () => {
    const refreshed: string[] = [];
    const contexts: RefreshTaskContext[] = [];
    const worker = new SiloWorker({
      client,
      workerId: "floating",
      taskGroup: "floating",
      pollIntervalMs: 20,
      maxConcurrentTasks: 10,
      handler: async () => {
        await new Promise((r) => setTimeout(r, 300));
        return { type: "success" };
      },
      // Written as Silo's documentation writes it: the task is `ctx.task`.
      refreshHandler: async (ctx) => {
        refreshed.push(ctx.task.queueKey);
        contexts.push(ctx);
        return 5;
      },
    });
    const limits = [{ type: "floatingConcurrency" as const, key: "fk", defaultMaxConcurrency: 1, refreshIntervalMs: 60_000, metadata: { org: "acme" } }];
    const handles = await Promise.all(Array.from({ length: 4 }, (_, i) => client.enqueue({ payload: i, taskGroup: "floating", limits })));
    worker.start();
    await waitFor("floating jobs done", async () => {
      const s = await Promise.all(handles.map((h) => h.getStatus()));
      return s.every((x) => x === JobStatus.Succeeded) ? true : undefined;
    });
    await worker.stop();
    expect(refreshed).toEqual(["fk"]);
    const [ctx] = contexts;
    expect(ctx.task.metadata).toEqual({ org: "acme" });
    expect(ctx.task.currentMaxConcurrency).toBe(1);
    expect(ctx.task.taskGroup).toBe("floating");
    expect(ctx.task.leaseMs > 0n).toBe(true);
    expect(ctx.workerId).toBe("floating");
    expect(ctx.shard).toBe(client.getShardForTenant("-"));
    expect(ctx.task.shard).toBe(ctx.shard);
    expect(ctx.signal).toBeInstanceOf(AbortSignal);
    // What this package passed before (the bare task) is still on the context.
    expect({ id: ctx.id, queueKey: ctx.queueKey, metadata: ctx.metadata }).toEqual({
      id: ctx.task.id,
      queueKey: "fk",
      metadata: { org: "acme" },
    });
  });

  it("aborts the refresh context's signal when the worker stops", async () => {
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    let abortedInHandler = false;
    const worker = new SiloWorker({
      client,
      workerId: "floating-stop",
      taskGroup: "floating-stop",
      pollIntervalMs: 20,
      handler: async () => {
        await new Promise((r) => setTimeout(r, 100));
        return { type: "success" };
      },
      refreshHandler: async (ctx) => {
        started();
        await new Promise<void>((r) => ctx.signal.addEventListener("abort", () => r()));
        abortedInHandler = ctx.signal.aborted;
        throw new Error("stopping");
      },
    });
    // A refresh is due once a job waits on the limit: two jobs, one slot.
    const limits = [{ type: "floatingConcurrency" as const, key: "fk-stop", defaultMaxConcurrency: 1, refreshIntervalMs: 60_000 }];
    for (let i = 0; i < 2; i++) await client.enqueue({ payload: i, taskGroup: "floating-stop", limits });
    worker.start();
    await running;
    await worker.stop(5_000);
    expect(abortedInHandler).toBe(true);
    expect(worker.activeTasks).toBe(0);
  });
});

describe("tenancy", () => {
  it("routes by tenant and a tenant worker only processes its tenant", async () => {
    const tenantServer = await startServer("[tenancy]\nenabled = true\n");
    const c = new SiloGRPCClient({ servers: [tenantServer.addr], useTls: false });
    try {
      const mine = await c.enqueue({ payload: 1, tenant: "customer-456", taskGroup: "t" });
      const other = await c.enqueue({ payload: 2, tenant: "customer-789", taskGroup: "t" });
      const seen: (string | undefined)[] = [];
      const worker = new SiloWorker({
        client: c,
        workerId: "tenant-worker",
        taskGroup: "t",
        tenant: "customer-456",
        pollIntervalMs: 20,
        handler: async (ctx) => {
          seen.push(ctx.task.tenantId);
          return { type: "success" };
        },
      });
      worker.start();
      expect((await mine.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 })).status).toBe(JobStatus.Succeeded);
      await worker.stop();
      expect(seen).toEqual(["customer-456"]);
      expect(await c.handle(other.id, "customer-789").getStatus()).toBe(JobStatus.Scheduled);
      await c.cancelJob(other.id, "customer-789");
      expect(await c.handle(other.id, "customer-789").getStatus()).toBe(JobStatus.Cancelled);
    } finally {
      c.close();
      await tenantServer.stop();
    }
  });
});
