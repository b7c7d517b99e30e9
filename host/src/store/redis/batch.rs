//! Group commit for Redis scripts: calls that arrive while a script runs
//! are gathered and sent together as the next one.
//!
//! Redis runs scripts one at a time on one core, and a script's fixed cost
//! (parsing the request, entering Lua, the reply, the PUBLISH) is paid per
//! call, so many small calls saturate it long before the work does. A
//! batcher keeps at most `parallel` scripts in flight; everything that
//! arrives meanwhile rides in the next one. An idle store sends a call at
//! once (no timer, no added latency); a busy one sends fewer, larger calls.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::StoreError;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// Sends items through one script run per batch; each caller gets its own outcome.
pub(super) struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<(T, Reply<R>)>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the batcher; `run` answers one outcome per item, in order, or
    /// an error for the whole batch (the connection failed).
    pub(super) fn new<F, Fut>(max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, Reply<R>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else { return };
                let mut items = vec![first];
                while items.len() < max {
                    match rx.try_recv() {
                        Ok(x) => items.push(x),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (inputs, replies): (Vec<T>, Vec<Reply<R>>) = items.into_iter().unzip();
                    let n = replies.len();
                    match run(inputs).await {
                        Ok(outcomes) if outcomes.len() == n => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(outcome);
                            }
                        }
                        Ok(outcomes) => {
                            let e = StoreError::Backend(format!(
                                "redis: a batch of {n} got {} answers",
                                outcomes.len()
                            ));
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(slot);
                });
            }
        });
        Batcher { tx, task }
    }

    /// Queues one item and waits for its outcome.
    pub(super) async fn call(&self, item: T) -> Result<R, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }
}

impl<T, R> Drop for Batcher<T, R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_runs_and_get_their_own_outcomes() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let b = Arc::new(Batcher::new(64, 1, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                // Let the other callers queue up behind this run.
                tokio::task::yield_now().await;
                Ok(items
                    .into_iter()
                    .map(|i| {
                        if i % 2 == 0 {
                            Ok(i * 10)
                        } else {
                            Err(StoreError::Conflict(format!("odd {i}")))
                        }
                    })
                    .collect())
            }
        }));
        let calls: Vec<_> = (0..100u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for c in calls {
            let (i, r) = c.await.unwrap();
            match r {
                Ok(v) => assert_eq!(v, i * 10),
                Err(StoreError::Conflict(m)) => assert_eq!(m, format!("odd {i}")),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(
            runs.load(Ordering::SeqCst) < 100,
            "calls were batched: {} runs",
            runs.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_failed_run_fails_every_caller_of_its_batch() {
        let b = Batcher::new(8, 2, |_items: Vec<u32>| async {
            Err::<Vec<Result<u32, StoreError>>, _>(StoreError::Backend("down".into()))
        });
        assert!(matches!(b.call(1).await, Err(StoreError::Backend(m)) if m == "down"));
    }
}
