//! The limits every request runs within (docs/configuration.md, "Limits"):
//! how many steps and items a task may have, how deep and how large the JSON
//! it carries may grow, which queues it may name. Each limit has an
//! environment variable; a refusal names it and the value that broke it, so
//! a client knows what to change and an operator what to raise.
//!
//! The walks here are iterative: a value's depth is what is being checked,
//! so it must not be what overflows the stack.

use std::collections::BTreeMap;

use serde_json::Value;

/// The limits a host enforces; [`Limits::default`] holds the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `DWA_MAX_STEPS`: steps per task, after chunked steps are expanded.
    pub max_steps: usize,
    /// `DWA_MAX_FOREACH_ITEMS`: items one `forEach` step may fan out to.
    pub max_items_per_step: usize,
    /// `DWA_MAX_TASK_ITEMS`: `forEach` items over all the steps of a task.
    pub max_items_per_task: usize,
    /// `DWA_MAX_JSON_DEPTH`: nesting of payloads, step inputs and results.
    pub max_json_depth: usize,
    /// `DWA_MAX_INPUT_BYTES`: the size a step's resolved input may reach.
    pub max_input_bytes: usize,
    /// `DWA_MAX_RESULT_BYTES`: the size of a result read from a backend or plugin.
    pub max_result_bytes: usize,
    /// `DWA_MAX_TASK_EVENTS`: events a task's steps and effects may append
    /// (streamed chunks, toasts, emits); its own transitions always count.
    pub max_task_events: u64,
    /// `DWA_MAX_LINEAGE_DEPTH`: how long a chain of tasks made by `enqueue`
    /// effects may grow (a task that enqueues itself stops here).
    pub max_lineage_depth: u32,
    /// `DWA_MAX_ENQUEUES_PER_TASK`: tasks one task's effects may enqueue (per host).
    pub max_enqueues_per_task: u32,
    /// `DWA_MAX_SCHEDULES`: schedules a store may hold (all hosts together).
    pub max_schedules: usize,
    /// `DWA_QUEUES`: the queues tasks may name, with their workers per host
    /// (`default` and `gpu` are always there).
    pub queues: BTreeMap<String, usize>,
}

/// Defaults, far above what the seed's pipelines use (a dozen steps, a few
/// hundred items, results of a few MB) and low enough that one task cannot
/// take a host's memory.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 1_000,
            max_items_per_step: 10_000,
            max_items_per_task: 100_000,
            max_json_depth: 64,
            max_input_bytes: 64 * 1024 * 1024,
            max_result_bytes: 64 * 1024 * 1024,
            max_task_events: 50_000,
            max_lineage_depth: 10,
            max_enqueues_per_task: 100,
            max_schedules: 1_000,
            queues: BTreeMap::from([("default".to_owned(), 5), ("gpu".to_owned(), 2)]),
        }
    }
}

impl Limits {
    /// Limits that refuse nothing: for re-reading tasks that were accepted
    /// under the limits of their day, which may have been lowered since.
    pub fn unbounded() -> Self {
        Limits {
            max_steps: usize::MAX,
            max_items_per_step: usize::MAX,
            max_items_per_task: usize::MAX,
            max_json_depth: usize::MAX,
            max_input_bytes: usize::MAX,
            max_result_bytes: usize::MAX,
            max_task_events: u64::MAX,
            max_lineage_depth: u32::MAX,
            max_enqueues_per_task: u32::MAX,
            max_schedules: usize::MAX,
            queues: BTreeMap::new(),
        }
    }

    /// Whether tasks may name `queue`. An empty list allows any (see [`Limits::unbounded`]).
    pub fn allows_queue(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.contains_key(queue)
    }

    /// The configured queue names, for "configured queues: ..." in errors.
    pub fn queue_names(&self) -> String {
        self.queues.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A limit that a value went past, named as the operator sets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {}over the limit of {max} ({var})", .value.map(|v| format!("{v}, ")).unwrap_or_default())]
pub struct Exceeded {
    /// What was measured ("nesting depth", "size in bytes", ...).
    pub what: &'static str,
    /// The value, or the first value found past the limit; `None` where
    /// counting on would cost what the limit is there to avoid.
    pub value: Option<usize>,
    /// The limit.
    pub max: usize,
    /// The environment variable that sets it.
    pub var: &'static str,
}

/// What a walk over a value found past its limits.
enum Past {
    /// This nesting depth, the first past the limit.
    Depth(usize),
    /// The size limit.
    Size,
}

/// One iterative walk over `v`: its nesting, refused past `max_depth`, and,
/// when `cap` is set, its size ([`size_within`]), refused past `cap`. The
/// walk stops at the first limit passed, so measuring costs no more than
/// the limits allow.
fn measure(v: &Value, max_depth: usize, cap: Option<usize>) -> Result<usize, Past> {
    let mut total = 0usize;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    let sized = cap.is_some();
    while let Some((v, depth)) = stack.pop() {
        let own = match v {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 24,
            Value::String(s) if sized => quoted_len(s),
            Value::String(_) => 0,
            Value::Array(a) => {
                if depth + 1 > max_depth {
                    return Err(Past::Depth(depth + 1));
                }
                stack.extend(a.iter().map(|c| (c, depth + 1)));
                2 + a.len()
            }
            Value::Object(o) => {
                if depth + 1 > max_depth {
                    return Err(Past::Depth(depth + 1));
                }
                for (k, c) in o {
                    if sized {
                        total = total.saturating_add(quoted_len(k) + 1);
                    }
                    stack.push((c, depth + 1));
                }
                2 + o.len()
            }
        };
        total = total.saturating_add(own);
        if cap.is_some_and(|cap| total > cap) {
            return Err(Past::Size);
        }
    }
    Ok(total)
}

fn depth_exceeded(depth: usize, max: usize) -> Exceeded {
    Exceeded {
        what: "nesting depth",
        value: Some(depth),
        max,
        var: "DWA_MAX_JSON_DEPTH",
    }
}

/// Refuses `v` when it nests deeper than `max` (a scalar has depth 0, `[]`
/// and `{}` depth 1). Stops at the first level past `max`.
pub fn check_depth(v: &Value, max: usize) -> Result<(), Exceeded> {
    match measure(v, max, None) {
        Err(Past::Depth(d)) => Err(depth_exceeded(d, max)),
        _ => Ok(()),
    }
}

/// The size of `v` as compact JSON, counted up to `cap`: `None` once it is
/// past `cap`, so that measuring a huge value costs no more than `cap`.
/// An upper bound of the serialised length (numbers count 24 bytes, the
/// longest they print as; an escaped character its longest escape), so
/// that what passes also fits once written out.
pub fn size_within(v: &Value, cap: usize) -> Option<usize> {
    measure(v, usize::MAX, Some(cap)).ok()
}

/// Refuses `v` when it nests deeper than `max_depth` or its size passes
/// `max_bytes`, in one walk (a step's result: both limits hold for it).
pub fn check_shape(
    v: &Value,
    max_depth: usize,
    max_bytes: usize,
    what: &'static str,
    var: &'static str,
) -> Result<(), Exceeded> {
    match measure(v, max_depth, Some(max_bytes)) {
        Ok(_) => Ok(()),
        Err(Past::Depth(d)) => Err(depth_exceeded(d, max_depth)),
        Err(Past::Size) => Err(Exceeded {
            what,
            value: None,
            max: max_bytes,
            var,
        }),
    }
}

/// A string's length in JSON: its quotes, and six bytes (`\u001f`) for a
/// character that may need escaping, an upper bound of every escape.
pub fn quoted_len(s: &str) -> usize {
    let escaped = s
        .bytes()
        .filter(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
        .count();
    s.len() + 2 + escaped * 5
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn depth_counts_each_array_and_object_level() {
        assert_eq!(check_depth(&json!(1), 0), Ok(()));
        assert!(check_depth(&json!([]), 0).is_err());
        assert_eq!(check_depth(&json!({"a": [1]}), 2), Ok(()));
        assert_eq!(
            check_depth(&json!({"a": [1]}), 1).map_err(|e| e.value),
            Err(Some(2))
        );
    }

    #[test]
    fn a_value_at_the_depth_limit_passes_and_one_past_it_names_the_limit() {
        assert_eq!(check_depth(&nested(64), 64), Ok(()));
        let e = check_depth(&nested(65), 64).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("nesting depth is 65, over the limit of 64 (DWA_MAX_JSON_DEPTH)".into())
        );
    }

    #[test]
    fn depth_of_a_very_deep_value_is_checked_without_recursion() {
        // Built and dropped without recursion either: serde_json's Drop of a
        // 100,000-deep array would overflow, so it is taken apart by hand.
        let mut v = nested(0);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert!(check_depth(&v, 64).is_err());
        let mut cur = v;
        while let Value::Array(mut a) = cur {
            cur = a.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn size_stops_counting_once_past_the_cap() {
        let v = json!({"text": "x".repeat(1000), "q\"k": "a\"b\\c\n\u{1}", "n": [1, 2.5e-300, -3]});
        let exact = serde_json::to_string(&v).map(|s| s.len()).unwrap_or(0);
        let counted = size_within(&v, usize::MAX).unwrap_or(0);
        assert!(
            counted >= exact,
            "{counted} < {exact}: the count must bound the real size"
        );
        assert_eq!(size_within(&v, 100), None);
        assert_eq!(
            check_shape(
                &v,
                64,
                100,
                "the input's size in bytes",
                "DWA_MAX_INPUT_BYTES"
            )
            .map_err(|e| e.to_string()),
            Err("the input's size in bytes is over the limit of 100 (DWA_MAX_INPUT_BYTES)".into())
        );
    }

    #[test]
    fn one_walk_checks_depth_and_size_and_names_the_first_limit_it_passes() {
        let deep = nested(5);
        assert_eq!(check_shape(&deep, 5, 1_000, "size", "V"), Ok(()));
        assert_eq!(
            check_shape(&deep, 4, 1_000, "size", "V").map_err(|e| e.var),
            Err("DWA_MAX_JSON_DEPTH")
        );
        let wide = json!(["x".repeat(100)]);
        assert_eq!(
            check_shape(
                &wide,
                64,
                50,
                "the result's size in bytes",
                "DWA_MAX_RESULT_BYTES"
            )
            .map_err(|e| e.var),
            Err("DWA_MAX_RESULT_BYTES")
        );
    }

    #[test]
    fn queues_are_the_configured_ones_unless_unbounded() {
        let l = Limits::default();
        assert!(l.allows_queue("default") && l.allows_queue("gpu"));
        assert!(!l.allows_queue("video"));
        assert!(Limits::unbounded().allows_queue("video"));
        assert_eq!(l.queue_names(), "default, gpu");
    }
}
