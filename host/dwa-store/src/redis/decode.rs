//! Decoding what Redis answers: the scripts' common reply (per-item
//! outcomes and leased jobs), job ids, and task and step hashes into the
//! store's records.

use std::collections::HashMap;

use redis::Value as RValue;
use serde_json::Value;

use dwa_core::model::{StepStatus, TaskStatus};

use super::backend;
use crate::{Job, StepRecord, StoreError, TaskRecord, Transition};

pub(super) fn parse_job(id: &str, attempt: &str, token: &str) -> Option<Job> {
    let mut parts = id.rsplitn(3, '|');
    let item: i64 = parts.next()?.parse().ok()?;
    let step: u32 = parts.next()?.parse().ok()?;
    let task_id = parts.next()?.to_owned();
    Some(Job {
        task_id,
        step,
        item: u32::try_from(item).ok(),
        attempt: attempt.parse().ok()?,
        token: token.parse().ok()?,
    })
}

/// Maps an item's refusal (`LEASE_LOST job`, ...) to the store's errors.
pub(super) fn item_error(text: &str) -> StoreError {
    let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
    let detail = detail.to_owned();
    match code {
        "LEASE_LOST" => StoreError::LeaseLost(detail),
        "DUPLICATE" => StoreError::Duplicate(detail),
        "IDEMPOTENT" => {
            let (task_id, same) = detail.split_once(' ').unwrap_or((detail.as_str(), ""));
            StoreError::Idempotent {
                task_id: task_id.to_owned(),
                same_body: same == "same",
            }
        }
        "NOT_FOUND" => StoreError::NotFound(detail),
        "CONFLICT" => StoreError::Conflict(detail),
        _ => backend(text),
    }
}

/// The common reply of the scripts: per item its outcome, the jobs leased
/// (with the queue each came from), and a number whose meaning is the script's.
pub(super) struct ScriptReply {
    pub(super) items: Vec<Result<Transition, StoreError>>,
    /// The events of the items, where the script answers them (append.lua).
    pub(super) events: Vec<String>,
    pub(super) jobs: Vec<(String, Job)>,
    pub(super) number: i64,
}

/// The next value of a script's flat reply list, as T (`what` names it in the error).
fn next_as<T: redis::FromRedisValue>(
    values: &mut impl Iterator<Item = RValue>,
    what: &str,
) -> Result<T, StoreError> {
    let v = values
        .next()
        .ok_or_else(|| backend(format!("script reply ended before {what}")))?;
    redis::from_redis_value(v).map_err(|e| backend(format!("script reply, {what}: {e}")))
}

/// `n` values of a flat reply list, each a T.
fn take_as<T: redis::FromRedisValue>(
    values: &mut impl Iterator<Item = RValue>,
    n: usize,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    (0..n).map(|_| next_as(values, what)).collect()
}

/// Decodes lib.lua's reply(): its item and job lists are flat (per item:
/// error, finished, task, progress, the count of woken queues and those
/// queues, the count of events and those events; per job: queue, id,
/// attempt, token).
pub(super) fn parse_reply(v: RValue) -> Result<ScriptReply, StoreError> {
    let (items, jobs, number): (Vec<RValue>, Vec<String>, i64) =
        redis::from_redis_value(v).map_err(backend)?;
    let mut parsed_items = Vec::new();
    let mut all_events = Vec::new();
    let mut values = items.into_iter().peekable();
    while values.peek().is_some() {
        let err: String = next_as(&mut values, "an item's error")?;
        let finished: String = next_as(&mut values, "an item's end")?;
        let task: String = next_as(&mut values, "an item's task")?;
        let progress: String = next_as(&mut values, "an item's progress")?;
        let n = next_as(&mut values, "an item's count of woken queues")?;
        let woke: Vec<String> = take_as(&mut values, n, "a woken queue")?;
        let n = next_as(&mut values, "an item's count of events")?;
        let events: Vec<String> = take_as(&mut values, n, "an event")?;
        if !err.is_empty() {
            parsed_items.push(Err(item_error(&err)));
            continue;
        }
        let progress = match progress.as_str() {
            "" => None,
            p => Some(
                p.parse::<f64>()
                    .map_err(|e| backend(format!("script reply, progress {p:?}: {e}")))?,
            ),
        };
        all_events.extend(events);
        parsed_items.push(Ok(Transition {
            woke,
            finished: TaskStatus::parse(&finished),
            task: (!task.is_empty()).then_some(task),
            progress,
        }));
    }
    if jobs.len() % 4 != 0 {
        return Err(backend(format!(
            "script reply: {} job values, not 4 per job",
            jobs.len()
        )));
    }
    let mut parsed_jobs = Vec::with_capacity(jobs.len() / 4);
    for job in jobs.chunks_exact(4) {
        let [queue, id, attempt, token] = job else {
            continue;
        };
        let parsed =
            parse_job(id, attempt, token).ok_or_else(|| backend(format!("bad job id {id:?}")))?;
        parsed_jobs.push((queue.clone(), parsed));
    }
    Ok(ScriptReply {
        items: parsed_items,
        events: all_events,
        jobs: parsed_jobs,
        number,
    })
}

impl ScriptReply {
    /// The outcome of a script that handles one item.
    pub(super) fn single(self) -> Result<Transition, StoreError> {
        self.items
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(backend("script answered no item")))
    }
}

pub(super) fn fields_map(
    names: &[&str],
    values: Vec<Option<String>>,
) -> Option<HashMap<String, String>> {
    let m: HashMap<String, String> = names
        .iter()
        .zip(values)
        .filter_map(|(n, v)| v.map(|v| ((*n).to_owned(), v)))
        .collect();
    m.contains_key("status").then_some(m)
}

/// Forwards the shared event channel to local subscribers, reconnecting
/// forever. Pub/sub keeps nothing for a disconnected subscriber, so every
/// resubscription bumps `resets`: followers re-read what they missed.
pub(super) fn opt_i64(m: &HashMap<String, String>, k: &str) -> Option<i64> {
    m.get(k)
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

pub(super) fn json_field(m: &HashMap<String, String>, k: &str) -> Option<Value> {
    m.get(k).and_then(|v| serde_json::from_str(v).ok())
}

pub(super) fn record(id: &str, m: &HashMap<String, String>, spec: String) -> TaskRecord {
    TaskRecord {
        id: id.to_owned(),
        task_type: m.get("type").cloned().unwrap_or_default(),
        queue: m.get("queue").cloned().unwrap_or_default(),
        status: m
            .get("status")
            .and_then(|s| TaskStatus::parse(s))
            .unwrap_or(TaskStatus::Pending),
        spec,
        is_pipeline: m.get("pipeline").is_some_and(|p| p == "1"),
        progress: m
            .get("progress")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0),
        result: json_field(m, "result"),
        error: m.get("error").cloned(),
        created_at: opt_i64(m, "created").unwrap_or(0),
        started_at: opt_i64(m, "started"),
        completed_at: opt_i64(m, "completed"),
        steps: Vec::new(),
        parent: m.get("parent").and_then(|p| serde_json::from_str(p).ok()),
    }
}

/// Step `i` of a task hash (its fields are `i:name`).
pub(super) fn step_record(i: usize, m: &HashMap<String, String>) -> StepRecord {
    let get = |name: &str| m.get(&format!("{i}:{name}"));
    let num = |name: &str| {
        get(name)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as i64)
    };
    StepRecord {
        idx: i as u32,
        key: get("key").cloned().unwrap_or_default(),
        task: get("task").cloned().unwrap_or_default(),
        status: get("status")
            .and_then(|v| StepStatus::parse(v))
            .unwrap_or(StepStatus::Pending),
        result: get("result").and_then(|v| serde_json::from_str(v).ok()),
        error: get("error").cloned(),
        attempts: get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
        started_at: num("started"),
        completed_at: num("completed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> RValue {
        RValue::BulkString(v.as_bytes().to_vec())
    }

    fn reply(items: Vec<RValue>, jobs: Vec<RValue>) -> RValue {
        RValue::Array(vec![
            RValue::Array(items),
            RValue::Array(jobs),
            RValue::Int(-1),
        ])
    }

    #[test]
    fn a_flat_reply_reads_as_items_and_jobs_in_order() {
        let ev = r#"{"seq":3,"type":"step:complete","taskId":"t1","stepId":"a","stepTask":"builtin.echo","data":{"result":1},"timestamp":5}"#;
        let items = vec![
            s("LEASE_LOST t0|0|-1"),
            s(""),
            s(""),
            s(""),
            RValue::Int(0),
            RValue::Int(0),
            s(""),
            s("completed"),
            s("t1"),
            s("54.5"),
            RValue::Int(2),
            s("default"),
            s("gpu"),
            RValue::Int(1),
            s(ev),
        ];
        let jobs = vec![s("default"), s("t2|1|-1"), s("1"), s("7")];
        let r = parse_reply(reply(items, jobs)).unwrap();
        assert_eq!(r.items.len(), 2);
        assert!(matches!(&r.items[0], Err(StoreError::LeaseLost(j)) if j == "t0|0|-1"));
        let t = r.items[1].as_ref().unwrap();
        assert_eq!(t.woke, vec!["default".to_string(), "gpu".to_string()]);
        assert_eq!(t.finished, Some(TaskStatus::Completed));
        assert_eq!((t.task.as_deref(), t.progress), (Some("t1"), Some(54.5)));
        assert_eq!(r.events, vec![ev.to_string()]);
        assert_eq!(r.jobs.len(), 1);
        assert_eq!(r.jobs[0].0, "default");
        assert_eq!((r.jobs[0].1.step, r.jobs[0].1.token), (1, 7));
    }

    #[test]
    fn a_reply_cut_short_names_what_is_missing() {
        let items = vec![s(""), s(""), s(""), s(""), RValue::Int(2), s("default")];
        let err = parse_reply(reply(items, vec![])).err().unwrap().to_string();
        assert!(err.contains("ended before a woken queue"), "{err}");
        let jobs = vec![s("default"), s("t2|1|-1"), s("1")];
        let err = parse_reply(reply(vec![], jobs)).err().unwrap().to_string();
        assert!(err.contains("3 job values, not 4 per job"), "{err}");
    }
}
