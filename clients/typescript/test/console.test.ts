// The web console (issue #13) in a real headless Chromium (Debian's, driven by
// playwright-core) against a real 3-node cluster with auth on. Every page is
// loaded and checked against jobs this test made; the job actions are clicked
// on a follower's console (so they are forwarded to the leader) and checked
// through the gRPC client. Screenshots of every page go to
// test-output/console/ (or $CONSOLE_SCREENSHOTS).
import { existsSync, mkdirSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { join, resolve } from "node:path";

import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { JobNotFoundError, JobStatus, SiloGRPCClient } from "../src";
import { startCluster, waitFor, type Node } from "./harness";

const TOKEN = "console-s3cret";
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SHOTS = process.env.CONSOLE_SCREENSHOTS ?? resolve(__dirname, "../test-output/console");

let cluster: Awaited<ReturnType<typeof startCluster>>;
let client: SiloGRPCClient;
let browser: Browser;
let page: Page;
/** A follower's console: writes there must reach the leader. */
let consoleUrl: string;
let leaderId: number;
const jobs: Record<string, string> = {};

async function shot(name: string) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** The visible text of the element matching `selector`. */
async function text(selector: string): Promise<string> {
  return (await page.locator(selector).first().innerText()).trim();
}

async function open(path: string) {
  const response = await page.goto(consoleUrl + path);
  expect(response?.status(), `GET ${path}`).toBe(200);
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  cluster = await startCluster(3, `[auth]\ntoken = "${TOKEN}"`, TOKEN);
  client = new SiloGRPCClient({ servers: cluster.nodes.map((n) => n.addr), useTls: false, token: TOKEN });
  await client.refreshTopology();
  const topology = client.getTopology();
  leaderId = Number(topology.shards[0].nodeId);
  const follower = cluster.nodes.find((n: Node) => n.id !== leaderId)!;
  consoleUrl = follower.console!;

  // Known jobs: one due later (to expedite, cancel, restart, delete), one
  // that succeeds, one that fails, one left running, one behind a limit.
  const later = Date.now() + 3_600_000;
  jobs.later = (await client.enqueue({ payload: { hello: "console" }, taskGroup: "console", metadata: { customer: "acme" }, startAtMs: later })).id;
  jobs.ok = (await client.enqueue({ payload: { n: 1 }, taskGroup: "console", metadata: { customer: "globex" } })).id;
  jobs.bad = (await client.enqueue({ payload: { n: 2 }, taskGroup: "console" })).id;
  jobs.running = (await client.enqueue({ payload: { n: 3 }, taskGroup: "console" })).id;
  jobs.ready = (await client.enqueue({ payload: { n: 4 }, taskGroup: "console", priority: 7, limits: [{ type: "concurrency", key: "console-key", maxConcurrency: 1 }] })).id;
  const ok = await client.leaseTask(jobs.ok, "console-worker");
  await client.reportOutcome(ok, { oneofKind: "success", success: { encoding: { oneofKind: "msgpack", msgpack: new Uint8Array([0x81, 0xa2, 0x6f, 0x6b, 0xc3]) } } });
  const bad = await client.leaseTask(jobs.bad, "console-worker");
  await client.reportOutcome(bad, { oneofKind: "failure", failure: { code: "BOOM", data: { encoding: { oneofKind: "msgpack", msgpack: new Uint8Array([0xa4, 0x6f, 0x6f, 0x70, 0x73]) } } } });
  await client.leaseTask(jobs.running, "console-worker");

  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: scripts/deps installs Debian's chromium`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1366, height: 800 } });
});

afterAll(async () => {
  await browser?.close();
  client?.close();
  await cluster?.stop();
});

describe("web console", () => {
  it("asks for the token, refuses a wrong one, and never puts it in a URL", async () => {
    await page.goto(consoleUrl + "/");
    expect(page.url()).toBe(consoleUrl + "/login");
    await page.fill("#token", "wrong");
    await page.click("#sign-in");
    expect(await text("#error")).toContain("does not match");
    await shot("login");
    await page.fill("#token", TOKEN);
    await page.click("#sign-in");
    expect(page.url()).toBe(consoleUrl + "/");
    expect(page.url()).not.toContain(TOKEN);
  });

  it("shows the cluster: three reachable members, one leader", async () => {
    await open("/");
    const rows = page.locator("#members tbody tr");
    await waitFor("three reachable members", async () => {
      await page.reload();
      return (await page.locator("#members .badge.ok").count()) === 3 ? true : undefined;
    });
    expect(await rows.count()).toBe(3);
    expect(await page.locator("#members .role-leader").count()).toBe(1);
    expect(await text("#members tr.this")).toContain("follower");
    expect(await text("#node-info")).toContain(`leader node ${leaderId}`);
    expect(await page.locator("#shards tbody tr").count()).toBe(1);
    expect(await text(".summary")).toMatch(/commit index \d+/);
    await shot("cluster");
  });

  it("lists the task group and its next tasks and running lease", async () => {
    await open("/queues");
    const row = page.locator("#queues tr", { hasText: "console" });
    // later (future), ready (due, holding its slot), running (leased)
    await waitFor("the follower applied every job", async () => {
      await page.reload();
      const cells = await row.locator("td").allInnerTexts();
      return cells[1] === "1" && cells[2] === "1" && cells[3] === "1" ? true : undefined;
    });
    expect(await text("#parked")).toContain("0 attempts are parked");
    await shot("queues");
    await row.locator("a").click();
    expect(await text("#next-tasks")).toContain(jobs.ready);
    expect(await text("#leases")).toContain(jobs.running);
    expect(await text("#leases")).toContain("console-worker");
    await shot("queue");
    // A job link from the queue page opens the job (no tenant with tenancy off).
    await page.locator("#next-tasks a", { hasText: jobs.ready }).click();
    expect(await text("#job-id")).toBe(jobs.ready);
    expect(await text("#job-status")).toBe("scheduled");
  });

  it("finds jobs by metadata, status and id", async () => {
    await open("/jobs");
    await page.fill("input[name=meta_key]", "customer");
    await page.fill("input[name=meta_value]", "acme");
    await page.click("#search");
    expect(await page.locator("#jobs tbody tr").count()).toBe(1);
    expect(await text("#jobs")).toContain(jobs.later);
    await shot("search");
    await open("/jobs?status=Failed");
    expect(await text("#jobs")).toContain(jobs.bad);
    expect(await text("#jobs")).not.toContain(jobs.ok);
    await open(`/jobs?id=${jobs.ok}`);
    await page.locator("#jobs a").first().click();
    expect(await text("#job-status")).toBe("succeeded");
    expect(await text("#result")).toContain('"ok": true');
    expect(await text("#attempts")).toContain("succeeded");
  });

  it("shows a failed attempt's error code and data", async () => {
    await open(`/jobs/${jobs.bad}`);
    expect(await text("#job-status")).toBe("failed");
    expect(await text("#attempts")).toContain("BOOM");
    expect(await text("#attempts")).toContain('"oops"');
    await shot("job-failed");
  });

  it("expedites, cancels, restarts and deletes through the leader, and shows refusals", async () => {
    await open(`/jobs/${jobs.later}`);
    expect(await text("#payload")).toContain('"hello": "console"');
    expect(await text("#metadata")).toContain("acme");
    await shot("job");

    await page.click("#action-expedite");
    expect(await text("#notice")).toContain(`Expedited (this node is a follower: sent to the leader, node ${leaderId}`);
    const expedited = await client.getJob(jobs.later);
    expect(Number(expedited.nextAttemptStartsAfterMs ?? 0)).toBeLessThanOrEqual(Date.now());

    await page.click("#action-cancel");
    expect(await text("#notice")).toContain("Cancelled");
    expect((await client.getJob(jobs.later)).status).toBe(JobStatus.Cancelled);
    await waitFor("the follower's page shows it cancelled", async () => {
      await page.reload();
      return (await text("#job-status")) === "cancelled" ? true : undefined;
    });

    await page.click("#action-cancel");
    expect(await text("#error")).toContain("FAILED_PRECONDITION");
    await shot("job-refused");

    await page.click("#action-restart");
    expect(await text("#notice")).toContain("Restarted");
    expect((await client.getJob(jobs.later)).status).toBe(JobStatus.Scheduled);

    await page.click("#action-cancel");
    await page.click("#action-delete");
    expect(page.url()).toContain("/jobs?notice=");
    expect(await text("#notice")).toContain(`Deleted job ${jobs.later}`);
    await expect(client.getJob(jobs.later)).rejects.toBeInstanceOf(JobNotFoundError);

    await open(`/jobs/${jobs.later}`);
    expect(await text("#error")).toContain("NOT_FOUND");
  });

  it("acts on the job it shows, whatever its id ('/', '..', '?')", async () => {
    const victim = `victim-${Date.now()}`;
    const odd = `x/../${victim}`;
    const later = Date.now() + 3_600_000;
    await client.enqueue({ id: victim, payload: 1, taskGroup: "odd", startAtMs: later });
    await client.enqueue({ id: odd, payload: 2, taskGroup: "odd", startAtMs: later });
    await client.enqueue({ id: "q?a=1&b", payload: 3, taskGroup: "odd/group", startAtMs: later });
    await open(`/jobs?id=${encodeURIComponent(odd)}`);
    await page.locator("#jobs a").first().click();
    expect(await text("#job-id")).toBe(odd);
    await page.click("#action-cancel");
    expect(await text("#notice")).toContain("Cancelled");
    expect(await text("#job-id")).toBe(odd);
    expect((await client.getJob(odd)).status).toBe(JobStatus.Cancelled);
    expect((await client.getJob(victim)).status).toBe(JobStatus.Scheduled);
    await open(`/jobs?id=${encodeURIComponent("q?a=1&b")}`);
    await page.locator("#jobs a").first().click();
    expect(await text("#job-id")).toBe("q?a=1&b");
    await page.locator("a", { hasText: "odd/group" }).click();
    expect(page.url()).toContain("/queue?task_group=odd%2Fgroup");
    expect(await text("h1")).toContain("odd/group");
  });

  it("refuses framing, other host names and other sites' requests", async () => {
    const response = await page.request.get(consoleUrl + "/");
    expect(response.headers()["x-frame-options"]).toBe("DENY");
    expect(response.headers()["content-security-policy"]).toContain("frame-ancestors 'none'");
    const url = new URL(consoleUrl);
    const status = (host: string, headers: Record<string, string> = {}, path = "/login") =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest({ host: url.hostname, port: url.port, path, headers: { host, ...headers } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on("error", reject);
        req.end();
      });
    expect(await status("attacker.example:80")).toBe(421); // a DNS-rebinding page's name
    expect(await status(`localhost:${url.port}`)).toBe(200);
    expect(await status(url.host, { "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors" }, "/sql?sql=SELECT%201")).toBe(403);
  });

  it("runs SQL and shows its errors", async () => {
    await open("/sql");
    await page.fill("#sql", "SELECT status_kind, count(*) AS n FROM jobs GROUP BY status_kind ORDER BY status_kind");
    await page.click("#run");
    const result = await text("#result");
    expect(result).toContain("Succeeded");
    expect(result).toContain("Failed");
    expect(result).toContain("Running");
    await shot("sql");
    await page.fill("#sql", "SELEKT 1");
    await page.click("#run");
    expect(await text("#error")).toContain("INVALID_ARGUMENT: SQL error");
    await page.fill("#sql", "DELETE FROM jobs");
    await page.click("#run");
    expect(await text("#error")).toContain("INVALID_ARGUMENT");
  });

  it("shows tenants, limits and the configuration with the token masked", async () => {
    await open("/tenants");
    expect(await text("#tenants")).toContain("-");
    expect(await page.locator("#tenants tbody tr").count()).toBe(1);
    await shot("tenants");
    await open("/limits");
    expect(await text("#concurrency")).toContain("console-key");
    await page.locator("#concurrency a", { hasText: "console-key" }).click();
    expect(await text("#entries")).toContain(jobs.ready);
    await shot("limits");
    await open("/config");
    const config = await text("#config");
    expect(config).toContain('token = "***"');
    expect(config).not.toContain(TOKEN);
    await shot("config");
  });

  it("refuses a cross-site form post and signs out", async () => {
    const refused = await page.request.post(`${consoleUrl}/jobs/${jobs.ok}/delete`, {
      headers: { Origin: "http://attacker.example" },
      form: { tenant: "" },
    });
    expect(refused.status()).toBe(403);
    expect((await client.getJob(jobs.ok)).status).toBe(JobStatus.Succeeded);
    await open("/");
    await page.click("button.link");
    expect(page.url()).toBe(consoleUrl + "/login");
    await page.goto(consoleUrl + "/queues");
    expect(page.url()).toBe(consoleUrl + "/login");
  });
});
