//! Does nothing and answers `{}`.
use dwa_plugin_sdk::{Effect, EffectCall, PluginError};
struct Noop;
impl Effect for Noop {
    fn handle(_call: EffectCall) -> Result<String, PluginError> {
        Ok("{}".into())
    }
}
dwa_plugin_sdk::export_effect!(Noop);
