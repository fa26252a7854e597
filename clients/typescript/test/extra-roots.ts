// Imported first by seed-tls.test.ts: points @grpc/grpc-js's default trust
// roots at a CA file this test creates later (grpc-js reads the variable when
// it loads, the file at the first TLS connection).
import { tmpdir } from "node:os";
import { join } from "node:path";

export const EXTRA_ROOTS_DIR = join(tmpdir(), `silo-ts-seed-tls-${process.pid}`);
process.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH = join(EXTRA_ROOTS_DIR, "ca.pem");
