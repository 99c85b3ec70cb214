//! Shared helpers for the kernel's integration tests: images made in code.
#![allow(dead_code)]

use pixq_kernel::{Channels, Format, OutputSpec, Raster};

/// Four solid quadrants: red (top left), green (top right), blue (bottom left), white.
pub fn quadrants(w: u32, h: u32) -> Raster {
    Raster::from_fn(w, h, Channels::Rgb, |x, y, p| {
        p.copy_from_slice(match (x < w / 2, y < h / 2) {
            (true, true) => &[255, 0, 0],
            (false, true) => &[0, 255, 0],
            (true, false) => &[0, 0, 255],
            (false, false) => &[255, 255, 255],
        })
    })
}

/// A smooth gradient with some texture; compresses like a photo, not like flat colour.
pub fn photo_like(w: u32, h: u32) -> Raster {
    Raster::from_fn(w, h, Channels::Rgb, |x, y, p| {
        let t = ((x * 31 + y * 17) % 23) as u8;
        p.copy_from_slice(&[(x * 255 / w) as u8 ^ t, (y * 255 / h) as u8, ((x + y) % 256) as u8]);
    })
}

pub fn jpeg(r: &Raster, q: u8) -> Vec<u8> {
    pixq_kernel::encode(r, Format::Jpeg, &OutputSpec { quality: Some(q), ..Default::default() }).unwrap()
}

pub fn png(r: &Raster) -> Vec<u8> {
    pixq_kernel::encode(r, Format::Png, &OutputSpec::default()).unwrap()
}

/// A TIFF-structured EXIF block with one Orientation entry.
pub fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    t
}

/// Inserts an APP1 EXIF segment carrying `orientation` right after SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut body = b"Exif\0\0".to_vec();
    body.extend_from_slice(&exif_tiff(orientation));
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Inserts a PNG chunk right after IHDR (where eXIf and iCCP belong: before the data).
pub fn png_with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let iend = 8 + 25;
    let mut out = png[..iend].to_vec();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&png[iend..]);
    out
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Mean and max absolute difference between two same-sized rasters.
pub fn diff(a: &Raster, b: &Raster) -> (f64, u8) {
    assert_eq!((a.width(), a.height(), a.channels()), (b.width(), b.height(), b.channels()), "shapes differ");
    let mut sum = 0u64;
    let mut max = 0u8;
    for (&x, &y) in a.data().iter().zip(b.data()) {
        let d = x.abs_diff(y);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / a.data().len() as f64, max)
}

pub fn samples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}
