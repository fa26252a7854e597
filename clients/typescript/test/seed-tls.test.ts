// The seed documents' client construction, unchanged, against a local node
// with TLS: the client starts in plaintext (a loopback seed), the node answers
// "TLS only", and the client switches to TLS, trusting the CA through the
// environment (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH; NODE_EXTRA_CA_CERTS works the
// same way for Node's own roots).
import { EXTRA_ROOTS_DIR } from "./extra-roots";

import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";

import { afterAll, beforeAll, expect, it } from "vitest";

import { JobStatus, SiloGRPCClient } from "../src";
import { SILO_BIN, startServer } from "./harness";

let node: Awaited<ReturnType<typeof startServer>>;

beforeAll(async () => {
  mkdirSync(EXTRA_ROOTS_DIR, { recursive: true });
  execFileSync(SILO_BIN, ["ctl", "cert", "ca", "--dir", EXTRA_ROOTS_DIR]);
  execFileSync(SILO_BIN, ["ctl", "cert", "issue", "node1", "--san", "127.0.0.1,localhost", "--dir", EXTRA_ROOTS_DIR]);
  const d = EXTRA_ROOTS_DIR;
  node = await startServer(`[tls]\ncert_file = "${d}/node1.pem"\nkey_file = "${d}/node1.key"\nca_file = "${d}/ca.pem"\n`, {
    useTls: true,
  });
}, 90_000);

afterAll(async () => {
  await node?.stop();
  rmSync(EXTRA_ROOTS_DIR, { recursive: true, force: true });
});

it("new SiloGRPCClient({ servers }) works as written against a TLS node whose CA the environment trusts", async () => {
  const client = new SiloGRPCClient({ servers: [node.addr] });
  try {
    const handle = await client.enqueue({ taskGroup: "seed-tls", payload: { hello: "tls" } });
    expect(await handle.getStatus()).toBe(JobStatus.Scheduled);
  } finally {
    client.close();
  }
});
