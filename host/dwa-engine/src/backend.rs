//! The host side of the backend protocol (docs/backend-protocol.md): read a backend's
//! catalog, run a task on it, and follow the submit-then-poll form for long
//! tasks so that no HTTP request has to stay open for a whole run.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use dwa_core::catalog::TaskInfo;
use dwa_core::model::now_ms;
use dwa_core::redact::redact;
use dwa_core::step::{StepCall, StepError};

/// What a streaming answer has given so far.
struct Stream {
    chunks: Vec<Value>,
    result: Option<Value>,
}

/// One configured backend (`modal`, `ray` or `local`).
#[derive(Debug)]
pub struct HttpBackend {
    /// Its name, as steps' `backend` field says it.
    pub name: String,
    /// Base URL without a trailing slash.
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
    /// Sent as `X-DWA-Host`, so backends (and tests) can tell hosts apart.
    host_name: Option<String>,
    /// The most bytes read from one answer (`DWA_MAX_RESULT_BYTES`): a
    /// backend cannot make the host hold more than this for one step.
    max_body: usize,
    /// Until when (ms since the epoch) its last 429 asked the host to wait.
    saturated_until: std::sync::atomic::AtomicI64,
}

/// The shortest and longest wait a 429's `Retry-After` may ask for: a
/// backend cannot make the host spin, nor park a step for hours.
const BUSY_WAIT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(300));

/// A 429's wait: its `Retry-After` in seconds (an HTTP date is not
/// honoured: clocks differ), else one second; within [`BUSY_WAIT`].
fn retry_after(resp: &reqwest::Response) -> Duration {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(1), |s| {
            Duration::from_secs_f64(s.min(BUSY_WAIT.1.as_secs_f64()))
        })
        .clamp(BUSY_WAIT.0, BUSY_WAIT.1)
}

/// Why a backend's catalog could not be read.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend} ({url}): {message}")]
pub struct CatalogError {
    /// The backend's name.
    pub backend: String,
    /// The URL asked.
    pub url: String,
    /// What went wrong.
    pub message: String,
}

#[derive(Deserialize)]
struct CatalogBody {
    tasks: Vec<TaskInfo>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorDetail {
    Full {
        message: String,
        #[serde(default)]
        retryable: Option<bool>,
    },
    Text(String),
}

/// How long to wait between polls of a submitted job when the backend gives no hint.
const DEFAULT_POLL_MS: u64 = 500;

impl HttpBackend {
    /// A backend at `base`, with a bearer token if set; the client pools connections.
    pub fn new(name: &str, base: &str, token: Option<String>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpBackend {
            name: name.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            client,
            host_name: None,
            max_body: dwa_core::limits::Limits::default().max_result_bytes,
            saturated_until: Default::default(),
        })
    }

    /// Reads at most `max` bytes of each answer (`DWA_MAX_RESULT_BYTES`).
    pub fn with_max_body(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// The whole body of `resp`, refused as soon as it passes the cap.
    async fn body(&self, url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, StepError> {
        let mut out = Vec::new();
        while let Some(piece) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(url, e))?
        {
            self.within_cap(out.len() + piece.len())?;
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    /// Refuses an answer of `len` bytes past the cap, naming the limit.
    fn within_cap(&self, len: usize) -> Result<(), StepError> {
        if len <= self.max_body {
            return Ok(());
        }
        Err(StepError::permanent(format!(
            "backend {}: {}",
            self.name,
            dwa_core::limits::Exceeded {
                what: "the answer's size in bytes",
                value: None,
                max: self.max_body,
                var: "DWA_MAX_RESULT_BYTES",
            }
        )))
    }

    /// Names this host in the `X-DWA-Host` header of every request.
    pub fn with_host_name(mut self, name: &str) -> Self {
        self.host_name = Some(name.to_owned());
        self
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.host_name {
            Some(h) => req.header("x-dwa-host", h),
            None => req,
        };
        // The backend's own spans join the step's trace.
        let req = match crate::traces::current() {
            Some(tp) => req.header(crate::traces::TRACEPARENT, tp),
            None => req,
        };
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Reads `GET {base}/tasks`.
    pub async fn fetch_catalog(&self) -> Result<Vec<TaskInfo>, CatalogError> {
        let url = format!("{}/tasks", self.base);
        let fail = |message: String| CatalogError {
            backend: self.name.clone(),
            url: redact(&url),
            message: redact(&message),
        };
        let resp = self
            .authed(self.client.get(&url))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(fail(format!("answered {}", resp.status())));
        }
        let bytes = self.body(&url, resp).await.map_err(|e| fail(e.message))?;
        let body: CatalogBody = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("not a catalog ({{\"tasks\": [...]}}): {e}")))?;
        Ok(body
            .tasks
            .into_iter()
            .map(|mut t| {
                t.backend = self.name.clone();
                t
            })
            .collect())
    }

    /// Runs one try of a step: `POST {base}/tasks/{name}`, then polls if
    /// the backend answers 202; in a `backend.call` span whose context the
    /// requests carry as `traceparent`.
    pub async fn run(&self, call: &StepCall) -> Result<Value, StepError> {
        let span = tracing::info_span!(target: "dwa_otel", "backend.call",
            otel.kind = "client", backend = %self.name, task = %call.task,
            otel.status_code = tracing::field::Empty, error = tracing::field::Empty);
        let r = self.call(call).instrument(span.clone()).await;
        if let Err(e) = &r {
            span.record("otel.status_code", "ERROR");
            span.record("error", e.message.as_str());
        }
        r
    }

    async fn call(&self, call: &StepCall) -> Result<Value, StepError> {
        let url = format!("{}/tasks/{}", self.base, call.task);
        let resp = self
            .authed(self.client.post(&url))
            // The engine enforces the step's timeout; this one only guards
            // against a request outliving it if the engine's timer is late.
            .timeout(call.timeout + Duration::from_secs(5))
            .json(&json!({"input": call.input, "taskId": call.task_id, "stepId": call.step_id}))
            .send()
            .await
            .map_err(|e| self.transport_error(&url, e))?;
        if resp.status() == StatusCode::ACCEPTED {
            let bytes = self.body(&url, resp).await?;
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                StepError::permanent(format!(
                    "backend {} answered 202 with a body that is not JSON: {e}",
                    self.name
                ))
            })?;
            return self.poll(call, &body).await;
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let sse = content_type.starts_with("text/event-stream");
        if resp.status().is_success() && (sse || content_type.starts_with("application/x-ndjson")) {
            return self.read_stream(&url, call, sse, resp).await;
        }
        self.read_result(&url, resp).await
    }

    /// Reads a streaming answer (SSE events or NDJSON lines): each chunk is
    /// progress; a chunk `{"result": ...}` is the final result, `{"error":
    /// ...}` a failure. Without a final chunk, the result is the list of chunks.
    /// Lines are cut from bytes, not from each network piece decoded alone,
    /// so a character split across two pieces arrives whole; an SSE event's
    /// `data:` lines are joined (the standard's multi-line data).
    async fn read_stream(
        &self,
        url: &str,
        call: &StepCall,
        sse: bool,
        mut resp: reqwest::Response,
    ) -> Result<Value, StepError> {
        let mut stream = Stream {
            chunks: Vec::new(),
            result: None,
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut data: Vec<String> = Vec::new();
        // Every byte streamed counts: the chunks are kept as the result.
        let mut streamed = 0usize;
        loop {
            let piece = resp
                .chunk()
                .await
                .map_err(|e| self.transport_error(url, e))?;
            let done = piece.is_none();
            if let Some(p) = &piece {
                streamed += p.len();
                self.within_cap(streamed)?;
            }
            match piece {
                Some(p) => buf.extend_from_slice(&p),
                // The end of the body ends its last line and event.
                None => buf.extend_from_slice(b"\n\n"),
            }
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let bytes: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8(bytes).map_err(|e| {
                    StepError::permanent(format!(
                        "backend {} streamed a line that is not UTF-8: {e}",
                        self.name
                    ))
                })?;
                let line = line.trim_end_matches(['\n', '\r']);
                if !sse {
                    if !line.trim().is_empty() {
                        self.on_chunk(line.trim(), call, &mut stream)?;
                    }
                } else if line.is_empty() {
                    if !data.is_empty() {
                        self.on_chunk(&data.join("\n"), call, &mut stream)?;
                        data.clear();
                    }
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
                }
                // Other SSE fields (event, id, retry) and comments carry nothing here.
            }
            if done {
                break;
            }
        }
        Ok(stream.result.unwrap_or(Value::Array(stream.chunks)))
    }

    /// One streamed chunk: progress, the final result, or the try's failure.
    fn on_chunk(&self, json: &str, call: &StepCall, stream: &mut Stream) -> Result<(), StepError> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            StepError::permanent(format!(
                "backend {} streamed a chunk that is not JSON ({e}): {}",
                self.name,
                json.chars().take(200).collect::<String>()
            ))
        })?;
        match value {
            Value::Object(mut m) if m.contains_key("result") => {
                stream.result = Some(m.remove("result").unwrap_or(Value::Null));
            }
            Value::Object(m) if m.contains_key("error") => {
                let err = m.get("error").cloned().unwrap_or(Value::Null);
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| err.to_string());
                let retryable = err
                    .get("retryable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                return Err(StepError {
                    message: format!("{message} (backend {})", self.name),
                    retryable,
                    busy_for: None,
                });
            }
            chunk => {
                if let Some(tx) = &call.progress {
                    let _ = tx.send(chunk.clone());
                }
                stream.chunks.push(chunk);
            }
        }
        Ok(())
    }

    async fn poll(&self, call: &StepCall, accepted: &Value) -> Result<Value, StepError> {
        let poll_url = match (
            accepted.get("pollUrl").and_then(Value::as_str),
            accepted.get("jobId").and_then(Value::as_str),
        ) {
            (Some(u), _) if u.starts_with("http://") || u.starts_with("https://") => u.to_owned(),
            (Some(u), _) => format!("{}/{}", self.base, u.trim_start_matches('/')),
            (None, Some(id)) => format!("{}/tasks/{}/jobs/{}", self.base, call.task, id),
            (None, None) => {
                return Err(StepError::permanent(format!(
                    "backend {} answered 202 without jobId or pollUrl",
                    self.name
                )));
            }
        };
        let mut wait = accepted
            .get("retryAfterMs")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_POLL_MS);
        loop {
            tokio::time::sleep(Duration::from_millis(wait.clamp(10, 30_000))).await;
            let resp = self
                .authed(self.client.get(&poll_url))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| self.transport_error(&poll_url, e))?;
            if resp.status() == StatusCode::ACCEPTED {
                let bytes = self.body(&poll_url, resp).await?;
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                wait = body
                    .get("retryAfterMs")
                    .and_then(Value::as_u64)
                    .unwrap_or(DEFAULT_POLL_MS);
                continue;
            }
            return self.read_result(&poll_url, resp).await;
        }
    }

    async fn read_result(&self, url: &str, resp: reqwest::Response) -> Result<Value, StepError> {
        let status = resp.status();
        let busy_for = (status == StatusCode::TOO_MANY_REQUESTS).then(|| retry_after(&resp));
        let bytes = self.body(url, resp).await?;
        if status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
                StepError::permanent(format!(
                    "backend {} answered {status} with a body that is not JSON: {e}",
                    self.name
                ))
            })?;
            return match body {
                Value::Object(mut m) if m.contains_key("result") => {
                    Ok(m.remove("result").unwrap_or(Value::Null))
                }
                _ => Err(StepError::permanent(format!(
                    "backend {} answered {status} without a `result` field",
                    self.name
                ))),
            };
        }
        crate::meters::backend_error(&self.name, status.as_str());
        let default_retryable = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        let (message, retryable) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody {
                error: ErrorDetail::Full { message, retryable },
            }) => (message, retryable.unwrap_or(default_retryable)),
            Ok(ErrorBody {
                error: ErrorDetail::Text(message),
            }) => (message, default_retryable),
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                let text: String = text.chars().take(500).collect();
                (format!("HTTP {status}: {text}"), default_retryable)
            }
        };
        if let Some(wait) = busy_for {
            let until = now_ms().saturating_add(wait.as_millis() as i64);
            self.saturated_until
                .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
        }
        Err(StepError {
            message: format!("{} (backend {})", message, self.name),
            retryable,
            busy_for,
        })
    }

    /// Until when (ms since the epoch) the backend said it is saturated, if
    /// that is still ahead.
    pub fn saturated_until(&self) -> Option<i64> {
        let until = self
            .saturated_until
            .load(std::sync::atomic::Ordering::Relaxed);
        (until > now_ms()).then_some(until)
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> StepError {
        let (what, kind) = if e.is_timeout() {
            ("timed out", "timeout")
        } else if e.is_connect() {
            ("could not connect", "connect")
        } else {
            ("request failed", "request")
        };
        crate::meters::backend_error(&self.name, kind);
        // reqwest's message repeats the URL: both are shown without credentials.
        StepError::transient(redact(&format!(
            "backend {} {what} ({url}): {e}",
            self.name
        )))
    }
}
