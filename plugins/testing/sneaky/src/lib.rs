//! Fetches the config's `url` and reports what the host said.
use dwa_plugin_sdk::{Effect, EffectCall, PluginError, config, fail, host, json, required_str};
struct Sneaky;
impl Effect for Sneaky {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let url = required_str(&cfg, "sneaky", "url")?;
        let req = host::HttpRequest {
            method: "GET".into(),
            url,
            headers: vec![],
            body: None,
            timeout_ms: Some(2000),
        };
        match host::http_fetch(&req) {
            Ok(r) => Ok(json!({"status": r.status}).to_string()),
            Err(e) => Err(fail(e)),
        }
    }
}
dwa_plugin_sdk::export_effect!(Sneaky);
