//! Schedules over HTTP: each tick runs once on the embedded store and
//! across two hosts on Redis, a schedule outlives a restart, and bad ones
//! are refused naming the field.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::*;
use super::{post_json, redis_host, task_count};
use dwa_store::testing::RedisServer;

/// A cron expression that ticks on the five seconds starting three seconds
/// from now (in every minute: the next round is a minute away, long after
/// the test ends).
fn five_ticks_soon() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seconds: Vec<String> = (0..5).map(|i| ((now + 3 + i) % 60).to_string()).collect();
    format!("{} * * * * *", seconds.join(","))
}

/// Reads the schedule from `hosts` in turn until `pred` holds (bounded).
async fn wait_schedule(
    hosts: &[&Host],
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut turn = 0;
    loop {
        let v = get_json(hosts[turn % hosts.len()], &format!("/api/schedules/{id}")).await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "schedule {id} did not get {what} within 30 s: {v:#}"
        );
        turn += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Five ticks of a schedule created on the first host, with every host
/// firing: five tasks, one per tick, each tick a second after the last.
async fn each_tick_runs_once(hosts: &[&Host]) {
    let (status, created) = post_json(
        hosts[0],
        "/api/schedules",
        &json!({"id": "five", "cron": five_ticks_soon(), "overlap": "allow",
                "task": {"type": "builtin.echo", "payload": {"from": "schedule"}}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["nextRunAt"].is_string(), "{created}");
    let v = wait_schedule(hosts, "five", "five runs", |v| {
        v["runs"].as_u64() >= Some(5)
    })
    .await;
    assert_eq!(v["runs"], 5, "{v:#}");
    let recent = v["recent"].as_array().cloned().unwrap_or_default();
    let ticks: Vec<i64> = recent
        .iter()
        .filter_map(|r| dwa_core::model::parse_rfc3339(r["tick"].as_str()?))
        .collect();
    assert_eq!(ticks.len(), 5, "{v:#}");
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1_000),
        "a tick lost or repeated: {ticks:?}"
    );
    let mut ids: Vec<&str> = recent.iter().filter_map(|r| r["taskId"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one task per tick: {v:#}");
    assert_eq!(task_count(hosts[0]).await, 5, "no task beyond one per tick");
    for id in ids {
        let done = wait_done(hosts[hosts.len() - 1], id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["result"]["from"], "schedule", "{done}");
    }
    let r = client()
        .delete(hosts[0].url("/api/schedules/five"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = client()
        .get(hosts[0].url("/api/schedules/five"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_of_a_schedule_runs_once_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    each_tick_runs_once(&[&host]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_of_a_schedule_runs_once_across_two_hosts_on_redis() {
    let redis = RedisServer::start();
    let ((_a_dir, a), (_b_dir, b)) = (redis_host(&redis, "host-a"), redis_host(&redis, "host-b"));
    each_tick_runs_once(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_outlives_a_restart_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    let body = json!({"id": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris",
                      "catchUp": "latest", "task": {"type": "builtin.echo", "payload": {}}});
    let (status, created) = post_json(&host, "/api/schedules", &body).await;
    assert_eq!(status, 201, "{created}");
    let (status, paused) = post_json(&host, "/api/schedules/nightly/pause", &json!({})).await;
    assert_eq!((status, &paused["paused"]), (200, &json!(true)), "{paused}");
    assert!(paused["nextRunAt"].is_null(), "{paused}");
    host.terminate();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    let list = get_json(&host, "/api/schedules").await;
    assert_eq!(
        list["schedules"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    let kept = &list["schedules"][0];
    assert_eq!(
        (
            &kept["id"],
            &kept["timezone"],
            &kept["catchUp"],
            &kept["paused"]
        ),
        (
            &json!("nightly"),
            &json!("Europe/Paris"),
            &json!("latest"),
            &json!(true)
        ),
        "{kept}"
    );
    let (status, resumed) = post_json(&host, "/api/schedules/nightly/resume", &json!({})).await;
    assert_eq!(status, 200, "{resumed}");
    // 03:00 in Paris is 01:00 or 02:00 UTC.
    let next = resumed["nextRunAt"].as_str().unwrap_or_default().to_owned();
    assert!(
        next.ends_with("T02:00:00.000Z") || next.ends_with("T01:00:00.000Z"),
        "{resumed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schedule_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| {
        Host::start(dir.path(), &[("DWA_MAX_SCHEDULES", "1".into())])
    });
    let task = json!({"type": "builtin.echo", "payload": {}});
    for (body, status, field) in [
        (json!({"cron": "every day", "task": task}), 400, "cron"),
        (
            json!({"cron": "0 3 * * *", "timezone": "Paris", "task": task}),
            400,
            "timezone",
        ),
        (
            json!({"cron": "0 3 * * *", "task": task, "catchUpLimit": 1000}),
            400,
            "catchUpLimit",
        ),
        (
            json!({"cron": "0 3 * * *", "task": task, "overlap": "queue"}),
            400,
            "overlap",
        ),
        (
            json!({"id": "a b", "cron": "0 3 * * *", "task": task}),
            400,
            "id",
        ),
        (
            json!({"cron": "0 3 * * *", "task": {"type": "nope", "payload": {}}}),
            422,
            "task.type",
        ),
        (
            json!({"cron": "0 3 * * *", "task": {"type": "builtin.echo", "runAt": "2030-01-01T00:00:00Z"}}),
            400,
            "task.runAt",
        ),
    ] {
        let (got, answer) = post_json(&host, "/api/schedules", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(
            answer["error"]["details"][0]["field"], field,
            "{body} -> {answer}"
        );
    }
    let ok = json!({"id": "one", "cron": "0 3 * * *", "task": task});
    assert_eq!(post_json(&host, "/api/schedules", &ok).await.0, 201);
    let (got, answer) = post_json(&host, "/api/schedules", &ok).await;
    assert_eq!(got, 409, "the id is taken: {answer}");
    let other = json!({"id": "two", "cron": "0 3 * * *", "task": task});
    let (got, answer) = post_json(&host, "/api/schedules", &other).await;
    assert_eq!(got, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("DWA_MAX_SCHEDULES")),
        "{answer}"
    );
    let r = client()
        .get(host.url("/api/schedules/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
