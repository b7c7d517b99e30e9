//! `just bench`: engine throughput and HTTP submission rate on the embedded
//! store, durability on (synchronous=FULL, commit before acknowledging).
//!
//! Each scenario runs in its own process so that its peak RSS is its own.
//! Run one with `DWA_BENCH_SCENARIO=<name>`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwa_store::Feed;
use serde_json::{Value, json};

const SCENARIOS: [&str; 11] = [
    "wide",
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
                "machine: {} cores; release build; embedded SQLite store, synchronous=FULL",
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
        worker_concurrency: workers,
        gpu_worker_concurrency: 2,
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
            let client = reqwest::Client::new();
            let total = 20_000usize;
            let conc = 64usize;
            let body = json!({"type": "builtin.echo", "payload": {"hello": "world"}}).to_string();
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..conc {
                let client = client.clone();
                let body = body.clone();
                let url = format!("http://{addr}/api/tasks");
                tasks.push(tokio::spawn(async move {
                    let mut ok = 0usize;
                    for _ in (w..total).step_by(conc) {
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("send");
                        assert_eq!(r.status().as_u16(), 201);
                        let _ = r.bytes().await;
                        ok += 1;
                    }
                    ok
                }));
            }
            let mut done = 0;
            for t in tasks {
                done += t.await.expect("join");
            }
            let elapsed = start.elapsed();
            println!(
                "{:<34} {done:>7} POSTs in {:>7.2} s = {:>9.0} submissions/s   peak RSS {:>6.1} MB (64 connections, client in the same process, workers running)",
                "HTTP POST /api/tasks",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64(),
                peak_rss_mb()
            );
        }
        "latency" => {
            let (h, _d) = host(5).await;
            let addr = serve(&h).await;
            let started: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
            let mut rx = h.engine.store().subscribe();
            let st = started.clone();
            tokio::spawn(async move {
                while let Feed::Event(e) = rx.next().await {
                    if e.kind == "step:start" {
                        st.lock()
                            .expect("lock")
                            .entry(e.task_id.clone())
                            .or_insert_with(Instant::now);
                    }
                }
            });
            let client = reqwest::Client::new();
            let rate = 500u64;
            let n = 2_500u64;
            let body = json!({"type": "builtin.echo", "payload": {"hello": "world"}}).to_string();
            let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut sends = Vec::new();
            for _ in 0..n {
                ticker.tick().await;
                let client = client.clone();
                let body = body.clone();
                let url = format!("http://{addr}/api/tasks");
                sends.push(tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r: Value = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("send")
                        .json()
                        .await
                        .expect("json");
                    (r["id"].as_str().unwrap_or_default().to_owned(), t0)
                }));
            }
            let mut sent = Vec::new();
            for s in sends {
                sent.push(s.await.expect("join"));
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let have = started.lock().expect("lock").len();
                if have >= sent.len() || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let map = started.lock().expect("lock");
            let mut lat: Vec<f64> = sent
                .iter()
                .filter_map(|(id, t0)| {
                    map.get(id)
                        .map(|t1| t1.duration_since(*t0).as_secs_f64() * 1000.0)
                })
                .collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
            println!(
                "{:<34} {} tasks at {rate}/s: submit→step-start p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                "latency (open loop)",
                lat.len(),
                pct(0.50),
                pct(0.99),
                pct(1.0)
            );
        }
        "plugins" => plugins_bench().await,
        "transforms" => transforms_bench().await,
        "templates" => templates_bench().await,
        "backends" => backends_bench().await,
        "redis" => redis_bench().await,
        "redis-pipelines" => redis_pipelines_bench().await,
        other => panic!("unknown scenario {other}"),
    }
}

struct NoHost;

#[async_trait::async_trait]
impl dwa_plugins::runtime::PluginHost for NoHost {
    async fn emit(
        &self,
        _: &str,
        _: &str,
        _: Value,
    ) -> Result<(), dwa_plugins::runtime::ServiceError> {
        Ok(())
    }
    async fn enqueue(&self, _: Value) -> Result<String, dwa_plugins::runtime::ServiceError> {
        Err(dwa_plugins::runtime::ServiceError::NotAvailable)
    }
}

/// Plugin load time cold (compile) and warm (from the artifact cache), and
/// no-op effect calls with a fresh instance per call.
async fn plugins_bench() {
    use dwa_plugins::{PluginConfig, Plugins};
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let testing = repo.join("plugins/dist-testing");
    let dist = repo.join("plugins/dist");
    let cache = tempfile::tempdir().expect("tempdir");
    let config = PluginConfig {
        dir: testing.clone(),
        cache_dir: Some(cache.path().to_path_buf()),
        http_allow: String::new(),
        policy_file: None,
        work_dir: cache.path().join("work"),
    };
    let skip_python = std::env::var("DWA_BENCH_SKIP_PYTHON").is_ok();
    for (what, dir, name) in [
        ("noop (Rust)", &testing, "noop"),
        ("audit (Python)", &dist, "audit"),
    ] {
        if skip_python && name == "audit" {
            continue;
        }
        let mut line = format!("{:<34}", format!("plugin load {what}"));
        for round in ["cold", "warm"] {
            let p = Plugins::new(&config).expect("plugins");
            let t = Instant::now();
            p.load(&dir.join(format!("{name}.json"))).expect("load");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let info = p
                .list()
                .into_iter()
                .find(|i| i.name == name)
                .expect("loaded");
            assert_eq!(info.from_cache, round == "warm");
            line.push_str(&format!(" {round} {ms:>8.2} ms"));
        }
        println!("{line}");
    }
    let p = Plugins::new(&config).expect("plugins");
    p.load(&testing.join("noop.json")).expect("load");
    let host: Arc<dyn dwa_plugins::runtime::PluginHost> = Arc::new(NoHost);
    let call = || dwa_plugins::runtime::EffectCall {
        effect: "noop".into(),
        lifecycle: "onSuccess".into(),
        task_id: "bench".into(),
        task: "{}".into(),
        config: "{}".into(),
    };
    for _ in 0..500 {
        p.call_effect("noop", call(), "bench", host.clone())
            .await
            .expect("warm-up");
    }
    let n = 20_000;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        p.call_effect("noop", call(), "bench", host.clone())
            .await
            .expect("call");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed = start.elapsed();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{:<34} {n} calls, fresh instance each: {:>8.0} calls/s, p50 {:.1} µs, p99 {:.1} µs (one caller)",
        "effect call (no-op plugin)",
        n as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    let p = Arc::new(p);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let p = p.clone();
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / 4 {
                p.call_effect("noop", call(), "bench", host.clone())
                    .await
                    .expect("call");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    println!(
        "{:<34} {n} calls from 4 callers: {:>8.0} calls/s; peak RSS {:.1} MB",
        "effect call (no-op plugin)",
        n as f64 / start.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
}

/// The transform plugins against the same Rust code compiled natively
/// (`plugins/bench-native`, built by `just bench`): chunk.text MB/s and
/// image.resize of a 4000×3000 JPEG.
async fn transforms_bench() {
    use dwa_plugins::{PluginConfig, Plugins};
    use serde_json::json;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dist = repo.join("plugins/dist");
    let work = tempfile::tempdir().expect("tempdir");
    let p = Plugins::new(&PluginConfig {
        dir: dist.clone(),
        cache_dir: Some(work.path().join("cache")),
        http_allow: String::new(),
        policy_file: None,
        work_dir: work.path().to_path_buf(),
    })
    .expect("plugins");
    for n in ["text", "image"] {
        p.load(&dist.join(format!("{n}.json")))
            .expect("load (run `just build-plugins`)");
    }
    // ~4 MB of text; a 4000×3000 JPEG of a gradient with noise-like detail.
    let words = [
        "orchestrate",
        "déjà",
        "pipeline",
        "naïve",
        "graph",
        "fan-out",
        "日本語",
        "retry",
        "the",
        "of",
    ];
    let text: String = (0..600_000usize)
        .map(|i| words[(i * 7 + i / 3 + i / 11) % words.len()])
        .collect::<Vec<_>>()
        .join(" ");
    let mb = text.len() as f64 / 1e6;
    let dir = work.path().join("bench");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("doc.txt"), &text).expect("write");
    let img = image::RgbImage::from_fn(4000, 3000, |x, y| {
        let v = x
            .wrapping_mul(2654435761)
            .wrapping_add(y.wrapping_mul(40503))
            >> 24;
        image::Rgb([(x / 16) as u8, (y / 12) as u8, v as u8])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .expect("jpeg");
    std::fs::write(dir.join("big.jpg"), jpeg.into_inner()).expect("write");

    let rounds = 3;
    let best = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let mut chars = Vec::new();
    let mut tokens = Vec::new();
    let mut resize = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        p.run_task(
            "chunk.text",
            &json!({"path": "doc.txt", "size": 1000, "overlap": 100}),
            "bench",
        )
        .await
        .expect("chunk chars");
        chars.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        p.run_task(
            "chunk.text",
            &json!({"path": "doc.txt", "by": "tokens", "size": 512, "overlap": 64}),
            "bench",
        )
        .await
        .expect("chunk tokens");
        tokens.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        p.run_task(
            "image.resize",
            &json!({"path": "big.jpg", "width": 800, "height": 600, "output": "small.jpg"}),
            "bench",
        )
        .await
        .expect("resize");
        resize.push(t.elapsed().as_secs_f64());
    }
    let native_bin = repo.join("plugins/target/release/dwa-bench-native");
    let native: Option<Value> = if native_bin.exists() {
        let out = Command::new(&native_bin)
            .arg(dir.join("doc.txt"))
            .arg(dir.join("big.jpg"))
            .arg(&dir)
            .arg(rounds.to_string())
            .output()
            .expect("run dwa-bench-native");
        assert!(
            out.status.success(),
            "dwa-bench-native: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).ok()
    } else {
        None
    };
    let line = |what: &str, plugin_s: f64, key: &str, unit: &dyn Fn(f64) -> String| {
        let mut l = format!("{what:<34} plugin {}", unit(plugin_s));
        match native.as_ref().and_then(|n| n[key].as_f64()) {
            Some(n) => l.push_str(&format!(
                ", native {}; plugin/native speed {:.2}",
                unit(n),
                n / plugin_s
            )),
            None => l.push_str(" (native: build plugins/bench-native, as `just bench` does)"),
        }
        println!("{l}");
    };
    let mbps = |s: f64| format!("{:.1} MB/s", mb / s);
    line(
        &format!("chunk.text chars, {mb:.1} MB"),
        best(&chars),
        "chunk_chars_s",
        &mbps,
    );
    line(
        &format!("chunk.text cl100k tokens, {mb:.1} MB"),
        best(&tokens),
        "chunk_tokens_s",
        &mbps,
    );
    let ms = |s: f64| format!("{:.0} ms", s * 1000.0);
    line(
        "image.resize 4000×3000 JPEG → 800×600",
        best(&resize),
        "resize_s",
        &ms,
    );
}

/// Template rendering: resolutions per second of a step input with builtin
/// filters only, and with a plugin filter (Rust `urlencode`, JavaScript `slugify`).
async fn templates_bench() {
    use dwa_core::template::{Filters, Scope, Template};
    use dwa_plugins::{PluginConfig, Plugins, TaskFunctions};
    use serde_json::json;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dist = repo.join("plugins/dist");
    let work = tempfile::tempdir().expect("tempdir");
    let p = Plugins::new(&PluginConfig {
        dir: dist.clone(),
        cache_dir: Some(repo.join("target/dwa-bench-plugin-cache")),
        http_allow: String::new(),
        policy_file: None,
        work_dir: work.path().to_path_buf(),
    })
    .expect("plugins");
    for n in ["codec", "textfns"] {
        p.load(&dist.join(format!("{n}.json")))
            .expect("load (run `just build-plugins`)");
    }
    let fns = p.functions();
    let payload =
        json!({"title": "Summer Trip — Día 1", "user": {"name": "Ada"}, "tags": ["a", "b", "c"]});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    let functions = TaskFunctions {
        plugins: Some(&p),
        task_id: "bench",
    };
    for (what, input) in [
        (
            "template, builtin filters",
            json!({"t": "{{ payload.title | upper | truncate(10) }}", "n": "{{ payload.tags | length }}", "u": "Hi {{ payload.user.name }}"}),
        ),
        (
            "template + Rust filter (urlencode)",
            json!({"t": "{{ payload.title | urlencode }}", "n": "{{ payload.tags | length }}", "u": "Hi {{ payload.user.name }}"}),
        ),
        (
            "template + JS filter (slugify)",
            json!({"t": "{{ payload.title | slugify }}", "n": "{{ payload.tags | length }}", "u": "Hi {{ payload.user.name }}"}),
        ),
    ] {
        let t = Template::parse_with(&input, Filters::With(&fns)).expect("parse");
        let n = if t.uses_functions() {
            if what.contains("JS") { 300 } else { 5_000 }
        } else {
            500_000
        };
        for _ in 0..n / 10 {
            t.resolve_with(&scope, &functions).await.expect("warm-up");
        }
        let start = Instant::now();
        for _ in 0..n {
            t.resolve_with(&scope, &functions).await.expect("resolve");
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{what:<34} {:>10.0} resolutions/s ({:.1} µs each)",
            n as f64 / s,
            s / n as f64 * 1e6
        );
    }
}

/// A Python backend as a child process, stopped with SIGTERM when dropped.
struct PyChild(std::process::Child);

impl Drop for PyChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn start_py(args: &[&str], ready: &str, wait: Duration) -> Option<(PyChild, String)> {
    use std::io::BufRead;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join(".venv/bin/python");
    if !python.exists() {
        return None;
    }
    let mut child = Command::new(python)
        .args(args)
        .current_dir(&repo)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(url) = line.strip_prefix(&ready) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let child = PyChild(child);
    let base = rx.recv_timeout(wait).ok()?;
    Some((child, base))
}

/// The host → backend hop: a no-op Python task (`diag.echo`) called through
/// the host's backend client, on the local backend and on Ray Serve.
async fn backends_bench() {
    use dwa_core::step::StepCall;
    use dwa_engine::backend::HttpBackend;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port().to_string())
            .unwrap_or_else(|_| "18999".into())
    };
    let ray_port = free_port();
    for (what, args, ready, wait) in [
        (
            "local backend (uvicorn)",
            vec!["-m", "backends.local", "--port", "0"],
            "dwa backend listening on ",
            30,
        ),
        (
            "Ray Serve backend",
            vec![
                "-m",
                "backends.ray.run",
                "--port",
                ray_port.as_str(),
                "--num-cpus",
                "2",
            ],
            "dwa ray backend listening on ",
            240,
        ),
    ] {
        let Some((_child, base)) = start_py(&args, ready, Duration::from_secs(wait)) else {
            println!(
                "{what:<34} skipped: .venv missing or the backend did not start (just python-setup)"
            );
            continue;
        };
        let backend = HttpBackend::new("local", &base, None).expect("client");
        let call = |i: usize| StepCall {
            task_id: "bench".into(),
            step_id: format!("s{i}"),
            task: "diag.echo".into(),
            input: json!({"value": i}),
            attempt: 1,
            timeout: Duration::from_secs(10),
            progress: None,
        };
        for i in 0..100 {
            backend.run(&call(i)).await.expect("warm-up");
        }
        let n = 1000;
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            let v = backend.run(&call(i)).await.expect("call");
            assert_eq!(v, json!(i));
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let one = n as f64 / start.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        let backend = Arc::new(backend);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let b = backend.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / 8 {
                    b.run(&StepCall {
                        task_id: "bench".into(),
                        step_id: format!("w{w}-{i}"),
                        task: "diag.echo".into(),
                        input: json!({"value": i}),
                        attempt: 1,
                        timeout: Duration::from_secs(10),
                        progress: None,
                    })
                    .await
                    .expect("call");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let eight = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "{what:<34} no-op hop p50 {:.2} ms, p99 {:.2} ms; {one:.0} calls/s one at a time, {eight:.0} calls/s 8 at a time",
            pct(0.5),
            pct(0.99)
        );
    }
}

/// The Redis of a Redis scenario (`REDIS_URL`) and a connection to it, or
/// None (the scenario says it is skipped) when none is set.
async fn bench_redis(scenario: &str) -> Option<(String, redis::aio::MultiplexedConnection)> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        println!("{scenario:<34} skipped: set REDIS_URL (just bench starts a redis-server)");
        return None;
    };
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    Some((url, conn))
}

/// Single no-op tasks through Redis with one and two hosts: enqueue rate,
/// processed tasks/s, round trips and Redis commands per task. Needs REDIS_URL.
async fn redis_bench() {
    let Some((url, mut conn)) = bench_redis("redis").await else {
        return;
    };
    let n: usize = std::env::var("DWA_BENCH_REDIS_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let workers = 64;
    for hosts in [1usize, 2] {
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut conn)
            .await
            .expect("flush");
        let mut hs = Vec::new();
        for _ in 0..hosts {
            hs.push(host_on(workers, Some(url.clone())).await);
        }
        let stats_before = commands_processed(&mut conn).await;
        let cpu_before = redis_cpu(&mut conn).await;
        let trips_before: u64 = hs
            .iter()
            .map(|(h, _)| h.redis.as_ref().map_or(0, |r| r.round_trips()))
            .sum();
        let body = json!({"type": "builtin.echo", "payload": {"n": 1}}).to_string();
        let start = Instant::now();
        let submitters = 32;
        let mut tasks = Vec::new();
        for s in 0..submitters {
            let engines: Vec<_> = hs.iter().map(|(h, _)| h.engine.clone()).collect();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                for i in (s..n).step_by(submitters) {
                    engines[i % engines.len()]
                        .submit_json(body.as_bytes())
                        .await
                        .expect("submit");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        let submitted = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done: usize = redis::cmd("ZCARD")
                .arg("dwa:idx:s:completed")
                .query_async(&mut conn)
                .await
                .expect("zcard");
            if done >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {done} of {n} tasks completed in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let total = start.elapsed();
        let trips: u64 = hs
            .iter()
            .map(|(h, _)| h.redis.as_ref().map_or(0, |r| r.round_trips()))
            .sum::<u64>()
            - trips_before;
        let commands = commands_processed(&mut conn).await - stats_before;
        let cpu = redis_cpu(&mut conn).await - cpu_before;
        println!(
            "{:<34} {n} tasks: enqueue {:>7.0}/s, processed {:>7.0} tasks/s end to end; {:.2} round trips, {:.1} Redis commands and {:.0} µs of Redis CPU per task (incl. submit; workers {workers}/host)",
            format!("redis, {hosts} host(s)"),
            n as f64 / submitted.as_secs_f64(),
            n as f64 / total.as_secs_f64(),
            trips as f64 / n as f64,
            commands as f64 / n as f64,
            cpu * 1e6 / n as f64,
        );
        for (h, _) in &hs {
            h.engine.shutdown(Duration::from_secs(1)).await;
        }
    }
}

/// The large shapes on Redis: a wide DAG and a forEach, each on one host
/// (a task's steps live in one hash there). Needs REDIS_URL.
async fn redis_pipelines_bench() {
    let Some((url, mut conn)) = bench_redis("redis-pipelines").await else {
        return;
    };
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let workers = 256;
    let (h, _d) = host_on(workers, Some(url.clone())).await;
    let shapes = [
        (
            "redis: wide DAG (1 → 4,998 → 1)",
            5_000usize,
            "step",
            wide_task(5_000),
        ),
        (
            "redis: forEach (20,000 items)",
            20_000,
            "item",
            foreach_task(20_000),
        ),
    ];
    for (label, n, unit, task) in shapes {
        let cpu = redis_cpu(&mut conn).await;
        let t = run_to_completion(&h, task).await;
        let cpu = redis_cpu(&mut conn).await - cpu;
        report(
            label,
            n as u64,
            t,
            &format!(
                "{:.0} µs of Redis CPU per {unit} (workers {workers})",
                cpu * 1e6 / n as f64
            ),
        );
    }
    h.engine.shutdown(Duration::from_secs(1)).await;
}

/// Numeric fields of one `INFO` section, summed.
async fn redis_info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    keys: &[&str],
) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("info");
    keys.iter()
        .filter_map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// Seconds of CPU the Redis server has used (user + system): Redis runs
/// scripts on one core, so its CPU per task bounds what any number of hosts
/// can process.
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    redis_info(conn, "cpu", &["used_cpu_user", "used_cpu_sys"]).await
}

async fn commands_processed(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis_info(conn, "stats", &["total_commands_processed"]).await as u64
}
