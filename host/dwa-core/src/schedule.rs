//! Schedules: a cron expression in a time zone that submits a task at each
//! tick (docs/tasks.md, "Schedules"). This module holds what a schedule is
//! and the arithmetic of its ticks: which are due at a given time under
//! its catch-up policy, and when the next one comes. Storing schedules and
//! firing them is the store's and the engine's part.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::FieldError;

/// A due tick older than this was missed (the host was down, or the
/// schedule's ticker stalled): the catch-up policy decides whether it runs.
pub const GRACE_MS: i64 = 60_000;

/// Most missed ticks `catchUp: "all"` runs (`catchUpLimit`'s maximum).
pub const MAX_CATCH_UP: u32 = 100;

/// `catchUpLimit` when not given.
pub const DEFAULT_CATCH_UP: u32 = 10;

/// Longest schedule id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Longest cron expression, in bytes.
pub const MAX_CRON_LEN: usize = 256;

/// Runs kept in a schedule's `recent` list.
pub const RECENT_RUNS: usize = 20;

/// What a tick does while the task of the previous tick is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Overlap {
    /// Skip the tick (counted in `skipped`).
    #[default]
    Skip,
    /// Submit anyway: runs may overlap.
    Allow,
    /// Cancel the previous task, then submit.
    CancelPrevious,
}

/// What happens to ticks missed while no host was firing them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatchUp {
    /// Missed ticks are dropped; a late tick still runs within [`GRACE_MS`].
    #[default]
    None,
    /// Missed ticks run once, as the newest of them.
    Latest,
    /// Each missed tick runs, oldest first: the newest `catchUpLimit`.
    All,
}

/// A schedule as submitted to `POST /api/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Its name, unique on the host (letters, digits, `.`, `_`, `-`);
    /// generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Five fields (minute precision) or six (seconds first); `@daily` and
    /// friends, `L`, `W` and `#` as in Vixie cron and croner.
    pub cron: String,
    /// IANA time zone the expression is read in (`Europe/Paris`); UTC by default.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The task JSON submitted at each tick (as `POST /api/tasks` takes it).
    #[schema(value_type = Object)]
    pub task: Value,
    /// What a tick does while the previous run is still going.
    #[serde(default)]
    pub overlap: Overlap,
    /// What happens to ticks missed while no host ran.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How many missed ticks `catchUp: "all"` runs at most (1-100).
    #[serde(default = "default_catch_up")]
    pub catch_up_limit: u32,
    /// Created paused: no tick fires until it is resumed.
    #[serde(default)]
    pub paused: bool,
}

fn utc() -> String {
    "UTC".into()
}

fn default_catch_up() -> u32 {
    DEFAULT_CATCH_UP
}

/// One task a schedule submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The tick it was submitted for (ms).
    pub tick: i64,
    /// The task.
    pub task_id: String,
}

/// What a schedule has done, kept with it in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Tasks submitted.
    #[serde(default)]
    pub runs: u64,
    /// Ticks skipped because the previous run was still going.
    #[serde(default)]
    pub skipped: u64,
    /// Why the last tick could not submit its task, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The newest runs, oldest first (at most [`RECENT_RUNS`]).
    #[serde(default)]
    pub recent: Vec<Run>,
}

impl ScheduleState {
    /// Records a task submitted for `tick`.
    pub fn ran(&mut self, tick: i64, task_id: String) {
        self.runs += 1;
        self.last_error = None;
        self.recent.push(Run { tick, task_id });
        if self.recent.len() > RECENT_RUNS {
            let extra = self.recent.len() - RECENT_RUNS;
            self.recent.drain(..extra);
        }
    }

    /// The task of the newest run.
    pub fn last_task(&self) -> Option<&str> {
        self.recent.last().map(|r| r.task_id.as_str())
    }
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The tick it was submitted for (RFC 3339).
    pub tick: String,
    /// The task it submitted.
    pub task_id: String,
}

/// A schedule as `GET /api/schedules/:id` answers it: its definition and
/// what it has done.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// Its id.
    pub id: String,
    /// Its cron expression.
    pub cron: String,
    /// The time zone it is read in.
    pub timezone: String,
    /// The task submitted at each tick.
    #[schema(value_type = Object)]
    pub task: Value,
    /// What a tick does while the previous run is still going.
    pub overlap: Overlap,
    /// What happens to missed ticks.
    pub catch_up: CatchUp,
    /// The most missed ticks `catchUp: "all"` runs.
    pub catch_up_limit: u32,
    /// Whether it is paused.
    pub paused: bool,
    /// Its next tick (RFC 3339); absent when paused or when none will come.
    pub next_run_at: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Tasks it submitted.
    pub runs: u64,
    /// Ticks skipped because the previous run was still going.
    pub skipped: u64,
    /// Why its last tick could not submit a task, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Its newest runs, oldest first (at most 20).
    pub recent: Vec<RunView>,
}

/// Answer of `GET /api/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleList {
    /// In id order.
    pub schedules: Vec<ScheduleView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A schedule's parsed cron expression and time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

/// Which ticks fire now, and when the next one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Ticks to submit a task for, oldest first (ms).
    pub fire: Vec<i64>,
    /// The first tick after now (ms); `None`: the expression never fires again.
    pub next_at: Option<i64>,
}

fn field(field: &str, message: String) -> FieldError {
    FieldError {
        step: None,
        field: field.into(),
        message,
    }
}

impl Cadence {
    /// Parses `cron` in time zone `tz`; errors name the field.
    pub fn parse(cron: &str, tz: &str) -> Result<Cadence, FieldError> {
        if cron.len() > MAX_CRON_LEN {
            return Err(field(
                "cron",
                format!("is {} bytes; at most {MAX_CRON_LEN}", cron.len()),
            ));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build();
        let cron = parser
            .parse(cron)
            .map_err(|e| field("cron", format!("{cron:?} is not a cron expression: {e}")))?;
        let tz = tz.parse::<chrono_tz::Tz>().map_err(|_| {
            field(
                "timezone",
                format!("{tz:?} is not an IANA time zone (such as \"UTC\" or \"Europe/Paris\")"),
            )
        })?;
        Ok(Cadence { cron, tz })
    }

    fn at(&self, ms: i64) -> Option<DateTime<chrono_tz::Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first tick strictly after `ms`; `None` when there is none
    /// (a date that never comes, or past the year 5000).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let t = self.cron.find_next_occurrence(&self.at(ms)?, false).ok()?;
        Some(t.timestamp_millis()).filter(|&t| t > ms)
    }

    /// The last tick at or before `ms`.
    fn last_until(&self, ms: i64) -> Option<i64> {
        let t = self
            .cron
            .find_previous_occurrence(&self.at(ms)?, true)
            .ok()?;
        Some(t.timestamp_millis()).filter(|&t| t <= ms)
    }

    /// The ticks to fire at `now` for a schedule whose next tick was
    /// `next_at`, under `catch_up` (`limit`: `catchUpLimit`). Ticks that
    /// came and went together are one run unless the policy is `all`.
    pub fn due(&self, next_at: i64, now: i64, catch_up: CatchUp, limit: u32) -> Due {
        let next = self.next_after(now);
        if next_at > now {
            return Due {
                fire: Vec::new(),
                next_at: Some(next_at),
            };
        }
        let newest = self.last_until(now).unwrap_or(next_at).max(next_at);
        let fire = match catch_up {
            CatchUp::None if now - newest > GRACE_MS => Vec::new(),
            CatchUp::None | CatchUp::Latest => vec![newest],
            CatchUp::All => {
                let mut ticks = vec![newest];
                while ticks.len() < limit.clamp(1, MAX_CATCH_UP) as usize {
                    match self.last_until(ticks[ticks.len() - 1] - 1) {
                        Some(t) if t >= next_at => ticks.push(t),
                        _ => break,
                    }
                }
                ticks.reverse();
                ticks
            }
        };
        Due {
            fire,
            next_at: next,
        }
    }
}

/// Whether `id` may name a schedule.
pub fn check_id(id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(field(
            "id",
            format!("{id:?} is not a schedule id: 1-{MAX_ID_LEN} letters, digits, '.', '_' or '-'"),
        ))
    }
}

/// Checks a schedule's own fields (not its task, which the engine plans)
/// and parses its cadence; `now` decides whether it ever fires.
pub fn check(spec: &ScheduleSpec, now: i64) -> Result<Cadence, FieldError> {
    if let Some(id) = &spec.id {
        check_id(id)?;
    }
    if !(1..=MAX_CATCH_UP).contains(&spec.catch_up_limit) {
        return Err(field(
            "catchUpLimit",
            format!("{} is not within 1-{MAX_CATCH_UP}", spec.catch_up_limit),
        ));
    }
    let cadence = Cadence::parse(&spec.cron, &spec.timezone)?;
    if cadence.next_after(now).is_none() {
        return Err(field(
            "cron",
            format!("{:?} never fires after now", spec.cron),
        ));
    }
    Ok(cadence)
}

#[cfg(test)]
mod tests;
