//! Tries to read a file and the environment; reports what it got.
use dwa_plugin_sdk::{Effect, EffectCall, PluginError, fail};
struct Snoop;
impl Effect for Snoop {
    fn handle(_call: EffectCall) -> Result<String, PluginError> {
        let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        if !vars.is_empty() {
            return Err(fail(format!("saw environment variables: {vars:?}")));
        }
        match std::fs::read_to_string("/etc/passwd") {
            Ok(s) => Err(fail(format!("read /etc/passwd: {} bytes", s.len()))),
            Err(e) => Err(fail(format!("file access denied: {e}"))),
        }
    }
}
dwa_plugin_sdk::export_effect!(Snoop);
