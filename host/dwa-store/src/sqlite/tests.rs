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

fn with_held_fsync() -> (SqliteStore, HeldFsync, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (store, fsync) = SqliteStore::open_with_held_fsync(dir.path()).unwrap();
    (store, fsync, dir)
}

/// Lets the held fsync through and waits (bounded) until the store settles.
async fn release_and_settle(s: &SqliteStore, fsync: &HeldFsync) {
    fsync.release(Ok(()));
    tokio::time::timeout(std::time::Duration::from_secs(10), s.settled())
        .await
        .expect("settled within 10 s of the fsync")
        .unwrap();
}

async fn next_event(feed: &mut EventFeed) -> Arc<TaskEvent> {
    match tokio::time::timeout(std::time::Duration::from_secs(10), feed.next()).await {
        Ok(crate::Feed::Event(e)) => e,
        Ok(_) => panic!("the feed ended"),
        Err(_) => panic!("no event within 10 s of the fsync"),
    }
}

#[tokio::test]
async fn events_and_settled_wait_for_the_fsync_and_leases_need_none() {
    use futures::FutureExt;
    let (s, fsync, _dir) = with_held_fsync();
    let mut feed = s.subscribe();
    s.create_task(crate::conformance::chain_task(2))
        .await
        .unwrap();
    // Answered and visible to the workers before it is on disk ...
    let l = s.lease("default", "a", 10, 60_000).await.unwrap();
    assert_eq!(
        l.jobs.len(),
        1,
        "a committed job is leased before its fsync"
    );
    // ... but not to anyone outside the process.
    assert!(
        s.settled().now_or_never().is_none(),
        "settled before the fsync"
    );
    assert!(
        feed.next().now_or_never().is_none(),
        "an event left before the fsync"
    );
    release_and_settle(&s, &fsync).await;
    assert_eq!(next_event(&mut feed).await.kind, "step:start");
    // A lease-only commit (here a renewal) has nothing to wait for.
    s.renew(&l.jobs, 60_000).await.unwrap();
    assert!(
        matches!(s.settled().now_or_never(), Some(Ok(()))),
        "a renewal waited for an fsync"
    );
    // A completion does.
    s.complete(&l.jobs[0], json!({"n": 1})).await.unwrap();
    assert!(
        s.settled().now_or_never().is_none(),
        "a result settled before its fsync"
    );
    release_and_settle(&s, &fsync).await;
}

#[tokio::test]
async fn a_failed_fsync_refuses_every_later_write() {
    let (s, fsync, _dir) = with_held_fsync();
    s.create_task(crate::conformance::chain_task(1))
        .await
        .unwrap();
    fsync.release(Err(std::io::Error::other("disk on fire")));
    let err = s.settled().await.expect_err("settled after a failed fsync");
    assert!(err.to_string().contains("could not fsync"), "{err}");
    let err = s
        .create_task(crate::conformance::chain_task(1))
        .await
        .expect_err("a write taken after a failed fsync");
    assert!(err.to_string().contains("disk on fire"), "{err}");
}
