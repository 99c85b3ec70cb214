//! AVIF and HEIC input through libheif (feature `heif`): the samples made by libvips'
//! heifsave (x265 and libaom) from `samples/chelsea.jpg` decode to that photo, alpha is
//! kept, the default output of a HEIC is JPEG, and crafted files are clear errors.
#![cfg(feature = "heif")]

mod common;

use pixq_kernel::{Channels, Error, Format, Limits, Pipeline, Raster, process};

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(common::samples_dir().join(name)).unwrap()
}

fn run(input: &[u8], p: &str) -> Result<pixq_kernel::Output, Error> {
    process(input, &Pipeline::parse(p).unwrap(), &Limits::default())
}

fn psnr(a: &Raster, b: &Raster) -> f64 {
    assert_eq!((a.width(), a.height(), a.channels()), (b.width(), b.height(), b.channels()));
    let mse = a.data().iter().zip(b.data()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>()
        / a.data().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

#[test]
fn heic_and_avif_photos_decode_to_the_photo() {
    let jpeg = pixq_kernel::decode(&sample("chelsea.jpg"), &Limits::default()).unwrap();
    for (name, format) in [("chelsea-hevc.heic", Format::Heic), ("chelsea-av1.avif", Format::Avif)] {
        let bytes = sample(name);
        assert_eq!(Format::sniff(&bytes), Some(format), "{name}");
        let (probe, plan) = pixq_kernel::plan(&bytes, &Pipeline::parse("thumbnail:200").unwrap(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((probe.width, probe.height, probe.channels), (451, 300, Channels::Rgb), "{name}");
        assert_eq!(plan.output, (200, 133), "{name}");
        let img = pixq_kernel::decode(&bytes, &Limits::default()).unwrap();
        let q = psnr(&img, &jpeg);
        assert!(q > 30.0, "{name}: PSNR {q:.1} dB against the JPEG it was made from");
    }
    // A HEIC's default output is JPEG (HEIC is not written); an AVIF's stays AVIF.
    let out = run(&sample("chelsea-hevc.heic"), "thumbnail:120").unwrap();
    assert_eq!((out.format, out.width), (Format::Jpeg, 120));
    assert_eq!(Format::sniff(&out.bytes), Some(Format::Jpeg));
    let out = run(&sample("chelsea-av1.avif"), "thumbnail:64,format:png").unwrap();
    assert_eq!((out.format, out.width), (Format::Png, 64));
}

#[cfg(feature = "avif")]
#[test]
fn avif_alpha_survives_a_round_trip() {
    let src = Raster::from_fn(64, 48, Channels::Rgba, |x, y, p| {
        p.copy_from_slice(&[(x * 4) as u8, (y * 5) as u8, 90, if x < 32 { 255 } else { 0 }]);
    });
    let png = pixq_kernel::encode(&src, Format::Png, &Default::default()).unwrap();
    let avif = run(&png, "format:avif,quality:90").unwrap();
    let back = pixq_kernel::decode(&avif.bytes, &Limits::default()).unwrap();
    assert_eq!((back.width(), back.height(), back.channels()), (64, 48, Channels::Rgba));
    assert!(back.pixel(10, 10)[3] > 240 && back.pixel(50, 10)[3] < 15);
}

/// The `ispe` (image spatial extent) property of the first image: its offset.
fn ispe(bytes: &[u8]) -> usize {
    bytes.windows(4).position(|w| w == b"ispe").expect("an ispe box")
}

#[test]
fn crafted_heif_files_are_clear_errors() {
    for name in ["chelsea-hevc.heic", "chelsea-av1.avif"] {
        let good = sample(name);
        let at = ispe(&good);
        // A declared size over the limits: refused from the header.
        let mut big = good.clone();
        big[at + 8..at + 12].copy_from_slice(&60_000u32.to_be_bytes());
        big[at + 12..at + 16].copy_from_slice(&60_000u32.to_be_bytes());
        let e = run(&big, "thumbnail:64").unwrap_err();
        assert!(e.is_limit() || matches!(e, Error::Decode { .. }), "{name}: {e}");
        // A declared size that disagrees with the coded picture.
        let mut lie = good.clone();
        lie[at + 8..at + 12].copy_from_slice(&900u32.to_be_bytes());
        let e = run(&lie, "thumbnail:64").unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{name}: {e}");
        // Tight limits refuse the real size.
        let e = process(&good, &Pipeline::parse("thumbnail:64").unwrap(), &Limits::default().max_pixels(100_000))
            .unwrap_err();
        assert!(matches!(e, Error::TooManyPixels { pixels: 135_300, .. }), "{name}: {e}");
        // Cuts and byte flips: errors or images, never a panic.
        for cut in (0..good.len()).step_by(good.len() / 40 + 1) {
            let _ = run(&good[..cut], "thumbnail:64");
        }
        for i in (0..good.len().min(600)).step_by(3) {
            let mut k = good.clone();
            k[i] ^= 0xFF;
            if let Ok(out) = run(&k, "thumbnail:64") {
                assert!(out.width <= 64 && out.height <= 64, "{name} flip {i}");
            }
        }
    }
}

/// The offset of the first `colr` box of type `nclx`: its primaries (u16), transfer (u16),
/// matrix (u16) and range (u8) follow.
#[cfg(feature = "avif")]
fn nclx_at(avif: &[u8]) -> usize {
    avif.windows(8).position(|w| w == b"colrnclx").expect("an nclx colour box") + 8
}

/// An AVIF whose colours are named only by its `nclx` box (no ICC profile) is converted to
/// sRGB from those colours: Display P3 and BT.2020 files decode to what moxcms' own profiles
/// of those spaces make of the same samples; sRGB, unspecified and HDR (PQ, HLG) code points
/// leave the samples as they are; reserved code points are no error.
#[cfg(feature = "avif")]
#[test]
fn nclx_colours_of_an_avif_are_converted_to_srgb() {
    use moxcms::{ColorProfile, Layout, TransformOptions};
    let src = Raster::from_fn(64, 64, Channels::Rgb, |x, y, p| {
        // Flat patches (little for the codec to blur): saturated and pale colours.
        let patch = [[200u8, 40, 40], [40, 180, 60], [50, 60, 200], [210, 190, 120]][(x / 32 + 2 * (y / 32)) as usize];
        p.copy_from_slice(&patch);
    });
    let png = pixq_kernel::encode(&src, Format::Png, &Default::default()).unwrap();
    let ours = run(&png, "format:avif,quality:100").unwrap().bytes;
    // pixq's AVIF has no `colr` box (its samples are sRGB): the same AV1 picture in a file
    // that has one.
    let mdat = ours.windows(4).position(|w| w == b"mdat").unwrap();
    let size = u32::from_be_bytes(ours[mdat - 4..mdat].try_into().unwrap()) as usize;
    let av1 = &ours[mdat + 4..mdat - 4 + size];
    let avif = avif_serialize::Aviffy::new()
        .set_color_primaries(avif_serialize::constants::ColorPrimaries::DisplayP3)
        .to_vec(av1, None, 64, 64, 8);
    let at = nclx_at(&avif);
    let with = |primaries: u16, transfer: u16| {
        let mut b = avif.clone();
        b[at..at + 2].copy_from_slice(&primaries.to_be_bytes());
        b[at + 2..at + 4].copy_from_slice(&transfer.to_be_bytes());
        let png = run(&b, "format:png").unwrap().bytes;
        pixq_kernel::decode(&png, &Limits::default()).unwrap()
    };
    let plain = with(1, 13);
    let centre = |img: &Raster| [16u32, 48].map(|x| [16u32, 48].map(|y| img.pixel(x, y).to_vec()));
    // What a colour-managed viewer makes of the plain samples in each space.
    let expect = |profile: ColorProfile| {
        let t = profile
            .create_transform_8bit(Layout::Rgb, &ColorProfile::new_srgb(), Layout::Rgb, TransformOptions::default())
            .unwrap();
        let mut out = plain.data().to_vec();
        t.transform(plain.data(), &mut out).unwrap();
        Raster::from_vec(plain.width(), plain.height(), Channels::Rgb, out).unwrap()
    };
    for (primaries, transfer, profile, name) in
        [(12, 13, ColorProfile::new_display_p3(), "Display P3"), (9, 1, ColorProfile::new_bt2020(), "BT.2020")]
    {
        let got = with(primaries, transfer);
        let want = expect(profile);
        for (g, w) in centre(&got).iter().flatten().zip(centre(&want).iter().flatten()) {
            assert!(g.iter().zip(w).all(|(a, b)| a.abs_diff(*b) <= 3), "{name}: {g:?} against {w:?}");
        }
        // Wider-gamut red is redder than the same numbers in sRGB.
        assert!(got.pixel(16, 16)[1] < plain.pixel(16, 16)[1], "{name}: {:?}", got.pixel(16, 16));
    }
    for (primaries, transfer) in [(2, 2), (1, 1), (12, 16), (9, 18), (200, 13), (12, 250)] {
        assert!(with(primaries, transfer).data() == plain.data(), "nclx {primaries}/{transfer} changed the samples");
    }
    // keep-icc keeps the colours' meaning: a P3 file's PNG carries the profile made for it.
    let mut p3 = avif.clone();
    p3[at..at + 2].copy_from_slice(&12u16.to_be_bytes());
    let kept = run(&p3, "format:png,keep-icc").unwrap();
    assert!(kept.bytes.windows(4).any(|w| w == b"iCCP"), "keep-icc wrote no profile");
}
