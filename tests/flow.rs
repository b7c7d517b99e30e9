//! Flow control, end to end: idempotent submissions (the `Idempotency-Key`
//! header or `idempotencyKey` field) on the embedded store across a
//! restart, and on Redis across two hosts.

mod common;

use common::*;
use dwa_store::testing::RedisServer;
use serde_json::Value;

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
    let start = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("REDIS_URL", redis.url()),
            ("DWA_HOST_NAME", name.to_owned()),
        ];
        let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
        (dir, host)
    };
    let (_a_dir, a) = start("host-a");
    let (_b_dir, b) = start("host-b");
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
