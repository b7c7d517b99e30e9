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

use crate::StoreError;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// How big a batch may grow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Most items per script run.
    pub items: usize,
    /// Most bytes of arguments per script run (a single larger item still goes, alone):
    /// bounds how long one script holds Redis, which runs nothing else meanwhile.
    pub bytes: usize,
    /// Script runs in flight at once.
    pub parallel: usize,
}

/// Sends items through one script run per batch; each caller gets its own outcome.
pub(super) struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<(T, Reply<R>)>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the batcher; `size` estimates an item's bytes of arguments;
    /// `run` answers one outcome per item, in order, or an error for the
    /// whole batch (the connection failed).
    pub(super) fn new<F, Fut>(limits: Limits, size: fn(&T) -> usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(T, Reply<R>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(limits.parallel.max(1)));
        let task = tokio::spawn(async move {
            // An item that did not fit in the previous batch opens the next.
            let mut carried: Option<(T, Reply<R>)> = None;
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let first = match carried.take() {
                    Some(x) => x,
                    None => match rx.recv().await {
                        Some(x) => x,
                        None => return,
                    },
                };
                let mut bytes = size(&first.0);
                let mut items = vec![first];
                while items.len() < limits.items {
                    match rx.try_recv() {
                        Ok(x) => {
                            let s = size(&x.0);
                            if bytes + s > limits.bytes {
                                carried = Some(x);
                                break;
                            }
                            bytes += s;
                            items.push(x);
                        }
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
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn limits(items: usize, bytes: usize, parallel: usize) -> Limits {
        Limits {
            items,
            bytes,
            parallel,
        }
    }

    #[tokio::test]
    async fn a_batch_stays_under_its_byte_limit_and_an_oversized_item_goes_alone() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let b = Arc::new(Batcher::new(
            limits(100, 10, 1),
            |n: &usize| *n,
            move |items: Vec<usize>| {
                seen.lock().unwrap().push(items.clone());
                async move {
                    tokio::task::yield_now().await;
                    Ok(items.into_iter().map(Ok).collect())
                }
            },
        ));
        let sizes = [4, 4, 4, 25, 3, 3, 3, 3];
        let calls: Vec<_> = sizes
            .iter()
            .map(|&n| {
                let b = b.clone();
                tokio::spawn(async move { b.call(n).await })
            })
            .collect();
        for (c, n) in calls.into_iter().zip(sizes) {
            assert_eq!(c.await.unwrap().unwrap(), n);
        }
        let batches = batches.lock().unwrap();
        for batch in batches.iter() {
            let total: usize = batch.iter().sum();
            assert!(
                total <= 10 || batch.len() == 1,
                "batch {batch:?} is over the limit"
            );
        }
        assert!(batches.iter().any(|b| b == &vec![25]), "{batches:?}");
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), sizes.len());
    }

    #[tokio::test]
    async fn concurrent_calls_share_runs_and_get_their_own_outcomes() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let b = Arc::new(Batcher::new(
            limits(64, 1 << 20, 1),
            |_| 1,
            move |items: Vec<u32>| {
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
            },
        ));
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
        // One run starts at once; the 99 callers behind it wait and go in
        // runs of at most 64: 3 runs. Without batching there would be 100.
        let runs = runs.load(Ordering::SeqCst);
        assert!(runs <= 3, "calls were batched: {runs} runs for 100 calls");
    }

    #[tokio::test]
    async fn a_failed_run_fails_every_caller_of_its_batch() {
        let b = Batcher::new(
            limits(8, 1 << 20, 2),
            |_| 1,
            |_items: Vec<u32>| async {
                Err::<Vec<Result<u32, StoreError>>, _>(StoreError::Backend("down".into()))
            },
        );
        assert!(matches!(b.call(1).await, Err(StoreError::Backend(m)) if m == "down"));
    }
}
