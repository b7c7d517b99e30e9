//! `webhook`: calls `url` (`method`, default POST) with `headers` and `body`
//! (default: the task's status JSON). With a `secret`, the body is signed:
//! `X-DWA-Signature: sha256=<hex HMAC-SHA256 of the body>`. Transport errors
//! and 5xx answers are retried (3 tries).

use dwa_plugin_sdk::{
    Effect, EffectCall, PluginError, Value, config, fail, json, json_headers, optional_str,
    required_str, send,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

struct Webhook;

const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "GET", "DELETE"];

/// The signature header's value for `body`.
fn signature(secret: &str, body: &[u8]) -> Result<String, PluginError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| fail(format!("webhook: bad secret: {e}")))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

impl Effect for Webhook {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let url = required_str(&cfg, "webhook", "url")?;
        let method = optional_str(&cfg, "method", "POST").to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(fail(format!(
                "webhook: method {method:?} is not one of {}",
                METHODS.join(", ")
            )));
        }
        let body: Vec<u8> = match cfg.get("body") {
            None | Some(Value::Null) => call.task.clone().into_bytes(),
            Some(Value::String(s)) => s.clone().into_bytes(),
            Some(other) => other.to_string().into_bytes(),
        };
        let mut headers = json_headers(cfg.get("headers"));
        if let Some(secret) = cfg.get("secret").and_then(Value::as_str) {
            headers.push(("x-dwa-signature".into(), signature(secret, &body)?));
        }
        let body = if method == "GET" { None } else { Some(body) };
        let resp = send(&method, &url, headers, body, 3)?;
        Ok(json!({"status": resp.status}).to_string())
    }
}

dwa_plugin_sdk::export_effect!(Webhook);

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let s = super::signature("Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
