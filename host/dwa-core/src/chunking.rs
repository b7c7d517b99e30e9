//! Chunked steps: a step with `"chunk": {...}` whose task announces a chunk
//! config is rewritten, before planning, into three steps —
//!
//! - `<id>-split`: `chunk.audio`, `chunk.video` or `chunk.text` cuts the
//!   input field into pieces (with their offsets);
//! - `<id>-parts`: the task itself, once per piece (`forEach`), in parallel;
//! - `<id>`: `builtin.merge` joins the parts by the task's strategy, under
//!   the step's own id, so dependants and templates see one result.
//!
//! The rewritten task is what is stored, so a restart replans it unchanged.

use serde_json::{Map, Value, json};

use crate::catalog::{Catalog, ChunkSpec};
use crate::model::{StepSpec, TaskSpec};
use crate::plan::FieldError;

/// The merge strategies `builtin.merge` knows.
pub const STRATEGIES: [&str; 4] = [
    "concat_segments",
    "concat_text",
    "concat_lists",
    "sum_counts",
];

fn err(step: &str, field: String, message: impl Into<String>) -> FieldError {
    FieldError {
        step: Some(step.to_owned()),
        field,
        message: message.into(),
    }
}

/// Expands every chunked step of `spec`; a spec without one comes back as is.
pub fn expand(mut spec: TaskSpec, catalog: &Catalog) -> Result<TaskSpec, Vec<FieldError>> {
    let Some(steps) = spec.steps.take() else {
        return Ok(spec);
    };
    if !steps.iter().any(|s| s.chunk.is_some()) {
        spec.steps = Some(steps);
        return Ok(spec);
    }
    let mut errors = Vec::new();
    // Inserting steps would shift `{{steps.N}}` indexes: chunking needs ids.
    if let Some(i) = steps.iter().position(|s| s.id.is_none()) {
        errors.push(FieldError {
            step: None,
            field: format!("steps[{i}].id"),
            message: "a pipeline with a chunked step needs an id on every step".into(),
        });
        spec.steps = Some(steps);
        return Err(errors);
    }
    let taken: Vec<String> = steps.iter().filter_map(|s| s.id.clone()).collect();
    let mut out = Vec::with_capacity(steps.len() + 2);
    for (i, s) in steps.into_iter().enumerate() {
        if s.chunk.is_none() {
            out.push(s);
            continue;
        }
        match expand_step(i, s, catalog, &taken) {
            Ok(three) => out.extend(three),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    spec.steps = Some(out);
    Ok(spec)
}

fn expand_step(
    i: usize,
    s: StepSpec,
    catalog: &Catalog,
    taken: &[String],
) -> Result<Vec<StepSpec>, Vec<FieldError>> {
    let id = s.id.clone().unwrap_or_default();
    let field = |f: &str| format!("steps[{i}].{f}");
    let mut errors = Vec::new();
    let req = s.chunk.clone().unwrap_or_default();
    // An unknown task is reported by the planner; nothing to expand here.
    let Ok(info) = catalog.lookup(&s.task, s.backend.as_deref()) else {
        let mut s = s;
        s.chunk = None;
        return Ok(vec![s]);
    };
    let Some(cfg): Option<&ChunkSpec> = info.chunk.as_ref() else {
        return Err(vec![err(
            &id,
            field("chunk"),
            format!(
                "task {:?} cannot be chunked: its backend announces no chunk config",
                s.task
            ),
        )]);
    };
    if s.for_each.is_some() {
        errors.push(err(
            &id,
            field("chunk"),
            "a forEach step cannot also be chunked",
        ));
    }
    if !STRATEGIES.contains(&cfg.merge.as_str()) {
        errors.push(err(
            &id,
            field("chunk"),
            format!(
                "task {:?} announces merge strategy {:?}, which this host does not know ({})",
                s.task,
                cfg.merge,
                STRATEGIES.join(", ")
            ),
        ));
    }
    let splitter = match cfg.kind.as_str() {
        "audio" => "chunk.audio",
        "video" => "chunk.video",
        "text" => "chunk.text",
        other => {
            errors.push(err(
                &id,
                field("chunk"),
                format!(
                    "task {:?} announces chunk kind {other:?}; expected audio, video or text",
                    s.task
                ),
            ));
            "chunk.audio"
        }
    };
    let size = req.size.unwrap_or(cfg.default_size);
    let overlap = req.overlap.unwrap_or(cfg.overlap);
    if !(size.is_finite() && size > 0.0) {
        errors.push(err(&id, field("chunk.size"), "must be a positive number"));
    }
    if !(overlap.is_finite() && overlap >= 0.0 && overlap < size) {
        errors.push(err(
            &id,
            field("chunk.overlap"),
            "must be at least 0 and smaller than the chunk size",
        ));
    }
    if req.concurrency == Some(0) {
        errors.push(err(&id, field("chunk.concurrency"), "must be at least 1"));
    }
    let input = match &s.input {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            errors.push(err(
                &id,
                field("input"),
                format!(
                    "a chunked step needs an input object with {:?} (what is split)",
                    cfg.input
                ),
            ));
            Map::new()
        }
    };
    let Some(target) = input.get(&cfg.input).cloned() else {
        if errors.is_empty() {
            errors.push(err(
                &id,
                field(&format!("input.{}", cfg.input)),
                format!(
                    "is required to chunk task {:?} (it is what is split)",
                    s.task
                ),
            ));
        }
        return Err(errors);
    };
    for suffix in ["-split", "-parts"] {
        let new = format!("{id}{suffix}");
        if taken.contains(&new) {
            errors.push(err(
                &id,
                field("id"),
                format!("chunking adds a step {new:?}, which is already taken"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (split_input, item) = if cfg.kind == "text" {
        (
            json!({"text": target, "size": size.round() as u64, "overlap": overlap.round() as u64}),
            "{{item.text}}",
        )
    } else {
        (
            json!({"path": target, "seconds": size, "overlap": overlap}),
            "{{item.path}}",
        )
    };
    let split_id = format!("{id}-split");
    let parts_id = format!("{id}-parts");
    let split = StepSpec {
        id: Some(split_id.clone()),
        task: splitter.into(),
        // Media splitters run where the task runs (they read the same files);
        // chunk.text runs wherever the catalog has it (the host's wasm plugin).
        backend: if cfg.kind == "text" {
            None
        } else {
            s.backend.clone()
        },
        queue: None,
        priority: s.priority,
        concurrency: None,
        rate_limit: None,
        input: Some(split_input),
        depends_on: s.depends_on.clone(),
        for_each: None,
        for_each_concurrency: None,
        resources: None,
        retry: s.retry.clone(),
        chunk: None,
        subtask: None,
        // Each piece carries the step's condition and failure policy: a
        // skipped or tolerated split skips or tolerates the whole step.
        condition: s.condition.clone(),
        on_failure: s.on_failure,
    };
    let mut part_input = input;
    part_input.insert(cfg.input.clone(), Value::String(item.into()));
    let mut part_deps = vec![split_id.clone()];
    part_deps.extend(s.depends_on.clone().unwrap_or_default());
    let parts = StepSpec {
        id: Some(parts_id.clone()),
        task: s.task.clone(),
        backend: s.backend.clone(),
        queue: s.queue.clone(),
        priority: s.priority,
        // The parts do the work: they take the step's key and rate.
        concurrency: s.concurrency.clone(),
        rate_limit: s.rate_limit.clone(),
        input: Some(Value::Object(part_input)),
        depends_on: Some(part_deps),
        for_each: Some(Value::String(format!("{{{{steps.{split_id}.chunks}}}}"))),
        for_each_concurrency: req.concurrency.or(s.for_each_concurrency),
        resources: s.resources.clone(),
        retry: s.retry.clone(),
        chunk: None,
        subtask: None,
        condition: s.condition.clone(),
        on_failure: s.on_failure,
    };
    let merge = StepSpec {
        id: Some(id.clone()),
        task: "builtin.merge".into(),
        backend: None,
        queue: None,
        priority: s.priority,
        concurrency: None,
        rate_limit: None,
        input: Some(json!({
            "strategy": cfg.merge,
            "parts": format!("{{{{steps.{parts_id}}}}}"),
            "chunks": format!("{{{{steps.{split_id}.chunks}}}}"),
            "overlap": overlap,
        })),
        depends_on: Some(vec![parts_id, split_id]),
        for_each: None,
        for_each_concurrency: None,
        resources: None,
        retry: None,
        chunk: None,
        subtask: None,
        condition: s.condition.clone(),
        on_failure: s.on_failure,
    };
    Ok(vec![split, parts, merge])
}

/// `builtin.merge`: joins the parts of a chunked step.
///
/// - `concat_segments`: each part's `segments` shifted by its chunk's
///   `start`; where chunks overlap, the overlap is handed over at its middle
///   and a segment is kept by the side its own middle falls on; `text`
///   re-joined from the segments (or the parts' texts); other fields from
///   the first part.
/// - `concat_text`: the parts' text (strings, or their `text` field) joined by a newline.
/// - `concat_lists`: the parts' arrays (or each part's only array field) concatenated.
/// - `sum_counts`: numbers, or objects of numbers, summed.
pub fn merge(input: &Value) -> Result<Value, String> {
    let strategy = input.get("strategy").and_then(Value::as_str).unwrap_or("");
    let parts = input
        .get("parts")
        .and_then(Value::as_array)
        .ok_or("builtin.merge needs `parts`, an array")?;
    let chunks: &[Value] = input
        .get("chunks")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let overlap = input.get("overlap").and_then(Value::as_f64).unwrap_or(0.0);
    match strategy {
        "concat_segments" => concat_segments(parts, chunks, overlap),
        "concat_text" => {
            let texts: Result<Vec<String>, String> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Value::String(s) => Ok(s.clone()),
                    Value::Object(m) => m
                        .get("text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or(format!("part {i} has no `text`")),
                    _ => Err(format!(
                        "part {i} is neither text nor an object with `text`"
                    )),
                })
                .collect();
            Ok(json!({"text": texts?.join("\n"), "chunks": parts.len()}))
        }
        "concat_lists" => {
            let mut all = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                match p {
                    Value::Array(a) => all.extend(a.iter().cloned()),
                    Value::Object(m) => {
                        let lists: Vec<&Vec<Value>> =
                            m.values().filter_map(Value::as_array).collect();
                        match lists.as_slice() {
                            [one] => all.extend(one.iter().cloned()),
                            _ => {
                                return Err(format!(
                                    "part {i} has no single array field to concatenate"
                                ));
                            }
                        }
                    }
                    _ => return Err(format!("part {i} is not an array")),
                }
            }
            Ok(Value::Array(all))
        }
        "sum_counts" => {
            let mut total = Map::new();
            let mut sum = 0.0;
            let mut numbers = false;
            for (i, p) in parts.iter().enumerate() {
                match p {
                    Value::Number(n) => {
                        numbers = true;
                        sum += n.as_f64().unwrap_or(0.0);
                    }
                    Value::Object(m) => {
                        for (k, v) in m {
                            if let Some(x) = v.as_f64() {
                                let prev = total.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                                total.insert(k.clone(), json!(prev + x));
                            }
                        }
                    }
                    _ => {
                        return Err(format!(
                            "part {i} is neither a number nor an object of numbers"
                        ));
                    }
                }
            }
            Ok(if numbers {
                json!(sum)
            } else {
                Value::Object(total)
            })
        }
        other => Err(format!(
            "unknown merge strategy {other:?}; expected one of {}",
            STRATEGIES.join(", ")
        )),
    }
}

fn concat_segments(parts: &[Value], chunks: &[Value], overlap: f64) -> Result<Value, String> {
    let start_of = |i: usize| {
        chunks
            .get(i)
            .and_then(|c| c.get("start"))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    let end_of = |i: usize| {
        chunks
            .get(i)
            .and_then(|c| c.get("end"))
            .and_then(Value::as_f64)
    };
    let mut merged: Map<String, Value> = match parts.first() {
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("part 0 is not an object with `segments`".into()),
        None => Map::new(),
    };
    let mut segments = Vec::new();
    let mut texts = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let segs = p
            .get("segments")
            .and_then(Value::as_array)
            .ok_or(format!("part {i} has no `segments` array"))?;
        let offset = start_of(i);
        // Where this part hands over to the next: the middle of their overlap.
        let lower = if i > 0 && overlap > 0.0 {
            offset + overlap / 2.0
        } else {
            f64::NEG_INFINITY
        };
        let upper = match (i + 1 < parts.len(), end_of(i)) {
            (true, Some(_)) if overlap > 0.0 => start_of(i + 1) + overlap / 2.0,
            _ => f64::INFINITY,
        };
        for seg in segs {
            let mut seg = seg.clone();
            let (Some(s), Some(e)) = (
                seg.get("start").and_then(Value::as_f64),
                seg.get("end").and_then(Value::as_f64),
            ) else {
                return Err(format!(
                    "a segment of part {i} has no numeric start and end"
                ));
            };
            let (s, e) = (s + offset, e + offset);
            // A segment belongs to the side of the hand-over its middle is on,
            // so speech heard by both chunks is kept once.
            let mid = (s + e) / 2.0;
            if mid < lower || mid >= upper {
                continue;
            }
            seg["start"] = json!((s * 1000.0).round() / 1000.0);
            seg["end"] = json!((e * 1000.0).round() / 1000.0);
            if let Some(t) = seg.get("text").and_then(Value::as_str) {
                texts.push(t.trim().to_owned());
            }
            segments.push(seg);
        }
    }
    if merged.contains_key("text") {
        let joined = if texts.is_empty() {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            texts.join(" ")
        };
        merged.insert("text".into(), Value::String(joined));
    }
    merged.insert("segments".into(), Value::Array(segments));
    merged.insert("chunks".into(), json!(parts.len()));
    Ok(Value::Object(merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::TaskInfo;

    fn catalog() -> Catalog {
        let mut c = Catalog::with_builtins();
        c.insert(TaskInfo {
            chunk: Some(ChunkSpec {
                input: "audio_path".into(),
                kind: "audio".into(),
                default_size: 30.0,
                overlap: 0.0,
                merge: "concat_segments".into(),
            }),
            ..TaskInfo::bare("asr.run", "local")
        });
        c.insert(TaskInfo {
            chunk: Some(ChunkSpec {
                input: "text".into(),
                kind: "text".into(),
                default_size: 2000.0,
                overlap: 200.0,
                merge: "concat_text".into(),
            }),
            ..TaskInfo::bare("llm.sum", "modal")
        });
        c.insert(TaskInfo::bare("chunk.audio", "local"));
        c.insert(TaskInfo::bare("plain.run", "local"));
        c
    }

    fn spec(steps: Value) -> TaskSpec {
        serde_json::from_value(json!({"type": "p", "steps": steps})).unwrap()
    }

    #[test]
    fn a_chunked_step_becomes_split_parts_merge() {
        let s = spec(json!([
            {"id": "dl", "task": "plain.run"},
            {"id": "asr", "task": "asr.run", "dependsOn": ["dl"], "chunk": {"size": 10, "concurrency": 3},
             "input": {"audio_path": "{{steps.dl.path}}", "language": "en"}},
            {"id": "after", "task": "plain.run", "dependsOn": ["asr"], "input": {"t": "{{steps.asr.text}}"}}
        ]));
        let out = expand(s, &catalog()).unwrap();
        let steps = out.steps.unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_deref().unwrap()).collect();
        assert_eq!(ids, ["dl", "asr-split", "asr-parts", "asr", "after"]);
        assert_eq!(steps[1].task, "chunk.audio");
        assert_eq!(
            steps[1].input,
            Some(json!({"path": "{{steps.dl.path}}", "seconds": 10.0, "overlap": 0.0}))
        );
        assert_eq!(steps[2].for_each, Some(json!("{{steps.asr-split.chunks}}")));
        assert_eq!(steps[2].for_each_concurrency, Some(3));
        assert_eq!(
            steps[2].input,
            Some(json!({"audio_path": "{{item.path}}", "language": "en"}))
        );
        assert_eq!(
            steps[2].depends_on,
            Some(vec!["asr-split".to_string(), "dl".to_string()])
        );
        assert_eq!(steps[3].task, "builtin.merge");
        // And the planner accepts the result.
        assert!(
            crate::plan::plan(
                spec(json!([
                    {"id": "dl", "task": "plain.run"},
                    {"id": "asr", "task": "asr.run", "dependsOn": ["dl"], "chunk": {},
                     "input": {"audio_path": "{{steps.dl.path}}"}}
                ])),
                &catalog(),
                &crate::limits::Limits::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn text_is_split_by_chunk_text_wherever_it_runs() {
        let s = spec(
            json!([{"id": "sum", "task": "llm.sum", "chunk": {}, "input": {"text": "{{payload.doc}}"}}]),
        );
        let steps = expand(s, &catalog()).unwrap().steps.unwrap();
        assert_eq!(steps[0].task, "chunk.text");
        assert_eq!(steps[0].backend, None);
        assert_eq!(
            steps[0].input,
            Some(json!({"text": "{{payload.doc}}", "size": 2000, "overlap": 200}))
        );
        assert_eq!(steps[1].input, Some(json!({"text": "{{item.text}}"})));
        assert_eq!(steps[2].input.as_ref().unwrap()["strategy"], "concat_text");
    }

    #[test]
    fn bad_chunk_requests_name_the_problem() {
        let cases = [
            (
                json!([{"task": "asr.run", "chunk": {}, "input": {"audio_path": "a"}}]),
                "needs an id on every step",
            ),
            (
                json!([{"id": "x", "task": "plain.run", "chunk": {}, "input": {}}]),
                "cannot be chunked",
            ),
            (
                json!([{"id": "x", "task": "asr.run", "chunk": {}, "input": {"other": 1}}]),
                "input.audio_path",
            ),
            (
                json!([{"id": "x", "task": "asr.run", "chunk": {}}]),
                "needs an input object",
            ),
            (
                json!([{"id": "x", "task": "asr.run", "chunk": {"size": 5, "overlap": 5}, "input": {"audio_path": "a"}}]),
                "smaller than the chunk size",
            ),
            (
                json!([{"id": "x", "task": "asr.run", "chunk": {}, "forEach": [1], "input": {"audio_path": "a"}}]),
                "forEach step cannot also be chunked",
            ),
            (
                json!([{"id": "x", "task": "asr.run", "chunk": {}, "input": {"audio_path": "a"}}, {"id": "x-split", "task": "plain.run"}]),
                "already taken",
            ),
        ];
        for (steps, want) in cases {
            let e = expand(spec(steps.clone()), &catalog()).unwrap_err();
            assert!(
                e.iter()
                    .any(|f| f.message.contains(want) || f.field.contains(want)),
                "{steps}: {e:?}"
            );
        }
    }

    #[test]
    fn segments_are_shifted_and_overlaps_split() {
        let parts = json!([
            {"language": "en", "text": "a b", "segments": [{"start": 0.0, "end": 1.0, "text": "a"}, {"start": 9.0, "end": 10.0, "text": "b"}]},
            {"language": "en", "text": "b c", "segments": [{"start": 0.5, "end": 1.5, "text": "b"}, {"start": 3.0, "end": 4.0, "text": "c"}]}
        ]);
        let chunks = json!([{"start": 0.0, "end": 10.0}, {"start": 8.0, "end": 12.0}]);
        let out = merge(&json!({"strategy": "concat_segments", "parts": parts, "chunks": chunks, "overlap": 2.0})).unwrap();
        // Overlap 8..10 hands over at 9: "b", heard by both chunks, is kept
        // once, from the side its middle falls on (part 1: 8.5..9.5).
        assert_eq!(
            out["segments"],
            json!([
                {"start": 0.0, "end": 1.0, "text": "a"},
                {"start": 8.5, "end": 9.5, "text": "b"},
                {"start": 11.0, "end": 12.0, "text": "c"}
            ])
        );
        assert_eq!(out["text"], "a b c");
        assert_eq!(out["language"], "en");
        assert_eq!(out["chunks"], 2);
    }

    #[test]
    fn other_strategies() {
        assert_eq!(
            merge(&json!({"strategy": "concat_text", "parts": ["a", {"text": "b"}]})).unwrap()["text"],
            "a\nb"
        );
        assert_eq!(
            merge(&json!({"strategy": "concat_lists", "parts": [[1], {"items": [2, 3]}]})).unwrap(),
            json!([1, 2, 3])
        );
        assert_eq!(
            merge(&json!({"strategy": "sum_counts", "parts": [{"a": 1, "b": 2}, {"a": 3}]}))
                .unwrap(),
            json!({"a": 4.0, "b": 2.0})
        );
        assert_eq!(
            merge(&json!({"strategy": "sum_counts", "parts": [1, 2.5]})).unwrap(),
            json!(3.5)
        );
        assert!(
            merge(&json!({"strategy": "zip", "parts": []}))
                .unwrap_err()
                .contains("unknown merge strategy")
        );
        assert!(
            merge(&json!({"strategy": "concat_segments", "parts": [{"x": 1}]}))
                .unwrap_err()
                .contains("no `segments`")
        );
    }
}
