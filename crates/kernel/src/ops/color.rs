//! Colour and tone: channel conversion, grayscale, brightness, contrast, gamma, invert,
//! threshold, saturation. Tone operations are 256-entry lookup tables applied to colour channels only.

use crate::{Channels, Raster};

/// Rec. 601 luma in 8-bit fixed point (weights 77/150/29 out of 256).
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b) + 128) >> 8) as u8
}

/// Converts between channel layouts. Adding alpha makes it opaque; dropping alpha composites
/// over white (what a viewer shows for a transparent PNG turned JPEG).
pub fn convert(src: &Raster, to: Channels) -> Raster {
    let from = src.channels();
    if from == to {
        return src.clone();
    }
    let d = src.data();
    // The common conversions as plain loops over whole pixels, none of which composites an
    // opaque source (over white, alpha 255 leaves a value as it is): several times faster
    // than the general loop below, which decides its layouts per pixel. Same bytes out
    // (`fast_paths_match_the_general_conversion`).
    let fast: Option<Vec<u8>> = match (from, to) {
        (Channels::Rgb, Channels::Gray) => Some(d.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect()),
        (Channels::Rgba, Channels::GrayAlpha) => {
            Some(d.chunks_exact(4).flat_map(|p| [luma(p[0], p[1], p[2]), p[3]]).collect())
        }
        (Channels::Rgb, Channels::Rgba) => Some(d.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()),
        (Channels::Gray, Channels::Rgb) => Some(d.iter().flat_map(|&v| [v, v, v]).collect()),
        (Channels::Gray, Channels::Rgba) => Some(d.iter().flat_map(|&v| [v, v, v, 255]).collect()),
        (Channels::Gray, Channels::GrayAlpha) => Some(d.iter().flat_map(|&v| [v, 255]).collect()),
        _ => None,
    };
    if let Some(out) = fast {
        return Raster::from_vec(src.width(), src.height(), to, out).expect("sizes derive from the source");
    }
    convert_each(src, to)
}

/// Any conversion, one pixel at a time.
fn convert_each(src: &Raster, to: Channels) -> Raster {
    let from = src.channels();
    let n_in = from.count();
    let mut out = Vec::with_capacity(src.pixel_count() as usize * to.count());
    let over_white =
        |v: u8, a: u8| -> u8 { ((u32::from(v) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255) as u8 };
    for p in src.data().chunks_exact(n_in) {
        let (r, g, b, a) = match from {
            Channels::Gray => (p[0], p[0], p[0], 255),
            Channels::GrayAlpha => (p[0], p[0], p[0], p[1]),
            Channels::Rgb => (p[0], p[1], p[2], 255),
            Channels::Rgba => (p[0], p[1], p[2], p[3]),
        };
        match to {
            Channels::Gray => {
                let l = if from == Channels::GrayAlpha || from == Channels::Gray { r } else { luma(r, g, b) };
                out.push(over_white(l, a));
            }
            Channels::GrayAlpha => {
                let l = if from == Channels::Gray || from == Channels::GrayAlpha { r } else { luma(r, g, b) };
                out.extend_from_slice(&[l, a]);
            }
            Channels::Rgb => out.extend_from_slice(&[over_white(r, a), over_white(g, a), over_white(b, a)]),
            Channels::Rgba => out.extend_from_slice(&[r, g, b, a]),
        }
    }
    Raster::from_vec(src.width(), src.height(), to, out).expect("sizes derive from the source")
}

/// Luma of every pixel, alpha dropped (not composited): what edge and interest maps need.
pub fn luma_plane(src: &Raster) -> Vec<u8> {
    match src.channels() {
        Channels::Gray => src.data().to_vec(),
        Channels::GrayAlpha => src.data().chunks_exact(2).map(|p| p[0]).collect(),
        Channels::Rgb => src.data().chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect(),
        Channels::Rgba => src.data().chunks_exact(4).map(|p| luma(p[0], p[1], p[2])).collect(),
    }
}

/// Grayscale keeping alpha: RGB -> Gray, RGBA -> GrayAlpha.
pub fn grayscale(src: &Raster) -> Raster {
    match src.channels() {
        Channels::Rgb => convert(src, Channels::Gray),
        Channels::Rgba => convert(src, Channels::GrayAlpha),
        _ => src.clone(),
    }
}

/// A 256-entry table, one output per input value.
pub type Lut = [u8; 256];

/// Applies a table to the colour channels in place; alpha is untouched.
pub fn apply_lut(img: &mut Raster, lut: &Lut) {
    let ch = img.channels();
    let (n, colour) = (ch.count(), ch.colour_count());
    if n == colour {
        img.data_mut().iter_mut().for_each(|v| *v = lut[*v as usize]);
    } else {
        for p in img.data_mut().chunks_exact_mut(n) {
            for v in &mut p[..colour] {
                *v = lut[*v as usize];
            }
        }
    }
}

fn lut_from(f: impl Fn(f32) -> f32) -> Lut {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = f(i as f32).round().clamp(0.0, 255.0) as u8;
    }
    t
}

/// `v + amount`.
pub fn brightness_lut(amount: i16) -> Lut {
    lut_from(|v| v + f32::from(amount))
}

/// `(v - 128) * factor + 128`.
pub fn contrast_lut(factor: f32) -> Lut {
    lut_from(|v| (v - 128.0) * factor + 128.0)
}

/// `255 * (v / 255) ^ (1 / gamma)`.
pub fn gamma_lut(gamma: f32) -> Lut {
    lut_from(|v| 255.0 * (v / 255.0).powf(1.0 / gamma))
}

/// `255 - v`.
pub fn invert_lut() -> Lut {
    lut_from(|v| 255.0 - v)
}

/// Composes two tables: `second(first(v))`.
pub fn compose(first: &Lut, second: &Lut) -> Lut {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = second[first[i] as usize];
    }
    t
}

/// Luma >= level becomes 255, else 0; the result has one channel (plus alpha if it had one).
pub fn threshold(src: &Raster, level: u8) -> Raster {
    let mut g = grayscale(src);
    let lut: Lut = std::array::from_fn(|i| if i >= level as usize { 255 } else { 0 });
    apply_lut(&mut g, &lut);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_of_primaries() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 77);
        assert_eq!(luma(0, 255, 0), 149);
    }

    #[test]
    fn grayscale_keeps_alpha_and_drops_colour() {
        let r = Raster::from_fn(2, 1, Channels::Rgba, |x, _, p| p.copy_from_slice(&[255, 0, 0, x as u8 * 100]));
        let g = grayscale(&r);
        assert_eq!(g.channels(), Channels::GrayAlpha);
        assert_eq!(g.data(), &[77, 0, 77, 100]);
    }

    #[test]
    fn fast_paths_match_the_general_conversion() {
        let all = [Channels::Gray, Channels::GrayAlpha, Channels::Rgb, Channels::Rgba];
        for from in all {
            let r = Raster::from_fn(37, 11, from, |x, y, p| {
                for (c, v) in p.iter_mut().enumerate() {
                    *v = (x * 31 + y * 57 + c as u32 * 101 + x * y) as u8;
                }
            });
            for to in all {
                let (fast, each) = (convert(&r, to), if from == to { r.clone() } else { convert_each(&r, to) });
                assert_eq!((fast.width(), fast.height(), fast.channels()), (37, 11, to), "{from:?} -> {to:?}");
                assert_eq!(fast.data(), each.data(), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn dropping_alpha_composites_over_white() {
        let r = Raster::from_fn(1, 1, Channels::Rgba, |_, _, p| p.copy_from_slice(&[0, 0, 0, 0]));
        assert_eq!(convert(&r, Channels::Rgb).data(), &[255, 255, 255]);
    }

    #[test]
    fn tone_tables() {
        assert_eq!(brightness_lut(20)[250], 255);
        assert_eq!(brightness_lut(-20)[10], 0);
        assert_eq!(contrast_lut(2.0)[128], 128);
        assert_eq!(contrast_lut(2.0)[138], 148);
        assert_eq!(gamma_lut(1.0), lut_from(|v| v));
        assert!(gamma_lut(2.2)[64] > 64);
        assert_eq!(invert_lut()[0], 255);
        let twice = compose(&invert_lut(), &invert_lut());
        assert_eq!(twice, lut_from(|v| v));
    }

    #[test]
    fn lut_skips_alpha() {
        let mut r = Raster::from_fn(1, 1, Channels::Rgba, |_, _, p| p.copy_from_slice(&[10, 20, 30, 40]));
        apply_lut(&mut r, &invert_lut());
        assert_eq!(r.data(), &[245, 235, 225, 40]);
    }

    #[test]
    fn threshold_is_binary() {
        let r = Raster::from_fn(256, 1, Channels::Gray, |x, _, p| p[0] = x as u8);
        let t = threshold(&r, 100);
        assert!(t.data().iter().all(|&v| v == 0 || v == 255));
        assert_eq!(t.data()[99], 0);
        assert_eq!(t.data()[100], 255);
    }
}

/// Scales each pixel's colour away from (factor > 1) or towards (factor < 1) its own Rec. 601
/// luma: 0 is grey, 1 leaves the image as it is. Grey images and alpha are untouched. In place.
pub fn saturate(img: &mut Raster, factor: f32) {
    let n = img.channels().count();
    if img.channels().colour_count() < 3 {
        return;
    }
    // Fixed point: factor in 1/256ths, so the inner loop is integer only.
    let f = (factor * 256.0).round() as i32;
    for p in img.data_mut().chunks_exact_mut(n) {
        let l = i32::from(luma(p[0], p[1], p[2]));
        for c in &mut p[..3] {
            let v = l + (((i32::from(*c) - l) * f + 128) >> 8);
            *c = v.clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod saturation_tests {
    use super::*;

    #[test]
    fn zero_is_grey_one_is_identity_and_grey_images_are_untouched() {
        let img = Raster::from_fn(7, 5, Channels::Rgba, |x, y, p| {
            p.copy_from_slice(&[(x * 30) as u8, (y * 50) as u8, 200, 99])
        });
        let mut same = img.clone();
        saturate(&mut same, 1.0);
        assert_eq!(same, img);
        let mut grey = img.clone();
        saturate(&mut grey, 0.0);
        for (g, o) in grey.data().chunks_exact(4).zip(img.data().chunks_exact(4)) {
            let l = luma(o[0], o[1], o[2]);
            assert_eq!(g, [l, l, l, o[3]]);
        }
        let mut more = Raster::from_fn(1, 1, Channels::Rgb, |_, _, p| p.copy_from_slice(&[120, 100, 100]));
        saturate(&mut more, 3.0);
        assert!(more.data()[0] > 120 && more.data()[1] < 100, "{:?}", more.data());
        let g = Raster::from_fn(4, 4, Channels::GrayAlpha, |x, _, p| p.copy_from_slice(&[x as u8 * 9, 7]));
        let mut g2 = g.clone();
        saturate(&mut g2, 5.0);
        assert_eq!(g2, g);
    }
}
