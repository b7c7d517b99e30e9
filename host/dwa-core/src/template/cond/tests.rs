use serde_json::{Value, json};

use super::*;
use crate::template::{Root, Scope};

fn parse(text: &str) -> Condition {
    match Condition::parse(text, Filters::Builtin) {
        Ok(c) => c,
        Err(e) => panic!("{text:?} should parse: {e}"),
    }
}

fn refused(text: &str) -> String {
    match Condition::parse(text, Filters::Builtin) {
        Ok(c) => panic!("{text:?} should be refused, got {c:?}"),
        Err(e) => e.message,
    }
}

/// Evaluates `text` with `payload` as the payload and step 0's result `s0`
/// bound to `steps.a`.
fn holds_with(text: &str, payload: &Value, s0: &Value) -> Result<bool, ResolveError> {
    let mut c = parse(text);
    c.exprs_mut(&mut |e| {
        if let Root::Step { idx, .. } = &mut e.root {
            *idx = Some(0);
        }
    });
    let steps = std::collections::HashMap::from([(0usize, std::sync::Arc::new(s0.clone()))]);
    let scope = Scope {
        payload: Some(payload),
        steps: Some(&steps),
        ..Scope::default()
    };
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(c.holds(&scope, None))
}

fn holds(text: &str) -> bool {
    let payload = json!({"n": 3, "name": "Speech", "tags": ["a", "b"], "empty": ""});
    let s0 = json!({"label": "speech", "score": 0.9, "$error": "boom"});
    match holds_with(text, &payload, &s0) {
        Ok(b) => b,
        Err(e) => panic!("{text:?} should evaluate: {e}"),
    }
}

#[test]
fn comparisons_compare_json_values() {
    assert!(holds("{{ steps.a.label == 'speech' }}"));
    assert!(holds("{{ steps.a.label != \"music\" }}"));
    assert!(holds("{{ payload.n == 3.0 }}"), "numbers compare by value");
    assert!(holds("{{ payload.n >= 3 and payload.n < 4 }}"));
    assert!(holds("{{ steps.a.score > 0.5 }}"));
    assert!(holds("{{ 'apple' < 'banana' }}"));
    assert!(!holds("{{ payload.n > 3 }}"));
}

#[test]
fn in_tests_lists_keys_and_substrings() {
    assert!(holds("{{ steps.a.label in ['speech', 'music'] }}"));
    assert!(holds("{{ 'b' in payload.tags }}"));
    assert!(holds("{{ 'label' in steps.a }}"));
    assert!(holds("{{ 'pee' in steps.a.label }}"));
    assert!(holds("{{ 'c' not in payload.tags }}"));
    assert!(!holds("{{ 'x' in payload.missing }}"), "nothing is in null");
}

#[test]
fn and_or_not_follow_precedence_and_parentheses() {
    assert!(holds("{{ true or false and false }}"), "and binds tighter");
    assert!(!holds("{{ (true or false) and false }}"));
    assert!(holds("{{ not false }}"));
    assert!(holds("{{ not not true }}"));
    assert!(holds("{{ not payload.empty }}"), "'' is false");
    assert!(!holds("{{ payload.tags and payload.empty }}"));
}

#[test]
fn a_missing_field_is_null_and_filters_apply() {
    assert!(holds("{{ payload.nope == null }}"));
    assert!(!holds("{{ payload.nope }}"));
    assert!(holds("{{ steps.a.$error == 'boom' }}"));
    assert!(holds("{{ payload.name | lower == 'speech' }}"));
    assert!(holds("{{ payload.tags | length == 2 }}"));
    assert!(
        holds("{{ payload.nope | default(\"x\") == 'x' }}"),
        "filter arguments are JSON"
    );
}

#[test]
fn ordering_values_of_different_types_is_an_error() {
    let payload = json!({"n": 3});
    let e = holds_with("{{ payload.n < 'x' }}", &payload, &Value::Null);
    assert!(
        matches!(&e, Err(e) if e.reason.contains("cannot order number and string")),
        "{e:?}"
    );
    let e = holds_with("{{ 3 in 4 }}", &payload, &Value::Null);
    assert!(
        matches!(&e, Err(e) if e.reason.contains("`in` needs")),
        "{e:?}"
    );
}

#[test]
fn malformed_conditions_are_refused_with_a_position() {
    assert!(refused("steps.a.label == 'x'").contains("one {{ ... }}"));
    assert!(refused("{{ steps.a.label == }}").contains("unexpected end"));
    assert!(refused("{{ steps.a.label = 'x' }}").contains("unexpected"));
    assert!(refused("{{ 'open }}").contains("unclosed string"));
    assert!(refused("{{ (true }}").contains("expected ')'"));
    assert!(refused("{{ x > 1 }}").contains("unknown name"));
    assert!(refused("{{ payload.n | nosuch }}").contains("unknown filter"));
    assert!(refused("{{ 1 }} and {{ 2 }}").contains("more than one"));
    assert!(refused("{{ payload.n not 3 }}").contains("expected `in`"));
    assert!(refused("{{ [payload.n] }}").contains("a list holds only"));
    assert!(refused("{{ payload.n == -(-3) }}").contains("not a number"));
}

#[test]
fn size_and_nesting_are_bounded() {
    let deep = format!("{{{{ {}true{} }}}}", "(".repeat(40), ")".repeat(40));
    assert!(refused(&deep).contains("nested deeper"));
    let nots = format!("{{{{ {}true }}}}", "not ".repeat(40));
    assert!(refused(&nots).contains("nested deeper"));
    let lists = format!(
        "{{{{ 1 in {}1{} }}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(refused(&lists).contains("bytes"));
    let lists = format!("{{{{ 1 in {}1{} }}}}", "[".repeat(100), "]".repeat(100));
    assert!(refused(&lists).contains("a list holds only"));
    let long = format!("{{{{ {} }}}}", vec!["true"; 500].join(" or "));
    assert_eq!(parse(&long).source.len(), 500 * 8 - 4);
}
