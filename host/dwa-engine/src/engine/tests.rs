//! The engine against stores that fail on purpose ([`Flaky`]).

use super::*;
use dwa_store::sqlite::SqliteStore;
use dwa_store::testing::Flaky;
use serde_json::json;

pub(super) fn engine_on(store: Arc<dyn Store>) -> Arc<Engine> {
    engine_taking(store, &[])
}

/// An engine whose clients may also name `queues` (the operator's `DWA_QUEUES`).
fn engine_taking(store: Arc<dyn Store>, queues: &[&str]) -> Arc<Engine> {
    engine_with(store, |l| {
        l.queues.extend(queues.iter().map(|q| (q.to_string(), 1)));
    })
}

/// An engine with the test limits as `change` leaves them.
fn engine_with(
    store: Arc<dyn Store>,
    change: impl FnOnce(&mut dwa_core::limits::Limits),
) -> Arc<Engine> {
    let mut limits = dwa_core::limits::Limits {
        queues: [("default".to_owned(), 2), ("gpu".to_owned(), 1)].into(),
        ..Default::default()
    };
    change(&mut limits);
    Engine::new(
        store,
        Catalog::with_builtins(),
        Executor::new(Vec::new()),
        EngineConfig {
            limits,
            lease_ms: 400,
            owner: "test".into(),
            ..EngineConfig::default()
        },
        None,
    )
}

/// Two engines on one embedded store behind a [`Flaky`] wrapper: one
/// that only takes submissions, and a worker that has none of their
/// plans cached (as another host would), so it loads them from the store.
async fn flaky_hosts(dir: &std::path::Path) -> (Arc<Engine>, Arc<Engine>, Arc<Flaky>) {
    let inner = match SqliteStore::open(dir) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("cannot open the store: {e}"),
    };
    let flaky = Arc::new(Flaky::new(inner));
    // Only the front host takes the queue that nobody serves.
    let front = engine_taking(flaky.clone(), &["nobody-serves-this"]);
    front.shutdown(Duration::ZERO).await;
    let worker = engine_on(flaky.clone());
    if let Err(e) = worker.start().await {
        panic!("engine did not start: {e}");
    }
    (front, worker, flaky)
}

/// Submits `spec` through `engine` and waits (bounded) for the task to end.
async fn run_to_end(engine: &Arc<Engine>, spec: Value) -> TaskView {
    let mut events = engine.store().subscribe();
    let body = spec.to_string();
    let id = match engine.submit_json(body.as_bytes()).await {
        Ok(c) => c.id,
        Err(e) => panic!("submission refused: {e}"),
    };
    next_event(&mut events, &id, "pipeline:complete").await;
    match engine.get(&id).await {
        Ok(v) => v,
        Err(e) => panic!("cannot read the task: {e}"),
    }
}

fn pipeline() -> Value {
    json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.echo", "input": {"n": 1}},
        {"id": "b", "task": "builtin.echo", "input": {"from": "{{steps.a.n}}"}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_before_a_step_runs_costs_it_no_attempt() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (engine, worker, flaky) = flaky_hosts(dir.path()).await;
    // The first job cannot load its task: a step without retries must
    // not fail for it, and the try it never made is not counted.
    flaky.fail_next("spec", 1);
    let t = run_to_end(&engine, pipeline()).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.final_result, Some(json!({"from": 1})));
    let steps = t.step_status.unwrap_or_default();
    assert!(steps.iter().all(|s| s.attempts == 1), "{steps:?}");
    assert_eq!(flaky.tripped(), vec!["spec"]);
    worker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_store_refused_is_sent_again_not_run_again() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (front, worker, flaky) = flaky_hosts(dir.path()).await;
    // The first step's result is refused twice, the failure of the
    // last one once: each step still runs exactly once.
    flaky.fail_next("complete", 2);
    flaky.fail_next("fail", 1);
    let spec = json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.echo", "input": {"n": 1}},
        {"id": "b", "task": "builtin.fail", "input": {"message": "no"}, "dependsOn": ["a"]}
    ]});
    let t = run_to_end(&front, spec).await;
    assert_eq!(t.status, TaskStatus::Failed, "{:?}", t.error);
    let steps = t.step_status.unwrap_or_default();
    assert_eq!(
        steps[0].status,
        dwa_core::model::StepStatus::Completed,
        "{steps:?}"
    );
    assert!(steps.iter().all(|s| s.attempts == 1), "{steps:?}");
    let events = match worker.store().events(&t.id, 0, 1000).await {
        Ok(e) => e,
        Err(e) => panic!("cannot read events: {e}"),
    };
    let starts = events.iter().filter(|e| e.kind == "step:start").count();
    assert_eq!(starts, 2, "a step ran again: {events:?}");
    assert_eq!(flaky.tripped(), ["complete", "complete", "fail"]);
    worker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_of_tasks_that_ended_unheard_are_dropped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (front, _worker, _flaky) = flaky_hosts(dir.path()).await;
    // The front host caches what it was given, and (its listener being
    // stopped, as when pub/sub drops the events) never hears the end.
    let t = run_to_end(&front, pipeline()).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    let waiting = json!({"type": "builtin.echo", "queue": "nobody-serves-this"}).to_string();
    if let Err(e) = front.submit_json(waiting.as_bytes()).await {
        panic!("submission refused: {e}");
    }
    let cached = || Engine::lock(&front.states).len();
    assert_eq!(cached(), 2);
    assert_eq!(front.forget_ended().await, 1);
    // The task still waiting keeps its plan.
    assert_eq!(cached(), 1);
    assert_eq!(front.forget_ended().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_effects_counts_its_enqueues_across_the_end_of_its_task() {
    use dwa_plugins::runtime::PluginHost;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("store: {e}"));
    let engine = engine_with(Arc::new(store), |l| l.max_enqueues_per_task = 3);
    let body = json!({"type": "builtin.echo"}).to_string();
    let id = match engine.submit_json(body.as_bytes()).await {
        Ok(c) => c.id,
        Err(e) => panic!("submission refused: {e}"),
    };
    let state = engine
        .plan_of(&id)
        .await
        .unwrap_or_else(|e| panic!("plan: {e}"));
    let host = effects::EngineServices::new(engine.clone(), id.clone(), state);
    let child = || json!({"type": "builtin.echo"});
    for n in 1..=2 {
        if let Err(e) = host.enqueue(&id, child()).await {
            panic!("enqueue {n} refused: {e}");
        }
    }
    // The task ends while its list is still being delivered: the engine
    // drops its cached state, and the list goes on counting.
    engine.finished(&id, TaskStatus::Completed);
    if let Err(e) = host.enqueue(&id, child()).await {
        panic!("enqueue 3 refused: {e}");
    }
    match host.enqueue(&id, child()).await {
        Err(e) => assert!(e.to_string().contains("DWA_MAX_ENQUEUES_PER_TASK"), "{e}"),
        Ok(t) => panic!("a fourth task was enqueued past the limit of 3: {t}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_even_be_given_back_returns_when_its_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (engine, worker, flaky) = flaky_hosts(dir.path()).await;
    flaky.fail_next("spec", 1);
    flaky.fail_next("release", 1);
    let t = run_to_end(&engine, pipeline()).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(flaky.tripped(), vec!["spec", "release"]);
    worker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_while_fanning_out_costs_the_step_no_attempt() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (engine, worker, flaky) = flaky_hosts(dir.path()).await;
    flaky.fail_next("start_items", 1);
    let t = run_to_end(
        &engine,
        json!({"type": "p", "steps": [
            {"id": "each", "task": "builtin.echo", "forEach": "{{payload.xs}}", "input": {"x": "{{item}}"}}
        ], "payload": {"xs": [1, 2, 3]}}),
    )
    .await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.final_result, Some(json!([{"x": 1}, {"x": 2}, {"x": 3}])));
    assert_eq!(flaky.tripped(), vec!["start_items"]);
    worker.shutdown(Duration::from_secs(1)).await;
}

/// Waits (bounded) for the next event of `kind` in a task's stream.
async fn next_event(
    feed: &mut dwa_store::EventFeed,
    id: &str,
    kind: &str,
) -> dwa_core::model::TaskEvent {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match feed.next().await {
                Feed::Event(e) if e.task_id == id && e.kind == kind => return (*e).clone(),
                Feed::Event(_) | Feed::Missed => {}
                Feed::Closed => panic!("event stream ended"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {kind} for task {id} within 20 s"))
}

/// A started engine on an embedded store whose clock reads `t0` until the
/// test moves it.
pub(super) async fn on_manual_clock(
    t0: i64,
) -> (
    tempfile::TempDir,
    Arc<dwa_store::clock::ManualClock>,
    Arc<SqliteStore>,
    Arc<Engine>,
) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let clock = Arc::new(dwa_store::clock::ManualClock::new(t0));
    let store = match SqliteStore::open_with_clock(dir.path(), clock.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("cannot open the store: {e}"),
    };
    let engine = engine_on(store.clone());
    if let Err(e) = engine.start().await {
        panic!("engine did not start: {e}");
    }
    (dir, clock, store, engine)
}

/// The engine's backoff through the engine and the store, on a clock the
/// test moves: each try is due exactly its delay after the last failed,
/// and starts then, not before (the clock moves only when the test says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_start_exactly_their_backoff_later_on_the_store_clock() {
    let t0 = 1_700_000_000_000;
    let (_dir, clock, store, engine) = on_manual_clock(t0).await;
    let mut feed = store.subscribe();
    let spec = json!({"type": "builtin.fail", "payload": {"failAttempts": 2},
                      "retry": {"attempts": 3, "backoff": "fixed", "delay": 1000}});
    let id = match engine.submit_json(spec.to_string().as_bytes()).await {
        Ok(c) => c.id,
        Err(e) => panic!("submission refused: {e}"),
    };
    for attempt in 1..=2u64 {
        let retry = next_event(&mut feed, &id, "step:retry").await;
        assert_eq!(retry.data["attempt"], attempt, "{retry:?}");
        assert_eq!(retry.data["retryInMs"], 1000, "{retry:?}");
        clock.advance(1000);
    }
    let done = next_event(&mut feed, &id, "pipeline:complete").await;
    assert_eq!(done.data["status"], "completed", "{done:?}");
    let events = match store.events(&id, 0, 100).await {
        Ok(e) => e,
        Err(e) => panic!("cannot read events: {e}"),
    };
    let starts: Vec<i64> = events
        .iter()
        .filter(|e| e.kind == "step:start")
        .map(|e| e.timestamp)
        .collect();
    assert_eq!(starts, vec![t0, t0 + 1000, t0 + 2000]);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn a_fan_out_queues_at_most_its_concurrency_and_never_more_than_the_window() {
    use super::run::{FAN_OUT_WINDOW, queued_at_once};
    assert_eq!(queued_at_once(None, 10), 10);
    assert_eq!(queued_at_once(None, 10_000), FAN_OUT_WINDOW);
    assert_eq!(queued_at_once(Some(4), 10_000), 4);
    assert_eq!(queued_at_once(Some(50_000), 10_000), FAN_OUT_WINDOW);
    assert_eq!(queued_at_once(None, 0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_wider_than_the_window_runs_every_item_in_order() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = match SqliteStore::open(dir.path()) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("cannot open the store: {e}"),
    };
    let engine = engine_on(store);
    if let Err(e) = engine.start().await {
        panic!("engine did not start: {e}");
    }
    let n = 2_500;
    let t = run_to_end(
        &engine,
        json!({"type": "wide", "payload": {"list": (0..n).collect::<Vec<u32>>()},
               "steps": [{"id": "e", "task": "builtin.echo", "forEach": "{{payload.list}}"}]}),
    )
    .await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    let want: Vec<Value> = (0..n).map(|i| json!(i)).collect();
    assert_eq!(t.result, Some(Value::Array(want)));
    engine.shutdown(Duration::from_secs(1)).await;
}

/// `delay` and `runAt`, through the engine and the store on a clock the
/// test moves: the first step starts exactly when the task said, not
/// before (the clock reaches that time only when the test moves it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_starts_exactly_at_its_time_on_the_store_clock() {
    use dwa_store::clock::Clock;
    let t0 = 1_700_000_000_000;
    let (_dir, clock, store, engine) = on_manual_clock(t0).await;
    let mut feed = store.subscribe();
    // 2023-11-14T22:13:21.5Z is t0 + 1500 ms.
    for (spec, at) in [
        (json!({"type": "builtin.echo", "delay": 1000}), t0 + 1000),
        (
            json!({"type": "builtin.echo", "runAt": "2023-11-14T22:13:21.5Z"}),
            t0 + 1500,
        ),
    ] {
        let id = match engine.submit_json(spec.to_string().as_bytes()).await {
            Ok(c) => c.id,
            Err(e) => panic!("submission refused: {e}"),
        };
        // A task queued after it runs to its end first: the delayed one,
        // ahead of it in the queue, has not started meanwhile.
        let after = run_to_end(&engine, json!({"type": "builtin.echo"})).await;
        assert_eq!(after.status, TaskStatus::Completed);
        let early = match store.events(&id, 0, 100).await {
            Ok(e) => e,
            Err(e) => panic!("cannot read events: {e}"),
        };
        assert!(
            early.iter().all(|e| e.kind != "step:start"),
            "{spec} started before its time: {early:?}"
        );
        clock.advance(at - clock.now_ms());
        let start = next_event(&mut feed, &id, "step:start").await;
        assert_eq!(start.timestamp, at, "{spec}");
        next_event(&mut feed, &id, "pipeline:complete").await;
    }
    // Both, or too far ahead, are refused.
    for (spec, field) in [
        (
            json!({"type": "builtin.echo", "delay": 1, "runAt": "2030-01-01T00:00:00Z"}),
            "delay",
        ),
        (
            json!({"type": "builtin.echo", "runAt": "tomorrow"}),
            "runAt",
        ),
        (
            json!({"type": "builtin.echo", "runAt": "2099-01-01T00:00:00Z"}),
            "runAt",
        ),
        (
            json!({"type": "builtin.echo", "delay": 31_536_000_001u64}),
            "delay",
        ),
    ] {
        match engine.submit_json(spec.to_string().as_bytes()).await {
            Err(EngineError::Invalid(errs)) => assert_eq!(errs[0].field, field, "{spec}"),
            other => panic!("{spec} was not refused: {other:?}"),
        }
    }
    engine.shutdown(Duration::from_secs(1)).await;
}

/// A task that reaches idle workers starts in its creation's store call:
/// it runs to the end while every lease call of the dispatch loops fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaching_idle_workers_starts_without_a_lease_call() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let inner = match SqliteStore::open(dir.path()) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("cannot open the store: {e}"),
    };
    let flaky = Arc::new(Flaky::new(inner));
    flaky.fail_next("lease", u32::MAX);
    let engine = engine_on(flaky.clone());
    if let Err(e) = engine.start().await {
        panic!("engine did not start: {e}");
    }
    // Both pools have made their first lease and wait 500 ms before the
    // next: their workers are idle meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flaky.tripped().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pools made no lease within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // `default` has two workers: the creation hands them `a` and `b`; `c`
    // follows in `b`'s completion (complete_and_lease).
    let spec = json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.echo", "input": {"n": 1}},
        {"id": "b", "task": "builtin.echo", "input": {"n": 2}},
        {"id": "c", "task": "builtin.echo", "dependsOn": ["a", "b"],
         "input": {"a": "{{steps.a.n}}", "b": "{{steps.b.n}}"}}
    ]});
    let t = run_to_end(&engine, spec).await;
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.final_result, Some(json!({"a": 1, "b": 2})));
    assert!(flaky.tripped().iter().all(|op| *op == "lease"));
    engine.shutdown(Duration::from_secs(1)).await;
}
