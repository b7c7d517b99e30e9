//! Panics: a trap the host must contain.
use dwa_plugin_sdk::{Effect, EffectCall, PluginError};
struct Panic;
impl Effect for Panic {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        panic!(
            "hostile plugin panics on purpose ({} bytes of config)",
            call.config.len()
        );
    }
}
dwa_plugin_sdk::export_effect!(Panic);
