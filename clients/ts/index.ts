// The seed's library API for TypeScript users, over dwa's HTTP API
// (docs/client.md): processTask submits a task, follows its events and
// resolves to the PipelineResult; createTask, getTask, listTasks, cancelTask
// and visualize are the endpoints one by one. No framework: fetch and a
// small server-sent-events reader (Node 18+ or a browser).

import type { TaskName, TaskPayloads } from "./tasks.js";

export type { TaskName, TaskPayloads, TaskResults } from "./tasks.js";
export { TASK_METADATA } from "./tasks.js";

/** A lifecycle effect (`toast`, `webhook`, `notify`, `invalidate`, `enqueue`, `emit`, `redirect`, or a plugin's). */
export interface Effect {
  $event: string;
  [field: string]: unknown;
}

/** One step of a pipeline. */
export interface Step<N extends string = TaskName | (string & {})> {
  id?: string;
  task: N;
  input?: N extends TaskName ? TaskPayloads[N] | Record<string, unknown> : Record<string, unknown>;
  dependsOn?: string[];
  backend?: string;
  queue?: string;
  /** dwa: overrides the task's `priority` for this step. */
  priority?: number;
  forEach?: string | unknown[];
  forEachConcurrency?: number;
  resources?: Resources;
  retry?: Retry;
  chunk?: { size?: number; overlap?: number; concurrency?: number };
  /** dwa: a whole task run as a task of its own (`task`: "builtin.subtask"); the input goes into its payload. */
  subtask?: Task;
  /** dwa: replaces the task's `concurrency` for this step. */
  concurrency?: Concurrency;
  /** dwa: replaces the task's `rateLimit` for this step. */
  rateLimit?: RateLimit;
  /** dwa: run only when this `{{ ... }}` condition holds, else `skipped`. */
  if?: string;
  /** dwa: what failing for good does: fail the task, continue, or skip the dependants. */
  onFailure?: "fail" | "continue" | "skipDependants";
}

/** dwa: at most `limit` jobs with the same key (a template) run at once, across hosts. */
export interface Concurrency {
  key: string;
  limit: number;
}

/** dwa: at most `limit` jobs with the same key start per `per` (ms, or "30s", "1m", ...). */
export interface RateLimit {
  key: string;
  limit: number;
  per: number | string;
}

/** Resource hints; `timeout` in seconds. */
export interface Resources {
  gpu?: string;
  vram?: number;
  ram?: number;
  timeout?: number;
}

/** `attempts` counts every try, the first included. */
export interface Retry {
  attempts?: number;
  backoff?: "exponential" | "fixed";
  delay?: number;
  maxDelay?: number;
}

/** A task as the seed writes it: a single task, or a pipeline with `steps`. */
export interface Task<N extends string = TaskName | (string & {})> {
  type: N;
  backend?: string;
  queue?: string;
  payload?: N extends TaskName ? TaskPayloads[N] : Record<string, unknown>;
  steps?: Step[];
  resources?: Resources;
  retry?: Retry;
  idempotencyKey?: string;
  runAt?: string;
  delay?: number;
  /** dwa: -1000 to 1000, higher first; a waiting job gains a level every 10 s. */
  priority?: number;
  concurrency?: Concurrency;
  rateLimit?: RateLimit;
  onPending?: Effect[];
  onProgress?: Effect[];
  onSuccess?: Effect[];
  onError?: Effect[];
}

/** What `POST /api/tasks` answers. */
export interface CreatedTask {
  id: string;
  status: TaskStatusName;
  queue: string;
}

export type TaskStatusName = "pending" | "active" | "completed" | "failed" | "cancelled";

/** Execution status of one step. */
export interface StepStatus {
  id: string;
  task: string;
  status: "pending" | "running" | "completed" | "failed" | "skipped" | "waiting";
  startedAt?: string;
  completedAt?: string;
  duration?: number;
  error?: string;
  attempts?: number;
}

/** The seed's pipeline result. */
export interface PipelineResult {
  steps: unknown[];
  stepResults: Record<string, unknown>;
  stepStatus: StepStatus[];
  finalResult: unknown;
  totalDuration: number;
  parallelGroups: string[][];
}

/** `GET /api/tasks/:id`: the seed's status, and the pipeline result's fields for pipelines. */
export interface TaskView extends Partial<PipelineResult> {
  id: string;
  type: string;
  status: TaskStatusName;
  queue: string;
  progress: number;
  result?: unknown;
  error?: string;
  createdAt: string;
  startedAt?: string;
  completedAt?: string;
}

/** One event of a task's stream (`step:start`, `step:complete`, `step:error`, `pipeline:complete`, ...). */
export interface TaskEvent {
  seq: number;
  type: string;
  taskId: string;
  stepId?: string | null;
  stepTask?: string | null;
  data?: { duration?: number; error?: string; totalDuration?: number; progress?: number; [k: string]: unknown };
  timestamp: number;
}

/** `POST /api/visualize`. */
export interface Visualization {
  mermaid: string;
  url: string;
  unknownTasks: { step: string; task: string }[];
}

/** A task as `GET /api/tasks` lists it. */
export interface TaskSummary {
  id: string;
  type: string;
  status: TaskStatusName;
  queue: string;
  progress: number;
  createdAt: string;
  completedAt?: string | null;
  error?: string | null;
}

/** A page of `GET /api/tasks`. */
export interface TaskList {
  tasks: TaskSummary[];
  nextCursor?: string | null;
}

/** Where the host is and how to reach it. */
export interface ClientOptions {
  /** Base URL; default `DWA_URL` or `http://localhost:3000`. */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer` (the host's `DWA_API_TOKEN`). */
  token?: string;
  /** How many times a dropped event stream is reopened in a row (default 10). */
  reconnects?: number;
  /** Stops processTask (and cancels nothing on the host). */
  signal?: AbortSignal;
}

/** The host answered an error (`{"error": {"code", "message"}}`). */
export class DwaError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = "DwaError";
  }
}

/** The task ended without completing; `task` is its last status. */
export class TaskFailedError extends Error {
  constructor(readonly task: TaskView) {
    super(`task ${task.id} ${task.status}: ${task.error ?? "no error given"}`);
    this.name = "TaskFailedError";
  }
}

function baseOf(options: ClientOptions): string {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return (options.baseUrl ?? env?.DWA_URL ?? "http://localhost:3000").replace(/\/+$/, "");
}

async function call<T>(options: ClientOptions, method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  const response = await fetch(baseOf(options) + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: options.signal,
  });
  const text = await response.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: reported below with the status.
  }
  if (!response.ok) {
    const error = (json as { error?: { message?: string; code?: string } } | undefined)?.error;
    throw new DwaError(error?.message ?? `${method} ${path} answered ${response.status}`, response.status, error?.code);
  }
  return json as T;
}

/** Submits a task (`POST /api/tasks`). */
export function createTask(task: Task, options: ClientOptions = {}): Promise<CreatedTask> {
  return call(options, "POST", "/api/tasks", task);
}

/** A task's status (`GET /api/tasks/:id`). */
export function getTask(id: string, options: ClientOptions = {}): Promise<TaskView> {
  return call(options, "GET", `/api/tasks/${encodeURIComponent(id)}`);
}

/** Lists tasks, newest first (`GET /api/tasks?queue=&status=&limit=&cursor=`). */
export function listTasks(
  filter: { queue?: string; status?: TaskStatusName; limit?: number; cursor?: string } = {},
  options: ClientOptions = {},
): Promise<TaskList> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(filter)) if (v !== undefined) query.set(k, String(v));
  const qs = query.toString();
  return call(options, "GET", `/api/tasks${qs ? `?${qs}` : ""}`);
}

/** Cancels a task (`DELETE /api/tasks/:id`): running steps stop, pending ones never start. */
export function cancelTask(id: string, options: ClientOptions = {}): Promise<TaskView> {
  return call(options, "DELETE", `/api/tasks/${encodeURIComponent(id)}`);
}

/** Draws a task's steps (`POST /api/visualize`); the seed's `{steps}` body needs no `type`. */
export function visualize(task: Partial<Task> & { steps: Step[] }, options: ClientOptions = {}): Promise<Visualization> {
  return call(options, "POST", "/api/visualize", task);
}

const TERMINAL = new Set<TaskStatusName>(["completed", "failed", "cancelled"]);

/** Whether a `pipeline:complete` ends the task's last run (its end time is the task's). */
function endsLastRun(event: TaskEvent, task: TaskView): boolean {
  return TERMINAL.has(task.status) && task.completedAt !== undefined && Date.parse(task.completedAt) === event.timestamp;
}

/** Parses one server-sent event block into (id, event name, data). */
function parseBlock(block: string): { id?: string; event?: string; data: string } {
  let id: string | undefined;
  let event: string | undefined;
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return { id, event, data: data.join("\n") };
}

/**
 * Follows a task's events (`GET /api/tasks/:id/events`) until the `pipeline:complete` of its last run,
 * reopening the stream with `Last-Event-ID` when it drops, so that no event is
 * missed or seen twice. Resolves when the task has ended.
 */
export async function followTask(id: string, onEvent: (event: TaskEvent) => void, options: ClientOptions = {}): Promise<void> {
  let lastId: string | undefined;
  let failures = 0;
  const most = options.reconnects ?? 10;
  for (;;) {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (lastId !== undefined) headers["last-event-id"] = lastId;
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let progressed = false;
    try {
      const response = await fetch(`${baseOf(options)}/api/tasks/${encodeURIComponent(id)}/events`, {
        headers,
        signal: options.signal,
      });
      if (!response.ok || !response.body) {
        const text = await response.text();
        let message = `GET events of ${id} answered ${response.status}`;
        try {
          message = JSON.parse(text).error?.message ?? message;
        } catch {
          // keep the status line
        }
        // A 4xx other than 429 will not pass on a retry.
        if (response.status >= 400 && response.status < 500 && response.status !== 429) {
          throw new DwaError(message, response.status);
        }
        throw new Error(message);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (!block.event || !block.data) continue;
          if (block.id !== undefined) {
            // A replay after reconnecting starts past Last-Event-ID; guard anyway.
            if (lastId !== undefined && Number(block.id) <= Number(lastId)) continue;
            lastId = block.id;
          }
          progressed = true;
          const event = JSON.parse(block.data) as TaskEvent;
          onEvent(event);
          // The end of a run: the last one when the task ended at that very
          // moment; a task re-run since (`task:retry`) goes on.
          if (event.type === "pipeline:complete" && endsLastRun(event, await getTask(id, options))) {
            await reader.cancel().catch(() => undefined);
            return;
          }
        }
      }
    } catch (e) {
      if (e instanceof DwaError || options.signal?.aborted) throw e;
    }
    failures = progressed ? 1 : failures + 1;
    if (failures > most) {
      throw new Error(`the event stream of task ${id} dropped ${failures} times in a row without an event`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 100 * 2 ** (failures - 1))));
  }
}

/** The pipeline result of a finished task; a single task is a pipeline of one step. */
export function pipelineResult(task: TaskView): PipelineResult {
  if (task.stepStatus) {
    return {
      steps: task.steps ?? [],
      stepResults: task.stepResults ?? {},
      stepStatus: task.stepStatus,
      finalResult: task.finalResult ?? task.result,
      totalDuration: task.totalDuration ?? 0,
      parallelGroups: task.parallelGroups ?? [],
    };
  }
  const started = task.startedAt ? Date.parse(task.startedAt) : NaN;
  const ended = task.completedAt ? Date.parse(task.completedAt) : NaN;
  const duration = Number.isFinite(started) && Number.isFinite(ended) ? ended - started : 0;
  return {
    steps: [task.result],
    stepResults: { [task.type]: task.result },
    stepStatus: [
      {
        id: task.type,
        task: task.type,
        status: task.status === "completed" ? "completed" : "failed",
        startedAt: task.startedAt,
        completedAt: task.completedAt,
        duration,
        error: task.error,
      },
    ],
    finalResult: task.result,
    totalDuration: duration,
    parallelGroups: [[task.type]],
  };
}

/**
 * The seed's `processTask`: submits `task`, calls `onProgress` with the task's
 * progress (0-100) as it moves and `onEvent` with every event, and resolves
 * to the PipelineResult once the task completes (rejects with
 * TaskFailedError when it fails or is cancelled).
 */
export async function processTask(
  task: Task,
  onProgress?: (progress: number) => void,
  onEvent?: (event: TaskEvent) => void,
  options: ClientOptions = {},
): Promise<PipelineResult> {
  const created = await createTask(task, options);
  let last = -1;
  const progress = (p: number) => {
    if (p !== last) {
      last = p;
      onProgress?.(p);
    }
  };
  await followTask(
    created.id,
    (event) => {
      const p = event.data?.progress;
      if (typeof p === "number") progress(p);
      onEvent?.(event);
    },
    options,
  );
  const view = await getTask(created.id, options);
  if (view.status !== "completed") throw new TaskFailedError(view);
  progress(100);
  return pipelineResult(view);
}
