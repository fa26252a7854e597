// The README quickstart, runnable: `npx tsx examples/quickstart.ts` with a
// server on localhost:7450 (`scripts/serve` from the repository root).
import { JobStatus, SiloGRPCClient, SiloWorker } from "../src";

export async function main(servers: string[] = ["localhost:7450"]): Promise<unknown> {
  const client = new SiloGRPCClient({ servers });

  const worker = new SiloWorker({
    client,
    workerId: "worker-1",
    taskGroup: "emails",
    handler: async (ctx) => {
      const { to } = ctx.task.payload as { to: string };
      return { type: "success", result: { sent: true, to } };
    },
  });
  worker.start();

  const handle = await client.enqueue({ payload: { to: "user@example.com" }, taskGroup: "emails" });
  const result = await handle.awaitResult();
  console.log(result.status === JobStatus.Succeeded ? result.result : result);

  await worker.stop();
  client.close();
  return result.status === JobStatus.Succeeded ? result.result : undefined;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
