//! Conditions: a step's `if` (docs/tasks.md, "Branches"). One `{{ }}`
//! expression of template paths and filters (plugin filters too), literals,
//! comparisons, `in`, `and`, `or`, `not` and parentheses, true or false by
//! JSON truthiness.
//!
//! Hand-written rather than an expression engine such as minijinja or CEL:
//! its operands are this module's own template expressions, whose plugin
//! filters are async wasm calls (those engines call filters synchronously,
//! which would block a runtime thread per call), and the language is small
//! enough to bound completely: at most [`MAX_COND_BYTES`] of source and
//! [`MAX_COND_DEPTH`] levels of nesting, no loops, no operator that makes a
//! value larger than its operands.

use serde_json::Value;

use super::parse::parse_operand;
use super::{Expr, Filters, Functions, ResolveError, Scope};

/// Longest condition, in bytes.
pub const MAX_COND_BYTES: usize = 4096;

/// Deepest nesting of a condition (parentheses and `not`).
pub const MAX_COND_DEPTH: usize = 32;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`: an element of a list, a key of an object, a substring.
    In,
    /// `not in`
    NotIn,
}

/// A node of a parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A literal: `'speech'`, `3`, `true`, `null`, `['a', 'b']`.
    Lit(Value),
    /// A template path with its filters: `steps.classify.label | lower`.
    Path(Expr),
    /// `not x`
    Not(Box<Node>),
    /// `x and y`
    And(Box<Node>, Box<Node>),
    /// `x or y`
    Or(Box<Node>, Box<Node>),
    /// `x == y`, `x in y`, ...
    Cmp(CmpOp, Box<Node>, Box<Node>),
}

/// A parsed `if`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// As written, for messages.
    pub source: String,
    /// Its tree.
    pub root: Node,
}

/// Why a condition could not be parsed; `position` is a byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub position: usize,
}

impl std::fmt::Display for CondError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at position {}", self.message, self.position)
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    filters: Filters<'a>,
}

fn err<T>(message: impl Into<String>, position: usize) -> Result<T, CondError> {
    Err(CondError {
        message: message.into(),
        position,
    })
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Consumes `word` if it comes next as a whole word.
    fn word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let whole = rest.starts_with(word)
            && !rest[word.len()..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if whole {
            self.pos += word.len();
        }
        whole
    }

    fn symbol(&mut self, sym: &str) -> bool {
        self.skip_ws();
        if self.text[self.pos..].starts_with(sym) {
            self.pos += sym.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self, depth: usize) -> Result<Node, CondError> {
        let mut left = self.and(depth)?;
        while self.word("or") {
            left = Node::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Node, CondError> {
        let mut left = self.not(depth)?;
        while self.word("and") {
            left = Node::And(Box::new(left), Box::new(self.not(depth)?));
        }
        Ok(left)
    }

    fn not(&mut self, depth: usize) -> Result<Node, CondError> {
        if depth >= MAX_COND_DEPTH {
            return err(
                format!("nested deeper than {MAX_COND_DEPTH} levels"),
                self.pos,
            );
        }
        if self.word("not") {
            return Ok(Node::Not(Box::new(self.not(depth + 1)?)));
        }
        self.cmp(depth)
    }

    fn cmp(&mut self, depth: usize) -> Result<Node, CondError> {
        let left = self.operand(depth)?;
        let op = if self.symbol("==") {
            CmpOp::Eq
        } else if self.symbol("!=") {
            CmpOp::Ne
        } else if self.symbol("<=") {
            CmpOp::Le
        } else if self.symbol(">=") {
            CmpOp::Ge
        } else if self.symbol("<") {
            CmpOp::Lt
        } else if self.symbol(">") {
            CmpOp::Gt
        } else if self.word("in") {
            CmpOp::In
        } else {
            let at = self.pos;
            if self.word("not") {
                if self.word("in") {
                    CmpOp::NotIn
                } else {
                    return err("expected `in` after `not`", at);
                }
            } else {
                return Ok(left);
            }
        };
        let right = self.operand(depth)?;
        Ok(Node::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn operand(&mut self, depth: usize) -> Result<Node, CondError> {
        self.skip_ws();
        let at = self.pos;
        let rest = &self.text[at..];
        let Some(first) = rest.chars().next() else {
            return err("unexpected end of condition", at);
        };
        if first == '(' {
            self.pos += 1;
            let inner = self.or(depth + 1)?;
            if !self.symbol(")") {
                return err("expected ')'", self.pos);
            }
            return Ok(inner);
        }
        if first == '[' {
            return self.list().map(Node::Lit);
        }
        if first == '\'' || first == '"' || first == '-' || first.is_ascii_digit() {
            return self.scalar().map(Node::Lit);
        }
        for (word, v) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
        ] {
            if self.word(word) {
                return Ok(Node::Lit(v));
            }
        }
        let (expr, used) = parse_operand(rest, self.filters).map_err(|(message, p)| CondError {
            message,
            position: at + p,
        })?;
        self.pos = at + used;
        Ok(Node::Path(expr))
    }

    /// A string (single or double quotes), or a number.
    fn scalar(&mut self) -> Result<Value, CondError> {
        self.skip_ws();
        let at = self.pos;
        let bytes = self.text.as_bytes();
        let Some(&quote) = bytes.get(at) else {
            return err("unexpected end of condition", at);
        };
        if quote == b'\'' || quote == b'"' {
            let mut out = String::new();
            let mut chars = self.text[at + 1..].char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    c if c as u32 == u32::from(quote) => {
                        self.pos = at + 1 + i + 1;
                        return Ok(Value::String(out));
                    }
                    c => out.push(c),
                }
            }
            return err("unclosed string", at);
        }
        let end = self.text[at..]
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
            .map_or(self.text.len(), |n| at + n);
        let n: serde_json::Number = self.text[at..end].parse().map_err(|_| CondError {
            message: format!("{:?} is not a number", &self.text[at..end]),
            position: at,
        })?;
        self.pos = end;
        Ok(Value::Number(n))
    }

    /// `[literal, ...]` (flat: strings, numbers, true, false, null).
    fn list(&mut self) -> Result<Value, CondError> {
        self.pos += 1;
        let mut items = Vec::new();
        if self.symbol("]") {
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let at = self.pos;
            let item = match self.text[at..].chars().next() {
                Some('\'' | '"' | '-' | '0'..='9') => self.scalar()?,
                _ if self.word("true") => Value::Bool(true),
                _ if self.word("false") => Value::Bool(false),
                _ if self.word("null") => Value::Null,
                _ => {
                    return err(
                        "a list holds only strings, numbers, true, false and null",
                        at,
                    );
                }
            };
            items.push(item);
            if self.symbol("]") {
                return Ok(Value::Array(items));
            }
            if !self.symbol(",") {
                return err("expected ',' or ']'", self.pos);
            }
        }
    }
}

impl Condition {
    /// Parses a step's `if`: one `{{ ... }}` and nothing around it.
    pub fn parse(text: &str, filters: Filters<'_>) -> Result<Condition, CondError> {
        if text.len() > MAX_COND_BYTES {
            return err(
                format!("is {} bytes; at most {MAX_COND_BYTES}", text.len()),
                0,
            );
        }
        let trimmed = text.trim();
        let offset = text.len() - text.trim_start().len();
        let Some(inner) = trimmed
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
        else {
            return err(
                "must be one {{ ... }} expression, such as \"{{ steps.classify.label == 'speech' }}\"",
                0,
            );
        };
        if inner.contains("{{") || inner.contains("}}") {
            return err("holds more than one {{ ... }}", offset);
        }
        let mut p = Parser {
            text: inner,
            pos: 0,
            filters,
        };
        let root = p.or(0).map_err(|e| CondError {
            position: e.position + offset + 2,
            ..e
        })?;
        p.skip_ws();
        if p.pos < inner.len() {
            return err(
                format!(
                    "unexpected {:?}",
                    &inner[p.pos..].chars().next().unwrap_or(' ')
                ),
                offset + 2 + p.pos,
            );
        }
        Ok(Condition {
            source: inner.trim().to_owned(),
            root,
        })
    }

    /// Visits every path.
    pub fn exprs<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        let mut stack = vec![&self.root];
        while let Some(n) = stack.pop() {
            match n {
                Node::Lit(_) => {}
                Node::Path(e) => f(e),
                Node::Not(a) => stack.push(a),
                Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
            }
        }
    }

    /// Visits every path, mutably (to bind step references).
    pub fn exprs_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        let mut stack = vec![&mut self.root];
        while let Some(n) = stack.pop() {
            match n {
                Node::Lit(_) => {}
                Node::Path(e) => f(e),
                Node::Not(a) => stack.push(a),
                Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) => {
                    stack.push(a);
                    stack.push(b);
                }
            }
        }
    }

    /// Whether the condition holds in `scope`. Paths are resolved first (a
    /// missing field is `null`: a condition asks about what may be absent),
    /// then the tree is evaluated.
    pub async fn holds(
        &self,
        scope: &Scope<'_>,
        functions: Option<&dyn Functions>,
    ) -> Result<bool, ResolveError> {
        let mut paths = Vec::new();
        self.exprs(&mut |e| paths.push(e));
        let mut values = std::collections::HashMap::with_capacity(paths.len());
        for e in paths {
            let v = e.resolve_lenient(scope, functions).await?;
            values.insert(e as *const Expr as usize, v);
        }
        let fail = |reason: String| ResolveError {
            expr: self.source.clone(),
            reason,
        };
        eval(&self.root, &values).map(|v| truthy(&v)).map_err(fail)
    }
}

/// JSON truthiness: `null`, `false`, `0`, `""`, `[]` and `{}` are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Resolved paths by their node's address (the tree does not move meanwhile).
type Resolved = std::collections::HashMap<usize, Value>;

/// Evaluates a node; recursion is bounded by [`MAX_COND_DEPTH`] levels of
/// nesting and the source length.
fn eval(n: &Node, values: &Resolved) -> Result<Value, String> {
    Ok(match n {
        Node::Lit(v) => v.clone(),
        Node::Path(e) => values
            .get(&(e as *const Expr as usize))
            .cloned()
            .unwrap_or(Value::Null),
        Node::Not(a) => Value::Bool(!truthy(&eval(a, values)?)),
        Node::And(a, b) => Value::Bool(truthy(&eval(a, values)?) && truthy(&eval(b, values)?)),
        Node::Or(a, b) => Value::Bool(truthy(&eval(a, values)?) || truthy(&eval(b, values)?)),
        Node::Cmp(op, a, b) => Value::Bool(compare(*op, &eval(a, values)?, &eval(b, values)?)?),
    })
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let order = || -> Result<Ordering, String> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .zip(y.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y))
                .ok_or_else(|| "numbers that do not compare".to_owned()),
            (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
            _ => Err(format!(
                "cannot order {} and {}",
                super::type_name(a),
                super::type_name(b)
            )),
        }
    };
    Ok(match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        CmpOp::Lt => order()? == Ordering::Less,
        CmpOp::Le => order()? != Ordering::Greater,
        CmpOp::Gt => order()? == Ordering::Greater,
        CmpOp::Ge => order()? != Ordering::Less,
        CmpOp::In => contains(b, a)?,
        CmpOp::NotIn => !contains(b, a)?,
    })
}

/// Equality, with numbers compared by value (`1 == 1.0`).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn contains(haystack: &Value, needle: &Value) -> Result<bool, String> {
    match (haystack, needle) {
        (Value::Array(items), _) => Ok(items.iter().any(|i| equal(i, needle))),
        (Value::Object(m), Value::String(k)) => Ok(m.contains_key(k)),
        (Value::String(s), Value::String(n)) => Ok(s.contains(n.as_str())),
        (Value::Null, _) => Ok(false),
        _ => Err(format!(
            "`in` needs a list, an object (with a string key) or a string (with a string), not {} in {}",
            super::type_name(needle),
            super::type_name(haystack)
        )),
    }
}

#[cfg(test)]
mod tests;
