//! Criterion benches for the kernel's hot paths on images made in code (no corpus needed).
//! The libvips comparison on real photos lives in `bench/compare.sh`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pixq_kernel::ops::{edges, filter, geometry, resize};
use pixq_kernel::{Channels, Format, Limits, Orientation, OutputSpec, Pipeline, Processor, Raster};
use std::hint::black_box;

fn photo(w: u32, h: u32) -> Raster {
    Raster::from_fn(w, h, Channels::Rgb, |x, y, p| {
        let t = ((x * 31 + y * 17) % 23) as u8;
        p.copy_from_slice(&[(x * 255 / w) as u8 ^ t, (y * 255 / h) as u8, ((x + y) % 256) as u8]);
    })
}

fn pipelines(c: &mut Criterion) {
    let src = photo(3000, 2000);
    let jpeg =
        pixq_kernel::encode(&src, Format::Jpeg, &OutputSpec { quality: Some(90), ..Default::default() }).unwrap();
    let mut g = c.benchmark_group("pipeline_6mp_jpeg");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    let mut p = Processor::new(Limits::default());
    for (name, spec) in [
        ("p1_thumbnail", "thumbnail:1024,quality:85"),
        ("p2_filters_png", "grayscale,blur:2,sobel,format:png,compression:6"),
        ("p3_full_res", "rotate:90,brightness:10,contrast:1.2,quality:85"),
    ] {
        let pipeline = Pipeline::parse(spec).unwrap();
        g.bench_function(name, |b| b.iter(|| p.process(black_box(&jpeg), &pipeline).unwrap()));
    }
    g.finish();
}

fn operations(c: &mut Criterion) {
    let rgb = photo(2000, 1500);
    let gray = pixq_kernel::ops::color::grayscale(&rgb);
    let mut g = c.benchmark_group("ops_3mp");
    g.sample_size(10);
    let mut r = resize::Resizer::new();
    g.bench_function("resize_lanczos3_rgb_to_1024", |b| {
        b.iter(|| r.resize(&rgb, 1024, 768, pixq_kernel::op::Filter::Lanczos3, false).unwrap())
    });
    g.bench_function("blur_sigma2_gray", |b| {
        b.iter(|| filter::blur(black_box(&gray), 2.0, &pixq_kernel::Stop::new()).unwrap())
    });
    g.bench_function("sobel_gray", |b| b.iter(|| edges::sobel(black_box(&gray), &pixq_kernel::Stop::new()).unwrap()));
    g.bench_function("rotate90_rgb", |b| b.iter(|| geometry::orient(black_box(&rgb), Orientation::Rotate90)));
    g.bench_function("png_level6_gray", |b| {
        b.iter(|| pixq_kernel::png::encode(black_box(&gray), 6, None, &pixq_kernel::Stop::new()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, pipelines, operations);
criterion_main!(benches);
