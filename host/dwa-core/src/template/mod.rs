//! `{{ ... }}` templates: parsed once at submission into a [`Template`] tree,
//! then resolved against a [`Scope`] each time a step or effect runs.
//!
//! A template that is the whole string keeps the JSON type of its value
//! (`"{{index}}"` gives a number); inside a longer string it is stringified.
//! The parser is in `parse.rs`; resolution and the builtin filters here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

pub mod cond;
mod parse;
#[cfg(test)]
mod tests;

pub use parse::{parse_string, parse_string_with};

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

impl Part {
    /// What to name in an error about this piece.
    fn source(&self) -> &str {
        match self {
            Part::Lit(s) => s,
            Part::Expr(e) => &e.source,
        }
    }
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
    /// The most bytes the resolved value may hold (`DWA_MAX_INPUT_BYTES`);
    /// `None`: no limit. Counted while the value is built, so that a
    /// template repeating a large result thousands of times is refused
    /// before it takes the memory.
    pub max_bytes: Option<usize>,
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
        self.assemble(scope.max_bytes, &mut |e| e.resolve(scope))
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
        self.assemble(scope.max_bytes, &mut |e| {
            values.next().ok_or_else(|| ResolveError {
                expr: e.source.clone(),
                reason: "internal: expression count changed".into(),
            })
        })
    }

    /// Builds the value, expressions in a fixed order, counting its size
    /// against `max_bytes` as it grows (iteratively: [`Budget`]).
    fn assemble(
        &self,
        max_bytes: Option<usize>,
        value_of: &mut dyn FnMut(&Expr) -> Result<Value, ResolveError>,
    ) -> Result<Value, ResolveError> {
        let mut budget = Budget {
            left: max_bytes.unwrap_or(usize::MAX),
            max: max_bytes,
        };
        self.assemble_within(&mut budget, value_of)
    }

    fn assemble_within(
        &self,
        budget: &mut Budget,
        value_of: &mut dyn FnMut(&Expr) -> Result<Value, ResolveError>,
    ) -> Result<Value, ResolveError> {
        // Recursion over the template itself is bounded by the nesting of the
        // request's JSON (serde_json refuses past 128 levels); the values it
        // pulls in are measured iteratively.
        Ok(match self {
            Template::Literal(v) => budget.take(v, "(literal)")?.clone(),
            Template::Whole(e) => {
                let v = value_of(e)?;
                budget.take(&v, &e.source)?;
                v
            }
            Template::Interp(parts) => {
                // Each piece is charged as it will be written out, inside a
                // JSON string (an object's quotes escaped); the value is
                // first checked to fit, so the piece is never built past it.
                let mut out = String::new();
                for p in parts {
                    let (start, source) = (out.len(), p.source());
                    match p {
                        Part::Lit(s) => out.push_str(s),
                        Part::Expr(e) => {
                            let v = value_of(e)?;
                            budget.fits(&v, &e.source)?;
                            stringify_into(&mut out, &v);
                        }
                    }
                    budget.charge_text(&out[start..], source)?;
                }
                Value::String(out)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.assemble_within(budget, value_of))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.assemble_within(budget, value_of)?);
                }
                Value::Object(map)
            }
        })
    }
}

/// The bytes a value being assembled may still take.
struct Budget {
    left: usize,
    max: Option<usize>,
}

impl Budget {
    /// Counts `v` against what is left, or refuses naming the limit.
    fn take<'v>(&mut self, v: &'v Value, source: &str) -> Result<&'v Value, ResolveError> {
        let n = self.fits(v, source)?;
        self.charge(n, source)?;
        Ok(v)
    }

    /// `v`'s size when it fits in what is left (counting stops past it).
    fn fits(&self, v: &Value, source: &str) -> Result<usize, ResolveError> {
        if self.max.is_none() {
            return Ok(0);
        }
        crate::limits::size_within(v, self.left).ok_or_else(|| self.refusal(source))
    }

    /// Takes the bytes `text` will take inside a JSON string.
    fn charge_text(&mut self, text: &str, source: &str) -> Result<(), ResolveError> {
        if self.max.is_none() {
            return Ok(());
        }
        self.charge(crate::limits::quoted_len(text) - 2, source)
    }

    /// Takes `n` bytes from what is left.
    fn charge(&mut self, n: usize, source: &str) -> Result<(), ResolveError> {
        if self.max.is_none() {
            return Ok(());
        }
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| self.refusal(source))?;
        Ok(())
    }

    fn refusal(&self, source: &str) -> ResolveError {
        ResolveError {
            expr: source.to_owned(),
            reason: crate::limits::Exceeded {
                what: "the resolved size in bytes",
                value: None,
                max: self.max.unwrap_or(0),
                var: "DWA_MAX_INPUT_BYTES",
            }
            .to_string(),
        }
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
            v = apply_filter(f, v, scope.max_bytes).map_err(|reason| ResolveError {
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
        self.filtered(self.resolve_path(scope), scope, functions)
            .await
    }

    /// Like [`Expr::resolve_with`], with a missing path read as `null` (for
    /// conditions, which ask about what may be absent).
    pub async fn resolve_lenient(
        &self,
        scope: &Scope<'_>,
        functions: Option<&dyn Functions>,
    ) -> Result<Value, ResolveError> {
        let found = Ok(self.resolve_path(scope).unwrap_or(Value::Null));
        self.filtered(found, scope, functions).await
    }

    /// Applies the filters to what the path found.
    async fn filtered(
        &self,
        found: Result<Value, ResolveError>,
        scope: &Scope<'_>,
        functions: Option<&dyn Functions>,
    ) -> Result<Value, ResolveError> {
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
                _ => apply_filter(f, v, scope.max_bytes),
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

/// Applies a builtin filter; `join`, the one that can make a value larger
/// than its input, stops at `max_bytes`.
fn apply_filter(f: &Filter, v: Value, max_bytes: Option<usize>) -> Result<Value, String> {
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
                        if let Some(max) = max_bytes
                            && out.len() > max
                        {
                            return Err(format!(
                                "filter join: {}",
                                crate::limits::Exceeded {
                                    what: "the joined string's size in bytes",
                                    value: None,
                                    max,
                                    var: "DWA_MAX_INPUT_BYTES",
                                }
                            ));
                        }
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
