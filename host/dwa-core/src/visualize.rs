//! Mermaid diagrams of a task's steps, and the mermaid.live link that opens
//! them (`#pako:` + base64url of zlib-deflated `{"code", "mermaid"}` JSON).

use std::collections::{BTreeSet, HashSet};
use std::io::Write;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::catalog::{Catalog, TaskInfo};
use crate::limits::Limits;
use crate::model::TaskSpec;
use crate::plan::{FieldError, Plan, plan};

/// A step whose task no configured backend serves: drawn, and named here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnknownTask {
    /// The step's id (or index).
    pub step: String,
    /// The task it names.
    pub task: String,
}

/// What `POST /api/visualize` draws: the plan and the steps whose task is unknown.
#[derive(Debug, Clone)]
pub struct Sketch {
    /// The task planned as it would run (unknown tasks placed nowhere).
    pub plan: Plan,
    /// The catalog it was planned against, unknown tasks included.
    pub catalog: Catalog,
    /// Steps whose task no backend serves, in step order.
    pub unknown: Vec<UnknownTask>,
}

/// Plans `spec` for drawing only: a task that no configured backend serves
/// (or a backend this host lacks) is drawn and listed instead of refused, so
/// that a diagram needs no live backend, and inputs are not held to the
/// tasks' schemas (the seed draws steps without any). Every other check
/// still applies.
pub fn sketch(
    spec: TaskSpec,
    catalog: &Catalog,
    limits: &Limits,
) -> Result<Sketch, Vec<FieldError>> {
    let mut catalog = catalog.clone();
    let mut unknown = Vec::new();
    let steps: Vec<(String, String, Option<String>)> = match &spec.steps {
        Some(steps) => steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = s.id.clone().unwrap_or_else(|| i.to_string());
                (
                    key,
                    s.task.clone(),
                    s.backend.clone().or_else(|| spec.backend.clone()),
                )
            })
            .collect(),
        None => vec![(
            spec.task_type.clone(),
            spec.task_type.clone(),
            spec.backend.clone(),
        )],
    };
    let mut placed = HashSet::new();
    for (key, task, backend) in steps {
        if catalog.lookup(&task, backend.as_deref()).is_ok() {
            continue;
        }
        // An unknown backend name stays an error: it is a typo, not a gap.
        let backend = backend.unwrap_or_else(|| "local".to_owned());
        if crate::catalog::BACKEND_PRECEDENCE.contains(&backend.as_str())
            && placed.insert((task.clone(), backend.clone()))
        {
            catalog.insert(TaskInfo::bare(&task, &backend));
        }
        unknown.push(UnknownTask { step: key, task });
    }
    // After the placeholders, which may take a generated schema.
    catalog.drop_input_schemas();
    let plan = plan(spec, &catalog, limits)?;
    Ok(Sketch {
        plan,
        catalog,
        unknown,
    })
}

/// The word a node shows above the task's short name (the seed's
/// `a[process\ndownload]`, `b[vision\nyolo]`), by the task's category.
pub fn category_word(category: Option<&str>) -> &'static str {
    match category {
        Some("see") => "vision",
        Some("hear") => "audio",
        Some("think") => "llm",
        Some("speak") => "speech",
        Some("get" | "transform") => "process",
        Some("find") => "search",
        Some("watch") => "video",
        Some("builtin") => "builtin",
        _ => "task",
    }
}

/// Words mermaid's flowchart grammar reserves: not usable as node ids.
const RESERVED: [&str; 12] = [
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "style",
    "class",
    "classDef",
    "click",
    "linkStyle",
    "direction",
    "default",
    "call",
];

/// A `graph TD` diagram in the seed's form: one node per step, its id the
/// step's id, labelled with the task's category word and short name
/// (`a[process\ndownload]`); `forEach` steps are subroutine shapes, steps
/// of unknown tasks dashed.
pub fn mermaid(sketch: &Sketch) -> String {
    let mut out = String::from("graph TD\n");
    let mut taken = HashSet::new();
    let ids: Vec<String> = sketch
        .plan
        .steps
        .iter()
        .map(|s| {
            let safe = s
                .key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && s.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&s.key));
            let mut id = if safe {
                s.key.clone()
            } else {
                format!("step{}", s.idx)
            };
            while !taken.insert(id.clone()) {
                id.push('_');
            }
            id
        })
        .collect();
    let unknown: BTreeSet<&str> = sketch.unknown.iter().map(|u| u.step.as_str()).collect();
    for (s, id) in sketch.plan.steps.iter().zip(&ids) {
        let category = sketch
            .catalog
            .lookup(&s.task, Some(&s.placement.backend))
            .ok()
            .and_then(|i| i.category.as_deref());
        let short = s.task.split('.').next().unwrap_or(&s.task);
        let mut label = format!("{}\\n{short}", category_word(category));
        if s.for_each.is_some() {
            label.push_str("\\nforEach");
            if let Some(c) = s.for_each_concurrency {
                label.push_str(&format!(" ×{c}"));
            }
        }
        let label = if label
            .chars()
            .all(|c| c.is_alphanumeric() || " _-.\\×".contains(c))
        {
            label
        } else {
            format!("\"{}\"", escape(&label))
        };
        let (open, close) = if s.for_each.is_some() {
            ("[[", "]]")
        } else {
            ("[", "]")
        };
        out.push_str(&format!("  {id}{open}{label}{close}\n"));
    }
    for s in &sketch.plan.steps {
        for d in &s.deps {
            out.push_str(&format!("  {} --> {}\n", ids[*d], ids[s.idx]));
        }
    }
    let dashed: Vec<&str> = sketch
        .plan
        .steps
        .iter()
        .zip(&ids)
        .filter(|(s, _)| unknown.contains(s.key.as_str()))
        .map(|(_, id)| id.as_str())
        .collect();
    if !dashed.is_empty() {
        out.push_str("  classDef unknown stroke-dasharray: 5 5\n");
        out.push_str(&format!("  class {} unknown\n", dashed.join(",")));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// The mermaid.live editor link for `code`.
pub fn live_url(code: &str) -> String {
    let state = json!({"code": code, "mermaid": "{\"theme\":\"default\"}"}).to_string();
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(state.as_bytes());
    let bytes = enc.finish().unwrap_or_default();
    format!(
        "https://mermaid.live/edit#pako:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::parse_spec;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    fn drawn(body: &str, catalog: &Catalog) -> (String, Vec<UnknownTask>) {
        let s = sketch(
            parse_spec(body.as_bytes()).unwrap(),
            catalog,
            &Limits::default(),
        )
        .unwrap();
        (mermaid(&s), s.unknown)
    }

    #[test]
    fn the_seeds_example_is_drawn_as_the_seed_shows_it_without_a_backend() {
        let (m, unknown) = drawn(
            r#"{"type":"pipeline","steps":[
                {"id":"a","task":"download.file"},
                {"id":"b","task":"yolo.detect","dependsOn":["a"]},
                {"id":"c","task":"faces.detect","dependsOn":["a"]}]}"#,
            &Catalog::with_builtins(),
        );
        assert_eq!(
            m,
            "graph TD\n  a[task\\ndownload]\n  b[task\\nyolo]\n  c[task\\nfaces]\n  a --> b\n  a --> c\n  classDef unknown stroke-dasharray: 5 5\n  class a,b,c unknown\n"
        );
        let names: Vec<&str> = unknown.iter().map(|u| u.task.as_str()).collect();
        assert_eq!(names, ["download.file", "yolo.detect", "faces.detect"]);
        // Served tasks get their category's word, and no dashes; a step
        // drawn without input is not held to its task's schema.
        let mut c = Catalog::with_builtins();
        for (name, category) in [
            ("download.file", "get"),
            ("yolo.detect", "see"),
            ("faces.detect", "see"),
        ] {
            c.insert(TaskInfo {
                category: Some(category.into()),
                input_schema: Some(serde_json::json!({"type": "object", "required": ["url"]})),
                ..TaskInfo::bare(name, "local")
            });
        }
        let (m, unknown) = drawn(
            r#"{"type":"p","steps":[{"id":"a","task":"download.file"},
                {"id":"b","task":"yolo.detect","dependsOn":["a"]}]}"#,
            &c,
        );
        assert_eq!(
            m,
            "graph TD\n  a[process\\ndownload]\n  b[vision\\nyolo]\n  a --> b\n"
        );
        assert!(unknown.is_empty());
    }

    #[test]
    fn an_unknown_task_with_a_generated_schema_is_drawn_unchecked() {
        let mut c = Catalog::with_builtins();
        let generated = TaskInfo {
            input_schema: Some(serde_json::json!({"type": "object", "required": ["url"]})),
            ..TaskInfo::bare("download.file", "local")
        };
        c.set_generated(std::sync::Arc::new(
            [("download.file".to_owned(), generated)]
                .into_iter()
                .collect(),
        ));
        let (m, unknown) = drawn(
            r#"{"type":"p","steps":[{"id":"a","task":"download.file"}]}"#,
            &c,
        );
        assert_eq!(unknown.len(), 1);
        assert!(m.contains("a[task\\ndownload]"), "{m}");
    }

    #[test]
    fn node_ids_stay_valid_and_distinct() {
        let (m, _) = drawn(
            r#"{"type":"p","steps":[{"task":"builtin.echo"},{"id":"end","task":"builtin.echo","dependsOn":["0"]},
                {"id":"step0","task":"builtin.echo","dependsOn":["end"],"forEach":[1],"forEachConcurrency":2}]}"#,
            &Catalog::with_builtins(),
        );
        assert_eq!(
            m,
            "graph TD\n  step0[builtin\\nbuiltin]\n  step1[builtin\\nbuiltin]\n  step0_[[builtin\\nbuiltin\\nforEach ×2]]\n  step0 --> step1\n  step1 --> step0_\n"
        );
    }

    #[test]
    fn other_mistakes_are_still_refused() {
        let spec =
            parse_spec(br#"{"type":"p","steps":[{"id":"a","task":"x.y","dependsOn":["zz"]}]}"#)
                .unwrap();
        let errors = sketch(spec, &Catalog::with_builtins(), &Limits::default()).unwrap_err();
        assert!(
            errors.iter().any(|e| e.message.contains("zz")),
            "{errors:?}"
        );
    }

    #[test]
    fn the_link_opens_the_diagram() {
        let m = "graph TD\n  a[task\\nx]\n";
        let url = live_url(m);
        let payload = url.strip_prefix("https://mermaid.live/edit#pako:").unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let mut text = String::new();
        ZlibDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["code"], m);
    }
}
