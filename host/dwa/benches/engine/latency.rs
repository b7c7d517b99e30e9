//! Submit → step start (#16, target 2): tasks POSTed open loop at 500/s to
//! a host with 5 workers; each one's clock starts when the sender wakes to
//! send it (the sender never waits for answers) and stops when its
//! `step:start` event reaches a subscriber, which on the embedded store is
//! after the task's creation is on disk. On the embedded store, and on
//! Redis when `REDIS_URL` is set; bench/bullmq/latency.js is BullMQ's
//! add → processor start on the same Redis.

use super::*;

const RATE: u64 = 500;
const TASKS: u64 = 2_500;

async fn run(h: &dwa::server::Host, label: &str, key: &str) {
    let addr = serve(h).await;
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
    let body = json!({"type": "builtin.echo", "payload": {"hello": "world"}}).to_string();
    let period = Duration::from_micros(1_000_000 / RATE);
    let origin = Instant::now() + Duration::from_millis(10);
    let mut sends = Vec::new();
    for i in 0..TASKS {
        tokio::time::sleep_until((origin + period * i as u32).into()).await;
        let sent = Instant::now();
        let client = client.clone();
        let body = body.clone();
        let url = format!("http://{addr}/api/tasks");
        sends.push(tokio::spawn(async move {
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
            (r["id"].as_str().unwrap_or_default().to_owned(), sent)
        }));
    }
    let mut sent = Vec::new();
    for s in sends {
        sent.push(s.await.expect("join"));
    }
    let bound = Duration::from_secs(30);
    let deadline = Instant::now() + bound;
    while started.lock().expect("lock").len() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let map = started.lock().expect("lock");
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t0)| {
            map.get(id)
                .map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1000.0)
        })
        .collect();
    let missed = sent.len() - lat.len();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{:<34} {} tasks at {RATE}/s: sent→step-start p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {missed} not started within {}s (left out)",
        format!("latency [{label}]"),
        lat.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        bound.as_secs()
    );
    println!("BENCH latency.{key}.p50_ms={:.4}", pct(0.50));
    println!("BENCH latency.{key}.p99_ms={:.4}", pct(0.99));
}

pub(crate) async fn latency_bench() {
    let (h, _d) = host(5).await;
    run(&h, "embedded, on disk before it is seen", "embedded").await;
    h.engine.shutdown(Duration::from_secs(1)).await;
    let Some((url, durable)) = on_redis::fresh_redis("latency [redis]").await else {
        return;
    };
    let (h, _d) = host_on(5, Some(url)).await;
    run(&h, &format!("redis, {durable}"), "redis").await;
    h.engine.shutdown(Duration::from_secs(1)).await;
}
