//! What the engine counts and times for `GET /metrics` (docs/api.md,
//! "Metrics"), through the `metrics` facade: a no-op until the binary
//! installs a recorder, so tests and benchmarks in-process pay nothing.
//! Counters are this host's: each transition is counted by the host that
//! recorded it, so summing the hosts of a Redis deployment counts each once.

use std::time::Duration;

use dwa_core::model::TaskStatus;

/// Metric names, with their help text, for the exporter to describe.
pub const DESCRIPTIONS: [(&str, &str); 12] = [
    ("dwa_tasks_submitted_total", "Tasks accepted, by queue"),
    (
        "dwa_tasks_finished_total",
        "Tasks that ended, by status and queue",
    ),
    (
        "dwa_steps_total",
        "Step and forEach-item runs that ended, by outcome and queue",
    ),
    (
        "dwa_step_retries_total",
        "Tries that failed and were scheduled again, by task",
    ),
    (
        "dwa_step_timeouts_total",
        "Tries that ran past their timeout, by task",
    ),
    (
        "dwa_step_duration_seconds",
        "Time of one try at its executor, by task and backend",
    ),
    ("dwa_steps_running", "Jobs running on this host, by queue"),
    ("dwa_workers", "Workers of this host, by queue"),
    (
        "dwa_store_seconds",
        "Time of the store calls the engine waits on, by operation",
    ),
    (
        "dwa_effects_total",
        "Lifecycle effect deliveries, by effect and outcome",
    ),
    (
        "dwa_plugin_call_seconds",
        "Time of one plugin call (effect or template function), by kind and name",
    ),
    (
        "dwa_backend_errors_total",
        "Backend requests that failed, by backend and HTTP status or transport error",
    ),
];

/// A task was accepted on `queue`.
pub(crate) fn task_submitted(queue: &str) {
    metrics::counter!("dwa_tasks_submitted_total", "queue" => queue.to_owned()).increment(1);
}

/// A task ended with `status`.
pub(crate) fn task_finished(queue: &str, status: TaskStatus) {
    metrics::counter!("dwa_tasks_finished_total", "status" => status.as_str(), "queue" => queue.to_owned())
        .increment(1);
}

/// A job ended: `completed`, `failed`, `retried`, `skipped`, `tolerated` or `deferred`.
pub(crate) fn step_ended(queue: &str, outcome: &'static str) {
    metrics::counter!("dwa_steps_total", "outcome" => outcome, "queue" => queue.to_owned())
        .increment(1);
}

/// A failed try of `task` will be tried again.
pub(crate) fn retried(task: &str) {
    metrics::counter!("dwa_step_retries_total", "task" => task.to_owned()).increment(1);
}

/// A try of `task` ran past its timeout.
pub(crate) fn timed_out(task: &str) {
    metrics::counter!("dwa_step_timeouts_total", "task" => task.to_owned()).increment(1);
}

/// A try of `task` on `backend` took `took`.
pub(crate) fn step_took(task: &str, backend: &str, took: Duration) {
    metrics::histogram!("dwa_step_duration_seconds", "task" => task.to_owned(), "backend" => backend.to_owned())
        .record(took.as_secs_f64());
}

/// A job of `queue` starts (`+1`) or ends (`-1`) on this host.
pub(crate) fn running(queue: &str, delta: f64) {
    metrics::gauge!("dwa_steps_running", "queue" => queue.to_owned()).increment(delta);
}

/// The workers of `queue` on this host.
pub(crate) fn workers(queue: &str, n: usize) {
    metrics::gauge!("dwa_workers", "queue" => queue.to_owned()).set(n as f64);
}

/// A store call of `op` took `took`.
pub(crate) fn store_took(op: &'static str, took: Duration) {
    metrics::histogram!("dwa_store_seconds", "op" => op).record(took.as_secs_f64());
}

/// An effect delivery ended, delivered or not.
pub(crate) fn effect_delivered(effect: &str, ok: bool) {
    let outcome = if ok { "delivered" } else { "failed" };
    metrics::counter!("dwa_effects_total", "effect" => effect.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// An effect plugin's call took `took`.
pub(crate) fn effect_took(effect: &str, took: Duration) {
    metrics::histogram!("dwa_plugin_call_seconds", "kind" => "effect", "name" => effect.to_owned())
        .record(took.as_secs_f64());
}

/// A request to `backend` failed: its HTTP status, or `connect`, `timeout`, `request`.
pub(crate) fn backend_error(backend: &str, kind: &str) {
    metrics::counter!("dwa_backend_errors_total", "backend" => backend.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}
