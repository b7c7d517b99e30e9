//! Sub-tasks on every store: a held job spawns its child and waits for
//! it in one transition; the child's end makes the job due again.

use std::sync::Arc;

use serde_json::json;

use super::{LEASE, chain_task, events_since, started_chain};
use crate::clock::{Clock, ManualClock};
use crate::{ParentLink, Store, StoreError};
use dwa_core::model::{StepStatus, TaskStatus};

pub(super) async fn a_subtask_wakes_its_parents_job_however_it_ends(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    for cancel in [false, true] {
        let (parent, job) = started_chain(&s, 2).await;
        let child = chain_task(1);
        let child_id = child.id.clone();
        let until = c.now_ms() + 60_000;
        let t = s.spawn(&job, "0", child, until).await.unwrap();
        assert_eq!(
            t.woke,
            vec!["default".to_string()],
            "the child's first step is queued"
        );
        assert_eq!(t.task.as_deref(), Some(parent.as_str()));
        assert!(
            events_since(&s, &parent, 0)
                .await
                .iter()
                .any(|e| e.kind == "step:subtask" && e.data["taskId"] == child_id.as_str())
        );
        let rec = s.task(&parent).await.unwrap().unwrap();
        assert_eq!(rec.steps[0].status, StepStatus::Waiting);
        let link = s.task_summary(&child_id).await.unwrap().unwrap().parent;
        assert_eq!(
            link,
            Some(ParentLink {
                task_id: parent.clone(),
                step: 0,
                key: "0".into(),
                item: None
            })
        );
        assert_eq!(s.child_of(&job).await.unwrap(), Some(child_id.clone()));
        assert_eq!(
            s.live_children(&parent).await.unwrap(),
            vec![child_id.clone()]
        );
        // Only the child's job is due: the parent's waits.
        let jobs = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
        assert_eq!(
            jobs.iter().map(|j| j.task_id.as_str()).collect::<Vec<_>>(),
            vec![child_id.as_str()]
        );
        let ended = if cancel {
            s.cancel(&child_id).await.unwrap()
        } else {
            s.complete(&jobs[0], json!({"from": "child"}))
                .await
                .unwrap()
        };
        assert!(
            ended.woke.contains(&"default".to_string()),
            "the parent's queue is woken (cancelled child: {cancel}): {:?}",
            ended.woke
        );
        let again = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
        assert_eq!(
            again.len(),
            1,
            "the parent's job is due at once (cancelled child: {cancel})"
        );
        assert_eq!(
            (again[0].task_id.as_str(), again[0].step),
            (parent.as_str(), 0)
        );
        assert_eq!(
            again[0].attempt, job.attempt,
            "waiting for a child costs no attempt"
        );
        assert_eq!(s.child_of(&again[0]).await.unwrap(), Some(child_id.clone()));
        assert!(s.live_children(&parent).await.unwrap().is_empty());
        let status = s.task_summary(&child_id).await.unwrap().unwrap().status;
        assert_eq!(
            status,
            if cancel {
                TaskStatus::Cancelled
            } else {
                TaskStatus::Completed
            }
        );
    }
}

pub(super) async fn a_job_not_held_spawns_nothing(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let (parent, job) = started_chain(&s, 1).await;
    s.release(std::slice::from_ref(&job)).await.unwrap();
    let child = chain_task(1);
    let child_id = child.id.clone();
    let r = s.spawn(&job, "0", child, c.now_ms() + 1_000).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    assert_eq!(
        s.task_summary(&child_id).await.unwrap(),
        None,
        "no child was made"
    );
    assert!(s.live_children(&parent).await.unwrap().is_empty());
}
