//! DAG tasks end to end over HTTP (#16, target 1): 1,000 tasks, each ten
//! parallel no-op steps and a join after them, posted with 32 requests in
//! flight to a host with 100 workers, on the embedded store and on Redis.
//! bench/bullmq/flows.js runs BullMQ's closest shape (flows: a parent
//! waiting on ten children) on the same Redis; scripts/bench.sh prints the
//! ratio from the `BENCH` lines both print.

use super::*;

const TASKS: usize = 1_000;
const PARALLEL: usize = 10;
const IN_FLIGHT: usize = 32;
const WORKERS: usize = 100;

fn dag_task() -> Value {
    let mut steps: Vec<Value> = (0..PARALLEL)
        .map(|i| json!({"id": format!("s{i}"), "task": "builtin.echo"}))
        .collect();
    let all: Vec<String> = (0..PARALLEL).map(|i| format!("s{i}")).collect();
    steps.push(json!({"id": "join", "task": "builtin.echo", "dependsOn": all}));
    json!({"type": "dag", "payload": {"n": 1}, "steps": steps})
}

/// Posts TASKS DAG tasks over HTTP and waits until every one completed;
/// answers the time from the first POST to the last completion.
async fn run(h: &dwa::server::Host) -> Duration {
    let addr = serve(h).await;
    let mut feed = h.engine.store().subscribe();
    let start = Instant::now();
    let sending = tokio::spawn(post_tasks(addr, dag_task().to_string(), TASKS, IN_FLIGHT));
    let mut done = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while done < TASKS {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(Feed::Event(e)) if e.kind == "pipeline:complete" => {
                assert_eq!(e.data["status"], "completed", "{}", e.data);
                done += 1;
            }
            Ok(Feed::Event(_)) => {}
            Ok(Feed::Missed) => {
                // Fell behind the feed: count the completed tasks instead.
                done = completed(h).await;
            }
            Ok(Feed::Closed) => panic!("event feed closed"),
            Err(_) => panic!("only {done} of {TASKS} DAG tasks completed in 10 minutes"),
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(sending.await.expect("join"), TASKS);
    elapsed
}

async fn completed(h: &dwa::server::Host) -> usize {
    let filter = dwa_store::ListFilter {
        queue: None,
        status: Some(dwa_core::model::TaskStatus::Completed),
        before: None,
        limit: TASKS,
    };
    h.engine.store().list(&filter).await.expect("list").len()
}

fn report(store: &str, key: &str, t: Duration) {
    println!(
        "{:<34} {TASKS} tasks × {} steps: {:>6.2} s = {:>6.0} tasks/s, {:>7.0} steps/s (HTTP, {IN_FLIGHT} in flight, workers {WORKERS})",
        format!("DAG tasks [{store}]"),
        PARALLEL + 1,
        t.as_secs_f64(),
        TASKS as f64 / t.as_secs_f64(),
        (TASKS * (PARALLEL + 1)) as f64 / t.as_secs_f64(),
    );
    println!("BENCH {key}={:.4}", t.as_secs_f64());
}

pub(crate) async fn dag_bench() {
    let (h, _d) = host(WORKERS).await;
    let t = run(&h).await;
    report(
        "embedded, on disk before it is seen",
        "dag.embedded.seconds",
        t,
    );
    h.engine.shutdown(Duration::from_secs(1)).await;
    let Some((url, durable)) = on_redis::fresh_redis("DAG tasks [redis]").await else {
        return;
    };
    let (h, _d) = host_on(WORKERS, Some(url)).await;
    let t = run(&h).await;
    report(&format!("redis, {durable}"), "dag.redis.seconds", t);
    h.engine.shutdown(Duration::from_secs(1)).await;
}
