//! The manifest each plugin ships beside its `.wasm`: who it is, which world
//! (and version) it implements, what it provides, the permissions it asks
//! for and its limits.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The WIT package version this host implements.
pub const HOST_WIT_VERSION: (u64, u64, u64) = (0, 1, 0);
/// The worlds this host can run.
pub const KNOWN_WORLDS: [&str; 3] = ["effect-handler", "template-functions", "transform-task"];

/// A plugin's manifest (`<name>.json` beside `<name>.wasm`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Unique name: letters, digits, `-`, `_`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// `dwa:plugin/<world>@<version>`.
    pub world: String,
    /// The component file, relative to the manifest; default `<name>.wasm`.
    #[serde(default)]
    pub wasm: Option<String>,
    /// What it provides.
    #[serde(default)]
    pub provides: Provides,
    /// What it asks to be allowed.
    #[serde(default)]
    pub permissions: Permissions,
    /// Per-call limits.
    #[serde(default)]
    pub limits: Limits,
    /// Template functions whose answers depend on their arguments only: the
    /// host may call one instance again for the same task instead of a
    /// fresh one each time (docs/plugins.md, "Pure function plugins").
    #[serde(default)]
    pub pure: bool,
}

/// What a plugin provides.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provides {
    /// Effect names (`$event` values) it handles (effect-handler).
    #[serde(default)]
    pub effects: Vec<String>,
    /// Template functions it exports (template-functions).
    #[serde(default)]
    pub functions: Vec<FunctionDecl>,
    /// Tasks it runs (transform-task).
    #[serde(default)]
    pub tasks: Vec<TaskDecl>,
}

/// A template function a plugin exports, with the arguments it takes
/// besides the piped value (so that a wrong count fails at submission).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionDecl {
    /// The filter name used in templates.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Fewest arguments (default 0).
    #[serde(default)]
    pub min_args: usize,
    /// Most arguments (default: `minArgs`).
    #[serde(default)]
    pub max_args: Option<usize>,
}

impl FunctionDecl {
    /// (fewest, most) arguments.
    pub fn arity(&self) -> (usize, usize) {
        (self.min_args, self.max_args.unwrap_or(self.min_args))
    }
}

impl TaskDecl {
    /// The catalog's entry for it (backend `wasm`).
    pub fn task_info(&self) -> dwa_core::catalog::TaskInfo {
        dwa_core::catalog::TaskInfo {
            category: Some(self.category.clone().unwrap_or_else(|| "transform".into())),
            description: self.description.clone(),
            timeout: self.timeout,
            input_schema: self.input_schema.clone(),
            output_schema: self.output_schema.clone(),
            ..dwa_core::catalog::TaskInfo::bare(&self.name, "wasm")
        }
    }
}

/// The manifests (`*.json`) of a plugin folder, in name order.
pub fn manifest_paths(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// What the manifests of `dir` declare, read without compiling anything,
/// for validating a task offline (`dwa validate`); a manifest that cannot
/// be read or is invalid is reported, not fatal.
pub fn declared(dir: &std::path::Path) -> (dwa_core::catalog::PluginProvides, Vec<String>) {
    let mut provides = dwa_core::catalog::PluginProvides::default();
    let mut errors = Vec::new();
    let Ok(paths) = manifest_paths(dir) else {
        return (provides, errors);
    };
    for path in paths {
        let file = path.display().to_string();
        let manifest = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Manifest>(&t).map_err(|e| e.to_string()));
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                errors.push(format!("plugin manifest {file} skipped: {e}"));
                continue;
            }
        };
        if let Err(e) = manifest.validate(&file) {
            errors.push(format!("plugin manifest skipped: {e}"));
            continue;
        }
        let p = &manifest.provides;
        provides.effects.extend(p.effects.iter().cloned());
        provides
            .functions
            .extend(p.functions.iter().map(|f| (f.name.clone(), f.arity())));
        provides
            .tasks
            .extend(p.tasks.iter().map(TaskDecl::task_info));
    }
    (provides, errors)
}

/// A transform task a plugin runs, as the catalog shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDecl {
    /// The task's name, e.g. `image.resize`.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// Category (`transform` by default).
    #[serde(default)]
    pub category: Option<String>,
    /// Default timeout in seconds (the plugin's own per-call limit still applies).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// JSON Schema of its input; checked at submission like a backend's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<serde_json::Value>,
    /// JSON Schema of its output.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<serde_json::Value>,
}

/// What a plugin asks to be allowed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permissions {
    /// Host patterns it may call over HTTP: `api.example.com`, `*.slack.com`, `*`.
    #[serde(default)]
    pub http: Vec<String>,
    /// Whether a transform task wants its task's working folder (read-write).
    #[serde(default)]
    pub workdir: bool,
}

/// Per-call limits; the host applies defaults and caps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Linear memory per instance, MiB (default 32, at most 1024).
    #[serde(default)]
    pub memory_mb: Option<u32>,
    /// Wall-clock time per call, ms (default 10,000, at most 300,000).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Fuel (instructions, roughly) per call; unlimited when absent.
    #[serde(default)]
    pub fuel: Option<u64>,
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin manifest {file}: {message}")]
pub struct ManifestError {
    /// The manifest file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// A parsed `dwa:plugin/<world>@<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldRef {
    /// The world's name.
    pub world: String,
    /// Its package version.
    pub version: (u64, u64, u64),
}

/// Parses a world reference.
pub fn parse_world(s: &str) -> Result<WorldRef, String> {
    let rest = s.strip_prefix("dwa:plugin/").ok_or_else(|| {
        format!("world {s:?} is not in package dwa:plugin (expected dwa:plugin/<world>@<version>)")
    })?;
    let (world, version) = rest.split_once('@').ok_or_else(|| {
        format!("world {s:?} has no version (expected dwa:plugin/<world>@<version>)")
    })?;
    let parts: Vec<u64> = version
        .split('.')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("world {s:?} has a malformed version {version:?}"))?;
    let [major, minor, patch] = parts[..] else {
        return Err(format!("world {s:?} has a malformed version {version:?}"));
    };
    Ok(WorldRef {
        world: world.to_owned(),
        version: (major, minor, patch),
    })
}

/// Whether a plugin built against `v` runs on this host (same 0.minor, or same major ≥ 1).
pub fn compatible(v: (u64, u64, u64)) -> bool {
    let host = HOST_WIT_VERSION;
    if host.0 == 0 {
        v.0 == 0 && v.1 == host.1 && v.2 <= host.2
    } else {
        v.0 == host.0 && v.1 <= host.1
    }
}

impl Manifest {
    /// Checks the manifest; answers the world it implements.
    pub fn validate(&self, file: &str) -> Result<WorldRef, ManifestError> {
        let err = |message: String| ManifestError {
            file: file.to_owned(),
            message,
        };
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(err(format!(
                "name {:?} must be 1-64 letters, digits, '-' or '_'",
                self.name
            )));
        }
        let world = parse_world(&self.world).map_err(err)?;
        if !KNOWN_WORLDS.contains(&world.world.as_str()) {
            return Err(err(format!(
                "world {:?} is not one this host runs ({})",
                world.world,
                KNOWN_WORLDS.join(", ")
            )));
        }
        if !compatible(world.version) {
            let (a, b, c) = world.version;
            let (x, y, z) = HOST_WIT_VERSION;
            return Err(err(format!(
                "plugin {} targets dwa:plugin@{a}.{b}.{c}, but this host implements dwa:plugin@{x}.{y}.{z}; rebuild it against wit/ of this host",
                self.name
            )));
        }
        let p = &self.provides;
        let (what, count, others) = match world.world.as_str() {
            "effect-handler" => (
                "an effect-handler must provide at least one effect (provides.effects)",
                p.effects.len(),
                p.functions.len() + p.tasks.len(),
            ),
            "template-functions" => (
                "a template-functions plugin must provide at least one function (provides.functions)",
                p.functions.len(),
                p.effects.len() + p.tasks.len(),
            ),
            _ => (
                "a transform-task plugin must provide at least one task (provides.tasks)",
                p.tasks.len(),
                p.effects.len() + p.functions.len(),
            ),
        };
        if count == 0 {
            return Err(err(what.into()));
        }
        if others > 0 {
            return Err(err(format!(
                "a {} plugin provides only {}",
                world.world,
                match world.world.as_str() {
                    "effect-handler" => "effects",
                    "template-functions" => "functions",
                    _ => "tasks",
                }
            )));
        }
        if self.pure && world.world != "template-functions" {
            return Err(err("pure is for template-functions plugins only".into()));
        }
        if self.permissions.workdir && world.world != "transform-task" {
            return Err(err(
                "permissions.workdir is for transform-task plugins only".into(),
            ));
        }
        for f in &p.functions {
            let valid = !f.name.is_empty()
                && f.name.len() <= 64
                && f.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !f.name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(err(format!(
                    "function name {:?} must be 1-64 letters, digits or '_', not starting with a digit",
                    f.name
                )));
            }
            if dwa_core::template::BUILTIN_FILTERS
                .iter()
                .any(|(n, _, _)| *n == f.name)
            {
                return Err(err(format!(
                    "function {:?} would shadow the builtin filter of that name",
                    f.name
                )));
            }
            let (least, most) = f.arity();
            if most < least || most > 16 {
                return Err(err(format!(
                    "function {:?}: maxArgs must be between minArgs and 16",
                    f.name
                )));
            }
        }
        for t in &p.tasks {
            let valid = !t.name.is_empty()
                && t.name.len() <= 128
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return Err(err(format!(
                    "task name {:?} must be 1-128 letters, digits, '.', '_' or '-'",
                    t.name
                )));
            }
            if t.timeout.is_some_and(|s| !(s > 0.0 && s <= 86_400.0)) {
                return Err(err(format!(
                    "task {:?}: timeout must be between 0 and 86400 seconds",
                    t.name
                )));
            }
            for (field, schema) in [
                ("inputSchema", &t.input_schema),
                ("outputSchema", &t.output_schema),
            ] {
                if schema.as_ref().is_some_and(|s| !s.is_object()) {
                    return Err(err(format!(
                        "task {:?}: {field} must be a JSON object",
                        t.name
                    )));
                }
            }
        }
        for e in &self.provides.effects {
            if e.is_empty()
                || e.len() > 64
                || !e
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(err(format!(
                    "effect name {e:?} must be 1-64 letters, digits, '-', '_' or '.'"
                )));
            }
        }
        if let Some(m) = self.limits.memory_mb
            && !(1..=1024).contains(&m)
        {
            return Err(err(format!(
                "limits.memoryMb {m} must be between 1 and 1024"
            )));
        }
        if let Some(t) = self.limits.timeout_ms
            && !(1..=300_000).contains(&t)
        {
            return Err(err(format!(
                "limits.timeoutMs {t} must be between 1 and 300000"
            )));
        }
        for h in &self.permissions.http {
            if h.is_empty() || h.contains('/') || h.contains(' ') {
                return Err(err(format!(
                    "permissions.http entry {h:?} must be a host pattern such as api.example.com, *.example.com or *"
                )));
            }
        }
        Ok(world)
    }

    /// Memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.limits.memory_mb.unwrap_or(32) as usize) << 20
    }

    /// Time cap per call.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.limits.timeout_ms.unwrap_or(10_000)))
    }
}

/// Whether `host` matches a pattern (`*`, `*.example.com`, or exact), case-insensitively.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let h = host.to_ascii_lowercase();
    if p == "*" {
        return true;
    }
    if let Some(suffix) = p.strip_prefix("*.") {
        return h.len() > suffix.len() + 1 && h.ends_with(&format!(".{suffix}"));
    }
    p == h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(world: &str) -> Manifest {
        Manifest {
            name: "x".into(),
            version: "1.0.0".into(),
            description: None,
            world: world.into(),
            wasm: None,
            provides: Provides {
                effects: vec!["x".into()],
                ..Default::default()
            },
            permissions: Permissions::default(),
            limits: Limits::default(),
            pure: false,
        }
    }

    #[test]
    fn world_versions() {
        assert!(
            manifest("dwa:plugin/effect-handler@0.1.0")
                .validate("f")
                .is_ok()
        );
        let e = manifest("dwa:plugin/effect-handler@0.2.0")
            .validate("f")
            .unwrap_err();
        assert!(
            e.message
                .contains("targets dwa:plugin@0.2.0, but this host implements dwa:plugin@0.1.0"),
            "{e}"
        );
        assert!(
            manifest("dwa:plugin/effect-handler@1.0.0")
                .validate("f")
                .is_err()
        );
        assert!(manifest("dwa:plugin/effect-handler").validate("f").is_err());
        assert!(
            manifest("other:pkg/effect-handler@0.1.0")
                .validate("f")
                .is_err()
        );
        let e = manifest("dwa:plugin/teleporter@0.1.0")
            .validate("f")
            .unwrap_err();
        assert!(e.message.contains("not one this host runs"));
    }

    #[test]
    fn only_template_functions_may_be_pure() {
        let mut m = manifest("dwa:plugin/effect-handler@0.1.0");
        m.pure = true;
        let e = m.validate("x.json").unwrap_err();
        assert!(
            e.message
                .contains("pure is for template-functions plugins only"),
            "{e}"
        );
        let mut f = manifest("dwa:plugin/template-functions@0.1.0");
        f.provides = Provides {
            functions: serde_json::from_value(serde_json::json!([{"name": "f"}])).unwrap(),
            ..Default::default()
        };
        f.pure = true;
        assert!(f.validate("x.json").is_ok());
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("*", "a.b"));
        assert!(host_matches("*.slack.com", "hooks.slack.com"));
        assert!(!host_matches("*.slack.com", "slack.com"));
        assert!(!host_matches("*.slack.com", "evilslack.com"));
        assert!(host_matches("API.example.com", "api.EXAMPLE.com"));
        assert!(!host_matches("api.example.com", "api.example.com.evil"));
    }

    #[test]
    fn provides_must_match_the_world() {
        let mut m = manifest("dwa:plugin/template-functions@0.1.0");
        let e = m.validate("f").unwrap_err();
        assert!(e.message.contains("at least one function"), "{e}");
        m.provides.effects.clear();
        m.provides.functions.push(FunctionDecl {
            name: "slugify".into(),
            description: None,
            min_args: 0,
            max_args: None,
        });
        assert!(m.validate("f").is_ok());
        m.provides.functions[0].name = "upper".into();
        assert!(
            m.validate("f")
                .unwrap_err()
                .message
                .contains("shadow the builtin")
        );
        m.provides.functions[0].name = "a.b".into();
        assert!(
            m.validate("f")
                .unwrap_err()
                .message
                .contains("function name")
        );
        m.provides.functions[0] = FunctionDecl {
            name: "f".into(),
            description: None,
            min_args: 2,
            max_args: Some(1),
        };
        assert!(m.validate("f").unwrap_err().message.contains("maxArgs"));

        let mut t = manifest("dwa:plugin/transform-task@0.1.0");
        t.provides.effects.clear();
        assert!(
            t.validate("f")
                .unwrap_err()
                .message
                .contains("at least one task")
        );
        t.provides.tasks.push(TaskDecl {
            name: "image.resize".into(),
            description: None,
            category: None,
            timeout: Some(30.0),
            input_schema: Some(serde_json::json!({"type": "object"})),
            output_schema: None,
        });
        t.permissions.workdir = true;
        assert!(t.validate("f").is_ok());
        t.provides.tasks[0].input_schema = Some(serde_json::json!(3));
        assert!(
            t.validate("f")
                .unwrap_err()
                .message
                .contains("inputSchema must be a JSON object")
        );

        let mut e = manifest("dwa:plugin/effect-handler@0.1.0");
        e.permissions.workdir = true;
        assert!(
            e.validate("f")
                .unwrap_err()
                .message
                .contains("transform-task plugins only")
        );
    }
}
