//! `redirect`: a `redirect` event telling the client where to go.

use dwa_plugin_sdk::{Effect, EffectCall, PluginError, config, emit, fail, json, required_str};

struct Redirect;

impl Effect for Redirect {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let url = required_str(&cfg, "redirect", "url")?;
        if !(url.starts_with('/') || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(fail(format!(
                "redirect: url {url:?} must be a path (/...) or an http(s) URL"
            )));
        }
        emit("redirect", &json!({"url": url}))?;
        Ok("{}".into())
    }
}

dwa_plugin_sdk::export_effect!(Redirect);
