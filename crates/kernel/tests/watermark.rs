//! `watermark`: the named image laid on the picture by gravity, opacity and scale; the
//! image is the caller's to give (the kernel reads no store) and is held to its own limits.

mod common;

use pixq_kernel::{Channels, Error, Limits, Overlays, Pipeline, Processor, Raster, decode};

fn white(w: u32, h: u32) -> Raster {
    Raster::from_fn(w, h, Channels::Rgb, |_, _, p| p.copy_from_slice(&[255, 255, 255]))
}

/// A 40x20 mark: opaque red, with a transparent right half.
fn mark() -> Vec<u8> {
    common::png(&Raster::from_fn(40, 20, Channels::Rgba, |x, _, p| {
        p.copy_from_slice(&[255, 0, 0, if x < 20 { 255 } else { 0 }])
    }))
}

fn run(base: &Raster, p: &str, overlays: &[(&str, Vec<u8>)]) -> Result<Raster, Error> {
    let mut proc = Processor::new(Limits::default());
    proc.set_overlays(overlays.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Overlays>());
    let out = proc.process(&common::png(base), &Pipeline::parse(&format!("{p},format:png")).unwrap())?;
    Ok(decode(&out.bytes, &Limits::default()).unwrap())
}

#[test]
fn the_mark_lands_by_gravity_with_its_alpha() {
    let out = run(&white(200, 100), "watermark:logo", &[("logo", mark())]).unwrap();
    assert_eq!((out.width(), out.height()), (200, 100));
    // Southeast by default: the opaque half at x 160..180, y 80..100; its clear half leaves white.
    assert_eq!(out.pixel(165, 90), &[255, 0, 0]);
    assert_eq!(out.pixel(190, 90), &[255, 255, 255]);
    assert_eq!(out.pixel(150, 90), &[255, 255, 255]);
    assert_eq!(out.pixel(165, 70), &[255, 255, 255]);
    let nw = run(&white(200, 100), "watermark:logo:northwest", &[("logo", mark())]).unwrap();
    assert_eq!(nw.pixel(5, 5), &[255, 0, 0]);
    assert_eq!(nw.pixel(165, 90), &[255, 255, 255]);
}

#[test]
fn opacity_and_scale_do_what_they_say() {
    let half = run(&white(200, 100), "watermark:logo:center:0.5", &[("logo", mark())]).unwrap();
    let p = half.pixel(85, 50);
    assert!(p[0] == 255 && (126..=129).contains(&p[1]) && (126..=129).contains(&p[2]), "{p:?}");
    // Half the picture's width: 100 x 50, at the centre (x 50..150); its opaque half 50..100.
    let big = run(&white(200, 100), "watermark:logo:center:1:0.5", &[("logo", mark())]).unwrap();
    assert_eq!(big.pixel(60, 40), &[255, 0, 0]);
    assert_eq!(big.pixel(80, 60), &[255, 0, 0]);
    assert_eq!(big.pixel(45, 50), &[255, 255, 255]);
    assert_eq!(big.pixel(55, 80), &[255, 255, 255]);
    // A mark larger than the picture is shrunk to fit it.
    let small = run(&white(20, 20), "watermark:logo:northwest", &[("logo", mark())]).unwrap();
    assert_eq!((small.width(), small.height()), (20, 20));
    assert_eq!(small.pixel(2, 2), &[255, 0, 0]);
    assert_eq!(small.pixel(2, 15), &[255, 255, 255]);
}

#[test]
fn grey_and_transparent_pictures_take_a_colour_mark() {
    let grey = Raster::from_fn(100, 50, Channels::Gray, |_, _, p| p[0] = 200);
    let out = run(&grey, "watermark:logo", &[("logo", mark())]).unwrap();
    assert_eq!(out.channels(), Channels::Rgb);
    assert_eq!(out.pixel(65, 40), &[255, 0, 0]);
    assert_eq!(out.pixel(10, 10), &[200, 200, 200]);
    let clear = Raster::from_fn(100, 50, Channels::Rgba, |_, _, p| p.copy_from_slice(&[0, 0, 0, 0]));
    let out = run(&clear, "watermark:logo", &[("logo", mark())]).unwrap();
    assert_eq!(out.pixel(65, 40), &[255, 0, 0, 255]);
    assert_eq!(out.pixel(10, 10)[3], 0);
}

#[test]
fn a_missing_or_hostile_mark_is_a_clear_error() {
    let e = run(&white(64, 48), "watermark:logo", &[]).unwrap_err().to_string();
    assert!(e.contains("no watermark image named 'logo'"), "{e}");
    let e = run(&white(64, 48), "watermark:logo", &[("logo", b"not an image".to_vec())]).unwrap_err().to_string();
    assert!(e.contains("watermark:logo") && e.contains("its image"), "{e}");
    // A PNG declaring 60000 x 60000: refused from its header, by the mark's own limits.
    let mut bomb = common::png(&Raster::from_fn(8, 8, Channels::Rgb, |_, _, p| p.copy_from_slice(&[1, 2, 3])));
    bomb[16..20].copy_from_slice(&60_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&60_000u32.to_be_bytes());
    let e = run(&white(64, 48), "watermark:logo", &[("logo", bomb)]).unwrap_err().to_string();
    assert!(e.contains("its image"), "{e}");
    // 2 MP is the most a mark may have.
    let huge = common::png(&white(2000, 1001));
    let e = run(&white(64, 48), "watermark:logo", &[("logo", huge)]).unwrap_err().to_string();
    assert!(e.contains("its image"), "{e}");
}

#[test]
fn names_and_settings_out_of_range_are_refused() {
    for bad in [
        "watermark:../x",
        "watermark:Logo",
        "watermark:",
        "watermark:a/b",
        "watermark:logo:up",
        "watermark:logo:center:1.5",
        "watermark:logo:center:1:2",
        "watermark:logo:center:-0.1",
    ] {
        assert!(Pipeline::parse(bad).is_err(), "{bad}");
    }
    let long = format!("watermark:{}", "a".repeat(65));
    assert!(Pipeline::parse(&long).is_err());
    let p = Pipeline::parse("watermark:logo-2").unwrap();
    assert_eq!(p.canonical(), "watermark:logo-2:southeast:1:0");
    assert_eq!(Pipeline::parse(&p.canonical()).unwrap(), p);
}
