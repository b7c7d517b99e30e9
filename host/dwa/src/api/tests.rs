//! The router's own layers, against an engine on a store whose fsyncs the
//! test holds.

use super::*;
use dwa_core::catalog::Catalog;
use dwa_engine::engine::EngineConfig;
use dwa_engine::executor::Executor;
use dwa_store::sqlite::SqliteStore;

#[tokio::test]
async fn an_answer_waits_for_the_fsync_of_the_write_it_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let (store, fsync) = SqliteStore::open_with_held_fsync(dir.path()).unwrap();
    let store: Arc<dyn dwa_store::Store> = Arc::new(store);
    let engine = Engine::new(
        store.clone(),
        Catalog::with_builtins(),
        Executor::new(Vec::new()),
        EngineConfig::default(),
        None,
    );
    let state = AppState {
        engine,
        api_token: None,
        backends: Arc::default(),
        sse_linger: Duration::ZERO,
        followers: crate::followers::Followers::new(1, 1),
        metrics: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state, 1 << 20);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut post = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{addr}/api/tasks"))
            .json(&json!({"type": "builtin.echo", "payload": {"x": 1}}))
            .send(),
    );
    // The task is committed (a worker could lease it) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store
        .list(&ListFilter {
            limit: 1,
            ..ListFilter::default()
        })
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the task was not committed within 10 s"
        );
        tokio::task::yield_now().await;
    }
    // ... but not acknowledged before its fsync.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut post)
            .await
            .is_err(),
        "POST /api/tasks answered before the fsync"
    );
    fsync.release(Ok(()));
    let resp = tokio::time::timeout(Duration::from_secs(10), post)
        .await
        .expect("no answer within 10 s of the fsync")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}
