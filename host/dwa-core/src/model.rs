//! The task JSON as users write it (camelCase on the wire), and the status
//! documents the API answers with.
//!
//! These types are the contract of docs/tasks.md and docs/api.md; unknown fields are refused so
//! that a typo such as `dependOn` is an error rather than a silently ignored key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub use crate::event_data::EventData;

/// A task submitted to `POST /api/tasks`: a single task, or a pipeline when `steps` is set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// A catalog task name, or a free name when `steps` makes this a pipeline.
    #[serde(rename = "type")]
    #[schema(min_length = 1)]
    pub task_type: String,
    /// Where the task runs: `wasm`, `modal`, `ray`, `local` or `builtin`; default from the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The queue its steps go to; gpu tasks default to `gpu`, others to `default`.
    /// Only `default`, `gpu` and the queues of `DWA_QUEUES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub queue: Option<String>,
    /// (dwa) Like the `Idempotency-Key` header: a repeated submission under
    /// the same key, within its time to live, answers the first task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
    pub idempotency_key: Option<String>,
    /// (dwa) When the task may start, RFC 3339 (`2026-12-24T18:00:00Z`);
    /// earlier than now starts it now. Not with `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// (dwa) How long after submission the task may start, in ms (at most a year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 31_536_000_000u64)]
    pub delay: Option<u64>,
    /// (dwa) Its steps' place in their queue: higher first, FIFO among
    /// equals, a waiting job gaining one level per 10 s (docs/tasks.md,
    /// "Priorities"). -1000 to 1000; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// (dwa) At most `limit` of its steps' jobs with the same key run at
    /// once, across hosts and tasks (docs/tasks.md, "Concurrency keys and
    /// rate limits"); a step's own setting replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Box<Concurrency>>,
    /// (dwa) At most `limit` of its steps' jobs with the same key start
    /// per `per`, across hosts and tasks; a step's own setting replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimit>>,
    /// The task's input; a pipeline's first steps receive it. Default `{}`.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The steps of a pipeline; absent for a single task. At most
    /// `DWA_MAX_STEPS` (the served document says the host's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
    pub steps: Option<Vec<StepSpec>>,
    /// Resource hints and the per-step timeout, inherited by every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Retry policy, inherited by every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Effects fired when the task is queued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub on_pending: Vec<Effect>,
    /// Effects fired when the task's progress changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub on_progress: Vec<Effect>,
    /// Effects fired when the task completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub on_success: Vec<Effect>,
    /// Effects fired when the task fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub on_error: Vec<Effect>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepSpec {
    /// A name other steps and templates refer to; the step's index otherwise.
    /// Letters, digits, `-` and `_`, not a number alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(?![0-9]+$)[A-Za-z0-9_-]{1,128}$")]
    pub id: Option<String>,
    /// The catalog task this step runs (`builtin.subtask`, which a step
    /// with `subtask` may leave out).
    #[serde(default)]
    #[schema(min_length = 1)]
    pub task: String,
    /// (dwa) A whole task JSON run as a task of its own, the step completing
    /// with its result (docs/tasks.md, "Sub-tasks").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub subtask: Option<Box<TaskSpec>>,
    /// Overrides the backend the catalog names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Overrides the queue (only `default`, `gpu` and those of `DWA_QUEUES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub queue: Option<String>,
    /// (dwa) Overrides the task's `priority` for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// (dwa) Replaces the task's `concurrency` for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Box<Concurrency>>,
    /// (dwa) Replaces the task's `rateLimit` for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimit>>,
    /// The step's input, with templates (any JSON); default: its dependency's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub input: Option<Value>,
    /// Ids of the steps this one waits for; its presence on any step makes the pipeline a DAG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// A template or array: the step runs once per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub for_each: Option<Value>,
    /// At most this many items of `forEach` run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub for_each_concurrency: Option<u32>,
    /// Overrides the task-level resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Overrides the task-level retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// Split the step's input into chunks run in parallel and merge their
    /// results (for tasks whose catalog entry has a `chunk` config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkRequest>,
    /// (dwa) Runs the step only when this condition holds, else it is
    /// `skipped` (docs/tasks.md, "Branches"): `"{{ steps.x.label == 'a' }}"`.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// (dwa) What the step failing for good does (docs/tasks.md, "Branches").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

/// A concurrency key: at most `limit` jobs with the same key run at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Concurrency {
    /// A template (`"{{payload.customer}}"`) or a fixed name; resolved per job.
    pub key: String,
    /// 1-10,000.
    pub limit: u32,
}

/// A rate limit: at most `limit` jobs with the same key start per `per`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// A template or a fixed name (`"openai"`); resolved per job.
    pub key: String,
    /// 1-1,000,000.
    pub limit: u32,
    /// The window: ms, or `"500ms"`, `"30s"`, `"1m"`, `"1h"`, `"1d"` (at most a day).
    #[schema(value_type = Object)]
    pub per: Value,
}

/// What a step that failed for good does to its task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// The task fails; its other steps are skipped (the seed's behaviour).
    #[default]
    Fail,
    /// The step is `failed`, with `{"$error": message}` as its result, and
    /// its dependants run as if it had completed.
    Continue,
    /// The step is `failed` and every step that depends on it, directly or
    /// not, is `skipped`; the rest of the task runs on.
    SkipDependants,
}

/// A step's request to be chunked; every field defaults to the task's own config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkRequest {
    /// A chunk's length (seconds, or characters for text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<f64>,
    /// How much consecutive chunks share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<f64>,
    /// At most this many chunks run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// Resource hints; `timeout` (seconds) bounds each try of a step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// GPU kind (e.g. `T4`); its presence sends the step to the `gpu` queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// VRAM in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram: Option<u64>,
    /// RAM in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    /// Seconds one try may take before it is aborted (at most a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 604800.0)]
    pub timeout: Option<f64>,
}

/// How a failed step is retried; `attempts` counts every try, the first included.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    /// Total tries, the first included (BullMQ's meaning).
    #[serde(default = "default_attempts")]
    #[schema(minimum = 1, maximum = 100)]
    pub attempts: u32,
    /// `fixed` or `exponential`.
    #[serde(default)]
    pub backoff: Backoff,
    /// First wait in ms.
    #[serde(default = "default_delay")]
    pub delay: u64,
    /// Upper bound of an exponential wait in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_attempts() -> u32 {
    1
}

fn default_delay() -> u64 {
    1000
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 1,
            backoff: Backoff::Fixed,
            delay: default_delay(),
            max_delay: None,
        }
    }
}

/// The shape of the wait between tries.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Wait `delay` each time.
    #[default]
    Fixed,
    /// Double the wait each retry up to `maxDelay`, with jitter.
    Exponential,
}

/// A lifecycle effect: `$event` names the effect, every other field is its config.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Effect {
    /// The effect's name (`toast`, `webhook`, ...).
    #[serde(rename = "$event")]
    pub event: String,
    /// The effect's configuration, templates allowed.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
}

/// Status of a whole task.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Queued, no step started yet.
    Pending,
    /// At least one step has started.
    Active,
    /// Every step completed.
    Completed,
    /// A step failed for good.
    Failed,
    /// Cancelled by `DELETE /api/tasks/:id`.
    Cancelled,
}

impl TaskStatus {
    /// The wire name, also used as the stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Active => "active",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TaskStatus::Pending,
            "active" => TaskStatus::Active,
            "completed" => TaskStatus::Completed,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to the task.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// Status of one step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for its dependencies or a worker.
    Pending,
    /// A worker runs it (or its items).
    Running,
    /// Done, with a result.
    Completed,
    /// Failed for good, or aborted.
    Failed,
    /// Never ran: an earlier step failed or the task was cancelled.
    Skipped,
    /// (dwa) A `builtin.wait` step waiting for its signal or its timeout.
    Waiting,
}

impl StepStatus {
    /// The wire name, also used as the stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Waiting => "waiting",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => StepStatus::Pending,
            "running" => StepStatus::Running,
            "completed" => StepStatus::Completed,
            "waiting" => StepStatus::Waiting,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            _ => return None,
        })
    }
}

/// Answer of `POST /api/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedTask {
    /// The new task's id.
    pub id: String,
    /// Always `pending`.
    pub status: TaskStatus,
    /// The queue of the task (of its first steps, for a pipeline).
    pub queue: String,
}

/// One step's line in a pipeline's `stepStatus`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatusView {
    /// The step's id, or its index when it has none.
    pub id: String,
    /// The task it runs.
    pub task: String,
    /// Where it stands.
    pub status: StepStatus,
    /// When its first try started (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub completed_at: Option<String>,
    /// Milliseconds from start to end.
    pub duration: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Tries made so far.
    pub attempts: u32,
}

/// Answer of `GET /api/tasks/:id`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// The task's id.
    pub id: String,
    /// The task's `type`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// The queue it was submitted to.
    pub queue: String,
    /// 0..=100; a whole number is written as an integer (the seed's `100`).
    #[serde(serialize_with = "whole_as_integer")]
    pub progress: f64,
    /// The result (a pipeline's `finalResult`).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was submitted (RFC 3339).
    pub created_at: String,
    /// When its first step started (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub completed_at: Option<String>,
    /// Step results in order (pipelines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub steps: Option<Vec<Value>>,
    /// Step results by id (pipelines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub step_results: Option<Map<String, Value>>,
    /// Each step's status (pipelines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_status: Option<Vec<StepStatusView>>,
    /// The last step's result (pipelines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub final_result: Option<Value>,
    /// Milliseconds from the first start to the end (pipelines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_duration: Option<i64>,
    /// Groups of step ids whose runs overlapped in time (pipelines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_groups: Option<Vec<Vec<String>>>,
    /// (dwa) The step that runs this task as its sub-task, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<TaskParent>,
}

/// The step a sub-task belongs to (docs/tasks.md, "Sub-tasks").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskParent {
    /// The parent task.
    pub task_id: String,
    /// The step's id.
    pub step: String,
    /// The forEach item that spawned it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

/// One task in `GET /api/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    /// The task's id.
    pub id: String,
    /// The task's `type`.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// Its queue.
    pub queue: String,
    /// 0..=100; a whole number is written as an integer (the seed's `100`).
    #[serde(serialize_with = "whole_as_integer")]
    pub progress: f64,
    /// When it was submitted (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    pub completed_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Answer of `GET /api/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    /// Newest first.
    pub tasks: Vec<TaskSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An event on a task's stream (SSE), also stored for replay.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskEvent {
    /// Position in the task's stream, from 1.
    pub seq: u64,
    /// `step:start`, `step:complete`, `step:error`, `step:retry`, `step:progress`,
    /// `pipeline:complete`, or an effect's own name.
    #[serde(rename = "type")]
    pub kind: String,
    /// The task it belongs to.
    pub task_id: String,
    /// The step it concerns, if any.
    pub step_id: Option<String>,
    /// That step's task name.
    pub step_task: Option<String>,
    /// Event-specific data.
    #[schema(value_type = Object)]
    pub data: EventData,
    /// When it happened (ms since the Unix epoch).
    pub timestamp: i64,
}

/// Milliseconds since the Unix epoch, the store's clock unit.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Formats a store timestamp as RFC 3339 for the API.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Reads an RFC 3339 time (as [`rfc3339`] writes it) back into milliseconds
/// since the Unix epoch; None when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Writes a whole number without its `.0` (progress is `100`, as the seed
/// shows it), any other as it is.
fn whole_as_integer<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}
