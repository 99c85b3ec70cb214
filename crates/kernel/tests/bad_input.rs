//! Corrupt, hostile and over-limit inputs end as typed errors, never panics, and a
//! decompression bomb is refused from its header at the cost of a few MB at most.
#![allow(unsafe_code)]

mod common;

use pixq_kernel::{Error, Format, Limits, Pipeline, process};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes and the peak, so the bomb test measures what it claims.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

fn run(bytes: &[u8]) -> Result<pixq_kernel::Output, Error> {
    process(bytes, &Pipeline::parse("thumbnail:64").unwrap(), &Limits::default())
}

/// A valid PNG header declaring `w x h`, with a tiny zlib stream of zeros as its data.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let push = |out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let s = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let c = common::crc32(&out[s..]);
        out.extend_from_slice(&c.to_be_bytes());
    };
    push(&mut out, b"IHDR", &ihdr);
    // Deflate of a long run of zero bytes compresses ~1000:1; a few KB is enough here.
    let zeros = vec![0u8; 4 << 20];
    let idat = pixq_kernel::png::encode(
        &pixq_kernel::Raster::from_vec(1024, 1024, pixq_kernel::Channels::Rgba, zeros).unwrap(),
        9,
        None,
        &pixq_kernel::Stop::new(),
    )
    .unwrap();
    // Reuse the compressed data of a flat image as the bomb's IDAT payload.
    let start = idat.windows(4).position(|w| w == b"IDAT").unwrap();
    let len = u32::from_be_bytes(idat[start - 4..start].try_into().unwrap()) as usize;
    push(&mut out, b"IDAT", &idat[start + 4..start + 4 + len]);
    push(&mut out, b"IEND", &[]);
    out
}

#[test]
fn png_bomb_is_refused_from_its_header_cheaply() {
    let bomb = png_bomb(60_000, 60_000);
    assert!(bomb.len() < 16 * 1024, "bomb is {} bytes", bomb.len());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let err = run(&bomb).unwrap_err();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(matches!(err, Error::DimensionTooLarge { .. } | Error::TooManyPixels { .. }), "{err}");
    assert!(err.is_limit());
    assert!(peak < 4 << 20, "refusing the bomb allocated {peak} bytes");

    // Within the side limit but over the pixel limit: TooManyPixels, equally cheap.
    let bomb = png_bomb(20_000, 20_000);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let err = run(&bomb).unwrap_err();
    assert!(matches!(err, Error::TooManyPixels { pixels: 400_000_000, .. }), "{err}");
    assert!(PEAK.load(Ordering::Relaxed) - base < 4 << 20);
}

#[test]
fn jpeg_bomb_header_is_refused() {
    // A real JPEG whose SOF is patched to claim 65000 x 65000.
    let mut j = common::jpeg(&common::quadrants(16, 16), 80);
    let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    j[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    let err = run(&j).unwrap_err();
    assert!(err.is_limit(), "{err}");
}

#[test]
fn truncated_jpeg_is_a_decode_error() {
    let j = common::jpeg(&common::photo_like(300, 200), 90);
    for cut in [j.len() / 2, j.len() - 3, 200, 20, 3] {
        let err = run(&j[..cut]).unwrap_err();
        assert!(matches!(err, Error::Decode { format: Format::Jpeg, .. }), "cut {cut}: {err}");
    }
}

#[test]
fn corrupt_bytes_in_the_scan_are_an_error_not_a_panic() {
    let mut j = common::jpeg(&common::photo_like(300, 200), 90);
    let n = j.len();
    for b in &mut j[n / 2..n / 2 + 64] {
        *b = 0xFF;
    }
    // libjpeg-turbo may recover from some damage; either way no panic and no silent success
    // with a wrong size.
    if let Ok(out) = run(&j) {
        assert_eq!((out.width, out.height), (64, 43));
    }
}

#[test]
fn empty_random_and_text_inputs() {
    assert!(matches!(run(&[]).unwrap_err(), Error::Empty));
    let mut seed = 1u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 56) as u8
        })
        .collect();
    assert!(matches!(run(&random).unwrap_err(), Error::UnknownFormat));
    let err = run(b"this is a text file somebody named photo.jpg\n").unwrap_err();
    assert!(matches!(err, Error::UnknownFormat));
    assert!(err.to_string().contains("not a supported image"));
}

#[test]
fn truncated_png_gif_webp_tiff_bmp() {
    let img = common::photo_like(120, 80);
    for f in [Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp] {
        let bytes = pixq_kernel::encode(&img, f, &Default::default()).unwrap();
        for cut in [bytes.len() / 2, 40] {
            let err = run(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{f} cut {cut}: {err}");
        }
    }
}

#[test]
fn format_comes_from_the_bytes_not_the_name() {
    // The kernel never sees names; PNG bytes (say, in a file called x.jpg) decode as PNG.
    let out = run(&common::png(&common::quadrants(100, 50))).unwrap();
    assert_eq!(out.source.format, Format::Png);
    assert_eq!(out.format, Format::Png);
}

#[test]
fn every_limit_is_enforced() {
    let p = Pipeline::default();
    let png = common::png(&common::quadrants(300, 200));
    let small = |l: Limits| process(&png, &p, &l).unwrap_err();
    assert!(matches!(small(Limits::default().max_input_bytes(100)), Error::InputTooLarge { max: 100, .. }));
    assert!(matches!(small(Limits::default().max_pixels(59_999)), Error::TooManyPixels { pixels: 60_000, .. }));
    assert!(matches!(small(Limits::default().max_dimension(299)), Error::DimensionTooLarge { width: 300, .. }));
    let big = Pipeline::parse("resize:20000:0").unwrap();
    let err = process(&png, &big, &Limits::default()).unwrap_err();
    assert!(matches!(err, Error::OutputTooLarge { max: 16_384, .. }), "{err}");
    assert!(err.to_string().contains("resize:20000:0"), "{err}");
    // Exactly at the limits passes.
    let ok = Limits::default().max_pixels(60_000).max_dimension(300).max_input_bytes(png.len() as u64);
    assert!(process(&png, &p, &ok).is_ok());
}

#[test]
fn crop_outside_the_image_names_the_step() {
    let png = common::png(&common::quadrants(100, 50));
    let err = process(&png, &Pipeline::parse("crop:200:0:10:10").unwrap(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("crop:200:0:10:10") && err.to_string().contains("outside"), "{err}");
}

/// The class of steps that make an image larger than their input: each is refused by the
/// plan, from the header alone and before any decode, when its output would pass the
/// largest side, and the error names the step.
#[test]
fn every_growing_step_is_refused_before_decoding() {
    let png = common::png(&common::quadrants(40, 30));
    let l = Limits::default();
    for ops in [
        "resize:20000:0",
        "resize:100:100,resize:0:20000:inside,resize:20000:20000:fill",
        "pad:0:0:16384:0",
        "pad:1000000:1000000:1000000:1000000:00000000",
        "thumbnail:30,pad:8000:9000:8000:9000",
        "smartcrop:16385:10",
        "rotate:45,pad:12000:12000:12000:12000",
    ] {
        let err = pixq_kernel::plan(&png, &Pipeline::parse(ops).unwrap(), &l).unwrap_err();
        assert!(matches!(err, Error::OutputTooLarge { max: 16_384, .. }), "{ops}: {err}");
        let step = ops.split(',').next_back().unwrap().split(':').next().unwrap();
        assert!(err.to_string().contains(step), "{ops}: {err}");
        assert!(matches!(process(&png, &Pipeline::parse(ops).unwrap(), &l), Err(Error::OutputTooLarge { .. })));
    }
    // Just inside the limit it works: a 40 px image padded to exactly 16,384 wide.
    let ok = process(&png, &Pipeline::parse("pad:0:16304:0:40:000000").unwrap(), &l).unwrap();
    assert_eq!((ok.width, ok.height), (16_384, 30));
}

/// `Processor::process_probed` trusts its caller for the header, not for the pixels: a probe
/// of another image of the same format (smaller, larger, other channels) is an error, never
/// an output of the other image's size.
#[test]
fn a_probe_of_other_bytes_is_an_error() {
    use pixq_kernel::{Channels, Processor, Raster, codec};
    let limits = Limits::default();
    let image = |w: u32, h: u32, c: Channels, format: Format| {
        let r = Raster::from_fn(w, h, c, |x, y, p| p.iter_mut().for_each(|v| *v = (x * 7 + y * 3) as u8));
        pixq_kernel::encode(&r, format, &Default::default()).unwrap()
    };
    let pipeline = Pipeline::parse("grayscale").unwrap();
    let mut formats = vec![Format::Jpeg, Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp];
    if cfg!(all(feature = "heif", feature = "avif")) {
        formats.push(Format::Avif);
    }
    for format in formats {
        let small = image(64, 48, Channels::Rgb, format);
        let large = image(128, 96, Channels::Rgb, format);
        let mut p = Processor::new(limits);
        let real = p.process_probed(&small, &codec::probe(&small, &limits).unwrap(), &[&pipeline], &Default::default());
        assert_eq!(real.map(|o| (o[0].width, o[0].height)).ok(), Some((64, 48)), "{format:?}");
        for (input, other) in [(&small, &large), (&large, &small)] {
            let probe = codec::probe(other, &limits).unwrap();
            let out = p.process_probed(input, &probe, &[&pipeline], &Default::default());
            assert!(
                out.is_err(),
                "{format:?}: a probe of other bytes gave {:?}",
                out.map(|o| (o[0].width, o[0].height))
            );
        }
    }
}

/// `process_probed` checks again what is cheap to check: a probe of another format, or one
/// whose size is over this processor's limits, is refused before anything is decoded.
#[test]
fn a_probe_of_another_format_or_over_the_limits_is_refused() {
    use pixq_kernel::{Channels, Processor, Raster, codec};
    let limits = Limits::default();
    let r = Raster::from_fn(64, 48, Channels::Rgb, |x, y, p| p.iter_mut().for_each(|v| *v = (x ^ y) as u8));
    let png = pixq_kernel::encode(&r, Format::Png, &Default::default()).unwrap();
    let jpeg = pixq_kernel::encode(&r, Format::Jpeg, &Default::default()).unwrap();
    let pipeline = Pipeline::parse("grayscale").unwrap();
    let mut p = Processor::new(limits);
    let out = p.process_probed(&jpeg, &codec::probe(&png, &limits).unwrap(), &[&pipeline], &Default::default());
    assert!(matches!(&out, Err(Error::Decode { reason, .. }) if reason.contains("another format")), "{out:?}");
    let mut huge = codec::probe(&png, &limits).unwrap();
    (huge.width, huge.height) = (60_000, 60_000);
    let out = p.process_probed(&png, &huge, &[&pipeline], &Default::default());
    assert!(matches!(out, Err(Error::DimensionTooLarge { .. } | Error::TooManyPixels { .. })), "{out:?}");
}
