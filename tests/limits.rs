//! The host's limits, end to end (docs/configuration.md, "Limits"): at
//! each limit a task runs; one past it is refused (422 at submission, or
//! the step fails when the value is only known while running) with the
//! limit's variable named; the host stays up and answers `/health`
//! meanwhile; absurd settings stop the host at start. And the API's
//! contract around them: every refusal is the JSON error body, and the
//! served OpenAPI document states what the host enforces.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A host on the fake backend with small limits, so that each is reached
/// by a small task.
fn start_small(fake: &Fake, extra: &[(&str, String)]) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("LOCAL_BACKEND_URL", fake.base.clone()),
        ("DWA_MAX_STEPS", "20".into()),
        ("DWA_MAX_JSON_DEPTH", "8".into()),
        ("DWA_MAX_FOREACH_ITEMS", "5".into()),
        ("DWA_MAX_TASK_ITEMS", "8".into()),
        ("DWA_MAX_INPUT_BYTES", "10000".into()),
        ("DWA_MAX_RESULT_BYTES", "6000".into()),
    ];
    env.extend(extra.iter().cloned());
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    (dir, host)
}

fn chain(n: usize) -> Value {
    let steps: Vec<Value> = (0..n).map(|_| json!({"task": "builtin.echo"})).collect();
    json!({"type": "chain", "payload": {"v": 1}, "steps": steps})
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({"a": v});
    }
    v
}

/// Submits `task`, expects a 422 whose message names `var`.
async fn refused(host: &Host, task: &Value, var: &str) -> Value {
    let (status, body) = submit(host, task).await;
    assert_eq!(status, 422, "{body:#}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(var), "the refusal names {var}: {message}");
    body
}

/// Runs `task` to its end and expects it failed with an error naming `var`.
async fn fails_naming(host: &Host, task: &Value, var: &str) {
    let id = submit_ok(host, task).await;
    let t = wait_done(host, &id).await;
    assert_eq!(t["status"], "failed", "{t:#}");
    let error = t["error"].as_str().unwrap_or("");
    assert!(error.contains(var), "the failure names {var}: {error}");
}

async fn completes(host: &Host, task: &Value) -> Value {
    let id = submit_ok(host, task).await;
    let t = wait_done(host, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_lets_a_task_at_it_run_and_refuses_one_past_it_by_name() {
    let fake = Fake::start().await;
    let (_d, host) = start_small(&fake, &[]);

    // Steps per task.
    completes(&host, &chain(20)).await;
    let body = refused(&host, &chain(21), "DWA_MAX_STEPS").await;
    assert_eq!(body["error"]["details"][0]["field"], "steps");

    // Nesting of the payload ({"a": ...} eight deep is depth 8).
    completes(
        &host,
        &json!({"type": "builtin.echo", "payload": nested(8)}),
    )
    .await;
    refused(
        &host,
        &json!({"type": "builtin.echo", "payload": nested(9)}),
        "DWA_MAX_JSON_DEPTH",
    )
    .await;
    // Nesting of an input that templates build from a result.
    fails_naming(
        &host,
        &json!({"type": "p", "payload": nested(7), "steps": [
            {"id": "a", "task": "builtin.echo"},
            {"id": "b", "task": "builtin.echo", "input": {"x": {"y": "{{steps.a}}"}}}]}),
        "DWA_MAX_JSON_DEPTH",
    )
    .await;

    // forEach items per step: known at submission, and only while running.
    let each = |n: usize| {
        json!({"type": "p", "payload": {"list": vec![1; n]}, "steps": [
            {"id": "e", "task": "builtin.echo", "forEach": "{{payload.list}}"}]})
    };
    completes(&host, &each(5)).await;
    fails_naming(&host, &each(6), "DWA_MAX_FOREACH_ITEMS").await;
    refused(
        &host,
        &json!({"type": "p", "steps": [{"task": "builtin.echo", "forEach": vec![1; 6]}]}),
        "DWA_MAX_FOREACH_ITEMS",
    )
    .await;
    // ... and per task: 4 + 4 fit in 8, 5 + 4 do not.
    let two = |a: usize, b: usize| {
        json!({"type": "p", "payload": {"a": vec![1; a], "b": vec![2; b]}, "steps": [
            {"id": "x", "task": "builtin.echo", "forEach": "{{payload.a}}"},
            {"id": "y", "task": "builtin.echo", "dependsOn": ["x"], "forEach": "{{payload.b}}"}]})
    };
    completes(&host, &two(4, 4)).await;
    fails_naming(&host, &two(5, 4), "DWA_MAX_TASK_ITEMS").await;

    // Template expansion: ten copies of a 900-byte text fit in 10,000
    // bytes; twelve do not, and are refused before they are built.
    let copies = |n: usize| {
        let refs: Vec<Value> = (0..n).map(|_| json!("{{payload.text}}")).collect();
        json!({"type": "p", "payload": {"text": "t".repeat(900)}, "steps": [
            {"id": "c", "task": "builtin.echo", "input": {"copies": refs}}]})
    };
    completes(&host, &copies(5)).await;
    fails_naming(&host, &copies(12), "DWA_MAX_INPUT_BYTES").await;

    // Results: from a backend, read with a cap; from any executor, checked.
    completes(
        &host,
        &json!({"type": "big.result", "payload": {"bytes": 5000}}),
    )
    .await;
    fails_naming(
        &host,
        &json!({"type": "big.result", "payload": {"bytes": 7000}}),
        "DWA_MAX_RESULT_BYTES",
    )
    .await;
    fails_naming(
        &host,
        &json!({"type": "builtin.echo", "payload": {"text": "e".repeat(7000)}}),
        "DWA_MAX_RESULT_BYTES",
    )
    .await;

    // Still up, and still answering.
    let health = get_json(&host, "/health").await;
    assert_eq!(health["status"], "ok", "{health:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_queues_are_accepted_and_the_worker_cap_holds_whatever_clients_name() {
    let fake = Fake::start().await;
    let (_d, host) = start_small(
        &fake,
        &[
            ("WORKER_CONCURRENCY", "1".into()),
            ("DWA_QUEUES", "video:2".into()),
        ],
    );
    for q in ["mine", "default2", "x.y", "video-2"] {
        let body = refused(
            &host,
            &json!({"type": "gated", "queue": q, "payload": {}}),
            "DWA_QUEUES",
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("configured queues: default, gpu, video"),
            "{message}"
        );
    }
    let (status, body) = submit(
        &host,
        &json!({"type": "p", "steps": [{"task": "builtin.echo", "queue": "elsewhere"}]}),
    )
    .await;
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["error"]["details"][0]["field"], "steps[0].queue");
    // A configured queue runs with its own workers.
    peak_is_the_worker_cap(&host, &fake, "video", 2).await;
    let fake = Fake::start().await;
    let (_d, host) = start_small(&fake, &[("WORKER_CONCURRENCY", "1".into())]);
    peak_is_the_worker_cap(&host, &fake, "default", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_a_task_at_the_size_limits_is_planned() {
    // The largest task the default limits take: 1,000 steps, each reading
    // the first one's result, in a body near the 16 MB body limit.
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("LOCAL_BACKEND_URL", fake.base.clone())];
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    let pad = "p".repeat(15_000);
    // The first step waits at the fake backend's gate, so that what the
    // probes compete with is the planning, not the tasks running.
    let mut steps = vec![json!({"id": "s0", "task": "gated"})];
    for i in 1..1000 {
        steps.push(json!({"id": format!("s{i}"), "task": "builtin.echo",
            "dependsOn": [format!("s{}", i - 1)],
            "input": {"first": "{{steps.s0.v}}", "pad": pad}}));
    }
    let task = json!({"type": "big", "payload": {"v": 1}, "steps": steps});
    let body = task.to_string();
    assert!(body.len() > 14_000_000, "{}", body.len());
    // As many at once as the host has async workers: planned on them, these
    // would leave none for /health.
    let mut submitted = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (url, body) = (host.url("/api/tasks"), body.clone());
        submitted.spawn(async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let planning = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while submitted.len() == 2 {
        let started = Instant::now();
        let r = client().get(host.url("/health")).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()), "/health failed");
        slowest = slowest.max(started.elapsed());
        probes += 1;
        if let Some(done) = submitted.try_join_next() {
            assert_eq!(done.unwrap().ok(), Some(201));
            break;
        }
    }
    while let Some(done) = submitted.join_next().await {
        assert_eq!(done.unwrap().ok(), Some(201));
    }
    let planning = planning.elapsed();
    // Relative, not a fixed bound (the machine is shared with the other
    // tests): planned on the async workers, the submissions would hold
    // /health for about as long as they take; off them, probes keep
    // answering quickly all along.
    assert!(
        probes >= 3 && slowest * 3 < planning,
        "/health took {slowest:?} at worst over {probes} probes while two submissions took {planning:?}"
    );
}

#[test]
fn absurd_settings_stop_the_host_at_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, says) in [
        (
            "DWA_RETENTION_HOURS",
            "99999999999",
            "must be between 1 and 87600",
        ),
        ("WORKER_CONCURRENCY", "0", "must be between 1 and 10000"),
        ("DWA_MAX_STEPS", "1000000", "must be between 1 and 10000"),
        ("DWA_QUEUES", "default:3", "always there"),
        (
            "DWA_QUEUES",
            "video:0",
            "workers must be between 1 and 10000",
        ),
        ("DWA_QUEUES", "bad/name:2", "is not a queue name"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dwa"))
            .arg("serve")
            .env("PORT", "0")
            .env("DWA_HOST", "127.0.0.1")
            .env("DWA_DATA_DIR", dir.path())
            .env_remove("REDIS_URL")
            .env(var, value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A host that accepted the setting would serve forever: bounded.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{var}={value} did not stop the host within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{var}={value} started the host");
        assert!(
            stderr.contains(var) && stderr.contains(says),
            "{var}={value}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_appends_events_up_to_its_limit_then_one_capped_event() {
    let fake = Fake::start().await;
    let (_d, host) = start_small(&fake, &[("DWA_MAX_TASK_EVENTS", "10".into())]);
    let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    let t = completes(
        &host,
        &json!({"type": "stream.words", "payload": {"text": words.join(" ")}}),
    )
    .await;
    assert_eq!(
        t["result"],
        json!({"words": 30}),
        "the step's result is whole"
    );
    let events = read_events(&host.base, t["id"].as_str().unwrap_or("")).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    // step:start, nine chunks, the cap, then the task's own transitions.
    assert_eq!(
        kinds.iter().filter(|k| **k == "step:progress").count(),
        9,
        "{kinds:?}"
    );
    assert_eq!(kinds[10], "events:capped", "{kinds:?}");
    assert_eq!(events[10].1["data"], json!({"limit": 10}));
    assert_eq!(kinds.last(), Some(&"pipeline:complete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_limited_per_task_and_per_host_and_a_closed_one_frees_its_slot() {
    let fake = Fake::start().await;
    let (_d, host) = start_small(
        &fake,
        &[
            ("DWA_MAX_FOLLOWERS_PER_TASK", "2".into()),
            ("DWA_MAX_FOLLOWERS", "3".into()),
        ],
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit_ok(&host, &json!({"type": "gated", "payload": {"i": i}})).await);
    }
    let open = |id: &str| {
        let url = host.url(&format!("/api/tasks/{id}/events"));
        async move { client().get(url).send().await.unwrap() }
    };
    let first = open(&ids[0]).await;
    let second = open(&ids[0]).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open(&ids[0]).await;
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("DWA_MAX_FOLLOWERS_PER_TASK"), "{message}");
    let other = open(&ids[1]).await;
    assert_eq!(other.status(), 200);
    let over = open(&ids[2]).await;
    assert_eq!(over.status(), 429);
    let body: Value = over.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("(DWA_MAX_FOLLOWERS)"), "{message}");
    // A client that goes away gives its slot back (bounded wait: the host
    // notices a closed connection asynchronously).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open(&ids[2]).await;
        if again.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was not given back within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.open_gate();
    drop((second, other));
}

/// `v` with the value at JSON pointer `at` (parents must exist) set to `to`.
fn with(v: &Value, at: &str, to: Value) -> Value {
    let mut v = v.clone();
    let (parent, key) = at.rsplit_once('/').unwrap_or(("", at));
    match v.pointer_mut(parent) {
        Some(Value::Object(o)) => {
            o.insert(key.to_owned(), to);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>() {
                a[i] = to;
            }
        }
        _ => panic!("no {parent} in {v}"),
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_states_what_the_host_enforces_in_both_directions() {
    let fake = Fake::start().await;
    let (_d, host) = start_small(&fake, &[]);
    let doc = get_json(&host, "/openapi.json").await;
    assert_eq!(
        doc.pointer("/components/schemas/TaskSpec/properties/steps/maxItems"),
        Some(&json!(20)),
        "the document carries this host's DWA_MAX_STEPS"
    );
    let schema = json!({"$ref": "#/components/schemas/TaskSpec", "components": doc["components"]});
    let by_doc = jsonschema::validator_for(&schema).unwrap();
    let base = json!({"type": "p", "payload": {"v": 1}, "idempotencyKey": "k-1",
        "steps": [{"id": "a", "task": "builtin.echo", "queue": "default", "forEach": [1, 2],
                   "forEachConcurrency": 1, "retry": {"attempts": 2}, "resources": {"timeout": 10}}]});
    // Valid by the document: accepted.
    let valid = [
        base.clone(),
        with(&base, "/steps/0/forEach", json!("{{payload.list}}")),
        with(&base, "/steps/0/input", json!("{{payload}}")),
        with(&base, "/steps/0/retry/attempts", json!(100)),
        with(
            &base,
            "/steps",
            json!(vec![json!({"task": "builtin.echo"}); 20]),
        ),
    ];
    for (i, task) in valid.iter().enumerate() {
        assert!(by_doc.is_valid(task), "valid[{i}] by the document: {task}");
        let task = with(task, "/idempotencyKey", json!(format!("valid-{i}")));
        let (status, body) = submit(&host, &task).await;
        assert_eq!(status, 201, "valid[{i}] accepted: {body}");
    }
    // Invalid by the document, one constraint each: refused.
    let invalid = [
        with(&base, "/type", json!("")),
        with(&base, "/steps", json!([])),
        with(
            &base,
            "/steps",
            json!(vec![json!({"task": "builtin.echo"}); 21]),
        ),
        with(&base, "/steps/0/id", json!("12")),
        with(&base, "/steps/0/id", json!("bad id")),
        with(&base, "/steps/0/task", json!("")),
        with(&base, "/steps/0/queue", json!("a/b")),
        with(&base, "/steps/0/forEachConcurrency", json!(0)),
        with(&base, "/steps/0/retry/attempts", json!(0)),
        with(&base, "/steps/0/retry/attempts", json!(101)),
        with(&base, "/steps/0/retry/attempts", json!("3")),
        with(&base, "/steps/0/resources/timeout", json!(0)),
        with(&base, "/steps/0/resources/timeout", json!(604801)),
        with(&base, "/idempotencyKey", json!("")),
        with(&base, "/idempotencyKey", json!("has space")),
        with(&base, "/unknown", json!(1)),
        with(&base, "/steps/0/unknown", json!(1)),
        with(
            &base,
            "/onSuccess",
            json!(vec![json!({"$event": "toast"}); 65]),
        ),
    ];
    for (i, task) in invalid.iter().enumerate() {
        assert!(
            !by_doc.is_valid(task),
            "invalid[{i}] by the document: {task}"
        );
        let (status, body) = submit(&host, task).await;
        assert!(
            status == 400 || status == 422,
            "invalid[{i}] refused, got {status}: {body}"
        );
    }
    // The list's query string, by the parameters the document states.
    let list = &doc["paths"]["/api/tasks"]["get"]["parameters"];
    let param = |name: &str| {
        let p = list
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name));
        jsonschema::validator_for(&p.map_or(Value::Null, |p| p["schema"].clone())).unwrap()
    };
    let (limit, status) = (param("limit"), param("status"));
    for (query, doc_ok) in [
        ("limit=1", limit.is_valid(&json!(1))),
        ("limit=1000", limit.is_valid(&json!(1000))),
        ("limit=0", limit.is_valid(&json!(0))),
        ("limit=1001", limit.is_valid(&json!(1001))),
        ("status=completed", status.is_valid(&json!("completed"))),
        ("status=weird", status.is_valid(&json!("weird"))),
    ] {
        let r = client()
            .get(host.url(&format!("/api/tasks?{query}")))
            .send()
            .await
            .unwrap();
        let want = if doc_ok { 200 } else { 400 };
        assert_eq!(
            r.status().as_u16(),
            want,
            "{query}: the document says {doc_ok}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_the_json_error_body_query_strings_and_routes_included() {
    let fake = Fake::start().await;
    let (_d, host) = start_small(&fake, &[]);
    for (method, path, status, code) in [
        ("GET", "/api/tasks?limit=abc", 400, "invalid_query"),
        ("GET", "/api/tasks?limit=-1", 400, "invalid_query"),
        ("GET", "/no/such/route", 404, "no_route"),
        ("GET", "/api/no-such", 404, "no_route"),
        ("POST", "/health", 405, "no_route"),
        ("PUT", "/api/tasks", 405, "no_route"),
    ] {
        let r = client()
            .request(method.parse().unwrap(), host.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
    }
}
