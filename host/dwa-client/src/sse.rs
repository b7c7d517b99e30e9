//! Server-sent events, read from chunks as they arrive: a block ends at a
//! blank line; its `id`, `event` and `data` fields are kept.

use dwa_core::model::TaskEvent;

/// Longest block kept while waiting for its end: a host's event is far
/// smaller (results are capped), so more is a broken stream.
const MAX_BLOCK: usize = 256 * 1024 * 1024;

/// Gathers chunks into blocks.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    buf: String,
}

/// One event block.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Block {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Reader {
    /// The blocks `chunk` completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Block> {
        self.buf
            .push_str(&String::from_utf8_lossy(chunk).replace("\r\n", "\n"));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            out.push(parse(&block));
        }
        if self.buf.len() > MAX_BLOCK {
            self.buf.clear();
        }
        out
    }
}

fn parse(block: &str) -> Block {
    let mut b = Block::default();
    let mut data = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => b.id = Some(value.to_owned()),
            "event" => b.event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    b.data = data.join("\n");
    b
}

impl Block {
    /// The task event this block carries, unless it is not one (a comment,
    /// a keep-alive) or was seen already (its seq is not past `last`).
    pub fn event(&self, last: Option<u64>) -> Result<Option<TaskEvent>, serde_json::Error> {
        if self.event.is_none() || self.data.is_empty() {
            return Ok(None);
        }
        let event: TaskEvent = serde_json::from_str(&self.data)?;
        Ok(match last {
            Some(seen) if event.seq <= seen => None,
            _ => Some(event),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> String {
        format!(
            "event: step:start\nid: {seq}\ndata: {{\"seq\":{seq},\"type\":\"step:start\",\"taskId\":\"t\",\"stepId\":\"a\",\"stepTask\":\"x\",\"data\":{{}},\"timestamp\":1}}\n\n"
        )
    }

    #[test]
    fn blocks_split_across_chunks_are_read_whole_and_in_order() {
        let mut r = Reader::default();
        let text = format!(": keep-alive\n\n{}{}", event(1), event(2));
        let bytes = text.as_bytes();
        let mut blocks = Vec::new();
        for piece in bytes.chunks(7) {
            blocks.extend(r.push(piece));
        }
        let seqs: Vec<u64> = blocks
            .iter()
            .filter_map(|b| b.event(None).unwrap())
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(blocks[1].id.as_deref(), Some("1"));
    }

    #[test]
    fn an_event_seen_before_a_reconnect_is_not_delivered_again() {
        let mut r = Reader::default();
        let blocks = r.push(format!("{}{}", event(3), event(4)).as_bytes());
        let fresh: Vec<u64> = blocks
            .iter()
            .filter_map(|b| b.event(Some(3)).unwrap())
            .map(|e| e.seq)
            .collect();
        assert_eq!(fresh, [4]);
    }
}
