// Issue 16 items 1 and 3: the parts of Silo's client API this package adds
// (topology, shard lookup, getJobStatus, error classes, connectivity errors,
// the await timeout message) and the plaintext default for loopback servers,
// against real servers.
import { RpcError } from "@protobuf-ts/runtime-rpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  hashTenant,
  isConnectivityError,
  isLoopbackAddress,
  JobAlreadyExistsError,
  JobNotFoundError,
  JobNotTerminalError,
  JobStatus,
  shardForTenant,
  SiloAlreadyExistsError,
  SiloError,
  SiloFailedPreconditionError,
  SiloGRPCClient,
  SiloGrpcError,
  SiloNotFoundError,
  SiloUnavailableError,
  type SiloGRPCClientOptions,
} from "../src";
import { freePort, startServer } from "./harness";

let server: Awaited<ReturnType<typeof startServer>>;
let client: SiloGRPCClient;

beforeAll(async () => {
  server = await startServer();
  // No useTls: a loopback server gets plaintext by default (item 3).
  client = new SiloGRPCClient({ servers: [server.addr] });
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});

/** The rejection of `p` (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.fail("expected a rejection"),
    (e: unknown) => e,
  );
}

describe("topology", () => {
  it("getTopology lists shards with range and owner, and the members", async () => {
    const fresh = new SiloGRPCClient({ servers: [server.addr], topologyRefreshIntervalMs: 0 });
    try {
      expect(fresh.getTopology()).toEqual({ shardToServer: new Map(), shards: [], members: [] });
      await fresh.refreshTopology();
      const topo = fresh.getTopology();
      expect(topo.members).toHaveLength(1);
      const [member] = topo.members;
      expect(member.grpcAddr).toBe(server.addr);
      expect(member.nodeId).not.toBe("");
      expect(topo.shards.length).toBeGreaterThan(0);
      expect(topo.shards[0].rangeStart).toBe("");
      expect(topo.shards[topo.shards.length - 1].rangeEnd).toBe("");
      for (const s of topo.shards) {
        expect(s.shardId).not.toBe("");
        expect(s.serverAddr).toBe(server.addr);
        expect(s.nodeId).toBe(member.nodeId);
        expect(topo.shardToServer.get(s.shardId)).toBe(server.addr);
      }
    } finally {
      fresh.close();
    }
  });

  it("getShardForTenant names the shard the server puts the tenant's jobs in", async () => {
    const multi = await startServer("num_shards = 8\n[tenancy]\nenabled = true\n");
    const c = new SiloGRPCClient({ servers: [multi.addr], topologyRefreshIntervalMs: 0 });
    try {
      expect(() => c.getShardForTenant("t")).toThrow(/topology/);
      await c.refreshTopology();
      const { shards } = c.getTopology();
      expect(shards).toHaveLength(8);
      const seen = new Set<string>();
      for (const tenant of ["customer-1", "customer-2", "customer-3", "customer-4", "customer-5", "customer-6"]) {
        const shard = c.getShardForTenant(tenant);
        seen.add(shard);
        expect(shardForTenant(hashTenant(tenant), shards)?.shardId).toBe(shard);
        const h = await c.enqueue({ payload: 1, tenant, taskGroup: "shard-check" });
        const task = await c.leaseTask(h.id, "shard-check", tenant);
        expect(task.shard).toBe(shard);
      }
      expect(seen.size).toBeGreaterThan(1);
    } finally {
      c.close();
      await multi.stop();
    }
  });
});

describe("getJobStatus", () => {
  it("reads a job's status, with and without the handle", async () => {
    const h = await client.enqueue({ payload: 1, startAtMs: BigInt(Date.now() + 3_600_000) });
    expect(await client.getJobStatus(h.id)).toBe(JobStatus.Scheduled);
    await h.cancel();
    expect(await client.getJobStatus(h.id)).toBe(JobStatus.Cancelled);
    expect(await h.getStatus()).toBe(JobStatus.Cancelled);
    const e = await rejection(client.getJobStatus("no-such-job"));
    expect(e).toBeInstanceOf(JobNotFoundError);
  });

  it("takes the tenant", async () => {
    const tenanted = await startServer("[tenancy]\nenabled = true\n");
    const c = new SiloGRPCClient({ servers: [tenanted.addr] });
    try {
      const h = await c.enqueue({ payload: 1, tenant: "customer-456" });
      expect(await c.getJobStatus(h.id, "customer-456")).toBe(JobStatus.Scheduled);
      expect(await rejection(c.getJobStatus(h.id, "customer-789"))).toBeInstanceOf(JobNotFoundError);
    } finally {
      c.close();
      await tenanted.stop();
    }
  });
});

describe("error classes", () => {
  it("job not found: JobNotFoundError, SiloNotFoundError, RpcError NOT_FOUND", async () => {
    const e = await rejection(client.cancelJob("missing-job"));
    expect(e).toBeInstanceOf(JobNotFoundError);
    expect(e).toBeInstanceOf(SiloNotFoundError);
    expect(e).toBeInstanceOf(SiloGrpcError);
    expect(e).toBeInstanceOf(RpcError);
    const err = e as JobNotFoundError;
    expect(err.code).toBe("NOT_FOUND");
    expect(err.grpcCode).toBe("NOT_FOUND");
    expect(err.jobId).toBe("missing-job");
    expect(err.name).toBe("JobNotFoundError");
  });

  it("already exists: JobAlreadyExistsError, SiloAlreadyExistsError, RpcError ALREADY_EXISTS", async () => {
    await client.enqueue({ id: "parity-dup", payload: 1 });
    const e = await rejection(client.enqueue({ id: "parity-dup", payload: 2 }));
    expect(e).toBeInstanceOf(JobAlreadyExistsError);
    expect(e).toBeInstanceOf(SiloAlreadyExistsError);
    expect(e).toBeInstanceOf(RpcError);
    expect((e as RpcError).code).toBe("ALREADY_EXISTS");
    expect((e as JobAlreadyExistsError).jobId).toBe("parity-dup");
  });

  it("failed precondition: SiloFailedPreconditionError, RpcError FAILED_PRECONDITION, server message kept", async () => {
    const h = await client.enqueue({ payload: 1, startAtMs: BigInt(Date.now() + 3_600_000) });
    await h.cancel();
    const e = await rejection(h.cancel());
    expect(e).toBeInstanceOf(SiloFailedPreconditionError);
    expect(e).toBeInstanceOf(RpcError);
    expect((e as RpcError).code).toBe("FAILED_PRECONDITION");
    expect((e as RpcError).message).toContain("already cancelled");
    // The seed documents' check, unchanged.
    expect(e instanceof RpcError && e.code === "FAILED_PRECONDITION").toBe(true);
  });

  it("not terminal: getJobResult before completion is JobNotTerminalError with the status", async () => {
    const h = await client.enqueue({ payload: 1, taskGroup: "nobody-runs-this" });
    const e = await rejection(client.getJobResult(h.id));
    expect(e).toBeInstanceOf(JobNotTerminalError);
    expect(e).toBeInstanceOf(SiloFailedPreconditionError);
    expect(e).toBeInstanceOf(RpcError);
    const err = e as JobNotTerminalError;
    expect(err.code).toBe("FAILED_PRECONDITION");
    expect(err.status).toBe(JobStatus.Scheduled);
    expect(err.currentStatus).toBe(JobStatus.Scheduled);
  });

  it("any other code: SiloGrpcError with the code (deleting a scheduled job is INTERNAL)", async () => {
    const h = await client.enqueue({ payload: 1 });
    const e = await rejection(h.delete());
    expect(e).toBeInstanceOf(SiloGrpcError);
    expect(e).toBeInstanceOf(RpcError);
    expect((e as SiloGrpcError).code).toBe("INTERNAL");
    expect((e as SiloGrpcError).grpcMessage).toBe((e as Error).message);
    expect(e).not.toBeInstanceOf(SiloFailedPreconditionError);
    expect(SiloError).toBe(SiloGrpcError);
  });
});

describe("isConnectivityError", () => {
  it("is true for an unreachable server (SiloUnavailableError, UNAVAILABLE)", async () => {
    const port = await freePort(); // nothing listens there
    const c = new SiloGRPCClient({
      servers: [`127.0.0.1:${port}`],
      topologyRefreshIntervalMs: 0,
      shardRouting: { maxRetries: 0, topologyRefreshTimeoutMs: 2_000 },
    });
    try {
      const e = await rejection(c.getJob("any"));
      expect(isConnectivityError(e)).toBe(true);
      expect(e).toBeInstanceOf(SiloUnavailableError);
      expect(e).toBeInstanceOf(RpcError);
      expect((e as RpcError).code).toBe("UNAVAILABLE");
    } finally {
      c.close();
    }
  });

  it("is false for answers from a live server, true for deadlines and transport errors", async () => {
    expect(isConnectivityError(await rejection(client.getJob("missing-job")))).toBe(false);
    expect(isConnectivityError(new RpcError("deadline", "DEADLINE_EXCEEDED"))).toBe(true);
    expect(isConnectivityError(new RpcError("Received RST_STREAM with code 2", "INTERNAL"))).toBe(true);
    expect(isConnectivityError(new RpcError("job is still in progress", "INTERNAL"))).toBe(false);
    expect(isConnectivityError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }))).toBe(true);
    expect(isConnectivityError(new Error("boom"))).toBe(false);
    expect(isConnectivityError(undefined)).toBe(false);
  });
});

describe("awaitResult timeout", () => {
  it("throws JobNotTerminalError with Silo's message", async () => {
    const h = await client.enqueue({ payload: 1, taskGroup: "nobody-runs-this" });
    const e = await rejection(h.awaitResult({ timeoutMs: 300, pollIntervalMs: 50 }));
    expect(e).toBeInstanceOf(JobNotTerminalError);
    expect(e).toBeInstanceOf(RpcError);
    expect((e as Error).message.startsWith(`Timeout waiting for job ${h.id} to complete after 300ms`)).toBe(true);
    expect((e as JobNotTerminalError).status).toBe(JobStatus.Scheduled);
  });
});

describe("plaintext for loopback servers", () => {
  it("a client without useTls works against the local server, by IP and by localhost", async () => {
    const port = server.addr.split(":").pop();
    for (const servers of [[server.addr], [`localhost:${port}`]]) {
      const opts: SiloGRPCClientOptions = { servers, topologyRefreshIntervalMs: 0 };
      const c = new SiloGRPCClient(opts);
      try {
        const h = await c.enqueue({ payload: { servers } });
        expect(await c.getJobStatus(h.id)).toBe(JobStatus.Scheduled);
        expect((await h.getJob()).payload).toEqual({ servers });
      } finally {
        c.close();
      }
    }
  });

  it("recognises loopback addresses", () => {
    for (const a of ["localhost:7450", "LOCALHOST", "127.0.0.1:7450", "127.8.9.10", "[::1]:7450", "::1", "[::ffff:127.0.0.1]:7450"]) {
      expect(isLoopbackAddress(a), a).toBe(true);
    }
    for (const a of ["example.com:7450", "10.0.0.1:7450", "[2001:db8::1]:7450", "silo.internal", "0.0.0.0:7450", "localhost.example.com:1"]) {
      expect(isLoopbackAddress(a), a).toBe(false);
    }
  });

  it("keeps TLS the default elsewhere, and when asked", () => {
    const tls = (opts: SiloGRPCClientOptions) => {
      const c = new SiloGRPCClient({ topologyRefreshIntervalMs: 0, ...opts });
      c.close();
      return (c as unknown as { useTls: boolean }).useTls;
    };
    expect(tls({ servers: ["localhost:7450"] })).toBe(false);
    expect(tls({ servers: [{ host: "127.0.0.1", port: 7450 }] })).toBe(false);
    expect(tls({ servers: ["silo.example.com:7450"] })).toBe(true);
    expect(tls({ servers: ["localhost:7450", "silo.example.com:7450"] })).toBe(true);
    expect(tls({ servers: ["localhost:7450"], useTls: true })).toBe(true);
    expect(tls({ servers: ["silo.example.com:7450"], useTls: false })).toBe(false);
  });
});
