//! Allocates 1 MiB blocks until the host's memory limit stops it.
use dwa_plugin_sdk::{Effect, EffectCall, PluginError};
struct Bomb;
impl Effect for Bomb {
    fn handle(_call: EffectCall) -> Result<String, PluginError> {
        let mut keep: Vec<Vec<u8>> = Vec::new();
        loop {
            keep.push(std::hint::black_box(vec![7u8; 1 << 20]));
        }
    }
}
dwa_plugin_sdk::export_effect!(Bomb);
