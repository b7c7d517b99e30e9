//! Mermaid diagrams of a task's steps, and the mermaid.live link that opens
//! them (`#pako:` + base64url of zlib-deflated `{"code", "mermaid"}` JSON).

use std::io::Write;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde_json::json;

use crate::plan::Plan;

/// A `graph TD` diagram: one node per step, one edge per dependency.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("graph TD\n");
    for s in &plan.steps {
        let mut label = format!("{}<br/>{}", escape(&s.key), escape(&s.task));
        if s.for_each.is_some() {
            label.push_str("<br/>forEach");
            if let Some(c) = s.for_each_concurrency {
                label.push_str(&format!(" ×{c}"));
            }
        }
        let (open, close) = if s.for_each.is_some() {
            ("[[", "]]")
        } else {
            ("[", "]")
        };
        out.push_str(&format!("    s{}{open}\"{label}\"{close}\n", s.idx));
    }
    for s in &plan.steps {
        for d in &s.deps {
            out.push_str(&format!("    s{d} --> s{}\n", s.idx));
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// The mermaid.live editor link for `code`.
pub fn live_url(code: &str) -> String {
    let state = json!({"code": code, "mermaid": "{\"theme\":\"default\"}"}).to_string();
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(state.as_bytes());
    let bytes = enc.finish().unwrap_or_default();
    format!(
        "https://mermaid.live/edit#pako:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::plan::{parse_spec, plan};
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn diagram_and_link_round_trip() {
        let spec = parse_spec(
            br#"{"type":"v","steps":[
                {"id":"a","task":"builtin.echo"},
                {"id":"b","task":"builtin.echo","dependsOn":["a"]},
                {"id":"c","task":"builtin.echo","dependsOn":["a"],"forEach":[1,2],"forEachConcurrency":2},
                {"id":"d","task":"builtin.echo","dependsOn":["b","c"]}]}"#,
        )
        .unwrap();
        let p = plan(
            spec,
            &Catalog::with_builtins(),
            &crate::limits::Limits::default(),
        )
        .unwrap();
        let m = mermaid(&p);
        assert!(m.starts_with("graph TD\n"));
        assert!(m.contains("s0[\"a<br/>builtin.echo\"]"));
        assert!(m.contains("s2[[\"c<br/>builtin.echo<br/>forEach ×2\"]]"));
        for edge in ["s0 --> s1", "s0 --> s2", "s1 --> s3", "s2 --> s3"] {
            assert!(m.contains(edge), "{edge} missing in {m}");
        }
        let url = live_url(&m);
        let payload = url.strip_prefix("https://mermaid.live/edit#pako:").unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let mut text = String::new();
        ZlibDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["code"], m);
    }
}
