//! dwa on Redis (one and two hosts, pipeline shapes) and Redis's own counters.

use super::*;

/// The Redis of a Redis scenario (`REDIS_URL`) and a connection to it, or
/// None (the scenario says it is skipped) when none is set.
pub(crate) async fn bench_redis(
    scenario: &str,
) -> Option<(String, redis::aio::MultiplexedConnection)> {
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

/// Empties the Redis under test, so that a scenario starts from nothing.
pub(crate) async fn flush(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("FLUSHALL")
        .query_async(conn)
        .await
        .expect("flush");
}

/// [`bench_redis`], emptied, with its durability for the rows' labels.
pub(crate) async fn fresh_redis(scenario: &str) -> Option<(String, String)> {
    let (url, mut conn) = bench_redis(scenario).await?;
    flush(&mut conn).await;
    let durable = durability(&mut conn).await;
    Some((url, durable))
}

/// What the Redis under test promises about durability, for the rows'
/// labels: `AOF fsync everysec`, `RDB snapshots`, or `no persistence`.
pub(crate) async fn durability(conn: &mut redis::aio::MultiplexedConnection) -> String {
    let get = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let kv: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            kv.get(1).cloned().unwrap_or_default()
        }
    };
    if get("appendonly").await == "yes" {
        format!("AOF fsync {}", get("appendfsync").await)
    } else if !get("save").await.is_empty() {
        "RDB snapshots only".into()
    } else {
        "no persistence".into()
    }
}

/// Single no-op tasks through Redis with one and two hosts: enqueue rate,
/// processed tasks/s, round trips and Redis commands per task. Needs REDIS_URL.
pub(crate) async fn redis_bench() {
    let Some((url, mut conn)) = bench_redis("redis").await else {
        return;
    };
    let n: usize = std::env::var("DWA_BENCH_REDIS_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let workers = 64;
    let durable = durability(&mut conn).await;
    for hosts in [1usize, 2] {
        flush(&mut conn).await;
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
            match hosts {
                1 => format!("redis, 1 host [{durable}]"),
                n => format!("redis, {n} engines in 1 process [{durable}]"),
            },
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
pub(crate) async fn redis_pipelines_bench() {
    let Some((url, mut conn)) = bench_redis("redis-pipelines").await else {
        return;
    };
    flush(&mut conn).await;
    let workers = 256;
    let durable = durability(&mut conn).await;
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
                "{:.0} µs of Redis CPU per {unit} (workers {workers}) [{durable}]",
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
