//! Schedules through the engine and the embedded store, on a clock the
//! tests move: catch-up after downtime, overlap, pause, and two hosts
//! firing one tick.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::engine::Engine;
use crate::engine::tests::{engine_on, on_manual_clock};
use dwa_core::schedule::ScheduleView;
use dwa_store::Store;

/// 2026-12-01T00:00:00Z: an exact hour.
const T0: i64 = 1_796_083_200_000;
const MIN: i64 = 60_000;

async fn create(engine: &Engine, body: Value) -> ScheduleView {
    match engine.create_schedule(body.to_string().as_bytes()).await {
        Ok(v) => v,
        Err(e) => panic!("schedule refused: {e}"),
    }
}

async fn fire(engine: &Arc<Engine>) {
    if let Err(e) = engine.fire_schedules().await {
        panic!("firing failed: {e}");
    }
}

async fn read(engine: &Engine, id: &str) -> ScheduleView {
    match engine.schedule(id).await {
        Ok(v) => v,
        Err(e) => panic!("cannot read schedule {id}: {e}"),
    }
}

/// Ticks of the recent runs, as ms.
fn ticks(v: &ScheduleView) -> Vec<i64> {
    v.recent
        .iter()
        .filter_map(|r| dwa_core::model::parse_rfc3339(&r.tick))
        .collect()
}

/// A task that stays pending for an hour: a run that is still going.
fn long_task() -> Value {
    json!({"type": "builtin.echo", "payload": {}, "delay": 3_600_000})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_caught_up_by_each_policy_after_downtime() {
    let (_dir, clock, _store, engine) = on_manual_clock(T0).await;
    for (id, catch_up) in [("none", "none"), ("latest", "latest"), ("all", "all")] {
        create(
            &engine,
            json!({"id": id, "cron": "0 * * * *", "catchUp": catch_up, "catchUpLimit": 2,
                   "overlap": "allow", "task": {"type": "builtin.echo", "payload": {}}}),
        )
        .await;
    }
    // No host fired anything for three hours and a half.
    clock.advance(210 * MIN);
    fire(&engine).await;
    let h = 60 * MIN;
    assert_eq!(ticks(&read(&engine, "none").await), Vec::<i64>::new());
    assert_eq!(ticks(&read(&engine, "latest").await), vec![T0 + 3 * h]);
    assert_eq!(
        ticks(&read(&engine, "all").await),
        vec![T0 + 2 * h, T0 + 3 * h],
        "the newest catchUpLimit ticks, oldest first"
    );
    for id in ["none", "latest", "all"] {
        let v = read(&engine, id).await;
        assert_eq!(
            v.next_run_at.as_deref(),
            Some("2026-12-01T04:00:00.000Z"),
            "{id}"
        );
    }
    engine.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_decides_what_a_tick_does_while_the_last_run_is_going() {
    let (_dir, clock, store, engine) = on_manual_clock(T0).await;
    for overlap in ["skip", "allow", "cancelPrevious"] {
        create(
            &engine,
            json!({"id": overlap, "cron": "* * * * *", "overlap": overlap, "task": long_task()}),
        )
        .await;
    }
    for _ in 0..2 {
        clock.advance(MIN);
        fire(&engine).await;
    }
    let skip = read(&engine, "skip").await;
    assert_eq!((skip.runs, skip.skipped), (1, 1));
    let allow = read(&engine, "allow").await;
    assert_eq!((allow.runs, allow.skipped), (2, 0));
    let cancel = read(&engine, "cancelPrevious").await;
    assert_eq!((cancel.runs, cancel.skipped), (2, 0));
    let status = |id: String| {
        let store = store.clone();
        async move {
            match store.task_summary(&id).await {
                Ok(Some(t)) => t.status,
                other => panic!("task {id}: {other:?}"),
            }
        }
    };
    use dwa_core::model::TaskStatus::{Cancelled, Pending};
    assert_eq!(status(allow.recent[0].task_id.clone()).await, Pending);
    assert_eq!(status(cancel.recent[0].task_id.clone()).await, Cancelled);
    assert_eq!(status(cancel.recent[1].task_id.clone()).await, Pending);
    engine.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_fires_nothing_and_resumes_at_its_next_tick() {
    let (_dir, clock, _store, engine) = on_manual_clock(T0).await;
    create(
        &engine,
        json!({"id": "p", "cron": "* * * * *", "catchUp": "all", "task": long_task()}),
    )
    .await;
    let paused = engine.pause_schedule("p", true).await;
    assert!(
        matches!(&paused, Ok(v) if v.paused && v.next_run_at.is_none()),
        "{paused:?}"
    );
    clock.advance(3 * MIN + 30_000);
    fire(&engine).await;
    assert_eq!(
        read(&engine, "p").await.runs,
        0,
        "a paused schedule fires nothing"
    );
    let resumed = match engine.pause_schedule("p", false).await {
        Ok(v) => v,
        Err(e) => panic!("resume failed: {e}"),
    };
    assert_eq!(
        resumed.next_run_at.as_deref(),
        Some("2026-12-01T00:04:00.000Z"),
        "the paused ticks are not caught up"
    );
    clock.advance(30_000);
    fire(&engine).await;
    assert_eq!(ticks(&read(&engine, "p").await), vec![T0 + 4 * MIN]);
    engine.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_firing_one_tick_make_one_task() {
    let (_dir, clock, store, first) = on_manual_clock(T0).await;
    let second = engine_on(store.clone());
    create(
        &first,
        json!({"id": "once", "cron": "* * * * *", "overlap": "allow",
               "task": {"type": "builtin.echo", "payload": {}}}),
    )
    .await;
    clock.advance(MIN);
    tokio::join!(fire(&first), fire(&second));
    let v = read(&first, "once").await;
    assert_eq!(v.runs, 1, "{v:?}");
    let tasks = match store
        .list(&dwa_store::ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
    {
        Ok(t) => t,
        Err(e) => panic!("cannot list tasks: {e}"),
    };
    assert_eq!(tasks.len(), 1, "one task for one tick");
    assert_eq!(tasks[0].id, v.recent[0].task_id);
    first.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_whose_task_cannot_run_is_refused_naming_the_field() {
    let (_dir, _clock, _store, engine) = on_manual_clock(T0).await;
    let refused = |body: Value| {
        let engine = engine.clone();
        async move {
            match engine.create_schedule(body.to_string().as_bytes()).await {
                Ok(v) => panic!("{body} should be refused, got {v:?}"),
                Err(crate::engine::EngineError::BadSchedule(f)) => f.field,
                Err(crate::engine::EngineError::Invalid(errs)) => errs[0].field.clone(),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    };
    let task = json!({"type": "builtin.echo", "payload": {}});
    assert_eq!(
        refused(json!({"cron": "61 * * * *", "task": task})).await,
        "cron"
    );
    assert_eq!(refused(json!({"cron": "* * * * *"})).await, "(body)");
    assert_eq!(refused(json!({"cron": 5, "task": task})).await, "cron");
    assert_eq!(
        refused(json!({"cron": "* * * * *", "task": {"type": "x", "idempotencyKey": "k", "payload": {}}})).await,
        "task.idempotencyKey"
    );
    assert_eq!(
        refused(json!({"cron": "* * * * *", "task": {"type": "no.such.task", "payload": {}}}))
            .await,
        "task.type"
    );
    assert_eq!(
        refused(json!({"cron": "* * * * *", "task": {"steps": 3}})).await,
        "task.steps"
    );
    engine.shutdown(std::time::Duration::from_secs(1)).await;
}
