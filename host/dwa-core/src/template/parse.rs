//! The template parser: a string into literal parts and `{{ expr }}` parts,
//! each expression a root (`payload`, `steps.X`, `item`, ...), a path and a
//! chain of filters checked against the builtins and the plugins' functions.

use serde_json::Value;

use super::{Expr, Filter, Filters, ParseError, Part, Root, Seg, Template};

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
    let (expr, used) = parse_path_and_filters(inner, known, false)?;
    match inner.as_bytes().get(used) {
        Some(b) => Err((format!("unexpected character {:?}", *b as char), used)),
        None => Ok(expr),
    }
}

/// Parses a path and its filters at the start of `text`, up to where they
/// end (an operand of a condition); answers the expression and the bytes used.
pub(super) fn parse_operand(
    text: &str,
    known: Filters<'_>,
) -> Result<(Expr, usize), (String, usize)> {
    parse_path_and_filters(text, known, true)
}

/// The parser of both: in an operand, the path also ends at a character
/// that cannot continue it (an operator, a parenthesis), and what follows
/// the filters is left to the caller.
fn parse_path_and_filters(
    inner: &str,
    known: Filters<'_>,
    operand: bool,
) -> Result<(Expr, usize), (String, usize)> {
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
            b if operand && b != b'.' && b != b'[' => break,
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
    let mut used = end;
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
        used = i;
    }
    if !operand {
        // Trailing blanks belong to the expression; anything else is the caller's to refuse.
        skip_ws(&mut used);
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
        inner[root_start..used].trim().to_owned()
    };
    Ok((
        Expr {
            root,
            path,
            filters,
            source,
        },
        used,
    ))
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
