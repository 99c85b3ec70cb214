//! Colour management against the reference: libvips' `icc_transform` (lcms2) on the same
//! tagged images. Inputs are vivid patterns (hue sweeps at full and half saturation, grey
//! ramps) in PNG, tagged with Display P3 and Adobe RGB (1998) profiles; pixq converts them to
//! sRGB by default, and each pixel is compared with libvips' result in CIE Lab (Delta E
//! 1976). `keep-icc` keeps the profile and the pixels. Needs `vips` (Debian's
//! libvips-tools; scripts/tools.sh installs it); skipped without it outside CI.

use std::path::Path;
use std::process::Command;

use moxcms::ColorProfile;
use pixq_kernel::{Channels, Pipeline, Processor, Raster, Stop};

fn vips_available() -> bool {
    let ok = Command::new("vips").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var_os("CI").is_none(), "CI must run the colour reference test: install libvips-tools");
    ok
}

/// Hue sweeps (rows 0-31 full saturation, 32-47 half), grey ramps below.
fn pattern() -> Raster {
    Raster::from_fn(96, 64, Channels::Rgb, |x, y, p| {
        let h = x as f32 / 96.0 * 6.0;
        let (s, v) = match y {
            0..32 => (1.0, 0.4 + 0.6 * (y as f32 / 31.0)),
            32..48 => (0.5, 0.9),
            _ => (0.0, x as f32 / 95.0),
        };
        let c = v * s;
        let xx = c * (1.0 - ((h % 2.0) - 1.0).abs());
        let (r, g, b) = match h as u32 {
            0 => (c, xx, 0.0),
            1 => (xx, c, 0.0),
            2 => (0.0, c, xx),
            3 => (0.0, xx, c),
            4 => (xx, 0.0, c),
            _ => (c, 0.0, xx),
        };
        let m = v - c;
        let q = |f: f32| ((f + m) * 255.0).round().clamp(0.0, 255.0) as u8;
        p.copy_from_slice(&[q(r), q(g), q(b)]);
    })
}

fn rgb_of(bytes: &[u8]) -> Vec<u8> {
    image::load_from_memory(bytes).unwrap().to_rgb8().into_raw()
}

/// sRGB (8 bit) to CIE Lab (D65).
fn lab(p: &[u8]) -> [f64; 3] {
    let lin = |v: u8| {
        let c = f64::from(v) / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (lin(p[0]), lin(p[1]), lin(p[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| if t > 0.008856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn delta_e(a: &[u8], b: &[u8]) -> f64 {
    let (l1, l2) = (lab(a), lab(b));
    ((l1[0] - l2[0]).powi(2) + (l1[1] - l2[1]).powi(2) + (l1[2] - l2[2]).powi(2)).sqrt()
}

#[test]
fn tagged_images_come_out_in_srgb_like_libvips_icc_transform() {
    if !vips_available() {
        eprintln!("skipped: no vips");
        return;
    }
    let dir = tempfile_dir();
    let img = pattern();
    for (name, profile) in
        [("display-p3", ColorProfile::new_display_p3()), ("adobe-rgb", ColorProfile::new_adobe_rgb())]
    {
        let icc = aligned(profile.encode().unwrap());
        let tagged = pixq_kernel::png::encode(&img, 1, Some(&icc), &Stop::new()).unwrap();
        let input = dir.join(format!("{name}.png"));
        std::fs::write(&input, &tagged).unwrap();
        let reference = dir.join(format!("{name}-vips.png"));
        let o = Command::new("vips").arg("icc_transform").arg(&input).arg(&reference).arg("srgb").output().unwrap();
        assert!(o.status.success(), "vips: {}", String::from_utf8_lossy(&o.stderr));
        let want = rgb_of(&std::fs::read(&reference).unwrap());

        let mut p = Processor::new(Default::default());
        let out = p.process(&tagged, &Pipeline::parse("format:png").unwrap()).unwrap();
        let got = rgb_of(&out.bytes);
        assert!(!out.bytes.windows(4).any(|w| w == b"iCCP"), "{name}: the profile is dropped by default");
        let des: Vec<f64> = got.chunks(3).zip(want.chunks(3)).map(|(a, b)| delta_e(a, b)).collect();
        let mean = des.iter().sum::<f64>() / des.len() as f64;
        let max = des.iter().cloned().fold(0.0, f64::max);
        eprintln!("{name}: Delta E against libvips: mean {mean:.2}, max {max:.2}");
        assert!(mean < 0.5 && max < 2.5, "{name}: Delta E mean {mean:.2}, max {max:.2}");
        // The conversion did something: the untagged reading of the same numbers differs.
        let untouched: f64 =
            img.data().chunks(3).zip(want.chunks(3)).map(|(a, b)| delta_e(a, b)).sum::<f64>() / des.len() as f64;
        assert!(untouched > 3.0 * mean.max(0.5), "{name}: not converted? untagged Delta E {untouched:.2}");

        // keep-icc: the numbers as they were, the profile on the output.
        let kept = p.process(&tagged, &Pipeline::parse("format:png,keep-icc").unwrap()).unwrap();
        assert_eq!(rgb_of(&kept.bytes), img.data(), "{name}: keep-icc changed pixels");
        assert!(kept.bytes.windows(4).any(|w| w == b"iCCP"), "{name}: keep-icc dropped the profile");
    }
}

/// An encoded profile padded to a multiple of 4 bytes, its header's length updated: the ICC
/// specification asks for it and libpng (so libvips) ignores a profile without it.
fn aligned(mut p: Vec<u8>) -> Vec<u8> {
    while !p.len().is_multiple_of(4) {
        p.push(0);
    }
    let n = p.len() as u32;
    p[..4].copy_from_slice(&n.to_be_bytes());
    p
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pixq-colour-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    assert!(Path::new(&d).is_dir());
    d
}

/// A CMYK JPEG as print work flows make them: libvips' `icc_export` to its built-in CMYK
/// press profile (a LUT profile of about 1 MB, embedded; inks stored inverted under an Adobe
/// marker). pixq converts it through that profile to sRGB like `icc_transform` does (inks
/// read the wrong way round would be tens of Delta E off). Through libjpeg-turbo only: the
/// pure-Rust fallback build keeps the plain conversion.
#[cfg(feature = "turbojpeg")]
#[test]
fn cmyk_jpegs_come_out_through_their_profile_like_libvips() {
    if !vips_available() {
        eprintln!("skipped: no vips");
        return;
    }
    let dir = tempfile_dir();
    let src = dir.join("srgb.png");
    std::fs::write(&src, pixq_kernel::png::encode(&pattern(), 1, None, &Stop::new()).unwrap()).unwrap();
    let cmyk = dir.join("cmyk.jpg");
    let o = Command::new("vips")
        .arg("icc_export")
        .arg(&src)
        .arg(format!("{}[Q=95]", cmyk.display()))
        .args(["--output-profile", "cmyk"])
        .output()
        .unwrap();
    assert!(o.status.success(), "vips icc_export: {}", String::from_utf8_lossy(&o.stderr));
    let reference = dir.join("cmyk-vips.png");
    let o = Command::new("vips").arg("icc_transform").arg(&cmyk).arg(&reference).arg("srgb").output().unwrap();
    assert!(o.status.success(), "vips icc_transform: {}", String::from_utf8_lossy(&o.stderr));
    let want = rgb_of(&std::fs::read(&reference).unwrap());
    let input = std::fs::read(&cmyk).unwrap();
    assert!(input.windows(5).any(|w| w == b"Adobe"), "an Adobe CMYK JPEG");

    let mut p = Processor::new(Default::default());
    let out = p.process(&input, &Pipeline::parse("format:png").unwrap()).unwrap();
    let got = rgb_of(&out.bytes);
    assert_eq!(got.len(), want.len());
    let des: Vec<f64> = got.chunks(3).zip(want.chunks(3)).map(|(a, b)| delta_e(a, b)).collect();
    let mean = des.iter().sum::<f64>() / des.len() as f64;
    let max = des.iter().cloned().fold(0.0, f64::max);
    eprintln!("cmyk: Delta E against libvips: mean {mean:.2}, max {max:.2}");
    assert!(mean < 1.0 && max < 4.0, "cmyk: Delta E mean {mean:.2}, max {max:.2}");
    // Thumbnails and other outputs of it go the same way (no CMYK profile on any output).
    let thumb = p.process(&input, &Pipeline::parse("thumbnail:48,keep-icc").unwrap()).unwrap();
    assert_eq!(pixq_kernel::meta::read_jpeg_meta(&thumb.bytes).icc, None, "a CMYK profile on an RGB output");
}
