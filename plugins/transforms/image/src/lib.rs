//! `image.resize` and `image.crop`: read an image of the task's working
//! folder, write the result beside it (PNG, JPEG or WebP, chosen by the
//! output's extension).

use dwa_transform_sdk::{
    Map, PluginError, Transform, Value, fail, input, json, optional_u64, read_file, required_str,
    workdir_path, write_file,
};

mod ops;

struct Images;

fn dims(input: &Map<String, Value>, field: &str) -> Result<Option<u32>, PluginError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=65_535).contains(&n) => Ok(Some(n as u32)),
            _ => Err(fail(format!(
                "`{field}` must be a whole number from 1 to 65535, got {v}"
            ))),
        },
    }
}

fn coord(input: &Map<String, Value>, field: &str) -> Result<u32, PluginError> {
    Ok(optional_u64(input, field, 0, 0..=65_535)? as u32)
}

impl Transform for Images {
    fn run(task: String, json: String) -> Result<String, PluginError> {
        let input = input(&json)?;
        let src = required_str(&input, "path")?;
        let src_path = workdir_path("path", src)?;
        let out_name = match input.get("output") {
            None | Some(Value::Null) => {
                let (stem, ext) = match src.rsplit_once('.') {
                    Some((stem, ext)) if ops::format_of(src).is_ok() => (stem, ext),
                    Some((stem, _)) => (stem, "png"),
                    None => (src, "png"),
                };
                let suffix = if task == "image.crop" {
                    "cropped"
                } else {
                    "resized"
                };
                format!("{stem}.{suffix}.{ext}")
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(fail(format!("`output` must be a string, got {other}"))),
        };
        let out_path = workdir_path("output", &out_name)?;
        let format = ops::format_of(&out_name).map_err(|e| fail(format!("`output` {e}")))?;
        let quality = optional_u64(&input, "quality", 85, 1..=100)? as u8;

        let bytes = read_file("path", &src_path)?;
        let cannot = |e: String| fail(format!("`path` {src}: cannot decode it: {e}"));
        let (out, source) = match task.as_str() {
            "image.resize" => {
                let (w, h) = (dims(&input, "width")?, dims(&input, "height")?);
                let fit = match input.get("fit") {
                    None | Some(Value::Null) => ops::Fit::Contain,
                    Some(Value::String(s)) => ops::Fit::parse(s).map_err(fail)?,
                    Some(other) => {
                        return Err(fail(format!("`fit` must be a string, got {other}")));
                    }
                };
                let filter = match input.get("filter") {
                    None | Some(Value::Null) => ops::filter("catmullrom").map_err(fail)?,
                    Some(Value::String(s)) => ops::filter(s).map_err(fail)?,
                    Some(other) => {
                        return Err(fail(format!("`filter` must be a string, got {other}")));
                    }
                };
                // One side given: the other follows the aspect ratio.
                let (w, h) = match (w, h) {
                    (Some(w), Some(h)) => (w, h),
                    (Some(w), None) => (w, u32::MAX),
                    (None, Some(h)) => (u32::MAX, h),
                    (None, None) => return Err(fail("give `width`, `height` or both")),
                };
                let fit = if (w == u32::MAX || h == u32::MAX) && fit != ops::Fit::Contain {
                    return Err(fail("`fit` cover and fill need both `width` and `height`"));
                } else {
                    fit
                };
                // Decoded no larger than the result needs (a JPEG at 1/2,
                // 1/4 or 1/8 scale), resized by the source's own size.
                let (img, source) = ops::decode_for_resize(&bytes, w, h, fit).map_err(cannot)?;
                (ops::resize(&img, source, w, h, fit, filter), source)
            }
            "image.crop" => {
                let (w, h) = match (dims(&input, "width")?, dims(&input, "height")?) {
                    (Some(w), Some(h)) => (w, h),
                    _ => return Err(fail("`width` and `height` are required")),
                };
                let img = ops::decode(&bytes).map_err(cannot)?;
                let cropped = ops::crop(&img, coord(&input, "x")?, coord(&input, "y")?, w, h)
                    .map_err(fail)?;
                (cropped, (img.width(), img.height()))
            }
            other => {
                return Err(fail(format!(
                    "this plugin runs image.resize and image.crop, not {other}"
                )));
            }
        };
        let encoded = ops::encode(&out, format, quality)
            .map_err(|e| fail(format!("cannot encode {out_name}: {e}")))?;
        write_file("output", &out_path, &encoded)?;
        Ok(json!({
            "path": out_name,
            "width": out.width(),
            "height": out.height(),
            "format": format.extensions_str().first().copied().unwrap_or("png"),
            "bytes": encoded.len(),
            "source": {"path": src, "width": source.0, "height": source.1},
        })
        .to_string())
    }
}

dwa_transform_sdk::export_transform!(Images);
