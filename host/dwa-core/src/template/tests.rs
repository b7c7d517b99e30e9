//! Templates: parsing, binding, resolution and filters.

use super::*;
use serde_json::json;

fn parse(v: Value) -> Template {
    Template::parse(&v).unwrap()
}

#[test]
fn literal_without_braces() {
    assert_eq!(parse(json!("plain")), Template::Literal(json!("plain")));
    assert_eq!(
        parse(json!({"a": [1, 2]})),
        Template::Literal(json!({"a": [1, 2]}))
    );
}

#[test]
fn whole_template_keeps_type() {
    let t = parse(json!("{{index}}"));
    let scope = Scope {
        index: Some(3),
        ..Default::default()
    };
    assert_eq!(t.resolve(&scope).unwrap(), json!(3));
    let t = parse(json!("{{ payload.obj }}"));
    let payload = json!({"obj": {"k": [1]}});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    assert_eq!(t.resolve(&scope).unwrap(), json!({"k": [1]}));
}

#[test]
fn interpolation_stringifies() {
    let t = parse(json!("n={{index}} obj={{payload.o}} s={{payload.s}}"));
    let payload = json!({"o": {"a": 1}, "s": "txt"});
    let scope = Scope {
        payload: Some(&payload),
        index: Some(7),
        ..Default::default()
    };
    assert_eq!(t.resolve(&scope).unwrap(), json!("n=7 obj={\"a\":1} s=txt"));
}

#[test]
fn step_paths_with_indexes() {
    let mut t = parse(json!({"x": "{{steps.frames.scenes[1].keyframe}}"}));
    t.exprs_mut(&mut |e| {
        if let Root::Step { idx, .. } = &mut e.root {
            *idx = Some(4);
        }
    });
    let mut steps = HashMap::new();
    steps.insert(
        4,
        Arc::new(json!({"scenes": [{"keyframe": "a"}, {"keyframe": "b"}]})),
    );
    let scope = Scope {
        steps: Some(&steps),
        ..Default::default()
    };
    assert_eq!(t.resolve(&scope).unwrap(), json!({"x": "b"}));
}

#[test]
fn steps_by_number_and_dot_index() {
    let t = parse(json!("{{steps.0.list.1}}"));
    let Template::Whole(e) = &t else {
        panic!("not whole")
    };
    assert_eq!(
        e.root,
        Root::Step {
            key: "0".into(),
            idx: None
        }
    );
    assert_eq!(e.path, vec![Seg::Key("list".into()), Seg::Key("1".into())]);
}

#[test]
fn missing_field_is_a_clear_error() {
    let t = parse(json!("{{payload.a.b}}"));
    let payload = json!({"a": {"c": 1}});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    let e = t.resolve(&scope).unwrap_err();
    assert_eq!(e.expr, "payload.a.b");
    assert!(e.reason.contains(".a.b not found"), "{}", e.reason);
}

#[test]
fn parse_errors_have_positions() {
    let e = parse_string("ab {{payload.x").unwrap_err();
    assert_eq!(e.message, "unmatched '{{'");
    assert_eq!(e.position, 3);
    let e = parse_string("x }} y").unwrap_err();
    assert_eq!(e.message, "unmatched '}}'");
    assert_eq!(e.position, 2);
    let e = parse_string("{{ nope.x }}").unwrap_err();
    assert!(
        e.message.starts_with("unknown name \"nope\""),
        "{}",
        e.message
    );
    assert_eq!(e.position, 3);
    let e = parse_string("é{{payload.x y}}").unwrap_err();
    assert_eq!(e.message, "unexpected character 'y'");
    assert_eq!(e.position, 13);
    let e = parse_string("{{}}").unwrap_err();
    assert_eq!(e.message, "empty expression");
    let e = parse_string("{{steps}}").unwrap_err();
    assert!(e.message.contains("needs a step id"));
    let e = parse_string("{{payload.a[x]}}").unwrap_err();
    assert_eq!(e.message, "expected '[<number>]'");
    let e = parse_string("{{index.a}}").unwrap_err();
    assert_eq!(e.message, "`index` has no fields");
}

#[test]
fn filters_chain_and_keep_types() {
    let payload = json!({"name": "Ada Lovelace", "tags": ["a", "b", "c"], "n": null,
                         "text": "hello world", "obj": {"k": 1}});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    let r = |t: &str| parse_string(t).unwrap().resolve(&scope).unwrap();
    assert_eq!(r("{{ payload.name | upper }}"), json!("ADA LOVELACE"));
    assert_eq!(r("{{payload.name|lower|truncate(3)}}"), json!("ada"));
    assert_eq!(
        r("{{ payload.tags | length }}"),
        json!(3),
        "a number stays a number"
    );
    assert_eq!(r("n={{ payload.tags | length }}"), json!("n=3"));
    assert_eq!(r("{{ payload.tags | join(\" + \") }}"), json!("a + b + c"));
    assert_eq!(r("{{ payload.tags | join }}"), json!("a,b,c"));
    assert_eq!(r("{{ payload.tags | first }}"), json!("a"));
    assert_eq!(r("{{ payload.tags | last | upper }}"), json!("C"));
    assert_eq!(
        r("{{ payload.missing | default(\"anon\") }}"),
        json!("anon")
    );
    assert_eq!(r("{{ payload.n | default(5) }}"), json!(5));
    assert_eq!(
        r("{{ payload.name | default(\"x\") }}"),
        json!("Ada Lovelace")
    );
    assert_eq!(r("{{ payload.obj | json }}"), json!("{\"k\":1}"));
    assert_eq!(r("{{ payload.tags | truncate(2) }}"), json!(["a", "b"]));
    assert_eq!(r("{{ payload.text | truncate(5) | length }}"), json!(5));
}

#[test]
fn filter_errors_have_positions() {
    let e = parse_string("ab {{ payload.x | shout }}").unwrap_err();
    assert!(
        e.message
            .starts_with("unknown filter \"shout\"; known filters: default"),
        "{}",
        e.message
    );
    assert_eq!(e.position, 18);
    let e = parse_string("{{ payload.x | truncate }}").unwrap_err();
    assert_eq!(e.message, "filter truncate takes 1 argument(s), got 0");
    assert_eq!(e.position, 15);
    let e = parse_string("{{ payload.x | default(1, 2) }}").unwrap_err();
    assert_eq!(e.message, "filter default takes 1 argument(s), got 2");
    let e = parse_string("{{ payload.x | truncate(\"a\") }}").unwrap_err();
    assert_eq!(e.message, "filter truncate takes a whole number");
    let e = parse_string("{{ payload.x | join(1 }}").unwrap_err();
    assert_eq!(e.message, "unclosed '(' in filter arguments");
    assert_eq!(e.position, 19);
    let e = parse_string("{{ payload.x | default(nope) }}").unwrap_err();
    assert!(e.message.contains("not JSON literals"));
    let e = parse_string("{{ payload.x | }}").unwrap_err();
    assert_eq!(e.message, "unexpected end of expression");
    // Type errors surface when the value is known.
    let payload = json!({"n": 3});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    let e = parse_string("{{ payload.n | upper }}")
        .unwrap()
        .resolve(&scope)
        .unwrap_err();
    assert_eq!(e.reason, "filter upper: expected a string, got number");
    assert_eq!(e.expr, "payload.n | upper");
}

#[test]
fn context_errors() {
    let t = parse(json!("{{item.x}}"));
    let e = t.resolve(&Scope::default()).unwrap_err();
    assert!(e.reason.contains("forEach"));
    let t = parse(json!("{{error}}"));
    let scope = Scope {
        error: Some("boom"),
        ..Default::default()
    };
    assert_eq!(t.resolve(&scope).unwrap(), json!("boom"));
}

/// Plugin functions that record their calls: `double` (a number), `greet(name)`.
struct Recorder(std::sync::Mutex<Vec<(String, Vec<Value>)>>);

#[async_trait::async_trait]
impl Functions for Recorder {
    async fn call(&self, name: &str, value: &Value, args: &[Value]) -> Result<Value, String> {
        let mut all = vec![value.clone()];
        all.extend_from_slice(args);
        self.0.lock().unwrap().push((name.to_owned(), all));
        match (name, value.as_f64()) {
            ("double", Some(n)) => Ok(json!(n * 2.0)),
            ("double", None) => Err("expected a number".into()),
            ("greet", _) => Ok(json!(format!(
                "{} {}",
                args[0].as_str().unwrap_or("?"),
                value.as_str().unwrap_or("?")
            ))),
            _ => Err("no such function".into()),
        }
    }
}

#[test]
fn plugin_filters_parse_with_their_arity() {
    let fns: BTreeMap<String, (usize, usize)> = [
        ("double".to_string(), (0, 0)),
        ("greet".to_string(), (1, 1)),
    ]
    .into();
    let known = Filters::With(&fns);
    assert!(parse_string_with("{{ payload.n | double | double }}", known).is_ok());
    // Builtins alone do not know it: rejected where it is written.
    let e = parse_string("{{ payload.n | double }}").unwrap_err();
    assert!(
        e.message.starts_with("unknown filter \"double\""),
        "{}",
        e.message
    );
    assert_eq!(e.position, 15);
    let e = parse_string_with("x {{ payload.n | greet }}", known).unwrap_err();
    assert_eq!(e.message, "filter greet takes 1 argument(s), got 0");
    assert_eq!(e.position, 17);
    let e = parse_string_with("{{ payload.n | nope }}", known).unwrap_err();
    assert!(
        e.message.ends_with("first, last, double, greet"),
        "{}",
        e.message
    );
    // A stored task read back accepts any name.
    assert!(parse_string_with("{{ payload.n | gone(1, 2) }}", Filters::Any).is_ok());
}

#[tokio::test]
async fn plugin_filters_resolve_in_order_and_keep_types() {
    let fns: BTreeMap<String, (usize, usize)> = [
        ("double".to_string(), (0, 0)),
        ("greet".to_string(), (1, 1)),
    ]
    .into();
    let t = Template::parse_with(
        &json!({
            "n": "{{ payload.n | double | double }}",
            "s": "{{ payload.name | greet(\"hi\") | upper }}!",
            "plain": "{{ payload.n }}",
            "list": ["{{ payload.n | double }}", 7],
        }),
        Filters::With(&fns),
    )
    .unwrap();
    assert!(t.uses_functions());
    let payload = json!({"n": 3, "name": "ada"});
    let scope = Scope {
        payload: Some(&payload),
        ..Default::default()
    };
    let rec = Recorder(Default::default());
    let v = t.resolve_with(&scope, &rec).await.unwrap();
    assert_eq!(
        v,
        json!({"n": 12.0, "s": "HI ADA!", "plain": 3, "list": [6.0, 7]})
    );
    let calls = rec.0.lock().unwrap().clone();
    assert_eq!(calls[0], ("double".to_string(), vec![json!(3)]));
    assert_eq!(calls[1], ("double".to_string(), vec![json!(6.0)]));
    assert_eq!(
        calls[2],
        ("greet".to_string(), vec![json!("ada"), json!("hi")])
    );
    assert_eq!(calls.len(), 4);
    // A failing function names the filter and the expression.
    let bad = parse_string_with("{{ payload.name | double }}", Filters::With(&fns)).unwrap();
    let e = bad.resolve_with(&scope, &rec).await.unwrap_err();
    assert_eq!(e.reason, "filter double: expected a number");
    assert_eq!(e.expr, "payload.name | double");
    // Without functions, a plugin filter is an error, not a silent pass.
    let e = bad.resolve(&scope).unwrap_err();
    assert!(e.reason.contains("not loaded"), "{}", e.reason);
}

#[test]
fn a_template_repeating_a_large_value_is_refused_at_the_byte_limit() {
    // 1,000 copies of a 10 KB string: 10 MB if built, refused at 100 KB.
    let refs: Vec<Value> = (0..1000).map(|_| json!("{{payload.big}}")).collect();
    let t = parse(json!({"copies": refs}));
    let payload = json!({"big": "x".repeat(10_000)});
    let within = |max| Scope {
        payload: Some(&payload),
        max_bytes: Some(max),
        ..Default::default()
    };
    let e = t.resolve(&within(100_000)).unwrap_err();
    assert!(
        e.reason
            .contains("over the limit of 100000 (DWA_MAX_INPUT_BYTES)"),
        "{}",
        e.reason
    );
    let fits = t.resolve(&within(20_000_000)).unwrap();
    assert_eq!(fits["copies"].as_array().map(Vec::len), Some(1000));
}

#[test]
fn interpolation_and_join_count_against_the_byte_limit() {
    let payload = json!({"big": "y".repeat(1000), "list": vec![1; 100]});
    let scope = Scope {
        payload: Some(&payload),
        max_bytes: Some(5_000),
        ..Default::default()
    };
    let t = parse(json!(
        "{{payload.big}}{{payload.big}}{{payload.big}}{{payload.big}}{{payload.big}}{{payload.big}}"
    ));
    assert!(t.resolve(&scope).is_err());
    // A long separator turns a short list into a long string.
    let sep = "z".repeat(100);
    let t = parse(json!(format!("{{{{payload.list | join(\"{sep}\")}}}}")));
    let e = t.resolve(&scope).unwrap_err();
    assert!(e.reason.starts_with("filter join: "), "{}", e.reason);
    let t = parse(json!("{{payload.list | join(\",\")}}"));
    assert_eq!(t.resolve(&scope).unwrap().as_str().map(str::len), Some(199));
}
