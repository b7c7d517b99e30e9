//! Everything a Rust template-functions plugin for dwa needs: the bindings
//! of the `dwa:plugin@0.1.0` `template-functions` world, the
//! `export_functions!` macro, and argument helpers.
//!
//! ```ignore
//! use dwa_functions_sdk::{Functions, PluginError, Value, args, fail};
//! struct Mine;
//! impl Functions for Mine {
//!     fn call(name: String, json: String) -> Result<String, PluginError> {
//!         let a = args(&json)?; // [piped value, filter args...]
//!         match name.as_str() {
//!             "shout" => Ok(Value::from(format!("{}!", a[0])).to_string()),
//!             other => Err(fail(format!("no function {other}"))),
//!         }
//!     }
//! }
//! dwa_functions_sdk::export_functions!(Mine);
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "template-functions",
    default_bindings_module: "dwa_functions_sdk",
    pub_export_macro: true,
    export_macro_name: "export_functions",
});

pub use dwa::plugin::logging;
pub use dwa::plugin::types::PluginError;
pub use exports::dwa::plugin::functions::Guest as Functions;
pub use serde_json::{self, Value, json};

/// The call's arguments: the piped value first, then the filter's own.
pub fn args(json: &str) -> Result<Vec<Value>, PluginError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(a)) if !a.is_empty() => Ok(a),
        Ok(_) => Err(fail("arguments must be a non-empty JSON array")),
        Err(e) => Err(fail(format!("arguments are not JSON: {e}"))),
    }
}

/// A permanent error.
pub fn fail(message: impl Into<String>) -> PluginError {
    PluginError {
        message: message.into(),
        retryable: false,
    }
}
