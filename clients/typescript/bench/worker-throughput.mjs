// Jobs/s of one SiloWorker process draining a backlog from one node.
//
//   node bench/worker-throughput.mjs --client dist --servers 127.0.0.1:7450 \
//     [--jobs 20000] [--concurrency 64] [--tasks-per-poll 32] [--poll-interval-ms 1000] [--label ours]
//
// `--client` is a directory whose index.js exports SiloGRPCClient and
// SiloWorker (this package's `dist`, or another build of a Silo client, such as
// Silo's own typescript_client compiled to dist/src). The backlog is enqueued
// first with this package's client (the same for every client measured), in a
// task group of its own; then the worker under test drains it with a handler
// that succeeds at once, and the drain time is measured from start() until
// the last handler returned. Prints one JSON line.
import { createRequire } from "node:module";
import { resolve } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const require = createRequire(import.meta.url);
const here = resolve(new URL(".", import.meta.url).pathname, "..");
const tested = require(resolve(args.client ?? resolve(here, "dist"), "index.js"));
const ours = require(resolve(here, "dist", "index.js"));
const servers = (args.servers ?? "127.0.0.1:7450").split(",");
const jobs = Number(args.jobs ?? 20_000);
const concurrency = Number(args.concurrency ?? 64);
const tasksPerPoll = Number(args["tasks-per-poll"] ?? 32);
const pollIntervalMs = Number(args["poll-interval-ms"] ?? 1000);
const group = `worker-bench-${process.pid}-${Date.now()}`;

const loader = new ours.SiloGRPCClient({ servers, useTls: false });
const started = Date.now();
for (let sent = 0; sent < jobs; ) {
  const n = Math.min(500, jobs - sent);
  await Promise.all(Array.from({ length: n }, (_, i) => loader.enqueue({ payload: { i: sent + i }, taskGroup: group })));
  sent += n;
}
const enqueueMs = Date.now() - started;
loader.close();

const client = new tested.SiloGRPCClient({ servers, useTls: false });
let done = 0;
let finish;
const drained = new Promise((r) => (finish = r));
const worker = new tested.SiloWorker({
  client,
  workerId: `bench-${process.pid}`,
  taskGroup: group,
  maxConcurrentTasks: concurrency,
  tasksPerPoll,
  pollIntervalMs,
  onError: () => {},
  handler: async () => {
    if (++done === jobs) finish();
    return { type: "success", result: null };
  },
});
const t0 = process.hrtime.bigint();
worker.start();
await drained;
const drainS = Number(process.hrtime.bigint() - t0) / 1e9;
await worker.stop(10_000);
client.close?.();
console.log(
  JSON.stringify({
    label: args.label ?? args.client ?? "dist",
    jobs,
    concurrency,
    tasksPerPoll,
    pollIntervalMs,
    enqueueMs,
    drainS: Number(drainS.toFixed(2)),
    jobsPerS: Math.round(jobs / drainS),
  }),
);
process.exit(0);
