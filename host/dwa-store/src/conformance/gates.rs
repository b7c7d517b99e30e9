//! Concurrency slots, rate cells and deferred jobs on every store
//! (docs/tasks.md, "Concurrency keys and rate limits").

use std::sync::Arc;

use super::{LEASE, events_since, last_seq, leases_nothing, started_chain};
use crate::clock::{Clock, ManualClock};
use crate::{Store, StoreError};
use dwa_core::model::StepStatus;

pub(super) async fn concurrency_slots_are_shared_up_to_the_limit_and_expire(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let until = c.now_ms() + 1_000;
    let take = |holder: &'static str, until: i64| {
        let s = s.clone();
        async move {
            s.acquire_slot("customer-1", 2, holder, until)
                .await
                .unwrap()
        }
    };
    assert!(take("h1", until).await);
    assert!(take("h2", until).await);
    assert!(!take("h3", until).await, "a third holder waits");
    assert!(
        s.acquire_slot("customer-2", 2, "h3", until).await.unwrap(),
        "keys are apart"
    );
    assert!(take("h1", until + 5_000).await, "a holder renews its slot");
    s.release_slot("customer-1", "h1").await.unwrap();
    assert!(take("h3", until).await, "a released slot is free");
    // The slots of h2 and h3 run out (their host died, say).
    c.advance(1_001);
    let later = c.now_ms() + 1_000;
    assert!(take("h4", later).await);
    assert!(take("h5", later).await);
    assert!(!take("h6", later).await, "still two at most");
}

pub(super) async fn a_rate_allows_its_burst_then_one_per_interval(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let t0 = c.now_ms();
    let take = || {
        let s = s.clone();
        async move { s.take_rate("openai", 2, 1_000).await.unwrap() }
    };
    assert_eq!(take().await, None);
    assert_eq!(take().await, None);
    assert_eq!(
        take().await,
        Some(t0 + 500),
        "two per second: the next in 500 ms"
    );
    assert_eq!(
        s.take_rate("other", 2, 1_000).await.unwrap(),
        None,
        "keys are apart"
    );
    c.advance(499);
    assert_eq!(take().await, Some(t0 + 500));
    c.advance(1);
    assert_eq!(take().await, None);
    assert_eq!(take().await, Some(t0 + 1_000));
    c.advance(10_000);
    assert_eq!(take().await, None, "an idle key has its burst again");
    assert_eq!(take().await, None);
}

pub(super) async fn a_deferred_job_waits_without_costing_an_attempt(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let (id, job) = started_chain(&s, 1).await;
    let until = c.now_ms() + 1_000;
    let before = last_seq(&s, &id).await;
    let t = s
        .defer(&job, until, Some("concurrency key k is at its limit 1"))
        .await
        .unwrap();
    assert_eq!(t.task.as_deref(), Some(id.as_str()));
    let recorded = events_since(&s, &id, before).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].kind, "step:waiting");
    assert_eq!(
        recorded[0].data["reason"],
        "concurrency key k is at its limit 1"
    );
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Waiting);
    assert!(leases_nothing(&s, "default").await, "not before its time");
    assert!(
        matches!(
            s.defer(&job, until, None).await,
            Err(StoreError::LeaseLost(_))
        ),
        "a given-back job is no longer held"
    );
    c.advance(1_000);
    let mut again = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    assert_eq!(again.len(), 1);
    let again = again.remove(0);
    assert_eq!(again.attempt, job.attempt, "waiting costs no attempt");
    let before = last_seq(&s, &id).await;
    let t = s.defer(&again, c.now_ms() + 10, None).await.unwrap();
    assert_eq!(t.task, None, "no event, no task to tell of");
    assert!(
        events_since(&s, &id, before).await.is_empty(),
        "no reason, no event"
    );
}
