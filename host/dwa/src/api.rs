//! The HTTP API (axum): thin handlers over the engine, one error type turned
//! into responses in one place, SSE for task events, and an OpenAPI document
//! generated from the handlers' types.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};

use dwa_core::catalog::TaskInfo;
use dwa_core::model::{CreatedTask, TaskEvent, TaskList, TaskStatus, TaskView};
use dwa_core::plan::FieldError;
use dwa_engine::discovery::{self, BackendStatus};
use dwa_engine::engine::{Engine, EngineError};
use dwa_store::{Feed, ListFilter};

pub mod dashboard;
pub mod metrics;
mod schedules;
#[cfg(test)]
mod tests;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Bearer token required on `/api/*`, if set.
    pub api_token: Option<Arc<str>>,
    /// Last catalog read of each backend.
    pub backends: Arc<RwLock<Vec<BackendStatus>>>,
    /// How long an event stream stays open after its task ended with no new events.
    pub sse_linger: Duration,
    /// Event-stream clients, within their limits.
    pub followers: Arc<crate::followers::Followers>,
    /// Renders `GET /metrics` (None: no recorder in this process).
    pub metrics: Option<Arc<metrics::Scraper>>,
}

/// The JSON error body of every failed call.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `invalid_json`, `invalid_task`, `not_found`, ...
    pub code: String,
    /// A readable message.
    pub message: String,
    /// One entry per problem, naming step and field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

/// Every way a call can fail, mapped to a status code in one place.
#[derive(Debug)]
pub enum ApiError {
    /// From the engine.
    Engine(EngineError),
    /// The body could not be read (too large, not UTF-8, ...).
    Body(StatusCode, String),
    /// A query parameter is wrong.
    Query(String),
    /// Missing or wrong bearer token.
    Unauthorized,
    /// A limit on open resources is full for now: 429.
    TooMany(String),
    /// No such route (404) or no such method on it (405).
    Route(StatusCode, String),
}

/// A query string, refused with the JSON error body (axum's own rejection
/// answers text/plain).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct Query<T>(T);

/// A path parameter, refused with the JSON error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::Query(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::Body(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::Engine(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, details) = match self {
            ApiError::Engine(EngineError::Malformed(f)) => (
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("invalid task at {}: {}", f.field, f.message),
                vec![f],
            ),
            ApiError::Engine(EngineError::Invalid(errs)) => {
                let first = errs
                    .first()
                    .map(|e| match &e.step {
                        Some(s) => format!("step {s:?}, {}: {}", e.field, e.message),
                        None => format!("{}: {}", e.field, e.message),
                    })
                    .unwrap_or_default();
                let message = if errs.len() > 1 {
                    format!("{first} (and {} more problems)", errs.len() - 1)
                } else {
                    first
                };
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_task",
                    message,
                    errs,
                )
            }
            ApiError::Engine(EngineError::NotFound(id)) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("task {id} not found"),
                vec![],
            ),
            ApiError::Engine(EngineError::BadSchedule(f)) => (
                StatusCode::BAD_REQUEST,
                "invalid_schedule",
                format!("invalid schedule at {}: {}", f.field, f.message),
                vec![f],
            ),
            ApiError::Engine(EngineError::NoSchedule(id)) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("schedule {id} not found"),
                vec![],
            ),
            ApiError::Engine(EngineError::Conflict(m)) => {
                (StatusCode::CONFLICT, "conflict", m, vec![])
            }
            ApiError::Engine(EngineError::Store(e)) => {
                tracing::error!(error = %e, "store error");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                    vec![],
                )
            }
            ApiError::Engine(EngineError::Internal(m)) => {
                tracing::error!(error = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", m, vec![])
            }
            ApiError::Route(status, m) => (status, "no_route", m, vec![]),
            ApiError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, "too_many", m, vec![]),
            ApiError::Body(status, m) => (status, "invalid_body", m, vec![]),
            ApiError::Query(m) => (StatusCode::BAD_REQUEST, "invalid_query", m, vec![]),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <DWA_API_TOKEN>)".into(),
                vec![],
            ),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message,
                details,
            },
        };
        (status, Json(body)).into_response()
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large (limit: DWA_MAX_BODY_BYTES)".to_string()
        } else {
            r.body_text()
        };
        ApiError::Body(status, message)
    })
}

/// Builds the router with every route, the auth layer and the body limit.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/tasks", post(create_task).get(list_tasks))
        .route("/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/tasks/{id}/events", get(task_events))
        .route("/tasks/{id}/plan", get(get_plan))
        .route("/tasks/{id}/retry", post(retry_task))
        .route("/tasks/{id}/signal", post(signal_task))
        .route("/visualize", post(visualize))
        .route("/catalog", get(catalog))
        .route("/backends", get(list_backends))
        .route("/backends/refresh", post(refresh_backends))
        .route("/plugins", get(list_plugins))
        .merge(schedules::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    // A signed link is its own credential: no API token (docs/api.md).
    let links = Router::new().route("/signals/{token}", post(signal_link));
    Router::new()
        .nest("/api", api.merge(links))
        .route("/health", get(health))
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(openapi))
        .merge(dashboard::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), settled))
        .with_state(state)
}

/// Holds every answer until the writes before it are on disk: the embedded
/// store acknowledges a commit before its fsync (docs/architecture.md,
/// "Durability"), and an answer is where a write becomes known outside.
async fn settled(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    match st.engine.store().settled().await {
        Ok(()) => resp,
        Err(e) => ApiError::Engine(e.into()).into_response(),
    }
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::Route(
        StatusCode::NOT_FOUND,
        format!("no route {} (see /openapi.json)", uri.path()),
    )
}

async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::Route(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {} (see /openapi.json)",
            uri.path()
        ),
    )
}

async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !authorized(&st, req.headers()) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// Whether the request carries the API token (always, when none is set).
fn authorized(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &st.api_token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Create a task. With an `Idempotency-Key` header (or `idempotencyKey`
/// field), a repeated submission within the key's time to live answers the
/// first task (200) instead of creating another; another body under the
/// same key is a 409.
#[utoipa::path(post, path = "/api/tasks", request_body = dwa_core::model::TaskSpec,
    params(("Idempotency-Key" = Option<String>, Header,
            description = "1-255 visible ASCII characters; kept DWA_IDEMPOTENCY_TTL_SECS")),
    responses((status = 201, body = CreatedTask), (status = 200, body = CreatedTask,
               description = "the task an earlier submission under the same key created"),
              (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn create_task(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedTask>), ApiError> {
    let body = body_bytes(body)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::Body(
                StatusCode::BAD_REQUEST,
                "the Idempotency-Key header must be visible ASCII".into(),
            )
        })?),
        None => None,
    };
    // The task's trace: the caller's, when it sent a traceparent.
    let span = tracing::info_span!(target: "dwa_otel", "task.submit",
        otel.kind = "server", task.id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty, error = tracing::field::Empty);
    dwa_engine::traces::adopt(
        &span,
        headers
            .get(dwa_engine::traces::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let submitted =
        tracing::Instrument::instrument(st.engine.submit_request(&body, key), span.clone()).await;
    let submitted = match submitted {
        Ok(s) => {
            span.record("task.id", s.task.id.as_str());
            s
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            span.record("error", tracing::field::display(&e));
            return Err(e.into());
        }
    };
    let status = if submitted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(submitted.task)))
}

/// The body of `POST /api/tasks/:id/retry` (all optional; no body is `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Replaces the task's payload; the task is checked again with it.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
}

/// Run a failed or cancelled task again from its failed steps (dwa):
/// completed steps keep their results, the others run again; the same task
/// id, a `task:retry` event with the run's number.
#[utoipa::path(post, path = "/api/tasks/{id}/retry", params(("id" = String, Path, description = "task id")),
    request_body(content = RetryBody, description = "optional"),
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn retry_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let body = body_bytes(body)?;
    let retry: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::Body(
                StatusCode::BAD_REQUEST,
                format!("the retry body must be {{\"payload\": ...}} or empty: {e}"),
            )
        })?
    };
    Ok(Json(st.engine.rerun(&id, retry.payload).await?))
}

/// The body of `POST /api/tasks/:id/signal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// The wait step's signal name (its input's `name`, else its step id).
    pub name: String,
    /// Becomes the wait step's result (default null).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: serde_json::Value,
}

/// Send a signal to a task's `builtin.wait` step (dwa): the step completes
/// with the payload as its result.
#[utoipa::path(post, path = "/api/tasks/{id}/signal", params(("id" = String, Path, description = "task id")),
    request_body = SignalBody,
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn signal_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let body = body_bytes(body)?;
    let signal: SignalBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Body(
            StatusCode::BAD_REQUEST,
            format!("the signal body must be {{\"name\": ..., \"payload\": ...}}: {e}"),
        )
    })?;
    Ok(Json(
        st.engine.signal(&id, &signal.name, signal.payload).await?,
    ))
}

/// The body of a signed link's signal: any JSON.
#[derive(Debug, ToSchema)]
#[schema(value_type = Object)]
pub struct SignalPayload(pub serde_json::Value);

/// Send the signal of a wait step's signed link (dwa; the link is the
/// credential, no API token): the body, any JSON (none: null), becomes the
/// step's result. Good once; a link that does not verify is a 404.
#[utoipa::path(post, path = "/api/signals/{token}", params(("token" = String, Path, description = "from the step:wait event's signalUrl")),
    request_body(content = SignalPayload, description = "any JSON, the step's result; none: null"),
    responses((status = 200, body = TaskView), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn signal_link(
    State(st): State<AppState>,
    Path(token): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let body = body_bytes(body)?;
    let payload = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::Body(
                StatusCode::BAD_REQUEST,
                format!("the signal must be JSON: {e}"),
            )
        })?
    };
    Ok(Json(st.engine.signal_link(&token, payload).await?))
}

/// Filters of the task list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this status.
    #[param(pattern = "^(pending|active|completed|failed|cancelled)?$")]
    pub status: Option<String>,
    /// At most this many (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// List tasks, newest first.
#[utoipa::path(get, path = "/api/tasks", params(ListQuery),
    responses((status = 200, body = TaskList), (status = 400, body = ErrorBody)))]
async fn list_tasks(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::Query(format!(
                "status {s:?} is not one of pending, active, completed, failed, cancelled"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Query(format!(
            "limit {limit} is not between 1 and 1000"
        )));
    }
    let list = st
        .engine
        .list(ListFilter {
            queue: q.queue.filter(|s| !s.is_empty()),
            status,
            before: q.cursor.filter(|s| !s.is_empty()),
            limit,
        })
        .await?;
    Ok(Json(list))
}

/// A task's status and, for pipelines, the pipeline result.
#[utoipa::path(get, path = "/api/tasks/{id}", params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
async fn get_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(st.engine.get(&id).await?))
}

/// A task's plan (dwa): the task as submitted and its steps' graph, which
/// the dashboard draws; its "run again" resubmits `task`.
#[utoipa::path(get, path = "/api/tasks/{id}/plan", params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = dwa_engine::views::PlanView), (status = 404, body = ErrorBody)))]
async fn get_plan(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<dwa_engine::views::PlanView>, ApiError> {
    Ok(Json(st.engine.plan_view(&id).await?))
}

/// Cancel a task: pending steps never start, running ones are aborted.
#[utoipa::path(delete, path = "/api/tasks/{id}", params(("id" = String, Path, description = "task id")),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn cancel_task(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(st.engine.cancel(&id).await?))
}

/// The task's events as server-sent events: replayed from the start, then live.
/// `Last-Event-ID` resumes after that event.
#[utoipa::path(get, path = "/api/tasks/{id}/events", params(("id" = String, Path, description = "task id")),
    responses((status = 200, description = "text/event-stream of TaskEvent", body = TaskEvent),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn task_events(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let slot = st
        .followers
        .join(&id)
        .map_err(|e| ApiError::TooMany(e.to_string()))?;
    let store = st.engine.store().clone();
    // Subscribe before reading the replay so that nothing falls in between.
    let mut live = store.subscribe();
    let task = store
        .task_summary(&id)
        .await
        .map_err(EngineError::from)?
        .ok_or_else(|| EngineError::NotFound(id.clone()))?;
    let last: u64 = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let linger = st.sse_linger;
    let ended = task.status.is_terminal();
    tokio::spawn(async move {
        // Held while the stream is: given back when it ends or its client leaves.
        let _slot = slot;
        let mut f = Follower {
            store,
            id,
            last,
            ended,
            tx,
        };
        if !f.drain(None).await {
            return;
        }
        loop {
            let next = tokio::select! {
                // A client gone from a quiet task must not hold its slot.
                _ = f.tx.closed() => return,
                next = async {
                    if f.ended {
                        tokio::time::timeout(linger, live.next()).await.ok()
                    } else {
                        Some(live.next().await)
                    }
                } => match next {
                    Some(n) => n,
                    None => return,
                },
            };
            let go_on = match next {
                Feed::Event(e) if e.task_id == f.id && e.seq > f.last => {
                    // Events published before we subscribed come from the store.
                    (e.seq == f.last + 1 || f.drain(Some(e.seq)).await) && f.send(&e).await
                }
                Feed::Event(_) => true,
                Feed::Missed => f.drain(None).await,
                Feed::Closed => false,
            };
            if !go_on {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One SSE client's position in a task's event stream.
struct Follower {
    store: Arc<dyn dwa_store::Store>,
    id: String,
    last: u64,
    ended: bool,
    tx: tokio::sync::mpsc::Sender<Event>,
}

impl Follower {
    /// Sends one event; false when the client is gone.
    async fn send(&mut self, e: &TaskEvent) -> bool {
        self.last = e.seq;
        // A task re-run (`task:retry`) goes on after its last run's end.
        match e.kind.as_str() {
            "pipeline:complete" => self.ended = true,
            "task:retry" => self.ended = false,
            _ => {}
        }
        let event = Event::default()
            .event(e.kind.clone())
            .id(e.seq.to_string())
            .data(serde_json::to_string(e).unwrap_or_default());
        self.tx.send(event).await.is_ok()
    }

    /// Sends the stored events after `last` (and before `upto`), a page at a
    /// time: the replay, and the catch-up after a gap or a lag.
    async fn drain(&mut self, upto: Option<u64>) -> bool {
        loop {
            let Ok(page) = self.store.events(&self.id, self.last, 1000).await else {
                return false;
            };
            // Read from the store, not the feed: on disk before it is sent.
            if self.store.settled().await.is_err() {
                return false;
            }
            let mut sent = 0;
            for e in page.iter().filter(|e| upto.is_none_or(|u| e.seq < u)) {
                if !self.send(e).await {
                    return false;
                }
                sent += 1;
            }
            if sent == 0 || upto.is_some_and(|u| self.last + 1 >= u) {
                return true;
            }
        }
    }
}

/// A mermaid diagram of a task and its mermaid.live link.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Visualization {
    /// `graph TD` source.
    pub mermaid: String,
    /// `https://mermaid.live/edit#pako:...`
    pub url: String,
    /// (dwa) Steps whose task no configured backend serves: drawn dashed,
    /// so a diagram needs no live backend, but they would be refused at
    /// `POST /api/tasks`.
    pub unknown_tasks: Vec<dwa_core::visualize::UnknownTask>,
}

/// Draw a task's steps as a mermaid diagram (the task is validated, not
/// run): the seed's body as it is (`type` optional), tasks no backend serves
/// drawn and listed in `unknownTasks`.
#[utoipa::path(post, path = "/api/visualize", request_body = dwa_core::model::TaskSpec,
    responses((status = 200, body = Visualization), (status = 400, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn visualize(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Visualization>, ApiError> {
    let body = body_bytes(body)?;
    let sketch = st.engine.sketch_json(&body).await?;
    let mermaid = dwa_core::visualize::mermaid(&sketch);
    let url = dwa_core::visualize::live_url(&mermaid);
    Ok(Json(Visualization {
        mermaid,
        url,
        unknown_tasks: sketch.unknown,
    }))
}

/// The configured backends (dwa): whether the last catalog read worked,
/// how many tasks each serves, and until when one is saturated.
#[utoipa::path(get, path = "/api/backends", responses((status = 200, body = Vec<BackendStatus>)))]
async fn list_backends(State(st): State<AppState>) -> Json<Vec<BackendStatus>> {
    let statuses = st.backends.read().map(|b| b.clone()).unwrap_or_default();
    Json(dwa_engine::discovery::with_saturation(&st.engine, statuses))
}

/// The tasks this host can run, merged from its backends.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogBody {
    /// Every task with the backend that serves it.
    pub tasks: Vec<TaskInfo>,
}

/// The merged catalog.
#[utoipa::path(get, path = "/api/catalog", responses((status = 200, body = CatalogBody)))]
async fn catalog(State(st): State<AppState>) -> Json<CatalogBody> {
    Json(CatalogBody {
        tasks: st.engine.catalog().all(),
    })
}

/// Re-read every backend's catalog now.
#[utoipa::path(post, path = "/api/backends/refresh",
    responses((status = 200, description = "each backend's state", body = Vec<BackendStatus>)))]
async fn refresh_backends(State(st): State<AppState>) -> Json<Vec<BackendStatus>> {
    let statuses = discovery::refresh(&st.engine).await;
    if let Ok(mut b) = st.backends.write() {
        *b = statuses.clone();
    }
    Json(statuses)
}

/// Loaded plugins.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    /// Each plugin with its version, world, grants and limits.
    pub plugins: Vec<dwa_plugins::PluginInfo>,
    /// Plugins that could not be loaded, and why.
    pub errors: Vec<String>,
}

/// The loaded plugins, with their version, world and permissions.
#[utoipa::path(get, path = "/api/plugins", responses((status = 200, body = PluginList)))]
async fn list_plugins(State(st): State<AppState>) -> Json<PluginList> {
    Json(PluginList {
        plugins: st.engine.plugins().map(|p| p.list()).unwrap_or_default(),
        errors: st
            .engine
            .plugins()
            .map(|p| p.load_errors())
            .unwrap_or_default(),
    })
}

/// Liveness, with the store's and backends' state.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "healthy"),
    (status = 503, description = "the store does not answer")))]
async fn health(State(st): State<AppState>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let store = st.engine.store();
    let ping = store.ping().await;
    let status = if ping.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ping.is_ok() { "ok" } else { "degraded" };
    // With a token set, a caller without it learns only whether the host is up.
    if st.api_token.is_some() && !authorized(&st, &headers) {
        return (status, Json(json!({"status": word})));
    }
    let backends = st.backends.read().map(|b| b.clone()).unwrap_or_default();
    let error = ping.err().map(|e| dwa_core::redact::redact(&e.to_string()));
    (
        status,
        Json(json!({
            "status": word,
            "version": env!("CARGO_PKG_VERSION"),
            "store": {"kind": store.kind(), "ok": error.is_none(), "error": error},
            "backends": backends,
        })),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "dwa", description = "Declarative task orchestrator"),
    paths(
        create_task,
        list_tasks,
        get_task,
        get_plan,
        cancel_task,
        retry_task,
        signal_task,
        signal_link,
        task_events,
        visualize,
        catalog,
        list_backends,
        refresh_backends,
        schedules::create_schedule,
        schedules::list_schedules,
        schedules::get_schedule,
        schedules::delete_schedule,
        schedules::pause_schedule,
        schedules::resume_schedule,
        health
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        FieldError,
        TaskView,
        TaskList,
        CreatedTask,
        RetryBody,
        SignalBody,
        SignalPayload,
        TaskEvent,
        Visualization,
        CatalogBody,
        BackendStatus,
        dwa_core::schedule::ScheduleSpec,
        dwa_core::schedule::ScheduleView,
        dwa_core::schedule::ScheduleList
    ))
)]
struct ApiDoc;

/// The OpenAPI document, generated from the handlers' types.
pub fn openapi_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as this host enforces it: the limits the operator set
/// (`DWA_MAX_STEPS`) replace the defaults the types carry.
pub fn openapi_for(limits: &dwa_core::limits::Limits) -> Value {
    let mut doc = serde_json::to_value(openapi_doc()).unwrap_or(Value::Null);
    if let Some(steps) = doc.pointer_mut("/components/schemas/TaskSpec/properties/steps")
        && let Some(o) = steps.as_object_mut()
    {
        o.insert("maxItems".into(), json!(limits.max_steps));
    }
    doc
}

async fn openapi(State(st): State<AppState>) -> Json<Value> {
    Json(openapi_for(st.engine.limits()))
}
