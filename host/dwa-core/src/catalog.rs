//! The merged catalog of tasks the host can run: its builtin tasks plus what
//! each configured backend announces at `GET {base}/tasks`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// What the host knows of one task on one backend.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    /// The task's name, e.g. `yolo.detect`.
    pub name: String,
    /// The backend that serves it (`builtin`, `modal`, `ray`, `local`, `wasm`).
    #[serde(default)]
    pub backend: String,
    /// Its category (`see`, `hear`, ...).
    #[serde(default)]
    pub category: Option<String>,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// GPU kind it needs, if any; sends it to the `gpu` queue.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Default timeout in seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Whether it answers with a stream of chunks.
    #[serde(default)]
    pub streaming: bool,
    /// How the host may split one call into chunk jobs (None: it cannot).
    #[serde(default)]
    pub chunk: Option<ChunkSpec>,
    /// JSON Schema of its input.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    /// JSON Schema of its output.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    /// For a step written without `input` after one dependency: which fields
    /// of that dependency's result become which of this task's parameters
    /// (docs/tasks.md, "Piping"); None passes the result whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipe: Option<BTreeMap<String, String>>,
    /// Set on a former name kept for one release: the task's current name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

impl TaskInfo {
    /// A task known only by name and backend (no schema, no hints).
    pub fn bare(name: &str, backend: &str) -> TaskInfo {
        TaskInfo {
            name: name.into(),
            backend: backend.into(),
            category: None,
            description: None,
            gpu: None,
            timeout: None,
            streaming: false,
            chunk: None,
            input_schema: None,
            output_schema: None,
            pipe: None,
            replaced_by: None,
        }
    }

    /// The input a step without `input` receives from its one dependency:
    /// the result's fields this task's `pipe` names, under its parameter
    /// names, or the result whole when the task has no pipe, the result is
    /// not an object, or it has none of those fields.
    pub fn piped(&self, result: Value) -> Value {
        let (Some(pipe), Value::Object(fields)) = (&self.pipe, &result) else {
            return result;
        };
        let taken: serde_json::Map<String, Value> = pipe
            .iter()
            .filter_map(|(field, param)| fields.get(field).map(|v| (param.clone(), v.clone())))
            .collect();
        if taken.is_empty() {
            result
        } else {
            Value::Object(taken)
        }
    }
}

/// A task's chunking, as its backend announces it (the `@task` decorator's `chunk`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChunkSpec {
    /// The input field holding what is split (a file name, or text).
    pub input: String,
    /// `audio`, `video` or `text`: split by chunk.audio, chunk.video or chunk.text.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// A chunk's length: seconds, or characters for text.
    pub default_size: f64,
    /// How much consecutive chunks share.
    #[serde(default)]
    pub overlap: f64,
    /// How the parts' results are joined (see `builtin.merge`).
    pub merge: String,
}

fn default_kind() -> String {
    "audio".into()
}

/// What the loaded plugins provide, handed to the catalog as a plain value
/// (the plugin host depends on the catalog's types, never the reverse).
#[derive(Debug, Clone, Default)]
pub struct PluginProvides {
    /// Effect names (`$event`).
    pub effects: Vec<String>,
    /// Template functions by name, with their (fewest, most) arguments.
    pub functions: BTreeMap<String, (usize, usize)>,
    /// Transform tasks, served by backend `wasm`.
    pub tasks: Vec<TaskInfo>,
}

/// Backends in the order a task served by several of them is sent to.
pub const BACKEND_PRECEDENCE: [&str; 5] = ["builtin", "wasm", "modal", "ray", "local"];

/// All tasks by name, each with the backends that serve it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_name: BTreeMap<String, Vec<TaskInfo>>,
    configured: Vec<String>,
    effects: BTreeSet<String>,
    functions: BTreeMap<String, (usize, usize)>,
    any_function: bool,
    generated: std::sync::Arc<BTreeMap<String, TaskInfo>>,
}

/// Why a step's task could not be placed on a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No backend serves the task.
    #[error("unknown task {0:?}: no configured backend serves it")]
    UnknownTask(String),
    /// The named backend is not one of ours.
    #[error("unknown backend {0:?}; expected one of builtin, wasm, modal, ray, local")]
    UnknownBackend(String),
    /// The named backend has no URL configured.
    #[error(
        "backend {0:?} is not configured (set its URL, e.g. MODAL_URL, RAY_URL or LOCAL_BACKEND_URL)"
    )]
    NotConfigured(String),
    /// The named backend does not serve the task.
    #[error("backend {backend:?} does not serve task {task:?}")]
    NotServed {
        /// The backend named.
        backend: String,
        /// The task asked for.
        task: String,
    },
}

/// Why the generated catalog (`DWA_TASK_CATALOG`) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedCatalogError {
    /// The file cannot be read.
    #[error("cannot read the task catalog {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a catalog.
    #[error("the task catalog {} is invalid: {source}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

impl Catalog {
    /// A catalog with the builtin tasks only.
    pub fn with_builtins() -> Self {
        let mut c = Catalog::default();
        c.configured.push("builtin".into());
        for info in builtin_tasks() {
            c.insert(info);
        }
        c
    }

    /// Marks a backend as configured even when its catalog could not be read.
    pub fn add_backend(&mut self, name: &str) {
        if !self.configured.iter().any(|b| b == name) {
            self.configured.push(name.to_owned());
        }
    }

    /// Reads the catalog `just gen-types` generates from the Python
    /// decorators (`shared/catalog.json`): its schemas complete what a
    /// backend announces without them.
    pub fn load_generated(
        path: &std::path::Path,
    ) -> Result<BTreeMap<String, TaskInfo>, GeneratedCatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| GeneratedCatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        #[derive(Deserialize)]
        struct File {
            tasks: Vec<TaskInfo>,
        }
        let file: File =
            serde_json::from_str(&text).map_err(|source| GeneratedCatalogError::Invalid {
                path: path.to_owned(),
                source,
            })?;
        Ok(file
            .tasks
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect())
    }

    /// Uses `generated` (see [`Catalog::load_generated`]) from now on.
    pub fn set_generated(&mut self, generated: std::sync::Arc<BTreeMap<String, TaskInfo>>) {
        self.generated = generated;
    }

    /// The generated catalog in use.
    pub fn generated(&self) -> std::sync::Arc<BTreeMap<String, TaskInfo>> {
        self.generated.clone()
    }

    /// Adds (or replaces) what one backend serves.
    pub fn insert(&mut self, mut info: TaskInfo) {
        if let Some(g) = self.generated.get(&info.name) {
            // A backend that announces no schema gets the generated one,
            // and the pipe that goes with its parameters.
            if info.input_schema.is_none() {
                info.input_schema = g.input_schema.clone();
                if info.pipe.is_none() {
                    info.pipe = g.pipe.clone();
                }
            }
            if info.output_schema.is_none() {
                info.output_schema = g.output_schema.clone();
            }
        }
        self.add_backend(&info.backend.clone());
        let list = self.by_name.entry(info.name.clone()).or_default();
        list.retain(|i| i.backend != info.backend);
        list.push(info);
        list.sort_by_key(|i| precedence(&i.backend));
    }

    /// Forgets every task's input schema: a drawing checks a task's shape,
    /// not the inputs it would be given when run.
    pub fn drop_input_schemas(&mut self) {
        for info in self.by_name.values_mut().flatten() {
            info.input_schema = None;
        }
    }

    /// Drops every task of one backend, before a refresh re-adds them.
    pub fn clear_backend(&mut self, backend: &str) {
        for list in self.by_name.values_mut() {
            list.retain(|i| i.backend != backend);
        }
        self.by_name.retain(|_, l| !l.is_empty());
    }

    /// Finds where `task` runs, honouring an explicit `backend`.
    pub fn lookup(&self, task: &str, backend: Option<&str>) -> Result<&TaskInfo, LookupError> {
        match backend {
            Some(b) => {
                if !BACKEND_PRECEDENCE.contains(&b) {
                    return Err(LookupError::UnknownBackend(b.into()));
                }
                if !self.configured.iter().any(|c| c == b) {
                    return Err(LookupError::NotConfigured(b.into()));
                }
                self.by_name
                    .get(task)
                    .and_then(|l| l.iter().find(|i| i.backend == b))
                    .ok_or_else(|| LookupError::NotServed {
                        backend: b.into(),
                        task: task.into(),
                    })
            }
            None => self
                .by_name
                .get(task)
                .and_then(|l| l.first())
                .ok_or_else(|| LookupError::UnknownTask(task.into())),
        }
    }

    /// Declares the effects that loaded plugins provide.
    pub fn set_effects(&mut self, effects: impl IntoIterator<Item = String>) {
        self.effects = effects.into_iter().collect();
    }

    /// Takes in what the loaded plugins provide: effects, template functions
    /// and transform tasks (backend `wasm`), replacing what they provided before.
    pub fn set_plugins(&mut self, provided: PluginProvides) {
        self.set_effects(provided.effects);
        self.functions = provided.functions;
        self.clear_backend("wasm");
        self.add_backend("wasm");
        for t in provided.tasks {
            self.insert(t);
        }
    }

    /// Declares template functions by name with their (fewest, most) arguments.
    pub fn set_functions(&mut self, functions: BTreeMap<String, (usize, usize)>) {
        self.functions = functions;
    }

    /// Accepts any function name (a stored task read back after a plugin went away).
    pub fn allow_any_function(&mut self) {
        self.any_function = true;
    }

    /// The template filters templates may use: builtins and plugin functions.
    pub fn filters(&self) -> crate::template::Filters<'_> {
        if self.any_function {
            crate::template::Filters::Any
        } else {
            crate::template::Filters::With(&self.functions)
        }
    }

    /// Whether an effect (`$event`) is provided by a loaded plugin.
    pub fn has_effect(&self, name: &str) -> bool {
        self.effects.contains(name)
    }

    /// The effects provided, sorted.
    pub fn effects(&self) -> Vec<String> {
        self.effects.iter().cloned().collect()
    }

    /// Every task, for `GET /api/catalog`.
    pub fn all(&self) -> Vec<TaskInfo> {
        self.by_name.values().flatten().cloned().collect()
    }

    /// Number of tasks one backend serves.
    pub fn count_for(&self, backend: &str) -> usize {
        self.by_name
            .values()
            .flatten()
            .filter(|i| i.backend == backend)
            .count()
    }
}

/// The catalog entries of the builtin tasks (`builtin.*`), which the
/// engine runs in-process: diagnostics, tests, benchmarks, and the merge
/// of chunked steps. Written once in `builtins.json`, which `just
/// gen-types` also reads for the clients' types.
pub fn builtin_tasks() -> Vec<TaskInfo> {
    #[derive(Deserialize)]
    struct File {
        tasks: Vec<TaskInfo>,
    }
    // Compiled in and checked by a test: it cannot fail at run time.
    serde_json::from_str::<File>(include_str!("builtins.json"))
        .map_or_else(|_| Vec::new(), |f| f.tasks)
}

fn precedence(backend: &str) -> usize {
    BACKEND_PRECEDENCE
        .iter()
        .position(|b| *b == backend)
        .unwrap_or(BACKEND_PRECEDENCE.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, backend: &str) -> TaskInfo {
        TaskInfo::bare(name, backend)
    }

    #[test]
    fn the_builtins_file_parses_and_names_builtin_tasks() {
        let names: Vec<String> = builtin_tasks()
            .into_iter()
            .map(|t| {
                assert_eq!(
                    (t.backend.as_str(), t.category.as_deref()),
                    ("builtin", Some("builtin"))
                );
                t.name
            })
            .collect();
        assert_eq!(
            names,
            [
                "builtin.echo",
                "builtin.sleep",
                "builtin.fail",
                "builtin.merge",
                "builtin.wait",
                "builtin.subtask",
                "builtin.range"
            ]
        );
    }

    #[test]
    fn a_pipe_takes_the_named_fields_under_their_parameter_names() {
        let scenes = TaskInfo {
            pipe: Some(BTreeMap::from([
                ("path".to_owned(), "video_path".to_owned()),
                ("scenes".to_owned(), "scenes".to_owned()),
            ])),
            ..info("scenes.detect", "local")
        };
        let downloaded = serde_json::json!({"path": "a.mp4", "bytes": 3, "sha256": "x"});
        assert_eq!(
            scenes.piped(downloaded),
            serde_json::json!({"video_path": "a.mp4"})
        );
        // Nothing to take, or no pipe: the result goes whole (and the
        // schema check names what is wrong with it).
        let other = serde_json::json!({"url": "x"});
        assert_eq!(scenes.piped(other.clone()), other);
        assert_eq!(
            info("t.x", "local").piped(serde_json::json!({"path": "a"})),
            serde_json::json!({"path": "a"})
        );
        assert_eq!(scenes.piped(serde_json::json!([1])), serde_json::json!([1]));
    }

    #[test]
    fn precedence_and_explicit_backend() {
        let mut c = Catalog::with_builtins();
        c.insert(info("x.y", "local"));
        c.insert(info("x.y", "modal"));
        assert_eq!(c.lookup("x.y", None).unwrap().backend, "modal");
        assert_eq!(c.lookup("x.y", Some("local")).unwrap().backend, "local");
        assert_eq!(
            c.lookup("x.y", Some("ray")),
            Err(LookupError::NotConfigured("ray".into()))
        );
        assert_eq!(
            c.lookup("x.y", Some("gcp")),
            Err(LookupError::UnknownBackend("gcp".into()))
        );
        assert_eq!(
            c.lookup("nope", None),
            Err(LookupError::UnknownTask("nope".into()))
        );
        c.clear_backend("modal");
        assert_eq!(c.lookup("x.y", None).unwrap().backend, "local");
        assert!(c.lookup("builtin.echo", None).is_ok());
    }

    #[test]
    fn generated_schemas_fill_gaps_but_never_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::write(
            &path,
            r#"{"tasks": [{"name": "a.b", "category": "get", "inputSchema": {"type": "object", "required": ["url"]}}]}"#,
        )
        .unwrap();
        let generated = Catalog::load_generated(&path).unwrap();
        let mut c = Catalog::with_builtins();
        c.set_generated(std::sync::Arc::new(generated));
        c.insert(info("a.b", "local"));
        let got = c.lookup("a.b", None).unwrap();
        assert_eq!(got.input_schema.as_ref().unwrap()["required"][0], "url");
        let mut own = info("a.b", "ray");
        own.input_schema = Some(serde_json::json!({"type": "object"}));
        c.insert(own);
        let got = c.lookup("a.b", Some("ray")).unwrap();
        assert!(got.input_schema.as_ref().unwrap().get("required").is_none());
        std::fs::write(&path, "{").unwrap();
        let e = Catalog::load_generated(&path).unwrap_err();
        assert!(matches!(e, GeneratedCatalogError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("is invalid"));
        let e = Catalog::load_generated(&dir.path().join("none.json")).unwrap_err();
        assert!(matches!(e, GeneratedCatalogError::Read { .. }), "{e}");
        assert!(e.to_string().contains("cannot read"));
    }
}
