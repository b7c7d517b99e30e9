//! Template functions for encoding values on their way into a step:
//! `{{ payload.key | base64 }}`, `{{ x | unbase64 }}`, `{{ payload.q | urlencode }}`,
//! `{{ steps.a.text | sha256 }}`. Non-string values are encoded as their JSON text.

use base64::Engine;
use dwa_functions_sdk::{Functions, PluginError, Value, args, fail};
use sha2::Digest;

struct Codec;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Functions for Codec {
    fn call(name: String, json: String) -> Result<String, PluginError> {
        let a = args(&json)?;
        let v = &a[0];
        let out = match name.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD.encode(text(v)),
            "unbase64" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| fail("unbase64: expected a string"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| fail(format!("unbase64: not base64: {e}")))?;
                String::from_utf8(bytes)
                    .map_err(|_| fail("unbase64: the decoded bytes are not UTF-8 text"))?
            }
            "urlencode" => urlencode(&text(v)),
            "sha256" => hex(&sha2::Sha256::digest(text(v).as_bytes())),
            other => return Err(fail(format!("codec has no function {other:?}"))),
        };
        Ok(Value::String(out).to_string())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

dwa_functions_sdk::export_functions!(Codec);
