//! EXIF orientation is applied before any operation, for all eight values, and is not
//! written to the output (the pixels are already upright).

mod common;

use pixq_kernel::ops::geometry::orient;
use pixq_kernel::{Format, Limits, Orientation, Pipeline, Raster, process};

/// The stored image that, once orientation `v` is applied, shows `upright`.
fn stored_for(upright: &Raster, v: u16) -> Raster {
    let inverse = match v {
        6 => Orientation::Rotate270,
        8 => Orientation::Rotate90,
        other => Orientation::from_exif(other),
    };
    orient(upright, inverse)
}

fn quadrant_colours(r: &Raster) -> [[u8; 3]; 4] {
    let (w, h) = (r.width(), r.height());
    let at = |x: u32, y: u32| -> [u8; 3] { r.pixel(x, y)[..3].try_into().unwrap() };
    [at(w / 4, h / 4), at(3 * w / 4, h / 4), at(w / 4, 3 * h / 4), at(3 * w / 4, 3 * h / 4)]
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 40)
}

#[test]
fn all_eight_jpeg_orientations_come_out_upright() {
    let upright = common::quadrants(96, 64);
    let want = quadrant_colours(&upright);
    for v in 1..=8u16 {
        let jpeg = common::with_exif_orientation(&common::jpeg(&stored_for(&upright, v), 95), v);
        for pipeline in ["", "thumbnail:48"] {
            let out = process(&jpeg, &Pipeline::parse(pipeline).unwrap(), &Limits::default()).unwrap();
            assert_eq!(out.source.orientation, Orientation::from_exif(v));
            let img = pixq_kernel::decode(&out.bytes, &Limits::default()).unwrap();
            let expect_dims = if pipeline.is_empty() { (96, 64) } else { (48, 32) };
            assert_eq!((img.width(), img.height()), expect_dims, "orientation {v} {pipeline}");
            let got = quadrant_colours(&img);
            for q in 0..4 {
                assert!(
                    close(got[q], want[q]),
                    "orientation {v} {pipeline:?} quadrant {q}: {:?} vs {:?}",
                    got[q],
                    want[q]
                );
            }
            // Stripped: re-reading the output finds no orientation to apply again.
            assert_eq!(
                pixq_kernel::codec::probe(&out.bytes, &Limits::default()).unwrap().orientation,
                Orientation::Normal
            );
        }
    }
}

#[test]
fn png_exif_chunk_orientation_is_applied() {
    let upright = common::quadrants(40, 20);
    let png = common::png_with_chunk(&common::png(&stored_for(&upright, 6)), b"eXIf", &common::exif_tiff(6));
    let out = process(&png, &Pipeline::default(), &Limits::default()).unwrap();
    let img = pixq_kernel::decode(&out.bytes, &Limits::default()).unwrap();
    assert_eq!(img, upright);
}

#[test]
fn shipped_sample_with_orientation_6_is_upright() {
    let bytes = std::fs::read(common::samples_dir().join("chelsea-orient6.jpg")).unwrap();
    let out = process(&bytes, &Pipeline::parse("format:png").unwrap(), &Limits::default()).unwrap();
    assert_eq!(out.source.orientation, Orientation::Rotate90);
    assert_eq!((out.source.width, out.source.height), (300, 451));
    assert_eq!((out.width, out.height, out.format), (451, 300, Format::Png));
}
