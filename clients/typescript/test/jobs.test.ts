// The seed page "Cancel, Restart, Delete" and the client API, against a real server.
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  AttemptStatus,
  JobAlreadyExistsError,
  JobNotFoundError,
  JobNotTerminalError,
  JobStatus,
  RpcError,
  SiloGRPCClient,
  SiloWorker,
  tenantHash,
} from "../src";
import { startServer, waitFor } from "./harness";

let server: Awaited<ReturnType<typeof startServer>>;
let client: SiloGRPCClient;

beforeAll(async () => {
  server = await startServer();
  client = new SiloGRPCClient({ servers: [server.addr], useTls: false });
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});

async function expectRpcError(p: Promise<unknown>, code: string, message?: string) {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(RpcError);
  expect((e as RpcError).code).toBe(code);
  if (message) expect((e as RpcError).message).toContain(message);
  return e as RpcError;
}

/** Runs one task of `taskGroup` with `outcome` through LeaseTask/ReportOutcome. */
async function finish(id: string, outcome: "success" | "failure") {
  const task = await client.leaseTask(id, "test-worker");
  await client.reportOutcome(
    task,
    outcome === "success"
      ? { oneofKind: "success", success: { encoding: { oneofKind: "msgpack", msgpack: new Uint8Array([0xc3]) } } }
      : { oneofKind: "failure", failure: { code: "BOOM", data: { encoding: { oneofKind: "msgpack", msgpack: new Uint8Array([0xc0]) } } } },
  );
}

describe("enqueue and read", () => {
  it("enqueues with every option and reads the job back", async () => {
    const handle = await client.enqueue({
      payload: { task: "process-data", n: 7 },
      taskGroup: "data-processing",
      priority: 3,
      metadata: { source: "test" },
      retryPolicy: { retryCount: 2, initialIntervalMs: 1000, maxIntervalMs: 5000 },
      limits: [{ type: "concurrency", key: "q", maxConcurrency: 5 }],
    });
    // A time-ordered UUID (version 7, variant 10xx): cheaper for the server
    // to store than a random one (docs/BENCHMARKS.md, "Ordered job ids").
    expect(handle.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(await handle.getStatus()).toBe(JobStatus.Scheduled);
    const job = await handle.getJob({ includeAttempts: true });
    expect(job.payload).toEqual({ task: "process-data", n: 7 });
    expect(job.priority).toBe(3);
    expect(job.taskGroup).toBe("data-processing");
    expect(job.metadata).toEqual({ source: "test" });
    expect(job.retryPolicy?.retryCount).toBe(2);
    expect(job.limits).toEqual([{ type: "concurrency", key: "q", maxConcurrency: 5 }]);
    expect(job.attempts).toEqual([]);
  });

  it("refuses a duplicate id with JobAlreadyExistsError", async () => {
    await client.enqueue({ id: "dup-1", payload: 1 });
    await expect(client.enqueue({ id: "dup-1", payload: 2 })).rejects.toBeInstanceOf(JobAlreadyExistsError);
  });

  it("maps unknown jobs to JobNotFoundError everywhere", async () => {
    const calls: (() => Promise<unknown>)[] = [
      () => client.getJob("nope"),
      () => client.getJobResult("nope"),
      () => client.cancelJob("nope"),
      () => client.restartJob("nope"),
      () => client.expediteJob("nope"),
      () => client.deleteJob("nope"),
      () => client.handle("nope").getStatus(),
    ];
    for (const call of calls) {
      const e = await call().then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(JobNotFoundError);
      expect((e as RpcError).code).toBe("NOT_FOUND");
    }
  });

  it("awaitResult times out with JobNotTerminalError on a job nobody runs", async () => {
    const h = await client.enqueue({ payload: 1, taskGroup: "nobody" });
    const e = await h.awaitResult({ timeoutMs: 300, pollIntervalMs: 50 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(JobNotTerminalError);
    expect((e as Error).message).toMatch(new RegExp(`^Timeout waiting for job ${h.id} to complete after 300ms`));
  });

  it("routes with the same hash as the server", async () => {
    expect(await tenantHash("-")).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe("cancel", () => {
  it("cancels a scheduled job at once; a second cancel is FAILED_PRECONDITION", async () => {
    const handle = await client.enqueue({ payload: { task: "process-data" }, startAtMs: BigInt(Date.now() + 3_600_000) });
    await handle.cancel();
    expect(await handle.getStatus()).toBe(JobStatus.Cancelled);
    expect((await handle.awaitResult()).status).toBe(JobStatus.Cancelled);
    await expectRpcError(handle.cancel(), "FAILED_PRECONDITION", "already cancelled");
  });

  it("refuses to cancel a finished job", async () => {
    const h = await client.enqueue({ payload: 1 });
    await finish(h.id, "success");
    await expectRpcError(h.cancel(), "FAILED_PRECONDITION", "terminal state");
  });
});

describe("delete", () => {
  it("refuses in-progress jobs with INTERNAL and erases finished ones", async () => {
    const h = await client.enqueue({ payload: 1 });
    await expectRpcError(h.delete(), "INTERNAL");
    await h.cancel();
    expect(await h.getStatus()).toBe(JobStatus.Cancelled);
    await h.delete();
    await expect(h.getStatus()).rejects.toBeInstanceOf(JobNotFoundError);
    await expect(client.deleteJob(h.id)).rejects.toBeInstanceOf(JobNotFoundError);
  });
});

describe("restart", () => {
  it("restarts failed and cancelled jobs with a fresh retry counter", async () => {
    const h = await client.enqueue({ payload: 1 });
    await finish(h.id, "failure");
    expect(await h.getStatus()).toBe(JobStatus.Failed);
    const failed = await h.awaitResult();
    expect(failed.status).toBe(JobStatus.Failed);
    if (failed.status === JobStatus.Failed) expect(failed.errorCode).toBe("BOOM");
    await h.restart();
    expect(await h.getStatus()).toBe(JobStatus.Scheduled);
    const task = await client.leaseTask(h.id, "w");
    expect(task.attemptNumber).toBe(2);
    expect(task.relativeAttemptNumber).toBe(1);
  });

  it("restarts a job cancelled by mistake", async () => {
    const h = await client.enqueue({ payload: 1, startAtMs: BigInt(Date.now() + 3_600_000) });
    await h.cancel();
    expect(await h.getStatus()).toBe(JobStatus.Cancelled);
    await h.restart();
    expect(await h.getStatus()).toBe(JobStatus.Scheduled);
    const job = await h.getJob();
    expect(job.nextAttemptStartsAfterMs! <= BigInt(Date.now())).toBe(true);
  });

  it("explains why a job cannot be restarted", async () => {
    const scheduled = await client.enqueue({ payload: 1 });
    await expectRpcError(scheduled.restart(), "FAILED_PRECONDITION", "job is still in progress");
    const done = await client.enqueue({ payload: 1 });
    await finish(done.id, "success");
    await expectRpcError(done.restart(), "FAILED_PRECONDITION", "job already succeeded");
  });
});

describe("expedite", () => {
  it("runs a future job now, and explains refusals", async () => {
    const h = await client.enqueue({ payload: { task: "later" }, taskGroup: "expedite", startAtMs: BigInt(Date.now() + 3_600_000) });
    expect(await h.getStatus()).toBe(JobStatus.Scheduled);
    await h.expedite();
    await expectRpcError(h.expedite(), "FAILED_PRECONDITION", "already ready to run");
    const seen: string[] = [];
    const worker = new SiloWorker({
      client,
      workerId: "expedite-worker",
      taskGroup: "expedite",
      pollIntervalMs: 50,
      handler: async (ctx) => {
        seen.push(ctx.task.jobId);
        return { type: "success", result: { ok: true } };
      },
    });
    worker.start();
    const result = await h.awaitResult({ pollIntervalMs: 50, timeoutMs: 20_000 });
    await worker.stop();
    expect(result.status).toBe(JobStatus.Succeeded);
    expect(seen).toEqual([h.id]);
    await expectRpcError(h.expedite(), "FAILED_PRECONDITION", "terminal state");
  });

  it("skips retry backoff", async () => {
    const h = await client.enqueue({
      payload: 1,
      taskGroup: "retry-expedite",
      retryPolicy: { retryCount: 3, initialIntervalMs: 600_000, maxIntervalMs: 3_600_000 },
    });
    await finish(h.id, "failure");
    const job = await h.getJob();
    expect(job.status).toBe(JobStatus.Scheduled);
    expect(job.nextAttemptStartsAfterMs! > BigInt(Date.now() + 60_000)).toBe(true);
    await h.expedite();
    await waitFor("expedited retry", async () => ((await h.getJob()).nextAttemptStartsAfterMs! <= BigInt(Date.now()) ? true : undefined));
  });
});

describe("importJobs and resetShards", () => {
  it("imports jobs with history, then a reset wipes them", async () => {
    const results = await client.importJobs([
      { id: "imp-done", payload: { a: 1 }, attempts: [{ status: AttemptStatus.Succeeded, startedAtMs: 1, finishedAtMs: 2, result: { ok: 1 } }] },
      { id: "imp-new", payload: 2, taskGroup: "imported" },
    ]);
    expect(results.map((r) => [r.id, r.success, r.status])).toEqual([
      ["imp-done", true, JobStatus.Succeeded],
      ["imp-new", true, JobStatus.Scheduled],
    ]);
    const done = await client.awaitResult("imp-done");
    expect(done.status === JobStatus.Succeeded && done.result).toEqual({ ok: 1 });
    await client.resetShards();
    await expect(client.getJob("imp-done")).rejects.toBeInstanceOf(JobNotFoundError);
  });
});

describe("importJobs in batches, and reimport", () => {
  it("imports thousands of jobs with attempts in every terminal status and reads them back", async () => {
    const group = `import-${Date.now()}`;
    const kinds = ["succeeded", "failed", "cancelled", "retrying", "fresh"] as const;
    const at = (n: number) => ({ startedAtMs: 1_600_000_000_000 + n, finishedAtMs: 1_600_000_000_500 + n });
    const jobs = Array.from({ length: 3000 }, (_, i) => {
      const kind = kinds[i % kinds.length];
      const failed = { status: AttemptStatus.Failed, errorCode: "OLD", errorData: { i }, ...at(i) };
      const attempts = {
        succeeded: [failed, { status: AttemptStatus.Succeeded, result: { i }, ...at(i + 1) }],
        failed: [failed],
        cancelled: [{ status: AttemptStatus.Cancelled, ...at(i) }],
        retrying: [failed],
        fresh: [],
      }[kind];
      return {
        id: `${group}-${i}`,
        taskGroup: group,
        payload: { i, pad: "x".repeat(600) },
        retryPolicy: kind === "retrying" ? { retryCount: 3, initialIntervalMs: 1_000, maxIntervalMs: 10_000 } : undefined,
        attempts,
      };
    });
    const results = await client.importJobs(jobs);
    expect(results.length).toBe(jobs.length);
    expect(results.filter((r) => !r.success)).toEqual([]);
    expect(results.map((r) => r.id)).toEqual(jobs.map((j) => j.id));
    const want = { succeeded: JobStatus.Succeeded, failed: JobStatus.Failed, cancelled: JobStatus.Cancelled, retrying: JobStatus.Scheduled, fresh: JobStatus.Scheduled };
    results.forEach((r, i) => expect(r.status).toBe(want[kinds[i % kinds.length]]));
    const counts = await client.query<{ status_kind: string; n: number }>(
      "SELECT status_kind, count(*) AS n FROM jobs WHERE task_group = $1 GROUP BY status_kind ORDER BY status_kind",
      undefined,
      [group],
    );
    expect(counts.rows.map((r) => [r.status_kind, Number(r.n)])).toEqual([
      ["Cancelled", 600],
      ["Failed", 600],
      ["Succeeded", 600],
      ["Waiting", 1200], // retrying jobs are due at their start time, as in Silo
    ]);
    const done = await client.getJob(`${group}-0`, undefined, { includeAttempts: true });
    expect(done.status).toBe(JobStatus.Succeeded);
    expect(done.attempts?.map((a) => a.status)).toEqual([AttemptStatus.Failed, AttemptStatus.Succeeded]);

    // Reimport: the stored attempt again plus a new one; the job is updated.
    const retrying = jobs[3];
    const [again] = await client.importJobs([
      { ...retrying, attempts: [...retrying.attempts, { status: AttemptStatus.Failed, errorCode: "NEW", ...at(9) }] },
    ]);
    expect(again).toMatchObject({ id: retrying.id, success: true, status: JobStatus.Scheduled });
    expect((await client.getJob(retrying.id, undefined, { includeAttempts: true })).attempts?.map((a) => a.errorCode)).toEqual(["OLD", "NEW"]);
    const [stale] = await client.importJobs([{ ...retrying, attempts: [] }]);
    expect(stale.success).toBe(false);
    expect(stale.error).toContain("has 0 attempts but job has 2");
    const [finished] = await client.importJobs([jobs[0]]);
    expect(finished.error).toBe(`cannot reimport job ${jobs[0].id}: job already succeeded (status: Succeeded)`);
  });
});

describe("query", () => {
  it("answers SQL over the jobs with typed rows, bind parameters and clear errors", async () => {
    const group = `sql-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const h = await client.enqueue({ taskGroup: group, payload: { i }, priority: i, metadata: { env: i % 2 ? "prod" : "dev" } });
      ids.push(h.id);
    }
    interface Row {
      id: string;
      priority: number;
      status_kind: string;
    }
    const r = await client.query<Row>(
      "SELECT id, priority, status_kind FROM jobs WHERE task_group = $1 AND array_contains(element_at(metadata, 'env'), $2) ORDER BY priority",
      undefined,
      [group, "prod"],
    );
    expect(r.columns).toEqual([
      { name: "id", dataType: "Utf8" },
      { name: "priority", dataType: "UInt8" },
      { name: "status_kind", dataType: "Utf8" },
    ]);
    expect(r.rowCount).toBe(2);
    expect(r.rows).toEqual([
      { id: ids[1], priority: 1, status_kind: "Waiting" },
      { id: ids[3], priority: 3, status_kind: "Waiting" },
    ]);
    const counted = await client.query<{ n: number }>("SELECT COUNT(*) AS n FROM jobs WHERE task_group = $1 AND priority >= $2", undefined, [group, 2]);
    expect(counted.rows[0].n).toBe(3);
    const payload = await client.query<{ payload: string }>("SELECT payload FROM jobs WHERE id = $1", undefined, [ids[4]]);
    expect(JSON.parse(payload.rows[0].payload)).toEqual({ i: 4 });
    await expectRpcError(client.query("SELEKT 1"), "INVALID_ARGUMENT", "SQL error: ");
    await expectRpcError(client.query("DELETE FROM jobs"), "INVALID_ARGUMENT", "DML not supported");
  });
});
