//! Colour management: an RGB image with an embedded ICC profile (Display P3, Adobe RGB,
//! ProPhoto, a camera's own) is converted to sRGB right after decoding, so every step works
//! on, and every output holds, the colours a browser shows for untagged images; the profile
//! is then dropped (as imgproxy does). `keep-icc` skips the conversion and keeps the
//! profile on outputs it fits. The transform is moxcms' (pure Rust, already linked by the
//! `image` crate), relative colorimetric, 8 bits per channel.
//!
//! A profile that does not parse, is not RGB, or already describes sRGB (its transform maps a
//! grid of test colours onto themselves within one level) leaves the pixels as they are.
//!
//! CMYK JPEGs (print files) are decoded to their ink values and converted through their
//! CMYK profile ([`cmyk_to_srgb`]), or, when they carry none (or one that is not a usable
//! CMYK profile), through pixq's own model of a coated-paper press ([`press`]), as libvips
//! falls back to its built-in CMYK profile. The inks are read as stored inverted, the way
//! Adobe's software writes them (APP14 "Adobe" marker or not, as libvips and Pillow read them).

pub mod press;

/// Relative colorimetric: what libvips' `icc_transform` does by default.
fn options() -> TransformOptions {
    TransformOptions { rendering_intent: RenderingIntent::RelativeColorimetric, ..TransformOptions::default() }
}

use std::sync::{Arc, OnceLock};

use moxcms::{ColorProfile, DataColorSpace, Layout, RenderingIntent, Transform8BitExecutor, TransformOptions};

use crate::{Channels, Error, Raster, Stop};

/// Largest profile converted (larger ones are left alone): LUT profiles of a few hundred KB
/// exist; the kernel's ICC limit is the same.
const MAX_PROFILE: usize = crate::meta::MAX_ICC;

/// Converts `img` from the colour space `icc` describes to sRGB, in place. Returns whether
/// it converted anything.
pub fn to_srgb(img: &mut Raster, icc: &[u8], stop: &Stop) -> Result<bool, Error> {
    let layout = match img.channels() {
        Channels::Rgb => Layout::Rgb,
        Channels::Rgba => Layout::Rgba,
        // Grey images stay grey (a grey profile's tone curve is close to sRGB's).
        Channels::Gray | Channels::GrayAlpha => return Ok(false),
    };
    if icc.len() > MAX_PROFILE {
        return Ok(false);
    }
    let Ok(profile) = ColorProfile::new_from_slice(icc) else { return Ok(false) };
    if profile.color_space != DataColorSpace::Rgb {
        return Ok(false);
    }
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) = profile.create_transform_8bit(layout, &srgb, layout, options()) else {
        return Ok(false);
    };
    if is_identity(&*transform, layout) {
        return Ok(false);
    }
    let stride = img.stride();
    let mut out = vec![0u8; stride];
    for (y, row) in img.data_mut().chunks_exact_mut(stride).enumerate() {
        stop.check_row(y)?;
        transform.transform(row, &mut out).map_err(|e| Error::Internal(format!("colour transform to sRGB: {e}")))?;
        row.copy_from_slice(&out);
    }
    Ok(true)
}

/// CMYK samples (4 a pixel, `inverted` as Adobe stores them) of a `width x height` image
/// through the CMYK profile `icc` to an sRGB raster; through [`press`]'s profile when `icc` is
/// missing or not a usable CMYK profile.
pub fn cmyk_to_srgb(
    mut cmyk: Vec<u8>,
    width: u32,
    height: u32,
    icc: Option<&[u8]>,
    inverted: bool,
    stop: &Stop,
) -> Result<Raster, Error> {
    let transform = match icc.and_then(cmyk_transform) {
        Some(t) => t,
        None => press_transform()?,
    };
    let w = width as usize;
    let mut out = Raster::new(width, height, Channels::Rgb);
    for (y, (src, dst)) in cmyk.chunks_exact_mut(w * 4).zip(out.data_mut().chunks_exact_mut(w * 3)).enumerate() {
        stop.check_row(y)?;
        if inverted {
            src.iter_mut().for_each(|v| *v = 255 - *v);
        }
        transform.transform(src, dst).map_err(|e| Error::Internal(format!("colour transform from CMYK: {e}")))?;
    }
    Ok(out)
}

/// The transform from a CMYK profile's inks to sRGB; `None` when `icc` is not one.
fn cmyk_transform(icc: &[u8]) -> Option<Arc<Transform8BitExecutor>> {
    if icc.len() > MAX_PROFILE {
        return None;
    }
    let profile = ColorProfile::new_from_slice(icc).ok()?;
    if profile.color_space != DataColorSpace::Cmyk {
        return None;
    }
    profile.create_transform_8bit(Layout::Rgba, &ColorProfile::new_srgb(), Layout::Rgb, options()).ok()
}

/// The built-in press profile's transform, made once per process.
fn press_transform() -> Result<Arc<Transform8BitExecutor>, Error> {
    static T: OnceLock<Option<Arc<Transform8BitExecutor>>> = OnceLock::new();
    T.get_or_init(|| cmyk_transform(press::profile()))
        .clone()
        .ok_or_else(|| Error::Internal("the built-in CMYK profile does not load".into()))
}

/// Whether the transform leaves a grid of colours (every channel at 0, 64, ..., 255) within
/// one level: the profile is sRGB already, under whatever name.
fn is_identity(t: &dyn moxcms::TransformExecutor<u8>, layout: Layout) -> bool {
    let levels = [0u8, 64, 128, 192, 255];
    let n = if layout == Layout::Rgba { 4 } else { 3 };
    let mut src = Vec::with_capacity(levels.len().pow(3) * n);
    for r in levels {
        for g in levels {
            for b in levels {
                src.extend_from_slice(&[r, g, b, 255][..n]);
            }
        }
    }
    let mut dst = vec![0u8; src.len()];
    t.transform(&src, &mut dst).is_ok() && src.iter().zip(&dst).all(|(a, b)| a.abs_diff(*b) <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(p: ColorProfile) -> Vec<u8> {
        p.encode().unwrap()
    }

    #[test]
    fn wide_gamut_reds_become_srgb_reds_and_srgb_stays() {
        // Display P3's pure red is outside sRGB: it maps to sRGB red (clipped).
        let mut img = Raster::from_fn(2, 1, Channels::Rgb, |x, _, p| {
            p.copy_from_slice(if x == 0 { &[255, 0, 0] } else { &[128, 128, 128] })
        });
        assert!(to_srgb(&mut img, &profile(ColorProfile::new_display_p3()), &Stop::new()).unwrap());
        let (red, grey) = (img.pixel(0, 0).to_vec(), img.pixel(1, 0).to_vec());
        assert_eq!(red[0], 255, "{red:?}");
        assert!(red[1] < 10 && red[2] < 10, "{red:?}");
        // Neutral greys stay neutral (same white point, the same tone curve as sRGB).
        assert!(grey.iter().all(|v| v.abs_diff(128) <= 1), "{grey:?}");
        // A mid green in Adobe RGB is more saturated than the same numbers in sRGB.
        let mut g = Raster::from_fn(1, 1, Channels::Rgba, |_, _, p| p.copy_from_slice(&[60, 160, 60, 200]));
        assert!(to_srgb(&mut g, &profile(ColorProfile::new_adobe_rgb()), &Stop::new()).unwrap());
        let px = g.pixel(0, 0);
        assert!(px[1] > 160 && px[0] < 60, "{px:?}");
        assert_eq!(px[3], 200, "alpha untouched");
        // sRGB itself, a grey image, and profiles that are not profiles change nothing.
        let before = img.clone();
        assert!(!to_srgb(&mut img, &profile(ColorProfile::new_srgb()), &Stop::new()).unwrap());
        assert!(!to_srgb(&mut img, b"not a profile at all", &Stop::new()).unwrap());
        assert!(!to_srgb(&mut img, &[0u8; 200], &Stop::new()).unwrap());
        assert_eq!(img, before);
        let mut grey_img = Raster::from_fn(1, 1, Channels::Gray, |_, _, p| p[0] = 9);
        assert!(!to_srgb(&mut grey_img, &profile(ColorProfile::new_display_p3()), &Stop::new()).unwrap());
    }
}
