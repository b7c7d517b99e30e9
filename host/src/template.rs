//! `{{ ... }}` templates: parsed once at submission into a [`Template`] tree,
//! then resolved against a [`Scope`] each time a step or effect runs.
//!
//! A template that is the whole string keeps the JSON type of its value
//! (`"{{index}}"` gives a number); inside a longer string it is stringified.

use std::collections::{BTreeMap, HashMap};
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
    /// Where the string sits in the value parsed (`.a[0]`; empty at the top).
    pub at: String,
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
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// Where the path starts.
    pub root: Root,
    /// The path below the root.
    pub path: Vec<Seg>,
    /// Filters applied in order (`| upper | truncate(20)`).
    pub filters: Vec<Filter>,
    /// The expression as written, for error messages.
    pub source: String,
}

/// A filter call inside a template: `name` or `name(arg, ...)` with JSON literal args.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The filter's name.
    pub name: String,
    /// Its arguments.
    pub args: Vec<Value>,
}

/// The filters built into the host, with their (least, most) argument counts.
pub const BUILTIN_FILTERS: [(&str, usize, usize); 9] = [
    ("default", 1, 1),
    ("json", 0, 0),
    ("length", 0, 0),
    ("join", 0, 1),
    ("lower", 0, 0),
    ("upper", 0, 0),
    ("truncate", 1, 1),
    ("first", 0, 0),
    ("last", 0, 0),
];

fn is_builtin(name: &str) -> bool {
    BUILTIN_FILTERS.iter().any(|(n, _, _)| *n == name)
}

/// The filters a template may use besides the builtins.
#[derive(Debug, Clone, Copy)]
pub enum Filters<'a> {
    /// Builtins only.
    Builtin,
    /// Builtins and these plugin functions, with their (fewest, most) arguments.
    With(&'a BTreeMap<String, (usize, usize)>),
    /// Any name (checked when it runs): for tasks read back from the store.
    Any,
}

impl Filters<'_> {
    fn arity(&self, name: &str) -> Option<(usize, usize)> {
        if let Some((_, least, most)) = BUILTIN_FILTERS.iter().find(|(n, _, _)| *n == name) {
            return Some((*least, *most));
        }
        match self {
            Filters::Builtin => None,
            Filters::With(m) => m.get(name).copied(),
            Filters::Any => Some((0, usize::MAX)),
        }
    }

    fn known(&self) -> String {
        let mut names: Vec<&str> = BUILTIN_FILTERS.iter().map(|(n, _, _)| *n).collect();
        if let Filters::With(m) = self {
            names.extend(m.keys().map(String::as_str));
        }
        names.join(", ")
    }
}

/// Runs filters that plugins provide (template functions).
#[async_trait::async_trait]
pub trait Functions: Send + Sync {
    /// Applies function `name` to `value` with `args`.
    async fn call(&self, name: &str, value: &Value, args: &[Value]) -> Result<Value, String>;
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
    /// Parses every string inside `value`, with the builtin filters only.
    pub fn parse(value: &Value) -> Result<Template, ParseError> {
        Template::parse_with(value, Filters::Builtin)
    }

    /// Parses every string inside `value`; filters must be builtins or in `filters`.
    pub fn parse_with(value: &Value, filters: Filters<'_>) -> Result<Template, ParseError> {
        Ok(match value {
            Value::String(s) => parse_string_with(s, filters)?,
            Value::Array(items) => {
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        Template::parse_with(v, filters).map_err(|mut e| {
                            e.at = format!("[{i}]{}", e.at);
                            e
                        })
                    })
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
                    let t = Template::parse_with(v, filters).map_err(|mut e| {
                        e.at = format!(".{k}{}", e.at);
                        e
                    })?;
                    parsed.push((k.clone(), t));
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

    /// Whether an expression uses a filter that a plugin provides.
    pub fn uses_functions(&self) -> bool {
        let mut found = false;
        self.exprs(&mut |e| found |= e.filters.iter().any(|f| !is_builtin(&f.name)));
        found
    }

    /// Produces the JSON value for `scope` (builtin filters only: a plugin
    /// filter is an error here; use [`Template::resolve_with`]).
    pub fn resolve(&self, scope: &Scope<'_>) -> Result<Value, ResolveError> {
        self.assemble(&mut |e| e.resolve(scope))
    }

    /// Produces the JSON value for `scope`, calling plugin filters through `functions`.
    pub async fn resolve_with(
        &self,
        scope: &Scope<'_>,
        functions: &dyn Functions,
    ) -> Result<Value, ResolveError> {
        if !self.uses_functions() {
            return self.resolve(scope);
        }
        // Expressions are resolved first, in the order `assemble` visits
        // them, so that the tree walk itself stays synchronous.
        let mut exprs = Vec::new();
        self.exprs(&mut |e| exprs.push(e.clone()));
        let mut values = Vec::with_capacity(exprs.len());
        for e in &exprs {
            values.push(e.resolve_with(scope, Some(functions)).await?);
        }
        let mut values = values.into_iter();
        self.assemble(&mut |e| {
            values.next().ok_or_else(|| ResolveError {
                expr: e.source.clone(),
                reason: "internal: expression count changed".into(),
            })
        })
    }

    fn assemble(
        &self,
        value_of: &mut dyn FnMut(&Expr) -> Result<Value, ResolveError>,
    ) -> Result<Value, ResolveError> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Whole(e) => value_of(e)?,
            Template::Interp(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Lit(s) => out.push_str(s),
                        Part::Expr(e) => stringify_into(&mut out, &value_of(e)?),
                    }
                }
                Value::String(out)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.assemble(value_of))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.assemble(value_of)?);
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
    /// Looks the expression up in `scope` and applies its (builtin) filters.
    pub fn resolve(&self, scope: &Scope<'_>) -> Result<Value, ResolveError> {
        let found = self.resolve_path(scope);
        if self.filters.is_empty() {
            return found;
        }
        let mut v = self.start_filters(found)?;
        for f in &self.filters {
            v = apply_filter(f, v).map_err(|reason| ResolveError {
                expr: self.source.clone(),
                reason,
            })?;
        }
        Ok(v)
    }

    /// Like [`Expr::resolve`], with plugin filters run through `functions`.
    pub async fn resolve_with(
        &self,
        scope: &Scope<'_>,
        functions: Option<&dyn Functions>,
    ) -> Result<Value, ResolveError> {
        let found = self.resolve_path(scope);
        if self.filters.is_empty() {
            return found;
        }
        let mut v = self.start_filters(found)?;
        for f in &self.filters {
            let out = match functions {
                Some(fns) if !is_builtin(&f.name) => fns
                    .call(&f.name, &v, &f.args)
                    .await
                    .map_err(|e| format!("filter {}: {e}", f.name)),
                _ => apply_filter(f, v),
            };
            v = out.map_err(|reason| ResolveError {
                expr: self.source.clone(),
                reason,
            })?;
        }
        Ok(v)
    }

    fn start_filters(&self, found: Result<Value, ResolveError>) -> Result<Value, ResolveError> {
        // A leading `default(x)` also covers a path that is missing.
        match (found, self.filters.first()) {
            (Err(_), Some(f)) if f.name == "default" => {
                Ok(f.args.first().cloned().unwrap_or(Value::Null))
            }
            (r, _) => r,
        }
    }

    fn resolve_path(&self, scope: &Scope<'_>) -> Result<Value, ResolveError> {
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

fn apply_filter(f: &Filter, v: Value) -> Result<Value, String> {
    let wrong =
        |want: &str, v: &Value| format!("filter {}: expected {want}, got {}", f.name, type_name(v));
    Ok(match f.name.as_str() {
        "default" => match v {
            Value::Null => f.args.first().cloned().unwrap_or(Value::Null),
            other => other,
        },
        "json" => Value::String(v.to_string()),
        "length" => match &v {
            Value::Array(a) => Value::from(a.len()),
            Value::Object(o) => Value::from(o.len()),
            Value::String(s) => Value::from(s.chars().count()),
            other => return Err(wrong("an array, object or string", other)),
        },
        "join" => {
            let sep = f.args.first().and_then(Value::as_str).unwrap_or(",");
            match &v {
                Value::Array(a) => {
                    let mut out = String::new();
                    for (i, x) in a.iter().enumerate() {
                        if i > 0 {
                            out.push_str(sep);
                        }
                        stringify_into(&mut out, x);
                    }
                    Value::String(out)
                }
                other => return Err(wrong("an array", other)),
            }
        }
        "lower" | "upper" => match &v {
            Value::String(s) if f.name == "lower" => Value::String(s.to_lowercase()),
            Value::String(s) => Value::String(s.to_uppercase()),
            other => return Err(wrong("a string", other)),
        },
        "truncate" => {
            let n = f.args.first().and_then(Value::as_u64).unwrap_or(0) as usize;
            match &v {
                Value::String(s) => Value::String(s.chars().take(n).collect()),
                Value::Array(a) => Value::Array(a.iter().take(n).cloned().collect()),
                other => return Err(wrong("a string or array", other)),
            }
        }
        "first" | "last" => {
            let pick = |a: &Vec<Value>| {
                if f.name == "first" {
                    a.first()
                } else {
                    a.last()
                }
                .cloned()
                .unwrap_or(Value::Null)
            };
            match &v {
                Value::Array(a) => pick(a),
                Value::String(s) => {
                    let c = if f.name == "first" {
                        s.chars().next()
                    } else {
                        s.chars().last()
                    };
                    c.map_or(Value::Null, |c| Value::String(c.to_string()))
                }
                other => return Err(wrong("an array or string", other)),
            }
        }
        other => return Err(format!("filter {other:?} is not loaded on this host")),
    })
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

/// Parses one string with the builtin filters; `Template::Literal` when it holds no `{{`.
pub fn parse_string(s: &str) -> Result<Template, ParseError> {
    parse_string_with(s, Filters::Builtin)
}

/// Parses one string; filters must be builtins or in `filters`.
pub fn parse_string_with(s: &str, filters: Filters<'_>) -> Result<Template, ParseError> {
    if !s.contains("{{") {
        if let Some(pos) = s.find("}}") {
            return Err(ParseError {
                message: "unmatched '}}'".into(),
                position: s[..pos].chars().count(),
                text: s.into(),
                at: String::new(),
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
        at: String::new(),
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
        let expr = parse_expr(inner, filters).map_err(|(m, p)| err(m, offset + inner_start + p))?;
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
fn parse_expr(inner: &str, known: Filters<'_>) -> Result<Expr, (String, usize)> {
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
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'|' {
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
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    let mut filters = Vec::new();
    while i < bytes.len() && bytes[i] == b'|' {
        i += 1;
        skip_ws(&mut i);
        let name_at = i;
        let name = ident(&mut i)?;
        skip_ws(&mut i);
        let mut args = Vec::new();
        if i < bytes.len() && bytes[i] == b'(' {
            let open = i;
            let close = matching_paren(bytes, open)
                .ok_or_else(|| ("unclosed '(' in filter arguments".to_string(), open))?;
            let text = &inner[open + 1..close];
            if !text.trim().is_empty() {
                let parsed: Value = serde_json::from_str(&format!("[{text}]")).map_err(|_| {
                    (
                        format!("filter {name} has arguments that are not JSON literals"),
                        open + 1,
                    )
                })?;
                if let Value::Array(a) = parsed {
                    args = a;
                }
            }
            i = close + 1;
            skip_ws(&mut i);
        }
        match known.arity(&name) {
            None => {
                return Err((
                    format!("unknown filter {name:?}; known filters: {}", known.known()),
                    name_at,
                ));
            }
            Some((least, most)) if args.len() < least || args.len() > most => {
                let want = if least == most {
                    format!("{least}")
                } else {
                    format!("{least} to {most}")
                };
                return Err((
                    format!("filter {name} takes {want} argument(s), got {}", args.len()),
                    name_at,
                ));
            }
            _ => {}
        }
        if name == "truncate" && !args.first().is_some_and(Value::is_u64) {
            return Err(("filter truncate takes a whole number".into(), name_at));
        }
        if name == "join" && args.first().is_some_and(|a| !a.is_string()) {
            return Err(("filter join takes a string separator".into(), name_at));
        }
        filters.push(Filter { name, args });
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
    let source = if filters.is_empty() {
        inner[root_start..end].to_owned()
    } else {
        inner.trim().to_owned()
    };
    Ok(Expr {
        root,
        path,
        filters,
        source,
    })
}

/// The index of the `)` closing the `(` at `open`, skipping JSON strings.
fn matching_paren(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut i = open;
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_str = false;
            }
        } else if b == b'"' {
            in_str = true;
        } else if b == b'(' {
            depth += 1;
        } else if b == b')' {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
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
}
