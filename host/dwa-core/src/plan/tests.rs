//! Planning, from the seed's own examples to every refusal.

use super::*;
use crate::catalog::TaskInfo;
use serde_json::{Value, json};

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

fn check(v: Value) -> Result<Plan, Vec<FieldError>> {
    let spec = parse_spec(v.to_string().as_bytes()).map_err(|e| vec![e])?;
    plan(spec, &catalog())
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
