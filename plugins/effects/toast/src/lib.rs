//! `toast`: a `toast` event (`text`, `variant`) on the task's stream.

use dwa_plugin_sdk::{
    Effect, EffectCall, PluginError, config, emit, fail, json, optional_str, required_str,
};

struct Toast;

const VARIANTS: [&str; 4] = ["info", "success", "warning", "error"];

impl Effect for Toast {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let text = required_str(&cfg, "toast", "text")?;
        let variant = optional_str(&cfg, "variant", "info");
        if !VARIANTS.contains(&variant.as_str()) {
            return Err(fail(format!(
                "toast: variant {variant:?} is not one of {}",
                VARIANTS.join(", ")
            )));
        }
        emit("toast", &json!({"text": text, "variant": variant}))?;
        Ok("{}".into())
    }
}

dwa_plugin_sdk::export_effect!(Toast);
