import { RpcError, type RpcMetadata } from "@protobuf-ts/runtime-rpc";

export { RpcError };

/**
 * A gRPC error from a Silo server (Silo's client calls it `SiloGrpcError`).
 * It is an `RpcError` from `@protobuf-ts/runtime-rpc`, so `code` is the gRPC
 * status code name (e.g. `FAILED_PRECONDITION`) and `message` the server's
 * message; every error class below extends it.
 */
export class SiloGrpcError extends RpcError {
  constructor(message: string, code = "UNKNOWN", meta?: RpcMetadata) {
    super(message, code, meta);
    this.name = new.target.name;
  }

  /** The gRPC status code name; the same as `code` (Silo's client names it `grpcCode`). */
  get grpcCode(): string {
    return this.code;
  }

  /** The server's status message; the same as `message`. */
  get grpcMessage(): string {
    return this.message;
  }
}

/** This package's earlier name for {@link SiloGrpcError}; the same class. */
export const SiloError = SiloGrpcError;
/** This package's earlier name for {@link SiloGrpcError}. */
export type SiloError = SiloGrpcError;

/** NOT_FOUND: the job, lease or shard named in the call does not exist. */
export class SiloNotFoundError extends SiloGrpcError {
  constructor(message = "not found", meta?: RpcMetadata) {
    super(message, "NOT_FOUND", meta);
  }
}

/** ALREADY_EXISTS: the call would create something that already exists. */
export class SiloAlreadyExistsError extends SiloGrpcError {
  constructor(message = "already exists", meta?: RpcMetadata) {
    super(message, "ALREADY_EXISTS", meta);
  }
}

/** INVALID_ARGUMENT: the request is malformed (bad tenant id, payload too large, ...). */
export class SiloInvalidArgumentError extends SiloGrpcError {
  constructor(message = "invalid argument", meta?: RpcMetadata) {
    super(message, "INVALID_ARGUMENT", meta);
  }
}

/**
 * FAILED_PRECONDITION: the job is not in a state that allows the call
 * (already cancelled, terminal, still in progress, not future-scheduled, ...);
 * the message says which.
 */
export class SiloFailedPreconditionError extends SiloGrpcError {
  constructor(message = "failed precondition", meta?: RpcMetadata) {
    super(message, "FAILED_PRECONDITION", meta);
  }
}

/** UNAUTHENTICATED: no token, or a token the server does not accept. */
export class SiloUnauthenticatedError extends SiloGrpcError {
  constructor(message = "unauthenticated", meta?: RpcMetadata) {
    super(message, "UNAUTHENTICATED", meta);
  }
}

/** PERMISSION_DENIED: the token does not allow this call. */
export class SiloPermissionDeniedError extends SiloGrpcError {
  constructor(message = "permission denied", meta?: RpcMetadata) {
    super(message, "PERMISSION_DENIED", meta);
  }
}

/** RESOURCE_EXHAUSTED: the server is overloaded or a quota is used up. */
export class SiloResourceExhaustedError extends SiloGrpcError {
  constructor(message = "resource exhausted", meta?: RpcMetadata) {
    super(message, "RESOURCE_EXHAUSTED", meta);
  }
}

/** UNAVAILABLE: no server could be reached, or no leader is known; left after the client's retries. */
export class SiloUnavailableError extends SiloGrpcError {
  constructor(message = "unavailable", meta?: RpcMetadata) {
    super(message, "UNAVAILABLE", meta);
  }
}

/** DEADLINE_EXCEEDED: the call did not finish within its deadline. */
export class SiloDeadlineExceededError extends SiloGrpcError {
  constructor(message = "deadline exceeded", meta?: RpcMetadata) {
    super(message, "DEADLINE_EXCEEDED", meta);
  }
}

/** The job id does not exist (NOT_FOUND on a job call). */
export class JobNotFoundError extends SiloNotFoundError {
  constructor(
    public readonly jobId: string,
    message = "job not found",
    meta?: RpcMetadata,
    /** The tenant the lookup used, if any. */
    public readonly tenant?: string,
  ) {
    super(message, meta);
  }
}

/** A job with this id already exists (ALREADY_EXISTS on enqueue). */
export class JobAlreadyExistsError extends SiloAlreadyExistsError {
  constructor(
    public readonly jobId: string,
    message = `job already exists with id ${jobId}`,
    meta?: RpcMetadata,
    /** The tenant of the enqueue, if any. */
    public readonly tenant?: string,
  ) {
    super(message, meta);
  }
}

/**
 * The job has not finished yet: `getJobResult` before completion, or
 * `awaitResult({ timeoutMs })` running out of time (message
 * `Timeout waiting for job <id> to complete after <ms>ms`).
 */
export class JobNotTerminalError extends SiloFailedPreconditionError {
  constructor(
    public readonly jobId: string,
    /** The job's status when last seen, if known (a `JobStatus` value). */
    public readonly status: string | undefined,
    message?: string,
  ) {
    super(message ?? `job ${jobId} is not complete (status ${status ?? "unknown"})`);
  }

  /** The job's status when last seen (Silo's client's name for `status`). */
  get currentStatus(): string | undefined {
    return this.status;
  }
}

/** The task/lease is unknown to the server (finished, expired or never leased). */
export class TaskNotFoundError extends SiloNotFoundError {
  constructor(public readonly taskId: string, message = "lease not found", meta?: RpcMetadata) {
    super(message, meta);
  }
}

const BY_CODE: Record<string, new (message: string, meta?: RpcMetadata) => SiloGrpcError> = {
  NOT_FOUND: SiloNotFoundError,
  ALREADY_EXISTS: SiloAlreadyExistsError,
  INVALID_ARGUMENT: SiloInvalidArgumentError,
  FAILED_PRECONDITION: SiloFailedPreconditionError,
  UNAUTHENTICATED: SiloUnauthenticatedError,
  PERMISSION_DENIED: SiloPermissionDeniedError,
  RESOURCE_EXHAUSTED: SiloResourceExhaustedError,
  UNAVAILABLE: SiloUnavailableError,
  DEADLINE_EXCEEDED: SiloDeadlineExceededError,
};

/**
 * Turns a plain `RpcError` into the {@link SiloGrpcError} subclass for its
 * code, keeping code, message and metadata (the original is `cause`).
 * Anything else is returned unchanged.
 */
export function toSiloError(e: unknown): unknown {
  if (!(e instanceof RpcError) || e instanceof SiloGrpcError) return e;
  const Class = BY_CODE[e.code];
  const message = PLAINTEXT_SERVER.test(e.message) ? `${e.message} ${PLAINTEXT_HINT}` : e.message;
  const out = Class ? new Class(message, e.meta) : new SiloGrpcError(message, e.code, e.meta);
  out.methodName = e.methodName;
  out.serviceName = e.serviceName;
  out.cause = e;
  return out;
}

/** OpenSSL's words when a TLS client reads a plaintext server's reply. */
const PLAINTEXT_SERVER = /wrong version number|WRONG_VERSION_NUMBER|packet length too long/;
/** Appended to such errors: what to do about it. */
export const PLAINTEXT_HINT =
  "(the server answered in plaintext, not TLS: pass useTls: false for a plaintext server; loopback servers default to plaintext)";

/** Node socket errors that mean "could not reach the server". */
const TRANSPORT_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/**
 * True when `e` means the server could not be reached or did not answer in
 * time, so the same call may succeed later or on another node: gRPC
 * `UNAVAILABLE` or `DEADLINE_EXCEEDED`, an HTTP/2 stream reset surfacing as
 * `INTERNAL` ("RST_STREAM"), or a Node socket error (`ECONNREFUSED`, ...).
 */
export function isConnectivityError(e: unknown): boolean {
  if (e instanceof RpcError) {
    if (e.code === "UNAVAILABLE" || e.code === "DEADLINE_EXCEEDED") return true;
    return e.code === "INTERNAL" && e.message.includes("RST_STREAM");
  }
  const code = (e as { code?: unknown } | null)?.code;
  // @grpc/grpc-js ServiceError: numeric status (14 UNAVAILABLE, 4 DEADLINE_EXCEEDED).
  if (code === 14 || code === 4) return true;
  return typeof code === "string" && TRANSPORT_ERRNOS.has(code);
}

/** True when `e` is an `RpcError` (every error this client raises for a failed call is one). */
export function isRpcError(e: unknown): e is RpcError {
  return e instanceof RpcError;
}
