//! WebP output: lossy by default (libwebp) at a quality, lossless on request (`lossless`),
//! alpha and the ICC profile kept either way.

mod common;

use pixq_kernel::{Channels, Format, Limits, Pipeline, Raster, process};

fn mean_abs_diff(a: &Raster, b: &Raster) -> f64 {
    assert_eq!((a.width(), a.height(), a.channels()), (b.width(), b.height(), b.channels()));
    let sum: u64 = a.data().iter().zip(b.data()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    sum as f64 / a.data().len() as f64
}

#[test]
fn lossy_webp_is_close_smaller_at_lower_quality_and_lossless_is_exact() {
    let src = common::photo_like(320, 200);
    let input = common::png(&src);
    let l = Limits::default();
    let run = |ops: &str| process(&input, &Pipeline::parse(ops).unwrap(), &l).unwrap();
    let q30 = run("format:webp,quality:30");
    let q90 = run("format:webp,quality:90");
    let default = run("format:webp");
    let lossless = run("format:webp,lossless");
    for out in [&q30, &q90, &default, &lossless] {
        assert_eq!((out.format, out.width, out.height), (Format::Webp, 320, 200));
        assert_eq!(Format::sniff(&out.bytes), Some(Format::Webp));
    }
    assert!(q30.bytes.len() < q90.bytes.len(), "{} vs {}", q30.bytes.len(), q90.bytes.len());
    assert!(default.bytes.len() < lossless.bytes.len(), "lossy default larger than lossless");
    let back = |b: &[u8]| pixq_kernel::decode(b, &l).unwrap();
    assert_eq!(back(&lossless.bytes), src, "lossless WebP changed pixels");
    let (e30, e90) = (mean_abs_diff(&back(&q30.bytes), &src), mean_abs_diff(&back(&q90.bytes), &src));
    assert!(e90 < e30 && e90 < 4.0, "mean error q90 {e90:.2}, q30 {e30:.2}");
}

#[test]
fn lossy_webp_keeps_alpha_and_widens_gray() {
    let rgba = Raster::from_fn(64, 40, Channels::Rgba, |x, y, p| {
        p.copy_from_slice(&[(x * 4) as u8, (y * 6) as u8, 90, if x < 32 { 255 } else { 0 }])
    });
    let out = pixq_kernel::encode(&rgba, Format::Webp, &Default::default()).unwrap();
    let back = pixq_kernel::decode(&out, &Limits::default()).unwrap();
    assert_eq!(back.channels(), Channels::Rgba);
    assert_eq!(back.data()[3], 255, "opaque half");
    assert_eq!(back.data()[(63 * 4 + 3) as usize], 0, "transparent half");
    let gray = Raster::from_fn(30, 20, Channels::Gray, |x, y, p| p[0] = (x * 8 + y) as u8);
    let out = pixq_kernel::encode(&gray, Format::Webp, &Default::default()).unwrap();
    let back = pixq_kernel::decode(&out, &Limits::default()).unwrap();
    assert_eq!((back.width(), back.height(), back.channels()), (30, 20, Channels::Rgb));
}

#[test]
fn icc_goes_into_an_extended_webp_with_or_without_alpha() {
    let icc: Vec<u8> = (0..1001u32).map(|i| (i * 13 % 256) as u8).collect();
    let l = Limits::default();
    for channels in [Channels::Rgb, Channels::Rgba] {
        let img = Raster::from_fn(33, 17, channels, |x, y, p| {
            for (i, v) in p.iter_mut().enumerate() {
                *v = (x * 7 + y * 3 + i as u32 * 50) as u8;
            }
        });
        let plain = pixq_kernel::encode(&img, Format::Webp, &Default::default()).unwrap();
        let with = pixq_kernel::meta::webp_with_icc(plain, &icc, 33, 17, channels == Channels::Rgba);
        assert_eq!(&with[12..16], b"VP8X");
        assert_eq!(u32::from_le_bytes(with[4..8].try_into().unwrap()) as usize, with.len() - 8, "RIFF size");
        let probe = pixq_kernel::codec::probe(&with, &l).unwrap();
        assert_eq!((probe.width, probe.height), (33, 17));
        assert_eq!(probe.icc.as_deref(), Some(&icc[..]), "{channels:?}");
        let back = pixq_kernel::decode(&with, &l).unwrap();
        assert_eq!((back.width(), back.height(), back.channels()), (33, 17, channels));
    }
}

#[test]
fn lossless_needs_format_webp() {
    let e = Pipeline::parse("thumbnail:10,lossless").unwrap_err();
    assert_eq!(e.step, 2, "{e}");
    assert!(e.to_string().contains("format:webp"), "{e}");
    assert!(Pipeline::parse("format:png,lossless").is_err());
    let p = Pipeline::parse("lossless,thumbnail:10,format:webp").unwrap();
    assert!(p.output.lossless);
    assert_eq!(p.canonical(), "thumbnail:10,format:webp,lossless");
    assert_eq!(Pipeline::parse(&p.canonical()).unwrap(), p);
}
