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

/// Tags a conversion from a profile reads: the colorants and tone curves of a matrix-shaper
/// profile, the device-to-PCS tables of a LUT profile, and what adapts their white point.
const USED_TAGS: [&[u8; 4]; 15] = [
    b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC", b"kTRC", b"wtpt", b"chad", b"bkpt", b"lumi", b"cicp",
    b"A2B0", b"A2B1", b"A2B2",
];

/// Most tags a profile may list (Little CMS refuses more, too).
const MAX_TAGS: usize = 100;

/// The profile moxcms parses for a conversion from `icc`; `None` (the pixels are left as
/// they are) when it is larger than [`MAX_PROFILE`], lists more than [`MAX_TAGS`] tags or
/// does not parse.
///
/// moxcms parses every tag it knows, and each tag alone is bounded by its size, but not
/// what a crafted file makes of many: 300,000 records of one 4 MB `mluc` text tag pointing at
/// the same bytes would be a terabyte of strings, and a tag table listing one large LUT tens
/// of thousands of times would parse it as often. So moxcms gets a copy in which only the
/// tags a conversion reads keep their names, each once (the first listed);
/// the rest (text, PCS-to-device tables, gamut, repeats) are renamed to nothing it knows,
/// and are skipped.
fn source_profile(icc: &[u8]) -> Option<ColorProfile> {
    const TABLE: usize = 132;
    if icc.len() > MAX_PROFILE || icc.len() < TABLE {
        return None;
    }
    let n = u32::from_be_bytes(icc[128..TABLE].try_into().ok()?) as usize;
    if n > MAX_TAGS || TABLE + 12 * n > icc.len() {
        return None;
    }
    let mut copy = icc.to_vec();
    let mut kept: Vec<[u8; 4]> = Vec::with_capacity(USED_TAGS.len());
    for entry in copy[TABLE..TABLE + 12 * n].chunks_exact_mut(12) {
        let sig: [u8; 4] = entry[..4].try_into().ok()?;
        if USED_TAGS.contains(&&sig) && !kept.contains(&sig) {
            kept.push(sig);
        } else {
            entry[..4].fill(0);
        }
    }
    ColorProfile::new_from_slice(&copy).ok()
}

/// Converts `img` from the colour space `icc` describes to sRGB, in place. Returns whether
/// it converted anything.
pub fn to_srgb(img: &mut Raster, icc: &[u8], stop: &Stop) -> Result<bool, Error> {
    let layout = match img.channels() {
        Channels::Rgb => Layout::Rgb,
        Channels::Rgba => Layout::Rgba,
        // Grey images stay grey (a grey profile's tone curve is close to sRGB's).
        Channels::Gray | Channels::GrayAlpha => return Ok(false),
    };
    let Some(profile) = source_profile(icc) else { return Ok(false) };
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

/// An ICC profile for colours signalled only by CICP code points (Rec. ITU-T H.273), as a
/// HEIF or AVIF file's `nclx` colour box does: what [`to_srgb`] then converts from, and what
/// `keep-icc` writes onto the output. `None` when the code points already mean sRGB
/// (BT.709 or unspecified primaries with an sRGB-like curve: BT.709, BT.601, BT.2020's, sRGB
/// or unspecified), name an HDR curve (PQ, HLG: an 8-bit sRGB output would need tone
/// mapping, so the pixels are left as they are), or name nothing moxcms can model.
pub fn icc_from_cicp(primaries: u8, transfer: u8) -> Option<Vec<u8>> {
    use moxcms::{CicpColorPrimaries as P, CicpProfile, MatrixCoefficients, TransferCharacteristics as T};
    let (p, t) = (P::try_from(primaries).ok()?, T::try_from(transfer).ok()?);
    let srgb_curve = matches!(t, T::Bt709 | T::Bt601 | T::Bt202010bit | T::Bt202012bit | T::Srgb | T::Unspecified);
    if matches!(p, P::Bt709 | P::Unspecified) && srgb_curve {
        return None;
    }
    if matches!(t, T::Smpte2084 | T::Hlg | T::Reserved) || matches!(p, P::Reserved) {
        return None;
    }
    // An unspecified part takes sRGB's.
    let p = if p == P::Unspecified { P::Bt709 } else { p };
    let t = if t == T::Unspecified { T::Srgb } else { t };
    let cicp = CicpProfile {
        color_primaries: p,
        transfer_characteristics: t,
        matrix_coefficients: MatrixCoefficients::Identity,
        full_range: true,
    };
    let profile = ColorProfile::new_from_cicp(cicp);
    // moxcms leaves a profile it cannot model without its colorimetry.
    if profile.cicp.is_none() || profile.red_trc.is_none() {
        return None;
    }
    let mut icc = profile.encode().ok()?;
    // The header's creation time (bytes 24..36) is when this call ran: zeroed, so the same
    // file gives the same profile, and a `keep-icc` output the same bytes, at any time.
    icc.get_mut(24..36)?.fill(0);
    Some(icc)
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
    let profile = source_profile(icc)?;
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

    #[test]
    fn a_profile_listing_more_than_a_hundred_tags_is_not_parsed() {
        let mut icc = profile(ColorProfile::new_display_p3());
        let n = u32::from_be_bytes(icc[128..132].try_into().unwrap()) as usize;
        // The same tags, then unnamed ones up to the count: moxcms alone parses it.
        for count in [MAX_TAGS, MAX_TAGS + 1] {
            let mut more = icc.clone();
            more.splice(132 + 12 * n..132 + 12 * n, vec![0u8; 12 * (count - n)]);
            for e in 0..n {
                let at = 132 + 12 * e + 4;
                let off = u32::from_be_bytes(more[at..at + 4].try_into().unwrap()) + 12 * (count - n) as u32;
                more[at..at + 4].copy_from_slice(&off.to_be_bytes());
            }
            more[128..132].copy_from_slice(&(count as u32).to_be_bytes());
            let len = more.len() as u32;
            more[..4].copy_from_slice(&len.to_be_bytes());
            assert!(ColorProfile::new_from_slice(&more).is_ok(), "{count}");
            assert_eq!(source_profile(&more).is_some(), count <= MAX_TAGS, "{count}");
        }
        // Too short for its table.
        icc[128..132].copy_from_slice(&100u32.to_be_bytes());
        assert!(source_profile(&icc).is_none());
    }

    #[test]
    fn cicp_code_points_become_a_profile_only_when_they_are_not_srgb() {
        // sRGB by another name, HDR curves, reserved or out-of-range codes: no profile.
        for (p, t) in [
            (1, 13),
            (1, 1),
            (2, 2),
            (1, 6),
            (2, 14),
            (12, 16),
            (9, 18),
            (0, 13),
            (3, 13),
            (200, 13),
            (12, 0),
            (12, 250),
        ] {
            assert!(icc_from_cicp(p, t).is_none(), "{p}/{t}");
        }
        // Display P3, BT.2020 (with its own curve or an unspecified one), Adobe-like BT.470:
        // a parsable RGB profile that converts as the named space does.
        for (p, t) in [(12, 13), (9, 14), (9, 2), (11, 13), (5, 6)] {
            let icc = icc_from_cicp(p, t).unwrap_or_else(|| panic!("{p}/{t}: no profile"));
            let parsed = ColorProfile::new_from_slice(&icc).unwrap();
            assert_eq!(parsed.color_space, DataColorSpace::Rgb, "{p}/{t}");
        }
        let mut a = Raster::from_fn(1, 1, Channels::Rgb, |_, _, p| p.copy_from_slice(&[200, 60, 60]));
        let mut b = a.clone();
        assert!(to_srgb(&mut a, &icc_from_cicp(12, 13).unwrap(), &Stop::new()).unwrap());
        assert!(to_srgb(&mut b, &profile(ColorProfile::new_display_p3()), &Stop::new()).unwrap());
        assert!(
            a.pixel(0, 0).iter().zip(b.pixel(0, 0)).all(|(x, y)| x.abs_diff(*y) <= 1),
            "{:?} {:?}",
            a.pixel(0, 0),
            b.pixel(0, 0)
        );
    }
}
