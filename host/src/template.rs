//! `{{ ... }}` templates: parsed once at submission into a [`Template`] tree,
//! then resolved against a [`Scope`] each time a step or effect runs.
//!
//! A template that is the whole string keeps the JSON type of its value
//! (`"{{index}}"` gives a number); inside a longer string it is stringified.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Why a template string could not be parsed; `position` is a character offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position} in {text:?}")]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Character offset in the string where it went wrong.
    pub position: usize,
    /// The whole string.
    pub text: String,
}

/// Why a parsed template could not be resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {{{{{expr}}}}}: {reason}")]
pub struct ResolveError {
    /// The expression, as written.
    pub expr: String,
    /// What was missing.
    pub reason: String,
}

/// What a template expression starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `payload`: the task's payload.
    Payload,
    /// `steps.<id or index>`: a step's result; `idx` is bound by the planner.
    Step {
        /// As written.
        key: String,
        /// The step's index, once bound.
        idx: Option<usize>,
    },
    /// `item`: the current `forEach` item.
    Item,
    /// `index`: the current `forEach` index.
    Index,
    /// `progress`: the task's progress (onProgress).
    Progress,
    /// `error`: the task's error (onError).
    Error,
    /// `result`: the task's result (onSuccess).
    Result,
}

/// One step down into a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// `.name`, or `.0` on an object.
    Key(String),
    /// `[0]`, or `.0` on an array.
    Index(usize),
}

/// A parsed `{{ ... }}` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// Where the path starts.
    pub root: Root,
    /// The path below the root.
    pub path: Vec<Seg>,
    /// The expression as written, for error messages.
    pub source: String,
}

/// A piece of an interpolated string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// A `{{ }}` expression, stringified.
    Expr(Expr),
}

/// A JSON value with its templates parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// No template inside: used as is.
    Literal(Value),
    /// A string that is one whole expression: keeps the value's type.
    Whole(Expr),
    /// A string mixing text and expressions.
    Interp(Vec<Part>),
    /// An array with templates inside.
    Array(Vec<Template>),
    /// An object with templates inside.
    Object(Vec<(String, Template)>),
}

/// The values a template may refer to.
#[derive(Default)]
pub struct Scope<'a> {
    /// The task's payload.
    pub payload: Option<&'a Value>,
    /// Results of the steps this one may see, by step index.
    pub steps: Option<&'a HashMap<usize, Arc<Value>>>,
    /// The `forEach` item.
    pub item: Option<&'a Value>,
    /// The `forEach` index.
    pub index: Option<usize>,
    /// The task's progress.
    pub progress: Option<f64>,
    /// The task's error.
    pub error: Option<&'a str>,
    /// The task's result.
    pub result: Option<&'a Value>,
}

impl Template {
    /// Parses every string inside `value`.
    pub fn parse(value: &Value) -> Result<Template, ParseError> {
        Ok(match value {
            Value::String(s) => parse_string(s)?,
            Value::Array(items) => {
                let parsed = items
                    .iter()
                    .map(Template::parse)
                    .collect::<Result<Vec<_>, _>>()?;
                if parsed.iter().all(|t| matches!(t, Template::Literal(_))) {
                    Template::Literal(value.clone())
                } else {
                    Template::Array(parsed)
                }
            }
            Value::Object(map) => {
                let mut parsed = Vec::with_capacity(map.len());
                for (k, v) in map {
                    parsed.push((k.clone(), Template::parse(v)?));
                }
                if parsed
                    .iter()
                    .all(|(_, t)| matches!(t, Template::Literal(_)))
                {
                    Template::Literal(value.clone())
                } else {
                    Template::Object(parsed)
                }
            }
            other => Template::Literal(other.clone()),
        })
    }

    /// Calls `f` on every expression, mutably, so the planner can bind step references.
    pub fn exprs_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Template::Literal(_) => {}
            Template::Whole(e) => f(e),
            Template::Interp(parts) => {
                for p in parts {
                    if let Part::Expr(e) = p {
                        f(e)
                    }
                }
            }
            Template::Array(items) => items.iter_mut().for_each(|t| t.exprs_mut(f)),
            Template::Object(fields) => fields.iter_mut().for_each(|(_, t)| t.exprs_mut(f)),
        }
    }

    /// Calls `f` on every expression.
    pub fn exprs(&self, f: &mut dyn FnMut(&Expr)) {
        match self {
            Template::Literal(_) => {}
            Template::Whole(e) => f(e),
            Template::Interp(parts) => {
                for p in parts {
                    if let Part::Expr(e) = p {
                        f(e)
                    }
                }
            }
            Template::Array(items) => items.iter().for_each(|t| t.exprs(f)),
            Template::Object(fields) => fields.iter().for_each(|(_, t)| t.exprs(f)),
        }
    }

    /// Whether the template is a plain value with no expression.
    pub fn is_literal(&self) -> bool {
        matches!(self, Template::Literal(_))
    }

    /// Produces the JSON value for `scope`.
    pub fn resolve(&self, scope: &Scope<'_>) -> Result<Value, ResolveError> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Whole(e) => e.resolve(scope)?,
            Template::Interp(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Lit(s) => out.push_str(s),
                        Part::Expr(e) => stringify_into(&mut out, &e.resolve(scope)?),
                    }
                }
                Value::String(out)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.resolve(scope))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.resolve(scope)?);
                }
                Value::Object(map)
            }
        })
    }
}

fn stringify_into(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

impl Expr {
    /// Looks the expression up in `scope`.
    pub fn resolve(&self, scope: &Scope<'_>) -> Result<Value, ResolveError> {
        let missing = |reason: String| ResolveError {
            expr: self.source.clone(),
            reason,
        };
        let base: Value = match &self.root {
            Root::Payload => scope
                .payload
                .cloned()
                .ok_or_else(|| missing("no payload here".into()))?,
            Root::Step { key, idx } => {
                let found = idx.and_then(|i| scope.steps.and_then(|s| s.get(&i)));
                match found {
                    Some(v) => return self.walk(v).map_err(missing),
                    None => return Err(missing(format!("step {key:?} has no result here"))),
                }
            }
            Root::Item => {
                return match scope.item {
                    Some(v) => self.walk(v).map_err(missing),
                    None => Err(missing("`item` exists only in a forEach step".into())),
                };
            }
            Root::Index => Value::from(
                scope
                    .index
                    .ok_or_else(|| missing("`index` exists only in a forEach step".into()))?,
            ),
            Root::Progress => Value::from(
                scope
                    .progress
                    .ok_or_else(|| missing("`progress` exists only in onProgress".into()))?,
            ),
            Root::Error => Value::from(
                scope
                    .error
                    .ok_or_else(|| missing("`error` exists only in onError".into()))?,
            ),
            Root::Result => {
                return match scope.result {
                    Some(v) => self.walk(v).map_err(missing),
                    None => Err(missing("`result` exists only in onSuccess".into())),
                };
            }
        };
        self.walk(&base).map_err(missing)
    }

    fn walk(&self, mut v: &Value) -> Result<Value, String> {
        for (depth, seg) in self.path.iter().enumerate() {
            let next = match (seg, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k),
                (Seg::Key(k), Value::Array(a)) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
                (Seg::Index(i), Value::Array(a)) => a.get(*i),
                (Seg::Index(i), Value::Object(m)) => m.get(&i.to_string()),
                _ => None,
            };
            v = next.ok_or_else(|| {
                let at = path_string(&self.path[..=depth]);
                format!("{at} not found (in a {})", type_name(v))
            })?;
        }
        Ok(v.clone())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Parses one string; `Template::Literal` when it holds no `{{`.
pub fn parse_string(s: &str) -> Result<Template, ParseError> {
    if !s.contains("{{") {
        if let Some(pos) = s.find("}}") {
            return Err(ParseError {
                message: "unmatched '}}'".into(),
                position: s[..pos].chars().count(),
                text: s.into(),
            });
        }
        return Ok(Template::Literal(Value::String(s.to_owned())));
    }
    let mut parts = Vec::new();
    let mut rest = s;
    let mut offset = 0usize; // byte offset of `rest` in `s`
    let err = |message: String, byte: usize| ParseError {
        message,
        position: s[..byte].chars().count(),
        text: s.to_owned(),
    };
    while let Some(open) = rest.find("{{") {
        let lit = &rest[..open];
        if let Some(pos) = lit.find("}}") {
            return Err(err("unmatched '}}'".into(), offset + pos));
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.to_owned()));
        }
        let inner_start = open + 2;
        let Some(close) = rest[inner_start..].find("}}") else {
            return Err(err("unmatched '{{'".into(), offset + open));
        };
        let inner = &rest[inner_start..inner_start + close];
        if let Some(nested) = inner.find("{{") {
            return Err(err(
                "'{{' inside an expression".into(),
                offset + inner_start + nested,
            ));
        }
        let expr = parse_expr(inner).map_err(|(m, p)| err(m, offset + inner_start + p))?;
        parts.push(Part::Expr(expr));
        let consumed = inner_start + close + 2;
        rest = &rest[consumed..];
        offset += consumed;
    }
    if let Some(pos) = rest.find("}}") {
        return Err(err("unmatched '}}'".into(), offset + pos));
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_owned()));
    }
    if parts.len() == 1
        && let Some(Part::Expr(e)) = parts.first()
    {
        return Ok(Template::Whole(e.clone()));
    }
    Ok(Template::Interp(parts))
}

/// Parses the inside of `{{ }}`; errors carry a byte offset into `inner`.
fn parse_expr(inner: &str) -> Result<Expr, (String, usize)> {
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    if i == bytes.len() {
        return Err(("empty expression".into(), 0));
    }
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$';
    let ident = |i: &mut usize| -> Result<String, (String, usize)> {
        let start = *i;
        while *i < bytes.len() && is_ident(bytes[*i]) {
            *i += 1;
        }
        if start == *i {
            let msg = match bytes.get(start) {
                Some(b) => format!("unexpected character {:?}", *b as char),
                None => "unexpected end of expression".into(),
            };
            return Err((msg, start));
        }
        Ok(inner[start..*i].to_owned())
    };
    let root_start = i;
    let root_name = ident(&mut i)?;
    let mut path = Vec::new();
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
        match bytes[i] {
            b'.' => {
                i += 1;
                path.push(Seg::Key(ident(&mut i)?));
            }
            b'[' => {
                let open = i;
                i += 1;
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if start == i || bytes.get(i) != Some(&b']') {
                    return Err(("expected '[<number>]'".into(), open));
                }
                let n = inner[start..i]
                    .parse::<usize>()
                    .map_err(|_| ("index too large".to_string(), start))?;
                i += 1;
                path.push(Seg::Index(n));
            }
            b => return Err((format!("unexpected character {:?}", b as char), i)),
        }
    }
    let end = i;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    if i < bytes.len() {
        return Err((format!("unexpected character {:?}", bytes[i] as char), i));
    }
    let root = match root_name.as_str() {
        "payload" => Root::Payload,
        "item" => Root::Item,
        "index" => Root::Index,
        "progress" => Root::Progress,
        "error" => Root::Error,
        "result" => Root::Result,
        "steps" => {
            if path.is_empty() {
                return Err(("`steps` needs a step id or index: steps.<id>".into(), end));
            }
            let key = match path.remove(0) {
                Seg::Key(k) => k,
                Seg::Index(n) => n.to_string(),
            };
            Root::Step { key, idx: None }
        }
        other => {
            return Err((
                format!(
                    "unknown name {other:?}; expected payload, steps, item, index, progress, error or result"
                ),
                root_start,
            ));
        }
    };
    if matches!(root, Root::Index | Root::Progress | Root::Error) && !path.is_empty() {
        return Err((format!("`{root_name}` has no fields"), root_start));
    }
    Ok(Expr {
        root,
        path,
        source: inner[root_start..end].to_owned(),
    })
}

#[cfg(test)]
mod tests {
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
}
