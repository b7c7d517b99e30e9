//! `GET /metrics` after a known workload, on both stores: tasks and steps
//! by outcome and queue, retries, durations by task and backend, workers,
//! and the store's queue depths.

use std::collections::BTreeMap;

use serde_json::json;

use super::common::*;
use super::start;
use dwa_store::testing::RedisServer;

type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of the Prometheus text.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((name.to_owned(), labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of series `name` with exactly these labels (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map_or(0.0, |s| s.2)
}

async fn scrape(host: &Host, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(host.url("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Three echoes, one task on the backend, one that fails after a retry,
/// one the backend refuses (HTTP 400, not retryable).
async fn the_metrics_count_a_known_workload(host: &Host) {
    let token = host.token.clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit_ok(host, &json!({"type": "builtin.echo", "payload": {"i": i}})).await);
    }
    ids.push(
        submit_ok(
            host,
            &json!({"type": "download.file", "payload": {"url": "https://x.example/a.mp4"}}),
        )
        .await,
    );
    ids.push(
        submit_ok(
            host,
            &json!({"type": "builtin.fail", "payload": {"failAttempts": 5},
                    "retry": {"attempts": 2, "backoff": "fixed", "delay": 10}}),
        )
        .await,
    );
    ids.push(submit_ok(host, &json!({"type": "reject", "payload": {}})).await);
    for id in &ids {
        wait_done(host, id).await;
    }
    let (status, _) = scrape(host, None).await;
    assert_eq!(status, 401, "the token guards /metrics as it guards /api");
    let (status, text) = scrape(host, token.as_deref()).await;
    assert_eq!(status, 200, "{text}");
    let s = parse(&text);
    let q = ("queue", "default");
    assert_eq!(value(&s, "dwa_tasks_submitted_total", &[q]), 6.0, "{text}");
    assert_eq!(
        value(
            &s,
            "dwa_tasks_finished_total",
            &[("status", "completed"), q]
        ),
        4.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "dwa_tasks_finished_total", &[("status", "failed"), q]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "dwa_steps_total", &[("outcome", "completed"), q]),
        4.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "dwa_steps_total", &[("outcome", "retried"), q]),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "dwa_steps_total", &[("outcome", "failed"), q]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&s, "dwa_step_retries_total", &[("task", "builtin.fail")]),
        1.0,
        "{text}"
    );
    let took = |task: &str, backend: &str| {
        value(
            &s,
            "dwa_step_duration_seconds_count",
            &[("backend", backend), ("task", task)],
        )
    };
    assert_eq!(took("builtin.echo", "builtin"), 3.0, "{text}");
    assert_eq!(took("download.file", "local"), 1.0, "{text}");
    assert_eq!(took("builtin.fail", "builtin"), 2.0, "{text}");
    assert_eq!(
        value(
            &s,
            "dwa_backend_errors_total",
            &[("backend", "local"), ("kind", "400")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(value(&s, "dwa_workers", &[q]), 5.0, "{text}");
    assert_eq!(value(&s, "dwa_steps_running", &[q]), 0.0, "{text}");
    assert!(
        value(&s, "dwa_store_seconds_count", &[("op", "record")]) >= 6.0,
        "{text}"
    );
    queue_depths_are_read_at_each_scrape(host).await;
}

/// The one worker of queue `slow` is held by a sleeping step: two tasks
/// wait behind it; a task due tomorrow is delayed.
async fn queue_depths_are_read_at_each_scrape(host: &Host) {
    let token = host.token.clone();
    let sleeper = submit_ok(
        host,
        &json!({"type": "builtin.sleep", "queue": "slow", "payload": {"ms": 60_000}}),
    )
    .await;
    wait_until(host, &sleeper, "the sleeper to hold the worker", |t| {
        t["startedAt"].is_string()
    })
    .await;
    let mut behind = Vec::new();
    for i in 0..2 {
        let t = json!({"type": "builtin.echo", "queue": "slow", "payload": {"i": i}});
        behind.push(submit_ok(host, &t).await);
    }
    let later = submit_ok(
        host,
        &json!({"type": "builtin.echo", "delay": 86_400_000, "payload": {}}),
    )
    .await;
    let (_, text) = scrape(host, token.as_deref()).await;
    let s = parse(&text);
    let slow = [("queue", "slow")];
    assert_eq!(value(&s, "dwa_queue_waiting_jobs", &slow), 2.0, "{text}");
    assert_eq!(value(&s, "dwa_queue_delayed_jobs", &slow), 0.0, "{text}");
    let age = value(&s, "dwa_queue_oldest_waiting_seconds", &slow);
    assert!(
        age > 0.0 && age < 60.0,
        "the head waits since its submission: {age}\n{text}"
    );
    let default = [("queue", "default")];
    assert_eq!(value(&s, "dwa_queue_waiting_jobs", &default), 0.0, "{text}");
    assert_eq!(value(&s, "dwa_queue_delayed_jobs", &default), 1.0, "{text}");

    // Emptied queues read 0 at the next scrape, not their last depth.
    for id in [&sleeper, &later] {
        let r = client()
            .delete(host.url(&format!("/api/tasks/{id}")))
            .bearer_auth(token.as_deref().unwrap_or_default())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "cancel {id}: {}", r.status());
    }
    for id in &behind {
        wait_done(host, id).await;
    }
    let (_, text) = scrape(host, token.as_deref()).await;
    let s = parse(&text);
    assert_eq!(value(&s, "dwa_queue_waiting_jobs", &slow), 0.0, "{text}");
    assert!(
        text.contains("dwa_queue_waiting_jobs{queue=\"slow\"} 0"),
        "the series is kept at 0: {text}"
    );
    assert_eq!(value(&s, "dwa_queue_delayed_jobs", &default), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_a_known_workload_on_the_embedded_store() {
    let fake = Fake::start().await;
    let (_d, host) = start(
        &fake,
        &[
            ("DWA_API_TOKEN", "metrics-token".into()),
            ("DWA_QUEUES", "slow:1".into()),
        ],
    );
    the_metrics_count_a_known_workload(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_a_known_workload_on_redis() {
    let fake = Fake::start().await;
    let redis = RedisServer::start();
    let (_d, host) = start(
        &fake,
        &[
            ("DWA_API_TOKEN", "metrics-token".into()),
            ("DWA_QUEUES", "slow:1".into()),
            ("REDIS_URL", redis.url()),
        ],
    );
    the_metrics_count_a_known_workload(&host).await;
}
