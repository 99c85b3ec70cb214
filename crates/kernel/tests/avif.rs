//! AVIF output: valid files (checked by libvips' decoder when it is installed), quality and
//! speed honoured, `max-bytes` met, alpha kept, AVIF input refused with a reason without
//! the `heif` feature.
#![cfg(feature = "avif")]

mod common;

use std::process::Command;

use pixq_kernel::{Channels, Format, Limits, Pipeline, Raster, process};

fn vips_available() -> bool {
    let ok = Command::new("vips").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var_os("CI").is_none(), "CI must run the AVIF decode check: install libvips-tools");
    ok
}

/// Decodes an AVIF with libvips (libheif) into 8-bit samples: (width, height, bands, pixels).
fn vips_decode(avif: &[u8]) -> (u32, u32, usize, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("a.avif"), dir.path().join("a.png"));
    std::fs::write(&src, avif).unwrap();
    let o = Command::new("vips").arg("copy").arg(&src).arg(&dst).output().unwrap();
    assert!(o.status.success(), "vips could not read our AVIF: {}", String::from_utf8_lossy(&o.stderr));
    let r = pixq_kernel::decode(&std::fs::read(&dst).unwrap(), &Limits::default()).unwrap();
    (r.width(), r.height(), r.channels().count(), r.data().to_vec())
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

fn run(input: &[u8], p: &str) -> pixq_kernel::Output {
    process(input, &Pipeline::parse(p).unwrap(), &Limits::default()).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn avif_files_decode_to_the_image_at_the_asked_quality() {
    let src = common::photo_like(320, 240);
    let png = common::png(&src);
    let hi = run(&png, "format:avif,quality:90");
    let lo = run(&png, "format:avif,quality:30");
    for o in [&hi, &lo] {
        assert_eq!((o.format, o.width, o.height), (Format::Avif, 320, 240));
        assert_eq!(Format::sniff(&o.bytes), Some(Format::Avif));
        assert_eq!(&o.bytes[4..12], b"ftypavif");
    }
    assert!(lo.bytes.len() < hi.bytes.len(), "q30 {} >= q90 {}", lo.bytes.len(), hi.bytes.len());
    // Speed is an encoder knob: another file, the same picture.
    let fast = run(&png, "format:avif,quality:90,speed:10");
    assert_ne!(fast.bytes, hi.bytes);
    if vips_available() {
        let (w, h, bands, px) = vips_decode(&hi.bytes);
        assert_eq!((w, h, bands), (320, 240, 3));
        let p = psnr(&px, src.data());
        assert!(p > 30.0, "q90 PSNR {p:.1} dB");
        let (_, _, _, px) = vips_decode(&fast.bytes);
        assert!(psnr(&px, src.data()) > 28.0);
        let (_, _, _, px) = vips_decode(&lo.bytes);
        assert!(psnr(&px, src.data()) < p, "q30 no worse than q90?");
    }
}

#[test]
fn alpha_and_grey_come_out_right() {
    let rgba = Raster::from_fn(64, 48, Channels::Rgba, |x, y, p| {
        p.copy_from_slice(&[(x * 4) as u8, (y * 5) as u8, 128, if x < 32 { 255 } else { 0 }])
    });
    let grey = Raster::from_fn(64, 48, Channels::Gray, |x, y, p| p[0] = ((x + y) * 2) as u8);
    let a = run(&common::png(&rgba), "format:avif,quality:95");
    let g = run(&common::png(&grey), "format:avif,quality:95");
    if vips_available() {
        let (_, _, bands, px) = vips_decode(&a.bytes);
        assert_eq!(bands, 4);
        let alpha_left = px[4 * 10 + 3];
        let alpha_right = px[4 * 50 + 3];
        assert!(alpha_left > 250 && alpha_right < 5, "alpha {alpha_left} / {alpha_right}");
        let (_, _, bands, px) = vips_decode(&g.bytes);
        assert_eq!(bands, 3, "grey is written as RGB");
        let (r, gg, b) = (px[3 * 100], px[3 * 100 + 1], px[3 * 100 + 2]);
        assert!(r.abs_diff(gg) <= 3 && gg.abs_diff(b) <= 3, "grey came back coloured: {r} {gg} {b}");
    }
}

#[test]
fn max_bytes_lowers_the_avif_quality_until_the_file_fits() {
    let png = common::png(&common::photo_like(400, 300));
    let full = run(&png, "format:avif,quality:90");
    let cap = (full.bytes.len() / 3).max(1024) as u32;
    let small = run(&png, &format!("format:avif,quality:90,max-bytes:{cap}"));
    assert!(small.bytes.len() as u32 <= cap, "{} > {cap}", small.bytes.len());
    assert_eq!(Format::sniff(&small.bytes), Some(Format::Avif));
}

#[test]
fn avif_settings_that_cannot_apply_are_refused_and_avif_input_is_a_clear_error() {
    for (p, why) in [
        ("speed:5", "speed is for AVIF"),
        ("format:webp,speed:5", "speed is for AVIF"),
        ("format:avif,speed:0", "speed"),
        ("format:avif,speed:11", "speed"),
        ("format:avif,keep-icc", "keep-icc cannot go with format:avif"),
        ("keep-icc,format:avif", "keep-icc cannot go with format:avif"),
        ("format:avif,lossless", "lossless is for WebP"),
    ] {
        let e = Pipeline::parse(p).expect_err(p).to_string();
        assert!(e.contains(why), "{p}: {e}");
    }
    let p = Pipeline::parse("format:avif,speed:8,max-bytes:2048").unwrap();
    assert_eq!(Pipeline::parse(&p.canonical()).unwrap(), p);
    // Without libheif (the Lambda's build) an AVIF input is a clear error; with it, it is
    // read back (tests/heif.rs).
    let avif = run(&common::png(&common::photo_like(32, 32)), "format:avif");
    let r = process(&avif.bytes, &Pipeline::parse("thumbnail:16").unwrap(), &Limits::default());
    if cfg!(feature = "heif") {
        assert_eq!(r.unwrap().width, 16);
    } else {
        let e = r.unwrap_err();
        assert!(e.to_string().contains("reads no AVIF or HEIC"), "{e}");
    }
    let e = Pipeline::parse("format:heic").unwrap_err().to_string();
    assert!(e.contains("heic is read, not written"), "{e}");
}
