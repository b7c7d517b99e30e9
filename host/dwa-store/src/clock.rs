//! The store's notion of "now", injectable so that lease expiry and retry
//! schedules are tested by moving a clock rather than by sleeping.

/// A source of the current time in ms since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time (ms).
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        dwa_core::model::now_ms()
    }
}

#[cfg(any(test, feature = "test-support"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "test-support"))]
mod manual {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::Clock;

    /// A clock that moves only when told: for deterministic tests.
    #[derive(Debug, Default)]
    pub struct ManualClock(AtomicI64);

    impl ManualClock {
        /// A clock standing at `ms`.
        pub fn new(ms: i64) -> Self {
            ManualClock(AtomicI64::new(ms))
        }

        /// Moves the clock forward by `ms`.
        pub fn advance(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }
}
