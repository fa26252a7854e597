// TLS between the client and a node (README "TLS"): certificates made by
// `silo ctl cert`, a node with `[tls]`, and the errors a misconfigured client gets.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { JobStatus, PLAINTEXT_HINT, SiloFailedPreconditionError, SiloGRPCClient, SiloUnavailableError } from "../src";
import { SILO_BIN, startServer } from "./harness";

let certs: string;
let ca: Buffer;
let tlsNode: Awaited<ReturnType<typeof startServer>>;
let plainNode: Awaited<ReturnType<typeof startServer>>;

beforeAll(async () => {
  certs = mkdtempSync(join(tmpdir(), "silo-ts-certs-"));
  execFileSync(SILO_BIN, ["ctl", "cert", "ca", "--dir", certs]);
  execFileSync(SILO_BIN, ["ctl", "cert", "issue", "node1", "--san", "127.0.0.1,localhost", "--dir", certs]);
  ca = readFileSync(join(certs, "ca.pem"));
  const tlsToml = `[tls]\ncert_file = "${certs}/node1.pem"\nkey_file = "${certs}/node1.key"\nca_file = "${certs}/ca.pem"\n`;
  [tlsNode, plainNode] = await Promise.all([startServer(tlsToml, { tls: { ca } }), startServer()]);
}, 90_000);

afterAll(async () => {
  await Promise.all([tlsNode?.stop(), plainNode?.stop()]);
  if (certs) rmSync(certs, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: Error) => e,
  );
}

describe("TLS", () => {
  it("a client trusting the cluster CA enqueues and reads over TLS", async () => {
    const c = new SiloGRPCClient({ servers: [tlsNode.addr], tls: { ca }, topologyRefreshIntervalMs: 0 });
    try {
      const h = await c.enqueue({ taskGroup: "tls", payload: { over: "tls" } });
      const job = await c.getJob(h.id);
      expect(job.status).toBe(JobStatus.Scheduled);
      expect(job.payload).toEqual({ over: "tls" });
    } finally {
      c.close();
    }
  });

  it("a plaintext client is told the node serves TLS only", async () => {
    const c = new SiloGRPCClient({ servers: [tlsNode.addr], useTls: false, maxRetries: 0, topologyRefreshIntervalMs: 0 });
    try {
      const e = await rejection(c.getJob("any"));
      expect(e).toBeInstanceOf(SiloFailedPreconditionError);
      expect(e.message).toContain("serves gRPC over TLS only");
      expect(e.message).toContain("useTls: true");
    } finally {
      c.close();
    }
  });

  it("a TLS client of a plaintext node is told to pass useTls: false", async () => {
    const c = new SiloGRPCClient({ servers: [plainNode.addr], useTls: true, maxRetries: 0, topologyRefreshIntervalMs: 0 });
    try {
      const e = await rejection(c.getJob("any"));
      expect(e).toBeInstanceOf(SiloUnavailableError);
      expect(e.message).toContain(PLAINTEXT_HINT);
    } finally {
      c.close();
    }
  });

  it("a client that does not trust the node's CA cannot connect", async () => {
    // The system roots do not include the dev CA.
    const c = new SiloGRPCClient({ servers: [tlsNode.addr], useTls: true, maxRetries: 0, topologyRefreshIntervalMs: 0 });
    try {
      const e = await rejection(c.getJob("any"));
      expect(e).toBeInstanceOf(SiloUnavailableError);
      expect(e.message).toMatch(/certificate/i);
    } finally {
      c.close();
    }
  });
});
