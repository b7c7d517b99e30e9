//! Lifecycle effects at least once: the store records a task's `onPending`,
//! `onSuccess` or `onError` list as due in the very transition that makes
//! it so (its outbox), and every host claims due lists for a lease,
//! delivers them and settles them. A host killed between a task's end and
//! its webhook leaves the list due; the lease runs out and another host (or
//! the same one restarted) delivers it. An effect that fails is tried again
//! with backoff, the ones already delivered are not; each call carries a
//! stable delivery id (`X-DWA-Delivery` on plugin HTTP) so that receivers
//! can drop a repeat. docs/tasks.md, "Effects".

use std::sync::Arc;
use std::time::Duration;

use dwa_store::{DueEffects, Settled, StoreError};

use super::Engine;
use super::effects::{Delivery, Lifecycle, fire_list};

/// How long a claimed list is the claimer's: longer than an effect call
/// may take (a plugin's own timeout is at most a few minutes).
const LEASE_MS: i64 = 300_000;
/// Lists claimed per store call.
const CLAIM: usize = 32;
/// How often a host looks for lists due that no transition of its own
/// announced (another host's, or one whose claimer died).
const POLL: Duration = Duration::from_millis(500);
/// Tries of a list before its failing effects are given up.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// The wait before try `attempt + 1`: 1 s, 2 s, 4 s, ...
pub(crate) fn backoff_ms(attempt: u32) -> i64 {
    1000i64 << attempt.saturating_sub(1).min(10)
}

impl Engine {
    /// Claims and delivers due lifecycle lists until the engine stops.
    pub(super) async fn outbox_loop(self: Arc<Self>) {
        loop {
            let claimed = tokio::select! {
                r = self.store.claim_effects(CLAIM, LEASE_MS) => r,
                _ = self.stop_leasing.cancelled() => return,
            };
            let full = match claimed {
                Ok(list) => {
                    let full = list.len() == CLAIM;
                    for due in list {
                        let me = self.clone();
                        self.tracker.spawn(async move { me.deliver(due).await });
                    }
                    full
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim due effects; trying again");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = self.outbox_wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = self.stop_leasing.cancelled() => return,
            }
        }
    }

    /// Delivers one claimed list and settles it.
    async fn deliver(self: Arc<Self>, due: DueEffects) {
        let Some(lifecycle) = Lifecycle::parse(&due.lifecycle) else {
            tracing::error!(lifecycle = %due.lifecycle, "unknown lifecycle in the outbox; dropped");
            self.settle(&due, Settled::Done).await;
            return;
        };
        let delivery = Delivery {
            delivered: due.delivered,
            with_id: true,
            attempt: due.attempt,
        };
        let fired = fire_list(self.clone(), due.task_id.clone(), lifecycle, None, delivery).await;
        let how = if fired.finished || due.attempt >= MAX_ATTEMPTS {
            if !fired.finished {
                tracing::warn!(task = %due.task_id, lifecycle = %due.lifecycle, attempts = due.attempt, "effects given up");
            }
            Settled::Done
        } else {
            Settled::Retry {
                at: self.store.now_ms() + backoff_ms(due.attempt),
                delivered: fired.delivered,
            }
        };
        self.settle(&due, how).await;
    }

    async fn settle(&self, due: &DueEffects, how: Settled) {
        match self.store.settle_effects(due, how).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost(_)) => {
                tracing::debug!(task = %due.task_id, lifecycle = %due.lifecycle, "delivery taken over by another claim")
            }
            Err(e) => {
                tracing::warn!(task = %due.task_id, error = %e, "cannot settle a delivery; it will be claimed again")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_back_off_doubling_from_a_second() {
        assert_eq!(
            (1..=5).map(backoff_ms).collect::<Vec<_>>(),
            vec![1000, 2000, 4000, 8000, 16000]
        );
        assert_eq!(backoff_ms(u32::MAX), 1000 << 10);
    }
}
