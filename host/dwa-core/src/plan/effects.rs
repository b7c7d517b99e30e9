//! Planning the lifecycle effects: each `$event` must be a loaded effect,
//! and each template may use only what its list will have (`progress` in
//! onProgress, `result` in onSuccess, `error` in onError, the payload and
//! the steps' results everywhere).

use serde_json::Value;

use crate::model::{Effect, TaskSpec};
use crate::template::{Root, Template};

use super::checks::Checker;
use super::graph::StepIds;
use super::{Effects, PlannedEffect};

/// Plans the four lifecycle lists of `spec`.
/// Effects one lifecycle list may hold: the outbox records which of them
/// were delivered in one 64-bit set.
pub(super) const MAX_EFFECTS_PER_LIST: usize = 64;

pub(super) fn plan_effects(c: &mut Checker<'_>, spec: &TaskSpec, ids: &StepIds) -> Effects {
    let mut list = |name: &str, effects: &[Effect], allowed: &[Root]| {
        plan_list(c, name, effects, ids, allowed)
    };
    Effects {
        on_pending: list("onPending", &spec.on_pending, &[Root::Payload]),
        on_progress: list(
            "onProgress",
            &spec.on_progress,
            &[Root::Payload, Root::Progress],
        ),
        on_success: list(
            "onSuccess",
            &spec.on_success,
            &[Root::Payload, Root::Result],
        ),
        on_error: list("onError", &spec.on_error, &[Root::Payload, Root::Error]),
    }
}

fn plan_list(
    c: &mut Checker<'_>,
    list: &str,
    effects: &[Effect],
    ids: &StepIds,
    allowed: &[Root],
) -> Vec<PlannedEffect> {
    let mut out = Vec::new();
    if effects.len() > MAX_EFFECTS_PER_LIST {
        c.err(
            None,
            list.to_owned(),
            format!(
                "holds {} effects; a lifecycle list holds at most {MAX_EFFECTS_PER_LIST}",
                effects.len()
            ),
        );
        return out;
    }
    for (i, e) in effects.iter().enumerate() {
        let field = format!("{list}[{i}]");
        if !c.catalog.has_effect(&e.event) {
            let loaded = c.catalog.effects();
            let known = if loaded.is_empty() {
                "no effect plugins are loaded (run `just build-plugins`, or set DWA_PLUGIN_DIR)"
                    .to_owned()
            } else {
                format!("loaded effects: {}", loaded.join(", "))
            };
            c.err(
                None,
                format!("{field}.$event"),
                format!("unknown effect {:?}; {known}", e.event),
            );
            continue;
        }
        match Template::parse_with(&Value::Object(e.config.clone()), c.catalog.filters()) {
            Ok(mut t) => {
                let mut problems = Vec::new();
                t.exprs_mut(&mut |x| match &mut x.root {
                    Root::Step { key, idx } => match ids.lookup(key) {
                        Some(s) => *idx = Some(s),
                        None => problems.push(format!(
                            "{{{{{}}}}} can never resolve: unknown step {key:?}",
                            x.source
                        )),
                    },
                    r => {
                        let ok = allowed
                            .iter()
                            .any(|a| std::mem::discriminant(a) == std::mem::discriminant(r));
                        if !ok {
                            problems
                                .push(format!("{{{{{}}}}} can never resolve in {list}", x.source));
                        }
                    }
                });
                for p in problems {
                    c.err(None, field.clone(), p);
                }
                out.push(PlannedEffect {
                    event: e.event.clone(),
                    config: t,
                });
            }
            Err(err) => c.err(None, format!("{field}{}", err.at), err.to_string()),
        }
    }
    out
}
