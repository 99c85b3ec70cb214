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

// ---------- crafted box structures, refused before libheif reads them ----------

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = (u32::from(version) << 24 | flags).to_be_bytes().to_vec();
    b.extend_from_slice(body);
    bx(kind, &b)
}

fn ispe_box(w: u32, h: u32) -> Vec<u8> {
    full(b"ispe", 0, 0, &[w.to_be_bytes(), h.to_be_bytes()].concat())
}

/// An item: id, type, property boxes, data.
type ItemSpec = (u32, [u8; 4], Vec<Vec<u8>>, Vec<u8>);

/// A HEIF file from its parts: items (id, type, property boxes, data kept in `idat`),
/// `dimg` and `auxl` references, the primary item, and more top-level boxes.
#[derive(Default)]
struct Heif {
    brand: Option<[u8; 4]>,
    primary: u32,
    items: Vec<ItemSpec>,
    dimg: Vec<(u32, Vec<u32>)>,
    auxl: Vec<(u32, u32)>,
    /// Extents given by hand, (item, offset, length) in the file, instead of its data.
    extents: Vec<(u32, Vec<(u32, u32)>)>,
    more: Vec<Vec<u8>>,
}

impl Heif {
    fn build(&self) -> Vec<u8> {
        let brand = self.brand.unwrap_or(*b"avif");
        let ftyp = bx(b"ftyp", &[&brand[..], &[0, 0, 0, 0], b"mif1", &brand[..]].concat());
        let mut infe = Vec::new();
        for (id, kind, _, _) in &self.items {
            infe.extend(full(b"infe", 2, 0, &[&(*id as u16).to_be_bytes()[..], &[0, 0], kind, b"\0"].concat()));
        }
        let iinf = full(b"iinf", 0, 0, &[&(self.items.len() as u16).to_be_bytes()[..], &infe].concat());
        let mut refs = Vec::new();
        let mut reference = |kind: &[u8; 4], from: u32, to: &[u32]| {
            let mut b = (from as u16).to_be_bytes().to_vec();
            b.extend_from_slice(&(to.len() as u16).to_be_bytes());
            to.iter().for_each(|t| b.extend_from_slice(&(*t as u16).to_be_bytes()));
            refs.extend(bx(kind, &b));
        };
        for (from, to) in &self.dimg {
            reference(b"dimg", *from, to);
        }
        for (from, to) in &self.auxl {
            reference(b"auxl", *from, &[*to]);
        }
        let iref = full(b"iref", 0, 0, &refs);
        let (mut ipco, mut ipma, mut n) = (Vec::new(), Vec::new(), 0u16);
        ipma.extend_from_slice(&(self.items.len() as u32).to_be_bytes());
        for (id, _, props, _) in &self.items {
            ipma.extend_from_slice(&(*id as u16).to_be_bytes());
            ipma.push(props.len() as u8);
            for p in props {
                n += 1;
                ipco.extend_from_slice(p);
                ipma.extend_from_slice(&n.to_be_bytes());
            }
        }
        let iprp = bx(b"iprp", &[bx(b"ipco", &ipco), full(b"ipma", 0, 1, &ipma)].concat());
        // iloc version 1: offsets and lengths of 4 bytes, no base offset; idat items use
        // construction method 1.
        let (mut idat, mut locs) = (Vec::new(), Vec::new());
        for (id, _, _, data) in &self.items {
            if let Some((_, ext)) = self.extents.iter().find(|(i, _)| i == id) {
                locs.push((*id, 0u16, ext.clone()));
            } else {
                locs.push((*id, 1u16, vec![(idat.len() as u32, data.len() as u32)]));
                idat.extend_from_slice(data);
            }
        }
        let mut iloc = vec![0x44, 0x00];
        iloc.extend_from_slice(&(locs.len() as u16).to_be_bytes());
        for (id, method, ext) in locs {
            iloc.extend_from_slice(&(id as u16).to_be_bytes());
            iloc.extend_from_slice(&method.to_be_bytes());
            iloc.extend_from_slice(&[0, 0]);
            iloc.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            for (off, len) in ext {
                iloc.extend_from_slice(&off.to_be_bytes());
                iloc.extend_from_slice(&len.to_be_bytes());
            }
        }
        let hdlr = full(b"hdlr", 0, 0, &[&[0u8; 4][..], b"pict", &[0u8; 13]].concat());
        let pitm = full(b"pitm", 0, 0, &(self.primary as u16).to_be_bytes());
        let meta = full(
            b"meta",
            0,
            0,
            &[hdlr, pitm, iinf, iref, iprp, full(b"iloc", 1, 0, &iloc), bx(b"idat", &idat)].concat(),
        );
        let mut out = [ftyp, meta].concat();
        for m in &self.more {
            out.extend_from_slice(m);
        }
        out.extend(bx(b"mdat", &[0u8; 64]));
        out
    }
}

/// An overlay's payload: 16-bit fields, canvas `w x h`, each child at (0, 0).
fn iovl(w: u16, h: u16, children: usize) -> Vec<u8> {
    let mut p = vec![0, 0];
    p.extend_from_slice(&[0u8; 8]);
    p.extend_from_slice(&w.to_be_bytes());
    p.extend_from_slice(&h.to_be_bytes());
    p.extend(std::iter::repeat_n(0u8, 4 * children));
    p
}

/// A grid's payload: `rows x cols` tiles, 32-bit canvas `w x h`.
fn grid(rows: u8, cols: u8, w: u32, h: u32) -> Vec<u8> {
    [&[0u8, 1, rows - 1, cols - 1][..], &w.to_be_bytes(), &h.to_be_bytes()].concat()
}

/// The plan's refusal of `h` (default limits), which must name `what`; or, with `what`
/// empty, that it is not one of the walk's refusals.
fn refused(name: &str, h: &Heif, what: &str) {
    let bytes = h.build();
    assert_eq!(Format::sniff(&bytes).map(|f| f == Format::Avif || f == Format::Heic), Some(true), "{name}");
    let got = pixq_kernel::plan(&bytes, &Pipeline::parse("thumbnail:64").unwrap(), &Limits::default());
    let e = got.map(|_| ()).expect_err(name).to_string();
    if what.is_empty() {
        for walk in ["decodes", "canvas", "tiles", "larger than", "more than once", "claims", "timing", "parameter"] {
            assert!(!e.contains(walk), "{name}: {e}");
        }
    } else {
        assert!(e.contains(what), "{name}: {e}");
    }
}

fn av01(id: u32, w: u32, h: u32) -> ItemSpec {
    (id, *b"av01", vec![ispe_box(w, h)], vec![0x12, 0, 0x0A, 0x0B])
}

#[test]
fn derived_images_decoded_along_every_path_are_counted() {
    // 10 levels of two overlays, each over both of the level below, over one 8x8 picture:
    // 2^10 decodes of it, within the depth limit (30 levels, 2^31 decodes, is deeper).
    let mut h = Heif { items: vec![av01(1, 8, 8)], ..Heif::default() };
    let mut below = vec![1u32, 1];
    let mut next = 2;
    for _ in 0..10 {
        let level = vec![next, next + 1];
        for &id in &level {
            h.items.push((id, *b"iovl", vec![ispe_box(8, 8)], iovl(8, 8, 2)));
            h.dimg.push((id, below.clone()));
        }
        below = level;
        next += 2;
    }
    h.primary = below[0];
    refused("an overlay lattice", &h, "over 1024 image decodes");
    // A chain of 40 `iden` images over the picture: refused for its depth.
    let mut chain = Heif { items: vec![av01(1, 8, 8)], ..Heif::default() };
    for id in 2..42 {
        chain.items.push((id, *b"iden", vec![ispe_box(8, 8)], Vec::new()));
        chain.dimg.push((id, vec![id - 1]));
    }
    chain.primary = 41;
    refused("an iden chain", &chain, "levels deep");
    // Two levels (7 decodes): not the walk's to refuse (libheif then meets an 8x8 picture
    // of four bytes).
    h.items.truncate(5);
    h.dimg.truncate(4);
    h.primary = 4;
    refused("two levels", &h, "");
}

#[test]
fn canvases_tiles_and_alpha_are_held_to_the_declared_size() {
    // A grid declared 64x64 whose payload makes a 32768x32768 canvas.
    let mut h = Heif {
        primary: 1,
        items: vec![(1, *b"grid", vec![ispe_box(64, 64)], grid(1, 1, 32768, 32768)), av01(2, 64, 64)],
        dimg: vec![(1, vec![2])],
        ..Heif::default()
    };
    refused("grid canvas", &h, "canvas (32768x32768) is not its declared size");
    // Four 100x100 tiles for a 64x64 canvas.
    h.items = vec![(1, *b"grid", vec![ispe_box(64, 64)], grid(2, 2, 64, 64))];
    h.items.extend((2..6).map(|i| av01(i, 100, 100)));
    h.dimg = vec![(1, vec![2, 3, 4, 5])];
    refused("grid tiles", &h, "tiles of 100x100 reach past its 64x64 canvas");
    // A tile of 4000x4000 under a 64x64 image; an overlay of the same.
    h.items = vec![(1, *b"grid", vec![ispe_box(64, 64)], grid(1, 1, 64, 64)), av01(2, 4000, 4000)];
    h.dimg = vec![(1, vec![2])];
    refused("one huge tile", &h, "(4000x4000) is larger than the primary image");
    // An 8x8 image whose alpha plane is 30000x30000.
    let h =
        Heif { primary: 1, items: vec![av01(1, 8, 8), av01(2, 30000, 30000)], auxl: vec![(2, 1)], ..Heif::default() };
    refused("huge alpha", &h, "(30000x30000) is larger than the primary image");
    // The primary's own declared size against the limits, before its crop.
    let h = Heif { primary: 1, items: vec![av01(1, 60000, 60000)], ..Heif::default() };
    refused("huge primary", &h, "60000");
}

#[test]
fn repeated_transforms_overlapping_data_tracks_and_inline_parameter_sets_are_refused() {
    let irot = bx(b"irot", &[1]);
    let mut item = av01(1, 8, 8);
    item.2.extend([irot.clone(), irot.clone(), irot]);
    refused(
        "three rotations",
        &Heif { primary: 1, items: vec![item], ..Heif::default() },
        "lists 'irot' more than once",
    );

    // 32 extents, each the whole file.
    let base = Heif { primary: 1, items: vec![av01(1, 8, 8)], ..Heif::default() };
    let len = base.build().len() as u32 + 32 * 8;
    let h = Heif { extents: vec![(1, vec![(0, len); 32])], ..base };
    refused("overlapping extents", &h, "more than the file's");

    // A track of a million samples timed by a million entries.
    let stts = full(b"stts", 0, 0, &1_000_000u32.to_be_bytes());
    let stsz = full(b"stsz", 0, 0, &[0u32.to_be_bytes(), 1_000_000u32.to_be_bytes()].concat());
    let stbl = bx(b"stbl", &[stts, stsz].concat());
    let moov = bx(b"moov", &bx(b"trak", &bx(b"mdia", &bx(b"minf", &stbl))));
    let h = Heif { primary: 1, items: vec![av01(1, 8, 8)], more: vec![moov], ..Heif::default() };
    refused("a long track", &h, "timing table");

    // An HEVC picture whose data carries a sequence parameter set.
    let mut hvcc = vec![1u8; 23];
    hvcc[21] = 3;
    let sps = vec![0, 0, 0, 2, 33 << 1, 1, 0, 0, 0, 2, 1 << 1, 1];
    let h = Heif {
        brand: Some(*b"heic"),
        primary: 1,
        items: vec![(1, *b"hvc1", vec![bx(b"hvcC", &hvcc), ispe_box(8, 8)], sps)],
        ..Heif::default()
    };
    refused("inline SPS", &h, "parameter sets");
}
