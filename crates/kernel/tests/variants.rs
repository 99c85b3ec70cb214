//! Variants: several outputs from one decode, each as its own pipeline would make it.

mod common;

use pixq_kernel::op::variants;
use pixq_kernel::{Format, Limits, Pipeline, Processor, Stop, decode};

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    let (ra, rb) = (decode(a, &Limits::default()).unwrap(), decode(b, &Limits::default()).unwrap());
    assert_eq!((ra.width(), ra.height(), ra.channels()), (rb.width(), rb.height(), rb.channels()));
    let (pa, pb) = (ra.data(), rb.data());
    pa.iter().zip(pb).map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs() as f64).sum::<f64>() / pa.len() as f64
}

#[test]
fn each_variant_is_the_size_and_format_of_its_own_pipeline_from_one_decode() {
    let src = common::jpeg(&common::photo_like(2400, 1600), 90);
    let vs = variants::parse(
        "small=thumbnail:200;large=thumbnail:1000,format:webp;gray=grayscale,resize:300:200,format:png;\
         crop=crop:100:100:400:300,rotate:90",
    )
    .unwrap();
    let pipelines: Vec<&Pipeline> = vs.iter().map(|v| &v.pipeline).collect();
    let mut p = Processor::new(Limits::default());
    let outs = p.process_variants(&src, &pipelines, &Stop::new()).unwrap();
    assert_eq!(outs.len(), 4);
    for (v, out) in vs.iter().zip(&outs) {
        let alone = p.process(&src, &v.pipeline).unwrap();
        assert_eq!((out.width, out.height, out.format), (alone.width, alone.height, alone.format), "{}", v.name);
        // The shared decode is the whole image here (`grayscale` and `crop` need every
        // pixel), so a thumbnail starts from more pixels than it alone would have: close,
        // not identical. Pipelines that would decode in full alone give the same bytes.
        let d = mean_abs_diff(&out.bytes, &alone.bytes);
        assert!(d < 2.0, "{}: mean difference {d}", v.name);
        if v.name == "gray" || v.name == "crop" {
            assert_eq!(out.bytes, alone.bytes, "{}", v.name);
        }
    }
    assert_eq!((outs[0].width, outs[0].height), (200, 133));
    assert_eq!(outs[1].format, Format::Webp);
    assert_eq!((outs[3].width, outs[3].height), (300, 400));
    // The decode is counted once.
    assert!(outs[0].timings.decode > std::time::Duration::ZERO);
    assert!(outs[1..].iter().all(|o| o.timings.decode.is_zero()));
}

#[test]
fn thumbnails_share_the_shrink_on_load_of_the_largest() {
    let src = common::jpeg(&common::photo_like(4000, 3000), 90);
    let vs = variants::parse("s=thumbnail:100;m=thumbnail:400;l=thumbnail:700").unwrap();
    let pipelines: Vec<&Pipeline> = vs.iter().map(|v| &v.pipeline).collect();
    let (probe, _) = pixq_kernel::plan(&src, &vs[2].pipeline, &Limits::default()).unwrap();
    let (union, plans) = pixq_kernel::plan::plan_variants(src.len(), &probe, &pipelines, &Limits::default()).unwrap();
    let large_alone = pixq_kernel::plan::plan(src.len(), &probe, &vs[2].pipeline, &Limits::default()).unwrap();
    let small_alone = pixq_kernel::plan::plan(src.len(), &probe, &vs[0].pipeline, &Limits::default()).unwrap();
    // One decode at what the largest needs (a reduced DCT scale with libjpeg-turbo; the
    // pure-Rust decoder always decodes in full), not the full image.
    assert_eq!(union.decoded, large_alone.decoded);
    assert!(plans.iter().all(|p| p.decoded == union.decoded));
    if cfg!(feature = "turbojpeg") {
        assert!(union.decoded.0 < 4000, "{:?}", union.decoded);
        assert!(small_alone.decoded.0 < union.decoded.0);
    }
    // Time: one decode, three resamples; less than three jobs.
    let alone: u64 = vs
        .iter()
        .map(|v| pixq_kernel::plan::plan(src.len(), &probe, &v.pipeline, &Limits::default()).unwrap().cpu_ns)
        .sum();
    assert!(union.cpu_ns < alone, "{} vs {alone}", union.cpu_ns);
    // Memory: the largest variant plus the held decode.
    assert!(union.peak_bytes > large_alone.peak_bytes);
    assert!(union.peak_at.contains("the shared decode held"), "{}", union.peak_at);
    // The largest variant's output is byte for byte its own job's.
    let mut p = Processor::new(Limits::default());
    let outs = p.process_variants(&src, &pipelines, &Stop::new()).unwrap();
    assert_eq!(outs[2].bytes, p.process(&src, &vs[2].pipeline).unwrap().bytes);
    assert_eq!(outs.iter().map(|o| o.width).collect::<Vec<_>>(), [100, 400, 700]);
}

#[test]
fn a_broken_input_or_a_bad_step_fails_the_whole_job_cleanly() {
    let vs = variants::parse("a=thumbnail:10;b=thumbnail:20").unwrap();
    let pipelines: Vec<&Pipeline> = vs.iter().map(|v| &v.pipeline).collect();
    let mut p = Processor::new(Limits::default());
    let mut src = common::jpeg(&common::photo_like(64, 48), 90);
    src.truncate(src.len() / 3);
    assert!(p.process_variants(&src, &pipelines, &Stop::new()).is_err());
    // A crop outside the image in the second variant: refused by the plan before decoding.
    let vs = variants::parse("a=thumbnail:10;b=crop:500:500:10:10").unwrap();
    let pipelines: Vec<&Pipeline> = vs.iter().map(|v| &v.pipeline).collect();
    let src = common::jpeg(&common::photo_like(64, 48), 90);
    assert!(p.process_variants(&src, &pipelines, &Stop::new()).is_err());
    assert!(p.process_variants(&src, &[], &Stop::new()).unwrap().is_empty());
}
