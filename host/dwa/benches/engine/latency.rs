//! Submit → step start (#16, target 2): tasks POSTed open loop at 500/s to
//! a host with 5 workers; each one's clock starts when the sender wakes to
//! send it (the sender never waits for answers). Two clocks stop: when the
//! step's span is first entered (the step's first instruction, the issue's
//! measure and BullMQ's "processor start"), and when its `step:start` event
//! reaches a subscriber, which on the embedded store is after the task's
//! creation is on disk. On the embedded store, and on Redis when
//! `REDIS_URL` is set; bench/bullmq/latency.js is BullMQ's add → processor
//! start on the same Redis.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, filter};

use super::*;

type Starts = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

/// The task a `step` span runs for, kept in the span until it is entered.
struct TaskOf(String);

/// Notes when each task's first step span is first entered: the engine
/// enters it as the step begins to run (`dwa_engine::engine::run`), the
/// same span OpenTelemetry exports as the step.
struct StepStarts(Starts);

impl Visit for TaskOf {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "task.id" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StepStarts {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut task = TaskOf(String::new());
        attrs.record(&mut task);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(task);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let now = Instant::now();
        if let Some(span) = ctx.span(id)
            && let Some(TaskOf(task)) = span.extensions().get::<TaskOf>()
        {
            self.0
                .lock()
                .expect("lock")
                .entry(task.clone())
                .or_insert(now);
        }
    }
}

/// The delays (ms) from each sent task to its mark, sorted, and how many
/// tasks have no mark.
fn delays(sent: &[(String, Instant)], marks: &HashMap<String, Instant>) -> (Vec<f64>, usize) {
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t0)| {
            marks
                .get(id)
                .map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let missed = sent.len() - lat.len();
    (lat, missed)
}

fn pct(lat: &[f64], p: f64) -> f64 {
    lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

const RATE: u64 = 500;
const TASKS: u64 = 2_500;

async fn run(h: &dwa::server::Host, starts: &Starts, label: &str, key: &str) {
    let addr = serve(h).await;
    let seen: Starts = Arc::default();
    let mut rx = h.engine.store().subscribe();
    let st = seen.clone();
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
    while seen.lock().expect("lock").len() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ran, missed) = delays(&sent, &starts.lock().expect("lock"));
    let (shown, unseen) = delays(&sent, &seen.lock().expect("lock"));
    println!(
        "{:<34} {} tasks at {RATE}/s: sent→step start p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; sent→step:start seen p50 {:.2} ms, p99 {:.2} ms; {} not started within {}s (left out)",
        format!("latency [{label}]"),
        ran.len(),
        pct(&ran, 0.50),
        pct(&ran, 0.99),
        pct(&ran, 1.0),
        pct(&shown, 0.50),
        pct(&shown, 0.99),
        missed.max(unseen),
        bound.as_secs()
    );
    println!("BENCH latency.{key}.p50_ms={:.4}", pct(&ran, 0.50));
    println!("BENCH latency.{key}.p99_ms={:.4}", pct(&ran, 0.99));
    println!("BENCH latency.{key}.seen_p50_ms={:.4}", pct(&shown, 0.50));
    println!("BENCH latency.{key}.seen_p99_ms={:.4}", pct(&shown, 0.99));
}

pub(crate) async fn latency_bench() {
    let starts: Starts = Arc::default();
    let layer = StepStarts(starts.clone()).with_filter(filter::filter_fn(|m| {
        m.target() == "dwa_otel" && m.name() == "step"
    }));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the latency scenario's subscriber");
    let (h, _d) = host(5).await;
    run(
        &h,
        &starts,
        "embedded, on disk before it is seen",
        "embedded",
    )
    .await;
    h.engine.shutdown(Duration::from_secs(1)).await;
    let Some((url, durable)) = on_redis::fresh_redis("latency [redis]").await else {
        return;
    };
    let (h, _d) = host_on(5, Some(url)).await;
    run(&h, &starts, &format!("redis, {durable}"), "redis").await;
    h.engine.shutdown(Duration::from_secs(1)).await;
}
