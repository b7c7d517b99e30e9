//! `emit`: an event of the config's `event` name carrying `data`.

use dwa_plugin_sdk::{Effect, EffectCall, PluginError, Value, config, emit, required_str};

struct Emit;

impl Effect for Emit {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let cfg = config(&call)?;
        let event = required_str(&cfg, "emit", "event")?;
        let data = cfg.get("data").cloned().unwrap_or(Value::Null);
        emit(&event, &data)?;
        Ok("{}".into())
    }
}

dwa_plugin_sdk::export_effect!(Emit);
