//! Several `dwa serve` processes on one Redis (started by the test on a free
//! port): shared work, cross-host events, a host killed mid-run, and Redis
//! itself restarted mid-run.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use dwa_store::testing::RedisServer;
use serde_json::{Value, json};

fn start_host(
    redis: &str,
    fake: &Fake,
    name: &str,
    extra: &[(&str, String)],
) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("REDIS_URL", redis.to_owned()),
        ("LOCAL_BACKEND_URL", fake.base.clone()),
        ("DWA_HOST_NAME", name.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let host = tokio::task::block_in_place(|| Host::start(dir.path(), &env));
    (dir, host)
}

/// Waits (bounded) until every task in `ids` is finished on `host`.
async fn wait_all(host: &Host, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(wait_done(host, id).await);
    }
    out
}

/// Follows a task's SSE stream as a browser would: when the server closes
/// it early, reconnects with `Last-Event-ID`. Signals `live` once its first
/// event came (the stream is then subscribed). Answers (seq, kind) of every
/// event received, up to `pipeline:complete`; panics naming the task when
/// that does not come within 30 s.
async fn follow(
    base: &str,
    id: &str,
    live: tokio::sync::oneshot::Sender<()>,
) -> Vec<(u64, String)> {
    let mut live = Some(live);
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got: Vec<(u64, String)> = Vec::new();
    loop {
        let mut req = client().get(format!("{base}/api/tasks/{id}/events"));
        if let Some((seq, _)) = got.last() {
            req = req.header("last-event-id", seq.to_string());
        }
        let stream = tokio::time::timeout_at(deadline, req.send()).await;
        let resp = match stream {
            Ok(Ok(r)) if r.status().is_success() => r,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{id}: no pipeline:complete within 30 s; got {got:?}"
                );
                // An EventSource waits before reconnecting too.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{id}: no pipeline:complete within 30 s; got {got:?}"));
            let Some(Ok(chunk)) = next else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                let (Some(kind), Some(seq)) = (field("event:"), field("id:")) else {
                    continue;
                };
                let seq: u64 = seq.parse().unwrap_or_else(|_| panic!("bad event id {seq}"));
                let done = kind == "pipeline:complete";
                got.push((seq, kind));
                if let Some(l) = live.take() {
                    let _ = l.send(());
                }
                if done {
                    return got;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_pipelines_exactly_once_and_see_each_others_events() {
    let redis = RedisServer::start();
    let fake = Fake::start().await;
    let conc = [("WORKER_CONCURRENCY", "16".to_string())];
    let (_a_dir, a) = start_host(&redis.url(), &fake, "host-a", &conc);
    // Only host B serves queue `only-b` (DWA_QUEUES is per host).
    let (_b_dir, b) = start_host(
        &redis.url(),
        &fake,
        "host-b",
        &[conc[0].clone(), ("DWA_QUEUES", "only-b".to_string())],
    );

    let n = 1000;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let host = if i % 2 == 0 { &a } else { &b };
        ids.push(
            submit_ok(
                host,
                &json!({"type": "p", "payload": {"url": format!("https://x.example/{i}.mp4")},
                "steps": [
                    {"id": "dl", "task": "download.file", "input": {"url": "{{payload.url}}"}},
                    {"id": "say", "task": "tts.speak", "input": {"voice": "{{steps.dl.path}}"}}
                ]}),
            )
            .await,
        );
    }
    let done = wait_all(&a, &ids).await;
    assert!(done.iter().all(|t| t["status"] == "completed"));
    for (i, t) in done.iter().enumerate() {
        assert_eq!(t["finalResult"]["voice"], format!("/media/{i}.mp4"));
    }
    // Every step ran exactly once, and both hosts ran some.
    let mut runs: HashMap<(String, String), usize> = HashMap::new();
    let mut by_host: HashMap<String, usize> = HashMap::new();
    for c in fake.calls() {
        *runs
            .entry((c.task_id.clone(), c.step_id.clone()))
            .or_default() += 1;
        *by_host.entry(c.host.clone()).or_default() += 1;
    }
    assert_eq!(runs.len(), 2 * n, "every step ran");
    assert!(runs.values().all(|&r| r == 1), "a step ran twice");
    assert!(
        by_host.get("host-a").copied().unwrap_or(0) > 0,
        "{by_host:?}"
    );
    assert!(
        by_host.get("host-b").copied().unwrap_or(0) > 0,
        "{by_host:?}"
    );

    // A task only host B serves (its queue is new to host A): host A's event
    // stream follows it live.
    let id = submit_ok(
        &b,
        &json!({"type": "p", "queue": "only-b", "steps": [{"id": "hold", "task": "gated", "input": {"v": 1}}, {"id": "tail", "task": "builtin.echo"}]}),
    )
    .await;
    fake.wait_for("the gated step", |f| f.inflight("gated") == 1)
        .await;
    let base = a.base.clone();
    let sid = id.clone();
    let (first, subscribed) = tokio::sync::oneshot::channel();
    let reader =
        tokio::spawn(async move { read_events_signalling(&base, &sid, Some(first)).await });
    // Open the gate only once A's stream is subscribed: what follows must
    // reach it live, over pub/sub from host B.
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("host A's stream gave no event within 30 s")
        .expect("the reader stopped before its first event");
    assert_eq!(get_task(&a, &id).await["status"], "active");
    fake.open_gate();
    let events = reader.await.unwrap();
    let kinds: Vec<String> = events.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        kinds,
        [
            "step:start",
            "step:complete",
            "step:start",
            "step:complete",
            "pipeline:complete"
        ]
    );
    assert_eq!(fake.calls_of("gated")[0].host, "host-b");
    assert_eq!(get_task(&a, &id).await["status"], "completed");
    let health: Value = get_json(&a, "/health").await;
    assert_eq!(health["store"]["kind"], "redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_pipeline_leaves_its_steps_to_the_other() {
    let redis = RedisServer::start();
    let fake = Fake::start().await;
    let n = 20;
    // B has 5 workers: with all 20 pipelines held at the gate, B can hold at
    // most 5 of them, so A holds at least 15 when it is killed.
    let env = |workers: usize| {
        [
            ("DWA_LEASE_MS", "1000".to_string()),
            ("WORKER_CONCURRENCY", workers.to_string()),
        ]
    };
    let (_a_dir, mut a) = start_host(&redis.url(), &fake, "host-a", &env(20));
    let (_b_dir, b) = start_host(&redis.url(), &fake, "host-b", &env(5));
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            submit_ok(
                &b,
                &json!({"type": "p", "payload": {"url": format!("https://x.example/{i}.mp4")},
                "steps": [
                    {"id": "dl", "task": "download.file", "input": {"url": "{{payload.url}}"}},
                    {"id": "hold", "task": "gated", "input": {"path": "{{steps.dl.path}}"}},
                    {"id": "say", "task": "tts.speak"}
                ]}),
            )
            .await,
        );
    }
    fake.wait_for("every pipeline at the gate", |f| f.inflight("gated") == n)
        .await;
    let before = fake.calls_of("gated");
    let mut held_by_a: Vec<String> = before
        .iter()
        .filter(|c| c.host == "host-a")
        .map(|c| c.task_id.clone())
        .collect();
    held_by_a.sort();
    let on_a = held_by_a.len();
    assert!(
        on_a >= n - 5,
        "host A held {on_a} of the {n} gated steps when killed (B can hold at most 5)"
    );
    a.kill9();
    fake.open_gate();
    let done = wait_all(&b, &ids).await;
    assert!(done.iter().all(|t| t["status"] == "completed"), "{done:#?}");
    assert_eq!(
        fake.calls_of("download.file").len(),
        n,
        "a completed step ran again"
    );
    assert_eq!(fake.calls_of("tts.speak").len(), n);
    let gated = fake.calls_of("gated");
    assert_eq!(
        gated.len(),
        n + on_a,
        "host A's interrupted steps ran again, once"
    );
    // The calls after the kill are B's re-runs of exactly A's steps, once each.
    let again = &gated[before.len()..];
    assert!(
        again
            .iter()
            .all(|c| c.host == "host-b" && c.step_id == "hold"),
        "{again:#?}"
    );
    let mut rerun: Vec<String> = again.iter().map(|c| c.task_id.clone()).collect();
    rerun.sort();
    assert_eq!(
        rerun, held_by_a,
        "B re-ran exactly the steps A held, once each"
    );
    assert!(
        gated
            .iter()
            .filter(|c| c.host == "host-b" && !c.dropped)
            .count()
            >= n - on_a
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_ride_out_a_redis_restart() {
    let persist = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
    ];
    let mut redis = RedisServer::start_with(&persist);
    let fake = Fake::start().await;
    let env = [
        ("DWA_LEASE_MS", "1000".to_string()),
        ("WORKER_CONCURRENCY", "16".to_string()),
    ];
    let (_a_dir, a) = start_host(&redis.url(), &fake, "host-a", &env);
    let (_b_dir, b) = start_host(&redis.url(), &fake, "host-b", &env);
    let mut ids = Vec::new();
    for i in 0..10 {
        let host = if i % 2 == 0 { &a } else { &b };
        ids.push(
            submit_ok(
                host,
                &json!({"type": "p", "steps": [
                    {"task": "builtin.sleep", "input": {"ms": 300}},
                    {"task": "builtin.sleep", "input": {"ms": 300}},
                    {"task": "builtin.echo", "input": {"i": i}}
                ]}),
            )
            .await,
        );
    }
    // Tasks whose only step ends while the hosts are still resubscribing to
    // the event channel: their pipeline:complete is never seen live.
    let mut short = Vec::new();
    for i in 0..4 {
        let host = if i % 2 == 0 { &a } else { &b };
        short.push(
            submit_ok(
                host,
                &json!({"type": "builtin.sleep", "payload": {"ms": 300}}),
            )
            .await,
        );
    }
    // Every task is followed over SSE on the host it was not submitted to,
    // from before the restart. Pub/sub keeps nothing for a subscriber while
    // it reconnects: what was published then must still reach the followers.
    let mut followers = Vec::new();
    let mut lives = Vec::new();
    for (i, id) in ids.iter().chain(&short).enumerate() {
        let base = if i % 2 == 0 { &b.base } else { &a.base }.clone();
        let id = id.clone();
        let (live, is_live) = tokio::sync::oneshot::channel();
        lives.push(is_live);
        followers.push(tokio::spawn(async move {
            let seen = follow(&base, &id, live).await;
            (id, seen)
        }));
    }
    for l in lives {
        tokio::time::timeout(WAIT, l)
            .await
            .expect("a follower saw no event within 30 s")
            .expect("a follower stopped");
    }
    tokio::task::block_in_place(|| redis.restart(&persist));
    let done = wait_all(&a, &ids).await;
    for (i, t) in done.iter().enumerate() {
        assert_eq!(t["status"], "completed", "{t:#}");
        assert_eq!(t["finalResult"], json!({"i": i}));
    }
    for t in wait_all(&b, &short).await {
        assert_eq!(t["status"], "completed", "{t:#}");
    }
    for f in followers {
        let (id, seen) = f.await.unwrap_or_else(|e| panic!("a follower failed: {e}"));
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "{id}: events missed or repeated: {seen:?}");
    }
    // Both hosts are still up and serving.
    for h in [&a, &b] {
        let r = client().get(h.url("/health")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let id = submit_ok(
        &b,
        &json!({"type": "builtin.echo", "payload": {"after": true}}),
    )
    .await;
    assert_eq!(wait_done(&a, &id).await["result"], json!({"after": true}));
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_caps_are_the_peak_calls_at_the_backend_on_redis() {
    let redis = RedisServer::start();
    {
        let fake = Fake::start().await;
        let env = [("WORKER_CONCURRENCY", "3".to_string())];
        let (_d, host) = start_host(&redis.url(), &fake, "host-a", &env);
        peak_is_the_worker_cap(&host, &fake, "default", 3).await;
    }
    // The first host is gone: no other host shares the gpu queue's jobs.
    let fake = Fake::start().await;
    let env = [("GPU_WORKER_CONCURRENCY", "2".to_string())];
    let (_g, host) = start_host(&redis.url(), &fake, "host-b", &env);
    peak_is_the_worker_cap(&host, &fake, "gpu", 2).await;
}
