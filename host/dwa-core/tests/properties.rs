//! Property-based fuzzing of what a request reaches first: task JSON
//! parsing and planning, template parsing and resolution, and the JSON
//! Schema checker. The properties: no panic; a plan that is accepted
//! restores from its stored form; a resolved template stays within its
//! byte budget.
//!
//! `just test` runs a short pass with a fixed seed (deterministic);
//! `just fuzz` runs many more cases from a fresh seed:
//! `DWA_FUZZ_CASES=20000 DWA_FUZZ_SEED=random cargo test -p dwa-core --test properties`.

use std::collections::HashMap;
use std::sync::Arc;

use dwa_core::catalog::{Catalog, TaskInfo};
use dwa_core::limits::{self, Limits};
use dwa_core::plan::{Plan, parse_spec, plan};
use dwa_core::template::{Scope, Template};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Map, Value, json};

/// Cases per property: a short pass unless `DWA_FUZZ_CASES` says more.
fn config() -> Config {
    let cases = std::env::var("DWA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    let rng_seed = match std::env::var("DWA_FUZZ_SEED").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(n) => RngSeed::Fixed(n.parse().unwrap_or(7)),
        Err(_) => RngSeed::Fixed(7),
    };
    Config {
        cases,
        rng_seed,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings that reach the template parser's corners, beside random ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{{payload}}".to_owned()),
        Just("{{steps.a.path}}".to_owned()),
        Just("{{steps.0}}".to_owned()),
        Just("{{ item }}-{{index}}".to_owned()),
        Just("{{payload.list | join(\", \") | upper}}".to_owned()),
        Just("{{payload.x | default(\"d\") | truncate(3)}}".to_owned()),
        Just("{{payload.list | first | length}}".to_owned()),
        Just("{{ }}".to_owned()),
        Just("{{payload.".to_owned()),
        Just("}}{{".to_owned()),
        Just("{{result | json}}".to_owned()),
        Just("{{payload | nosuch}}".to_owned()),
        Just("{{payload[99999999999999999999]}}".to_owned()),
        "[a-z0-9{}|. \\[\\]\"(),_-]{0,24}",
        any::<String>(),
    ]
}

/// Any JSON, up to a few levels and a few dozen nodes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

const TASKS: [&str; 6] = [
    "builtin.echo",
    "download.file",
    "whisper.transcribe",
    "asr.run",
    "nosuch.task",
    "",
];
const IDS: [&str; 5] = ["a", "b", "c", "0", "bad id"];

fn catalog() -> Catalog {
    let mut c = Catalog::with_builtins();
    c.set_effects(["toast", "webhook"].map(String::from));
    c.insert(TaskInfo {
        input_schema: Some(json!({"type": "object", "required": ["url"],
            "properties": {"url": {"type": "string", "minLength": 8}}})),
        ..TaskInfo::bare("download.file", "local")
    });
    c.insert(TaskInfo {
        gpu: Some("T4".into()),
        ..TaskInfo::bare("whisper.transcribe", "local")
    });
    c.insert(TaskInfo {
        chunk: Some(dwa_core::catalog::ChunkSpec {
            input: "audio_path".into(),
            kind: "audio".into(),
            default_size: 30.0,
            overlap: 0.0,
            merge: "concat_segments".into(),
        }),
        ..TaskInfo::bare("asr.run", "local")
    });
    c
}

/// A step: mostly well-formed, every field sometimes odd.
fn step() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(IDS.to_vec())),
        prop::sample::select(TASKS.to_vec()),
        prop::option::of(prop::collection::vec(
            prop::sample::select(IDS.to_vec()),
            0..3,
        )),
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![
            text().prop_map(Value::String),
            prop::collection::vec(json_value(), 0..4).prop_map(Value::Array),
        ]),
        prop::option::of((any::<i64>(), any::<i64>(), any::<f64>())),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["default", "gpu", "video", "x/y"])),
    )
        .prop_map(|(id, task, deps, input, for_each, retry, chunk, queue)| {
            let mut s = Map::new();
            if let Some(id) = id {
                s.insert("id".into(), json!(id));
            }
            s.insert("task".into(), json!(task));
            if let Some(d) = deps {
                s.insert("dependsOn".into(), json!(d));
            }
            if let Some(i) = input {
                s.insert("input".into(), i);
            }
            if let Some(f) = for_each {
                s.insert("forEach".into(), f);
            }
            if let Some((attempts, delay, timeout)) = retry {
                s.insert(
                    "retry".into(),
                    json!({"attempts": attempts, "delay": delay}),
                );
                s.insert("resources".into(), json!({"timeout": timeout}));
            }
            if chunk {
                s.insert("chunk".into(), json!({}));
            }
            if let Some(q) = queue {
                s.insert("queue".into(), json!(q));
            }
            Value::Object(s)
        })
}

/// A task body: a single task or a pipeline, with effects.
fn task() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TASKS.to_vec()),
        json_value(),
        prop::option::of(prop::collection::vec(step(), 0..7)),
        prop::option::of(prop::collection::vec(
            (
                prop::sample::select(vec!["toast", "webhook", "nope"]),
                json_value(),
            ),
            0..3,
        )),
    )
        .prop_map(|(t, payload, steps, effects)| {
            let mut o = Map::new();
            o.insert("type".into(), json!(t));
            o.insert("payload".into(), payload);
            if let Some(s) = steps {
                o.insert("steps".into(), Value::Array(s));
            }
            if let Some(e) = effects {
                let list: Vec<Value> = e
                    .into_iter()
                    .map(|(name, config)| json!({"$event": name, "text": config}))
                    .collect();
                o.insert("onSuccess".into(), Value::Array(list));
            }
            Value::Object(o)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_parse_or_are_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_spec(&bytes);
    }

    #[test]
    fn any_task_plans_or_is_refused_and_an_accepted_plan_restores(body in task()) {
        let Ok(spec) = parse_spec(body.to_string().as_bytes()) else {
            return Ok(());
        };
        let limits = Limits { max_steps: 12, ..Limits::default() };
        if let Ok(s) = dwa_core::visualize::sketch(spec.clone(), &catalog(), &limits) {
            let _ = dwa_core::visualize::mermaid(&s);
        }
        if let Ok(p) = plan(spec, &catalog(), &limits) {
            let placements = p.placements();
            let restored = Plan::restore(p.spec.clone(), &placements);
            prop_assert!(restored.is_ok(), "{body}: {:?}", restored.err());
            prop_assert_eq!(restored.map(|r| r.placements()).ok(), Some(placements));
        }
    }

    #[test]
    fn any_template_resolves_within_its_byte_budget_or_is_refused(
        template in json_value(),
        payload in json_value(),
        step in json_value(),
        budget in 0usize..4096,
    ) {
        let Ok(t) = Template::parse(&template) else {
            return Ok(());
        };
        let steps = HashMap::from([(0usize, Arc::new(step))]);
        let scope = Scope {
            payload: Some(&payload),
            steps: Some(&steps),
            item: Some(&payload),
            index: Some(3),
            max_bytes: Some(budget),
            ..Default::default()
        };
        if let Ok(v) = t.resolve(&scope) {
            // Interpolated text counts its pieces, so the whole may exceed
            // the count by the literal text between them: bounded by the
            // template's own size.
            let slack = template.to_string().len() + 64;
            prop_assert!(
                limits::size_within(&v, budget + slack).is_some(),
                "{template} resolved past its budget of {budget}"
            );
        }
    }

    #[test]
    fn any_schema_checks_any_value_without_panic(schema in json_value(), value in json_value()) {
        let _ = dwa_core::schema::check(&schema, &value);
    }
}
