//! Hostile input, as a class: structured mutations of real JPEG, PNG, GIF, WebP, TIFF and BMP
//! headers (marker orders, standalone markers, fill bytes, segment lengths at every bound,
//! declared sizes 0/1/65535, truncation at every segment boundary, frames) each run through
//! the kernel, asserting: no panic, the probe's size equals the decoded size or the file is
//! refused, and the heap peak stays under the plan's estimate (or a few MB when refused
//! before planning). Plus the cases: the RST0/APP1 JPEG, the 50000x999 rotate, the
//! upscale-and-blur pipeline, time limits and cancellation, camera-sized defaults.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use pixq_kernel::{Error, Format, Limits, Pipeline, Processor, Stop, process};

/// Counts live heap bytes and the peak of the current thread only, so tests running in
/// parallel do not disturb each other's figures (the kernel is single-threaded).
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let _ = LIVE.try_with(|live| {
                let now = live.get().wrapping_add(l.size());
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
            let _ = TOTAL.try_with(|total| total.set(total.get().wrapping_add(l.size())));
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(l.size())));
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` and returns its result with the heap peak it added on this thread.
fn measured<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get).saturating_sub(base);
    (out, peak as u64)
}

/// Runs `f` and returns its result with the bytes it allocated on this thread, freed or not:
/// a measure of work that a peak does not show.
fn allocated<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let base = TOTAL.with(Cell::get);
    let out = f();
    (out, TOTAL.with(Cell::get).wrapping_sub(base) as u64)
}

/// Tight limits so that a mutation declaring a big size is refused or stays small.
fn limits() -> Limits {
    Limits::default().max_pixels(4_000_000).max_dimension(20_000)
}

const MB: u64 = 1 << 20;

/// The whole contract for one hostile input.
fn check(name: &str, bytes: &[u8], pipeline: &str) {
    let p = Pipeline::parse(pipeline).unwrap();
    let l = limits();
    let planned = pixq_kernel::plan(bytes, &p, &l);
    let (result, peak) = measured(|| std::panic::catch_unwind(|| process(bytes, &p, &l)));
    let result = result.unwrap_or_else(|_| panic!("{name}: the kernel panicked"));
    match planned {
        Ok((probe, plan)) => {
            assert!(
                peak <= plan.peak_bytes,
                "{name}: used {peak} bytes, over the plan's estimate of {} ({})",
                plan.peak_bytes,
                plan.peak_at
            );
            if let Ok(out) = &result {
                assert_eq!((out.source.width, out.source.height), (probe.width, probe.height), "{name}");
                assert_eq!((out.width, out.height), plan.output, "{name}");
            }
        }
        Err(e) => {
            let got = result.as_ref().map(|_| ()).unwrap_err().to_string();
            assert_eq!(got, e.to_string(), "{name}: the probe refused it, the processor must too");
            assert!(peak < 4 * MB, "{name}: refusing it from the header took {peak} bytes");
        }
    }
}

// ---------- JPEG ----------

/// (offset, marker, total length incl. marker) of each segment before the scan, and the SOS
/// offset.
fn jpeg_segments(j: &[u8]) -> (Vec<(usize, u8, usize)>, usize) {
    let mut out = Vec::new();
    let mut i = 2;
    loop {
        assert_eq!(j[i], 0xFF);
        let m = j[i + 1];
        if m == 0xDA {
            return (out, i);
        }
        let len = u16::from_be_bytes([j[i + 2], j[i + 3]]) as usize;
        out.push((i, m, len + 2));
        i += 2 + len;
    }
}

fn jpeg_sample() -> Vec<u8> {
    common::jpeg(&common::photo_like(64, 48), 85)
}

fn splice(base: &[u8], at: usize, insert: &[u8]) -> Vec<u8> {
    let mut v = base[..at].to_vec();
    v.extend_from_slice(insert);
    v.extend_from_slice(&base[at..]);
    v
}

/// An SOF0 segment declaring `w x h` with three components.
fn sof(w: u16, h: u16) -> Vec<u8> {
    let mut s = vec![0xFF, 0xC0, 0, 17, 8];
    s.extend_from_slice(&h.to_be_bytes());
    s.extend_from_slice(&w.to_be_bytes());
    s.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    s
}

/// The file of issue 8: SOI, a standalone RST0, an APP1 of length 0xFFFF whose payload
/// holds a fake 64x64 SOF, then the real frame header patched to `w x h`.
fn crafted_rst_app1(w: u16, h: u16) -> Vec<u8> {
    let j = jpeg_sample();
    let (segs, _) = jpeg_segments(&j);
    let (at, _, _) = *segs.iter().find(|s| s.1 == 0xC0).unwrap();
    let mut real = j.clone();
    real[at + 5..at + 9].copy_from_slice(&[(h >> 8) as u8, h as u8, (w >> 8) as u8, w as u8]);
    let mut app1 = vec![0xFF, 0xE1, 0xFF, 0xFF];
    app1.extend_from_slice(&sof(64, 64));
    app1.resize(2 + 0xFFFF, 0);
    let mut head = vec![0xFF, 0xD0];
    head.extend_from_slice(&app1);
    splice(&real, 2, &head)
}

#[test]
fn the_rst0_app1_jpeg_is_refused_by_what_the_decoder_reads() {
    // 65500 x 65500: over the side limit as the decoder reads it (the fake SOF says 64x64).
    let bomb = crafted_rst_app1(65_500, 65_500);
    let (r, peak) = measured(|| process(&bomb, &Pipeline::parse("thumbnail:64").unwrap(), &Limits::default()));
    let err = r.unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().contains("65500x65500"), "{err}");
    assert!(peak < 4 * MB, "refusing it took {peak} bytes");
    // Within the side limit, over the pixel limit.
    let err = process(&crafted_rst_app1(30_000, 30_000), &Pipeline::default(), &Limits::default()).unwrap_err();
    assert!(matches!(err, Error::TooManyPixels { width: 30_000, height: 30_000, .. }), "{err}");
    // Small real size: the probe reports what the decoder decodes, not the fake 64x64.
    let ok = process(&crafted_rst_app1(64, 48), &Pipeline::default(), &Limits::default());
    if let Ok(out) = ok {
        assert_eq!((out.source.width, out.source.height), (64, 48));
    }
}

#[test]
fn jpeg_marker_mutations() {
    let j = jpeg_sample();
    let (segs, sos) = jpeg_segments(&j);
    let mut boundaries: Vec<usize> = segs.iter().map(|s| s.0).collect();
    boundaries.push(sos);
    let mut n = 0;
    // Standalone markers, fill bytes and garbage at every segment boundary.
    for &b in &boundaries {
        for ins in [
            &[0xFF, 0xD0][..],
            &[0xFF, 0xD7],
            &[0xFF, 0x01],
            &[0xFF, 0xD8],
            &[0xFF, 0xFF, 0xFF],
            &[0x00, 0x12],
            &[0xFF, 0xD9],
        ] {
            check(&format!("jpeg insert {ins:02x?} at {b}"), &splice(&j, b, ins), "thumbnail:32");
            n += 1;
        }
        // A fake frame header inside a comment, and a second real one.
        let mut com = vec![0xFF, 0xFE, 0, 19];
        com.extend_from_slice(&sof(9_000, 9_000));
        check(&format!("jpeg fake SOF in COM at {b}"), &splice(&j, b, &com), "thumbnail:32");
        check(&format!("jpeg second SOF at {b}"), &splice(&j, b, &sof(4_000, 1_000)), "thumbnail:32");
        // Truncation right at the boundary and just after it.
        for cut in [b, b + 1, b + 2, b + 3] {
            check(&format!("jpeg cut at {cut}"), &j[..cut.min(j.len())], "thumbnail:32");
        }
        n += 6;
    }
    // Every segment's length at every bound.
    for &(at, m, len) in &segs {
        for v in [0u16, 1, 2, 3, (len - 3) as u16, (len - 1) as u16, len as u16, 0xFFFE, 0xFFFF] {
            let mut k = j.clone();
            k[at + 2..at + 4].copy_from_slice(&v.to_be_bytes());
            check(&format!("jpeg marker {m:02x} length {v}"), &k, "thumbnail:32");
            n += 1;
        }
    }
    // Declared frame sizes at the bounds.
    let (at, _, _) = *segs.iter().find(|s| s.1 == 0xC0).unwrap();
    for (w, h) in [(0u16, 48u16), (64, 0), (1, 1), (1, 65_535), (65_535, 1), (65_535, 65_535), (2_000, 2_000)] {
        let mut k = j.clone();
        k[at + 5..at + 9].copy_from_slice(&[(h >> 8) as u8, h as u8, (w >> 8) as u8, w as u8]);
        check(&format!("jpeg SOF {w}x{h}"), &k, "thumbnail:32");
        check(&format!("jpeg SOF {w}x{h} full size"), &k, "invert");
        n += 2;
    }
    // Segments swapped with their neighbours.
    for pair in segs.windows(2) {
        let ((a, _, la), (b, _, lb)) = (pair[0], pair[1]);
        let mut k = j[..a].to_vec();
        k.extend_from_slice(&j[b..b + lb]);
        k.extend_from_slice(&j[a..a + la]);
        k.extend_from_slice(&j[b + lb..]);
        check(&format!("jpeg swap segments at {a}/{b}"), &k, "thumbnail:32");
        n += 1;
    }
    assert!(n > 100, "only {n} cases");
}

// ---------- PNG ----------

/// (offset, type, total length) of each chunk.
fn png_chunks(p: &[u8]) -> Vec<(usize, [u8; 4], usize)> {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 12 <= p.len() {
        let len = u32::from_be_bytes(p[i..i + 4].try_into().unwrap()) as usize;
        out.push((i, p[i + 4..i + 8].try_into().unwrap(), len + 12));
        i += len + 12;
    }
    out
}

fn fix_crc(p: &mut [u8], at: usize) {
    let len = u32::from_be_bytes(p[at..at + 4].try_into().unwrap()) as usize;
    if at + 12 + len <= p.len() {
        let c = common::crc32(&p[at + 4..at + 8 + len]);
        p[at + 8 + len..at + 12 + len].copy_from_slice(&c.to_be_bytes());
    }
}

#[test]
fn png_chunk_mutations() {
    let p = common::png(&common::photo_like(64, 48));
    let chunks = png_chunks(&p);
    for &(at, kind, len) in &chunks {
        let name = String::from_utf8_lossy(&kind).into_owned();
        for cut in [at, at + 4, at + 8, at + len - 4, at + len - 1] {
            check(&format!("png cut in {name} at {cut}"), &p[..cut], "thumbnail:32");
        }
        for v in [0u32, 1, len.saturating_sub(13) as u32, (len - 11) as u32, 0x7FFF_FFFF, u32::MAX] {
            let mut k = p.clone();
            k[at..at + 4].copy_from_slice(&v.to_be_bytes());
            check(&format!("png {name} length {v}"), &k, "thumbnail:32");
        }
        let mut k = p.clone();
        k[at + len - 1] ^= 0xFF;
        check(&format!("png {name} bad crc"), &k, "thumbnail:32");
    }
    // IHDR sizes, bit depths and colour types at the bounds (CRC fixed, so the decoder sees them).
    for (w, h) in
        [(0u32, 48u32), (64, 0), (1, 1), (65_535, 1), (1, 65_535), (65_535, 65_535), (1 << 31, 1), (3_000, 1_000)]
    {
        let mut k = p.clone();
        k[16..20].copy_from_slice(&w.to_be_bytes());
        k[20..24].copy_from_slice(&h.to_be_bytes());
        fix_crc(&mut k, 8);
        check(&format!("png IHDR {w}x{h}"), &k, "thumbnail:32");
        check(&format!("png IHDR {w}x{h} blur"), &k, "blur:1");
    }
    for (depth, colour) in [(16u8, 2u8), (16, 6), (1, 0), (4, 3), (8, 3), (8, 4), (7, 2), (8, 5)] {
        let mut k = p.clone();
        k[24] = depth;
        k[25] = colour;
        fix_crc(&mut k, 8);
        check(&format!("png depth {depth} colour {colour}"), &k, "thumbnail:32");
    }
    // Chunks in the wrong order: IDAT before IHDR, IEND first.
    let (ihdr, idat) = (chunks[0], *chunks.iter().find(|c| &c.1 == b"IDAT").unwrap());
    let mut k = p[..8].to_vec();
    k.extend_from_slice(&p[idat.0..idat.0 + idat.2]);
    k.extend_from_slice(&p[ihdr.0..ihdr.0 + ihdr.2]);
    k.extend_from_slice(&p[idat.0 + idat.2..]);
    check("png IDAT before IHDR", &k, "thumbnail:32");
}

// ---------- GIF, WebP, TIFF, BMP ----------

fn gif_frames(w: u16, h: u16, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for k in 0..frames {
            let buf = image::RgbaImage::from_pixel(u32::from(w), u32::from(h), image::Rgba([k as u8 * 60, 9, 9, 255]));
            enc.encode_frame(image::Frame::new(buf)).unwrap();
        }
    }
    out
}

#[test]
fn gif_header_and_frame_mutations() {
    let g = gif_frames(40, 30, 3);
    for (w, h) in [(0u16, 30u16), (40, 0), (1, 1), (65_535, 65_535), (65_535, 1), (2_000, 2_000)] {
        let mut k = g.clone();
        k[6..8].copy_from_slice(&w.to_le_bytes());
        k[8..10].copy_from_slice(&h.to_le_bytes());
        check(&format!("gif screen {w}x{h}"), &k, "thumbnail:32");
        check(&format!("gif screen {w}x{h} frame 2"), &k, "frame:2,thumbnail:32");
    }
    // Image descriptors (0x2C) with frame sizes beyond the screen.
    let descs: Vec<usize> = g.iter().enumerate().filter(|(_, b)| **b == 0x2C).map(|(i, _)| i).collect();
    for &d in descs.iter().take(6) {
        for (fw, fh) in [(65_535u16, 65_535u16), (0, 0), (41, 31)] {
            let mut k = g.clone();
            if d + 9 <= k.len() {
                k[d + 5..d + 7].copy_from_slice(&fw.to_le_bytes());
                k[d + 7..d + 9].copy_from_slice(&fh.to_le_bytes());
            }
            check(&format!("gif descriptor at {d} {fw}x{fh}"), &k, "frame:2,format:png");
        }
        check(&format!("gif cut at descriptor {d}"), &g[..d], "frame:1,format:png");
    }
    for cut in (6..g.len()).step_by(7) {
        check(&format!("gif cut at {cut}"), &g[..cut], "thumbnail:16");
    }
}

#[test]
fn webp_tiff_bmp_header_mutations() {
    let img = common::photo_like(48, 32);
    for f in [Format::Webp, Format::Tiff, Format::Bmp] {
        let base = pixq_kernel::encode(&img, f, &Default::default()).unwrap();
        let lossless = pixq_kernel::encode(
            &img,
            f,
            &pixq_kernel::OutputSpec { lossless: f == Format::Webp, ..Default::default() },
        );
        for bytes in [Some(base.clone()), lossless.ok()].into_iter().flatten() {
            for cut in (0..bytes.len().min(96)).chain([bytes.len() / 2, bytes.len() - 1]) {
                check(&format!("{f} cut at {cut}"), &bytes[..cut], "thumbnail:16");
            }
            // Every header byte set to the extremes, one at a time.
            for at in 0..bytes.len().min(64) {
                for v in [0x00, 0x01, 0x7F, 0xFF] {
                    let mut k = bytes.clone();
                    k[at] = v;
                    check(&format!("{f} byte {at} = {v:#x}"), &k, "thumbnail:16");
                }
            }
        }
    }
}

// ---------- memory: steps are sized before they allocate ----------

/// A PNG header declaring `w x h` with a small, valid-looking IDAT (never decoded here).
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut p = common::png(&common::photo_like(8, 8));
    p[16..20].copy_from_slice(&w.to_be_bytes());
    p[20..24].copy_from_slice(&h.to_be_bytes());
    fix_crc(&mut p, 8);
    p
}

#[test]
fn an_oversized_rotation_is_refused_before_decoding() {
    let png = png_header_only(50_000, 999);
    let (r, peak) =
        measured(|| process(&png, &Pipeline::parse("rotate:45").unwrap(), &Limits::default().max_dimension(50_000)));
    let err = r.unwrap_err();
    assert!(matches!(err, Error::OutputTooLarge { width: 36062, height: 36062, .. }), "{err}");
    assert!(peak < 4 * MB, "refusing it took {peak} bytes");
}

#[test]
fn the_plan_prices_an_upscale_and_blur_and_a_budget_refuses_it() {
    let png = common::png(&common::photo_like(8, 8));
    let p = Pipeline::parse("resize:16384:16384:fill,blur:1").unwrap();
    let (_, plan) = pixq_kernel::plan(&png, &p, &Limits::default()).unwrap();
    // Three 16384^2 RGB images at once (during the blur, and while encoding): about 2.3 GiB.
    assert!(plan.peak_bytes > 2_300_000_000, "{plan:?}");
    assert!(plan.peak_at.contains("16384x16384"), "{}", plan.peak_at);
    let err = plan.check_budget(1 << 30).unwrap_err();
    assert!(matches!(err, Error::OverBudget { budget_mb: 1024, .. }), "{err}");
    assert!(err.to_string().contains("MB") && err.to_string().contains("16384x16384"), "{err}");
    // A thumbnail of a 61 MP camera photo is cheap: shrink-on-load.
    let cam = common::jpeg(&common::photo_like(64, 48), 80);
    let (segs, _) = jpeg_segments(&cam);
    let (at, _, _) = *segs.iter().find(|s| s.1 == 0xC0).unwrap();
    let mut big = cam.clone();
    big[at + 5..at + 9].copy_from_slice(&[(6336u16 >> 8) as u8, 6336u16 as u8, (9504u16 >> 8) as u8, 9504u16 as u8]);
    let (probe, plan) =
        pixq_kernel::plan(&big, &Pipeline::parse("thumbnail:1024").unwrap(), &Limits::default()).unwrap();
    assert_eq!((probe.width, probe.height), (9504, 6336));
    if cfg!(feature = "turbojpeg") {
        assert!(plan.peak_bytes < 64 * MB, "{plan:?}");
    } else {
        // The pure-Rust decoder cannot shrink on load: the plan prices the full decode.
        assert!(plan.peak_bytes > 9504 * 6336 * 3, "{plan:?}");
    }
}

#[test]
fn the_estimate_covers_what_real_pipelines_allocate() {
    let photo = common::photo_like(640, 427);
    let mut rgba = pixq_kernel::Raster::new(300, 200, pixq_kernel::Channels::Rgba);
    rgba.data_mut().iter_mut().enumerate().for_each(|(i, v)| *v = (i * 7 % 251) as u8);
    let inputs = [
        ("jpeg", common::jpeg(&photo, 90)),
        ("png", common::png(&photo)),
        ("png rgba", common::png(&rgba)),
        ("gif", pixq_kernel::encode(&photo, Format::Gif, &Default::default()).unwrap()),
        ("tiff", pixq_kernel::encode(&photo, Format::Tiff, &Default::default()).unwrap()),
        ("webp", pixq_kernel::encode(&photo, Format::Webp, &Default::default()).unwrap()),
        ("jpeg oriented", common::with_exif_orientation(&common::jpeg(&photo, 90), 6)),
        // CMYK without a profile: the first one also builds the built-in press profile.
        ("cmyk jpeg", cmyk_jpeg(&photo, jpeg_encoder::ColorType::Cmyk)),
        ("ycck jpeg", cmyk_jpeg(&photo, jpeg_encoder::ColorType::CmykAsYcck)),
    ];
    let pipelines = [
        "thumbnail:200",
        "resize:1500:1000:fill,blur:2",
        "resize:300:300:cover:mitchell,sharpen:1",
        "rotate:33:00000000,format:png",
        "rotate:90,grayscale,sobel,format:png",
        "crop:10:10:300:200,aspect:1:1:north,smartcrop:100:100",
        "invert,contrast:1.5,threshold:100,format:webp",
        "flip:v,gamma:2,format:tiff",
        "blur:4,format:bmp",
        "resize:2000:0,format:webp,lossless",
        "trim,thumbnail:200",
        #[cfg(feature = "avif")]
        "resize:1200:0,format:avif",
        #[cfg(feature = "avif")]
        "thumbnail:300,format:avif,speed:9,max-bytes:4096",
    ];
    for (name, bytes) in &inputs {
        for p in pipelines {
            within_plan(name, bytes, p);
        }
    }
}

/// An RGB raster as a CMYK (or YCCK) JPEG with no profile: grey component replacement in
/// full, inverted inks under an Adobe marker (jpeg-encoder's way).
fn cmyk_jpeg(img: &pixq_kernel::Raster, ct: jpeg_encoder::ColorType) -> Vec<u8> {
    let inks: Vec<u8> = img
        .data()
        .chunks(3)
        .flat_map(|p| {
            let k = 255 - *p.iter().max().unwrap();
            let ink = |v: u8| if k == 255 { 0 } else { (u32::from(255 - v - k) * 255 / u32::from(255 - k)) as u8 };
            [ink(p[0]), ink(p[1]), ink(p[2]), k]
        })
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90).encode(&inks, img.width() as u16, img.height() as u16, ct).unwrap();
    out
}

/// Runs `p` on `bytes` with default limits under the counting allocator: it succeeds, makes
/// the planned size and stays under the planned peak. Returns the plan and the output.
fn within_plan(name: &str, bytes: &[u8], p: &str) -> (pixq_kernel::Plan, pixq_kernel::Output) {
    let limits = Limits::default();
    let pipeline = Pipeline::parse(p).unwrap();
    let (_, plan) = pixq_kernel::plan(bytes, &pipeline, &limits).unwrap();
    let mut proc = Processor::new(limits);
    let (out, peak) = measured(|| proc.process(bytes, &pipeline));
    let out = out.unwrap_or_else(|e| panic!("{name} / {p}: {e}"));
    assert_eq!((out.width, out.height), plan.output, "{name} / {p}");
    assert!(
        peak <= plan.peak_bytes,
        "{name} / {p}: used {peak} bytes, over the estimate of {} ({})",
        plan.peak_bytes,
        plan.peak_at
    );
    (plan, out)
}

/// Animations written frame by frame stay within their plan: the decoder's canvases, each
/// frame's steps and encode, and the file growing frame after frame.
#[test]
fn the_estimate_covers_animations() {
    let (w, h) = (320u32, 240u32);
    let frames: Vec<Vec<u8>> = (0..6u32)
        .map(|k| {
            let r = common::photo_like(w + k * 7, h);
            let r = pixq_kernel::ops::geometry::crop(&r, pixq_kernel::Rect { x: k * 7, y: 0, width: w, height: h })
                .unwrap();
            pixq_kernel::ops::color::convert(&r, pixq_kernel::Channels::Rgba).into_vec()
        })
        .collect();
    let mut gif = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut gif, w as u16, h as u16, &[]).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for f in &frames {
            let mut px = f.clone();
            enc.write_frame(&gif::Frame::from_rgba_speed(w as u16, h as u16, &mut px, 10)).unwrap();
        }
    }
    let cfg = webp::WebPConfig::new().unwrap();
    let mut enc = webp::AnimEncoder::new(w, h, &cfg);
    for (k, f) in frames.iter().enumerate() {
        enc.add_frame(webp::AnimFrame::from_rgba(f, w, h, k as i32 * 100));
    }
    let webp = enc.try_encode().unwrap().to_vec();
    for (name, bytes) in [("gif", &gif), ("webp", &webp)] {
        for p in [
            "thumbnail:200",
            "resize:900:700:fill,blur:2",
            "format:webp",
            "format:webp,lossless",
            "rotate:90,grayscale,format:gif",
            "smartcrop:100:100,format:gif",
            "pixelate:8,format:webp,quality:50",
        ] {
            let (plan, out) = within_plan(name, bytes, p);
            assert_eq!(plan.frames, 6, "{name} / {p}");
            assert_eq!(pixq_kernel::anim::scan(&out.bytes, out.format).map(|a| a.frames), Some(6), "{name} / {p}");
        }
    }
}

/// Every byte of an animated WebP's container (RIFF sizes, VP8X canvas, ANIM, ANMF offsets,
/// sizes and durations) and of an animated GIF's blocks set to extremes, and cuts: a clear
/// error or an output within the plan, never a panic.
#[test]
fn animation_block_mutations() {
    let cfg = webp::WebPConfig::new().unwrap();
    let frames: Vec<Vec<u8>> =
        (0..4u8).map(|k| (0..40 * 30u32).flat_map(|i| [(i % 251) as u8, k * 60, 90, 255]).collect()).collect();
    let mut enc = webp::AnimEncoder::new(40, 30, &cfg);
    for (k, f) in frames.iter().enumerate() {
        enc.add_frame(webp::AnimFrame::from_rgba(f, 40, 30, k as i32 * 80));
    }
    let webp = enc.try_encode().unwrap().to_vec();
    let gif = gif_frames(40, 30, 4);
    for (name, base) in [("webp", &webp), ("gif", &gif)] {
        let head = base.len().min(120);
        for at in 0..head {
            for v in [0x00u8, 0xFF] {
                let mut k = base.clone();
                k[at] = v;
                check(&format!("animated {name} byte {at} = {v:#x}"), &k, "thumbnail:16");
                if v == 0xFF {
                    check(&format!("animated {name} byte {at} = {v:#x}, frame 2"), &k, "frame:2,format:png");
                }
            }
        }
        for cut in (12..base.len()).step_by(base.len() / 16 + 1) {
            check(&format!("animated {name} cut at {cut}"), &base[..cut], "format:webp");
        }
    }
}

/// Variants from one decode stay within their union plan (the largest variant with the
/// shared decode held).
#[test]
fn the_estimate_covers_variants_sharing_a_decode() {
    let photo = common::jpeg(&common::photo_like(1600, 1200), 90);
    let limits = Limits::default();
    for list in [
        "s=thumbnail:100;m=thumbnail:400;l=thumbnail:900",
        "s=thumbnail:100;g=grayscale,blur:2,format:png;big=resize:2400:0",
        #[cfg(feature = "avif")]
        "a=thumbnail:200,format:webp;b=thumbnail:600,format:avif",
    ] {
        let vs = pixq_kernel::op::variants::parse(list).unwrap();
        let pipelines: Vec<&Pipeline> = vs.iter().map(|v| &v.pipeline).collect();
        let (_, plan) = pixq_kernel::plan_all(&photo, &pipelines, &limits).unwrap();
        let mut proc = Processor::new(limits);
        let (outs, peak) = measured(|| proc.process_variants(&photo, &pipelines, &Stop::new()));
        assert_eq!(outs.unwrap_or_else(|e| panic!("{list}: {e}")).len(), vs.len());
        assert!(
            peak <= plan.peak_bytes,
            "{list}: used {peak} bytes, over the estimate of {} ({})",
            plan.peak_bytes,
            plan.peak_at
        );
    }
}

// ---------- time: limits and cancellation ----------

#[test]
fn a_time_limit_stops_a_long_pipeline_and_cancel_stops_it_from_another_thread() {
    let png = common::png(&common::photo_like(1500, 1000));
    let long = Pipeline::parse(&vec!["blur:40"; 30].join(",")).unwrap();
    let mut proc = Processor::new(Limits::default());
    let stop = Stop::new().with_time_limit(Duration::from_millis(50));
    let err = proc.process_with(&png, &long, &stop).unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err}");
    assert!(err.is_limit());

    let stop = Stop::new();
    let remote = stop.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        remote.cancel();
    });
    let err = proc.process_with(&png, &long, &stop).unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(!err.is_limit(), "a cancel is the caller's, not the input's");
    // The processor is still good for the next job.
    assert!(proc.process(&png, &Pipeline::parse("thumbnail:10").unwrap()).is_ok());
}

// ---------- defaults that fit real cameras ----------

#[test]
fn default_limits_accept_current_camera_sizes() {
    for (w, h) in [(9431, 5305), (8688, 5792), (9504, 6336), (11_648, 8736)] {
        let png = png_header_only(w, h);
        let probe = pixq_kernel::codec::probe(&png, &Limits::default()).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
        assert_eq!((probe.width, probe.height), (w, h));
    }
    assert!(pixq_kernel::codec::probe(&png_header_only(20_000, 20_000), &Limits::default()).is_err());
}

/// A PNG whose iCCP chunk is a zlib bomb: 64 MB of profile in a few KB of file. Reading the
/// profile must not cost what it declares (the decoder's own chunk limit, then ours).
#[test]
fn an_icc_profile_bomb_is_cheap() {
    let p = common::png(&common::photo_like(32, 24));
    let mut body = b"icc\0\0".to_vec();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &vec![0u8; 64 << 20]).unwrap();
    body.extend_from_slice(&z.finish().unwrap());
    let bomb = common::png_with_chunk(&p, b"iCCP", &body);
    assert!(bomb.len() < 200 << 10, "{}", bomb.len());
    check("png iCCP bomb", &bomb, "thumbnail:16");
    let (_, peak) = measured(|| pixq_kernel::codec::probe(&bomb, &limits()));
    assert!(peak < 24 * MB, "probing it took {peak} bytes");
}

/// One processor runs job after job and keeps its largest pixel buffers between them. Each
/// output is the bytes a fresh processor makes: a kept buffer's old pixels never show, also
/// in a JPEG cut short after a whole one, a smaller image after a larger one and another
/// pipeline in between. Each job stays within its plan, and the second of two like jobs
/// allocates much less than the first: the decode and the thumbnail reuse kept buffers.
#[test]
fn a_reused_processor_gives_what_a_fresh_one_gives_within_each_plan() {
    let big = common::jpeg(&common::photo_like(2400, 1600), 90);
    let other = common::jpeg(&common::quadrants(1500, 1100), 85);
    // Scan data garbled from a third of the way on (markers intact): the decoder stops at
    // the first corrupt code (warnings are errors), its buffer goes with the error, and the
    // jobs after it still match.
    let mut cut = big.clone();
    for i in (big.len() / 3..big.len() - 2).step_by(61) {
        if cut[i] != 0xFF && cut[i - 1] != 0xFF && cut[i] ^ 0x35 != 0xFF {
            cut[i] ^= 0x35;
        }
    }
    let limits = Limits::default();
    let mut proc = Processor::new(limits);
    let mut peaks = Vec::new();
    for (name, bytes, p) in [
        ("big", &big, "thumbnail:600"),
        ("big", &big, "thumbnail:600"),
        ("other", &other, "thumbnail:600"),
        ("cut", &cut, "thumbnail:600"),
        ("big", &big, "resize:500:500:fill,sharpen:1"),
        ("other", &other, "smartcrop:300:200"),
        ("cut", &cut, "resize:640:480"),
        ("big", &big, "thumbnail:1200,grayscale"),
        ("other", &other, "thumbnail:2000"),
    ] {
        let pipeline = Pipeline::parse(p).unwrap();
        let (_, plan) = pixq_kernel::plan(bytes, &pipeline, &limits).unwrap();
        let (out, peak) = measured(|| proc.process(bytes, &pipeline));
        let fresh = Processor::new(limits).process(bytes, &pipeline);
        match (out, fresh) {
            (Ok(a), Ok(b)) => assert!(a.bytes == b.bytes, "{name} / {p}: the reused processor made other bytes"),
            (Err(a), Err(b)) if a.to_string() == b.to_string() => {}
            (a, b) => {
                panic!("{name} / {p}: reused {:?}, fresh {:?}", a.map(|o| o.bytes.len()), b.map(|o| o.bytes.len()))
            }
        }
        assert!(peak <= plan.peak_bytes, "{name} / {p}: used {peak} bytes, over the estimate of {}", plan.peak_bytes);
        peaks.push(peak);
    }
    // The photo decodes at 1/2 scale (1200x800, 2.9 MB), the thumbnail is 600x400.
    assert!(peaks[1] + 2 * MB < peaks[0], "the second like job allocated {} bytes, the first {}", peaks[1], peaks[0]);
}

/// A RIFF chunk: fourcc, little-endian size, payload, pad byte.
fn riff_chunk(kind: &[u8; 4], declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut c = kind.to_vec();
    c.extend_from_slice(&declared.to_le_bytes());
    c.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// A WebP's metadata chunks (EXIF, ICCP, XMP) whose declared sizes run far past the end of
/// the file (up to 4 GiB) or past the limits: read from the file's own bytes, never
/// allocated at their declared size, in any order around the image chunk.
#[test]
fn webp_metadata_chunks_that_claim_gigabytes_allocate_nothing_of_the_kind() {
    let img = common::photo_like(48, 32);
    let lossless =
        pixq_kernel::encode(&img, Format::Webp, &pixq_kernel::OutputSpec { lossless: true, ..Default::default() })
            .unwrap();
    // The image chunk (VP8L) of a plain lossless WebP.
    let image = &lossless[12..];
    let vp8x = |flags: u8| {
        let mut p = vec![flags, 0, 0, 0];
        p.extend_from_slice(&(47u32.to_le_bytes()[..3]));
        p.extend_from_slice(&(31u32.to_le_bytes()[..3]));
        riff_chunk(b"VP8X", 10, &p)
    };
    let file = |chunks: &[Vec<u8>]| {
        let body: Vec<u8> = b"WEBP".iter().copied().chain(chunks.iter().flatten().copied()).collect();
        let mut f = b"RIFF".to_vec();
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&body);
        f
    };
    for kind in [b"EXIF", b"ICCP", b"XMP "] {
        for declared in [u32::MAX, u32::MAX - 1, 0x8000_0000, 64 << 20, 9 << 20] {
            let huge = riff_chunk(kind, declared, b"Exif\0\0MM\0*");
            for flags in [0x2c, 0x00, 0xff] {
                for order in
                    [vec![vp8x(flags), image.to_vec(), huge.clone()], vec![vp8x(flags), huge.clone(), image.to_vec()]]
                {
                    let name = format!("webp {} of {declared} bytes, flags {flags:#x}", String::from_utf8_lossy(kind));
                    check(&name, &file(&order), "thumbnail:16");
                    check(&name, &file(&order), "thumbnail:16,keep-icc,format:webp");
                }
            }
        }
    }
}

/// JPEG APP2 segments each claiming to be one of an ICC profile's parts: thousands of tiny
/// ones, more parts than a profile can have (255), parts adding up past the ICC limit. The
/// file is processed within the plan's memory estimate and the profile is ignored.
#[test]
fn jpeg_icc_parts_by_the_thousand_stay_within_the_plan() {
    let base = jpeg_sample();
    let part = |seq: u8, of: u8, body: &[u8]| {
        let mut s = vec![0xFF, 0xE2];
        s.extend_from_slice(&((2 + 14 + body.len()) as u16).to_be_bytes());
        s.extend_from_slice(b"ICC_PROFILE\0");
        s.extend_from_slice(&[seq, of]);
        s.extend_from_slice(body);
        s
    };
    let tiny: Vec<u8> = (0..1_000_000).flat_map(|_| part(1, 1, &[0])).collect();
    let spam = splice(&base, 2, &tiny);
    check("1,000,000 one-byte ICC parts", &spam, "thumbnail:16");
    let e = pixq_kernel::plan(&spam, &Pipeline::parse("thumbnail:16").unwrap(), &limits()).unwrap_err();
    assert!(e.to_string().contains("1000000 parts"), "{e}");
    // The parts are dropped as they pass 255, not collected first (a million of them took
    // 24 MB, and a 100 MB file five times that).
    let (meta, peak) = measured(|| pixq_kernel::meta::read_jpeg_meta(&spam));
    assert!(meta.icc.is_none());
    assert!(peak < 64 << 10, "reading the segments took {peak} bytes");
    let many: Vec<u8> = (0..300u32).flat_map(|k| part((k % 255 + 1) as u8, 255, &[7; 100])).collect();
    check("300 ICC parts of 255", &splice(&base, 2, &many), "thumbnail:16");
    // 255 parts are a profile's most, and no reason to refuse the file.
    let most: Vec<u8> = (0..255u32).flat_map(|k| part((k + 1) as u8, 255, &[7; 100])).collect();
    check("255 ICC parts", &splice(&base, 2, &most), "thumbnail:16");
    if let Err(e) = pixq_kernel::plan(&splice(&base, 2, &most), &Pipeline::parse("thumbnail:16").unwrap(), &limits()) {
        assert!(!e.to_string().contains("parts"), "{e}");
    }
    let big: Vec<u8> = (0..40u8).flat_map(|k| part(k + 1, 40, &vec![1; 65_000])).collect();
    check("40 ICC parts of 65 KB", &splice(&base, 2, &big), "thumbnail:16,keep-icc");
}

/// `frame:N` decodes (and composes on the whole canvas) every frame before N: it is
/// refused from the header when N+1 canvases pass the animation limits, as a whole
/// animation of that many frames would be, and the plan counts the frames it decodes.
#[test]
fn a_late_frame_of_a_large_canvas_is_refused_from_the_header() {
    let mut g = gif_frames(2, 2, 3);
    // A 2000x2000 screen (4 MP): three frames fit 500 MP; frame 199 would decode 800 MP.
    g[6..8].copy_from_slice(&2000u16.to_le_bytes());
    g[8..10].copy_from_slice(&2000u16.to_le_bytes());
    let l = Limits::default();
    let p = |s: &str| Pipeline::parse(s).unwrap();
    let (_, one) = pixq_kernel::plan(&g, &p("frame:1,format:png"), &l).unwrap();
    let (_, two) = pixq_kernel::plan(&g, &p("frame:2,format:png"), &l).unwrap();
    assert!(two.cpu_ns > one.cpu_ns, "frame 2 decodes more frames than frame 1: {} vs {}", two.cpu_ns, one.cpu_ns);
    let tight = l.max_animation_pixels(10_000_000);
    match pixq_kernel::plan(&g, &p("frame:2,format:png"), &tight) {
        Err(Error::AnimationTooLarge { frames: 3, .. }) => {}
        other => panic!("frame 2 of a 4 MP canvas under 10 MP: {other:?}"),
    }
    let e = process(&g, &p("frame:2,format:png"), &tight).unwrap_err().to_string();
    assert!(e.contains("frame:2 decodes the frames before it"), "{e}");
    // Within the limits it still works.
    assert!(process(&g, &p("frame:1,format:png"), &tight).is_ok());
}

/// A JPEG segment whose length field is 0 or 1 is read as libjpeg reads it (an empty
/// segment, the next marker right after it), so the EXIF orientation behind it still applies.
#[test]
fn a_segment_length_under_two_does_not_hide_the_segments_behind_it() {
    let upright = common::jpeg(&common::quadrants(64, 48), 95);
    let rotated = common::with_exif_orientation(&upright, 6);
    for len in [0u16, 1] {
        let mut seg = vec![0xFF, 0xE0];
        seg.extend_from_slice(&len.to_be_bytes());
        let k = splice(&rotated, 2, &seg);
        let out = process(&k, &Pipeline::parse("format:png").unwrap(), &Limits::default());
        let Ok(out) = out else { continue };
        assert_eq!((out.width, out.height), (48, 64), "length {len}: the EXIF orientation behind it was lost");
    }
}

/// A WebP whose lossy picture (VP8 frame header) claims another size than its canvas, or an
/// animation frame's picture another size than its frame: refused from the header (the
/// decoder would size its planes from the picture: 16383x16383 is 400 MB).
#[test]
fn a_webp_picture_larger_than_its_place_is_refused_from_the_header() {
    let img = common::photo_like(48, 32);
    let still = pixq_kernel::encode(&img, Format::Webp, &Default::default()).unwrap();
    let vp8 = still.windows(4).position(|w| w == b"VP8 ").expect("a lossy WebP") + 8;
    // As a VP8X file (canvas 48x32), so the canvas and the picture are declared apart.
    let mut vp8x = riff_chunk(b"VP8X", 10, &[0, 0, 0, 0, 47, 0, 0, 31, 0, 0]);
    vp8x.extend_from_slice(&still[12..]);
    let extended: Vec<u8> =
        b"RIFF".iter().copied().chain(((vp8x.len() + 4) as u32).to_le_bytes()).chain(*b"WEBP").chain(vp8x).collect();
    let at = extended.windows(4).position(|w| w == b"VP8 ").unwrap() + 8;
    assert_eq!(&extended[at + 3..at + 6], &[0x9D, 0x01, 0x2A]);
    for (file, at) in [(still.clone(), vp8), (extended.clone(), at)] {
        for (w, h) in [(16_383u16, 16_383u16), (16_383, 32), (48, 16_383), (49, 32), (1, 1)] {
            let mut k = file.clone();
            k[at + 6..at + 8].copy_from_slice(&w.to_le_bytes());
            k[at + 8..at + 10].copy_from_slice(&h.to_le_bytes());
            check(&format!("webp picture {w}x{h} in 48x32"), &k, "thumbnail:16");
        }
    }
    let mut k = extended.clone();
    k[at + 6..at + 8].copy_from_slice(&16_383u16.to_le_bytes());
    k[at + 8..at + 10].copy_from_slice(&16_383u16.to_le_bytes());
    let e = pixq_kernel::plan(&k, &Pipeline::parse("thumbnail:16").unwrap(), &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("16383x16383"), "{e}");
    // An animation frame's picture.
    let frames: Vec<u8> = {
        let g = gif_frames(40, 30, 3);
        process(&g, &Pipeline::parse("format:webp").unwrap(), &Limits::default()).unwrap().bytes
    };
    let anmf = frames.windows(4).position(|w| w == b"ANMF").expect("an animated WebP") + 8;
    let sub = frames[anmf + 16..].windows(4).position(|w| w == b"VP8 ").expect("a lossy frame") + anmf + 16 + 8;
    for (w, h) in [(16_383u16, 16_383u16), (41, 30)] {
        let mut k = frames.clone();
        k[sub + 6..sub + 8].copy_from_slice(&w.to_le_bytes());
        k[sub + 8..sub + 10].copy_from_slice(&h.to_le_bytes());
        check(&format!("animated webp frame picture {w}x{h}"), &k, "format:webp");
        check(&format!("animated webp frame picture {w}x{h}, still"), &k, "thumbnail:16");
        assert!(pixq_kernel::plan(&k, &Pipeline::parse("format:webp").unwrap(), &Limits::default()).is_err());
    }
}

/// A little-endian TIFF of one IFD: `entries` are (tag, type, count, value bytes), written
/// inline when they fit in four bytes; `data` goes right after the IFD (its offset is what
/// the strip offsets should name: see `tiff_data_at`).
fn tiff(entries: &[(u16, u16, u32, Vec<u8>)], data: &[u8]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| e.0);
    let ifd_end = 8 + 2 + 12 * sorted.len() + 4;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(sorted.len() as u16).to_le_bytes());
    let mut extra = Vec::new();
    for (tag, kind, count, bytes) in &sorted {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        if bytes.len() <= 4 {
            let mut v = bytes.clone();
            v.resize(4, 0);
            out.extend_from_slice(&v);
        } else {
            out.extend_from_slice(&((ifd_end + data.len() + extra.len()) as u32).to_le_bytes());
            extra.extend_from_slice(bytes);
            if extra.len() % 2 == 1 {
                extra.push(0);
            }
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&extra);
    out
}

fn tiff_data_at(entries: usize) -> u32 {
    (8 + 2 + 12 * entries + 4) as u32
}

fn short(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn long(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A 16x16 RGB TIFF, uncompressed or with one JPEG strip, plus `more` entries.
fn tiff_rgb(jpeg: Option<&[u8]>, more: &[(u16, u16, u32, Vec<u8>)]) -> Vec<u8> {
    let pixels: Vec<u8> = [200u8, 40, 40].repeat(256);
    let data = jpeg.unwrap_or(&pixels);
    let mut e = vec![
        (256, 3, 1, short(16)),
        (257, 3, 1, short(16)),
        (258, 3, 3, [8u16, 8, 8].iter().flat_map(|v| v.to_le_bytes()).collect()),
        (259, 3, 1, short(if jpeg.is_some() { 7 } else { 1 })),
        (262, 3, 1, short(if jpeg.is_some() { 6 } else { 2 })),
        (273, 4, 1, long(0)),
        (277, 3, 1, short(3)),
        (278, 3, 1, short(16)),
        (279, 4, 1, long(data.len() as u32)),
    ];
    e.extend_from_slice(more);
    let at = tiff_data_at(e.len());
    e[5].3 = long(at);
    tiff(&e, data)
}

/// TIFF tags that claim more than the file holds or the image needs (a 74-byte file with 8
/// million strip offsets), JPEG strips that declare pictures far larger than their strip,
/// and every IFD entry's count and offset at its extremes: refused from the header or read
/// within the plan. A profile is read from the file's bytes, whatever the image's size.
#[test]
fn tiff_tags_that_claim_more_than_the_file_are_refused_from_the_header() {
    let plain = tiff_rgb(None, &[]);
    let p = Pipeline::parse("format:png").unwrap();
    let out = process(&plain, &p, &Limits::default()).unwrap();
    assert_eq!((out.width, out.height), (16, 16));
    // The helper's file: 8,388,608 strip offsets at offset 0x50 of a 74-byte file.
    let mut bomb = b"II*\0\x08\0\0\0\x05\0".to_vec();
    for (tag, kind, count, value) in
        [(256u16, 3u16, 1u32, 1u32), (257, 3, 1, 1), (262, 3, 1, 1), (273, 4, 0x0080_0000, 0x50), (279, 4, 1, 1)]
    {
        bomb.extend_from_slice(&tag.to_le_bytes());
        bomb.extend_from_slice(&kind.to_le_bytes());
        bomb.extend_from_slice(&count.to_le_bytes());
        bomb.extend_from_slice(&value.to_le_bytes());
    }
    bomb.extend_from_slice(&[0; 4]);
    check("tiff with 8M strip offsets", &bomb, "thumbnail:16");
    assert!(pixq_kernel::plan(&bomb, &p, &Limits::default()).is_err());
    // Every IFD entry's count and value (or offset) at its extremes, one at a time.
    let entries = u16::from_le_bytes([plain[8], plain[9]]) as usize;
    for k in 0..entries {
        let e = 10 + 12 * k;
        for (field, vals) in
            [(4usize, [0u32, 1, 0xFFFF, 0x0080_0000, u32::MAX]), (8, [0, 1, 0xFFFF, 0x0080_0000, u32::MAX])]
        {
            for v in vals {
                let mut t = plain.clone();
                t[e + field..e + field + 4].copy_from_slice(&v.to_le_bytes());
                check(&format!("tiff entry {k} field {field} = {v:#x}"), &t, "thumbnail:16");
            }
        }
    }
    // A JPEG strip declaring 16384x16384 (805 MB to decode) in a 16x16 image.
    let mut strip = common::jpeg(&common::photo_like(16, 16), 90);
    let sof = strip.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    strip[sof + 5..sof + 9].copy_from_slice(&[0x40, 0x00, 0x40, 0x00]);
    let big = tiff_rgb(Some(&strip), &[]);
    check("tiff with a 16384x16384 JPEG strip", &big, "thumbnail:16");
    let e = pixq_kernel::plan(&big, &p, &Limits::default()).unwrap_err().to_string();
    assert!(e.contains("16384x16384"), "{e}");
    // One of its own size is not refused by the check.
    let fits = tiff_rgb(Some(&common::jpeg(&common::photo_like(16, 16), 90)), &[]);
    if let Err(e) = pixq_kernel::plan(&fits, &p, &Limits::default()) {
        assert!(!e.to_string().contains("declares a picture"), "{e}");
    }
    // A Display P3 profile of a few KB on a 16x16 image: read and applied (the decoder's
    // own reading dropped any profile over a few hundred bytes on so small an image).
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    assert!(p3.len() > 400);
    let tagged = tiff_rgb(None, &[(34675, 7, p3.len() as u32, p3.clone())]);
    let out = process(&tagged, &p, &Limits::default()).unwrap();
    let px = pixq_kernel::decode(&out.bytes, &Limits::default()).unwrap().pixel(8, 8).to_vec();
    assert!(px[0] > 205 && px[1] < 35, "P3 (200, 40, 40) converted to sRGB: {px:?}");
    let kept = process(&tagged, &Pipeline::parse("format:png,keep-icc").unwrap(), &Limits::default()).unwrap();
    assert_eq!(kept.source.icc.as_deref(), Some(&p3[..]));
}

/// An ICC profile bomb on a large canvas: the decode's own allocation cap (twice the
/// canvas) would let the PNG decoder inflate it again, far past the plan. Refused from the
/// header, cheaply; a real profile on the same image is still read.
#[test]
fn an_icc_profile_bomb_on_a_large_canvas_is_refused_from_the_header() {
    let grey = pixq_kernel::Raster::from_fn(6000, 6000, pixq_kernel::Channels::Gray, |_, _, p| p[0] = 90);
    let p = common::png(&grey);
    let chunk = |inflated: usize| {
        let mut body = b"icc\0\0".to_vec();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &vec![0u8; inflated]).unwrap();
        body.extend_from_slice(&z.finish().unwrap());
        common::png_with_chunk(&p, b"iCCP", &body)
    };
    let bomb = chunk(200 << 20);
    let pipeline = Pipeline::parse("thumbnail:64").unwrap();
    let (got, peak) = measured(|| process(&bomb, &pipeline, &Limits::default()));
    let e = got.unwrap_err().to_string();
    assert!(e.contains("ICC profile inflates past"), "{e}");
    assert!(peak < 4 * MB, "refusing it took {peak} bytes");
    // A profile within the ICC limit is no reason to refuse the file.
    let small = chunk(100_000);
    let (_, plan) = pixq_kernel::plan(&small, &pipeline, &Limits::default()).unwrap();
    let (out, peak) = measured(|| process(&small, &pipeline, &Limits::default()));
    out.unwrap();
    assert!(peak <= plan.peak_bytes, "{peak} over the plan's {}", plan.peak_bytes);
}

/// A GIF carrying tens of MB in ICC or XMP application extensions (the decoder keeps each
/// whole, up to 50 MB, for the whole decode): refused from its blocks; a small one is not.
#[test]
fn gif_application_extensions_of_many_megabytes_are_refused_from_the_blocks() {
    let g = gif_frames(40, 30, 2);
    let ext = |id: &[u8; 11], bytes: usize| {
        let mut e = vec![0x21, 0xFF, 11];
        e.extend_from_slice(id);
        for chunk in vec![0x41u8; bytes].chunks(255) {
            e.push(chunk.len() as u8);
            e.extend_from_slice(chunk);
        }
        e.push(0);
        e
    };
    // After the header and global colour table, before the first block.
    let at = 13 + (3usize << ((g[10] & 7) + 1));
    for (id, name) in [(b"ICCRGBG1012", "ICC"), (b"XMP DataXMP", "XMP")] {
        let big = splice(&g, at, &ext(id, 20 << 20));
        check(&format!("gif with 20 MB of {name}"), &big, "thumbnail:16");
        let e = pixq_kernel::plan(&big, &Pipeline::parse("thumbnail:16").unwrap(), &limits()).unwrap_err();
        assert!(e.to_string().contains("application extensions"), "{e}");
        let small = splice(&g, at, &ext(id, 10_000));
        check(&format!("gif with 10 KB of {name}"), &small, "thumbnail:16");
        assert!(process(&small, &Pipeline::parse("thumbnail:16").unwrap(), &limits()).is_ok(), "{name}");
    }
}

/// `icc` with more tags listed at the end of its table and their data at its end; a body
/// listed again is not written again (the entries share its bytes).
fn icc_with_tags(icc: &[u8], extra: &[([u8; 4], &[u8])]) -> Vec<u8> {
    let n = u32::from_be_bytes(icc[128..132].try_into().unwrap()) as usize;
    let shift = 12 * extra.len() as u32;
    let mut out = icc[..132].to_vec();
    for e in icc[132..132 + 12 * n].chunks_exact(12) {
        out.extend_from_slice(&e[..4]);
        out.extend_from_slice(&(u32::from_be_bytes(e[4..8].try_into().unwrap()) + shift).to_be_bytes());
        out.extend_from_slice(&e[8..]);
    }
    // Offsets in the new profile: everything after the old table moves by `shift`.
    let mut data = icc[132 + 12 * n..].to_vec();
    let base = (132 + 12 * n) as u32 + shift;
    let mut written: Vec<(&[u8], u32)> = Vec::new();
    for (sig, body) in extra {
        let at = match written.iter().find(|(b, _)| b == body) {
            Some(&(_, at)) => at,
            None => {
                while !data.len().is_multiple_of(4) {
                    data.push(0);
                }
                let at = base + data.len() as u32;
                data.extend_from_slice(body);
                written.push((body, at));
                at
            }
        };
        out.extend_from_slice(sig);
        out.extend_from_slice(&at.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(&data);
    out[128..132].copy_from_slice(&((n + extra.len()) as u32).to_be_bytes());
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// An `mluc` text tag of `records` records, each naming the same `text` bytes of UTF-16.
fn mluc(records: usize, text: usize) -> Vec<u8> {
    let mut t = b"mluc\0\0\0\0".to_vec();
    t.extend_from_slice(&(records as u32).to_be_bytes());
    t.extend_from_slice(&12u32.to_be_bytes());
    for _ in 0..records {
        t.extend_from_slice(b"enUS");
        t.extend_from_slice(&(text as u32).to_be_bytes());
        t.extend_from_slice(&((16 + 12 * records) as u32).to_be_bytes());
    }
    t.extend(std::iter::repeat_n([0u8, b'A'], text / 2).flatten());
    t
}

/// ICC profiles whose parts are each within bounds but not together: an `mluc` text tag
/// whose hundreds of records all name one megabyte of text (a string each), the same text
/// tag listed again and again, a second `rXYZ` of nonsense, a tag table of thousands of
/// entries. The image is converted as its profile's colours say, within its plan, and the
/// profile's size bounds the work; a table over 100 tags leaves the pixels alone.
#[test]
fn icc_tags_that_multiply_their_bytes_cost_what_the_profile_holds() {
    let img = common::photo_like(32, 24);
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let png = |icc: Option<&[u8]>| pixq_kernel::png::encode(&img, 1, icc, &Stop::new()).unwrap();
    let run = |bytes: &[u8]| process(bytes, &Pipeline::parse("format:png").unwrap(), &Limits::default()).unwrap();
    let (plain, untagged) = (run(&png(Some(&p3))).bytes, run(&png(None)).bytes);
    assert_ne!(plain, untagged, "Display P3 is converted");

    let text = mluc(400, 1 << 20);
    let nonsense = [b"XYZ \0\0\0\0".as_slice(), &[0x7F; 12]].concat();
    let bomb = icc_with_tags(&p3, &[(*b"desc", &text), (*b"rXYZ", &nonsense), (*b"cprt", &text)]);
    assert!(bomb.len() < 2 * MB as usize);
    check("icc mluc records", &png(Some(&bomb)), "thumbnail:16");
    assert_eq!(run(&png(Some(&bomb))).bytes, plain, "the profile's own colours, its first rXYZ");

    // The same text tag 80 times: its bytes once in the file, 80 parses without the guard.
    let small = mluc(1, 1 << 20);
    let many: Vec<([u8; 4], &[u8])> = (0..80).map(|_| (*b"desc", small.as_slice())).collect();
    let listed = png(Some(&icc_with_tags(&p3, &many)));
    let (out, total) = allocated(|| run(&listed));
    assert_eq!(out.bytes, plain);
    let (_, once) = allocated(|| run(&png(Some(&icc_with_tags(&p3, &many[..1])))));
    assert!(total < 2 * once, "80 listings allocated {total} bytes, one {once}");

    // Over 100 tags (each a valid XYZ, which moxcms alone would read 5,000 times): not
    // converted, not refused.
    let table: Vec<([u8; 4], &[u8])> = (0..5000).map(|_| (*b"gXYZ", nonsense.as_slice())).collect();
    assert_eq!(run(&png(Some(&icc_with_tags(&p3, &table)))).bytes, untagged);
}
