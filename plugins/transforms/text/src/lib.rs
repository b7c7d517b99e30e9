//! `chunk.text`: splits a text (given inline, or a file of the task's working
//! folder) into chunks of `size` characters or tokens, each overlapping the
//! previous one by `overlap`.

use dwa_transform_sdk::{
    PluginError, Transform, Value, fail, input, json, optional_u64, read_file, workdir_path,
};

mod chunk;

struct Text;

impl Transform for Text {
    fn run(task: String, json: String) -> Result<String, PluginError> {
        if task != "chunk.text" {
            return Err(fail(format!("this plugin runs chunk.text, not {task}")));
        }
        let input = input(&json)?;
        let text = match (input.get("text"), input.get("path")) {
            (Some(Value::String(t)), None) => t.clone(),
            (None, Some(Value::String(p))) => {
                let path = workdir_path("path", p)?;
                let bytes = read_file("path", &path)?;
                String::from_utf8(bytes)
                    .map_err(|e| fail(format!("`path` {p}: not UTF-8 text: {e}")))?
            }
            (Some(_), Some(_)) => return Err(fail("give `text` or `path`, not both")),
            (Some(_), None) => return Err(fail("`text` must be a string")),
            (None, Some(_)) => return Err(fail("`path` must be a string")),
            (None, None) => {
                return Err(fail(
                    "`text` (or `path`, a file of the working folder) is required",
                ));
            }
        };
        let by = match input.get("by") {
            None | Some(Value::Null) => "chars",
            Some(Value::String(s)) if s == "chars" || s == "tokens" => s.as_str(),
            Some(other) => {
                return Err(fail(format!(
                    "`by` must be \"chars\" or \"tokens\", got {other}"
                )));
            }
        };
        let size = optional_u64(&input, "size", 1000, 1..=10_000_000)? as usize;
        let overlap = optional_u64(&input, "overlap", 0, 0..=10_000_000)? as usize;
        if overlap >= size {
            return Err(fail(format!(
                "`overlap` ({overlap}) must be smaller than `size` ({size})"
            )));
        }
        let chunks = match by {
            "chars" => chunk::by_chars(&text, size, overlap),
            _ => {
                let encoding = match input.get("encoding") {
                    None | Some(Value::Null) => "cl100k_base",
                    Some(Value::String(s)) => s.as_str(),
                    Some(other) => {
                        return Err(fail(format!("`encoding` must be a string, got {other}")));
                    }
                };
                chunk::by_tokens(&text, size, overlap, encoding).map_err(fail)?
            }
        };
        let list: Vec<Value> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({"index": i, "text": c.text, "start": c.start, "end": c.end});
                if let Some(t) = c.tokens {
                    v["tokens"] = json!(t);
                }
                v
            })
            .collect();
        Ok(json!({"count": list.len(), "by": by, "chunks": list}).to_string())
    }
}

dwa_transform_sdk::export_transform!(Text);
