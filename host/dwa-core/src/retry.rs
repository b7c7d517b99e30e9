//! Backoff arithmetic for retries: `attempts` counts every try (BullMQ's
//! meaning); `fixed` waits `delay` each time; `exponential` doubles it each
//! retry up to `maxDelay`, with "equal jitter" so that many failed steps do not
//! retry in lockstep.

use std::time::Duration;

use crate::model::{Backoff, RetryConfig};

/// Whether a try that failed may be followed by another.
pub fn may_retry(policy: &RetryConfig, attempt: u32, retryable: bool) -> bool {
    retryable && attempt < policy.attempts
}

/// The wait before try `attempt + 1`, given that try `attempt` (from 1) failed.
/// `unit` is a random number in `[0, 1)` for the jitter.
pub fn delay_after(policy: &RetryConfig, attempt: u32, unit: f64) -> Duration {
    let base = policy.delay;
    let ms = match policy.backoff {
        Backoff::Fixed => base,
        Backoff::Exponential => {
            let exp = attempt.saturating_sub(1).min(32);
            let raw = base.saturating_mul(1u64 << exp);
            let capped = policy.max_delay.map_or(raw, |m| raw.min(m));
            // Equal jitter: half fixed, half random, never above the cap.
            let half = capped / 2;
            half + ((capped - half) as f64 * unit.clamp(0.0, 1.0)) as u64
        }
    };
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(delay: u64, max: Option<u64>) -> RetryConfig {
        RetryConfig {
            attempts: 5,
            backoff: Backoff::Exponential,
            delay,
            max_delay: max,
        }
    }

    #[test]
    fn attempts_count_the_first_try() {
        let p = RetryConfig {
            attempts: 3,
            ..Default::default()
        };
        assert!(may_retry(&p, 1, true));
        assert!(may_retry(&p, 2, true));
        assert!(!may_retry(&p, 3, true));
        assert!(
            !may_retry(&p, 1, false),
            "non-retryable errors are never retried"
        );
        assert!(!may_retry(&RetryConfig::default(), 1, true));
    }

    #[test]
    fn fixed_waits_the_same() {
        let p = RetryConfig {
            attempts: 3,
            backoff: Backoff::Fixed,
            delay: 250,
            max_delay: None,
        };
        for a in 1..4 {
            assert_eq!(delay_after(&p, a, 0.7), Duration::from_millis(250));
        }
    }

    #[test]
    fn exponential_doubles_with_jitter_and_cap() {
        let p = exp(1000, Some(30_000));
        // Upper end of the jitter: the full doubled delay.
        assert_eq!(delay_after(&p, 1, 1.0), Duration::from_millis(1000));
        assert_eq!(delay_after(&p, 2, 1.0), Duration::from_millis(2000));
        assert_eq!(delay_after(&p, 3, 1.0), Duration::from_millis(4000));
        // Lower end: half of it.
        assert_eq!(delay_after(&p, 3, 0.0), Duration::from_millis(2000));
        // The cap holds.
        assert_eq!(delay_after(&p, 10, 1.0), Duration::from_millis(30_000));
        assert_eq!(delay_after(&p, 40, 0.5), Duration::from_millis(22_500));
        // No overflow for huge attempt numbers without a cap.
        let p = exp(u64::MAX / 2, None);
        assert!(delay_after(&p, 60, 1.0) >= Duration::from_millis(u64::MAX / 4));
    }
}
