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
    let cmyk = vips_cmyk_jpeg(&dir);
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

/// The test pattern as a CMYK JPEG made by libvips (`icc_export` to its built-in CMYK
/// profile, embedded; Adobe's inverted inks), in `dir`; returns its path.
#[cfg(feature = "turbojpeg")]
fn vips_cmyk_jpeg(dir: &Path) -> std::path::PathBuf {
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
    cmyk
}

/// The JPEG `bytes` without its segments of marker `0xFF<m>` for each `m` in `drop` (before
/// the scan).
#[cfg(feature = "turbojpeg")]
fn without_segments(bytes: &[u8], drop: &[u8]) -> Vec<u8> {
    let mut out = bytes[..2].to_vec();
    let mut i = 2;
    while bytes[i] == 0xFF && bytes[i + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if !drop.contains(&bytes[i + 1]) {
            out.extend_from_slice(&bytes[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.extend_from_slice(&bytes[i..]);
    out
}

/// libvips' reading of a JPEG as sRGB (`icc_transform`, with `--input-profile` when given).
#[cfg(feature = "turbojpeg")]
fn vips_srgb(dir: &Path, name: &str, jpeg: &[u8], input_profile: Option<&Path>) -> Vec<u8> {
    let src = dir.join(format!("{name}.jpg"));
    std::fs::write(&src, jpeg).unwrap();
    let dst = dir.join(format!("{name}-vips.png"));
    let mut cmd = Command::new("vips");
    cmd.arg("icc_transform").arg(&src).arg(&dst).arg("srgb");
    if let Some(p) = input_profile {
        cmd.arg("--input-profile").arg(p);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "vips icc_transform {name}: {}", String::from_utf8_lossy(&o.stderr));
    rgb_of(&std::fs::read(&dst).unwrap())
}

/// (mean, 95th percentile, max) Delta E between two sRGB rasters.
#[cfg(feature = "turbojpeg")]
fn delta_e_stats(a: &[u8], b: &[u8]) -> (f64, f64, f64) {
    assert_eq!(a.len(), b.len());
    let mut des: Vec<f64> = a.chunks(3).zip(b.chunks(3)).map(|(a, b)| delta_e(a, b)).collect();
    des.sort_by(f64::total_cmp);
    let mean = des.iter().sum::<f64>() / des.len() as f64;
    (mean, des[des.len() * 95 / 100], des[des.len() - 1])
}

/// CMYK JPEGs without a profile, in every form the class takes: Adobe's inverted inks (as
/// libvips and Photoshop write them), the same inks with the Adobe marker gone (still read
/// as inverted, as libvips, Pillow and browsers read them), YCCK, CMYK from another encoder,
/// and one whose profile is an RGB one.
/// Each goes through pixq's built-in press profile: libvips reading the same file through that
/// profile (lcms2) agrees within a Delta E of 1 on average (the profile is valid ICC and the
/// inks are read the same way round), and libvips' own fallback, its built-in proofing
/// profile, is within the distance of two presses; the plain conversion pixq did before is
/// far off both.
#[cfg(feature = "turbojpeg")]
#[test]
fn cmyk_jpegs_without_a_profile_come_out_through_a_built_in_press_profile() {
    if !vips_available() {
        eprintln!("skipped: no vips");
        return;
    }
    let dir = tempfile_dir().join("no-profile");
    std::fs::create_dir_all(&dir).unwrap();
    let ours = dir.join("pixq-press.icc");
    std::fs::write(&ours, pixq_kernel::cms::press::profile()).unwrap();

    let tagged = std::fs::read(vips_cmyk_jpeg(&dir)).unwrap();
    let adobe = without_segments(&tagged, &[0xE2]);
    assert!(adobe.windows(5).any(|w| w == b"Adobe") && !adobe.windows(11).any(|w| w == b"ICC_PROFILE"));
    let unmarked = without_segments(&adobe, &[0xEE]);
    assert!(!unmarked.windows(5).any(|w| w == b"Adobe"));
    // Inks from another encoder: the pattern's grey ramps and hues as CMYK numbers.
    let inks: Vec<u8> = pattern()
        .data()
        .chunks(3)
        .flat_map(|p| {
            let k = 255 - *p.iter().max().unwrap();
            let ink = |v: u8| if k == 255 { 0 } else { ((255 - v - k) as u32 * 255 / (255 - k) as u32) as u8 };
            [ink(p[0]), ink(p[1]), ink(p[2]), k]
        })
        .collect();
    let encode = |ct| {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 95).encode(&inks, 96, 64, ct).unwrap();
        out
    };
    let plain = encode(jpeg_encoder::ColorType::Cmyk);
    let ycck = encode(jpeg_encoder::ColorType::CmykAsYcck);

    let mut p = Processor::new(Default::default());
    for (name, input) in [("adobe", &adobe), ("unmarked", &unmarked), ("plain", &plain), ("ycck", &ycck)] {
        let got = rgb_of(&p.process(input, &Pipeline::parse("format:png").unwrap()).unwrap().bytes);
        let through_ours = vips_srgb(&dir, name, input, Some(&ours));
        let (mean, p95, max) = delta_e_stats(&got, &through_ours);
        eprintln!("{name}: Delta E against libvips through pixq's profile: mean {mean:.2}, p95 {p95:.2}, max {max:.2}");
        assert!(mean < 1.0 && max < 5.0, "{name}: mean {mean:.2}, max {max:.2}");
        let vips_default = vips_srgb(&dir, &format!("{name}-default"), input, None);
        let (mean, p95, max) = delta_e_stats(&got, &vips_default);
        eprintln!("{name}: Delta E against libvips' built-in profile: mean {mean:.2}, p95 {p95:.2}, max {max:.2}");
        assert!(mean < 7.0 && p95 < 13.0, "{name}: mean {mean:.2}, p95 {p95:.2}");
        // The plain conversion (what `image` does, what pixq did) is much further off.
        let naive = image::load_from_memory(input).unwrap().to_rgb8().into_raw();
        let (naive_mean, ..) = delta_e_stats(&naive, &vips_default);
        eprintln!("{name}: the plain conversion against libvips' built-in profile: mean {naive_mean:.2}");
        assert!(naive_mean > 2.0 * mean, "{name}: plain {naive_mean:.2} vs pixq {mean:.2}");
    }

    // A profile that is no usable CMYK profile is passed over the same way: an RGB one, bytes
    // that are no profile, a CMYK header cut short, a CMYK header claiming tags past its end.
    let mut cut = ColorProfile::new_display_p3().encode().unwrap()[..128].to_vec();
    cut[16..20].copy_from_slice(b"CMYK");
    let mut lying = cut.clone();
    lying.extend_from_slice(&[0, 0, 0, 1, b'A', b'2', b'B', b'0', 0, 0, 0, 200, 0x7F, 0xFF, 0xFF, 0xFF]);
    let plain = p.process(&adobe, &Pipeline::parse("format:png").unwrap()).unwrap();
    for (name, icc) in [
        ("an RGB profile", aligned(ColorProfile::new_display_p3().encode().unwrap())),
        ("bytes that are no profile", vec![0xA5; 3000]),
        ("a CMYK header cut short", cut),
        ("a CMYK header with a tag past its end", lying),
    ] {
        let mut app2 = b"ICC_PROFILE\0\x01\x01".to_vec();
        app2.extend_from_slice(&icc);
        let mut mislabelled = adobe[..2].to_vec();
        mislabelled.extend_from_slice(&[0xFF, 0xE2]);
        mislabelled.extend_from_slice(&((app2.len() + 2) as u16).to_be_bytes());
        mislabelled.extend_from_slice(&app2);
        mislabelled.extend_from_slice(&adobe[2..]);
        let b = p.process(&mislabelled, &Pipeline::parse("format:png").unwrap()).unwrap();
        assert_eq!(rgb_of(&plain.bytes), rgb_of(&b.bytes), "{name} on a CMYK file");
    }
}

/// The profile made from `nclx` code points is the same bytes whenever it is made: its
/// header's creation time (bytes 24..36) is zero, not the clock's. `keep-icc` copies it into
/// outputs, which must not change from one second to the next.
#[test]
fn profiles_made_from_code_points_carry_no_creation_time() {
    for (primaries, transfer) in [(12, 13), (9, 1), (1, 4)] {
        let icc = pixq_kernel::cms::icc_from_cicp(primaries, transfer).expect("a profile");
        assert!(icc[24..36].iter().all(|&b| b == 0), "{primaries}/{transfer}: {:?}", &icc[24..36]);
        assert_eq!(pixq_kernel::cms::icc_from_cicp(primaries, transfer), Some(icc));
    }
}
