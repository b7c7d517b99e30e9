//! A test server that speaks the backend protocol, standing in for Modal
//! and Ray: it records every call, holds gated ones, and counts what is in
//! flight.

#[allow(unused_imports)]
use super::*;

/// One request the fake backend received.
#[derive(Debug, Clone)]
pub struct Call {
    /// Task name.
    pub task: String,
    /// `taskId` from the body.
    pub task_id: String,
    /// `stepId` from the body.
    pub step_id: String,
    /// `input` from the body.
    pub input: Value,
    /// When it arrived.
    pub started: Instant,
    /// When it answered (None: still running or dropped).
    pub ended: Option<Instant>,
    /// Whether the host dropped the request before the answer.
    pub dropped: bool,
    /// The `X-DWA-Host` header: which host sent it.
    pub host: String,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
}

/// Shared state of the fake backend.
#[derive(Default)]
pub struct FakeState {
    calls: Mutex<Vec<Call>>,
    inflight: Mutex<HashMap<String, usize>>,
    max_inflight: Mutex<HashMap<String, usize>>,
    gate: Mutex<Option<watch::Sender<bool>>>,
    arrivals: Mutex<HashMap<String, usize>>,
    arrived: Notify,
    counters: Mutex<HashMap<String, u32>>,
    changed: Notify,
}

/// A test server speaking the backend protocol.
#[derive(Clone)]
pub struct Fake {
    /// Base URL.
    pub base: String,
    /// Its state.
    pub state: Arc<FakeState>,
}

/// The catalog the fake backend announces.
pub fn fake_catalog() -> Value {
    let t = |name: &str, gpu: Option<&str>| {
        json!({"name": name, "category": "test", "description": format!("fake {name}"),
               "gpu": gpu, "timeout": 60, "streaming": false, "chunk": null,
               "inputSchema": {"type": "object"}, "outputSchema": {"type": "object"}})
    };
    let mut download = t("download.file", None);
    download["inputSchema"] = json!({"type": "object", "required": ["url"],
        "properties": {"url": {"type": "string", "minLength": 8}}});
    json!({"tasks": [
        download, t("scenes.detect", None), t("audio.extract", None),
        t("florence.caption", Some("T4")), t("whisper.transcribe", Some("T4")),
        t("llm.summarize", None), t("tts.speak", None), t("flaky", None), t("reject", None),
        t("hang", None), t("gated", None), t("poll.job", None), t("slow.ok", None), t("big.result", None),
        t("stream.words", None), t("busy", None)
    ]})
}

impl Fake {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Fake {
        let (gate, _) = watch::channel(false);
        let state = Arc::new(FakeState {
            gate: Mutex::new(Some(gate)),
            ..Default::default()
        });
        let app = Router::new()
            .route("/tasks", get(|| async { Json(fake_catalog()) }))
            .route("/tasks/{name}", post(run))
            .route("/tasks/{name}/jobs/{job}", get(poll))
            .with_state(state.clone());
        let addr = listen(app).await;
        Fake {
            base: format!("http://{addr}"),
            state,
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Calls of one task name.
    pub fn calls_of(&self, task: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.task == task)
            .collect()
    }

    /// The most requests of `task` that were in flight at once.
    pub fn max_inflight(&self, task: &str) -> usize {
        *self
            .state
            .max_inflight
            .lock()
            .unwrap()
            .get(task)
            .unwrap_or(&0)
    }

    /// Requests of `task` in flight now.
    pub fn inflight(&self, task: &str) -> usize {
        *self.state.inflight.lock().unwrap().get(task).unwrap_or(&0)
    }

    /// Lets every gated request through, now and later.
    pub fn open_gate(&self) {
        if let Some(g) = self.state.gate.lock().unwrap().as_ref() {
            // send() would drop the value when nobody waits yet.
            g.send_replace(true);
        }
    }

    /// Waits (bounded) until `pred` holds over the backend's state.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Fake) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.state.changed.notified();
            if pred(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                assert!(pred(self), "backend never saw {what} within 30 s");
                return;
            }
        }
    }
}

/// Tracks one request: in-flight counts, and whether it was dropped.
struct InFlight {
    state: Arc<FakeState>,
    task: String,
    index: usize,
    finished: bool,
}

impl InFlight {
    fn new(state: Arc<FakeState>, call: Call) -> InFlight {
        let task = call.task.clone();
        let index = {
            let mut calls = state.calls.lock().unwrap();
            calls.push(call);
            calls.len() - 1
        };
        {
            let mut inf = state.inflight.lock().unwrap();
            let n = inf.entry(task.clone()).or_default();
            *n += 1;
            let mut max = state.max_inflight.lock().unwrap();
            let m = max.entry(task.clone()).or_default();
            *m = (*m).max(*n);
        }
        state.changed.notify_waiters();
        InFlight {
            state,
            task,
            index,
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut calls = self.state.calls.lock().unwrap();
            let c = &mut calls[self.index];
            if self.finished {
                c.ended = Some(Instant::now());
            } else {
                c.dropped = true;
            }
        }
        if let Some(n) = self.state.inflight.lock().unwrap().get_mut(&self.task) {
            *n -= 1;
        }
        self.state.changed.notify_waiters();
    }
}

fn ok(v: Value) -> Response {
    Json(json!({"result": v})).into_response()
}

fn err(status: StatusCode, message: &str, retryable: bool) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "retryable": retryable}})),
    )
        .into_response()
}

async fn rendezvous(state: &FakeState, group: String, n: usize) -> bool {
    {
        *state
            .arrivals
            .lock()
            .unwrap()
            .entry(group.clone())
            .or_default() += 1;
    }
    state.arrived.notify_waiters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let notified = state.arrived.notified();
        if *state.arrivals.lock().unwrap().get(&group).unwrap_or(&0) >= n {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return false;
        }
    }
}

async fn run(
    State(state): State<Arc<FakeState>>,
    UrlPath(name): UrlPath<String>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let input = body["input"].clone();
    let task_id = body["taskId"].as_str().unwrap_or("").to_owned();
    let call = Call {
        task: name.clone(),
        task_id: task_id.clone(),
        step_id: body["stepId"].as_str().unwrap_or("").to_owned(),
        input: input.clone(),
        started: Instant::now(),
        ended: None,
        dropped: false,
        host: headers
            .get("x-dwa-host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        traceparent: headers
            .get("traceparent")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    };
    let guard = InFlight::new(state.clone(), call);
    let gate = state.gate.lock().unwrap().as_ref().map(|g| g.subscribe());
    let resp = match name.as_str() {
        "download.file" => {
            let url = input["url"].as_str().unwrap_or("");
            let file = url.rsplit('/').next().unwrap_or("file");
            ok(json!({"path": format!("/media/{file}"), "bytes": 1024}))
        }
        "scenes.detect" | "audio.extract" => {
            if !rendezvous(&state, format!("{task_id}/siblings"), 2).await {
                return err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "siblings did not overlap",
                    false,
                );
            }
            let path = input["path"].as_str().unwrap_or("");
            if name == "scenes.detect" {
                let scenes: Vec<Value> = (0..6)
                    .map(|i| json!({"keyframe": format!("{path}.k{i}.jpg"), "start": i * 10}))
                    .collect();
                ok(json!({"scenes": scenes}))
            } else {
                ok(json!({"audio": format!("{path}.wav")}))
            }
        }
        "whisper.transcribe" => {
            ok(json!({"text": format!("transcript of {}", input["audio"].as_str().unwrap_or("?"))}))
        }
        "llm.summarize" => {
            ok(json!({"summary": format!("summary: {}", input["text"].as_str().unwrap_or("?"))}))
        }
        "tts.speak" => {
            ok(json!({"audioUrl": "https://cdn.example/out.mp3", "voice": input["voice"]}))
        }
        "florence.caption" | "gated" => {
            if let Some(mut g) = gate {
                let _ = g.wait_for(|open| *open).await;
            }
            if name == "gated" {
                ok(input)
            } else {
                ok(json!({"caption": format!("caption of scene {}", input["scene_index"])}))
            }
        }
        "flaky" => {
            let n = {
                let mut c = state.counters.lock().unwrap();
                let e = c.entry(format!("flaky/{task_id}")).or_default();
                *e += 1;
                *e
            };
            let failures = input["failures"].as_u64().unwrap_or(0) as u32;
            if n <= failures {
                err(StatusCode::SERVICE_UNAVAILABLE, "backend overloaded", true)
            } else {
                ok(json!({"calls": n}))
            }
        }
        // Saturated for its first `busy` calls: 429 with `Retry-After`.
        "busy" => {
            let n = {
                let mut c = state.counters.lock().unwrap();
                let e = c.entry(format!("busy/{task_id}")).or_default();
                *e += 1;
                *e
            };
            if n <= input["busy"].as_u64().unwrap_or(0) as u32 {
                let mut r = err(StatusCode::TOO_MANY_REQUESTS, "queue full", true);
                let after = input["retryAfter"].as_str().unwrap_or("1").to_owned();
                r.headers_mut()
                    .insert("retry-after", after.parse().unwrap());
                r
            } else {
                ok(json!({"calls": n}))
            }
        }
        "reject" => err(StatusCode::BAD_REQUEST, "bad input: no url given", false),
        "hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "big.result" => {
            let n = input["bytes"].as_u64().unwrap_or(0) as usize;
            ok(json!({"blob": "x".repeat(n)}))
        }
        "slow.ok" => {
            tokio::time::sleep(Duration::from_millis(input["ms"].as_u64().unwrap_or(300))).await;
            ok(json!({"slept": true}))
        }
        "stream.words" => {
            // NDJSON, or SSE when asked: one chunk per word, then the result.
            // `multiline`: each SSE chunk's JSON spread over several `data:`
            // lines; `trickle`: the body sent one byte at a time.
            let text = input["text"].as_str().unwrap_or("").to_owned();
            let sse = input["sse"].as_bool().unwrap_or(false);
            let multiline = input["multiline"].as_bool().unwrap_or(false);
            let mut body = String::new();
            for w in text.split_whitespace() {
                let line = json!({"word": w}).to_string();
                if sse && multiline {
                    let pretty = serde_json::to_string_pretty(&json!({"word": w})).unwrap();
                    for l in pretty.lines() {
                        body.push_str(&format!("data: {l}\n"));
                    }
                    body.push('\n');
                } else if sse {
                    body.push_str(&format!("data: {line}\n\n"));
                } else {
                    body.push_str(&format!("{line}\n"));
                }
            }
            let last = json!({"result": {"words": text.split_whitespace().count()}}).to_string();
            if sse {
                body.push_str(&format!("event: done\ndata: {last}\n\n"));
            } else {
                body.push_str(&format!("{last}\n"));
            }
            let ct = if sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            };
            if input["trickle"].as_bool().unwrap_or(false) {
                let bytes = futures::stream::iter(body.into_bytes()).then(|b| async move {
                    // Paced so that each byte leaves as a piece of its own.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(vec![b]))
                });
                return ([("content-type", ct)], axum::body::Body::from_stream(bytes))
                    .into_response();
            }
            ([("content-type", ct)], body).into_response()
        }
        "poll.job" => (
            StatusCode::ACCEPTED,
            Json(json!({"jobId": format!("job-{task_id}"), "retryAfterMs": 20})),
        )
            .into_response(),
        other => err(
            StatusCode::NOT_FOUND,
            &format!("unknown task {other}"),
            false,
        ),
    };
    guard.finish();
    resp
}

async fn poll(
    State(state): State<Arc<FakeState>>,
    UrlPath((_name, job)): UrlPath<(String, String)>,
) -> Response {
    let n = {
        let mut c = state.counters.lock().unwrap();
        let e = c.entry(format!("poll/{job}")).or_default();
        *e += 1;
        *e
    };
    state.changed.notify_waiters();
    if n < 3 {
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": "running", "retryAfterMs": 20})),
        )
            .into_response()
    } else {
        ok(json!({"job": job, "polls": n}))
    }
}
