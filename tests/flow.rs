//! Flow control, end to end: idempotent submissions (the `Idempotency-Key`
//! header or `idempotencyKey` field) on the embedded store across a
//! restart, and on Redis across two hosts; re-running a failed pipeline from
//! its failed step (`POST /api/tasks/:id/retry`) on both stores; waiting
//! steps and their signals; priorities ordering a queue's backlog;
//! schedules (flow/schedules.rs); branches and failure policies
//! (flow/branches.rs); concurrency keys and rate limits (flow/gates.rs);
//! sub-tasks (flow/subtasks.rs).

#[path = "flow/branches.rs"]
mod branches;
mod common;
#[path = "flow/gates.rs"]
mod gates;
#[path = "flow/schedules.rs"]
mod schedules;
#[path = "flow/subtasks.rs"]
mod subtasks;

use common::*;
use dwa_store::testing::RedisServer;
use serde_json::{Value, json};

/// Submits `task` (its JSON text as given) with an optional key header.
async fn post(host: &Host, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = client()
        .post(host.url("/api/tasks"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A host on `redis` named `name`, with its own data folder.
fn redis_host(redis: &RedisServer, name: &str) -> (tempfile::TempDir, Host) {
    redis_host_with(redis, name, &[])
}

/// [`redis_host`] with more environment.
fn redis_host_with(
    redis: &RedisServer,
    name: &str,
    more: &[(&'static str, String)],
) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("REDIS_URL", redis.url()),
        ("DWA_HOST_NAME", name.to_owned()),
    ];
    env.extend_from_slice(more);
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    (dir, host)
}

async fn task_count(host: &Host) -> usize {
    get_json(host, "/api/tasks?limit=100").await["tasks"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_submission_under_a_key_answers_the_first_task_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    let body = r#"{"type": "builtin.echo", "payload": {"order": 42}}"#;
    let (status, first) = post(&host, body, Some("order-42")).await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    // The same task, its JSON spaced differently: the same answer, 200.
    let respaced = r#"{ "type":"builtin.echo",   "payload":{ "order":42 } }"#;
    let (status, again) = post(&host, respaced, Some("order-42")).await;
    assert_eq!(
        (status, again["id"].as_str()),
        (200, Some(id.as_str())),
        "{again}"
    );
    // Another body under the same key is a conflict naming the key.
    let (status, other) = post(
        &host,
        r#"{"type": "builtin.echo", "payload": {"order": 43}}"#,
        Some("order-42"),
    )
    .await;
    assert_eq!(status, 409, "{other}");
    let message = other["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("order-42") && message.contains(&id),
        "{message}"
    );
    // The field works as the header does; the two must agree.
    let field = r#"{"type": "builtin.echo", "idempotencyKey": "by-field"}"#;
    let (status, by_field) = post(&host, field, None).await;
    assert_eq!(status, 201, "{by_field}");
    let (status, replay) = post(&host, field, None).await;
    assert_eq!((status, &replay["id"]), (200, &by_field["id"]));
    let (status, both) = post(&host, field, Some("something-else")).await;
    assert_eq!(status, 400, "{both}");
    assert_eq!(both["error"]["details"][0]["field"], "idempotencyKey");
    let (status, bad) = post(&host, body, Some(&"k".repeat(256))).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(
        task_count(&host).await,
        2,
        "only the first submissions made tasks"
    );
    assert_eq!(wait_done(&host, &id).await["status"], "completed");

    // Keys are kept with the tasks: a restarted host still answers them.
    host.terminate();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    let (status, after) = post(&host, body, Some("order-42")).await;
    assert_eq!(
        (status, after["id"].as_str()),
        (200, Some(id.as_str())),
        "{after}"
    );
    assert_eq!(after["status"], "completed", "the first task as it is now");
    assert_eq!(task_count(&host).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_redis_given_the_same_key_at_once_make_one_task() {
    let redis = RedisServer::start();
    let ((_a_dir, a), (_b_dir, b)) = (redis_host(&redis, "host-a"), redis_host(&redis, "host-b"));
    let body = r#"{"type": "builtin.echo", "payload": {"charge": "c-1"}}"#;
    for round in 0..20 {
        let key = format!("charge-{round}");
        let (ra, rb) = tokio::join!(post(&a, body, Some(&key)), post(&b, body, Some(&key)));
        let mut statuses = [ra.0, rb.0];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 201],
            "round {round}: one host made it, the other answered it"
        );
        assert_eq!(ra.1["id"], rb.1["id"], "round {round}: the same task");
    }
    assert_eq!(task_count(&a).await, 20);
}

/// POST /api/tasks/:id/retry with `body`: (status, answer).
async fn retry(host: &Host, id: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(host.url(&format!("/api/tasks/{id}/retry")))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A pipeline whose middle step fails while `payload.fails` is above 0, run
/// on `first`, then re-run on `again` (the same host, or another on Redis)
/// with a payload that lets it pass.
async fn a_failed_pipeline_reruns_from_its_failed_step(first: &Host, again: &Host) {
    let body = r#"{"type": "rerun", "payload": {"fails": 5},
        "steps": [
            {"id": "a", "task": "builtin.echo", "input": {"v": 1}},
            {"id": "b", "task": "builtin.fail", "dependsOn": ["a"], "retry": {"attempts": 1},
             "input": {"message": "down", "failAttempts": "{{payload.fails}}", "v": "{{steps.a.v}}"}},
            {"id": "c", "task": "builtin.echo", "dependsOn": ["b"], "input": {"b": "{{steps.b.input.v}}"}}
        ]}"#;
    let (status, created) = post(first, body, None).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let t = wait_done(first, &id).await;
    assert_eq!(t["status"], "failed", "{t:#}");
    let steps = |t: &Value| -> Vec<String> {
        t["stepStatus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(steps(&t), ["completed", "failed", "skipped"]);

    // A body that is not {"payload": ...} is refused; nothing changes.
    let (status, bad) = retry(again, &id, r#"{"payload": {}, "extra": 1}"#).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(get_task(again, &id).await["status"], "failed");

    let (status, resumed) = retry(again, &id, r#"{"payload": {"fails": 0}}"#).await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["id"], json!(id), "the same task");
    let t = wait_done(again, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(steps(&t), ["completed", "completed", "completed"]);
    assert_eq!(t["finalResult"], json!({"b": 1}), "b read a's kept result");
    // a ran once; the run's number is in the events.
    // Both runs' events, in one stream that goes on past the first run's
    // end: the Rust client follows it to the last run's.
    let mut evs: Vec<(String, Value)> = Vec::new();
    dwa_client::Client::new(&again.base)
        .follow(&id, |e| {
            evs.push((e.kind.clone(), json!({"stepId": e.step_id, "data": e.data})))
        })
        .await
        .unwrap();
    assert_eq!(
        evs.iter().filter(|(k, _)| k == "pipeline:complete").count(),
        2,
        "{evs:?}"
    );
    let starts: Vec<&str> = evs
        .iter()
        .filter(|(k, _)| k == "step:start")
        .map(|(_, v)| v["stepId"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["a", "b", "b", "c"], "a is not run again");
    let rerun = evs
        .iter()
        .find(|(k, _)| k == "task:retry")
        .expect("a task:retry event");
    assert_eq!(
        rerun.1["data"],
        json!({"run": 2, "steps": ["b", "c"], "payloadChanged": true})
    );

    // Only a failed or cancelled task runs again.
    let (status, done) = retry(again, &id, "").await;
    assert_eq!(status, 409, "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{done}"
    );
    let (status, missing) = retry(again, "no-such-task", "").await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pipeline_reruns_from_its_failed_step_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    a_failed_pipeline_reruns_from_its_failed_step(&host, &host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pipeline_reruns_from_its_failed_step_on_another_host_on_redis() {
    let redis = RedisServer::start();
    let ((_a_dir, a), (_b_dir, b)) = (redis_host(&redis, "host-a"), redis_host(&redis, "host-b"));
    a_failed_pipeline_reruns_from_its_failed_step(&a, &b).await;
}

/// POST `path` on `host` with a JSON `body`: (status, answer).
async fn post_json(host: &Host, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(host.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A pipeline that waits for an approval between two steps: parked on
/// `first`, its signed link used on `again` (another host on Redis).
async fn a_wait_step_resumes_on_its_signal_or_fails_on_its_timeout(first: &Host, again: &Host) {
    let task = json!({"type": "approval", "steps": [
        {"id": "a", "task": "builtin.echo", "input": {"v": 1}},
        {"id": "approve", "task": "builtin.wait", "dependsOn": ["a"],
         "input": {"name": "approval", "timeout": 60000}},
        {"id": "c", "task": "builtin.echo", "dependsOn": ["approve"],
         "input": {"approved": "{{steps.approve.ok}}", "by": "{{steps.approve.by}}"}}
    ]});
    let id = submit_ok(first, &task).await;
    let t = wait_until(first, &id, "the wait step waiting", |t| {
        t["stepStatus"][1]["status"] == "waiting"
    })
    .await;
    assert_eq!(t["status"], "active", "{t:#}");
    let evs = events_until(first, &id, |evs| evs.iter().any(|(k, _)| k == "step:wait")).await;
    let wait = &evs.iter().find(|(k, _)| k == "step:wait").unwrap().1;
    assert_eq!(wait["stepId"], "approve");
    assert_eq!(wait["data"]["name"], "approval");
    assert_eq!(wait["data"]["timeoutMs"], 60000);
    let link = wait["data"]["signalUrl"].as_str().unwrap().to_owned();
    assert!(link.starts_with("/api/signals/"), "{link}");

    // A name the task does not wait for is refused, naming the ones it does.
    let (status, wrong) = post_json(
        again,
        &format!("/api/tasks/{id}/signal"),
        &json!({"name": "approvall", "payload": {}}),
    )
    .await;
    assert_eq!(status, 422, "{wrong}");
    assert!(
        wrong["error"]["message"]
            .as_str()
            .unwrap()
            .contains("approval"),
        "{wrong}"
    );
    // A forged link is not found.
    let (status, _) = post_json(again, &format!("{link}0"), &json!({})).await;
    assert_eq!(status, 404);

    // The signed link, on the other host: its body is the wait step's result.
    let (status, signalled) = post_json(again, &link, &json!({"ok": true, "by": "ann"})).await;
    assert_eq!(status, 200, "{signalled}");
    let t = wait_done(again, &id).await;
    assert_eq!(t["status"], "completed", "{t:#}");
    assert_eq!(t["finalResult"], json!({"approved": true, "by": "ann"}));
    let (status, again_used) = post_json(again, &link, &json!({})).await;
    assert_eq!(status, 409, "a link is good once: {again_used}");

    // By name, through the API; and a wait that nobody answers fails.
    let task = json!({"type": "approval", "steps": [
        {"id": "w", "task": "builtin.wait"},
        {"id": "late", "task": "builtin.wait", "dependsOn": ["w"], "input": {"timeout": 300}}
    ]});
    let id = submit_ok(first, &task).await;
    wait_until(first, &id, "w waiting", |t| {
        t["stepStatus"][0]["status"] == "waiting"
    })
    .await;
    let (status, by_name) = post_json(
        again,
        &format!("/api/tasks/{id}/signal"),
        &json!({"name": "w", "payload": [1, 2]}),
    )
    .await;
    assert_eq!(status, 200, "{by_name}");
    let t = wait_done(first, &id).await;
    assert_eq!(t["status"], "failed", "{t:#}");
    assert_eq!(t["stepResults"]["w"], json!([1, 2]));
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("no signal \"late\" came within 300 ms"),
        "{t:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_step_resumes_on_its_signal_or_fails_on_its_timeout_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    a_wait_step_resumes_on_its_signal_or_fails_on_its_timeout(&host, &host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_step_parked_on_one_host_is_signalled_through_another_on_redis() {
    let redis = RedisServer::start();
    let secret = [(
        "DWA_SIGNAL_SECRET",
        "a-secret-of-this-deployment".to_owned(),
    )];
    let (_a_dir, a) = redis_host_with(&redis, "host-a", &secret);
    let (_b_dir, b) = redis_host_with(&redis, "host-b", &secret);
    a_wait_step_resumes_on_its_signal_or_fails_on_its_timeout(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_link_needs_no_api_token_and_the_signal_endpoint_does() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DWA_API_TOKEN", "t0ken".to_owned())];
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    let (status, _) = post_json(&host, "/api/signals/not.a.link", &json!({})).await;
    assert_eq!(status, 404, "checked by its signature, not the token");
    let (status, _) = post_json(&host, "/api/tasks/x/signal", &json!({"name": "n"})).await;
    assert_eq!(status, 401);
}

/// Three tasks of priorities -5, 0 and 10, submitted in that order while
/// the queue's one worker is busy, start highest first once it is free.
async fn a_backlog_starts_by_priority(host: &Host) {
    let busy = json!({"type": "builtin.sleep", "payload": {"ms": 1_500}});
    let blocker = submit_ok(host, &busy).await;
    wait_until(host, &blocker, "to start", |t| t["status"] == "active").await;
    let mut ids = Vec::new();
    for p in [-5, 0, 10] {
        let task = json!({"type": "builtin.sleep", "priority": p, "payload": {"ms": 20}});
        ids.push(submit_ok(host, &task).await);
    }
    let last_created = get_task(host, &ids[2]).await["createdAt"].clone();
    let freed = wait_done(host, &blocker).await["completedAt"].clone();
    assert!(
        freed.as_str() > last_created.as_str(),
        "the three were submitted while the worker was busy (last created {last_created}, worker free at {freed}): the machine is too slow for this test's 1.5 s task"
    );
    let mut started = Vec::new();
    for id in &ids {
        let t = wait_done(host, id).await;
        assert_eq!(t["status"], "completed", "{t:#}");
        started.push(t["startedAt"].as_str().unwrap().to_owned());
    }
    assert!(
        started[2] < started[1] && started[1] < started[0],
        "priority 10 starts first, -5 last: started {started:?} for priorities [-5, 0, 10]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_starts_by_priority_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("WORKER_CONCURRENCY", "1".to_owned())];
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    a_backlog_starts_by_priority(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_starts_by_priority_on_redis() {
    let redis = RedisServer::start();
    let (_dir, host) = redis_host_with(&redis, "host-a", &[("WORKER_CONCURRENCY", "1".into())]);
    a_backlog_starts_by_priority(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_out_of_range_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    let task = json!({"type": "p", "priority": 5, "steps": [
        {"id": "a", "task": "builtin.echo", "priority": 1001}]});
    let (status, body) = submit(&host, &task).await;
    assert_eq!(status, 422, "{body}");
    let d = &body["error"]["details"][0];
    assert_eq!(d["field"], "steps[0].priority", "{body}");
    assert!(
        d["message"].as_str().unwrap().contains("-1000 to 1000"),
        "{body}"
    );
    let (status, body) = submit(&host, &json!({"type": "builtin.echo", "priority": 2.5})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("priority"), "{body}");
}
