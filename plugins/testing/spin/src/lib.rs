//! Loops forever: the host's deadline must stop it.
use dwa_plugin_sdk::{Effect, EffectCall, PluginError};
struct Spin;
impl Effect for Spin {
    fn handle(call: EffectCall) -> Result<String, PluginError> {
        let mut n: u64 = call.config.len() as u64;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
            if n == 42 {
                return Ok(n.to_string());
            }
        }
    }
}
dwa_plugin_sdk::export_effect!(Spin);
