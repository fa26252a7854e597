export {
  SiloGRPCClient,
  JobHandle,
  JobStatus,
  AttemptStatus,
  type SiloClientOptions,
  type EnqueueOptions,
  type Job,
  type JobAttempt,
  type JobResult,
  type Limit,
  type RetryPolicy,
} from "./client";
export {
  SiloWorker,
  type SiloWorkerOptions,
  type Task,
  type TaskContext,
  type TaskHandler,
  type TaskOutcome,
  type RefreshHandler,
  type RefreshTask,
} from "./worker";
export { RpcError, SiloError, JobNotFoundError, JobAlreadyExistsError, JobNotTerminalError, TaskNotFoundError } from "./errors";
export { tenantHash } from "./routing";
