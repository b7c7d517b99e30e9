//! Checks a JSON value against the JSON Schema a backend announces for a
//! task's input, with a complete implementation of the standard (the
//! `jsonschema` crate; the draft is read from `$schema`, 2020-12 when it
//! says none), so that a backend's schema means what it says. Problems come
//! back as (JSON path, message) in dwa's words (`$.tags[1]`, "expected
//! string, got integer"), the keywords a task catalog uses most spelled
//! out, any other keyword in the crate's own words.
//!
//! Remote `$ref`s are not fetched (no HTTP, no files): a schema needing one
//! does not compile, and every check against it says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

/// Compiled schemas kept at most; past it the cache starts over. A host
/// sees one schema per task name and backend, far fewer than this.
const CACHE_LIMIT: usize = 1024;

/// Every place `value` breaks `schema`, as (JSON path, message); empty when it fits.
pub fn check(schema: &Value, value: &Value) -> Vec<(String, String)> {
    match compiled(schema) {
        Ok(validator) => validator
            .iter_errors(value)
            .flat_map(|e| describe(&e, schema, value))
            .collect(),
        Err(message) => vec![(
            "$".to_owned(),
            format!("cannot be checked: the task's input schema is invalid ({message})"),
        )],
    }
}

/// The compiled form of `schema`, compiled once per distinct schema: the
/// engine checks every input built from templates before its call.
fn compiled(schema: &Value) -> Result<Arc<Validator>, String> {
    type Cache = Mutex<HashMap<String, Result<Arc<Validator>, String>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = schema.to_string();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(c) = cache.lock()
        && let Some(hit) = c.get(&key)
    {
        return hit.clone();
    }
    let made = jsonschema::validator_for(schema)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    if let Ok(mut c) = cache.lock() {
        if c.len() >= CACHE_LIMIT {
            c.clear();
        }
        c.insert(key, made.clone());
    }
    made
}

/// One validation error in dwa's words; `additionalProperties` gives one
/// problem per property not allowed, `required` names the missing one.
fn describe(e: &ValidationError<'_>, schema: &Value, root: &Value) -> Vec<(String, String)> {
    let path = path_of(e, root);
    let one = |message: String| vec![(path.clone(), message)];
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            vec![(format!("{path}.{name}"), "is required".into())]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|k| (format!("{path}.{k}"), "is not allowed here".to_owned()))
            .collect(),
        ValidationErrorKind::Type { kind } => {
            // In the schema's own order where the keyword can be found.
            let listed = schema
                .pointer(e.schema_path().as_str())
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>());
            let wants: Vec<&str> = match (listed, kind) {
                (Some(l), _) if !l.is_empty() => l,
                (_, TypeKind::Single(t)) => vec![t.as_str()],
                (_, TypeKind::Multiple(set)) => set.iter().map(|t| t.as_str()).collect(),
            };
            one(format!(
                "expected {}, got {}",
                wants.join(" or "),
                type_of(e.instance())
            ))
        }
        ValidationErrorKind::Enum { options } => one(format!("must be one of {options}")),
        ValidationErrorKind::Minimum { limit } => one(format!("must be at least {limit}")),
        ValidationErrorKind::Maximum { limit } => one(format!("must be at most {limit}")),
        ValidationErrorKind::MinLength { limit } => {
            one(format!("must have at least {limit} characters"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            one(format!("must have at most {limit} characters"))
        }
        ValidationErrorKind::MinItems { limit } => one(format!("must have at least {limit} items")),
        ValidationErrorKind::MaxItems { limit } => one(format!("must have at most {limit} items")),
        _ => one(e.to_string()),
    }
}

/// The error's place in `root` as `$.a.b[2]`: a segment that looks like a
/// number is an index only where the value there is an array.
fn path_of(e: &ValidationError<'_>, root: &Value) -> String {
    let mut path = String::from("$");
    let mut at = Some(root);
    for segment in e.instance_path().segments() {
        let (text, next) = match (&segment, at) {
            (LocationSegment::Index(i), Some(Value::Array(items))) => {
                path.push_str(&format!("[{i}]"));
                at = items.get(*i);
                continue;
            }
            (LocationSegment::Index(i), v) => {
                let key = i.to_string();
                let next = v.and_then(|v| v.get(&key));
                (key, next)
            }
            (LocationSegment::Property(p), v) => (p.to_string(), v.and_then(|v| v.get(p.as_ref()))),
        };
        path.push('.');
        path.push_str(&text);
        at = next;
    }
    path
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

    #[test]
    fn keywords_beyond_the_old_subset_mean_what_they_say() {
        let schema = json!({
            "$defs": {"lang": {"type": "string", "pattern": "^[a-z]{2}$"}},
            "type": "object",
            "properties": {
                "language": {"$ref": "#/$defs/lang"},
                "mode": {"const": "fast"},
                "size": {"oneOf": [{"type": "integer"}, {"type": "string", "enum": ["auto"]}]},
                "n": {"type": "integer", "exclusiveMinimum": 0}
            }
        });
        assert!(
            check(
                &schema,
                &json!({"language": "en", "mode": "fast", "size": "auto", "n": 1})
            )
            .is_empty()
        );
        let errs = check(
            &schema,
            &json!({"language": "EN", "mode": "slow", "size": 2.5, "n": 0}),
        );
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        for want in ["$.language", "$.mode", "$.size", "$.n"] {
            assert!(paths.contains(&want), "no problem at {want}: {errs:#?}");
        }
    }

    #[test]
    fn an_invalid_schema_is_named_not_ignored() {
        let errs = check(&json!({"type": 12}), &json!(1));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].1.contains("input schema is invalid"), "{errs:#?}");
    }

    #[test]
    fn a_numeric_property_name_is_not_taken_for_an_index() {
        let schema = json!({"type": "object", "properties": {"0": {"type": "string"}},
                            "items": {"type": "string"}});
        assert_eq!(check(&schema, &json!({"0": 1}))[0].0, "$.0");
        let list = json!({"type": "array", "items": {"type": "string"}});
        assert_eq!(check(&list, &json!(["a", 1]))[0].0, "$[1]");
    }
}
