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

mod fake;
mod python;

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use fake::*;
#[allow(unused_imports)]
pub use python::*;

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
    /// The `DWA_API_TOKEN` it was started with: the helpers that read the
    /// API ([`get_json`] and the waits built on it) send it.
    pub token: Option<String>,
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

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn listen(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
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
        let token = env
            .iter()
            .find(|(k, _)| *k == "DWA_API_TOKEN")
            .map(|(_, v)| v.clone());
        Host {
            child: Some(child),
            base,
            token,
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

/// POSTs a task (with the host's token, if it has one); answers (status, body).
pub async fn submit(host: &Host, task: &Value) -> (u16, Value) {
    let req = client().post(host.url("/api/tasks")).json(task);
    let req = match &host.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let r = req.send().await.expect("POST /api/tasks");
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
    let req = client().get(host.url(path));
    json_of(match &host.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    })
    .await
}

/// Sends `req` and answers its JSON body, naming the request when either fails.
pub async fn json_of(req: reqwest::RequestBuilder) -> Value {
    let what = format!("{req:?}");
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

/// GETs a task.
pub async fn get_task(host: &Host, id: &str) -> Value {
    get_json(host, &format!("/api/tasks/{id}")).await
}

/// Waits (bounded) until the task reaches a terminal status; answers it.
pub async fn wait_done(host: &Host, id: &str) -> Value {
    wait_until(host, id, "to finish", finished).await
}

/// Whether a task (as `GET /api/tasks/:id` shows it) has ended.
fn finished(t: &Value) -> bool {
    matches!(
        t["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

/// The `chunk.word` of every `step:progress` event, in order (the fake
/// backend's `stream.words` streams one per word).
pub fn streamed_words(events: &[(String, Value)]) -> Vec<Value> {
    events
        .iter()
        .filter(|(k, _)| k == "step:progress")
        .map(|(_, e)| e["data"]["chunk"]["word"].clone())
        .collect()
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
