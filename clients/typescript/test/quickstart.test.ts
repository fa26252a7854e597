// The README quickstart runs as written against a real server.
import { afterAll, expect, it } from "vitest";

import { main } from "../examples/quickstart";
import { startServer } from "./harness";

let server: Awaited<ReturnType<typeof startServer>> | undefined;
afterAll(() => server?.stop());

it("runs the quickstart", async () => {
  server = await startServer();
  expect(await main([server.addr])).toEqual({ sent: true, to: "user@example.com" });
});
