//! Checks of single fields: ids, queue names, retry policies, timeouts; and
//! the [`Checker`] that gathers every problem of a submission.

use crate::catalog::Catalog;
use crate::limits::Limits;
use crate::model::{RetryConfig, TaskSpec};

use super::{FieldError, MAX_ATTEMPTS};

/// Gathers every problem found, so that a submission hears of all of them.
pub(super) struct Checker<'a> {
    pub(super) errors: Vec<FieldError>,
    pub(super) catalog: &'a Catalog,
    pub(super) limits: &'a Limits,
    /// Problems past [`MAX_LISTED_ERRORS`], counted, not listed.
    dropped: usize,
    /// Whether sub-tasks are planned too (not when a stored task is read
    /// back: they were checked at submission, against another catalog).
    pub(super) deep: bool,
}

/// Problems listed in one refusal: a request with a million bad references
/// gets a bounded answer.
pub(super) const MAX_LISTED_ERRORS: usize = 100;

impl<'a> Checker<'a> {
    pub(super) fn new(catalog: &'a Catalog, limits: &'a Limits) -> Self {
        Checker {
            errors: Vec::new(),
            catalog,
            limits,
            dropped: 0,
            deep: true,
        }
    }

    pub(super) fn err(
        &mut self,
        step: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        if self.errors.len() >= MAX_LISTED_ERRORS {
            self.dropped += 1;
            return;
        }
        self.errors.push(FieldError {
            step: step.map(str::to_owned),
            field: field.into(),
            message: message.into(),
        });
    }
}

impl Checker<'_> {
    /// The problems found, with a last line counting those not listed.
    pub(super) fn into_errors(mut self) -> Vec<FieldError> {
        if self.dropped > 0 {
            self.errors.push(FieldError {
                step: None,
                field: "(task)".into(),
                message: format!("{} more problems, not listed", self.dropped),
            });
        }
        self.errors
    }
}

/// Longest wait `runAt` or `delay` may ask for: a year (ms).
pub const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// When the task may start, as `runAt` or `delay` say (ms since the epoch
/// for `runAt`); `None` when neither is set or one is wrong (reported).
pub(super) fn check_start(c: &mut Checker<'_>, spec: &TaskSpec) -> Option<super::StartAfter> {
    match (&spec.run_at, spec.delay) {
        (Some(_), Some(_)) => {
            c.err(None, "delay", "give `runAt` or `delay`, not both");
            None
        }
        (None, Some(d)) if d > MAX_DELAY_MS => {
            c.err(
                None,
                "delay",
                format!("{d} ms is more than a year ({MAX_DELAY_MS} ms)"),
            );
            None
        }
        (None, Some(d)) => Some(super::StartAfter::Delay(d)),
        (Some(at), None) => match chrono::DateTime::parse_from_rfc3339(at) {
            Ok(t) => Some(super::StartAfter::At(t.timestamp_millis())),
            Err(e) => {
                c.err(
                    None,
                    "runAt",
                    format!("{at:?} is not an RFC 3339 time such as 2026-12-24T18:00:00Z ({e})"),
                );
                None
            }
        },
        (None, None) => None,
    }
}

/// The task-level fields: `type`, `queue`, `retry`, `resources.timeout`.
pub(super) fn check_task(c: &mut Checker<'_>, spec: &TaskSpec) {
    if spec.task_type.trim().is_empty() {
        c.err(None, "type", "must not be empty");
    }
    if let Some(q) = &spec.queue {
        check_queue(c, None, "queue", q);
    }
    if let Some(r) = &spec.retry {
        check_retry(c, None, "retry", r);
    }
    if let Some(p) = spec.priority {
        check_priority(c, None, "priority", p);
    }
    check_gates(
        c,
        None,
        "",
        spec.concurrency.as_deref(),
        spec.rate_limit.as_deref(),
    );
    check_timeout(
        c,
        None,
        "resources.timeout",
        spec.resources.as_ref().and_then(|r| r.timeout),
    );
}

pub(super) fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !id.bytes().all(|b| b.is_ascii_digit())
}

/// The bound of `priority` either way: wide enough for any scheme of
/// levels, small enough that aging (one level per 10 s) reaches every job
/// within ~6 hours.
pub const MAX_PRIORITY: i32 = 1000;

pub(super) fn check_priority(c: &mut Checker<'_>, step: Option<&str>, field: &str, p: i32) {
    if p.abs() > MAX_PRIORITY {
        c.err(
            step,
            field,
            format!("{p} is out of range: a priority is from -{MAX_PRIORITY} to {MAX_PRIORITY} (higher runs first)"),
        );
    }
}

/// Whether `q` can name a queue: 1-64 letters, digits, '-', '_' or '.'.
pub fn is_valid_queue(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 64
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub(super) fn check_queue(c: &mut Checker<'_>, step: Option<&str>, field: &str, q: &str) {
    if !is_valid_queue(q) {
        c.err(
            step,
            field.to_owned(),
            "must be 1-64 characters of letters, digits, '-', '_' or '.'",
        );
    } else if !c.limits.allows_queue(q) {
        // Each queue has a worker pool on every host: clients must not be
        // able to make new ones (docs/configuration.md, DWA_QUEUES).
        let known = c.limits.queue_names();
        c.err(
            step,
            field.to_owned(),
            format!("queue {q:?} is not configured on this host (DWA_QUEUES); configured queues: {known}"),
        );
    }
}

pub(super) fn check_retry(c: &mut Checker<'_>, step: Option<&str>, field: &str, r: &RetryConfig) {
    if r.attempts == 0 || r.attempts > MAX_ATTEMPTS {
        c.err(
            step,
            format!("{field}.attempts"),
            format!(
                "must be between 1 and {MAX_ATTEMPTS} (it counts every try, the first included)"
            ),
        );
    }
    if let Some(max) = r.max_delay
        && max < r.delay
    {
        c.err(
            step,
            format!("{field}.maxDelay"),
            format!("must be at least delay ({} ms)", r.delay),
        );
    }
    if r.delay > 24 * 3600 * 1000 {
        c.err(step, format!("{field}.delay"), "must be at most one day");
    }
}

pub(super) fn check_timeout(c: &mut Checker<'_>, step: Option<&str>, field: &str, t: Option<f64>) {
    if let Some(t) = t
        && !(t.is_finite() && t > 0.0 && t <= 7.0 * 24.0 * 3600.0)
    {
        c.err(
            step,
            field.to_owned(),
            "must be a number of seconds above 0 and at most a week",
        );
    }
}

/// Checks the limits and window of a concurrency key and a rate limit
/// (their keys are parsed with the step that uses them); `prefix` is the
/// step's path (`steps[2].`) or empty for the task's.
pub(super) fn check_gates(
    c: &mut Checker<'_>,
    step: Option<&str>,
    prefix: &str,
    concurrency: Option<&crate::model::Concurrency>,
    rate: Option<&crate::model::RateLimit>,
) {
    use super::{MAX_CONCURRENCY_LIMIT, MAX_RATE_LIMIT};
    if let Some(g) = concurrency
        && !(1..=MAX_CONCURRENCY_LIMIT).contains(&g.limit)
    {
        let msg = format!("{} is not within 1-{MAX_CONCURRENCY_LIMIT}", g.limit);
        c.err(step, format!("{prefix}concurrency.limit"), msg);
    }
    if let Some(r) = rate {
        if !(1..=MAX_RATE_LIMIT).contains(&r.limit) {
            let msg = format!("{} is not within 1-{MAX_RATE_LIMIT}", r.limit);
            c.err(step, format!("{prefix}rateLimit.limit"), msg);
        }
        if let Err(m) = super::step::parse_per(&r.per) {
            c.err(step, format!("{prefix}rateLimit.per"), m);
        }
    }
}
