//! End-to-end tests of the plugin host: the real binary with the plugins
//! `just build-plugins` built (Rust and Python), effects checked against a
//! local HTTP receiver and the SSE stream, and hostile plugins contained.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::*;
use hmac::Mac;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dist(name: &str) -> PathBuf {
    let d = repo().join("plugins").join(name);
    assert!(
        d.join("noop.wasm").exists() || d.join("toast.wasm").exists(),
        "{} has no plugins: run `just build-plugins` first",
        d.display()
    );
    d
}

fn start_with_plugins(dir: &Path, extra: &[(&str, String)]) -> (tempfile::TempDir, Host) {
    let data = tempfile::tempdir().unwrap();
    let host = start_plugins_in(data.path(), dir, extra);
    (data, host)
}

/// A host with the plugins of `dir` on the data folder `data`.
fn start_plugins_in(data: &Path, dir: &Path, extra: &[(&str, String)]) -> Host {
    let mut env = vec![
        ("DWA_PLUGIN_DIR", dir.display().to_string()),
        (
            "DWA_PLUGIN_CACHE_DIR",
            repo()
                .join("target/dwa-test-plugin-cache")
                .display()
                .to_string(),
        ),
    ];
    env.extend(extra.iter().cloned());
    tokio::task::block_in_place(|| Host::start(data, &env))
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    flaky_left: Mutex<u32>,
    changed: tokio::sync::Notify,
    port: Mutex<u16>,
}

/// A local HTTP server standing in for Slack, Discord, a mail API, a cache and webhooks.
#[derive(Clone)]
struct Receiver {
    base: String,
    port: u16,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(flaky_failures: u32) -> Receiver {
        let state = Arc::new(ReceiverState {
            flaky_left: Mutex::new(flaky_failures),
            ..Default::default()
        });
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        *state.port.lock().unwrap() = port;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            base: format!("http://127.0.0.1:{port}"),
            port,
            state,
        }
    }

    fn got(&self, path: &str) -> Vec<Received> {
        self.state
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    async fn wait(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.state.changed.notified();
            let got = self.got(path);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "receiver got {} of {n} requests to {path} within 30 s",
                    self.got(path).len()
                );
            }
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    state.got.lock().unwrap().push(Received {
        method: method.to_string(),
        path: path.clone(),
        headers,
        body: body.to_vec(),
    });
    state.changed.notify_waiters();
    match path.as_str() {
        "/flaky" => {
            let mut left = state.flaky_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
            }
            (StatusCode::OK, "{\"ok\":true}").into_response()
        }
        "/to-secret" => {
            let port = *state.port.lock().unwrap();
            (
                StatusCode::FOUND,
                [("location", format!("http://127.0.0.1:{port}/secret"))],
            )
                .into_response()
        }
        _ => (StatusCode::OK, "{\"ok\":true}").into_response(),
    }
}

/// The names of the loaded plugins in a `GET /api/plugins` answer.
fn plugin_names(list: &Value) -> Vec<String> {
    list["plugins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_effect_end_to_end() {
    let rx = Receiver::start(1).await;
    let (_d, host) = start_with_plugins(&dist("dist"), &[("DWA_HTTP_ALLOW", "127.0.0.1".into())]);
    let plugins: Value = get_json(&host, "/api/plugins").await;
    let names = plugin_names(&plugins);
    for n in [
        "audit",
        "emit",
        "enqueue",
        "invalidate",
        "notify",
        "redirect",
        "toast",
        "webhook",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} not loaded: {names:?}");
    }
    let webhook = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .unwrap();
    assert_eq!(webhook["world"], "dwa:plugin/effect-handler@0.1.0");
    assert_eq!(webhook["grantedHttp"], json!(["*"]));

    let base = &rx.base;
    let id = submit_ok(
        &host,
        &json!({
            "type": "builtin.echo",
            "payload": {"user": "ada", "n": 3},
            "onPending": [{"$event": "toast", "text": "Starting for {{payload.user}}"}],
            "onSuccess": [
                {"$event": "webhook", "url": format!("{base}/hook"), "secret": "s3cret", "headers": {"X-Trace": "t-1"}},
                {"$event": "webhook", "url": format!("{base}/custom"), "method": "PUT", "body": {"n": "{{result.n}}", "who": "{{payload.user}}"}},
                {"$event": "webhook", "url": format!("{base}/flaky")},
                {"$event": "notify", "channel": "slack", "url": format!("{base}/slack"), "message": "done: {{result.n}}"},
                {"$event": "notify", "channel": "discord", "url": format!("{base}/discord"), "message": "done for {{payload.user}}"},
                {"$event": "notify", "channel": "email", "url": format!("{base}/mail"), "to": "ops@example.com", "subject": "dwa", "message": "all good", "apiKey": "k-1"},
                {"$event": "notify", "channel": "webhook", "url": format!("{base}/generic"), "message": "m"},
                {"$event": "toast", "text": "Finished {{result.n}}", "variant": "success"},
                {"$event": "emit", "event": "report:ready", "data": {"n": "{{result.n}}"}},
                {"$event": "redirect", "url": "/reports/{{payload.user}}"},
                {"$event": "invalidate", "path": "/users/{{payload.user}}", "url": format!("{base}/cache")},
                {"$event": "enqueue", "task": {"type": "builtin.echo", "payload": {"child": true}}},
                {"$event": "audit", "label": "billing"}
            ]
        }),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "completed");

    // Default webhook body is the task's status JSON, signed with HMAC-SHA256.
    let hook = &rx.wait("/hook", 1).await[0];
    assert_eq!(hook.method, "POST");
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["taskId"], id);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["result"], json!({"user": "ada", "n": 3}));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&hook.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hook.headers["x-dwa-signature"], want.as_str());
    assert_eq!(hook.headers["x-trace"], "t-1");
    assert_eq!(hook.headers["content-type"], "application/json");
    let custom = &rx.wait("/custom", 1).await[0];
    assert_eq!(custom.method, "PUT");
    assert_eq!(
        serde_json::from_slice::<Value>(&custom.body).unwrap(),
        json!({"n": 3, "who": "ada"})
    );
    assert!(custom.headers.get("x-dwa-signature").is_none());
    assert_eq!(
        rx.wait("/flaky", 2).await.len(),
        2,
        "a 5xx is retried once, then succeeds"
    );

    let slack: Value = serde_json::from_slice(&rx.wait("/slack", 1).await[0].body).unwrap();
    assert_eq!(slack, json!({"text": "done: 3"}));
    let discord: Value = serde_json::from_slice(&rx.wait("/discord", 1).await[0].body).unwrap();
    assert_eq!(discord, json!({"content": "done for ada"}));
    let mail = &rx.wait("/mail", 1).await[0];
    assert_eq!(mail.headers["authorization"], "Bearer k-1");
    let mail: Value = serde_json::from_slice(&mail.body).unwrap();
    assert_eq!(mail["to"], "ops@example.com");
    assert_eq!(mail["subject"], "dwa");
    assert_eq!(mail["text"], "all good");
    let generic: Value = serde_json::from_slice(&rx.wait("/generic", 1).await[0].body).unwrap();
    assert_eq!(generic["channel"], "webhook");
    assert_eq!(generic["taskId"], id);
    assert_eq!(generic["task"]["status"], "completed");
    let cache: Value = serde_json::from_slice(&rx.wait("/cache", 1).await[0].body).unwrap();
    assert_eq!(cache["path"], "/users/ada");

    let evs = events_until(&host, &id, |e| {
        has(e, "audit") && has(e, "enqueued") && has(e, "invalidate")
    })
    .await;
    let data = |kind: &str| -> Vec<Value> {
        evs.iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v["data"].clone())
            .collect()
    };
    assert!(data("toast").contains(&json!({"text": "Starting for ada", "variant": "info"})));
    assert!(data("toast").contains(&json!({"text": "Finished 3", "variant": "success"})));
    assert_eq!(data("report:ready"), vec![json!({"n": 3})]);
    assert_eq!(data("redirect"), vec![json!({"url": "/reports/ada"})]);
    assert_eq!(data("invalidate"), vec![json!({"path": "/users/ada"})]);
    let audit = &data("audit")[0];
    assert_eq!(audit["writtenIn"], "python");
    assert_eq!(audit["label"], "billing");
    assert_eq!(audit["lifecycle"], "onSuccess");
    assert_eq!(audit["status"], "completed");
    assert!(!has(&evs, "effect:error"), "no effect failed: {evs:?}");
    let child = data("enqueued")[0]["taskId"].as_str().unwrap().to_owned();
    let c = wait_done(&host, &child).await;
    assert_eq!(c["result"], json!({"child": true}));
    // GET /metrics counts the deliveries and times the plugin calls.
    let text = client()
        .get(host.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"dwa_effects_total{effect="toast",outcome="delivered"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"dwa_plugin_call_seconds_count{kind="effect",name="toast"} 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_effects_are_events_and_never_change_the_outcome() {
    let rx = Receiver::start(0).await;
    let (_d, host) = start_with_plugins(&dist("dist"), &[]);
    // No DWA_HTTP_ALLOW: the webhook to 127.0.0.1 is refused; onError fires on failure.
    let id = submit_ok(
        &host,
        &json!({
            "type": "builtin.fail",
            "payload": {"message": "kaput", "retryable": false},
            "onError": [
                {"$event": "webhook", "url": format!("{}/hook", rx.base)},
                {"$event": "toast", "text": "failed: {{error}}", "variant": "error"}
            ],
            "onSuccess": [{"$event": "toast", "text": "never"}]
        }),
    )
    .await;
    let t = wait_done(&host, &id).await;
    assert_eq!(t["status"], "failed");
    let evs = events_until(&host, &id, |e| has(e, "effect:error") && has(e, "toast")).await;
    let err = evs.iter().find(|(k, _)| k == "effect:error").unwrap();
    let msg = err.1["data"]["error"].as_str().unwrap();
    assert!(
        msg.contains("plugin webhook@0.1.0") && msg.contains("loopback address"),
        "{msg}"
    );
    let toast = evs.iter().find(|(k, _)| k == "toast").unwrap();
    assert_eq!(toast.1["data"]["text"], "failed: kaput (attempt 1)");
    assert!(rx.got("/hook").is_empty());
    assert_eq!(
        get_task(&host, &id).await["status"],
        "failed",
        "the outcome is unchanged"
    );

    // An unknown effect is refused at submission, naming it and the loaded ones.
    let (status, body) = submit(
        &host,
        &json!({"type": "builtin.echo", "onSuccess": [{"$event": "fireworks"}]}),
    )
    .await;
    assert_eq!(status, 422);
    let m = body["error"]["details"][0]["message"].as_str().unwrap();
    assert!(
        m.contains("unknown effect \"fireworks\"") && m.contains("toast") && m.contains("webhook"),
        "{m}"
    );
}

/// A plugin dir with the test plugins, plus variants the test needs.
fn hostile_dir() -> tempfile::TempDir {
    let src = dist("dist-testing");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let manifest = |name: &str, wasm: &str, world: &str, http: Value| {
        json!({"name": name, "version": "0.1.0", "world": world, "wasm": wasm,
               "provides": {"effects": [name]}, "permissions": {"http": http},
               "limits": {"memoryMb": 16, "timeoutMs": 3000}})
    };
    let write =
        |file: &str, v: Value| std::fs::write(dir.path().join(file), v.to_string()).unwrap();
    write(
        "sneaky-open.json",
        manifest(
            "sneaky-open",
            "sneaky.wasm",
            "dwa:plugin/effect-handler@0.1.0",
            json!(["*"]),
        ),
    );
    write(
        "future.json",
        manifest(
            "future",
            "noop.wasm",
            "dwa:plugin/effect-handler@0.2.0",
            json!([]),
        ),
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_alone_and_the_host_carries_on() {
    let rx = Receiver::start(0).await;
    let dir = hostile_dir();
    let (_d, host) = start_with_plugins(dir.path(), &[("DWA_HTTP_ALLOW", "localhost".into())]);

    // The incompatible world version is refused at load, with a clear message.
    let plugins: Value = get_json(&host, "/api/plugins").await;
    let names = plugin_names(&plugins);
    assert!(!names.iter().any(|x| x == "future"), "{names:?}");
    let errors = plugins["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e.as_str().unwrap().contains(
            "plugin future targets dwa:plugin@0.2.0, but this host implements dwa:plugin@0.1.0"
        )),
        "{errors:?}"
    );

    let p = rx.port;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"$event": "spin"}),
            "stopped after its time limit of 300 ms",
        ),
        (
            json!({"$event": "membomb"}),
            "stopped for exceeding its memory limit of 8 MiB",
        ),
        (
            json!({"$event": "panic"}),
            "trapped: wasm trap: wasm `unreachable` instruction executed (stderr: hostile plugin panics on purpose",
        ),
        (json!({"$event": "snoop"}), "file access denied"),
        (
            json!({"$event": "sneaky", "url": "http://evil.example/steal"}),
            "capability http:evil.example is not granted to plugin sneaky@0.1.0 (its manifest asks for: allowed.example)",
        ),
        (
            json!({"$event": "sneaky-open", "url": format!("http://127.0.0.1:{p}/x")}),
            "(127.0.0.1) refused: loopback address",
        ),
        (
            json!({"$event": "sneaky-open", "url": "http://169.254.169.254/latest/meta-data/"}),
            "refused: cloud metadata address",
        ),
        (
            json!({"$event": "sneaky-open", "url": format!("http://localhost:{p}/to-secret")}),
            "redirect to http://127.0.0.1",
        ),
    ];
    for (effect, want) in cases {
        let id = submit_ok(
            &host,
            &json!({"type": "builtin.echo", "onSuccess": [effect]}),
        )
        .await;
        assert_eq!(wait_done(&host, &id).await["status"], "completed");
        let evs = events_until(&host, &id, |e| has(e, "effect:error")).await;
        let msg = evs.iter().find(|(k, _)| k == "effect:error").unwrap().1["data"]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            msg.contains(want),
            "{effect}: {msg:?} does not contain {want:?}"
        );
        assert!(
            msg.starts_with("plugin "),
            "the error names the plugin: {msg}"
        );
    }
    // The redirect's first hop (allowed by name) was made; the redirect target never was.
    assert_eq!(rx.got("/to-secret").len(), 1);
    assert!(rx.got("/secret").is_empty());
    assert!(rx.got("/x").is_empty());

    // After all that, the host serves and a well-behaved plugin works.
    let h = client().get(host.url("/health")).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let id = submit_ok(&host, &json!({"type": "builtin.echo", "onSuccess": [{"$event": "noop"}, {"$event": "sneaky-open", "url": format!("http://localhost:{p}/fine")}]})).await;
    assert_eq!(wait_done(&host, &id).await["status"], "completed");
    rx.wait("/fine", 1).await;
    let evs = events_until(&host, &id, |e| has(e, "pipeline:complete")).await;
    assert!(!has(&evs, "effect:error"), "{evs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_progress_fires_throttled_and_always_at_completion() {
    on_progress_fires_on(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_on_progress_fires_throttled_and_always_at_completion() {
    // The Redis store tells the engine a completion's progress in the
    // script's reply, not through the events: the same firings must follow.
    let redis = dwa_store::testing::RedisServer::start();
    on_progress_fires_on(&[("REDIS_URL", redis.url())]).await;
}

async fn on_progress_fires_on(store: &[(&str, String)]) {
    // A window far longer than the task: however slow this machine is, the
    // throttle lets exactly the first firing and completion through.
    let mut env = vec![("DWA_PROGRESS_THROTTLE_MS", "600000".to_string())];
    env.extend(store.iter().cloned());
    let (_d, host) = start_with_plugins(&dist("dist"), &env);
    let id = submit_ok(
        &host,
        &json!({
            "type": "p",
            "steps": [{"task": "builtin.echo"}, {"task": "builtin.echo"}, {"task": "builtin.echo"}, {"task": "builtin.echo"}],
            "onProgress": [{"$event": "emit", "event": "progress", "data": {"pct": "{{progress}}", "of": "{{payload}}"}}]
        }),
    )
    .await;
    assert_eq!(wait_done(&host, &id).await["status"], "completed");
    let fired = |pct: f64| {
        move |e: &[(String, Value)]| {
            e.iter()
                .any(|(k, v)| k == "progress" && v["data"]["pct"] == json!(pct))
        }
    };
    let evs = events_until(&host, &id, |e| fired(25.0)(e) && fired(100.0)(e)).await;
    let mut pcts: Vec<f64> = evs
        .iter()
        .filter(|(k, _)| k == "progress")
        .map(|(_, v)| v["data"]["pct"].as_f64().unwrap())
        .collect();
    pcts.sort_by(f64::total_cmp);
    // Four steps (25, 50, 75, 100 %): the first firing, then nothing inside
    // the window but completion.
    assert_eq!(pcts, vec![25.0, 100.0]);
    assert!(!pcts.is_empty() && pcts.len() <= 4, "{pcts:?}");
    assert!(pcts.contains(&100.0));
    assert!(!has(&evs, "effect:error"), "{evs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_hot_reload_and_a_broken_rebuild_keeps_the_old_one() {
    // The toast component under other names: a call shows as a toast event.
    let plugins_dir = dist("dist");
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, version: &str, world: &str| {
        std::fs::copy(
            plugins_dir.join("toast.wasm"),
            dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
        let m = json!({"name": name, "version": version, "world": world,
                       "provides": {"effects": [name]}, "limits": {"timeoutMs": 1000}});
        std::fs::write(dir.path().join(format!("{name}.json")), m.to_string()).unwrap();
    };
    put("first", "0.1.0", "dwa:plugin/effect-handler@0.1.0");
    let (_d, host) = start_with_plugins(dir.path(), &[("DWA_PLUGIN_WATCH_MS", "50".into())]);
    let plugins = || async {
        let v: Value = get_json(&host, "/api/plugins").await;
        v
    };
    let version_of = |v: &Value, name: &str| {
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["version"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        version_of(&plugins().await, "first").as_deref(),
        Some("0.1.0")
    );
    let (status, _) = submit(
        &host,
        &json!({"type": "builtin.echo", "onSuccess": [{"$event": "late"}]}),
    )
    .await;
    assert_eq!(status, 422, "not loaded yet");

    // A new plugin appears, without a restart.
    put("late", "0.1.0", "dwa:plugin/effect-handler@0.1.0");
    let deadline = tokio::time::Instant::now() + WAIT;
    while version_of(&plugins().await, "late").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new plugin was never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let id = submit_ok(
        &host,
        &json!({"type": "builtin.echo", "onSuccess": [{"$event": "late"}]}),
    )
    .await;
    let evs = events_until(&host, &id, |e| has(e, "pipeline:complete")).await;
    assert!(!has(&evs, "effect:error"));

    // A rebuild replaces it.
    put("first", "0.2.0", "dwa:plugin/effect-handler@0.1.0");
    let deadline = tokio::time::Instant::now() + WAIT;
    while version_of(&plugins().await, "first").as_deref() != Some("0.2.0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuilt plugin never replaced the old one"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    // A broken rebuild keeps the previous version serving and says why.
    put("first", "0.3.0", "dwa:plugin/effect-handler@0.9.0");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = plugins().await;
        let errs = v["errors"].as_array().unwrap();
        if errs
            .iter()
            .any(|e| e.as_str().unwrap().contains("targets dwa:plugin@0.9.0"))
        {
            assert_eq!(
                version_of(&v, "first").as_deref(),
                Some("0.2.0"),
                "the old version keeps serving"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken rebuild was never reported: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let id = submit_ok(
        &host,
        &json!({"type": "builtin.echo", "onSuccess": [{"$event": "first"}]}),
    )
    .await;
    let evs = events_until(&host, &id, |e| has(e, "pipeline:complete")).await;
    assert!(!has(&evs, "effect:error"));

    // Removing a manifest unloads its plugin.
    std::fs::remove_file(dir.path().join("late.json")).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while version_of(&plugins().await, "late").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed plugin stayed loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (status, _) = submit(
        &host,
        &json!({"type": "builtin.echo", "onSuccess": [{"$event": "late"}]}),
    )
    .await;
    assert_eq!(status, 422);
}

/// An engine run in this process on the embedded store behind a
/// [`Flaky`](dwa_store::testing::Flaky) wrapper, with the webhook plugin,
/// so that a store failure can be made to land exactly on an effect's reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_ride_out_store_failures_while_reading_the_task() {
    use dwa_core::catalog::Catalog;
    use dwa_engine::engine::{Engine, EngineConfig};
    use dwa_engine::executor::Executor;
    use dwa_plugins::{PluginConfig, Plugins};
    use dwa_store::sqlite::SqliteStore;
    use dwa_store::testing::Flaky;

    let rx = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let only_webhook = dir.path().join("plugins");
    std::fs::create_dir_all(&only_webhook).unwrap();
    for f in ["webhook.wasm", "webhook.json"] {
        std::fs::copy(dist("dist").join(f), only_webhook.join(f)).unwrap();
    }
    let plugins = Arc::new(
        Plugins::new(&PluginConfig {
            dir: only_webhook.clone(),
            cache_dir: Some(repo().join("target/dwa-test-plugin-cache")),
            http_allow: "127.0.0.1".into(),
            policy_file: None,
            work_dir: dir.path().join("work"),
        })
        .unwrap(),
    );
    let report = {
        let p = plugins.clone();
        tokio::task::spawn_blocking(move || p.load_dir(&only_webhook))
            .await
            .unwrap()
    };
    assert_eq!(report.loaded.len(), 1, "{:?}", report.errors);
    let flaky = Arc::new(Flaky::new(Arc::new(
        SqliteStore::open(&dir.path().join("data")).unwrap(),
    )));
    let mut catalog = Catalog::with_builtins();
    catalog.set_plugins(plugins.provides());
    let engine = Engine::new(
        flaky.clone(),
        catalog,
        Executor::new(Vec::new()).with_plugins(plugins.clone()),
        EngineConfig::default(),
        Some(plugins),
    );
    engine.start().await.unwrap();

    // Only the effect reads the task's summary and its steps' results here:
    // both fail first, as while Redis restarts.
    flaky.fail_next("task_summary", 2);
    flaky.fail_next("step_results", 1);
    let spec = json!({
        "type": "p",
        "steps": [
            {"id": "a", "task": "builtin.echo", "input": {"n": 7}},
            {"id": "b", "task": "builtin.echo", "input": {"done": true}}
        ],
        "onSuccess": [{"$event": "webhook", "url": format!("{}/hook", rx.base),
                       "body": {"n": "{{steps.a.n}}", "done": "{{result.done}}"}}]
    });
    engine
        .submit_json(spec.to_string().as_bytes())
        .await
        .unwrap();
    let hook = &rx.wait("/hook", 1).await[0];
    assert_eq!(
        serde_json::from_slice::<Value>(&hook.body).unwrap(),
        json!({"n": 7, "done": true})
    );
    assert_eq!(
        flaky.tripped(),
        ["task_summary", "task_summary", "step_results"]
    );
    engine.shutdown(std::time::Duration::from_secs(1)).await;
}

/// The `data` of every event of `kind`.
fn data_of(evs: &[(String, Value)], kind: &str) -> Vec<Value> {
    evs.iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, v)| v["data"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_enqueues_itself_stops_at_the_lineage_limit() {
    let (_d, host) = start_with_plugins(&dist("dist"), &[("DWA_MAX_LINEAGE_DEPTH", "3".into())]);
    // Each task's onSuccess enqueues a copy of itself: the copy's payload is
    // the same payload, and its onSuccess the same list, read from it.
    let effects = json!([{"$event": "enqueue", "task": {
        "type": "builtin.echo", "payload": "{{payload}}", "onSuccess": "{{payload.effects}}"}}]);
    let mut id = submit_ok(
        &host,
        &json!({"type": "builtin.echo", "payload": {"effects": effects}, "onSuccess": effects}),
    )
    .await;
    let mut chain = vec![id.clone()];
    for _ in 0..3 {
        let evs = events_until(&host, &id, |e| has(e, "enqueued") || has(e, "effect:error")).await;
        let next = data_of(&evs, "enqueued");
        assert_eq!(
            next.len(),
            1,
            "task {} of the chain enqueues its copy: {evs:?}",
            chain.len()
        );
        id = next[0]["taskId"].as_str().unwrap().to_owned();
        chain.push(id.clone());
    }
    // The fourth task is three links down: its copy would be the fourth.
    let evs = events_until(&host, &id, |e| has(e, "effect:error")).await;
    assert!(!has(&evs, "enqueued"), "{evs:?}");
    let error = data_of(&evs, "effect:error")[0]["error"].to_string();
    assert!(
        error.contains("DWA_MAX_LINEAGE_DEPTH") && error.contains("is 4, over the limit of 3"),
        "{error}"
    );
    let all = get_json(&host, "/api/tasks?limit=100").await;
    assert_eq!(all["tasks"].as_array().map(Vec::len), Some(4), "{all:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_enqueues_at_most_the_fan_out_limit() {
    let (_d, host) =
        start_with_plugins(&dist("dist"), &[("DWA_MAX_ENQUEUES_PER_TASK", "3".into())]);
    let child = json!({"$event": "enqueue", "task": {"type": "builtin.echo"}});
    let id = submit_ok(
        &host,
        &json!({"type": "builtin.echo", "onSuccess": vec![child; 5]}),
    )
    .await;
    let evs = events_until(&host, &id, |e| {
        data_of(e, "enqueued").len() + data_of(e, "effect:error").len() == 5
    })
    .await;
    assert_eq!(data_of(&evs, "enqueued").len(), 3);
    for e in data_of(&evs, "effect:error") {
        let error = e["error"].to_string();
        assert!(error.contains("DWA_MAX_ENQUEUES_PER_TASK"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_http_goes_straight_to_its_target_whatever_the_proxy_variables_say() {
    // A "proxy" that only counts who connects: a request sent through it
    // would have its address, not the target's, checked by the host.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connects.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = proxy.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let rx = Receiver::start(0).await;
    let (_d, host) = start_with_plugins(
        &dist("dist"),
        &[
            ("DWA_HTTP_ALLOW", "127.0.0.1".into()),
            ("HTTP_PROXY", proxy_url.clone()),
            ("http_proxy", proxy_url.clone()),
            ("HTTPS_PROXY", proxy_url.clone()),
            ("ALL_PROXY", proxy_url),
        ],
    );
    let id = submit_ok(
        &host,
        &json!({"type": "builtin.echo", "payload": {"n": 1},
                "onSuccess": [{"$event": "webhook", "url": format!("{}/hook", rx.base)}]}),
    )
    .await;
    assert_eq!(wait_done(&host, &id).await["status"], "completed");
    assert_eq!(rx.wait("/hook", 1).await.len(), 1, "the webhook arrived");
    assert_eq!(
        connects.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing went through the proxy"
    );
}

/// A task whose onSuccess is a webhook to `rx`'s `path`.
fn hooked(rx: &Receiver, path: &str) -> Value {
    json!({"type": "builtin.echo", "payload": {"n": 1},
           "onSuccess": [{"$event": "webhook", "url": format!("{}{path}", rx.base)}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_due_when_the_host_was_killed_is_delivered_after_restart_once_with_its_id() {
    let rx = Receiver::start(0).await;
    let data = tempfile::tempdir().unwrap();
    let allow = ("DWA_HTTP_ALLOW", "127.0.0.1".to_string());
    // The host completes the task and dies before delivering its webhook
    // (the test hook keeps it from delivering at all).
    let mut a = start_plugins_in(
        data.path(),
        &dist("dist"),
        &[allow.clone(), ("DWA_TEST_HOLD_EFFECTS", "1".into())],
    );
    let id = submit_ok(&a, &hooked(&rx, "/hook")).await;
    assert_eq!(wait_done(&a, &id).await["status"], "completed");
    assert!(
        rx.got("/hook").is_empty(),
        "the held host delivered nothing"
    );
    a.kill9();
    // Restarted on the same store, the host finds the webhook due.
    let b = start_plugins_in(data.path(), &dist("dist"), &[allow]);
    delivered_once(&rx, &b, &id).await;
}

/// `rx` got task `id`'s webhook with its delivery id; a later task's webhook
/// through `host`'s outbox comes after it, and the first one was settled,
/// not delivered again.
async fn delivered_once(rx: &Receiver, host: &Host, id: &str) {
    let hook = &rx.wait("/hook", 1).await[0];
    assert_eq!(
        hook.headers["x-dwa-delivery"],
        format!("{id}:onSuccess:0").as_str()
    );
    let body: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(body["taskId"], id);
    let marker = submit_ok(host, &hooked(rx, "/marker")).await;
    assert_eq!(wait_done(host, &marker).await["status"], "completed");
    rx.wait("/marker", 1).await;
    assert_eq!(rx.got("/hook").len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_another_host_delivers_the_webhook_of_a_host_that_died() {
    let redis = dwa_store::testing::RedisServer::start();
    let rx = Receiver::start(0).await;
    let env = |name: &str, hold: bool| {
        let mut e = vec![
            ("REDIS_URL", redis.url()),
            ("DWA_HOST_NAME", name.to_owned()),
            ("DWA_HTTP_ALLOW", "127.0.0.1".to_string()),
        ];
        if hold {
            e.push(("DWA_TEST_HOLD_EFFECTS", "1".into()));
        }
        e
    };
    let (_a_dir, mut a) = start_with_plugins(&dist("dist"), &env("host-a", true));
    let id = submit_ok(&a, &hooked(&rx, "/hook")).await;
    assert_eq!(wait_done(&a, &id).await["status"], "completed");
    a.kill9();
    let (_b_dir, b) = start_with_plugins(&dist("dist"), &env("host-b", false));
    delivered_once(&rx, &b, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_tried_again_with_the_same_delivery_id() {
    // The receiver fails the first three calls to /flaky; the webhook
    // plugin retries a 5xx once itself, so the first delivery (two calls)
    // fails and the outbox's second, a second later, gets through.
    let rx = Receiver::start(3).await;
    let (_d, host) = start_with_plugins(&dist("dist"), &[("DWA_HTTP_ALLOW", "127.0.0.1".into())]);
    let id = submit_ok(&host, &hooked(&rx, "/flaky")).await;
    let got = rx.wait("/flaky", 4).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["x-dwa-delivery"].to_str().unwrap_or(""))
        .collect();
    assert!(
        ids.iter().all(|d| *d == format!("{id}:onSuccess:0")),
        "{ids:?}"
    );
    let evs = events_until(&host, &id, |e| has(e, "effect:error")).await;
    let err = evs.iter().find(|(k, _)| k == "effect:error").unwrap();
    assert_eq!(err.1["data"]["attempt"], 1, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueued_task_with_an_idempotency_key_is_made_once_however_often_it_is_delivered() {
    let (_d, host) = start_with_plugins(&dist("dist"), &[]);
    let child = json!({"$event": "enqueue", "task": {
        "type": "builtin.echo", "idempotencyKey": "child-of-{{payload.n}}"}});
    let id = submit_ok(
        &host,
        &json!({"type": "builtin.echo", "payload": {"n": 7}, "onSuccess": [child.clone(), child]}),
    )
    .await;
    let evs = events_until(&host, &id, |e| data_of(e, "enqueued").len() == 2).await;
    let made = data_of(&evs, "enqueued");
    assert_eq!(made[0]["taskId"], made[1]["taskId"], "the same task twice");
    let all = get_json(&host, "/api/tasks?limit=10").await;
    assert_eq!(all["tasks"].as_array().map(Vec::len), Some(2), "{all:#}");
}

/// A folder holding one first-party plugin, and plugin hosts on it with an
/// artifact cache of the test's choosing.
struct OnePlugin {
    dir: tempfile::TempDir,
    plugins: std::path::PathBuf,
}

impl OnePlugin {
    fn new(name: &str) -> OnePlugin {
        OnePlugin::from_dist("dist", name)
    }

    /// One plugin of `plugins/<folder>` (`dist`, or `dist-testing`).
    fn from_dist(folder: &str, name: &str) -> OnePlugin {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for ext in ["wasm", "json"] {
            let f = format!("{name}.{ext}");
            std::fs::copy(dist(folder).join(&f), plugins.join(&f)).unwrap();
        }
        OnePlugin { dir, plugins }
    }

    /// A plugin host with `cache` (not yet loaded).
    fn host(&self, cache: &std::path::Path) -> dwa_plugins::Plugins {
        dwa_plugins::Plugins::new(&dwa_plugins::PluginConfig {
            dir: self.plugins.clone(),
            cache_dir: Some(cache.to_owned()),
            http_allow: String::new(),
            policy_file: None,
            work_dir: self.dir.path().join("work"),
        })
        .unwrap()
    }

    /// A folder of the test's own.
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// A component missing from the artifact cache is compiled by a child
/// process (`dwa __compile-plugin`, as `dwa serve` runs it), whose artifact
/// later loads map; a compiler that fails leaves the host compiling it itself.
#[test]
fn a_missing_artifact_is_compiled_by_a_child_and_a_failed_child_falls_back() {
    let one = OnePlugin::new("toast");
    let only_toast = one.plugins.clone();
    let host = |cache: &std::path::Path| one.host(cache);
    let artifacts = |cache: &std::path::Path| {
        std::fs::read_dir(cache)
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    // The child leaves a mark, so that the compile is seen to happen there.
    let marker = one.path("compiled-by-child");
    let script = format!(
        "echo ran >> '{}' && exec '{}' __compile-plugin \"$@\"",
        marker.display(),
        env!("CARGO_BIN_EXE_dwa")
    );
    let cache = one.path("cache");
    let p = host(&cache).with_compiler(vec!["sh".into(), "-c".into(), script.into(), "sh".into()]);
    let report = p.load_dir(&only_toast);
    assert_eq!(report.loaded, ["toast@0.1.0"], "{:?}", report.errors);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    assert_eq!(artifacts(&cache), 1, "the child wrote the artifact");
    assert!(!p.list()[0].from_cache);
    // A later host maps it.
    let again = host(&cache);
    assert!(again.load_dir(&only_toast).errors.is_empty());
    assert!(again.list()[0].from_cache);

    let fresh = one.path("fresh");
    let p = host(&fresh).with_compiler(vec!["false".into()]);
    let report = p.load_dir(&only_toast);
    assert_eq!(report.loaded, ["toast@0.1.0"], "{:?}", report.errors);
    assert_eq!(artifacts(&fresh), 1, "compiled here and cached");
}

/// Loading sweeps the artifact cache of what no load used for a week:
/// rebuilt plugins' old artifacts go, the one just mapped stays however old
/// it was, and files that are not artifacts are left alone.
#[test]
fn artifacts_no_load_used_for_a_week_are_swept() {
    use dwa_plugins::UNUSED_ARTIFACT_TTL;
    use std::time::{Duration, SystemTime};

    let one = OnePlugin::new("toast");
    let cache = one.path("cache");
    let load = || {
        let p = one.host(&cache);
        let report = p.load_dir(&one.plugins);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        p
    };
    load();
    let toast: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(toast.len(), 1);
    let long_ago = SystemTime::now() - UNUSED_ARTIFACT_TTL - Duration::from_secs(3600);
    let age = |path: &std::path::Path, when: SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    for (name, when) in [
        ("rebuilt-long-ago.cwasm", long_ago),
        ("crashed-compile.cwasm.tmp-7", long_ago),
        (
            "used-yesterday.cwasm",
            SystemTime::now() - Duration::from_secs(86_400),
        ),
        ("notes.txt", long_ago),
    ] {
        std::fs::write(cache.join(name), b"x").unwrap();
        age(&cache.join(name), when);
    }
    age(&toast[0], long_ago);
    assert!(load().list()[0].from_cache, "mapped, not compiled again");
    let mut left: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let toast_name = toast[0].file_name().unwrap().to_string_lossy().into_owned();
    let mut want = vec![
        toast_name,
        "notes.txt".to_owned(),
        "used-yesterday.cwasm".to_owned(),
    ];
    want.sort();
    assert_eq!(left, want);
}

/// A host that loads lazily maps a cached plugin at its first call (its
/// names are known from the start), and a cached artifact that went bad
/// fails that call with a message saying so, not the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazily_loaded_plugin_is_mapped_at_its_first_call() {
    use serde_json::json;

    let one = OnePlugin::new("codec");
    let only_codec = one.plugins.clone();
    let cache = one.path("cache");
    let host = || one.host(&cache).lazily();
    // Nothing cached yet: compiled (and checked) at load, lazily or not.
    let first = host();
    assert!(first.load_dir(&only_codec).errors.is_empty());
    assert!(!first.list()[0].from_cache);
    let p = host();
    assert!(p.load_dir(&only_codec).errors.is_empty());
    assert!(p.list()[0].from_cache);
    assert!(p.provides().functions.contains_key("base64"));
    let out = p
        .call_function("base64", &json!("hi"), &[], "t1")
        .await
        .unwrap();
    assert_eq!(out, json!("aGk="));

    // The artifact is replaced by garbage after the load (renamed over it:
    // a file mapped by a host must never be truncated in place, which is
    // why the cache itself only ever renames): the first call says so.
    drop((first, p));
    let broken = host();
    assert!(broken.load_dir(&only_codec).errors.is_empty());
    for e in std::fs::read_dir(&cache).unwrap() {
        let path = e.unwrap().path();
        let tmp = path.with_extension("garbage");
        std::fs::write(&tmp, b"not an artifact").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let err = broken
        .call_function("base64", &json!("hi"), &[], "t1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot load its cached component"), "{err}");
}

/// A pure plugin's instance (manifest `"pure": true`) is called again
/// within its task, never for another task: the counter plugin counts its
/// calls in a global, so a count shows which calls shared an instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pure_plugins_instance_serves_one_task_and_never_another() {
    let one = OnePlugin::from_dist("dist-testing", "counter");
    let cache = one.path("cache");
    let p = one.host(&cache);
    assert!(p.load_dir(&one.plugins).errors.is_empty());
    let calls = |task: &'static str| {
        let p = &p;
        async move {
            p.call_function("calls", &serde_json::json!(null), &[], task)
                .await
                .unwrap()
        }
    };
    assert_eq!(calls("a").await, 1);
    assert_eq!(
        calls("a").await,
        2,
        "task a's second call reuses its instance"
    );
    assert_eq!(calls("b").await, 1, "task b never gets task a's instance");
    assert_eq!(calls("a").await, 3);
    assert_eq!(calls("b").await, 2);

    // Not declared pure: a fresh instance for every call.
    let manifest = one.plugins.join("counter.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"pure\": true", "\"pure\": false")).unwrap();
    let p = one.host(&cache);
    assert!(p.load_dir(&one.plugins).errors.is_empty());
    for _ in 0..2 {
        let n = p
            .call_function("calls", &serde_json::json!(null), &[], "a")
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
