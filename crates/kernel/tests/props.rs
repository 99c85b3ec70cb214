//! Property tests: output dimensions, idempotence, and the pipeline string round trip.

mod common;

use pixq_kernel::op::{self, Axis, Filter, Fit, Gravity, Rgba};
use pixq_kernel::{Channels, Format, Limits, Op, OutputSpec, Pipeline, Processor, Raster};
use proptest::prelude::*;

fn raster(w: u32, h: u32, ch: Channels) -> Raster {
    Raster::from_fn(w, h, ch, |x, y, p| {
        for (c, v) in p.iter_mut().enumerate() {
            *v = (x * 13 + y * 7 + c as u32 * 40) as u8;
        }
    })
}

fn channels() -> impl Strategy<Value = Channels> {
    prop_oneof![Just(Channels::Gray), Just(Channels::GrayAlpha), Just(Channels::Rgb), Just(Channels::Rgba)]
}

fn op() -> impl Strategy<Value = Op> {
    let fit = prop_oneof![Just(Fit::Contain), Just(Fit::Cover), Just(Fit::Fill), Just(Fit::Inside)];
    let filter =
        prop_oneof![Just(Filter::Nearest), Just(Filter::Bilinear), Just(Filter::Mitchell), Just(Filter::Lanczos3)];
    let gravity = prop_oneof![Just(Gravity::Center), Just(Gravity::North), Just(Gravity::SouthWest)];
    prop_oneof![
        (1u32..500, 1u32..500, fit, filter).prop_map(|(width, height, fit, filter)| Op::Resize(op::Resize {
            width,
            height,
            fit,
            filter
        })),
        (1u32..2000).prop_map(|size| Op::Thumbnail(op::Thumbnail { size })),
        (0u32..50, 0u32..50, 1u32..100, 1u32..100).prop_map(|(x, y, width, height)| Op::Crop(op::Crop {
            x,
            y,
            width,
            height
        })),
        (1u32..20, 1u32..20, gravity).prop_map(|(width, height, gravity)| Op::Aspect(op::Aspect {
            width,
            height,
            gravity
        })),
        (1u32..300, 1u32..300).prop_map(|(width, height)| Op::SmartCrop(op::SmartCrop { width, height })),
        (0u32..3600, any::<[u8; 4]>())
            .prop_map(|(d, c)| Op::Rotate(op::Rotate { degrees: d as f32 / 10.0, background: Rgba(c) })),
        prop_oneof![Just(Axis::Horizontal), Just(Axis::Vertical)].prop_map(|axis| Op::Flip(op::Flip { axis })),
        Just(Op::Grayscale),
        (1u32..200).prop_map(|s| Op::Blur(op::Blur { sigma: s as f32 / 20.0 })),
        (1u32..100, 1u32..100)
            .prop_map(|(s, a)| Op::Sharpen(op::Sharpen { sigma: s as f32 / 10.0, amount: a as f32 / 20.0 })),
        (-255i16..=255).prop_map(|amount| Op::Brightness(op::Brightness { amount })),
        (0u32..100).prop_map(|f| Op::Contrast(op::Contrast { factor: f as f32 / 10.0 })),
        (1u32..100).prop_map(|g| Op::Gamma(op::Gamma { gamma: g as f32 / 10.0 })),
        Just(Op::Invert),
        Just(Op::Sobel),
        any::<u8>().prop_map(|level| Op::Threshold(op::Threshold { level })),
        (0u32..100).prop_map(|f| Op::Saturation(op::Saturation { factor: f as f32 / 10.0 })),
        (1u32..40).prop_map(|size| Op::Pixelate(op::Pixelate { size })),
        any::<u8>().prop_map(|threshold| Op::Trim(op::Trim { threshold })),
        ("[a-z0-9_-]{1,12}", 0usize..9, 0u32..=100, 0u32..=100).prop_map(|(name, g, o, s)| {
            let gravity = [
                Gravity::Center,
                Gravity::North,
                Gravity::South,
                Gravity::East,
                Gravity::West,
                Gravity::NorthEast,
                Gravity::NorthWest,
                Gravity::SouthEast,
                Gravity::SouthWest,
            ][g];
            Op::Watermark(op::Watermark { name, gravity, opacity: o as f32 / 100.0, scale: s as f32 / 100.0 })
        }),
        (0u32..20, 0u32..20, 0u32..20, 0u32..20, any::<[u8; 4]>())
            .prop_map(|(top, right, bottom, left, c)| Op::Pad(op::Pad { top, right, bottom, left, colour: Rgba(c) })),
    ]
}

fn output() -> impl Strategy<Value = OutputSpec> {
    (
        proptest::option::of(proptest::sample::select(Format::WRITE.to_vec())),
        proptest::option::of(1u8..=100),
        any::<bool>(),
        proptest::option::of(0u8..=9),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1024u32..1_000_000),
        proptest::option::of(1u8..=10),
    )
        .prop_map(|(format, quality, progressive, compression, lossless, keep_icc, max_bytes, speed)| {
            // `lossless` is only valid with format:webp, `max-bytes` with lossy outputs,
            // `speed` with AVIF, `keep-icc` with anything else.
            let lossless = lossless && format == Some(Format::Webp);
            let avif = format == Some(Format::Avif);
            let lossy = matches!(format, None | Some(Format::Jpeg) | Some(Format::Avif))
                || (format == Some(Format::Webp) && !lossless);
            OutputSpec {
                format,
                quality,
                progressive,
                compression,
                lossless,
                keep_icc: keep_icc && !avif,
                max_bytes: max_bytes.filter(|_| lossy),
                speed: speed.filter(|_| avif),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn canonical_string_round_trips(ops in proptest::collection::vec(op(), 0..6), output in output(), frame in proptest::option::of(0u32..100)) {
        let p = Pipeline { ops, output, frame };
        let s = p.canonical();
        let back = Pipeline::parse(&s).unwrap();
        prop_assert_eq!(&back, &p);
        prop_assert_eq!(back.canonical(), s);
    }

    #[test]
    fn json_round_trips(ops in proptest::collection::vec(op(), 0..6), output in output(), frame in proptest::option::of(0u32..100)) {
        let p = Pipeline { ops, output, frame };
        let back: Pipeline = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        prop_assert_eq!(back, p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_step_makes_what_its_plan_said(ops in proptest::collection::vec(op(), 1..4), w in 1u32..40, h in 1u32..40, ch in channels()) {
        // The processor checks each step's image against its plan (Error::Internal on a
        // mismatch), so a step whose size rule and pixels disagree fails here.
        let png = common::png(&raster(w, h, ch));
        let p = Pipeline { ops, ..Default::default() };
        let l = Limits::default();
        match pixq_kernel::process(&png, &p, &l) {
            Ok(out) => {
                // After `trim` the size depends on the pixels, and the processor plans the
                // rest again (and checks it).
                let (_, plan) = pixq_kernel::plan(&png, &p, &l).unwrap();
                if !p.ops.iter().any(|o| matches!(o, Op::Trim(_))) {
                    prop_assert_eq!((out.width, out.height), plan.output);
                }
            }
            Err(e) => prop_assert!(!matches!(e, pixq_kernel::Error::Internal(_)), "{}: {}", p, e),
        }
    }

    #[test]
    fn resize_and_thumbnail_dimensions(w in 1u32..300, h in 1u32..300, tw in 0u32..200, th in 1u32..200, size in 1u32..400, ch in channels()) {
        let png = common::png(&raster(w, h, ch));
        let mut p = Processor::new(Limits::default());
        let out = p.process(&png, &Pipeline::parse(&format!("thumbnail:{size}")).unwrap()).unwrap();
        prop_assert!(out.width.max(out.height) <= size);
        prop_assert!(out.width <= w && out.height <= h);
        if w.max(h) <= size { prop_assert_eq!((out.width, out.height), (w, h)); }

        let fill = Pipeline::parse(&format!("resize:{tw}:{th}:fill"));
        if tw > 0 {
            let out = p.process(&png, &fill.unwrap()).unwrap();
            prop_assert_eq!((out.width, out.height), (tw, th));
        } else {
            // fill needs both sides: refused when the pipeline is parsed, before any work.
            prop_assert!(fill.is_err());
            let out = p.process(&png, &Pipeline::parse(&format!("resize:0:{th}")).unwrap()).unwrap();
            prop_assert_eq!(out.height, th);
        }
        let out = p.process(&png, &Pipeline::parse(&format!("resize:{}:{th}:cover", tw.max(1))).unwrap()).unwrap();
        prop_assert_eq!((out.width, out.height), (tw.max(1), th));
        let out = p.process(&png, &Pipeline::parse(&format!("resize:{}:{th}:contain", tw.max(1))).unwrap()).unwrap();
        prop_assert!(out.width <= tw.max(1) && out.height <= th);
        prop_assert!(out.width == tw.max(1) || out.height == th);
    }

    #[test]
    fn crop_and_aspect_dimensions(w in 1u32..200, h in 1u32..200, x in 0u32..100, y in 0u32..100, cw in 1u32..200, chh in 1u32..200, aw in 1u32..20, ah in 1u32..20) {
        let png = common::png(&raster(w, h, Channels::Rgb));
        let mut p = Processor::new(Limits::default());
        let out = p.process(&png, &Pipeline::parse(&format!("crop:{x}:{y}:{cw}:{chh}")).unwrap());
        if x < w && y < h {
            let out = out.unwrap();
            prop_assert_eq!((out.width, out.height), (cw.min(w - x), chh.min(h - y)));
        } else {
            prop_assert!(out.is_err());
        }
        let out = p.process(&png, &Pipeline::parse(&format!("aspect:{aw}:{ah}")).unwrap()).unwrap();
        prop_assert!(out.width == w || out.height == h);
        let ratio_err = (f64::from(out.width) * f64::from(ah) - f64::from(out.height) * f64::from(aw)).abs();
        prop_assert!(ratio_err <= f64::from(aw.max(ah)), "{}x{} for {}:{}", out.width, out.height, aw, ah);
    }

    #[test]
    fn involutions_and_idempotent_ops(w in 1u32..80, h in 1u32..80, ch in channels()) {
        let img = raster(w, h, ch);
        let png = common::png(&img);
        let l = Limits::default();
        let run = |s: &str| pixq_kernel::decode(&pixq_kernel::process(&png, &Pipeline::parse(s).unwrap(), &l).unwrap().bytes, &l).unwrap();
        prop_assert_eq!(&run("flip:h,flip:h"), &img);
        prop_assert_eq!(&run("flip:v,flip:v"), &img);
        prop_assert_eq!(&run("invert,invert"), &img);
        prop_assert_eq!(&run("rotate:90,rotate:90,rotate:180"), &img);
        prop_assert_eq!(run("grayscale,grayscale"), run("grayscale"));
        prop_assert_eq!(run("threshold:99,threshold:99"), run("threshold:99"));
        prop_assert_eq!(&run(&format!("thumbnail:{}", w.max(h))), &img);
    }
}

#[test]
fn every_output_format_round_trips_losslessly_where_it_can() {
    let img = raster(50, 30, Channels::Rgba);
    let lossless = OutputSpec { lossless: true, ..Default::default() };
    for f in [Format::Png, Format::Webp, Format::Tiff] {
        let bytes = pixq_kernel::encode(&img, f, &lossless).unwrap();
        assert_eq!(Format::sniff(&bytes), Some(f));
        assert_eq!(pixq_kernel::decode(&bytes, &Limits::default()).unwrap(), img, "{f}");
    }
    for f in [Format::Gif, Format::Bmp, Format::Jpeg, Format::Webp] {
        let bytes = pixq_kernel::encode(&img, f, &Default::default()).unwrap();
        assert_eq!(Format::sniff(&bytes), Some(f));
        let back = pixq_kernel::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!((back.width(), back.height()), (50, 30), "{f}");
    }
}

/// A step added to the parser but not to [`op`]'s strategy would escape the property tests.
#[test]
fn the_strategy_makes_every_pixel_step() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = op();
    let mut made = std::collections::BTreeSet::new();
    for _ in 0..4000 {
        let op = strategy.new_tree(&mut runner).unwrap().current();
        made.insert(op.to_string().split(':').next().unwrap().to_string());
    }
    let steps: std::collections::BTreeSet<String> = pixq_kernel::op::STEPS
        .iter()
        .filter_map(|s| Pipeline::parse(s.example).unwrap().ops.first().map(|o| o.to_string()))
        .map(|c| c.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(made, steps);
}
