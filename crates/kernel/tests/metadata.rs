//! By default outputs carry no ICC profile (RGB inputs are converted to sRGB, see
//! `tests/colour.rs`); with `keep-icc` they keep it where it fits them (its colour space is
//! the output's). EXIF (and with it GPS and orientation tags) is always dropped.

mod common;

use pixq_kernel::{Limits, Pipeline, process};

/// A profile-shaped blob: a 128-byte header with the `acsp` signature and `space` as its
/// data colour space, then filler.
fn profile(space: &[u8; 4]) -> Vec<u8> {
    let mut icc: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    icc[16..20].copy_from_slice(space);
    icc[36..40].copy_from_slice(b"acsp");
    icc
}

fn jpeg_with_icc_and_exif() -> (Vec<u8>, Vec<u8>) {
    jpeg_with_profile(&profile(b"RGB "))
}

fn jpeg_with_profile(icc: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let icc = icc.to_vec();
    let plain = common::jpeg(&common::photo_like(200, 100), 90);
    let with_icc = pixq_kernel::meta::jpeg_with_icc(plain, &icc);
    (common::with_exif_orientation(&with_icc, 1), icc)
}

#[test]
fn icc_is_kept_in_jpeg_and_png_outputs_with_keep_icc_only() {
    let (input, icc) = jpeg_with_icc_and_exif();
    assert_eq!(pixq_kernel::meta::read_jpeg_meta(&input).icc.as_deref(), Some(&icc[..]));
    let l = Limits::default();
    let out = process(&input, &Pipeline::parse("thumbnail:50,keep-icc").unwrap(), &l).unwrap();
    assert_eq!(pixq_kernel::meta::read_jpeg_meta(&out.bytes).icc.as_deref(), Some(&icc[..]));
    for ops in ["thumbnail:50,format:png", "thumbnail:50,format:webp", "thumbnail:50,format:webp,lossless"] {
        let kept = process(&input, &Pipeline::parse(&format!("{ops},keep-icc")).unwrap(), &l).unwrap();
        assert_eq!(pixq_kernel::codec::probe(&kept.bytes, &l).unwrap().icc.as_deref(), Some(&icc[..]), "{ops}");
        let dropped = process(&input, &Pipeline::parse(ops).unwrap(), &l).unwrap();
        assert_eq!(pixq_kernel::codec::probe(&dropped.bytes, &l).unwrap().icc, None, "{ops}: kept by default");
    }
    let out = process(&input, &Pipeline::parse("thumbnail:50").unwrap(), &l).unwrap();
    assert_eq!(pixq_kernel::meta::read_jpeg_meta(&out.bytes).icc, None, "kept by default");
}

/// An RGB profile on a grey image is invalid: grayscale and Sobel outputs drop it; a grey
/// profile stays on grey outputs and leaves colour ones; a CMYK or malformed profile never
/// reaches an output.
#[test]
fn a_profile_is_kept_only_where_its_colour_space_fits() {
    let l = Limits::default();
    let icc_of = |bytes: &[u8]| pixq_kernel::codec::probe(bytes, &l).unwrap().icc;
    let (rgb_input, rgb) = jpeg_with_profile(&profile(b"RGB "));
    for ops in ["grayscale,format:png", "sobel,format:png", "threshold:100", "grayscale,format:webp,lossless"] {
        let out = process(&rgb_input, &Pipeline::parse(&format!("{ops},keep-icc")).unwrap(), &l).unwrap();
        assert_eq!(icc_of(&out.bytes), None, "{ops}: an RGB profile on a grey output");
    }
    let out = process(&rgb_input, &Pipeline::parse("grayscale,format:webp,keep-icc").unwrap(), &l).unwrap();
    assert_eq!(icc_of(&out.bytes), None, "lossy WebP of a grey image");
    let out = process(&rgb_input, &Pipeline::parse("invert,format:png,keep-icc").unwrap(), &l).unwrap();
    assert_eq!(icc_of(&out.bytes).as_deref(), Some(&rgb[..]));
    let (grey_input, grey) = jpeg_with_profile(&profile(b"GRAY"));
    let out = process(&grey_input, &Pipeline::parse("grayscale,format:png,keep-icc").unwrap(), &l).unwrap();
    assert_eq!(icc_of(&out.bytes).as_deref(), Some(&grey[..]));
    let out = process(&grey_input, &Pipeline::parse("thumbnail:50,format:png,keep-icc").unwrap(), &l).unwrap();
    assert_eq!(icc_of(&out.bytes), None, "a grey profile on a colour output");
    for bad in [profile(b"CMYK"), (0..3000u32).map(|i| i as u8).collect()] {
        let (input, _) = jpeg_with_profile(&bad);
        let out = process(&input, &Pipeline::parse("thumbnail:50,keep-icc").unwrap(), &l).unwrap();
        assert_eq!(pixq_kernel::meta::read_jpeg_meta(&out.bytes).icc, None);
    }
}

#[test]
fn exif_is_stripped() {
    let (input, _) = jpeg_with_icc_and_exif();
    assert!(input.windows(6).any(|w| w == b"Exif\0\0"));
    let out = process(&input, &Pipeline::parse("thumbnail:50").unwrap(), &Limits::default()).unwrap();
    assert!(!out.bytes.windows(6).any(|w| w == b"Exif\0\0"), "output still carries EXIF");
}

#[test]
fn progressive_and_quality_change_the_jpeg() {
    let input = common::png(&common::photo_like(300, 200));
    let l = Limits::default();
    let run = |s: &str| process(&input, &Pipeline::parse(s).unwrap(), &l).unwrap().bytes;
    let q30 = run("format:jpeg,quality:30");
    let q95 = run("format:jpeg,quality:95");
    assert!(q30.len() < q95.len());
    let prog = run("format:jpeg,progressive");
    // SOF2 marks a progressive frame; SOF0 a baseline one.
    assert!(prog.windows(2).any(|w| w == [0xFF, 0xC2]));
    assert!(run("format:jpeg").windows(2).any(|w| w == [0xFF, 0xC0]));
    let fast = run("format:png,compression:1");
    let small = run("format:png,compression:9");
    assert!(small.len() <= fast.len());
}

/// `max-bytes:N`: the highest quality whose file fits N, for JPEG and lossy WebP; the
/// quality-1 file when nothing fits; refused where there is no quality to lower.
#[test]
fn max_bytes_finds_the_highest_quality_that_fits() {
    let input = common::png(&common::photo_like(640, 480));
    let l = Limits::default();
    let run = |s: &str| process(&input, &Pipeline::parse(s).unwrap(), &l).unwrap().bytes;
    for (format, default_q) in [("jpeg", 85), ("webp", 80)] {
        let full = run(&format!("format:{format}"));
        let floor = run(&format!("format:{format},quality:1"));
        let max = (full.len() + floor.len()) / 2;
        let fitted = run(&format!("format:{format},max-bytes:{max}"));
        assert!(fitted.len() <= max, "{format}: {} > {max}", fitted.len());
        // The highest that fits: some quality between them gives exactly these bytes, and
        // the next one up does not fit.
        let q = (1..default_q).rev().find(|q| run(&format!("format:{format},quality:{q}")) == fitted);
        let q = q.unwrap_or_else(|| panic!("{format}: the result is no quality's file"));
        assert!(run(&format!("format:{format},quality:{}", q + 1)).len() > max, "{format}: q{} fits too", q + 1);
        // Already small enough: the file at the asked quality, untouched.
        assert!(run(&format!("format:{format},max-bytes:{}", full.len())) == full, "{format}: changed");
        // Unreachable: the smallest file the search met (sizes are not monotonic at the
        // very lowest qualities, so that can be quality 2's rather than 1's).
        let tiny = run(&format!("format:{format},max-bytes:1024"));
        assert!(tiny.len() <= floor.len() && tiny.len() < fitted.len(), "{format}: {} bytes", tiny.len());
    }
    for bad in ["format:png,max-bytes:5000", "format:webp,lossless,max-bytes:5000", "format:gif,max-bytes:5000"] {
        let e = Pipeline::parse(bad).unwrap_err().to_string();
        assert!(e.contains("max-bytes is for JPEG, lossy WebP and AVIF"), "{bad}: {e}");
    }
    assert!(Pipeline::parse("max-bytes:100").unwrap_err().to_string().contains("1024..=100000000"));
    let p = Pipeline::parse("thumbnail:100,max-bytes:20000").unwrap();
    assert_eq!(p.canonical(), "thumbnail:100,max-bytes:20000");
    assert_eq!(Pipeline::parse(&p.canonical()).unwrap(), p);
}
