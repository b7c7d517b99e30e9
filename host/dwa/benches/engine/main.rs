//! `just bench`: engine throughput and HTTP submission rate on the embedded
//! store, durability on (nothing is seen outside before it is on disk), and
//! the Redis scenarios, each row naming its Redis's durability.
//!
//! Each scenario runs in its own process so that its peak RSS is its own.
//! Run one with `DWA_BENCH_SCENARIO=<name>`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwa_store::Feed;
use serde_json::{Value, json};

mod backends;
mod dag;
mod latency;
mod on_redis;
mod plugins;

use backends::backends_bench;
use dag::dag_bench;
use latency::latency_bench;
use on_redis::{redis_bench, redis_pipelines_bench};
use plugins::{plugins_bench, templates_bench, transforms_bench};

const SCENARIOS: [&str; 12] = [
    "wide",
    "dag",
    "chain",
    "foreach",
    "submit",
    "latency",
    "plugins",
    "transforms",
    "templates",
    "backends",
    "redis",
    "redis-pipelines",
];

fn main() {
    match std::env::var("DWA_BENCH_SCENARIO") {
        Ok(s) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run(&s));
        }
        Err(_) => {
            if !std::env::args().any(|a| a == "--bench") {
                // `cargo test --all-targets` runs benches in test mode: nothing to do.
                println!("benchmarks run with `just bench` (cargo bench)");
                return;
            }
            let me = std::env::current_exe().expect("current exe");
            let only: Vec<String> = std::env::args()
                .skip(1)
                .filter(|a| SCENARIOS.contains(&a.as_str()))
                .collect();
            println!(
                "machine: {} cores; release build; embedded-store rows durable (nothing seen outside before its fsync); Redis rows name their Redis's durability",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
            for s in SCENARIOS {
                if !only.is_empty() && !only.iter().any(|o| o == s) {
                    continue;
                }
                let status = Command::new(&me)
                    .env("DWA_BENCH_SCENARIO", s)
                    .status()
                    .expect("run scenario");
                assert!(status.success(), "scenario {s} failed");
            }
        }
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn host(workers: usize) -> (dwa::server::Host, tempfile::TempDir) {
    host_on(workers, None).await
}

async fn host_on(
    workers: usize,
    redis_url: Option<String>,
) -> (dwa::server::Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dwa::config::Config {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().to_path_buf(),
        redis_url,
        modal_url: None,
        modal_token: None,
        ray_url: None,
        ray_token: None,
        local_url: None,
        limits: dwa_core::limits::Limits {
            queues: [("default".to_owned(), workers), ("gpu".to_owned(), 2)].into(),
            // The wide scenario's DAG has 10,000 steps (DWA_MAX_STEPS defaults to 1,000)
            // and the foreach one 100,000 items (DWA_MAX_FOREACH_ITEMS: 10,000).
            max_steps: 10_000,
            max_items_per_step: 100_000,
            ..Default::default()
        },
        idempotency_ttl_secs: 86_400,
        max_followers_per_task: 100,
        max_followers: 10_000,
        signal_secret: None,
        public_url: None,
        api_token: None,
        max_body_bytes: 64 << 20,
        lease_ms: 30_000,
        shutdown_grace_ms: 1_000,
        task_catalog: dir.path().join("no-catalog.json"),
        catalog_refresh_secs: 0,
        plugin_dir: dir.path().join("no-plugins"),
        plugin_cache_dir: dir.path().join("plugin-cache"),
        work_dir: dir.path().join("work"),
        plugin_watch_ms: 0,
        http_allow: String::new(),
        plugin_policy: None,
        redis_prefix: "dwa".into(),
        max_stalled: 3,
        retention_hours: 168,
        progress_throttle_ms: 250,
    };
    let h = dwa::server::build(&config).await.expect("host");
    (h, dir)
}

/// `1 → n-2 → 1`: a root, its fan-out, and a sink waiting for all of them.
fn wide_task(n: usize) -> Value {
    let mut steps = vec![json!({"id": "root", "task": "builtin.echo"})];
    for i in 1..n - 1 {
        steps.push(json!({"id": format!("s{i}"), "task": "builtin.echo", "dependsOn": ["root"]}));
    }
    let deps: Vec<String> = (1..n - 1).map(|i| format!("s{i}")).collect();
    steps.push(json!({"id": "sink", "task": "builtin.echo", "dependsOn": deps, "input": "done"}));
    json!({"type": "wide", "payload": {"x": 1}, "steps": steps})
}

/// A list of `n` numbers, then one forEach step over it.
fn foreach_task(n: usize) -> Value {
    json!({"type": "fan", "payload": {"n": n},
    "steps": [
        {"id": "list", "task": "builtin.range", "input": {"n": "{{payload.n}}"}},
        {"id": "each", "task": "builtin.echo", "dependsOn": ["list"], "forEach": "{{steps.list}}",
         "input": {"v": "{{item}}"}}
    ]})
}

/// Submits `task` and waits for its pipeline:complete; answers the time from
/// the submit call and the time from the first step's start.
async fn run_to_completion(h: &dwa::server::Host, task: Value) -> (Duration, Duration) {
    let mut rx = h.engine.store().subscribe();
    let start = Instant::now();
    let body = serde_json::to_vec(&task).expect("json");
    let created = h.engine.submit_json(&body).await.expect("submit");
    let mut first: Option<Instant> = None;
    loop {
        match rx.next().await {
            Feed::Event(e) if e.task_id == created.id => {
                first.get_or_insert_with(Instant::now);
                if e.kind == "pipeline:complete" {
                    assert_eq!(e.data["status"], "completed", "{}", e.data);
                    let end = Instant::now();
                    return (end - start, end - first.unwrap_or(start));
                }
            }
            Feed::Event(_) => {}
            Feed::Missed => {
                let t = h.engine.get(&created.id).await.expect("get");
                if t.status.is_terminal() {
                    let end = Instant::now();
                    return (end - start, end - first.unwrap_or(start));
                }
            }
            Feed::Closed => panic!("event stream closed"),
        }
    }
}

/// Serves the host's router on a free loopback port.
async fn serve(h: &dwa::server::Host) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = h.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// POSTs `body` to the host at `addr` `total` times, `in_flight` at a time
/// (each must be accepted: 201); answers how many were posted.
async fn post_tasks(
    addr: std::net::SocketAddr,
    body: String,
    total: usize,
    in_flight: usize,
) -> usize {
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for s in 0..in_flight {
        let client = client.clone();
        let body = body.clone();
        let url = format!("http://{addr}/api/tasks");
        senders.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for _ in (s..total).step_by(in_flight) {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
                ok += 1;
            }
            ok
        }));
    }
    let mut done = 0;
    for s in senders {
        done += s.await.expect("join");
    }
    done
}

fn report(name: &str, steps: u64, (total, exec): (Duration, Duration), extra: &str) {
    println!(
        "{name:<30} {steps:>7} steps: {:>6.2} s incl. submit = {:>7.0} steps/s; running {:>6.2} s = {:>7.0} steps/s; peak RSS {:>6.1} MB {extra}",
        total.as_secs_f64(),
        steps as f64 / total.as_secs_f64(),
        exec.as_secs_f64(),
        steps as f64 / exec.as_secs_f64(),
        peak_rss_mb()
    );
}

async fn run(scenario: &str) {
    let workers: usize = std::env::var("DWA_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    match scenario {
        "wide" => {
            let (h, _d) = host(workers).await;
            let n = 10_000;
            let t = run_to_completion(&h, wide_task(n)).await;
            report(
                "wide DAG (1 → 9,998 → 1)",
                n as u64,
                t,
                &format!("(workers {workers})"),
            );
        }
        "chain" => {
            let (h, _d) = host(workers).await;
            let n = 1_000;
            let steps: Vec<Value> = (0..n).map(|_| json!({"task": "builtin.echo"})).collect();
            let t = run_to_completion(
                &h,
                json!({"type": "chain", "payload": {"x": 1}, "steps": steps}),
            )
            .await;
            report("chain (1,000 sequential)", n as u64, t, "");
            println!("BENCH chain.embedded.seconds={:.4}", t.0.as_secs_f64());
        }
        "foreach" => {
            let (h, _d) = host(workers).await;
            let n = 100_000;
            let t = run_to_completion(&h, foreach_task(n)).await;
            report(
                "forEach (100,000 items)",
                n as u64,
                t,
                &format!("(workers {workers})"),
            );
        }
        "submit" => {
            let (h, _d) = host(5).await;
            let addr = serve(&h).await;
            let body = json!({"type": "builtin.echo", "payload": {"hello": "world"}}).to_string();
            let start = Instant::now();
            let done = post_tasks(addr, body, 20_000, 64).await;
            let elapsed = start.elapsed();
            println!(
                "{:<34} {done:>7} POSTs in {:>7.2} s = {:>9.0} submissions/s   peak RSS {:>6.1} MB (64 connections, client in the same process, workers running)",
                "HTTP POST /api/tasks",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64(),
                peak_rss_mb()
            );
        }
        "latency" => latency_bench().await,
        "dag" => dag_bench().await,
        "plugins" => plugins_bench().await,
        "transforms" => transforms_bench().await,
        "templates" => templates_bench().await,
        "backends" => backends_bench().await,
        "redis" => redis_bench().await,
        "redis-pipelines" => redis_pipelines_bench().await,
        other => panic!("unknown scenario {other}"),
    }
}
