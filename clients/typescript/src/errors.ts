import { RpcError } from "@protobuf-ts/runtime-rpc";

export { RpcError };

/** Base of the typed errors; each keeps the gRPC code name like any RpcError. */
export class SiloError extends RpcError {
  constructor(message: string, code: string, meta?: RpcError["meta"]) {
    super(message, code, meta);
    this.name = new.target.name;
  }
}

/** The job id does not exist (NOT_FOUND on a job call). */
export class JobNotFoundError extends SiloError {
  constructor(public readonly jobId: string, message = "job not found", meta?: RpcError["meta"]) {
    super(message, "NOT_FOUND", meta);
  }
}

/** A job with this id already exists (ALREADY_EXISTS on enqueue). */
export class JobAlreadyExistsError extends SiloError {
  constructor(public readonly jobId: string, message = `job already exists with id ${jobId}`, meta?: RpcError["meta"]) {
    super(message, "ALREADY_EXISTS", meta);
  }
}

/** The job has not finished yet (awaitResult timeout, GetJobResult before completion). */
export class JobNotTerminalError extends SiloError {
  constructor(public readonly jobId: string, public readonly status: string | undefined, message?: string) {
    super(message ?? `job ${jobId} is not complete (status ${status ?? "unknown"})`, "FAILED_PRECONDITION");
  }
}

/** The task/lease is unknown to the server (finished, expired or never leased). */
export class TaskNotFoundError extends SiloError {
  constructor(public readonly taskId: string, message = "lease not found", meta?: RpcError["meta"]) {
    super(message, "NOT_FOUND", meta);
  }
}

export function isRpcError(e: unknown): e is RpcError {
  return e instanceof RpcError;
}
