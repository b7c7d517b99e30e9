//! Task files for the CLI (`dwa submit`, `dwa viz`): JSON or YAML, from a
//! file or standard input, read into the JSON the API takes (docs/cli.md).

use std::io::Read;
use std::path::Path;

use serde_json::Value;

mod locate;
pub use locate::line_of;

/// The largest task file read: the host's default body limit
/// (`DWA_MAX_BODY_BYTES`), so that nothing bigger is read into memory only
/// to be refused.
pub const MAX_TASK_FILE_BYTES: u64 = 64 << 20;

/// Why a task file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    /// The file (or standard input) could not be read.
    #[error("cannot read {name}: {source}")]
    Read {
        /// The file's name (`-` for standard input).
        name: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Past [`MAX_TASK_FILE_BYTES`].
    #[error("{name} is larger than {MAX_TASK_FILE_BYTES} bytes")]
    TooLarge {
        /// The file's name.
        name: String,
    },
    /// Not JSON (the message names the line and column).
    #[error("{name} is not valid JSON: {message}")]
    Json {
        /// The file's name.
        name: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// Not YAML (the message names the line and column).
    #[error("{name} is not valid YAML: {message}")]
    Yaml {
        /// The file's name.
        name: String,
        /// The parser's message, with the line.
        message: String,
    },
}

/// Reads a task file: `-` is standard input (named so in errors).
pub fn read(name: &str) -> Result<Value, TaskFileError> {
    parse(shown_name(name), &read_text(name)?)
}

/// How a task file is named in messages.
pub fn shown_name(name: &str) -> &str {
    if name == "-" { "standard input" } else { name }
}

/// A task file's text, up to [`MAX_TASK_FILE_BYTES`].
pub fn read_text(name: &str) -> Result<String, TaskFileError> {
    let io = |source| TaskFileError::Read {
        name: name.to_owned(),
        source,
    };
    let mut text = String::new();
    let limit = MAX_TASK_FILE_BYTES + 1;
    if name == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_string(&mut text)
            .map_err(io)?;
    } else {
        std::fs::File::open(name)
            .map_err(io)?
            .take(limit)
            .read_to_string(&mut text)
            .map_err(io)?;
    }
    if text.len() as u64 > MAX_TASK_FILE_BYTES {
        return Err(TaskFileError::TooLarge {
            name: shown_name(name).to_owned(),
        });
    }
    Ok(text)
}

/// Parses a task file's text: JSON for a `.json` name or text that starts
/// with `{`, YAML otherwise (YAML's flow style is close to JSON, so a JSON
/// error is reported as such).
pub fn parse(name: &str, text: &str) -> Result<Value, TaskFileError> {
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json = match ext.as_deref() {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        serde_json::from_str(text).map_err(|e| TaskFileError::Json {
            name: name.to_owned(),
            message: e.to_string(),
        })
    } else {
        serde_saphyr::from_str(text).map_err(|e| TaskFileError::Yaml {
            name: name.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_read_to_the_same_task() {
        let yaml = "type: podcast\nsteps:\n  - id: dl\n    task: download.file\n    input: {url: 'https://x/a.mp3'}\n  - task: whisper.transcribe\n    input:\n      audio_path: '{{steps.dl.path}}'\n";
        let json = r#"{"type": "podcast", "steps": [
            {"id": "dl", "task": "download.file", "input": {"url": "https://x/a.mp3"}},
            {"task": "whisper.transcribe", "input": {"audio_path": "{{steps.dl.path}}"}}]}"#;
        let a = parse("t.yaml", yaml).unwrap();
        assert_eq!(a, parse("t.json", json).unwrap());
        assert_eq!(
            a,
            parse("-", json).unwrap(),
            "JSON recognised without a name"
        );
        assert_eq!(
            a["steps"][1]["input"]["audio_path"],
            json!("{{steps.dl.path}}")
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = parse("t.yaml", "type: x\nsteps:\n  - task: a\n   bad: [\n").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("t.yaml is not valid YAML"), "{m}");
        assert!(m.contains("line 4") || m.contains(":4:"), "{m}");
        let e = parse("t.json", "{\n\"type\": \"x\",\n}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.json is not valid JSON") && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        // Ten levels of ten aliases each: 10^10 strings if expanded.
        let mut y = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = format!("*l{}", i - 1);
            let row = [p.as_str(); 10].join(", ");
            y.push_str(&format!("l{i}: &l{i} [{row}]\n"));
        }
        let e = parse("bomb.yaml", &y).unwrap_err().to_string();
        assert!(e.starts_with("bomb.yaml is not valid YAML"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = read("/nonexistent/task.yaml").unwrap_err().to_string();
        assert!(e.starts_with("cannot read /nonexistent/task.yaml"), "{e}");
    }
}
