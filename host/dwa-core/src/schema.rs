//! Checks a JSON value against the JSON Schema a backend announces for a
//! task's input: the subset task catalogs use (`type`, `properties`,
//! `required`, `items`, `enum`, `minimum`/`maximum`, `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `additionalProperties: false`). Keywords outside
//! the subset are ignored rather than guessed at.

use serde_json::Value;

/// Every place `value` breaks `schema`, as (JSON path, message); empty when it fits.
pub fn check(schema: &Value, value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, value, "$", &mut out);
    out
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn fits_type(want: &str, v: &Value) -> bool {
    let got = type_of(v);
    want == got || (want == "number" && got == "integer")
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let Value::Object(s) = schema else {
        return;
    };
    if let Some(t) = s.get("type") {
        let wants: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !wants.is_empty() && !wants.iter().any(|w| fits_type(w, value)) {
            out.push((
                path.to_owned(),
                format!("expected {}, got {}", wants.join(" or "), type_of(value)),
            ));
            return;
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(value)
    {
        out.push((
            path.to_owned(),
            format!("must be one of {}", Value::Array(options.clone())),
        ));
    }
    match value {
        Value::Object(m) => {
            if let Some(Value::Array(req)) = s.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        out.push((format!("{path}.{r}"), "is required".into()));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, v) in m {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => walk(sub, v, &format!("{path}.{k}"), out),
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        out.push((format!("{path}.{k}"), "is not allowed here".into()));
                    }
                    None => {}
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, v) in a.iter().enumerate() {
                    walk(items, v, &format!("{path}[{i}]"), out);
                }
            }
            bound(
                s,
                "minItems",
                "maxItems",
                a.len() as f64,
                "items",
                path,
                out,
            );
        }
        Value::String(st) => {
            bound(
                s,
                "minLength",
                "maxLength",
                st.chars().count() as f64,
                "characters",
                path,
                out,
            );
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                    && x < min
                {
                    out.push((path.to_owned(), format!("must be at least {min}")));
                }
                if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                    && x > max
                {
                    out.push((path.to_owned(), format!("must be at most {max}")));
                }
            }
        }
        _ => {}
    }
}

fn bound(
    s: &serde_json::Map<String, Value>,
    lo: &str,
    hi: &str,
    n: f64,
    unit: &str,
    path: &str,
    out: &mut Vec<(String, String)>,
) {
    if let Some(min) = s.get(lo).and_then(Value::as_f64)
        && n < min
    {
        out.push((path.to_owned(), format!("must have at least {min} {unit}")));
    }
    if let Some(max) = s.get(hi).and_then(Value::as_f64)
        && n > max
    {
        out.push((path.to_owned(), format!("must have at most {max} {unit}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_subset_catalogs_use() {
        let schema = json!({"type": "object", "required": ["url"], "additionalProperties": false,
        "properties": {
            "url": {"type": "string", "minLength": 8},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5},
            "format": {"enum": ["mp4", "webm"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "ratio": {"type": ["number", "null"]}
        }});
        assert!(
            check(
                &schema,
                &json!({"url": "https://x/y", "retries": 2, "ratio": 0.5})
            )
            .is_empty()
        );
        assert!(check(&schema, &json!({"url": "https://x/y", "ratio": null})).is_empty());
        let errs = check(
            &schema,
            &json!({"retries": 9, "format": "avi", "tags": ["a", 1, "c"], "extra": true, "ratio": "x"}),
        );
        let got: Vec<String> = errs.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        for want in [
            "$.url: is required",
            "$.retries: must be at most 5",
            "$.format: must be one of [\"mp4\",\"webm\"]",
            "$.tags[1]: expected string, got integer",
            "$.tags: must have at most 2 items",
            "$.extra: is not allowed here",
            "$.ratio: expected number or null, got string",
        ] {
            assert!(
                got.iter().any(|g| g == want),
                "missing {want:?} in {got:#?}"
            );
        }
        assert_eq!(
            check(&json!({"type": "object"}), &json!([1]))[0].1,
            "expected object, got array"
        );
        assert!(check(&json!({"unknownKeyword": 1}), &json!(5)).is_empty());
    }
}
