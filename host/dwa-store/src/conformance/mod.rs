//! The store conformance suite: the behaviour every [`Store`] must have,
//! written once against the trait and run by each implementation's tests
//! with a fresh store per case and a manual clock (no sleeps).

use std::future::Future;
use std::sync::Arc;

use serde_json::json;

use crate::clock::{Clock, ManualClock};
use crate::{Feed, ListFilter, NewEvent, NewStep, NewTask, Store, StoreError};
use dwa_core::model::{StepStatus, TaskEvent, TaskStatus};

mod branch;
mod create_lease;
mod gates;
mod priority;
mod resume;
mod schedules;
mod subtask;
mod wait;
use branch::*;
use create_lease::*;
use gates::*;
use priority::*;
use resume::*;
use schedules::*;
use subtask::*;
use wait::*;

/// Task `id`'s events after seq `after`: what a transition recorded, read
/// back from the store (a transition answers only its task and progress).
pub(crate) async fn events_since(s: &Arc<dyn Store>, id: &str, after: u64) -> Vec<TaskEvent> {
    s.events(id, after, 10_000).await.unwrap()
}

/// The seq of task `id`'s last event (0: none yet).
pub(crate) async fn last_seq(s: &Arc<dyn Store>, id: &str) -> u64 {
    events_since(s, id, 0).await.last().map_or(0, |e| e.seq)
}

/// A sequential task of `n` steps on the `default` queue.
pub fn chain_task(n: u32) -> NewTask {
    task_with(
        (0..n)
            .map(|i| NewStep {
                key: i.to_string(),
                task: "builtin.echo".into(),
                queue: "default".into(),
                priority: 0,
                waiting_for: u32::from(i > 0),
                dependants: if i + 1 < n { vec![i + 1] } else { vec![] },
            })
            .collect(),
        "default",
    )
}

/// A chain of `n` steps, created, with its first job leased: (task id, job).
pub(crate) async fn started_chain(s: &Arc<dyn Store>, n: u32) -> (String, crate::Job) {
    let t = chain_task(n);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let mut jobs = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    assert_eq!(jobs.len(), 1, "the chain's first step is ready");
    (id, jobs.remove(0))
}

/// `a → (b, c) → d`.
pub fn diamond_task() -> NewTask {
    let step = |key: &str, waiting_for, dependants: Vec<u32>| NewStep {
        key: key.into(),
        task: "builtin.echo".into(),
        queue: "default".into(),
        priority: 0,
        waiting_for,
        dependants,
    };
    task_with(
        vec![
            step("a", 0, vec![1, 2]),
            step("b", 1, vec![3]),
            step("c", 1, vec![3]),
            step("d", 2, vec![]),
        ],
        "default",
    )
}

pub(crate) fn task_with(steps: Vec<NewStep>, queue: &str) -> NewTask {
    NewTask {
        id: uuid::Uuid::now_v7().to_string(),
        task_type: "conformance".into(),
        queue: queue.into(),
        spec: "{}".into(),
        is_pipeline: true,
        steps,
        created_at: dwa_core::model::now_ms(),
        idempotency: None,
        effects: Default::default(),
        run_at: None,
    }
}

pub(crate) const LEASE: i64 = 30_000;

/// Whether a lease of `queue` finds nothing due (and so takes nothing).
pub(crate) async fn leases_nothing(s: &Arc<dyn Store>, queue: &str) -> bool {
    s.lease(queue, "w", 10, LEASE)
        .await
        .unwrap()
        .jobs
        .is_empty()
}

/// Runs every case; `make` builds a fresh, empty store on the given clock.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    macro_rules! case {
        ($name:ident) => {{
            let clock = Arc::new(ManualClock::new(1_700_000_000_000));
            let store = make(clock.clone()).await;
            $name(store, clock).await;
        }};
    }
    case!(lease_takes_ready_jobs_once);
    case!(completion_releases_dependants_atomically);
    case!(lease_expiry_returns_job_and_fences_old_holder);
    case!(renew_keeps_a_lease);
    case!(retry_is_scheduled_on_the_clock);
    case!(failure_skips_dependants_and_fails_task);
    case!(cancel_stops_pending_and_running);
    case!(for_each_items_respect_concurrency_and_order);
    case!(list_filters_and_cursor);
    case!(events_are_ordered_and_broadcast);
    case!(appended_events_stop_at_the_cap_with_one_capped_event);
    case!(duplicate_ids_are_refused);
    case!(an_idempotency_key_answers_its_first_task_until_it_expires);
    case!(lifecycle_effects_become_due_in_their_transition_and_are_claimed_at_least_once);
    case!(a_delayed_task_starts_no_step_before_its_time);
    case!(release_gives_jobs_back);
    case!(complete_and_lease_hands_over_the_released_step);
    case!(a_creation_hands_idle_workers_the_queues_first_jobs);
    case!(a_delayed_creation_leases_nothing_and_still_wakes);
    case!(a_refused_creation_leases_nothing);
    case!(retention_purges_only_finished_tasks_past_the_cutoff);
    case!(a_failed_task_runs_again_from_its_failed_step);
    case!(a_cancelled_task_resumes_with_each_job_leased_once);
    case!(only_failed_or_cancelled_tasks_resume);
    case!(a_resumed_task_owes_its_on_error_effects_again);
    case!(higher_priorities_lease_first_and_equals_in_order);
    case!(a_waiting_job_gains_a_level_per_aging_interval);
    case!(a_delayed_job_is_ranked_when_it_becomes_due);
    case!(items_and_dependants_keep_their_steps_priority);
    case!(queue_depths_count_waiting_and_delayed_jobs_and_the_heads_place);
    case!(a_parked_step_completes_with_its_signal);
    case!(a_wait_that_timed_out_takes_no_signal);
    case!(cancelling_a_task_ends_its_wait);
    case!(a_skipped_or_tolerated_step_releases_its_dependants);
    case!(ending_an_item_ends_its_step_and_drops_its_other_items);
    case!(concurrency_slots_are_shared_up_to_the_limit_and_expire);
    case!(a_rate_allows_its_burst_then_one_per_interval);
    case!(a_deferred_job_waits_without_costing_an_attempt);
    case!(a_subtask_wakes_its_parents_job_however_it_ends);
    case!(a_job_not_held_spawns_nothing);
    case!(schedules_are_created_once_listed_in_id_order_and_deleted);
    case!(a_schedule_is_due_at_its_tick_and_one_update_per_tick_wins);
    case!(paused_and_finished_schedules_are_never_due);
}

async fn lease_takes_ready_jobs_once(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = chain_task(2);
    let id = t.id.clone();
    let tr = s.create_task(t).await.unwrap();
    assert_eq!(tr.woke, vec!["default".to_string()]);
    assert_eq!(
        s.task(&id).await.unwrap().unwrap().status,
        TaskStatus::Pending
    );
    let l = s.lease("default", "w1", 10, LEASE).await.unwrap();
    assert_eq!(l.jobs.len(), 1, "only the first step of a chain is ready");
    assert_eq!(l.jobs[0].step, 0);
    assert_eq!(l.jobs[0].attempt, 1);
    let again = s.lease("default", "w2", 10, LEASE).await.unwrap();
    assert!(
        again.jobs.is_empty(),
        "a leased job is not handed out twice"
    );
    assert!(leases_nothing(&s, "gpu").await);
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Active);
    assert_eq!(rec.steps[0].status, StepStatus::Running);
    assert_eq!(rec.steps[1].status, StepStatus::Pending);
}

async fn completion_releases_dependants_atomically(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = diamond_task();
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let a = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(a.len(), 1);
    let tr = s.complete(&a[0], json!({"v": "a"})).await.unwrap();
    assert_eq!(tr.woke, vec!["default".to_string()]);
    // What the engine needs of it: whose effects, and how far along.
    assert_eq!(
        (tr.task.as_deref(), tr.progress),
        (Some(id.as_str()), Some(25.0))
    );
    let bc = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let mut steps: Vec<u32> = bc.iter().map(|j| j.step).collect();
    steps.sort();
    assert_eq!(steps, vec![1, 2], "both siblings are released");
    // Finish both siblings at the same moment: d must be released exactly once.
    let (r1, r2) = tokio::join!(
        s.complete(&bc[0], json!("x")),
        s.complete(&bc[1], json!("y"))
    );
    r1.unwrap();
    r2.unwrap();
    let d = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(d.len(), 1, "the join step is released once");
    assert_eq!(d[0].step, 3);
    let tr = s.complete(&d[0], json!({"done": true})).await.unwrap();
    assert_eq!(tr.finished, Some(TaskStatus::Completed));
    assert_eq!(tr.progress, Some(100.0));
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.result, Some(json!({"done": true})));
    assert_eq!(rec.progress, 100.0);
    assert!(
        rec.steps
            .iter()
            .all(|st| st.status == StepStatus::Completed)
    );
    let summary = s.task_summary(&id).await.unwrap().unwrap();
    assert_eq!((summary.status, &summary.result), (rec.status, &rec.result));
    assert!(summary.steps.is_empty(), "a summary carries no steps");
    assert!(s.task_summary("nope").await.unwrap().is_none());
    assert_eq!(
        s.step_results(&id, &[0, 3]).await.unwrap(),
        vec![Some(json!({"v": "a"})), Some(json!({"done": true}))]
    );
    // A completed step's job is gone: completing it again is refused.
    assert!(matches!(
        s.complete(&d[0], json!(1)).await,
        Err(StoreError::LeaseLost(_))
    ));
}

async fn lease_expiry_returns_job_and_fences_old_holder(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    s.create_task(chain_task(1)).await.unwrap();
    let old = s.lease("default", "dead", 1, 1_000).await.unwrap().jobs;
    assert_eq!(old.len(), 1);
    assert_eq!(s.reap_expired().await.unwrap(), 0, "not expired yet");
    c.advance(1_001);
    assert_eq!(s.reap_expired().await.unwrap(), 1);
    let new = s.lease("default", "alive", 1, LEASE).await.unwrap().jobs;
    assert_eq!(new.len(), 1, "expired job is leased again");
    assert_ne!(new[0].token, old[0].token);
    assert!(matches!(
        s.complete(&old[0], json!(1)).await,
        Err(StoreError::LeaseLost(_))
    ));
    s.complete(&new[0], json!(2)).await.unwrap();
}

async fn renew_keeps_a_lease(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    s.create_task(chain_task(1)).await.unwrap();
    let jobs = s.lease("default", "w", 1, 1_000).await.unwrap().jobs;
    c.advance(800);
    assert_eq!(s.renew(&jobs, 1_000).await.unwrap(), vec![true]);
    c.advance(800);
    assert_eq!(
        s.reap_expired().await.unwrap(),
        0,
        "renewed lease still valid"
    );
    c.advance(1_000);
    assert_eq!(s.reap_expired().await.unwrap(), 1);
    assert_eq!(
        s.renew(&jobs, 1_000).await.unwrap(),
        vec![false],
        "lost lease is reported"
    );
}

async fn retry_is_scheduled_on_the_clock(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let t = chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    let now = c.now_ms();
    let before = last_seq(&s, &id).await;
    let tr = s.retry(&j[0], now + 5_000, "flaky").await.unwrap();
    assert_eq!(tr.task.as_deref(), Some(id.as_str()));
    let recorded = events_since(&s, &id, before).await;
    assert!(
        recorded.iter().any(|e| e.kind == "step:retry"),
        "{recorded:?}"
    );
    let l = s.lease("default", "w", 1, LEASE).await.unwrap();
    assert!(l.jobs.is_empty(), "not due yet");
    assert_eq!(l.next_due, Some(now + 5_000));
    c.advance(5_000);
    let j2 = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    assert_eq!(j2.len(), 1);
    assert_eq!(j2[0].attempt, 2);
    assert!(matches!(
        s.complete(&j[0], json!(1)).await,
        Err(StoreError::LeaseLost(_))
    ));
    s.complete(&j2[0], json!("ok")).await.unwrap();
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.steps[0].attempts, 2);
    assert_eq!(rec.status, TaskStatus::Completed);
}

async fn failure_skips_dependants_and_fails_task(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = diamond_task();
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let a = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    s.complete(&a[0], json!(1)).await.unwrap();
    let bc = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let b = bc.iter().find(|j| j.step == 1).unwrap();
    let c = bc.iter().find(|j| j.step == 2).unwrap();
    let tr = s.fail(b, "boom").await.unwrap();
    assert_eq!(tr.finished, Some(TaskStatus::Failed));
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(
        rec.error.as_deref(),
        Some("step b (builtin.echo) failed: boom")
    );
    assert_eq!(rec.steps[1].status, StepStatus::Failed);
    assert_eq!(
        rec.steps[2].status,
        StepStatus::Skipped,
        "running sibling is aborted"
    );
    assert_eq!(rec.steps[3].status, StepStatus::Skipped);
    assert!(matches!(
        s.complete(c, json!(1)).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(leases_nothing(&s, "default").await);
}

async fn cancel_stops_pending_and_running(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = chain_task(3);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let tr = s.cancel(&id).await.unwrap();
    assert_eq!(tr.finished, Some(TaskStatus::Cancelled));
    assert_eq!(tr.task.as_deref(), Some(id.as_str()));
    let last = events_since(&s, &id, 0).await.pop().unwrap();
    assert_eq!(last.kind, "pipeline:complete");
    assert!(matches!(
        s.complete(&j[0], json!(1)).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(leases_nothing(&s, "default").await);
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Cancelled);
    assert!(rec.completed_at.is_some());
    assert!(rec.steps.iter().all(|st| st.status == StepStatus::Skipped));
    assert!(matches!(s.cancel(&id).await, Err(StoreError::Conflict(_))));
    assert!(matches!(
        s.cancel("nope").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn for_each_items_respect_concurrency_and_order(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let step = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    s.start_items(&step[0], 5, 2).await.unwrap();
    let first = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let items: Vec<Option<u32>> = first.iter().map(|j| j.item).collect();
    assert_eq!(
        items,
        vec![Some(0), Some(1)],
        "only `concurrency` items are queued"
    );
    // Finish out of order; results must come back in item order.
    let tr = s.complete(&first[1], json!("r1")).await.unwrap();
    assert_eq!(
        (tr.task.as_deref(), tr.progress),
        (Some(id.as_str()), Some(20.0)),
        "an item reports the step's progress"
    );
    let next = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(
        next.iter().map(|j| j.item).collect::<Vec<_>>(),
        vec![Some(2)]
    );
    s.complete(&next[0], json!("r2")).await.unwrap();
    s.complete(&first[0], json!("r0")).await.unwrap();
    let mut rest = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(rest.len(), 2);
    rest.reverse();
    for j in &rest {
        s.complete(j, json!(format!("r{}", j.item.unwrap())))
            .await
            .unwrap();
    }
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.result, Some(json!(["r0", "r1", "r2", "r3", "r4"])));

    // Zero items complete the step with an empty list.
    let t = chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let step = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let tr = s.start_items(&step[0], 0, 4).await.unwrap();
    assert_eq!(tr.finished, Some(TaskStatus::Completed));
    assert_eq!(s.task(&id).await.unwrap().unwrap().result, Some(json!([])));
}

async fn list_filters_and_cursor(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let mut ids = Vec::new();
    for q in ["a", "b", "a", "a"] {
        let mut t = chain_task(1);
        t.queue = q.into();
        t.steps[0].queue = q.into();
        ids.push(t.id.clone());
        s.create_task(t).await.unwrap();
    }
    let j = s.lease("a", "w", 1, LEASE).await.unwrap().jobs;
    s.complete(&j[0], json!(1)).await.unwrap();
    let all = s
        .list(&ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.reverse();
    assert_eq!(got, want, "newest first");
    let qa = s
        .list(&ListFilter {
            queue: Some("a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(qa.len(), 3);
    let done = s
        .list(&ListFilter {
            status: Some(TaskStatus::Completed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, ids[0], "leasing is FIFO: the oldest job ran");
    let page1 = s
        .list(&ListFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let page2 = s
        .list(&ListFilter {
            limit: 2,
            before: Some(page1[1].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page2.len(), 2);
    assert_eq!(page2[1].id, ids[0]);
}

async fn events_are_ordered_and_broadcast(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let mut rx = s.subscribe();
    let t = chain_task(2);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    for _ in 0..2 {
        let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
        c.advance(40);
        s.append_events(
            &id,
            vec![NewEvent {
                kind: "step:progress".into(),
                step: Some(j[0].step),
                data: json!({"pct": 50}),
            }],
            u64::MAX,
        )
        .await
        .unwrap();
        s.complete(&j[0], json!(j[0].step)).await.unwrap();
    }
    let evs = s.events(&id, 0, 100).await.unwrap();
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "step:start",
            "step:progress",
            "step:complete",
            "step:start",
            "step:progress",
            "step:complete",
            "pipeline:complete"
        ]
    );
    let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
    // The seed's timings, on the store's clock: each step ran 40 ms, the task 80.
    assert_eq!(evs[2].data["duration"], json!(40), "{:?}", evs[2].data);
    assert_eq!(evs[5].data["duration"], json!(40));
    assert_eq!(evs[6].data["totalDuration"], json!(80), "{:?}", evs[6].data);
    assert_eq!(evs[0].step_id.as_deref(), Some("0"));
    assert_eq!(evs[0].step_task.as_deref(), Some("builtin.echo"));
    assert_eq!(
        s.events(&id, 5, 100).await.unwrap().len(),
        2,
        "replay after a seq"
    );
    // Live delivery may be asynchronous (Redis pub/sub): wait, bounded.
    let mut live = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while live.len() < 7 {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Feed::Event(e)) if e.task_id == id => live.push(e.seq),
            Ok(Feed::Event(_)) => {}
            Ok(other) => panic!("event subscription failed: {other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(
        live,
        (1..=7).collect::<Vec<u64>>(),
        "every event is broadcast in order"
    );
    assert!(matches!(
        s.append_events("nope", vec![], u64::MAX).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn appended_events_stop_at_the_cap_with_one_capped_event(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    let t = chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    let chunk = |n: u64| NewEvent {
        kind: "step:progress".into(),
        step: Some(0),
        data: json!({"n": n}),
    };
    // step:start is event 1; the cap of 5 leaves room for 4 chunks.
    let first = s
        .append_events(&id, (0..3).map(chunk).collect(), 5)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let second = s
        .append_events(&id, (3..6).map(chunk).collect(), 5)
        .await
        .unwrap();
    let kinds: Vec<&str> = second.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["step:progress", crate::EVENTS_CAPPED]);
    assert_eq!(second[1].data, json!({"limit": 5}));
    assert!(
        s.append_events(&id, vec![chunk(9)], 5)
            .await
            .unwrap()
            .is_empty(),
        "nothing is appended once capped"
    );
    // The task's own transitions are still recorded.
    s.complete(&j[0], json!(1)).await.unwrap();
    let kinds: Vec<String> = s
        .events(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    assert_eq!(kinds[5], crate::EVENTS_CAPPED);
    assert_eq!(kinds.last().map(String::as_str), Some("pipeline:complete"));
}

async fn an_idempotency_key_answers_its_first_task_until_it_expires(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let keyed = |hash: &str| NewTask {
        idempotency: Some(crate::Idempotency {
            key: "order-42".into(),
            body_hash: hash.into(),
            expires_at: c.now_ms() + 60_000,
        }),
        ..chain_task(1)
    };
    let first = keyed("h1");
    let id = first.id.clone();
    s.create_task(first).await.unwrap();
    let again = s.create_task(keyed("h1")).await;
    assert!(
        matches!(&again, Err(StoreError::Idempotent { task_id, same_body: true }) if *task_id == id),
        "{again:?}"
    );
    let other = s.create_task(keyed("h2")).await;
    assert!(
        matches!(&other, Err(StoreError::Idempotent { task_id, same_body: false }) if *task_id == id),
        "{other:?}"
    );
    // Past its time to live the key is free again.
    c.advance(60_001);
    let later = keyed("h2");
    let later_id = later.id.clone();
    s.create_task(later).await.unwrap();
    assert!(s.task(&later_id).await.unwrap().is_some());
    // Without a key, nothing is deduplicated.
    s.create_task(chain_task(1)).await.unwrap();
}

async fn lifecycle_effects_become_due_in_their_transition_and_are_claimed_at_least_once(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let t = NewTask {
        effects: crate::Lifecycles {
            on_pending: true,
            on_success: true,
            on_error: true,
        },
        ..chain_task(1)
    };
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let lifecycles = |d: &[crate::DueEffects]| -> Vec<(String, u32)> {
        d.iter().map(|e| (e.lifecycle.clone(), e.attempt)).collect()
    };
    // onPending is due with the task; a claim hides it for its lease.
    let first = s.claim_effects(10, 1000).await.unwrap();
    assert_eq!(lifecycles(&first), vec![("onPending".to_string(), 1)]);
    assert_eq!(first[0].task_id, id);
    assert!(s.claim_effects(10, 1000).await.unwrap().is_empty());
    // A claimer that dies lets its lease run out: the next claim takes it,
    // and the first claimer can no longer settle it.
    c.advance(1001);
    let second = s.claim_effects(10, 1000).await.unwrap();
    assert_eq!(lifecycles(&second), vec![("onPending".to_string(), 2)]);
    assert!(matches!(
        s.settle_effects(&first[0], crate::Settled::Done).await,
        Err(StoreError::LeaseLost(_))
    ));
    s.settle_effects(&second[0], crate::Settled::Done)
        .await
        .unwrap();
    c.advance(5000);
    assert!(s.claim_effects(10, 1000).await.unwrap().is_empty());
    // onSuccess is due in the transition that completes the task; onError never.
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    s.complete(&j[0], json!(1)).await.unwrap();
    let done = s.claim_effects(10, 1000).await.unwrap();
    assert_eq!(lifecycles(&done), vec![("onSuccess".to_string(), 1)]);
    // A partial delivery comes back when it said, with what was delivered.
    let now = c.now_ms();
    s.settle_effects(
        &done[0],
        crate::Settled::Retry {
            at: now + 500,
            delivered: 0b101,
        },
    )
    .await
    .unwrap();
    assert!(s.claim_effects(10, 1000).await.unwrap().is_empty());
    c.advance(500);
    let again = s.claim_effects(10, 1000).await.unwrap();
    assert_eq!(lifecycles(&again), vec![("onSuccess".to_string(), 2)]);
    assert_eq!(again[0].delivered, 0b101);
    s.settle_effects(&again[0], crate::Settled::Done)
        .await
        .unwrap();
    c.advance(5000);
    assert!(s.claim_effects(10, 1000).await.unwrap().is_empty());
    // A task without effects puts nothing in the outbox.
    s.create_task(chain_task(1)).await.unwrap();
    assert!(s.claim_effects(10, 1000).await.unwrap().is_empty());
}

async fn a_delayed_task_starts_no_step_before_its_time(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let at = c.now_ms() + 5_000;
    let t = NewTask {
        run_at: Some(at),
        ..chain_task(1)
    };
    s.create_task(t).await.unwrap();
    let early = s.lease("default", "w", 1, LEASE).await.unwrap();
    assert!(early.jobs.is_empty(), "nothing before its time");
    assert_eq!(early.next_due, Some(at), "the lease says when");
    c.advance(5_000);
    assert_eq!(
        s.lease("default", "w", 1, LEASE).await.unwrap().jobs.len(),
        1
    );
}

async fn duplicate_ids_are_refused(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = chain_task(1);
    s.create_task(t.clone()).await.unwrap();
    assert!(matches!(
        s.create_task(t).await,
        Err(StoreError::Duplicate(_))
    ));
}

async fn release_gives_jobs_back(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    s.create_task(chain_task(1)).await.unwrap();
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    s.release(&j).await.unwrap();
    let again = s.lease("default", "w2", 1, LEASE).await.unwrap().jobs;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 1, "a released job keeps its attempt");
}

async fn complete_and_lease_hands_over_the_released_step(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    let t = chain_task(2);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let first = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    let (tr, next) = s
        .complete_and_lease(&first[0], json!("one"), "default", "w", LEASE)
        .await
        .unwrap();
    assert_eq!(tr.woke, vec!["default".to_string()]);
    // The handed-over job's start is not the completion's to report.
    assert_eq!(
        (tr.task.as_deref(), tr.progress),
        (Some(id.as_str()), Some(50.0))
    );
    let next = next.expect("the step it released is handed over");
    assert_eq!(next.step, 1);
    assert!(
        s.lease("default", "x", 10, LEASE)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    let (tr, none) = s
        .complete_and_lease(&next, json!("two"), "default", "w", LEASE)
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(tr.finished, Some(TaskStatus::Completed));
    assert_eq!(
        s.task(&id).await.unwrap().unwrap().result,
        Some(json!("two"))
    );
    assert!(matches!(
        s.complete_and_lease(&next, json!(3), "default", "w", LEASE)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
}

async fn retention_purges_only_finished_tasks_past_the_cutoff(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let done = chain_task(1);
    let done_id = done.id.clone();
    s.create_task(done).await.unwrap();
    let running = chain_task(2);
    let running_id = running.id.clone();
    s.create_task(running).await.unwrap();
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let first = j.iter().find(|j| j.task_id == done_id).unwrap();
    s.complete(first, json!(1)).await.unwrap();
    assert_eq!(
        s.purge_finished(c.now_ms(), 100).await.unwrap(),
        0,
        "ended at now, not before"
    );
    c.advance(10);
    assert_eq!(s.purge_finished(c.now_ms(), 100).await.unwrap(), 1);
    assert!(s.task(&done_id).await.unwrap().is_none());
    assert!(s.events(&done_id, 0, 10).await.unwrap().is_empty());
    assert!(
        s.task(&running_id).await.unwrap().is_some(),
        "a running task is kept"
    );
}
