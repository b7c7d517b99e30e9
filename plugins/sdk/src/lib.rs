//! Everything a Rust effect plugin for dwa needs: the generated bindings of
//! the `dwa:plugin@0.1.0` `effect-handler` world, the `export_effect!` macro,
//! and small helpers for reading config and calling HTTP through the host.
//!
//! ```ignore
//! use dwa_plugin_sdk::{Effect, EffectCall, PluginError};
//! struct Mine;
//! impl Effect for Mine {
//!     fn handle(call: EffectCall) -> Result<String, PluginError> { Ok("{}".into()) }
//! }
//! dwa_plugin_sdk::export_effect!(Mine);
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "effect-handler",
    default_bindings_module: "dwa_plugin_sdk",
    pub_export_macro: true,
    export_macro_name: "export_effect",
});

pub use dwa::plugin::host;
pub use dwa::plugin::types::PluginError;
pub use exports::dwa::plugin::effect::{EffectCall, Guest as Effect};
pub use serde_json::{self, Value, json};

/// The effect's config as a JSON object.
pub fn config(call: &EffectCall) -> Result<serde_json::Map<String, Value>, PluginError> {
    match serde_json::from_str::<Value>(&call.config) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(fail("config must be a JSON object")),
        Err(e) => Err(fail(format!("config is not JSON: {e}"))),
    }
}

/// A required string field of the config.
pub fn required_str(
    config: &serde_json::Map<String, Value>,
    effect: &str,
    field: &str,
) -> Result<String, PluginError> {
    match config.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(fail(format!("{effect}: `{field}` must not be empty"))),
        Some(other) => Err(fail(format!(
            "{effect}: `{field}` must be a string, got {other}"
        ))),
        None => Err(fail(format!("{effect}: `{field}` is required"))),
    }
}

/// An optional string field, with a default.
pub fn optional_str(config: &serde_json::Map<String, Value>, field: &str, default: &str) -> String {
    config
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_owned()
}

/// A permanent error.
pub fn fail(message: impl Into<String>) -> PluginError {
    PluginError {
        message: message.into(),
        retryable: false,
    }
}

/// Emits an event on the task's stream, turning a refusal into an error.
pub fn emit(event: &str, data: &Value) -> Result<(), PluginError> {
    host::emit(event, &data.to_string()).map_err(fail)
}

/// Sends JSON (or raw bytes) through the host's HTTP, retrying transport
/// errors and 5xx answers up to `tries` times with a doubling pause.
pub fn send(
    method: &str,
    url: &str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    tries: u32,
) -> Result<host::HttpResponse, PluginError> {
    let mut pause = std::time::Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 1..=tries.max(1) {
        let req = host::HttpRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: headers.clone(),
            body: body.clone(),
            timeout_ms: Some(10_000),
        };
        match host::http_fetch(&req) {
            Ok(resp) if resp.status < 500 => {
                if resp.status >= 400 {
                    return Err(fail(format!(
                        "{method} {url} answered {}: {}",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    )));
                }
                return Ok(resp);
            }
            Ok(resp) => last = format!("{method} {url} answered {}", resp.status),
            // A refusal by the host's permissions will not change on retry.
            Err(e) if e.contains("not granted") || e.contains("refused") => return Err(fail(e)),
            Err(e) => last = e,
        }
        if attempt < tries {
            std::thread::sleep(pause);
            pause *= 2;
        }
    }
    Err(PluginError {
        message: format!("{last} (after {tries} tries)"),
        retryable: true,
    })
}

/// `Content-Type: application/json` plus the given headers.
pub fn json_headers(extra: Option<&Value>) -> Vec<(String, String)> {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(Value::Object(m)) = extra {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
            headers.push((k.clone(), v));
        }
    }
    headers
}
