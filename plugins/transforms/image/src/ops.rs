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

/// Decodes an image that is about to be resized into a `width`×`height`
/// box: a JPEG whose result is at most half its size is decoded at 1/2,
/// 1/4 or 1/8 scale (IDCT scaling, as libjpeg's), never smaller than the
/// resize needs; anything else as [`decode`] does. Answers the image and
/// the source's own dimensions, which the resize's arithmetic must use.
pub fn decode_for_resize(
    bytes: &[u8],
    width: u32,
    height: u32,
    fit: Fit,
) -> Result<(DynamicImage, (u32, u32)), String> {
    if let Some(found) = jpeg_reduced(bytes, width, height, fit) {
        return Ok(found);
    }
    let img = decode(bytes)?;
    let dims = (img.width(), img.height());
    Ok((img, dims))
}

/// The size a resize of a `w`×`h` image into the box makes before any
/// crop: what a decode must at least produce.
fn resized_size(w: u32, h: u32, width: u32, height: u32, fit: Fit) -> (u32, u32) {
    match fit {
        Fit::Contain => resize_dimensions(w, h, width, height, false),
        Fit::Cover => resize_dimensions(w, h, width, height, true),
        Fit::Fill => (width, height),
    }
}

/// A JPEG decoded at the smallest IDCT scale that still covers the
/// resize's size; None when no reduction applies (or anything about the
/// reduced decode fails: [`decode`] then reports the file's trouble).
fn jpeg_reduced(
    bytes: &[u8],
    width: u32,
    height: u32,
    fit: Fit,
) -> Option<(DynamicImage, (u32, u32))> {
    use jpeg_decoder::PixelFormat;
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let (w0, h0) = (u32::from(info.width), u32::from(info.height));
    let (need_w, need_h) = resized_size(w0, h0, width, height, fit);
    // Eighths of the full size: 1/8, 1/4, 1/2.
    let scaled = |len: u32, eighths: u32| (len * eighths).div_ceil(8);
    let eighths = [1u32, 2, 4]
        .into_iter()
        .find(|&e| scaled(w0, e) >= need_w && scaled(h0, e) >= need_h)?;
    let want = (scaled(w0, eighths), scaled(h0, eighths));
    let (w, h) = decoder
        .scale(u16::try_from(want.0).ok()?, u16::try_from(want.1).ok()?)
        .ok()?;
    let (w, h) = (u32::from(w), u32::from(h));
    if w < need_w || h < need_h {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    let img = match info.pixel_format {
        PixelFormat::L8 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, pixels)?),
        PixelFormat::RGB24 => DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, pixels)?),
        PixelFormat::L16 | PixelFormat::CMYK32 => return None,
    };
    Some((img, (w0, h0)))
}

/// image's own arithmetic (`DynamicImage::resize`, `resize_to_fill`): the
/// size of a `w`×`h` image scaled to fit (or, with `fill`, to cover) the box.
fn resize_dimensions(w: u32, h: u32, width: u32, height: u32, fill: bool) -> (u32, u32) {
    let (wratio, hratio) = (
        f64::from(width) / f64::from(w),
        f64::from(height) / f64::from(h),
    );
    let ratio = if fill {
        wratio.max(hratio)
    } else {
        wratio.min(hratio)
    };
    let side =
        |len: u32| ((f64::from(len) * ratio).round() as u64).clamp(1, u64::from(u32::MAX)) as u32;
    (side(w), side(h))
}

/// Resizes into a `width`×`height` box an image decoded from a source of
/// `source` dimensions (by [`decode_for_resize`], maybe at a reduced
/// scale): the result's size is the one the source's own size gives.
pub fn resize(
    img: &DynamicImage,
    source: (u32, u32),
    width: u32,
    height: u32,
    fit: Fit,
    f: FilterType,
) -> DynamicImage {
    let (w2, h2) = resized_size(source.0, source.1, width, height, fit);
    if (w2, h2) == (img.width(), img.height()) && fit != Fit::Cover {
        return img.clone();
    }
    let resized = img.resize_exact(w2, h2, f);
    if fit != Fit::Cover {
        return resized;
    }
    // As image's resize_to_fill: crop the overflow, centred.
    let (iw, ih) = (resized.width(), resized.height());
    if u64::from(width) * u64::from(ih) > u64::from(iw) * u64::from(height) {
        resized.crop_imm(0, (ih - height) / 2, width, height)
    } else {
        resized.crop_imm((iw - width) / 2, 0, width, height)
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

// Run natively through dwa-bench-native, which compiles this file as is
// (`just test`: cargo test --manifest-path plugins/Cargo.toml -p dwa-bench-native).
#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
        });
        encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg, 90).unwrap()
    }

    #[test]
    fn a_jpeg_shrunk_enough_is_decoded_at_the_smallest_scale_that_covers_the_result() {
        let bytes = jpeg(1280, 960);
        // 100 wide (→ 100×75): 1/8 (160×120) still covers it.
        let (img, source) = decode_for_resize(&bytes, 100, u32::MAX, Fit::Contain).unwrap();
        assert_eq!((img.width(), img.height(), source), (160, 120, (1280, 960)));
        // 400×300 needs 1/2 (640×480): 1/4 (320×240) would be too small.
        let (img, _) = decode_for_resize(&bytes, 400, 300, Fit::Contain).unwrap();
        assert_eq!((img.width(), img.height()), (640, 480));
        // Cover needs the box's larger side: 200×50 covers at 200×150 → 1/4.
        let (img, _) = decode_for_resize(&bytes, 200, 50, Fit::Cover).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
        // More than half the size: decoded whole.
        let (img, _) = decode_for_resize(&bytes, 700, 700, Fit::Contain).unwrap();
        assert_eq!((img.width(), img.height()), (1280, 960));
        let (img, _) = decode_for_resize(&bytes, 640, 481, Fit::Fill).unwrap();
        assert_eq!((img.width(), img.height()), (1280, 960));
    }

    #[test]
    fn resizing_a_full_decode_gives_what_the_image_crate_gives() {
        let bytes = jpeg(333, 217);
        let img = decode(&bytes).unwrap();
        let dims = (img.width(), img.height());
        let f = FilterType::CatmullRom;
        for (w, h) in [(100, 100), (50, 200), (333, 217), (1000, 40), (7, 3)] {
            let cases = [
                (Fit::Contain, img.resize(w, h, f)),
                (Fit::Cover, img.resize_to_fill(w, h, f)),
                (Fit::Fill, img.resize_exact(w, h, f)),
            ];
            for (fit, want) in cases {
                let got = resize(&img, dims, w, h, fit, f);
                assert_eq!(
                    (got.width(), got.height()),
                    (want.width(), want.height()),
                    "{fit:?} {w}×{h}"
                );
                assert!(
                    got.as_bytes() == want.as_bytes(),
                    "{fit:?} {w}×{h}: pixels differ"
                );
            }
        }
    }

    #[test]
    fn a_reduced_decode_resizes_to_the_size_the_source_gives() {
        // 1200×901 at a quarter is 300×226 (rounded up), whose own aspect
        // would give 300×226; the source's gives 300×225.
        let bytes = jpeg(1200, 901);
        let (img, source) = decode_for_resize(&bytes, 300, u32::MAX, Fit::Contain).unwrap();
        assert_eq!((img.width(), img.height(), source), (300, 226, (1200, 901)));
        let want = decode(&bytes)
            .unwrap()
            .resize(300, u32::MAX, FilterType::Triangle);
        let got = resize(
            &img,
            source,
            300,
            u32::MAX,
            Fit::Contain,
            FilterType::Triangle,
        );
        assert_eq!((got.width(), got.height()), (want.width(), want.height()));
        assert_eq!(want.height(), 225);
    }
}
