//! A PNG encoder tuned for speed: per-row adaptive filter choice (minimum sum of absolute
//! differences, the heuristic libpng uses) and zlib from `flate2` on the zlib-rs backend.

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::io::Write;

use crate::{Channels, Raster};

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

#[inline]
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let p = ia + ib - ic;
    let (pa, pb, pc) = ((p - ia).abs(), (p - ib).abs(), (p - ic).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Cost of a filtered row: sum of bytes read as signed magnitudes.
#[inline]
fn cost(row: &[u8]) -> u64 {
    row.iter().map(|&v| u64::from((v as i8).unsigned_abs())).sum()
}

/// Writes the five filters of `cur` (previous row `prev`, `bpp` bytes per pixel) into
/// `cand[f]` and returns the index of the cheapest.
fn filter_row(cur: &[u8], prev: &[u8], bpp: usize, cand: &mut [Vec<u8>; 5]) -> usize {
    let n = cur.len();
    // None
    cand[0].copy_from_slice(cur);
    // Sub
    cand[1][..bpp].copy_from_slice(&cur[..bpp]);
    for i in bpp..n {
        cand[1][i] = cur[i].wrapping_sub(cur[i - bpp]);
    }
    // Up
    for i in 0..n {
        cand[2][i] = cur[i].wrapping_sub(prev[i]);
    }
    // Average
    for i in 0..bpp {
        cand[3][i] = cur[i].wrapping_sub(prev[i] >> 1);
    }
    for i in bpp..n {
        cand[3][i] = cur[i].wrapping_sub(((u16::from(cur[i - bpp]) + u16::from(prev[i])) >> 1) as u8);
    }
    // Paeth
    for i in 0..bpp {
        cand[4][i] = cur[i].wrapping_sub(prev[i]);
    }
    for i in bpp..n {
        cand[4][i] = cur[i].wrapping_sub(paeth(cur[i - bpp], prev[i], prev[i - bpp]));
    }
    let mut best = 0;
    let mut best_cost = u64::MAX;
    for (f, c) in cand.iter().enumerate() {
        let k = cost(c);
        if k < best_cost {
            best = f;
            best_cost = k;
        }
    }
    best
}

/// Encodes an 8-bit raster as PNG at zlib `level` (0..=9), embedding `icc` when given.
pub fn encode(img: &Raster, level: u8, icc: Option<&[u8]>, stop: &crate::Stop) -> Result<Vec<u8>, crate::Error> {
    let io = |e: std::io::Error| crate::Error::Encode { format: crate::Format::Png, reason: e.to_string() };
    encode_rows(img, level, icc, stop, io)
}

fn encode_rows(
    img: &Raster,
    level: u8,
    icc: Option<&[u8]>,
    stop: &crate::Stop,
    io: impl Fn(std::io::Error) -> crate::Error,
) -> Result<Vec<u8>, crate::Error> {
    let colour_type = match img.channels() {
        Channels::Gray => 0u8,
        Channels::Rgb => 2,
        Channels::GrayAlpha => 4,
        Channels::Rgba => 6,
    };
    let mut out = Vec::with_capacity(img.data().len() / 2 + 1024);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&img.width().to_be_bytes());
    ihdr.extend_from_slice(&img.height().to_be_bytes());
    ihdr.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if let Some(icc) = icc {
        let mut body = b"icc\0\0".to_vec();
        let mut z = ZlibEncoder::new(&mut body, Compression::new(u32::from(level.max(1))));
        z.write_all(icc).map_err(&io)?;
        z.finish().map_err(&io)?;
        chunk(&mut out, b"iCCP", &body);
    }
    let stride = img.stride();
    let bpp = img.channels().count();
    let mut z = ZlibEncoder::new(Vec::with_capacity(img.data().len() / 2), Compression::new(u32::from(level.min(9))));
    let zero = vec![0u8; stride];
    let mut cand: [Vec<u8>; 5] = std::array::from_fn(|_| vec![0u8; stride]);
    for y in 0..img.height() {
        stop.check_row(y as usize)?;
        let cur = img.row(y);
        let prev = if y == 0 { &zero[..] } else { img.row(y - 1) };
        // Level 0 is "store": filtering cannot shrink it, so skip the work.
        let f = if level == 0 { 0 } else { filter_row(cur, prev, bpp, &mut cand) };
        z.write_all(&[f as u8]).map_err(&io)?;
        z.write_all(if level == 0 { cur } else { &cand[f] }).map_err(&io)?;
    }
    let idat = z.finish().map_err(&io)?;
    for part in idat.chunks(1 << 20) {
        chunk(&mut out, b"IDAT", part);
    }
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paeth_matches_the_spec() {
        assert_eq!(paeth(10, 20, 10), 20);
        assert_eq!(paeth(20, 10, 10), 20);
        assert_eq!(paeth(10, 10, 20), 10);
    }

    #[test]
    fn decodes_back_exactly_for_every_layout_and_level() {
        for ch in [Channels::Gray, Channels::GrayAlpha, Channels::Rgb, Channels::Rgba] {
            let img = Raster::from_fn(37, 23, ch, |x, y, p| {
                for (c, v) in p.iter_mut().enumerate() {
                    *v = (x * 7 + y * 13 + c as u32 * 50) as u8;
                }
            });
            for level in [0, 1, 6, 9] {
                let bytes = encode(&img, level, Some(b"fake icc"), &crate::Stop::new()).unwrap();
                let back = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
                assert_eq!((back.width(), back.height()), (37, 23));
                let raw = match ch {
                    Channels::Gray => back.to_luma8().into_raw(),
                    Channels::GrayAlpha => back.to_luma_alpha8().into_raw(),
                    Channels::Rgb => back.to_rgb8().into_raw(),
                    Channels::Rgba => back.to_rgba8().into_raw(),
                };
                assert_eq!(raw, img.data(), "{ch:?} level {level}");
            }
        }
    }
}
