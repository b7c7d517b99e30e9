//! The line of a task file that a refusal's field path (`steps[1].task`)
//! points at, so that `dwa validate` can say `podcast.yaml:7:` like a
//! compiler (docs/cli.md). JSON is read as YAML's flow style, so one walk
//! serves both.

use saphyr_parser::{Event, Parser};

/// One step of a field path: a key or an index.
#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
    /// Under a key that is not a plain scalar: matches nothing.
    Never,
}

/// Splits `steps[1].input.url` into its keys and indexes; `None` for a path
/// that names no field (`(body)`).
fn segments(path: &str) -> Option<Vec<Seg>> {
    if path.is_empty() || path.starts_with('(') {
        return None;
    }
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            out.push(Seg::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
    }
    Some(out)
}

/// Where the walk is inside a container.
enum Frame {
    Map { key: Option<String>, at_key: bool },
    Seq { next: usize },
}

/// The line (1-based) of the deepest node of `text` on `path`: the field
/// itself, or the nearest enclosing one when the field is missing. `None`
/// when the text does not parse or nothing of the path is in it.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let target = segments(path)?;
    // The path to the innermost open container; each frame says whether it
    // added a segment to it (the root adds none).
    let mut at: Vec<Seg> = Vec::new();
    let mut frames: Vec<(Frame, bool)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let line = span.start.line();
        let opens = matches!(event, Event::SequenceStart(..) | Event::MappingStart(..));
        match event {
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((_, true)) = frames.pop() {
                    at.pop();
                }
                continue;
            }
            Event::DocumentEnd => break,
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::SequenceStart(..)
            | Event::MappingStart(..) => {}
            _ => continue,
        }
        // What this node is within its container: a key (noted, then done
        // unless it is a complex key), or a value under a segment.
        let seg = match frames.last_mut() {
            Some((Frame::Map { key, at_key }, _)) if *at_key => {
                *at_key = false;
                *key = match &event {
                    Event::Scalar(k, ..) => Some(k.to_string()),
                    _ => None,
                };
                if let Some(k) = key.clone() {
                    at.push(Seg::Key(k));
                    note(&at, &target, line, &mut best);
                    at.pop();
                }
                // A complex key's insides match nothing.
                Some(Seg::Never)
            }
            Some((Frame::Map { key, at_key }, _)) => {
                *at_key = true;
                Some(key.take().map_or(Seg::Never, Seg::Key))
            }
            Some((Frame::Seq { next }, _)) => {
                at.push(Seg::Index(*next));
                *next += 1;
                note(&at, &target, line, &mut best);
                at.pop()
            }
            None => None,
        };
        if opens {
            let frame = match event {
                Event::SequenceStart(..) => Frame::Seq { next: 0 },
                _ => Frame::Map {
                    key: None,
                    at_key: true,
                },
            };
            let pushed = seg.is_some();
            at.extend(seg);
            frames.push((frame, pushed));
        }
        if best.is_some_and(|(len, _)| len == target.len()) {
            break;
        }
    }
    best.map(|(_, line)| line)
}

/// Keeps `line` when `at` is a longer prefix of `target` than the best so far.
fn note(at: &[Seg], target: &[Seg], line: usize, best: &mut Option<(usize, usize)>) {
    let prefix = at.len() <= target.len() && at.iter().zip(target).all(|(a, b)| a == b);
    if prefix && best.is_none_or(|(len, _)| at.len() > len) {
        *best = Some((at.len(), line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "type: podcast
payload: {url: 'https://x/a.mp3'}
steps:
  - id: dl
    task: download.file
    input: {url: '{{payload.url}}'}
  - id: tx
    task: nope.x
    input:
      audio_path: '{{steps.dl.path}}'
";

    #[test]
    fn a_yaml_path_is_found_at_its_key() {
        assert_eq!(line_of(YAML, "steps[1].task"), Some(8));
        assert_eq!(line_of(YAML, "steps[1].input.audio_path"), Some(10));
        assert_eq!(line_of(YAML, "steps[0].input.url"), Some(6));
        assert_eq!(line_of(YAML, "payload.url"), Some(2));
        assert_eq!(line_of(YAML, "type"), Some(1));
    }

    #[test]
    fn a_missing_field_points_at_its_nearest_container() {
        // `steps[1].timeout` is absent: the step is what is wrong.
        assert_eq!(line_of(YAML, "steps[1].timeout"), Some(7));
        assert_eq!(line_of(YAML, "steps[5]"), Some(3));
        assert_eq!(line_of(YAML, "(body)"), None);
    }

    #[test]
    fn json_is_located_too() {
        let json = "{\n  \"type\": \"p\",\n  \"steps\": [\n    {\"task\": \"a\"},\n    {\n      \"task\": \"nope.x\"\n    }\n  ]\n}";
        assert_eq!(line_of(json, "steps[1].task"), Some(6));
        assert_eq!(line_of(json, "steps[0].task"), Some(4));
    }

    #[test]
    fn keys_that_look_alike_at_other_depths_do_not_match() {
        let yaml = "payload:\n  task: x\nsteps:\n  - input:\n      task: y\n    task: z\n";
        assert_eq!(line_of(yaml, "steps[0].task"), Some(6));
    }

    #[test]
    fn paths_are_split_into_keys_and_indexes() {
        assert_eq!(
            segments("steps[1].subtask.steps[0].input"),
            Some(vec![
                Seg::Key("steps".into()),
                Seg::Index(1),
                Seg::Key("subtask".into()),
                Seg::Key("steps".into()),
                Seg::Index(0),
                Seg::Key("input".into()),
            ])
        );
        assert_eq!(segments("steps[x]"), None);
    }
}
