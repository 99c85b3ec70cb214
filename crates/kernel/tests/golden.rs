//! Golden images: fixed pipelines over a shipped sample, compared with stored results.
//! Regenerate after an intended change with `PIXQ_REGENERATE_GOLDEN=1 cargo test -p
//! pixq-kernel --test golden` (and bump `KERNEL_VERSION`).
//!
//! The comparison allows a small tolerance: SIMD resampling may round differently on CPUs
//! with other vector extensions, and that is not a change of meaning.

mod common;

use pixq_kernel::{Limits, Pipeline, process};
use std::path::PathBuf;

const CASES: &[(&str, &str)] = &[
    ("thumbnail", "thumbnail:128,format:png"),
    ("resize_cover", "resize:160:90:cover,format:png"),
    ("gray_blur", "grayscale,blur:2,thumbnail:128,format:png"),
    ("sobel", "thumbnail:160,sobel,format:png"),
    ("sharpen", "thumbnail:128,sharpen:1:1.5,format:png"),
    ("rotate30", "thumbnail:96,rotate:30:ffffff00,format:png"),
    ("tone", "thumbnail:128,brightness:20,contrast:1.3,gamma:1.4,format:png"),
    ("threshold", "thumbnail:128,threshold:110,format:png"),
    ("smartcrop", "smartcrop:96:128,format:png"),
    ("aspect_flip", "aspect:16:9:north,flip:v,invert,thumbnail:128,format:png"),
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn pipelines_match_their_golden_images() {
    let input = std::fs::read(common::samples_dir().join("astronaut.png")).unwrap();
    let regenerate = std::env::var_os("PIXQ_REGENERATE_GOLDEN").is_some();
    let limits = Limits::default();
    let mut failures = Vec::new();
    for (name, pipeline) in CASES {
        let out = process(&input, &Pipeline::parse(pipeline).unwrap(), &limits).unwrap();
        let path = golden_dir().join(format!("{name}.png"));
        if regenerate {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &out.bytes).unwrap();
            continue;
        }
        let want =
            pixq_kernel::decode(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())), &limits)
                .unwrap();
        let got = pixq_kernel::decode(&out.bytes, &limits).unwrap();
        if (got.width(), got.height(), got.channels()) != (want.width(), want.height(), want.channels()) {
            failures.push(format!("{name}: shape {:?} vs golden {:?}", got, want));
            continue;
        }
        let (mean, max) = common::diff(&got, &want);
        if mean > 0.5 || max > 8 {
            failures.push(format!("{name}: mean diff {mean:.3}, max {max}"));
        }
    }
    assert!(failures.is_empty(), "golden mismatches:\n{}", failures.join("\n"));
}
