//! The host's own retries of its calls to a store that may be briefly away
//! (a Redis restart): no step's retry policy governs those.

use std::time::Duration;

/// Calls `again` while the outcome so far is an error `transient` accepts,
/// `tries` outcomes in all, 100 ms apart and doubling. For the host's own
/// calls to a store that may be briefly away, which no step's policy
/// governs; `first` is the outcome of the first call (which may differ
/// from the later ones), `what` names the call in the warning, built only
/// when there is one to give.
pub(crate) async fn while_transient<T, E: std::fmt::Display, F>(
    first: Result<T, E>,
    tries: u32,
    transient: impl Fn(&E) -> bool,
    what: impl Fn() -> String,
    mut again: impl FnMut() -> F,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut outcome = first;
    let mut pause = Duration::from_millis(100);
    for _ in 1..tries {
        match &outcome {
            Err(e) if transient(e) => {
                tracing::warn!(error = %e, "{} failed; trying again in {pause:?}", what());
                tokio::time::sleep(pause).await;
                pause *= 2;
                outcome = again().await;
            }
            _ => break,
        }
    }
    outcome
}
