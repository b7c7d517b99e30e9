//! The Redis store against a real redis-server: the conformance suite, batching, restarts.

use super::*;
use crate::clock::ManualClock;
use dwa_core::model::StepStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let server = crate::testing::RedisServer::start();
    let url = server.url();
    crate::conformance::run_all(|clock: Arc<ManualClock>| {
        let url = url.clone();
        async move {
            let opts = RedisOptions {
                url,
                prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
                max_stalled: 3,
            };
            Arc::new(RedisStore::connect_with_clock(&opts, clock).await.unwrap()) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_stalls_too_often_fails_its_step() {
    let server = crate::testing::RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let opts = RedisOptions {
        url: server.url(),
        prefix: "stall".into(),
        max_stalled: 2,
    };
    let s = RedisStore::connect_with_clock(&opts, clock.clone())
        .await
        .unwrap();
    let t = crate::conformance::chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            s.lease("default", "w", 1, 1000).await.unwrap().jobs.len(),
            1
        );
        clock.advance(1001);
        assert_eq!(s.reap_expired().await.unwrap(), 1);
    }
    assert_eq!(
        s.lease("default", "w", 1, 1000).await.unwrap().jobs.len(),
        1
    );
    clock.advance(1001);
    s.reap_expired().await.unwrap();
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Failed);
    assert!(rec.error.unwrap().contains("stalled 3 times"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_swept_after_retention() {
    let server = crate::testing::RedisServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let opts = RedisOptions {
        url: server.url(),
        prefix: "sweep".into(),
        max_stalled: 3,
    };
    let s = RedisStore::connect_with_clock(&opts, clock.clone())
        .await
        .unwrap();
    let t = crate::conformance::chain_task(2);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    for _ in 0..2 {
        let j = s.lease("default", "w", 1, 1000).await.unwrap().jobs;
        s.complete(&j[0], serde_json::json!(1)).await.unwrap();
    }
    let cutoff = |c: &ManualClock| c.now_ms() - 3_600_000;
    assert_eq!(
        s.purge_finished(cutoff(&clock), 500).await.unwrap(),
        0,
        "kept within retention"
    );
    clock.advance(3_600_001);
    assert_eq!(s.purge_finished(cutoff(&clock), 500).await.unwrap(), 1);
    assert!(s.task(&id).await.unwrap().is_none());
    let mut conn = s.core.conn.clone();
    let keys: Vec<String> = conn.keys("sweep:*").await.unwrap();
    // The queue names and the lease zset (kept a skiplist by a member of
    // its own) are the store's, not the task's.
    let left: Vec<&String> = keys
        .iter()
        .filter(|k| !k.ends_with(":queues") && k.as_str() != "sweep:a")
        .collect();
    assert!(left.is_empty(), "nothing of the task is left: {left:?}");
}

async fn store(server: &crate::testing::RedisServer, prefix: &str) -> RedisStore {
    let opts = RedisOptions {
        url: server.url(),
        prefix: prefix.into(),
        max_stalled: 3,
    };
    RedisStore::connect(&opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_cancelled_task_do_not_hold_up_the_queue() {
    let server = crate::testing::RedisServer::start();
    let s = store(&server, "dead").await;
    // Ten cancelled tasks' jobs sit in front of a live one.
    for _ in 0..10 {
        let t = crate::conformance::chain_task(1);
        let id = t.id.clone();
        s.create_task(t).await.unwrap();
        s.cancel(&id).await.unwrap();
    }
    let live = crate::conformance::chain_task(1);
    let live_id = live.id.clone();
    s.create_task(live).await.unwrap();
    let got = s.lease("default", "w", 1, 30_000).await.unwrap();
    assert_eq!(got.jobs.len(), 1, "the live job is found behind dead ones");
    assert_eq!(got.jobs[0].task_id, live_id);
    assert_eq!(got.next_due, None, "the dead jobs are gone from the queue");
}

/// Creations sharing a script run each get the jobs they asked for, none
/// twice, and none taken for a refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_share_runs_and_split_their_leases() {
    let server = crate::testing::RedisServer::start();
    let s = Arc::new(store(&server, "handed").await);
    let tasks: Vec<(NewTask, usize)> = (0..200)
        .map(|i| (crate::conformance::chain_task(1), 1 + (i % 2) * 2))
        .collect();
    let dup = (tasks[0].0.clone(), 2);
    let before = s.round_trips();
    let mut calls = Vec::new();
    for (t, max) in tasks.into_iter().chain(std::iter::once(dup)) {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            (
                max,
                s.create_and_lease(t, "default", "w", max, 30_000).await,
            )
        }));
    }
    let mut handed = std::collections::HashSet::new();
    let mut duplicates = 0;
    for c in calls {
        match c.await.unwrap() {
            (max, Ok((t, jobs))) => {
                assert!(jobs.len() <= max, "{} jobs for {max} asked", jobs.len());
                if jobs.len() < max {
                    assert!(t.woke.is_empty(), "a dry queue is not woken: {:?}", t.woke);
                }
                for j in jobs {
                    assert!(
                        handed.insert(j.task_id.clone()),
                        "{} handed twice",
                        j.task_id
                    );
                }
            }
            (_, Err(StoreError::Duplicate(_))) => duplicates += 1,
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(duplicates, 1);
    let runs = s.round_trips() - before;
    assert!(
        runs <= 201 / 4,
        "201 concurrent creations took {runs} script runs"
    );
    // Each run asked for at least as many jobs as its tasks made due.
    assert_eq!(handed.len(), 200, "every new job is handed to its creators");
    assert!(crate::conformance::leases_nothing(&(s as Arc<dyn Store>), "default").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_script_runs_and_keep_their_own_outcomes() {
    let server = crate::testing::RedisServer::start();
    let s = Arc::new(store(&server, "batch").await);
    let tasks: Vec<NewTask> = (0..200)
        .map(|_| crate::conformance::chain_task(1))
        .collect();
    let dup = tasks[0].clone();
    let before = s.round_trips();
    let mut calls = Vec::new();
    for t in tasks.into_iter().chain(std::iter::once(dup)) {
        let s = s.clone();
        calls.push(tokio::spawn(async move { s.create_task(t).await }));
    }
    let mut ok = 0;
    let mut duplicates = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(t) => {
                assert_eq!(t.woke, vec!["default".to_string()]);
                ok += 1;
            }
            Err(StoreError::Duplicate(_)) => duplicates += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, duplicates), (200, 1));
    let creates = s.round_trips() - before;
    assert!(
        creates <= 201 / 4,
        "201 concurrent creations took {creates} script runs: they were not shared"
    );

    // Every job completes once, each completion with its own outcome.
    let jobs = s.lease("default", "w", 500, 30_000).await.unwrap().jobs;
    assert_eq!(jobs.len(), 200);
    let before = s.round_trips();
    let mut calls = Vec::new();
    for j in jobs.iter().cloned() {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            s.complete_and_lease(&j, serde_json::json!(j.step), "default", "w", 30_000)
                .await
        }));
    }
    for c in calls {
        let (t, next) = c.await.unwrap().unwrap();
        assert_eq!(t.finished, Some(TaskStatus::Completed));
        assert!(next.is_none(), "nothing else is queued");
    }
    let completions = s.round_trips() - before;
    assert!(
        completions <= 200 / 4,
        "200 concurrent completions took {completions} script runs: they were not shared"
    );
    let again = s.complete(&jobs[0], serde_json::json!(1)).await;
    assert!(matches!(again, Err(StoreError::LeaseLost(_))));
    let done = s
        .list(&ListFilter {
            status: Some(TaskStatus::Completed),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_replay_in_pages_from_the_task_hash() {
    let server = crate::testing::RedisServer::start();
    let s = store(&server, "events").await;
    let t = crate::conformance::chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let events: Vec<NewEvent> = (0..25)
        .map(|i| NewEvent {
            kind: "step:progress".into(),
            step: Some(0),
            data: serde_json::json!({ "i": i }),
        })
        .collect();
    s.append_events(&id, events, u64::MAX).await.unwrap();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.events(&id, after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq;
        seen.extend(page.into_iter().map(|e| e.data["i"].as_u64().unwrap()));
    }
    assert_eq!(seen, (0..25).collect::<Vec<u64>>());
    assert!(s.events("no-such-task", 0, 10).await.unwrap().is_empty());
}

/// `1 → n → 1`: big enough to cross the scripts' slicing of long
/// argument lists (Lua's unpack limit).
fn wide_task(n: u32) -> NewTask {
    let step = |key: String, waiting_for, dependants: Vec<u32>| crate::NewStep {
        key,
        task: "builtin.echo".into(),
        queue: "default".into(),
        priority: 0,
        waiting_for,
        dependants,
    };
    let mut steps = vec![step("first".into(), 0, (1..=n).collect())];
    for i in 1..=n {
        steps.push(step(format!("m{i}"), 1, vec![n + 1]));
    }
    steps.push(step("last".into(), n, vec![]));
    let mut t = crate::conformance::chain_task(1);
    t.steps = steps;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_pipeline_runs_and_fails_whole() {
    let server = crate::testing::RedisServer::start();
    let s = store(&server, "wide").await;
    let n = 3000;
    for fail in [false, true] {
        let t = wide_task(n);
        let id = t.id.clone();
        s.create_task(t).await.unwrap();
        let first = s.lease("default", "w", 10, 30_000).await.unwrap().jobs;
        assert_eq!(first.len(), 1);
        s.complete(&first[0], serde_json::json!(0)).await.unwrap();
        let mut middle = Vec::new();
        loop {
            let got = s.lease("default", "w", 1000, 30_000).await.unwrap().jobs;
            if got.is_empty() {
                break;
            }
            middle.extend(got);
        }
        assert_eq!(
            middle.len(),
            n as usize,
            "every middle step is released once"
        );
        if fail {
            let tr = s.fail(&middle[7], "boom").await.unwrap();
            assert_eq!(tr.finished, Some(TaskStatus::Failed));
            let rec = s.task(&id).await.unwrap().unwrap();
            let skipped = rec
                .steps
                .iter()
                .filter(|st| st.status == StepStatus::Skipped)
                .count();
            assert_eq!(skipped, n as usize, "all but the failed one and the first");
            assert!(matches!(
                s.complete(&middle[8], serde_json::json!(1)).await,
                Err(StoreError::LeaseLost(_))
            ));
            continue;
        }
        for j in &middle {
            s.complete(j, serde_json::json!(j.step)).await.unwrap();
        }
        let last = s.lease("default", "w", 10, 30_000).await.unwrap().jobs;
        assert_eq!(last.len(), 1, "the join step is released once");
        assert_eq!(last[0].step, n + 1);
        let rec = complete_last(&s, &last[0], &id).await;
        assert_eq!(rec.steps.len(), n as usize + 2);
    }
}

/// A completion batch holds several steps of each of its tasks (their
/// parallel steps run together): each must count, get its own event in one
/// unbroken sequence, and release the join once.
#[tokio::test]
async fn steps_of_one_task_leased_and_completed_in_one_call_each_count() {
    let server = crate::testing::RedisServer::start();
    let s = Arc::new(store(&server, "together").await);
    let n = 8;
    let t = wide_task(n);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let first = s.lease("default", "w", 10, 30_000).await.unwrap().jobs;
    s.complete(&first[0], serde_json::json!("first"))
        .await
        .unwrap();
    let middle = s.lease("default", "w", 100, 30_000).await.unwrap().jobs;
    assert_eq!(
        middle.len(),
        n as usize,
        "one lease takes every middle step"
    );
    let before = s.round_trips();
    // A current-thread runtime: every completion is queued before the
    // batcher runs, so they share script runs.
    let calls: Vec<_> = middle
        .iter()
        .cloned()
        .map(|j| {
            let s = s.clone();
            tokio::spawn(async move {
                s.complete_and_lease(&j, serde_json::json!(j.step), "default", "w", 30_000)
                    .await
            })
        })
        .collect();
    let mut joins = Vec::new();
    for c in calls {
        let (tr, next) = c.await.unwrap().unwrap();
        assert_eq!(tr.finished, None);
        joins.extend(next);
    }
    let runs = s.round_trips() - before;
    assert!(
        runs < u64::from(n),
        "{n} completions took {runs} script runs: none shared one"
    );
    assert_eq!(joins.len(), 1, "the join is released once: {joins:?}");
    assert_eq!(joins[0].step, n + 1);

    let rec = s.task(&id).await.unwrap().unwrap();
    for st in &rec.steps[1..=n as usize] {
        assert_eq!(st.status, StepStatus::Completed, "{st:?}");
        assert_eq!(st.result, Some(serde_json::json!(st.idx)), "{st:?}");
    }
    let expected = 100.0 * f64::from(n + 1) / f64::from(n + 2);
    assert!(
        (rec.progress - expected).abs() < 0.01,
        "progress {} after {} of {} steps",
        rec.progress,
        n + 1,
        n + 2
    );
    let events = s.events(&id, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let unbroken: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, unbroken, "event seqs");
    let completed = events.iter().filter(|e| e.kind == "step:complete").count();
    assert_eq!(
        completed,
        n as usize + 1,
        "a step:complete per completed step"
    );
    let started = events.iter().filter(|e| e.kind == "step:start").count();
    assert_eq!(started, n as usize + 2, "a step:start per leased step");

    complete_last(&s, &joins[0], &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_stay_in_a_skiplist_however_few_and_none_is_left_behind() {
    let server = crate::testing::RedisServer::start();
    let s = store(&server, "skip").await;
    let mut conn = s.core.conn.clone();
    for _ in 0..2 {
        let t = crate::conformance::chain_task(1);
        s.create_task(t).await.unwrap();
        let job = s.lease("default", "w", 1, 30_000).await.unwrap().jobs;
        assert_eq!(job.len(), 1);
        // One lease: Redis would make a listpack of so small a zset.
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg("skip:a")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(encoding, "skiplist");
        s.complete(&job[0], serde_json::json!(1)).await.unwrap();
        // Its last lease gone, the zset is not deleted (and made again as
        // a listpack): only the member that keeps it a skiplist is left.
        let left: Vec<String> = redis::cmd("ZRANGE")
            .arg("skip:a")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(!left[0].contains('|'), "a job's lease was left: {left:?}");
    }
}

/// Jobs of one task handled in one script run read its hash with one HMGET
/// and write it with one HSET (docs/benchmarks.md, "Redis scripts"): each
/// command a script runs costs ~10,000 instructions around its own work.
#[tokio::test]
async fn a_call_reads_and_writes_each_of_its_tasks_once() {
    let server = crate::testing::RedisServer::start();
    let s = Arc::new(store(&server, "once").await);
    let mut conn = s.core.conn.clone();
    let n = 8;
    s.create_task(wide_task(n)).await.unwrap();
    let first = s.lease("default", "w", 10, 30_000).await.unwrap().jobs;
    s.complete(&first[0], serde_json::json!(0)).await.unwrap();

    reset_stats(&mut conn).await;
    let middle = s.lease("default", "w", 100, 30_000).await.unwrap().jobs;
    assert_eq!(middle.len(), n as usize);
    assert_eq!(calls(&mut conn, "hmget").await, 1, "reads of {n} leases");
    assert_eq!(calls(&mut conn, "hset").await, 1, "writes of {n} leases");

    reset_stats(&mut conn).await;
    let before = s.round_trips();
    // A current-thread runtime: the completions are queued before the
    // batcher runs, so they share script runs.
    let calls_made: Vec<_> = middle
        .into_iter()
        .map(|j| {
            let s = s.clone();
            tokio::spawn(async move { s.complete(&j, serde_json::json!(j.step)).await })
        })
        .collect();
    for c in calls_made {
        c.await.unwrap().unwrap();
    }
    let runs = s.round_trips() - before;
    assert!(runs < u64::from(n), "{n} completions took {runs} runs");
    // Per run: the task's fields, then its join's (once, however many of
    // the run's steps it waits for).
    assert!(calls(&mut conn, "hmget").await <= 2 * runs);
    assert_eq!(calls(&mut conn, "hset").await, runs, "one write per run");
    assert_eq!(calls(&mut conn, "hincrby").await, 0);
}

async fn reset_stats(conn: &mut redis::aio::ConnectionManager) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// How often Redis ran a command (scripts' commands included) since the last reset.
async fn calls(conn: &mut redis::aio::ConnectionManager, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let head = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(head.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Completes a wide task's join with "end": the task completes with that result.
async fn complete_last(s: &RedisStore, join: &Job, id: &str) -> TaskRecord {
    let tr = s.complete(join, serde_json::json!("end")).await.unwrap();
    assert_eq!(tr.finished, Some(TaskStatus::Completed));
    let rec = s.task(id).await.unwrap().unwrap();
    assert_eq!(rec.result, Some(serde_json::json!("end")));
    rec
}

#[test]
fn the_scripts_age_priorities_as_the_rust_side_ranks() {
    let lib = include_str!("lib.lua");
    let line = format!("local AGING_MS = {}\n", crate::PRIORITY_AGING_MS);
    assert!(lib.contains(&line), "lib.lua must say {line:?}");
}

#[test]
fn the_scripts_never_is_the_rust_constant() {
    let line = format!("local NEVER = '{}'\n", crate::NEVER);
    assert!(
        include_str!("lib.lua").contains(&line),
        "lib.lua must define {line:?}"
    );
}
