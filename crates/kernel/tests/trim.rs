//! `trim`: the uniform border goes, within the tolerance, and the steps after it are sized
//! from what it kept.

mod common;

use pixq_kernel::{Channels, Error, Limits, Pipeline, Raster, Stop, decode, process};

/// A `w x h` canvas of `bg` with a `cw x ch` block of noise-like content at (x, y).
fn framed(w: u32, h: u32, bg: [u8; 3], (x, y, cw, ch): (u32, u32, u32, u32)) -> Raster {
    Raster::from_fn(w, h, Channels::Rgb, |px, py, p| {
        if px >= x && px < x + cw && py >= y && py < y + ch {
            p.copy_from_slice(&[(px * 7 % 200) as u8 + 20, (py * 5 % 200) as u8 + 20, 60]);
        } else {
            p.copy_from_slice(&bg);
        }
    })
}

fn run(img: &Raster, p: &str) -> Result<pixq_kernel::Output, Error> {
    process(&common::png(img), &Pipeline::parse(p).unwrap(), &Limits::default())
}

#[test]
fn the_border_goes_and_the_content_stays_whole() {
    for bg in [[255, 255, 255], [0, 0, 0], [30, 140, 200]] {
        let img = framed(300, 200, bg, (40, 30, 120, 90));
        let out = run(&img, "trim,format:png").unwrap();
        assert_eq!((out.width, out.height), (120, 90), "{bg:?}");
        let got = decode(&out.bytes, &Limits::default()).unwrap();
        assert_eq!(got.pixel(0, 0), img.pixel(40, 30));
        assert_eq!(got.pixel(119, 89), img.pixel(159, 119));
    }
}

#[test]
fn the_tolerance_counts_near_colours_as_border() {
    // A border with a faint gradient (up to 12 off the corner), then content.
    let img = Raster::from_fn(200, 100, Channels::Rgb, |x, y, p| {
        if (50..150).contains(&x) && (20..80).contains(&y) {
            p.copy_from_slice(&[0, 0, 0]);
        } else {
            let v = 240 + (x % 13) as u8;
            p.copy_from_slice(&[v, v, v]);
        }
    });
    let loose = run(&img, "trim:15,format:png").unwrap();
    assert_eq!((loose.width, loose.height), (100, 60));
    let tight = run(&img, "trim:0,format:png").unwrap();
    assert!(tight.width > 100, "a zero tolerance keeps the gradient: {}", tight.width);
}

#[test]
fn one_colour_images_and_borderless_ones_are_kept_as_they_are() {
    let flat = Raster::from_fn(64, 48, Channels::Rgb, |_, _, p| p.copy_from_slice(&[9, 9, 9]));
    assert_eq!(run(&flat, "trim").map(|o| (o.width, o.height)).unwrap(), (64, 48));
    let full = common::photo_like(64, 48);
    assert_eq!(run(&full, "trim:0").map(|o| (o.width, o.height)).unwrap(), (64, 48));
    // One content pixel in a corner opposite the border's colour sample.
    let dot = Raster::from_fn(64, 48, Channels::Rgb, |x, y, p| {
        p.copy_from_slice(if (x, y) == (63, 47) { &[0, 0, 0] } else { &[255, 255, 255] })
    });
    assert_eq!(run(&dot, "trim").map(|o| (o.width, o.height)).unwrap(), (1, 1));
}

#[test]
fn transparent_borders_are_trimmed_by_their_alpha() {
    let img = Raster::from_fn(100, 80, Channels::Rgba, |x, y, p| {
        if (10..60).contains(&x) && (20..40).contains(&y) {
            p.copy_from_slice(&[200, 10, 10, 255]);
        } else {
            p.copy_from_slice(&[0, 0, 0, 0]);
        }
    });
    let out = run(&img, "trim,format:png").unwrap();
    assert_eq!((out.width, out.height), (50, 20));
}

#[test]
fn later_steps_are_sized_from_what_trim_kept() {
    let img = framed(400, 300, [255, 255, 255], (100, 50, 200, 50));
    // Sized from the kept 200x50, not the planned 400x300.
    let out = run(&img, "trim,thumbnail:100").unwrap();
    assert_eq!((out.width, out.height), (100, 25));
    let out = run(&img, "trim,resize:0:100,rotate:90").unwrap();
    assert_eq!((out.width, out.height), (100, 400));
    let out = run(&img, "trim,pad:1:1:1:1,trim,format:png").unwrap();
    assert_eq!((out.width, out.height), (200, 50));
    // Orientation and variants go through the same path.
    let vs = pixq_kernel::op::variants::parse("a=trim,thumbnail:50;b=thumbnail:50").unwrap();
    let pipelines: Vec<&Pipeline> = vs.iter().map(|v| &v.pipeline).collect();
    let outs = pixq_kernel::Processor::new(Limits::default())
        .process_variants(&common::png(&img), &pipelines, &Stop::new())
        .unwrap();
    assert_eq!((outs[0].width, outs[0].height, outs[1].width, outs[1].height), (50, 13, 50, 38));
}

#[test]
fn a_trim_that_would_make_the_rest_bigger_than_planned_is_refused() {
    // A wide strip kept, then a resize by height: the plan sized it from the whole square
    // (3000x3000), the strip makes it 15000x3000, five times the memory admitted.
    let img = framed(2000, 2000, [255, 255, 255], (0, 800, 2000, 400));
    let e = match run(&img, "trim,resize:0:3000") {
        Ok(o) => panic!("made {}x{}", o.width, o.height),
        Err(e) => e,
    };
    assert!(matches!(e, Error::OverBudget { .. }), "{e}");
    assert!(e.to_string().contains("after step 1 'trim:10' made 2000x400"), "{e}");
    // Past the largest side: refused by the limits as any step would be.
    let thin = framed(2000, 2000, [255, 255, 255], (0, 1000, 2000, 4));
    assert!(matches!(run(&thin, "trim,resize:0:8000"), Err(Error::OutputTooLarge { .. })));
}
