// Real `silo` server processes for the tests (built by scripts/test).
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync, openSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { SiloGRPCClient, type SiloClientOptions } from "../src";

export const SILO_BIN = process.env.SILO_BIN ?? resolve(__dirname, "../../../target/debug/silo");

export interface Node {
  id: number;
  addr: string;
  /** The node's web console, `http://127.0.0.1:<port>` (a free port each). */
  console?: string;
  dir: string;
  proc?: ChildProcess;
  config: string;
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

function launch(node: Node): Promise<void> {
  const log = openSync(join(node.dir, "node.log"), "a");
  const proc = spawn(SILO_BIN, ["serve", "--config", node.config], { stdio: ["ignore", "pipe", log] });
  node.proc = proc;
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`node ${node.id} did not start (see ${node.dir}/node.log)`)), 60_000);
    let buf = "";
    proc.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const web = buf.match(/SILO_WEBUI (\S+)/);
      if (web) node.console = web[1];
      const m = buf.match(/SILO_LISTENING (\S+)/);
      if (m) {
        clearTimeout(timer);
        node.addr = m[1];
        res();
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      if (!node.addr) rej(new Error(`node ${node.id} exited with ${code} (see ${node.dir}/node.log)`));
    });
  });
}

/**
 * Kills the nodes (SIGKILL), waits for each process to exit and then removes
 * `dir`, the test's temporary directory (a node's RocksDB preallocates a
 * ~70 MB WAL, so leaked directories fill a disk within a few runs). Set
 * `SILO_KEEP_TEST_DIRS=1` to keep them for a post-mortem.
 */
async function stopAndRemove(nodes: Node[], dir: string): Promise<void> {
  await Promise.all(
    nodes.map((x) => {
      const p = x.proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
      return new Promise<void>((res) => {
        p.once("exit", () => res());
        p.kill("SIGKILL");
      });
    }),
  );
  if (!process.env.SILO_KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
}

/** A single-node server on a free port with its own data directory; `stop()` kills it and removes the directory. */
export async function startServer(
  extraToml = "",
  /** How to connect while waiting for it to serve (TLS options for a TLS node). */
  connect: Partial<SiloClientOptions> = {},
): Promise<Node & { stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "silo-ts-"));
  const config = join(dir, "silo.toml");
  writeFileSync(config, `listen = "127.0.0.1:0"\ndata_dir = "${join(dir, "data")}"\ndev_mode = true\nwebui.listen = "127.0.0.1:0"\nmetrics.listen = ""\n${extraToml}\n`);
  const node: Node = { id: 1, addr: "", dir, config };
  await launch(node);
  await waitReady([node.addr], undefined, connect);
  return Object.assign(node, { stop: () => stopAndRemove([node], dir) });
}

/**
 * An N-node cluster on free ports (`token`: the `auth.token` it runs with, if
 * any); `stop()` kills every node and removes the cluster's directory.
 */
export async function startCluster(n: number, extraToml = "", token?: string): Promise<{ nodes: Node[]; stop(): Promise<void>; restart(node: Node): Promise<void> }> {
  const root = mkdtempSync(join(tmpdir(), "silo-ts-cluster-"));
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const members = ports.map((p, i) => `[[cluster.initial_members]]\nid = ${i + 1}\naddr = "127.0.0.1:${p}"\n`).join("");
  const nodes: Node[] = ports.map((p, i) => {
    const dir = join(root, `node${i + 1}`);
    mkdirSync(dir, { recursive: true });
    const config = join(dir, "silo.toml");
    writeFileSync(
      config,
      `node_id = ${i + 1}\nlisten = "127.0.0.1:${p}"\ndata_dir = "${join(dir, "data")}"\ndev_mode = true\nwebui.listen = "127.0.0.1:0"\nmetrics.listen = ""\n${extraToml}\n[cluster]\n${members}`,
    );
    return { id: i + 1, addr: "", dir, config };
  });
  await Promise.all(nodes.map(launch));
  await waitReady(nodes.map((x) => x.addr), token);
  return {
    nodes,
    stop: () => stopAndRemove(nodes, root),
    restart: async (node: Node) => {
      node.addr = "";
      node.console = undefined;
      await launch(node);
    },
  };
}

export async function waitFor<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch {
      // keep trying until the deadline
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the servers name an owner for every shard (a leader and a shard map). */
export async function waitReady(servers: string[], token?: string, connect: Partial<SiloClientOptions> = {}): Promise<void> {
  const c = new SiloGRPCClient({ servers, useTls: connect.tls !== undefined, topologyRefreshIntervalMs: 0, token, ...connect });
  try {
    await waitFor("cluster ready", async () => {
      await c.refreshTopology();
      return true;
    }, 60_000);
  } finally {
    c.close();
  }
}
