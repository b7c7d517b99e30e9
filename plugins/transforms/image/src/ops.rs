//! Decoding, resizing, cropping and encoding, free of the plugin interface so
//! that the native benchmark compiles the very same code.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat};

/// How a resize fits the asked box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Keep the aspect ratio; the result fits inside the box.
    Contain,
    /// Keep the aspect ratio; fill the box and crop the overflow.
    Cover,
    /// Stretch to exactly the box.
    Fill,
}

impl Fit {
    /// Parses `contain`, `cover` or `fill`.
    pub fn parse(s: &str) -> Result<Fit, String> {
        match s {
            "contain" => Ok(Fit::Contain),
            "cover" => Ok(Fit::Cover),
            "fill" => Ok(Fit::Fill),
            other => Err(format!(
                "`fit` {other:?} is not one of contain, cover, fill"
            )),
        }
    }
}

/// Parses a resampling filter name.
pub fn filter(s: &str) -> Result<FilterType, String> {
    match s {
        "nearest" => Ok(FilterType::Nearest),
        "triangle" => Ok(FilterType::Triangle),
        "catmullrom" => Ok(FilterType::CatmullRom),
        "lanczos3" => Ok(FilterType::Lanczos3),
        other => Err(format!(
            "`filter` {other:?} is not one of nearest, triangle, catmullrom, lanczos3"
        )),
    }
}

/// The format a file name's extension names (png, jpg/jpeg, webp).
pub fn format_of(name: &str) -> Result<ImageFormat, String> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg") | Some("jpeg") => Ok(ImageFormat::Jpeg),
        Some("webp") => Ok(ImageFormat::WebP),
        _ => Err(format!(
            "{name:?}: the extension must be .png, .jpg, .jpeg or .webp"
        )),
    }
}

/// Decodes an image of any supported format (sniffed from its bytes).
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a PNG, JPEG or WebP image".into());
    }
    reader.decode().map_err(|e| e.to_string())
}

/// Resizes into a `width`×`height` box.
pub fn resize(
    img: &DynamicImage,
    width: u32,
    height: u32,
    fit: Fit,
    f: FilterType,
) -> DynamicImage {
    match fit {
        Fit::Contain => img.resize(width, height, f),
        Fit::Cover => img.resize_to_fill(width, height, f),
        Fit::Fill => img.resize_exact(width, height, f),
    }
}

/// Crops a rectangle that must lie inside the image.
pub fn crop(
    img: &DynamicImage,
    x: u32,
    y: u32,
    width: u32,
    height: u32,
) -> Result<DynamicImage, String> {
    let (w, h) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err("`width` and `height` must be at least 1".into());
    }
    if u64::from(x) + u64::from(width) > u64::from(w)
        || u64::from(y) + u64::from(height) > u64::from(h)
    {
        return Err(format!(
            "the rectangle x={x} y={y} width={width} height={height} does not fit in the {w}×{h} image"
        ));
    }
    Ok(img.crop_imm(x, y, width, height))
}

/// Encodes to `format`; `quality` (1-100) applies to JPEG.
pub fn encode(img: &DynamicImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            // JPEG has no alpha channel.
            let rgb = img.to_rgb8();
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            rgb.write_with_encoder(enc).map_err(|e| e.to_string())?;
        }
        ImageFormat::WebP => {
            // The pure-Rust WebP encoder is lossless and takes 8-bit RGB(A).
            let rgba = DynamicImage::ImageRgba8(img.to_rgba8());
            rgba.write_to(&mut out, format).map_err(|e| e.to_string())?;
        }
        _ => img.write_to(&mut out, format).map_err(|e| e.to_string())?,
    }
    Ok(out.into_inner())
}
