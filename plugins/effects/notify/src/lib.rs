//! `notify`: sends `message` to a `channel`:
//! - `slack`: a Slack incoming webhook (`url`), body `{"text": message}`;
//! - `discord`: a Discord webhook (`url`), body `{"content": message}`;
//! - `webhook`: any URL, body `{"channel", "message", "taskId", "task"}`;
//! - `email`: an HTTP mail API (`url`, optional `apiKey` as a bearer token),
//!   body `{"to", "from", "subject", "text"}`.

use dwa_plugin_sdk::{
    Effect, EffectCall, PluginError, Value, config, fail, json, json_headers, optional_str,
    required_str, send,
};

struct Notify;

impl Effect for Notify {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let channel = required_str(&cfg, "notify", "channel")?;
        let message = required_str(&cfg, "notify", "message")?;
        let url = required_str(&cfg, "notify", "url")?;
        let mut headers = json_headers(cfg.get("headers"));
        let body = match channel.as_str() {
            "slack" => json!({"text": message}),
            "discord" => json!({"content": message}),
            "webhook" => {
                let task: Value = serde_json_task(&call.task);
                json!({"channel": "webhook", "message": message, "taskId": call.task_id, "task": task})
            }
            "email" => {
                let to = required_str(&cfg, "notify", "to")?;
                if let Some(key) = cfg.get("apiKey").and_then(Value::as_str) {
                    headers.push(("authorization".into(), format!("Bearer {key}")));
                }
                json!({
                    "to": to,
                    "from": optional_str(&cfg, "from", "dwa@localhost"),
                    "subject": optional_str(&cfg, "subject", "dwa notification"),
                    "text": message,
                })
            }
            other => {
                return Err(fail(format!(
                    "notify: channel {other:?} is not one of slack, discord, email, webhook"
                )));
            }
        };
        let resp = send(
            "POST",
            &url,
            headers,
            Some(body.to_string().into_bytes()),
            3,
        )?;
        Ok(json!({"channel": channel, "status": resp.status}).to_string())
    }
}

fn serde_json_task(text: &str) -> Value {
    dwa_plugin_sdk::serde_json::from_str(text).unwrap_or(Value::Null)
}

dwa_plugin_sdk::export_effect!(Notify);
