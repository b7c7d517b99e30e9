//! `json.pick`: reshapes a value (usually a previous step's output) by
//! picking fields by path and naming them, applied to each element when the
//! value is an array.
//!
//! Input: `from` (any JSON), `fields` (an object `{"out": "a.b[0].c"}` or an
//! array of paths, each then named by its last segment), `strict` (a missing
//! path is an error instead of `null`).

use dwa_transform_sdk::{Map, PluginError, Transform, Value, fail, input};

struct Pick;

enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(p: &str) -> Result<Vec<Seg>, String> {
    let mut out = Vec::new();
    for part in p.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && rest.is_empty() {
            return Err(format!("path {p:?} has an empty segment"));
        }
        if !key.is_empty() {
            out.push(match key.parse::<usize>() {
                Ok(n) => Seg::Index(n),
                Err(_) => Seg::Key(key.to_owned()),
            });
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("path {p:?} has an unclosed '['"))?;
            let n = rest[1..close]
                .parse::<usize>()
                .map_err(|_| format!("path {p:?}: {:?} is not an index", &rest[1..close]))?;
            out.push(Seg::Index(n));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("path {p:?}: expected '.' or '[' after ']'"));
            }
        }
    }
    Ok(out)
}

fn get<'a>(mut v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    for s in path {
        v = match (s, v) {
            (Seg::Key(k), Value::Object(m)) => m.get(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
            (Seg::Index(i), Value::Object(m)) => m.get(&i.to_string())?,
            _ => return None,
        };
    }
    Some(v)
}

fn pick_one(
    v: &Value,
    fields: &[(String, String, Vec<Seg>)],
    strict: bool,
    at: Option<usize>,
) -> Result<Value, String> {
    let mut out = Map::new();
    for (name, raw, path) in fields {
        match get(v, path) {
            Some(found) => {
                out.insert(name.clone(), found.clone());
            }
            None if strict => {
                let where_ = at.map_or(String::new(), |i| format!(" in element {i}"));
                return Err(format!("path {raw:?} not found{where_} (strict)"));
            }
            None => {
                out.insert(name.clone(), Value::Null);
            }
        }
    }
    Ok(Value::Object(out))
}

impl Transform for Pick {
    fn run(task: String, json: String) -> Result<String, PluginError> {
        if task != "json.pick" {
            return Err(fail(format!("this plugin runs json.pick, not {task}")));
        }
        let input = input(&json)?;
        let from = input
            .get("from")
            .ok_or_else(|| fail("`from` is required (the value to reshape)"))?;
        let strict = match input.get("strict") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(fail(format!("`strict` must be a boolean, got {other}"))),
        };
        let raw: Vec<(String, String)> = match input.get("fields") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(p) => Ok((k.clone(), p.clone())),
                    other => Err(fail(format!(
                        "`fields.{k}` must be a path string, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(p) => {
                        let name = p
                            .rsplit(['.', '['])
                            .next()
                            .unwrap_or(p)
                            .trim_end_matches(']');
                        Ok((name.to_owned(), p.clone()))
                    }
                    other => Err(fail(format!(
                        "`fields[{i}]` must be a path string, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(fail(format!(
                    "`fields` must be an object of name → path or an array of paths, got {other}"
                )));
            }
            None => return Err(fail("`fields` is required")),
        };
        if raw.is_empty() {
            return Err(fail("`fields` must name at least one field"));
        }
        let mut fields = Vec::with_capacity(raw.len());
        for (name, p) in raw {
            let path = parse_path(&p).map_err(|e| fail(format!("`fields`: {e}")))?;
            fields.push((name, p, path));
        }
        let out = match from {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| pick_one(v, &fields, strict, Some(i)))
                    .collect::<Result<_, _>>()
                    .map_err(fail)?,
            ),
            v => pick_one(v, &fields, strict, None).map_err(fail)?,
        };
        Ok(out.to_string())
    }
}

dwa_transform_sdk::export_transform!(Pick);
