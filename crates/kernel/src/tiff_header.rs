//! A TIFF's first IFD, checked before the `tiff` crate reads it. That decoder reads the
//! value arrays of the tags it needs as one `Value` (32 bytes) per element, sized from the
//! entry's count under its own 256 MiB budget, not ours: a 74-byte file can declare 8
//! million strip offsets. Its JPEG-compressed strips are decoded at the size their own JPEG
//! header declares (up to 16384x16384), whatever the TIFF's size. So, before any of that:
//! every entry's values must lie within the file, the strip and tile arrays must hold no
//! more entries than the image has strips or tiles, the other arrays the decoder reads must
//! be small, and a JPEG strip or tile must declare no picture larger than its place. The
//! ICC profile is returned as the file's own bytes (the decoder would read it as `Value`s
//! too, and drop a profile larger than a small image's budget).

use crate::codec::{HEADER_ALLOC, decode_err};
use crate::{Error, Format, Limits};

const IMAGE_WIDTH: u16 = 256;
const IMAGE_LENGTH: u16 = 257;
const COMPRESSION: u16 = 259;
const STRIP_OFFSETS: u16 = 273;
const SAMPLES_PER_PIXEL: u16 = 277;
const ROWS_PER_STRIP: u16 = 278;
const STRIP_BYTE_COUNTS: u16 = 279;
const PLANAR_CONFIGURATION: u16 = 284;
const TILE_WIDTH: u16 = 322;
const TILE_LENGTH: u16 = 323;
const TILE_OFFSETS: u16 = 324;
const TILE_BYTE_COUNTS: u16 = 325;
const ICC_PROFILE: u16 = 34675;

/// More entries than any image needs (a TIFF's tags number a few dozen).
const MAX_ENTRIES: u64 = 1024;

/// Tags whose values the decoder reads (other than the strip and tile arrays).
const READ_BY_DECODER: [u16; 16] = [254, 256, 257, 258, 259, 262, 266, 274, 277, 278, 284, 317, 320, 338, 339, 347];

/// One IFD entry: tag, element size, count, and where its values are.
struct Entry {
    tag: u16,
    size: u64,
    count: u64,
    at: usize,
}

/// Integers of a TIFF structure (a file, or an EXIF block) in its byte order.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    le: bool,
}

impl<'a> Reader<'a> {
    /// The byte order its first two bytes name ("II" or "MM"), and its version (42, or 43
    /// for BigTIFF); `None` for anything else.
    pub(crate) fn open(b: &'a [u8]) -> Option<(Reader<'a>, u64)> {
        let le = match b.get(..2)? {
            b"II" => true,
            b"MM" => false,
            _ => return None,
        };
        let r = Reader { b, le };
        let version = r.uint(2, 2).filter(|v| matches!(v, 42 | 43))?;
        Some((r, version))
    }

    /// The `n`-byte unsigned integer at `at`, if the bytes are there.
    pub(crate) fn uint(&self, at: usize, n: usize) -> Option<u64> {
        let s = self.b.get(at..at.checked_add(n)?)?;
        Some(if self.le {
            s.iter().rev().fold(0, |v, &x| v << 8 | u64::from(x))
        } else {
            s.iter().fold(0, |v, &x| v << 8 | u64::from(x))
        })
    }
}

fn element_size(kind: u16) -> u64 {
    match kind {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => 0,
    }
}

fn refuse(msg: String) -> Error {
    decode_err(Format::Tiff, msg)
}

/// Checks the first IFD of `input` (a TIFF) and returns its ICC profile, if any. A file
/// this walk cannot read (a header it does not know) is left to the decoder.
pub(crate) fn check(input: &[u8], limits: &Limits) -> Result<Option<Vec<u8>>, Error> {
    let Some((r, version)) = Reader::open(input) else { return Ok(None) };
    let big = version == 43;
    let (ifd, count_size, entry_size, field) = if big { (r.uint(8, 8), 8, 20, 8) } else { (r.uint(4, 4), 2, 12, 4) };
    let Some(ifd) = ifd.and_then(|o| usize::try_from(o).ok()) else { return Ok(None) };
    let Some(n) = r.uint(ifd, count_size) else { return Ok(None) };
    let len = input.len() as u64;
    if n > MAX_ENTRIES || n.saturating_mul(entry_size as u64) > len {
        return Err(refuse(format!("its first IFD declares {n} entries")));
    }
    let mut entries = Vec::with_capacity(n as usize);
    for k in 0..n as usize {
        let e = ifd + count_size + k * entry_size;
        let (Some(tag), Some(kind), Some(count)) = (r.uint(e, 2), r.uint(e + 2, 2), r.uint(e + 4, field)) else {
            return Ok(None);
        };
        let (tag, size) = (tag as u16, element_size(kind as u16));
        let bytes = count.saturating_mul(size);
        let at =
            if bytes <= field as u64 { Some(e + 4 + field) } else { r.uint(e + 4 + field, field).map(|o| o as usize) };
        let at = at.filter(|&a| (a as u64).checked_add(bytes).is_some_and(|end| end <= len));
        let Some(at) = at else {
            return Err(refuse(format!("tag {tag} declares {bytes} bytes of values past the end of the file")));
        };
        entries.push(Entry { tag, size, count, at });
    }
    let find = |tag: u16| entries.iter().find(|e| e.tag == tag);
    let value = |tag: u16, i: u64| {
        find(tag).filter(|e| i < e.count).and_then(|e| r.uint(e.at + (i * e.size) as usize, e.size as usize))
    };
    let (Some(width), Some(height)) = (value(IMAGE_WIDTH, 0), value(IMAGE_LENGTH, 0)) else { return Ok(None) };
    let (width, height) = (u32::try_from(width).unwrap_or(u32::MAX), u32::try_from(height).unwrap_or(u32::MAX));
    if width == 0 || height == 0 {
        return Err(refuse("its header declares a zero size".into()));
    }
    limits.check_dimensions(width, height)?;
    let planes = if value(PLANAR_CONFIGURATION, 0) == Some(2) {
        value(SAMPLES_PER_PIXEL, 0).unwrap_or(1).clamp(1, 64)
    } else {
        1
    };
    // Each strip or tile, and its place: (columns, rows).
    let (chunks, place) = match (value(TILE_WIDTH, 0), value(TILE_LENGTH, 0)) {
        (Some(tw), Some(tl)) if tw > 0 && tl > 0 => {
            (u64::from(width).div_ceil(tw) * u64::from(height).div_ceil(tl) * planes, (tw, tl))
        }
        _ => {
            let rows = value(ROWS_PER_STRIP, 0).filter(|&r| r > 0).unwrap_or(u64::from(height)).min(u64::from(height));
            (u64::from(height).div_ceil(rows) * planes, (u64::from(width), rows))
        }
    };
    for e in &entries {
        let most = match e.tag {
            STRIP_OFFSETS | STRIP_BYTE_COUNTS | TILE_OFFSETS | TILE_BYTE_COUNTS => chunks,
            t if READ_BY_DECODER.contains(&t) => HEADER_ALLOC / 32,
            _ => continue,
        };
        if e.count > most {
            return Err(refuse(format!("tag {} holds {} values where the image has room for {most}", e.tag, e.count)));
        }
    }
    // JPEG strips or tiles (compression 7): each picture within its place.
    if value(COMPRESSION, 0) == Some(7) {
        let (offsets, counts) = if find(TILE_OFFSETS).is_some() {
            (TILE_OFFSETS, TILE_BYTE_COUNTS)
        } else {
            (STRIP_OFFSETS, STRIP_BYTE_COUNTS)
        };
        for i in 0..find(offsets).map_or(0, |e| e.count) {
            let (Some(off), Some(n)) = (value(offsets, i), value(counts, i)) else { break };
            let Some(jpeg) = input.get(off as usize..(off as usize).saturating_add(n as usize)) else { continue };
            let sof = crate::meta::jpeg_segments(jpeg)
                .find(|(m, _)| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))
                .and_then(|(_, b)| {
                    Some((u16::from_be_bytes([*b.get(3)?, *b.get(4)?]), u16::from_be_bytes([*b.get(1)?, *b.get(2)?])))
                });
            // A JPEG may pad its picture to whole 16x16 blocks.
            let (pw, ph) = (place.0.next_multiple_of(16), place.1.next_multiple_of(16));
            if let Some((w, h)) = sof.filter(|&(w, h)| u64::from(w) > pw || u64::from(h) > ph) {
                return Err(refuse(format!(
                    "a JPEG strip or tile declares a picture of {w}x{h} in a place of {}x{}",
                    place.0, place.1
                )));
            }
        }
    }
    Ok(find(ICC_PROFILE)
        .filter(|e| e.size == 1 && e.count > 0 && e.count <= crate::meta::MAX_ICC as u64)
        .map(|e| input[e.at..e.at + e.count as usize].to_vec()))
}
