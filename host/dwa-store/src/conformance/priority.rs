//! Priorities (docs/tasks.md, "Priorities") on every store: higher first,
//! FIFO among equals, and aging by `PRIORITY_AGING_MS`.

use std::sync::Arc;

use serde_json::json;

use super::{LEASE, chain_task};
use crate::clock::{Clock, ManualClock};
use crate::{NewTask, PRIORITY_AGING_MS, Store};

/// A chain of `n` steps whose steps all have priority `p`.
fn chain_at(n: u32, p: i32) -> NewTask {
    let mut t = chain_task(n);
    for s in &mut t.steps {
        s.priority = p;
    }
    t
}

/// Creates one single-step task per priority; their ids in that order.
async fn create_each(s: &Arc<dyn Store>, priorities: &[i32]) -> Vec<String> {
    let mut ids = Vec::new();
    for p in priorities {
        let t = chain_at(1, *p);
        ids.push(t.id.clone());
        s.create_task(t).await.unwrap();
    }
    ids
}

/// Leases one job at a time until none is due: the task ids in lease order.
async fn lease_order(s: &Arc<dyn Store>) -> Vec<String> {
    let mut order = Vec::new();
    loop {
        let mut l = s.lease("default", "w", 1, LEASE).await.unwrap();
        match l.jobs.pop() {
            Some(j) => order.push(j.task_id),
            None => return order,
        }
    }
}

pub(super) async fn higher_priorities_lease_first_and_equals_in_order(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    // Created in the same millisecond of the store's clock.
    let ids = create_each(&s, &[0, 5, 0, 5, -3]).await;
    let want = vec![&ids[1], &ids[3], &ids[0], &ids[2], &ids[4]];
    assert_eq!(lease_order(&s).await.iter().collect::<Vec<_>>(), want);
}

pub(super) async fn a_waiting_job_gains_a_level_per_aging_interval(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let old = create_each(&s, &[0]).await;
    c.advance(3 * PRIORITY_AGING_MS + 1);
    // Priority 3 is three levels up, but the old job has aged three levels
    // and a millisecond; priority 4 still goes ahead of it.
    let new = create_each(&s, &[3, 4]).await;
    assert_eq!(
        lease_order(&s).await.iter().collect::<Vec<_>>(),
        [&new[1], &old[0], &new[0]]
    );
}

pub(super) async fn a_delayed_job_is_ranked_when_it_becomes_due(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let now = c.now_ms();
    let early = create_each(&s, &[0]).await;
    let mut late = chain_at(1, 10);
    late.run_at = Some(now + 1_000);
    let late_id = late.id.clone();
    s.create_task(late).await.unwrap();
    c.advance(1_000);
    assert_eq!(
        lease_order(&s).await.iter().collect::<Vec<_>>(),
        [&late_id, &early[0]]
    );

    // A retry waits out its delay, then takes its rank again.
    let first = create_each(&s, &[0]).await;
    let mut l = s.lease("default", "w", 1, LEASE).await.unwrap();
    let job = l.jobs.pop().unwrap();
    assert_eq!(job.task_id, first[0]);
    s.retry(&job, c.now_ms() + 500, "boom").await.unwrap();
    let other = create_each(&s, &[1]).await;
    assert_eq!(
        lease_order(&s).await.iter().collect::<Vec<_>>(),
        [&other[0]],
        "the retry is not due yet"
    );
    c.advance(500);
    assert_eq!(
        lease_order(&s).await.iter().collect::<Vec<_>>(),
        [&first[0]]
    );
}

pub(super) async fn items_and_dependants_keep_their_steps_priority(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    let high = chain_at(2, 5);
    let high_id = high.id.clone();
    s.create_task(high).await.unwrap();
    let mut l = s.lease("default", "w", 1, LEASE).await.unwrap();
    let step0 = l.jobs.pop().unwrap();
    let low = create_each(&s, &[0]).await;
    // The high task's first step fans out: its items go ahead of `low`.
    s.start_items(&step0, 2, 2).await.unwrap();
    let items = s.lease("default", "w", 2, LEASE).await.unwrap().jobs;
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|j| j.task_id == high_id && j.item.is_some())
    );
    for j in &items {
        s.complete(j, json!(1)).await.unwrap();
    }
    // ... and so does its second step, released by the first.
    assert_eq!(
        lease_order(&s).await.iter().collect::<Vec<_>>(),
        [&high_id, &low[0]]
    );
}

pub(super) async fn queue_depths_count_waiting_and_delayed_jobs_and_the_heads_place(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    assert_eq!(s.queue_depths(10).await.unwrap(), vec![], "nothing waits");
    let t0 = c.now_ms();
    create_each(&s, &[0, 0]).await;
    c.advance(12_000);
    // Priority 1 ranks one level (10 s) ahead of its due time: still
    // behind the first two, which are the head.
    create_each(&s, &[1]).await;
    let mut later = chain_at(1, 0);
    later.run_at = Some(t0 + 30_000);
    s.create_task(later).await.unwrap();
    let mut other = chain_at(1, 0);
    other.queue = "gpu".into();
    other.steps[0].queue = "gpu".into();
    s.create_task(other).await.unwrap();
    let depth = |queue: &str, waiting, delayed, head_since| crate::QueueDepth {
        queue: queue.into(),
        waiting,
        delayed,
        head_since,
    };
    assert_eq!(
        s.queue_depths(10).await.unwrap(),
        vec![
            depth("default", 3, 1, Some(t0)),
            depth("gpu", 1, 0, Some(t0 + 12_000))
        ]
    );
    assert_eq!(
        s.queue_depths(1).await.unwrap(),
        vec![depth("default", 3, 1, Some(t0))],
        "the deepest queue first"
    );

    // Leased jobs no longer wait; the delayed one waits once due, from its due time.
    let leased = s.lease("default", "w", 3, LEASE).await.unwrap().jobs;
    assert_eq!(leased.len(), 3);
    c.advance(18_000);
    assert_eq!(
        s.queue_depths(10).await.unwrap()[0],
        depth("default", 1, 0, Some(t0 + 30_000))
    );
    for job in &leased {
        s.complete(job, json!(null)).await.unwrap();
    }
    let mut l = s.lease("default", "w", 1, LEASE).await.unwrap();
    s.complete(&l.jobs.remove(0), json!(null)).await.unwrap();
    assert_eq!(
        s.queue_depths(10).await.unwrap(),
        vec![depth("gpu", 1, 0, Some(t0 + 12_000))],
        "an emptied queue is not shown"
    );

    // A task that ends takes its queued jobs with it, delayed ones too.
    let mut doomed = chain_at(3, 0);
    doomed.run_at = Some(c.now_ms() + 60_000);
    let doomed_id = doomed.id.clone();
    s.create_task(doomed).await.unwrap();
    assert_eq!(s.queue_depths(10).await.unwrap()[0].delayed, 1);
    s.cancel(&doomed_id).await.unwrap();
    assert_eq!(
        s.queue_depths(10).await.unwrap(),
        vec![depth("gpu", 1, 0, Some(t0 + 12_000))],
        "a cancelled task's delayed job is not counted"
    );
}
