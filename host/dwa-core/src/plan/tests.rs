//! Planning, from the seed's own examples to every refusal.

use super::*;
use crate::catalog::TaskInfo;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn catalog() -> Catalog {
    let mut c = Catalog::with_builtins();
    c.set_effects(["toast", "webhook", "notify"].map(String::from));
    for (name, gpu) in [
        ("download.file", None),
        ("scenes.detect", None),
        ("florence.caption", Some("T4")),
        ("whisper.transcribe", Some("T4")),
    ] {
        c.insert(TaskInfo {
            gpu: gpu.map(str::to_owned),
            timeout: Some(120.0),
            ..TaskInfo::bare(name, "local")
        });
    }
    c
}

/// The default limits, with two queues configured beyond default and gpu.
fn limits() -> Limits {
    let mut l = Limits::default();
    l.queues
        .extend([("video".to_owned(), 2), ("fast".to_owned(), 8)]);
    l
}

fn check(v: Value) -> Result<Plan, Vec<FieldError>> {
    check_within(v, &limits())
}

fn check_within(v: Value, limits: &Limits) -> Result<Plan, Vec<FieldError>> {
    let spec = parse_spec(v.to_string().as_bytes()).map_err(|e| vec![e])?;
    plan(spec, &catalog(), limits)
}

fn echo_chain(n: usize) -> Value {
    let steps: Vec<Value> = (0..n).map(|_| json!({"task": "builtin.echo"})).collect();
    json!({"type": "chain", "steps": steps})
}

fn one_error(v: Value) -> FieldError {
    let errs = check(v).expect_err("should be invalid");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn seed_video_dag_plans() {
    let p = check(json!({
        "type": "video-analysis",
        "payload": {"url": "https://x/v.mp4"},
        "steps": [
            {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
            {"id": "frames", "task": "scenes.detect", "dependsOn": ["download"]},
            {"id": "caps", "task": "florence.caption", "dependsOn": ["frames"],
             "forEach": "{{steps.frames.scenes}}", "forEachConcurrency": 4,
             "input": {"image_path": "{{item.keyframe}}", "scene_index": "{{index}}"}}
        ]
    }))
    .unwrap();
    assert!(p.is_pipeline);
    assert_eq!(p.steps[0].deps, Vec::<usize>::new());
    assert_eq!(p.steps[1].deps, vec![0]);
    assert_eq!(p.steps[1].needs, vec![0]);
    assert_eq!(p.steps[2].needs, vec![1]);
    assert_eq!(p.steps[0].dependants, vec![1]);
    assert_eq!(p.steps[2].placement.queue, "gpu");
    assert_eq!(p.steps[0].placement.queue, "default");
    assert_eq!(p.steps[0].placement.timeout_ms, 120_000);
    assert_eq!(p.steps[0].placement.backend, "local");
}

#[test]
fn sequential_pipeline_chains_and_refers_by_index() {
    let p = check(json!({
        "type": "podcast",
        "steps": [
            {"task": "builtin.echo"},
            {"task": "builtin.echo", "input": {"a": "{{steps.0.x}}"}},
            {"task": "builtin.echo"}
        ]
    }))
    .unwrap();
    assert_eq!(p.steps[1].deps, vec![0]);
    assert_eq!(p.steps[2].deps, vec![1]);
    assert_eq!(p.steps[2].key, "2");
}

#[test]
fn forward_reference_in_sequence_is_rejected() {
    let e = one_error(json!({
        "type": "p",
        "steps": [
            {"task": "builtin.echo", "input": {"a": "{{steps.1.x}}"}},
            {"task": "builtin.echo"}
        ]
    }));
    assert_eq!(e.step.as_deref(), Some("0"));
    assert_eq!(e.field, "steps[0].input");
    assert!(e.message.contains("not a dependency"), "{}", e.message);
}

#[test]
fn unknown_step_reference() {
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "input": "{{steps.nope.x}}"}]
    }));
    assert!(e.message.contains("unknown step \"nope\""), "{}", e.message);
    assert!(e.message.contains("known ids: a"));
}

#[test]
fn unknown_task_names_step_and_field() {
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo"}, {"id": "b", "task": "no.such"}]
    }));
    assert_eq!(e.step.as_deref(), Some("b"));
    assert_eq!(e.field, "steps[1].task");
    assert!(e.message.contains("unknown task \"no.such\""));
    let e = one_error(json!({"type": "no.such"}));
    assert_eq!(e.field, "type");
}

#[test]
fn dependency_errors() {
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "dependsOn": ["ghost"]}]
    }));
    assert_eq!(e.field, "steps[0].dependsOn[0]");
    assert!(e.message.contains("unknown step \"ghost\""));

    let e = one_error(json!({
        "type": "p",
        "steps": [
            {"id": "a", "task": "builtin.echo"},
            {"id": "a", "task": "builtin.echo"}
        ]
    }));
    assert_eq!(e.field, "steps[1].id");
    assert!(e.message.contains("duplicate id"));

    let errs = check(json!({
        "type": "p",
        "steps": [
            {"id": "a", "task": "builtin.echo", "dependsOn": ["c"]},
            {"id": "b", "task": "builtin.echo", "dependsOn": ["a"]},
            {"id": "c", "task": "builtin.echo", "dependsOn": ["b"]},
            {"id": "d", "task": "builtin.echo", "dependsOn": ["d"]}
        ]
    }))
    .unwrap_err();
    let cycle = errs.iter().find(|e| e.message.contains("cycle")).unwrap();
    assert_eq!(cycle.message, "dependency cycle: a → b → c → a");
    assert!(errs.iter().any(|e| e.message.contains("depends on itself")));
}

#[test]
fn for_each_rules() {
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "forEach": "x {{payload.list}}"}]
    }));
    assert_eq!(e.field, "steps[0].forEach");
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "forEach": 5}]
    }));
    assert_eq!(e.field, "steps[0].forEach");
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "input": "{{item}}"}]
    }));
    assert!(e.message.contains("only in the input of a forEach step"));
    let e = one_error(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "forEach": [1], "forEachConcurrency": 0}]
    }));
    assert_eq!(e.field, "steps[0].forEachConcurrency");
    assert!(check(json!({
        "type": "p",
        "steps": [{"id": "a", "task": "builtin.echo", "forEach": [1, 2], "input": {"i": "{{index}}", "v": "{{item}}"}}]
    }))
    .is_ok());
}

#[test]
fn type_errors_name_the_path() {
    let e = parse_spec(br#"{"type":"p","steps":[{"task":"builtin.echo","dependsOn":"a"}]}"#)
        .unwrap_err();
    assert_eq!(e.field, "steps[0].dependsOn");
    assert_eq!(e.step.as_deref(), Some("0"));
    let e = parse_spec(br#"{"type":"p","retry":{"attempts":"3"}}"#).unwrap_err();
    assert_eq!(e.field, "retry.attempts");
    let e = parse_spec(br#"{"type":"p","dependOn":[]}"#).unwrap_err();
    assert!(
        e.message.contains("unknown field `dependOn`"),
        "{}",
        e.message
    );
    let e = parse_spec(br#"{"payload":{}}"#).unwrap_err();
    assert!(e.message.contains("missing field `type`"));
    let e = parse_spec(b"{nope").unwrap_err();
    assert_eq!(e.field, "(body)");
}

#[test]
fn retry_and_timeout_bounds() {
    let errs = check(json!({
        "type": "builtin.echo",
        "retry": {"attempts": 0, "delay": 100, "maxDelay": 10},
        "resources": {"timeout": -1}
    }))
    .unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec!["retry.attempts", "retry.maxDelay", "resources.timeout"]
    );
}

#[test]
fn effects_are_checked() {
    let e = one_error(json!({
        "type": "builtin.echo",
        "onSuccess": [{"$event": "fireworks"}]
    }));
    assert_eq!(e.field, "onSuccess[0].$event");
    assert!(
        e.message.contains("loaded effects: notify, toast, webhook"),
        "{}",
        e.message
    );
    let e = one_error(json!({
        "type": "builtin.echo",
        "onPending": [{"$event": "toast", "text": "{{result.x}}"}]
    }));
    assert_eq!(e.field, "onPending[0]");
    assert!(
        check(json!({
            "type": "builtin.echo",
            "onError": [{"$event": "notify", "channel": "slack", "message": "failed: {{error}}"}],
            "onSuccess": [{"$event": "webhook", "url": "https://x/{{result.id}}"}]
        }))
        .is_ok()
    );
}

#[test]
fn explicit_queue_and_gpu() {
    let p = check(json!({
        "type": "p",
        "queue": "video",
        "steps": [{"task": "builtin.echo"}, {"task": "builtin.echo", "queue": "fast", "resources": {"gpu": "A10G"}}]
    }))
    .unwrap();
    assert_eq!(p.steps[0].placement.queue, "video");
    assert_eq!(p.steps[1].placement.queue, "fast");
    let p = check(
        json!({"type": "p", "steps": [{"task": "builtin.echo", "resources": {"gpu": "A10G"}}]}),
    )
    .unwrap();
    assert_eq!(p.steps[0].placement.queue, "gpu");
}

#[test]
fn restore_keeps_placements() {
    let p = check(json!({"type": "p", "steps": [{"id": "a", "task": "download.file"}]})).unwrap();
    let placements = p.placements();
    let restored = Plan::restore(p.spec.clone(), &placements).unwrap();
    assert_eq!(restored.placements(), placements);
}

#[test]
fn a_task_at_the_step_limit_plans_and_one_step_more_is_refused_naming_the_limit() {
    let l = Limits {
        max_steps: 50,
        ..limits()
    };
    assert!(check_within(echo_chain(50), &l).is_ok());
    let errs = check_within(echo_chain(51), &l).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "steps");
    assert!(
        errs[0].message.contains("51") && errs[0].message.contains("DWA_MAX_STEPS"),
        "{}",
        errs[0].message
    );
}

#[test]
fn chunked_steps_count_three_against_the_step_limit() {
    let mut c = catalog();
    c.insert(TaskInfo {
        chunk: Some(crate::catalog::ChunkSpec {
            input: "text".into(),
            kind: "text".into(),
            default_size: 2000.0,
            overlap: 0.0,
            merge: "concat_text".into(),
        }),
        ..TaskInfo::bare("t.run", "local")
    });
    let task = json!({"type": "p", "steps": [{"id": "a", "task": "t.run", "chunk": {}, "input": {"text": "hi"}}]});
    let spec = parse_spec(task.to_string().as_bytes()).unwrap();
    let l = Limits {
        max_steps: 2,
        ..limits()
    };
    let errs = plan(spec, &c, &l).unwrap_err();
    assert!(
        errs[0].message.contains("is 3, over the limit of 2"),
        "{errs:?}"
    );
}

#[test]
fn a_payload_past_the_depth_limit_is_refused_naming_the_limit() {
    let mut deep = json!(1);
    for _ in 0..10 {
        deep = json!({"a": deep});
    }
    let l = Limits {
        max_json_depth: 10,
        ..limits()
    };
    assert!(check_within(json!({"type": "builtin.echo", "payload": deep.clone()}), &l).is_ok());
    let errs =
        check_within(json!({"type": "builtin.echo", "payload": {"b": deep}}), &l).unwrap_err();
    assert_eq!(errs[0].field, "payload");
    assert!(
        errs[0].message.contains("DWA_MAX_JSON_DEPTH"),
        "{}",
        errs[0].message
    );
}

#[test]
fn a_literal_for_each_past_the_item_limit_is_refused_naming_the_limit() {
    let l = Limits {
        max_items_per_step: 3,
        ..limits()
    };
    let task =
        |n: usize| json!({"type": "p", "steps": [{"task": "builtin.echo", "forEach": vec![1; n]}]});
    assert!(check_within(task(3), &l).is_ok());
    let e = one_error_within(task(4), &l);
    assert_eq!(e.field, "steps[0].forEach");
    assert!(e.message.contains("DWA_MAX_FOREACH_ITEMS"), "{}", e.message);
}

fn one_error_within(v: Value, l: &Limits) -> FieldError {
    let errs = check_within(v, l).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn an_unconfigured_queue_is_refused_with_the_configured_ones_listed() {
    let e = one_error_within(
        json!({"type": "builtin.echo", "queue": "mine"}),
        &Limits::default(),
    );
    assert_eq!(e.field, "queue");
    assert!(
        e.message.contains("\"mine\" is not configured") && e.message.contains("default, gpu"),
        "{}",
        e.message
    );
    let e = one_error_within(
        json!({"type": "p", "steps": [{"task": "builtin.echo", "queue": "video"}]}),
        &Limits::default(),
    );
    assert_eq!(e.field, "steps[0].queue");
}

#[test]
fn a_refusal_lists_at_most_a_hundred_problems_and_counts_the_rest() {
    let steps: Vec<Value> = (0..300)
        .map(|_| json!({"task": "builtin.echo", "retry": {"attempts": 0}}))
        .collect();
    let errs = check(json!({"type": "p", "steps": steps})).unwrap_err();
    assert_eq!(errs.len(), 101);
    assert_eq!(errs[100].message, "200 more problems, not listed");
}

#[test]
fn planning_a_long_pipeline_neither_recurses_nor_grows_quadratically() {
    // 20,000 chained steps, each reading the first one's result: a recursive
    // cycle search would overflow the test thread's stack, and a graph search
    // per reference would take minutes.
    let n = 20_000;
    let mut steps: Vec<Value> = vec![json!({"id": "s0", "task": "builtin.echo"})];
    for i in 1..n {
        steps.push(json!({"id": format!("s{i}"), "task": "builtin.echo",
            "dependsOn": [format!("s{}", i - 1)], "input": {"first": "{{steps.s0}}"}}));
    }
    let l = Limits {
        max_steps: n,
        ..limits()
    };
    let started = Instant::now();
    let p = check_within(json!({"type": "long", "steps": steps}), &l).unwrap();
    assert_eq!(p.steps[n - 1].needs, vec![0]);
    // Generous for a debug build on a shared machine; quadratic work is minutes.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_long_cycle_is_reported_without_recursion() {
    let n = 20_000;
    let steps: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("s{i}"), "task": "builtin.echo", "dependsOn": [format!("s{}", (i + 1) % n)]}))
        .collect();
    let l = Limits {
        max_steps: n,
        ..limits()
    };
    let e = one_error_within(json!({"type": "ring", "steps": steps}), &l);
    assert!(e.message.starts_with("dependency cycle: "), "{}", e.message);
}

#[test]
fn a_lifecycle_list_holds_at_most_64_effects() {
    let toast = json!({"$event": "toast", "text": "hi"});
    let task = |n: usize| json!({"type": "builtin.echo", "onSuccess": vec![toast.clone(); n]});
    assert!(check(task(64)).is_ok());
    let e = one_error_within(task(65), &limits());
    assert_eq!(e.field, "onSuccess");
    assert!(e.message.contains("at most 64"), "{}", e.message);
}

#[test]
fn wait_steps_are_named_literal_and_unique() {
    let p = check(json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.wait"},
        {"id": "b", "task": "builtin.wait", "dependsOn": ["a"], "input": {"name": "approval", "timeout": 5}}
    ]}))
    .unwrap();
    let names: Vec<Option<String>> = p.steps.iter().map(crate::plan::wait_name).collect();
    assert_eq!(names, [Some("a".to_owned()), Some("approval".to_owned())]);
    assert_eq!(crate::plan::wait_timeout(&json!({"timeout": 5})), 5);
    assert_eq!(
        crate::plan::wait_timeout(&json!({})),
        crate::plan::DEFAULT_WAIT_MS
    );

    let e = one_error(json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.wait", "input": {"name": "x"}},
        {"id": "b", "task": "builtin.wait", "input": {"name": "x"}}
    ]}));
    assert_eq!(
        (e.step.as_deref(), e.field.as_str()),
        (Some("b"), "steps[1].input.name")
    );
    assert!(
        e.message.contains("already the name of step \"a\""),
        "{}",
        e.message
    );
    let e = one_error(json!({"type": "p", "payload": {"n": "x"}, "steps": [
        {"id": "a", "task": "builtin.wait", "input": {"name": "{{payload.n}}"}}
    ]}));
    assert!(e.message.contains("must be literal"), "{}", e.message);
    let e = one_error(json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.wait", "forEach": [1, 2]}
    ]}));
    assert_eq!(e.field, "steps[0].forEach");
    // The input schema holds the timeout to 30 days.
    let e = one_error(json!({"type": "p", "steps": [
        {"id": "a", "task": "builtin.wait", "input": {"timeout": 2_592_000_001u64}}
    ]}));
    assert!(e.field.contains("timeout"), "{e:?}");
}

#[test]
fn a_condition_needs_the_steps_it_reads_and_guards_cover_every_descendant() {
    let p = check(json!({"type": "t", "steps": [
        {"id": "a", "task": "builtin.echo", "onFailure": "skipDependants"},
        {"id": "b", "task": "builtin.echo", "dependsOn": ["a"], "input": {},
         "if": "{{ steps.a.x == 1 }}"},
        {"id": "c", "task": "builtin.echo", "dependsOn": ["b"], "input": {}},
        {"id": "d", "task": "builtin.echo", "dependsOn": [], "input": {}}
    ]}))
    .unwrap();
    let b = &p.steps[1];
    assert!(b.condition.is_some());
    assert_eq!(b.needs, vec![0], "the condition reads step a");
    assert_eq!(b.guards, vec![0]);
    assert_eq!(
        p.steps[2].guards,
        vec![0],
        "a skips its dependants' dependants too"
    );
    assert_eq!(p.steps[2].needs, vec![0], "a guard's result is read");
    assert!(p.steps[3].guards.is_empty(), "d does not depend on a");
    assert_eq!(
        p.steps[0].on_failure,
        crate::model::OnFailure::SkipDependants
    );
}

#[test]
fn a_condition_may_not_read_items_or_effect_values() {
    for (cond, says) in [
        ("{{ item == 1 }}", "item and index exist only"),
        ("{{ error }}", "exist only in effects"),
        ("{{ steps.later.x }}", "not a dependency"),
    ] {
        let e = one_error(json!({"type": "t", "steps": [
            {"id": "a", "task": "builtin.echo", "forEach": [1, 2], "if": cond},
            {"id": "later", "task": "builtin.echo", "dependsOn": ["a"]}
        ]}));
        assert_eq!(e.field, "steps[0].if", "{cond}");
        assert!(e.message.contains(says), "{cond}: {}", e.message);
    }
}

#[test]
fn a_rate_window_reads_ms_or_a_unit() {
    use super::step::parse_per;
    assert_eq!(parse_per(&json!(250)), Ok(250));
    assert_eq!(parse_per(&json!("500ms")), Ok(500));
    assert_eq!(parse_per(&json!("30s")), Ok(30_000));
    assert_eq!(parse_per(&json!("1m")), Ok(60_000));
    assert_eq!(parse_per(&json!("1h")), Ok(3_600_000));
    assert_eq!(parse_per(&json!("1d")), Ok(86_400_000));
    for bad in [
        json!("2d"),
        json!("1 week"),
        json!(0),
        json!(-5),
        json!("m"),
        json!(true),
    ] {
        assert!(parse_per(&bad).is_err(), "{bad}");
    }
}

#[test]
fn the_cell_rate_allows_a_burst_then_one_per_interval() {
    // Two per second, from t = 1000.
    let (t1, a) = gcra(None, 1_000, 2, 1_000);
    assert_eq!((t1, a), (1_500.0, None));
    let (t2, a) = gcra(Some(t1), 1_000, 2, 1_000);
    assert_eq!((t2, a), (2_000.0, None));
    let (t3, a) = gcra(Some(t2), 1_000, 2, 1_000);
    assert_eq!(
        (t3, a),
        (2_000.0, Some(1_500)),
        "the third waits half a second"
    );
    assert_eq!(gcra(Some(t2), 1_500, 2, 1_000).1, None);
    // Three per second does not round the interval down to 333 ms.
    let (t, _) = gcra(None, 0, 3, 1_000);
    assert!((t - 1_000.0 / 3.0).abs() < 1e-9);
}

#[test]
fn a_steps_gates_are_its_own_else_its_tasks() {
    let p = check(json!({"type": "t",
    "concurrency": {"key": "{{payload.customer}}", "limit": 3},
    "rateLimit": {"key": "openai", "limit": 60, "per": "1m"},
    "payload": {"customer": "acme"},
    "steps": [
        {"id": "a", "task": "builtin.echo"},
        {"id": "b", "task": "builtin.echo", "concurrency": {"key": "{{steps.a.k}}", "limit": 1}}
    ]}))
    .unwrap();
    let (a, b) = (&p.steps[0], &p.steps[1]);
    assert_eq!(a.concurrency.as_ref().map(|g| g.limit), Some(3));
    assert_eq!(a.rate.as_ref().and_then(|g| g.per_ms), Some(60_000));
    assert_eq!(b.concurrency.as_ref().map(|g| g.limit), Some(1));
    assert!(
        b.needs.contains(&0),
        "a key that reads a step needs its result"
    );
    assert_eq!(
        b.rate.as_ref().map(|g| g.limit),
        Some(60),
        "the task's rate still applies"
    );
    let e = one_error(
        json!({"type": "builtin.echo", "rateLimit": {"key": "k", "limit": 0, "per": 10}}),
    );
    assert_eq!(e.field, "rateLimit.limit");
}

fn nested(depth: usize) -> Value {
    let mut t = json!({"type": "leaf", "steps": [{"task": "builtin.echo"}]});
    for _ in 0..depth {
        t = json!({"type": "wrap", "steps": [{"id": "child", "subtask": t}]});
    }
    t
}

#[test]
fn a_subtask_is_planned_at_submission_and_named_builtin_subtask() {
    let p = check(json!({"type": "outer", "steps": [
        {"id": "a", "task": "builtin.echo", "input": {"x": 1}},
        {"id": "inner", "dependsOn": ["a"], "input": {"x": "{{steps.a.x}}"},
         "subtask": {"type": "inner", "steps": [{"task": "builtin.echo", "input": "{{payload}}"}]}}
    ]}))
    .unwrap();
    let inner = &p.steps[1];
    assert_eq!(inner.task, SUBTASK_TASK);
    assert!(inner.subtask.is_some());
    assert_eq!(
        p.spec.steps.as_ref().unwrap()[1].task,
        SUBTASK_TASK,
        "the stored spec names it"
    );
    // A stored task reads back without the catalog its sub-task was checked against.
    let restored = Plan::restore(p.spec.clone(), &p.placements()).unwrap();
    assert!(restored.steps[1].subtask.is_some());
    let e = one_error(json!({"type": "outer", "steps": [
        {"id": "inner", "subtask": {"type": "inner", "steps": [{"task": "no.such.task"}]}}
    ]}));
    assert_eq!(e.field, "steps[0].subtask.steps[0].task", "{e:?}");
    let e = one_error(json!({"type": "outer", "steps": [
        {"task": "builtin.echo", "subtask": {"type": "builtin.echo"}}
    ]}));
    assert_eq!(e.field, "steps[0].task");
    let e = one_error(json!({"type": "outer", "steps": [{"task": "builtin.subtask"}]}));
    assert_eq!(e.field, "steps[0].subtask");
    let errs = check(json!({"type": "outer", "steps": [{"id": "x"}]})).unwrap_err();
    assert_eq!(errs[0].field, "steps[0].task", "{errs:?}");
    assert!(errs[0].message.contains("is required"), "{errs:?}");
}

#[test]
fn subtasks_nest_a_bounded_depth_and_their_steps_count() {
    assert!(check(nested(MAX_SUBTASK_DEPTH)).is_ok());
    let errs = check(nested(MAX_SUBTASK_DEPTH + 1)).unwrap_err();
    assert!(errs.iter().any(|e| e.message.contains("nest")), "{errs:?}");
    let l = Limits {
        max_steps: 3,
        ..limits()
    };
    let three = json!({"type": "t", "steps": [
        {"task": "builtin.echo"},
        {"subtask": {"type": "c", "steps": [{"task": "builtin.echo"}, {"task": "builtin.echo"}]}}
    ]});
    let errs = check_within(three, &l).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.message.contains("sub-tasks' steps count")),
        "{errs:?}"
    );
}
