//! Concurrency keys and rate limits over HTTP, measured at a backend that
//! holds its calls: on the embedded store, and across two hosts on Redis.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::common::*;
use super::redis_host_with;
use dwa_store::testing::RedisServer;

/// The most calls of one customer that were at the backend at once.
fn peak_per_customer(fake: &Fake) -> HashMap<String, usize> {
    let calls = fake.calls_of("gated");
    let mut peaks = HashMap::new();
    for c in &calls {
        let customer = c.input["customer"].as_str().unwrap_or("?").to_owned();
        let at_once = calls
            .iter()
            .filter(|o| o.input["customer"] == c.input["customer"])
            .filter(|o| o.started <= c.started && o.ended.is_none_or(|e| e > c.started))
            .count();
        let peak = peaks.entry(customer).or_insert(0);
        *peak = (*peak).max(at_once);
    }
    peaks
}

/// Eight tasks, four per customer, at most two of a customer's at once:
/// four calls reach the backend and the other four tasks wait (each says
/// so in a `step:waiting` event) until slots free up.
async fn a_concurrency_key_caps_what_runs_at_once(hosts: &[&Host], fake: &Fake) {
    let mut ids = Vec::new();
    for i in 0..8 {
        let customer = if i % 2 == 0 { "acme" } else { "globex" };
        let task = json!({"type": "gated", "payload": {"customer": customer, "i": i},
                          "concurrency": {"key": "{{payload.customer}}", "limit": 2}});
        ids.push(submit_ok(hosts[i % hosts.len()], &task).await);
    }
    fake.wait_for("two calls of each customer", |f| f.inflight("gated") >= 4)
        .await;
    let running: Vec<String> = fake
        .calls_of("gated")
        .into_iter()
        .map(|c| c.task_id)
        .collect();
    for id in ids.iter().filter(|id| !running.contains(id)) {
        let evs = events_until(hosts[0], id, |evs| has(evs, "step:waiting")).await;
        let why = evs
            .iter()
            .find(|(k, _)| k == "step:waiting")
            .map(|(_, e)| e["data"]["reason"].clone());
        assert!(
            why.as_ref()
                .and_then(Value::as_str)
                .is_some_and(|r| r.contains("at its limit of 2")),
            "{why:?}"
        );
    }
    assert_eq!(
        fake.inflight("gated"),
        4,
        "the waiting tasks did not reach the backend"
    );
    fake.open_gate();
    for id in &ids {
        assert_eq!(wait_done(hosts[0], id).await["status"], "completed");
    }
    assert_eq!(fake.calls_of("gated").len(), 8, "each task ran once");
    let peaks = peak_per_customer(fake);
    assert_eq!(peaks.get("acme"), Some(&2), "{peaks:?}");
    assert_eq!(peaks.get("globex"), Some(&2), "{peaks:?}");
}

/// Five starts at two per second: two at once, then one every 500 ms —
/// measured as the calls arrive at the backend (lower bounds only: a slow
/// machine starts them later, never earlier).
async fn a_rate_limit_spaces_the_starts(hosts: &[&Host], fake: &Fake) {
    fake.open_gate();
    let mut ids = Vec::new();
    for i in 0..5 {
        let task = json!({"type": "gated", "payload": {"customer": "rate", "i": i},
                          "rateLimit": {"key": "openai", "limit": 2, "per": "1s"}});
        ids.push(submit_ok(hosts[i % hosts.len()], &task).await);
    }
    for id in &ids {
        assert_eq!(wait_done(hosts[0], id).await["status"], "completed");
    }
    let mut starts: Vec<_> = fake
        .calls_of("gated")
        .into_iter()
        .filter(|c| c.input["customer"] == "rate")
        .map(|c| c.started)
        .collect();
    starts.sort();
    assert_eq!(starts.len(), 5);
    for (i, s) in starts.iter().enumerate().skip(2) {
        let after = s.duration_since(starts[0]);
        // A few ms of slack: the store's clock and the backend's differ in rounding.
        let least =
            Duration::from_millis(500 * (i as u64 - 1)).saturating_sub(Duration::from_millis(20));
        assert!(
            after >= least,
            "start {i} came {after:?} after the first; the rate allows it at {least:?}"
        );
    }
}

fn fake_env(fake: &Fake) -> Vec<(&'static str, String)> {
    vec![("LOCAL_BACKEND_URL", fake.base.clone())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_keys_and_rate_limits_on_the_embedded_store() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &fake_env(&fake)));
    a_concurrency_key_caps_what_runs_at_once(&[&host], &fake).await;
    a_rate_limit_spaces_the_starts(&[&host], &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_keys_and_rate_limits_across_two_hosts_on_redis() {
    let fake = Fake::start().await;
    let redis = RedisServer::start();
    let (_a_dir, a) = redis_host_with(&redis, "host-a", &fake_env(&fake));
    let (_b_dir, b) = redis_host_with(&redis, "host-b", &fake_env(&fake));
    a_concurrency_key_caps_what_runs_at_once(&[&a, &b], &fake).await;
    a_rate_limit_spaces_the_starts(&[&a, &b], &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_or_limit_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &[]));
    for (task, field) in [
        (
            json!({"type": "builtin.echo", "concurrency": {"key": "k", "limit": 0}}),
            "concurrency.limit",
        ),
        (
            json!({"type": "builtin.echo", "concurrency": {"key": "", "limit": 1}}),
            "concurrency.key",
        ),
        (
            json!({"type": "builtin.echo", "rateLimit": {"key": "k", "limit": 5, "per": "fortnight"}}),
            "rateLimit.per",
        ),
        (
            json!({"type": "builtin.echo", "rateLimit": {"key": "k", "limit": 5, "per": "2d"}}),
            "rateLimit.per",
        ),
        (
            json!({"type": "t", "steps": [{"task": "builtin.echo",
                   "concurrency": {"key": "{{steps.nope.x}}", "limit": 1}}]}),
            "steps[0].concurrency.key",
        ),
    ] {
        let (status, answer) = super::post_json(&host, "/api/tasks", &task).await;
        assert_eq!(status, 422, "{task} -> {answer}");
        assert_eq!(
            answer["error"]["details"][0]["field"], field,
            "{task} -> {answer}"
        );
    }
}
