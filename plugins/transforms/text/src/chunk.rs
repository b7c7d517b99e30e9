//! The chunking itself, free of the plugin interface so that the native
//! benchmark compiles the very same code.

/// One chunk; `start`/`end` count characters, or tokens when chunked by tokens.
pub struct Chunk {
    /// Its text.
    pub text: String,
    /// Offset of its first character (or token).
    pub start: usize,
    /// Offset just past its last character (or token).
    pub end: usize,
    /// How many tokens it holds (token chunking only).
    pub tokens: Option<usize>,
}

/// Windows of `size` characters, each starting `size - overlap` after the previous one.
pub fn by_chars(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
    // Byte offsets of every character boundary, so that slicing is exact.
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let n = bounds.len() - 1;
    let step = size - overlap;
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + size).min(n);
        out.push(Chunk {
            text: text[bounds[start]..bounds[end]].to_owned(),
            start,
            end,
            tokens: None,
        });
        if end == n {
            break;
        }
        start += step;
    }
    out
}

/// Windows of `size` tokens of an OpenAI encoding (`cl100k_base`, `o200k_base`).
pub fn by_tokens(
    text: &str,
    size: usize,
    overlap: usize,
    encoding: &str,
) -> Result<Vec<Chunk>, String> {
    let bpe = match encoding {
        "cl100k_base" => tiktoken_rs::cl100k_base(),
        "o200k_base" => tiktoken_rs::o200k_base(),
        other => {
            return Err(format!(
                "`encoding` {other:?} is not one of cl100k_base, o200k_base"
            ));
        }
    }
    .map_err(|e| format!("cannot load the {encoding} tokenizer: {e}"))?;
    let tokens = bpe.encode_ordinary(text);
    let n = tokens.len();
    let step = size - overlap;
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + size).min(n);
        let bytes = bpe
            .decode_bytes(&tokens[start..end])
            .map_err(|e| format!("cannot decode tokens {start}..{end}: {e:?}"))?;
        out.push(Chunk {
            // A window may cut a multi-byte character in two; its halves
            // become U+FFFD rather than failing the whole text.
            text: String::from_utf8_lossy(&bytes).into_owned(),
            start,
            end,
            tokens: Some(end - start),
        });
        if end == n {
            break;
        }
        start += step;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_overlap_and_cover() {
        let c = by_chars("abcdefghij", 4, 1);
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["abcd", "defg", "ghij"]);
        let c = by_chars("héllo wörld", 5, 0);
        assert_eq!(c[0].text, "héllo");
        assert_eq!(c[2].text, "d");
        assert!(by_chars("", 3, 0).is_empty());
    }
}
