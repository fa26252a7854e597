// A 3-node cluster: the leader is killed while a worker processes jobs and 60
// awaitResult loops poll; every loop resolves and every job completes exactly
// once as the client sees it.
import { afterAll, expect, it } from "vitest";

import { JobStatus, SiloGRPCClient, SiloWorker } from "../src";
import { startCluster } from "./harness";

let cluster: Awaited<ReturnType<typeof startCluster>> | undefined;
afterAll(() => cluster?.stop());

it("survives a leader kill while a worker runs jobs", async () => {
  cluster = await startCluster(3, "lease_ms = 4000\n[raft]\nheartbeat_interval_ms = 150\nelection_timeout_min_ms = 1000\nelection_timeout_max_ms = 2000");
  const client = new SiloGRPCClient({ servers: cluster.nodes.map((n) => n.addr), useTls: false });
  const n = 60;
  const handles = [];
  for (let i = 0; i < n; i++) {
    handles.push(
      await client.enqueue({
        payload: { i },
        taskGroup: "failover",
        retryPolicy: { retryCount: 5, initialIntervalMs: 50, maxIntervalMs: 500 },
      }),
    );
  }
  const successes = new Map<string, number>();
  const worker = new SiloWorker({
    client,
    workerId: "failover-worker",
    taskGroup: "failover",
    maxConcurrentTasks: 8,
    pollIntervalMs: 50,
    heartbeatIntervalMs: 500,
    onError: () => undefined,
    handler: async (ctx) => {
      await new Promise((r) => setTimeout(r, 30));
      successes.set(ctx.task.jobId, (successes.get(ctx.task.jobId) ?? 0) + 1);
      return { type: "success", result: ctx.task.payload };
    },
  });
  worker.start();
  while (successes.size < n / 4) await new Promise((r) => setTimeout(r, 20));

  // Every job awaited concurrently while the leader dies: each loop rides out
  // the election (transient errors are retried within its timeout).
  const waits = handles.map((h) => h.awaitResult({ pollIntervalMs: 100, timeoutMs: 60_000 }));
  const info = await client["connection"](cluster.nodes[0].addr).getClusterInfo({}).response;
  const leaderAddr = info.shardOwners[0].grpcAddr;
  const leader = cluster.nodes.find((x) => x.addr === leaderAddr)!;
  leader.proc!.kill("SIGKILL");

  const results = await Promise.all(waits);
  expect(results.map((r) => r.status)).toEqual(handles.map(() => JobStatus.Succeeded));
  await worker.stop(5_000);
  for (const h of handles) {
    const job = await h.getJob({ includeAttempts: true });
    expect(job.attempts.filter((a) => a.status === "Succeeded")).toHaveLength(1);
  }
  client.close();
});
