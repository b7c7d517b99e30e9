//! The embedded store: the conformance suite, the process lock, reopening.

use super::*;
use crate::clock::ManualClock;
use serde_json::json;

#[tokio::test]
async fn conformance() {
    crate::conformance::run_all(|clock: Arc<ManualClock>| async move {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with_clock(dir.path(), clock).unwrap();
        // Keep the directory alive as long as the store.
        std::mem::forget(dir);
        Arc::new(store) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test]
async fn second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = SqliteStore::open(dir.path()).unwrap();
    let err = SqliteStore::open(dir.path())
        .err()
        .expect("must be refused");
    assert!(
        err.to_string().contains("in use by another dwa process"),
        "{err}"
    );
}

#[tokio::test]
async fn reopen_requeues_orphaned_leases_and_keeps_results() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let s = SqliteStore::open(dir.path()).unwrap();
        let t = crate::conformance::chain_task(2);
        id = t.id.clone();
        s.create_task(t).await.unwrap();
        let l = s.lease("default", "a", 10, 60_000).await.unwrap();
        s.complete(&l.jobs[0], json!({"n": 1})).await.unwrap();
        let l = s.lease("default", "a", 10, 60_000).await.unwrap();
        assert_eq!(l.jobs.len(), 1);
        // "crash" with step 1 leased.
    }
    let s = SqliteStore::open(dir.path()).unwrap();
    let l = s.lease("default", "b", 10, 60_000).await.unwrap();
    assert_eq!(l.jobs.len(), 1, "the orphaned job is leased again at once");
    assert_eq!(l.jobs[0].step, 1);
    let r = s.step_results(&id, &[0]).await.unwrap();
    assert_eq!(r[0], Some(json!({"n": 1})));
}
