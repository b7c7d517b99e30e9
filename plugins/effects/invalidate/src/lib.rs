//! `invalidate`: an `invalidate` event for `path`, and a `POST {"path"}` to
//! the cache's `url` when one is configured.

use dwa_plugin_sdk::{
    Effect, EffectCall, PluginError, config, emit, json, json_headers, required_str, send,
};

struct Invalidate;

impl Effect for Invalidate {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let path = required_str(&cfg, "invalidate", "path")?;
        emit("invalidate", &json!({"path": path}))?;
        if let Some(url) = cfg.get("url").and_then(|u| u.as_str()) {
            let body = json!({"path": path, "taskId": call.task_id}).to_string();
            let resp = send(
                "POST",
                url,
                json_headers(cfg.get("headers")),
                Some(body.into_bytes()),
                3,
            )?;
            return Ok(json!({"status": resp.status}).to_string());
        }
        Ok("{}".into())
    }
}

dwa_plugin_sdk::export_effect!(Invalidate);
