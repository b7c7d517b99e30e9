//! The host's validation without a host (`dwa validate`, docs/cli.md): the
//! same parsing and planning a `POST /api/tasks` runs, against a catalog
//! built from what is on disk instead of what backends announce.

use std::sync::Arc;

use dwa_core::catalog::{Catalog, GeneratedCatalogError};
use dwa_core::limits::Limits;
use dwa_core::plan::FieldError;

use crate::config::Config;

/// The Python backends a generated task may be sent to: offline, which of
/// them a host will have is unknown, so each is taken to serve every task.
const PYTHON_BACKENDS: [&str; 3] = ["local", "ray", "modal"];

/// The catalog a host started with `config` would have if every Python
/// backend served every task of the generated catalog: the builtins, what
/// the plugin manifests declare (nothing is compiled) and
/// `DWA_TASK_CATALOG`. Returns what it could not read: plugin manifests,
/// and the default catalog path when it is absent (as a host does, the
/// Python tasks are then unknown); an explicit `DWA_TASK_CATALOG` must load.
pub fn offline_catalog(config: &Config) -> Result<(Catalog, Vec<String>), GeneratedCatalogError> {
    let mut catalog = Catalog::with_builtins();
    let (provides, mut errors) = dwa_plugins::manifest::declared(&config.plugin_dir);
    catalog.set_plugins(provides);
    let generated = match Catalog::load_generated(&config.task_catalog) {
        Ok(g) => g,
        Err(e) if std::env::var_os("DWA_TASK_CATALOG").is_none() => {
            errors.push(format!(
                "{e}: only builtin and plugin tasks are known (set DWA_TASK_CATALOG)"
            ));
            Default::default()
        }
        Err(e) => return Err(e),
    };
    let tasks: Vec<_> = generated.values().cloned().collect();
    catalog.set_generated(Arc::new(generated));
    for info in tasks {
        // Builtin and transform entries are known already (or their plugin
        // is missing, which a host would refuse too).
        if !info.backend.is_empty() {
            continue;
        }
        for backend in PYTHON_BACKENDS {
            catalog.insert(dwa_core::catalog::TaskInfo {
                backend: backend.into(),
                ..info.clone()
            });
        }
    }
    Ok((catalog, errors))
}

/// Checks a task as `POST /api/tasks` would; on success, its number of
/// planned steps (chunked steps expanded).
pub fn check(
    task: &serde_json::Value,
    catalog: &Catalog,
    limits: &Limits,
    max_body_bytes: usize,
) -> Result<usize, Vec<FieldError>> {
    let body = serde_json::to_vec(task).map_err(|e| {
        vec![FieldError {
            step: None,
            field: "(body)".into(),
            message: e.to_string(),
        }]
    })?;
    if body.len() > max_body_bytes {
        return Err(vec![FieldError {
            step: None,
            field: "(body)".into(),
            message: format!(
                "the task is {} bytes, more than the host's limit of {} (DWA_MAX_BODY_BYTES)",
                body.len(),
                max_body_bytes
            ),
        }]);
    }
    let spec = dwa_core::plan::parse_spec(&body).map_err(|e| vec![e])?;
    dwa_core::plan::plan(spec, catalog, limits).map(|plan| plan.steps.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        let mut config = Config::from_env().unwrap();
        config.task_catalog =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/catalog.json").into();
        // Without plugins: their manifests are read by `declared`, tested there.
        config.plugin_dir = "/nonexistent".into();
        offline_catalog(&config).unwrap().0
    }

    #[test]
    fn the_seeds_tasks_are_known_offline_and_typos_are_named() {
        let c = catalog();
        let limits = Limits::default();
        let ok = json!({"type": "podcast", "steps": [
            {"id": "dl", "task": "download.file", "input": {"url": "https://x/a.mp3"}},
            {"task": "whisper.transcribe", "input": {"audio_path": "{{steps.dl.path}}"}}]});
        assert_eq!(check(&ok, &c, &limits, 1 << 20), Ok(2));
        let bad = json!({"type": "p", "steps": [{"task": "whisper.transcrib"}]});
        let errors = check(&bad, &c, &limits, 1 << 20).unwrap_err();
        assert_eq!(errors[0].field, "steps[0].task", "{errors:?}");
        let typed = json!({"type": "p", "steps": [{"task": "download.file", "timeout": "x"}]});
        let errors = check(&typed, &c, &limits, 1 << 20).unwrap_err();
        assert!(errors[0].field.starts_with("steps[0]"), "{errors:?}");
    }

    #[test]
    fn a_task_over_the_body_limit_is_refused_by_name() {
        let big = json!({"type": "p", "payload": {"x": "y".repeat(100)}, "steps": [{"task": "builtin.echo"}]});
        let errors = check(&big, &catalog(), &Limits::default(), 64).unwrap_err();
        assert!(
            errors[0].message.contains("DWA_MAX_BODY_BYTES"),
            "{errors:?}"
        );
    }
}
