//! The data of a task's event, kept as the JSON text it was read from
//! until something looks into it.
//!
//! Every host hears every event of a shared store (docs/architecture.md,
//! "The life of a task", 9), and most are only passed on or written out
//! again (an SSE stream, a replay): building each one's data as a
//! [`Value`] tree was most of a Redis host's event parsing in a DAG run
//! (docs/benchmarks.md). Reading it (`data["status"]`,
//! [`EventData::get`]) parses it once.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// An event's data: its JSON text, parsed on first read.
#[derive(Clone)]
pub struct EventData(Arc<Inner>);

struct Inner {
    raw: Option<Box<RawValue>>,
    value: OnceLock<Value>,
}

impl EventData {
    /// The data as a JSON value (parsed on the first call).
    pub fn value(&self) -> &Value {
        self.0.value.get_or_init(|| match &self.0.raw {
            // Text that serde_json took as a value is one: what can fail
            // here is its nesting limit (128), and null says "none".
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            None => Value::Null,
        })
    }

    /// The field `key` of an object, as [`Value::get`] answers it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value().get(key)
    }
}

impl From<Value> for EventData {
    fn from(v: Value) -> Self {
        EventData(Arc::new(Inner {
            raw: None,
            value: OnceLock::from(v),
        }))
    }
}

impl std::ops::Index<&str> for EventData {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.value()[key]
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Value> for EventData {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.value(), f)
    }
}

/// The data as JSON text: the text it came as, without parsing it.
impl fmt::Display for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.raw {
            Some(raw) => f.write_str(raw.get()),
            None => fmt::Display::fmt(self.value(), f),
        }
    }
}

impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.raw {
            Some(raw) => raw.serialize(s),
            None => self.value().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(EventData(Arc::new(Inner {
            raw: Some(raw),
            value: OnceLock::new(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize, Deserialize)]
    struct Event {
        kind: String,
        data: EventData,
    }

    #[test]
    fn data_read_from_text_is_written_back_as_that_text_and_reads_as_its_value() {
        let text =
            r#"{"kind":"step:complete","data":{"result":{"b":1,"a":[1,2]},"progress":12.5}}"#;
        let e: Event = serde_json::from_str(text).unwrap();
        // Written before anything parsed it: the same text, key order kept.
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
        assert_eq!(e.data["progress"], json!(12.5));
        assert_eq!(e.data.get("result"), Some(&json!({"b": 1, "a": [1, 2]})));
        assert_eq!(e.data["missing"], Value::Null);
        assert_eq!(
            e.data.to_string(),
            r#"{"result":{"b":1,"a":[1,2]},"progress":12.5}"#
        );
    }

    #[test]
    fn data_made_from_a_value_compares_and_writes_as_that_value() {
        let d = EventData::from(json!({"status": "completed"}));
        let read: EventData = serde_json::from_str(r#"{"status":"completed"}"#).unwrap();
        assert_eq!(d, read);
        assert_eq!(d, json!({"status": "completed"}));
        assert_eq!(d.to_string(), r#"{"status":"completed"}"#);
        assert_ne!(d, EventData::from(json!({"status": "failed"})));
    }

    #[test]
    fn data_nested_past_the_parser_limit_passes_as_text_and_reads_as_null() {
        // Taken as text without recursing; a parse of it would pass
        // serde_json's nesting limit (128), so reading it finds nothing.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let d: EventData = serde_json::from_str(&deep).unwrap();
        assert_eq!(d.value(), &Value::Null);
        assert_eq!(d.to_string().len(), 200_000);
    }
}
