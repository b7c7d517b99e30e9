//! Everything a Rust transform-task plugin for dwa needs: the bindings of
//! the `dwa:plugin@0.1.0` `transform-task` world, the `export_transform!`
//! macro, and helpers to read input fields and name files inside the task's
//! working folder (preopened as `.` when the manifest asks for `workdir`).
//!
//! ```ignore
//! use dwa_transform_sdk::{Transform, PluginError, input, json, fail};
//! struct Mine;
//! impl Transform for Mine {
//!     fn run(task: String, json: String) -> Result<String, PluginError> {
//!         let input = input(&json)?;
//!         Ok(json!({"task": task, "keys": input.len()}).to_string())
//!     }
//! }
//! dwa_transform_sdk::export_transform!(Mine);
//! ```

use std::path::{Component, Path, PathBuf};

wit_bindgen::generate!({
    path: "../../wit",
    world: "transform-task",
    default_bindings_module: "dwa_transform_sdk",
    pub_export_macro: true,
    export_macro_name: "export_transform",
});

pub use dwa::plugin::logging;
pub use dwa::plugin::types::PluginError;
pub use exports::dwa::plugin::transform::Guest as Transform;
pub use serde_json::{self, Map, Value, json};

/// The task's input as a JSON object.
pub fn input(json: &str) -> Result<Map<String, Value>, PluginError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(fail(format!(
            "input must be a JSON object, got {}",
            type_name(&other)
        ))),
        Err(e) => Err(fail(format!("input is not JSON: {e}"))),
    }
}

/// A required string field.
pub fn required_str<'a>(
    input: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, PluginError> {
    match input.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(fail(format!(
            "`{field}` must be a string, got {}",
            type_name(other)
        ))),
        None => Err(fail(format!("`{field}` is required"))),
    }
}

/// An optional whole number field within `range`, with a default.
pub fn optional_u64(
    input: &Map<String, Value>,
    field: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, PluginError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(n),
            _ => Err(fail(format!(
                "`{field}` must be a whole number from {} to {}, got {v}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// A file name from the input, checked to stay inside the working folder:
/// relative, no `..`, not empty. (Symbolic links that point outside are
/// refused by the sandbox itself when the file is opened.)
pub fn workdir_path(field: &str, p: &str) -> Result<PathBuf, PluginError> {
    let path = Path::new(p);
    if p.is_empty() {
        return Err(fail(format!("`{field}` must not be empty")));
    }
    if path.is_absolute() || p.starts_with('/') || p.starts_with('\\') {
        return Err(fail(format!(
            "`{field}` {p:?} is an absolute path; files are named relative to the task's working folder"
        )));
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(fail(format!(
                    "`{field}` {p:?} leaves the task's working folder; `..` is not allowed"
                )));
            }
        }
    }
    Ok(path.to_path_buf())
}

/// Reads a file of the working folder, naming it in the error.
pub fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "`{field}` {}: no such file in the task's working folder",
                path.display()
            ),
            _ => format!(
                "`{field}` {}: cannot read it: {e} (files must stay inside the task's working folder)",
                path.display()
            ),
        })
    })
}

/// Writes a file of the working folder whole: to a temporary name, then renamed,
/// so a reader never sees half a file.
pub fn write_file(field: &str, path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let tmp = path.with_extension("dwa-partial");
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(format!(
            "`{field}` {}: cannot write it: {e} (files must stay inside the task's working folder)",
            path.display()
        ))
    })
}

/// A permanent error.
pub fn fail(message: impl Into<String>) -> PluginError {
    PluginError {
        message: message.into(),
        retryable: false,
    }
}

/// The JSON type of a value, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
