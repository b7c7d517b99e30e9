//! # dwa-client — the seed's library API for Rust users
//!
//! What the seed's `processTask(task, onProgress, onEvent)` gives
//! TypeScript users (and `clients/ts` gives them here), over dwa's HTTP API
//! (docs/client.md): [`Client::process_task`] submits a task, follows its
//! events — reopening the stream with `Last-Event-ID` when it drops — and
//! answers the [`PipelineResult`]; the other methods are the endpoints one
//! by one. It depends on `dwa-core` for the wire types only.

mod sse;

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use dwa_core::model::{CreatedTask, StepStatus, StepStatusView, TaskList, TaskStatus, TaskView};

pub use dwa_core::model::TaskEvent;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host answered an error (`{"error": {"code", "message"}}`).
    #[error("{message} (HTTP {status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's code (`invalid_task`, ...).
        code: Option<String>,
        /// Its message.
        message: String,
    },
    /// The host could not be reached, or its answer not read.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// An answer that is not what the API documents.
    #[error("unexpected answer: {0}")]
    Decode(#[from] serde_json::Error),
    /// The event stream dropped this many times in a row without an event.
    #[error("the event stream of task {task} dropped {times} times in a row")]
    StreamLost {
        /// The task followed.
        task: String,
        /// How many times.
        times: u32,
    },
    /// The task ended without completing; its last status.
    #[error("task {} {}: {}", .0.id, .0.status.as_str(), .0.error.as_deref().unwrap_or("no error given"))]
    Failed(Box<TaskView>),
}

/// The seed's pipeline result; a single task is a pipeline of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineResult {
    /// Step results in step order.
    pub steps: Vec<Value>,
    /// Step results by step id.
    pub step_results: Map<String, Value>,
    /// Each step's status.
    pub step_status: Vec<StepStatusView>,
    /// The last step's result.
    pub final_result: Value,
    /// Milliseconds from the first start to the end.
    pub total_duration: i64,
    /// Which steps ran together.
    pub parallel_groups: Vec<Vec<String>>,
}

impl PipelineResult {
    /// The pipeline result of a finished task's status.
    pub fn of(task: &TaskView) -> PipelineResult {
        if let Some(status) = &task.step_status {
            return PipelineResult {
                steps: task.steps.clone().unwrap_or_default(),
                step_results: task.step_results.clone().unwrap_or_default(),
                step_status: status.clone(),
                final_result: task
                    .final_result
                    .clone()
                    .or_else(|| task.result.clone())
                    .unwrap_or(Value::Null),
                total_duration: task.total_duration.unwrap_or(0),
                parallel_groups: task.parallel_groups.clone().unwrap_or_default(),
            };
        }
        let result = task.result.clone().unwrap_or(Value::Null);
        let duration = match (&task.started_at, &task.completed_at) {
            (Some(a), Some(b)) => millis(b).zip(millis(a)).map(|(b, a)| b - a),
            _ => None,
        };
        PipelineResult {
            steps: vec![result.clone()],
            step_results: Map::from_iter([(task.task_type.clone(), result.clone())]),
            step_status: vec![StepStatusView {
                id: task.task_type.clone(),
                task: task.task_type.clone(),
                status: if task.status == TaskStatus::Completed {
                    StepStatus::Completed
                } else {
                    StepStatus::Failed
                },
                started_at: task.started_at.clone(),
                completed_at: task.completed_at.clone(),
                duration,
                error: task.error.clone(),
                attempts: 1,
            }],
            final_result: result,
            total_duration: duration.unwrap_or(0),
            parallel_groups: vec![vec![task.task_type.clone()]],
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 time the host wrote.
fn millis(rfc3339: &str) -> Option<i64> {
    dwa_core::model::parse_rfc3339(rfc3339)
}

/// A client of one dwa host.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Reopenings of a dropped event stream in a row before giving up.
    pub reconnects: u32,
}

impl Client {
    /// A client of the host at `base` (`http://localhost:3000`).
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            http: reqwest::Client::new(),
            reconnects: 10,
        }
    }

    /// Sends `Authorization: Bearer <token>` (the host's `DWA_API_TOKEN`).
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = r.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Submits a task (`POST /api/tasks`): any JSON the seed writes.
    pub async fn create_task(&self, task: &Value) -> Result<CreatedTask, ClientError> {
        self.send(self.request(reqwest::Method::POST, "/api/tasks").json(task))
            .await
    }

    /// A task's status (`GET /api/tasks/:id`).
    pub async fn get_task(&self, id: &str) -> Result<TaskView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/tasks/{}", path(id))))
            .await
    }

    /// A page of tasks, newest first (`GET /api/tasks?queue=&status=&limit=`).
    pub async fn list_tasks(
        &self,
        queue: Option<&str>,
        status: Option<TaskStatus>,
        limit: Option<u32>,
    ) -> Result<TaskList, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(q) = queue {
            query.push(("queue", q.to_owned()));
        }
        if let Some(s) = status {
            query.push(("status", s.as_str().to_owned()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.send(
            self.request(reqwest::Method::GET, "/api/tasks")
                .query(&query),
        )
        .await
    }

    /// Cancels a task (`DELETE /api/tasks/:id`).
    pub async fn cancel_task(&self, id: &str) -> Result<TaskView, ClientError> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/api/tasks/{}", path(id))))
            .await
    }

    /// The tasks this host runs (`GET /api/catalog`): `{"tasks": [...]}`.
    pub async fn catalog(&self) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, "/api/catalog"))
            .await
    }

    /// The host's plugins (`GET /api/plugins`): `{"plugins": [...], "errors": [...]}`.
    pub async fn plugins(&self) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, "/api/plugins"))
            .await
    }

    /// Draws a task's steps (`POST /api/visualize`): `{"mermaid", "url", "unknownTasks"}`.
    pub async fn visualize(&self, task: &Value) -> Result<Value, ClientError> {
        self.send(
            self.request(reqwest::Method::POST, "/api/visualize")
                .json(task),
        )
        .await
    }

    /// Calls `on_event` with every event of task `id`, in order and each
    /// once, until the `pipeline:complete` of its last run; a stream that
    /// drops is reopened with `Last-Event-ID`.
    pub async fn follow(
        &self,
        id: &str,
        mut on_event: impl FnMut(&TaskEvent),
    ) -> Result<(), ClientError> {
        let mut last: Option<u64> = None;
        let mut failures = 0u32;
        loop {
            let mut r = self
                .request(
                    reqwest::Method::GET,
                    &format!("/api/tasks/{}/events", path(id)),
                )
                .header("accept", "text/event-stream");
            if let Some(seq) = last {
                r = r.header("last-event-id", seq.to_string());
            }
            let mut progressed = false;
            match r.send().await {
                Ok(response) if response.status().is_success() => {
                    let mut reader = sse::Reader::default();
                    let mut body = response.bytes_stream();
                    while let Some(Ok(chunk)) = body.next().await {
                        for block in reader.push(&chunk) {
                            let Some(event) = block.event(last)? else {
                                continue;
                            };
                            last = Some(event.seq);
                            progressed = true;
                            on_event(&event);
                            // The end of a run: the last one when the task
                            // ended at that very moment; a task re-run
                            // since (`task:retry`) goes on.
                            if event.kind == "pipeline:complete" {
                                let task = self.get_task(id).await?;
                                let ended = task.completed_at.as_deref().and_then(millis);
                                if task.status.is_terminal() && ended == Some(event.timestamp) {
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.unwrap_or_default();
                    if (400..500).contains(&status) && status != 429 {
                        return Err(api_error(status, &bytes));
                    }
                }
                Err(_) => {}
            }
            failures = if progressed { 1 } else { failures + 1 };
            if failures > self.reconnects {
                return Err(ClientError::StreamLost {
                    task: id.to_owned(),
                    times: failures,
                });
            }
            let wait = 100u64.saturating_mul(1 << (failures - 1).min(6)).min(5_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// The seed's `processTask`: submits `task`, calls `on_progress` with the
    /// task's progress (0-100) as it moves and `on_event` with each event,
    /// and answers the pipeline result once the task completes
    /// ([`ClientError::Failed`] when it fails or is cancelled).
    pub async fn process_task(
        &self,
        task: &Value,
        mut on_progress: impl FnMut(f64),
        mut on_event: impl FnMut(&TaskEvent),
    ) -> Result<PipelineResult, ClientError> {
        let created = self.create_task(task).await?;
        let mut last = -1.0;
        let mut progress = |p: f64| {
            if p != last {
                last = p;
                on_progress(p);
            }
        };
        self.follow(&created.id, |e| {
            if let Some(p) = e.data.get("progress").and_then(Value::as_f64) {
                progress(p);
            }
            on_event(e);
        })
        .await?;
        let view = self.get_task(&created.id).await?;
        if view.status != TaskStatus::Completed {
            return Err(ClientError::Failed(Box::new(view)));
        }
        progress(100.0);
        Ok(PipelineResult::of(&view))
    }
}

/// An id in a URL path.
fn path(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn api_error(status: u16, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    ClientError::Api {
        status,
        code: error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        message: error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("the host answered {status}"), str::to_owned),
    }
}
