//! Shared pieces of the end-to-end tests: the real `dwa` binary started as a
//! child process, and a test HTTP server that speaks the backend protocol
//! (standing in for Modal/Ray, which cannot be reached from here).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

/// The longest any bounded wait in these tests lasts.
pub const WAIT: Duration = Duration::from_secs(30);
/// How long a host may take to start: the first start compiles every plugin
/// (a debug build of the host compiles the 12-18 MB Python and JavaScript
/// components in ~10-15 s each; later starts read the artifact cache).
pub const START_WAIT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------- the host

/// A running `dwa serve`.
pub struct Host {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

/// Reads the child's stdout (on a thread, to its end) and answers the rest
/// of the first line starting with `prefix`, or None if none came within
/// `wait` (or the child closed its stdout first).
fn ready_line(child: &mut Child, prefix: &'static str, wait: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    rx.recv_timeout(wait).ok()
}

impl Host {
    /// Starts the binary on a free port with `DWA_DATA_DIR=data_dir` and extra env.
    pub fn start(data_dir: &Path, env: &[(&str, String)]) -> Host {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dwa"));
        cmd.arg("serve")
            .env("PORT", "0")
            .env("DWA_HOST", "127.0.0.1")
            .env("DWA_DATA_DIR", data_dir)
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .env_remove("MODAL_URL")
            .env_remove("RAY_URL")
            .env_remove("LOCAL_BACKEND_URL")
            .env_remove("DWA_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dwa");
        let base = ready_line(&mut child, "dwa listening on ", START_WAIT)
            .expect("dwa did not print its address within 240 s");
        Host {
            child: Some(child),
            base,
        }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: the host dies without any chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "dwa did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ------------------------------------------------------------ HTTP helpers

/// A client for the host's API.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs a task; answers (status, body).
pub async fn submit(host: &Host, task: &Value) -> (u16, Value) {
    let r = client()
        .post(host.url("/api/tasks"))
        .json(task)
        .send()
        .await
        .expect("POST /api/tasks");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// POSTs a task that must be accepted; answers its id.
pub async fn submit_ok(host: &Host, task: &Value) -> String {
    let (status, body) = submit(host, task).await;
    assert_eq!(status, 201, "task refused: {body}");
    body["id"].as_str().expect("id").to_owned()
}

/// GETs a path of the host's API and parses the JSON answer.
pub async fn get_json(host: &Host, path: &str) -> Value {
    client()
        .get(host.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
}

/// GETs a task.
pub async fn get_task(host: &Host, id: &str) -> Value {
    get_json(host, &format!("/api/tasks/{id}")).await
}

/// Waits (bounded) until the task reaches a terminal status; answers it.
pub async fn wait_done(host: &Host, id: &str) -> Value {
    wait_until(host, id, "to finish", |t| {
        matches!(
            t["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    })
    .await
}

/// Polls the task until `pred` holds, failing with `what` after 30 s.
pub async fn wait_until(host: &Host, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until_within(host, id, what, WAIT, pred).await
}

/// How long work on a real Python backend (ffmpeg, OpenCV, Ray Serve) may
/// take on a busy 2-core machine: the likeliest slow part of the suite,
/// so it gets its own bound.
pub const REAL_BACKEND_WAIT: Duration = Duration::from_secs(180);

/// [`wait_done`] for a task whose steps run on a real Python backend;
/// `what` says what was awaited when the bound runs out.
pub async fn wait_done_on_real_backend(host: &Host, id: &str, what: &str) -> Value {
    let finished = |t: &Value| {
        matches!(
            t["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    };
    wait_until_within(
        host,
        id,
        &format!("to finish ({what})"),
        REAL_BACKEND_WAIT,
        finished,
    )
    .await
}

/// Polls the task until `pred` holds, failing with `what` after `wait`.
pub async fn wait_until_within(
    host: &Host,
    id: &str,
    what: &str,
    wait: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let t = get_task(host, id).await;
        if pred(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not get {what} within {wait:?}; last state: {t:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the task's SSE stream until `pipeline:complete` (bounded); answers (event name, data) pairs.
pub async fn read_events(base: &str, id: &str) -> Vec<(String, Value)> {
    read_events_signalling(base, id, None).await
}

/// [`read_events`], telling `first` when the first event came: the stream
/// is subscribed then (the host subscribes before it replays), so whatever
/// happens to the task afterwards reaches this reader live.
pub async fn read_events_signalling(
    base: &str,
    id: &str,
    mut first: Option<tokio::sync::oneshot::Sender<()>>,
) -> Vec<(String, Value)> {
    let resp = client()
        .get(format!("{base}/api/tasks/{id}/events"))
        .send()
        .await
        .expect("GET events");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no pipeline:complete on the event stream within 30 s")
            .expect("stream ended before pipeline:complete")
            .expect("stream chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if name.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).expect("event data is JSON");
            let done = name == "pipeline:complete";
            out.push((name, value));
            if let Some(f) = first.take() {
                let _ = f.send(());
            }
            if done {
                return out;
            }
        }
    }
}

/// Reads the task's event stream until `pred` holds for the events so far
/// (bounded); reconnects if the server closes the stream first.
pub async fn events_until(
    host: &Host,
    id: &str,
    pred: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = client()
            .get(host.url(&format!("/api/tasks/{id}/events")))
            .send()
            .await
            .unwrap();
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut evs: Vec<(String, Value)> = Vec::new();
        loop {
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(n) => n,
                Err(_) => panic!(
                    "events of {id} never matched within 30 s; got {:?}",
                    evs.iter()
                        .map(|(k, v)| format!("{k} {}", v["data"]))
                        .collect::<Vec<_>>()
                ),
            };
            let Some(Ok(chunk)) = next else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    let v: Value = serde_json::from_str(data.trim()).unwrap();
                    evs.push((v["type"].as_str().unwrap_or("").to_owned(), v));
                }
            }
            if pred(&evs) {
                return evs;
            }
        }
    }
}

/// Whether an event of `kind` is among `evs`.
pub fn has(evs: &[(String, Value)], kind: &str) -> bool {
    evs.iter().any(|(k, _)| k == kind)
}

// ------------------------------------------------------ Python backends

/// A Python backend process from the repo's .venv (`python -m ...`), stopped
/// with SIGTERM (then SIGKILL after 30 s) when dropped.
pub struct PyService {
    child: Option<Child>,
    /// Its base URL, from the line it prints when ready.
    pub base: String,
}

impl PyService {
    /// Starts `python ARGS` in the repo and waits (at most `wait`) for a line starting with `ready`.
    pub fn start(
        args: &[&str],
        ready: &'static str,
        env: &[(&str, String)],
        wait: Duration,
    ) -> PyService {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = repo.join(".venv/bin/python");
        assert!(
            python.exists(),
            ".venv is missing: run `just python-setup` (just test does)"
        );
        let mut cmd = Command::new(python);
        cmd.args(args)
            .current_dir(&repo)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the Python backend");
        let base = match ready_line(&mut child, ready, wait) {
            Some(b) => b,
            None => {
                let why = match child.try_wait() {
                    Ok(Some(status)) => {
                        format!("exited ({status}) before printing {ready:?}; its stderr is above")
                    }
                    _ => format!("did not print {ready:?} within {} s", wait.as_secs()),
                };
                let _ = child.kill();
                panic!("`python {}` {why}", args.join(" "));
            }
        };
        PyService {
            child: Some(child),
            base,
        }
    }
}

impl Drop for PyService {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Starts the host with the repo's plugins, forwarding to a Python backend
/// (`backend_var` = `LOCAL_BACKEND_URL` or `RAY_URL`) that shares its working folder.
pub fn host_for_backend(
    data_dir: &Path,
    work: &Path,
    backend_var: &'static str,
    url: &str,
) -> Host {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = vec![
        (backend_var, url.to_owned()),
        ("DWA_WORK_DIR", work.display().to_string()),
        (
            "DWA_PLUGIN_DIR",
            repo.join("plugins/dist").display().to_string(),
        ),
        (
            "DWA_PLUGIN_CACHE_DIR",
            repo.join("target/dwa-test-plugin-cache")
                .display()
                .to_string(),
        ),
    ];
    tokio::task::block_in_place(|| Host::start(data_dir, &env))
}

/// A 16-bit mono WAV of a sine tone.
pub fn tone_wav(seconds: f64, rate: u32) -> Vec<u8> {
    let n = (seconds * rate as f64) as u32;
    let mut out = Vec::with_capacity(44 + 2 * n as usize);
    let data_len = 2 * n;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        let v = (0.4
            * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin()
            * 32767.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A local web server with the files the pipelines download.
pub async fn media_site() -> String {
    media_site_with(Vec::new()).await
}

/// Like [`media_site`], also serving `extra` files (`/files/<name>`).
pub async fn media_site_with(extra: Vec<(String, Vec<u8>)>) -> String {
    let wav = tone_wav(5.0, 22050);
    let photo = png(400, 300);
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(extra.into_iter().collect());
    let app = Router::new()
        .route(
            "/files/{name}",
            axum::routing::get(move |UrlPath(name): UrlPath<String>| {
                let files = files.clone();
                async move {
                    match files.get(&name) {
                        Some(b) => (StatusCode::OK, b.clone()),
                        None => (StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            }),
        )
        .route(
            "/media/tone.wav",
            axum::routing::get(move || async move { ([("content-type", "audio/wav")], wav) }),
        )
        .route(
            "/media/photo.png",
            axum::routing::get(move || async move { ([("content-type", "image/png")], photo) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------- the backend

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
        t("hang", None), t("gated", None), t("poll.job", None), t("slow.ok", None),
        t("stream.words", None)
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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
        "reject" => err(StatusCode::BAD_REQUEST, "bad input: no url given", false),
        "hang" => {
            std::future::pending::<()>().await;
            unreachable!()
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

/// Holds twice `cap` single-step tasks of `gated` on `queue` at the fake
/// backend until `cap` calls are in flight, then lets them all through,
/// and asserts the most calls in flight at once was exactly `cap`: the
/// worker cap of that queue, measured at the backend.
pub async fn peak_is_the_worker_cap(host: &Host, fake: &Fake, queue: &str, cap: usize) {
    let mut ids = Vec::new();
    for i in 0..2 * cap {
        ids.push(
            submit_ok(
                host,
                &json!({"type": "gated", "queue": queue, "payload": {"i": i}}),
            )
            .await,
        );
    }
    fake.wait_for(&format!("{cap} calls in flight on {queue}"), |f| {
        f.inflight("gated") >= cap
    })
    .await;
    fake.open_gate();
    for id in &ids {
        assert_eq!(wait_done(host, id).await["status"], "completed");
    }
    assert_eq!(fake.calls_of("gated").len(), 2 * cap);
    assert_eq!(
        fake.max_inflight("gated"),
        cap,
        "at most {cap} steps of queue {queue} may run at once"
    );
}
