//! The transforms' own code (the very files the plugins compile), compiled
//! natively, timed on the same inputs and doing the same work as the plugin
//! calls (read the file, transform, answer JSON / write the output), so that
//! `just bench` can report plugin/native ratios.
//!
//! Usage: dwa-bench-native TEXT_FILE JPEG_FILE OUT_DIR ROUNDS
//! Prints one JSON object: best-of-ROUNDS seconds per operation.

#[path = "../../transforms/text/src/chunk.rs"]
#[allow(dead_code)]
mod chunk;
#[path = "../../transforms/image/src/ops.rs"]
#[allow(dead_code)]
mod ops;

use std::time::Instant;

fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    (best, last.expect("at least one round"))
}

fn chunk_json(text_file: &str, by: &str) -> Result<usize, String> {
    let text = std::fs::read_to_string(text_file).map_err(|e| format!("{text_file}: {e}"))?;
    let chunks = match by {
        "chars" => chunk::by_chars(&text, 1000, 100),
        _ => chunk::by_tokens(&text, 512, 64, "cl100k_base")?,
    };
    let list: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v =
                serde_json::json!({"index": i, "text": c.text, "start": c.start, "end": c.end});
            if let Some(t) = c.tokens {
                v["tokens"] = serde_json::json!(t);
            }
            v
        })
        .collect();
    let n = list.len();
    let out = serde_json::json!({"count": n, "by": by, "chunks": list}).to_string();
    Ok(out.len().min(n))
}

fn resize(jpeg_file: &str, out_dir: &str) -> Result<usize, String> {
    let bytes = std::fs::read(jpeg_file).map_err(|e| e.to_string())?;
    let (img, source) = ops::decode_for_resize(&bytes, 800, 600, ops::Fit::Contain)?;
    let small = ops::resize(
        &img,
        source,
        800,
        600,
        ops::Fit::Contain,
        ops::filter("catmullrom")?,
    );
    let out = ops::encode(&small, image::ImageFormat::Jpeg, 85)?;
    std::fs::write(format!("{out_dir}/native.jpg"), &out).map_err(|e| e.to_string())?;
    Ok(out.len())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, text_file, jpeg_file, out_dir, rounds] = &args[..] else {
        return Err("usage: dwa-bench-native TEXT_FILE JPEG_FILE OUT_DIR ROUNDS".into());
    };
    let rounds: usize = rounds.parse().map_err(|e| format!("ROUNDS: {e}"))?;
    let (chars_s, n) = best(rounds, || chunk_json(text_file, "chars"));
    let n = n?;
    let (tokens_s, m) = best(rounds, || chunk_json(text_file, "tokens"));
    let m = m?;
    let (resize_s, bytes) = best(rounds, || resize(jpeg_file, out_dir));
    let bytes = bytes?;
    println!(
        "{{\"chunk_chars_s\": {chars_s}, \"chunks\": {n}, \"chunk_tokens_s\": {tokens_s}, \"token_chunks\": {m}, \"resize_s\": {resize_s}, \"resize_bytes\": {bytes}}}"
    );
    Ok(())
}
