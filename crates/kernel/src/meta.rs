//! Metadata pixq reads and writes: EXIF orientation and ICC profiles.
//!
//! Outputs carry no EXIF, XMP or comments (stripped: they can hold GPS positions and the
//! orientation is already applied to the pixels). The ICC profile is kept as it came, so
//! colours in wide-gamut photos stay right; it is embedded in JPEG (APP2), PNG (iCCP) and WebP.

/// EXIF orientation (tag 0x0112), values 1..=8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Orientation {
    /// 1: as stored.
    #[default]
    Normal,
    /// 2: mirrored left-right.
    FlipH,
    /// 3: rotated 180.
    Rotate180,
    /// 4: mirrored top-bottom.
    FlipV,
    /// 5: mirrored along the main diagonal.
    Transpose,
    /// 6: needs a 90 degree clockwise rotation.
    Rotate90,
    /// 7: mirrored along the anti-diagonal.
    Transverse,
    /// 8: needs a 270 degree clockwise rotation.
    Rotate270,
}

impl Orientation {
    /// From the EXIF value; anything out of range is treated as 1.
    pub fn from_exif(v: u16) -> Orientation {
        match v {
            2 => Orientation::FlipH,
            3 => Orientation::Rotate180,
            4 => Orientation::FlipV,
            5 => Orientation::Transpose,
            6 => Orientation::Rotate90,
            7 => Orientation::Transverse,
            8 => Orientation::Rotate270,
            _ => Orientation::Normal,
        }
    }

    /// Whether applying it swaps width and height.
    pub fn swaps_dimensions(self) -> bool {
        matches!(
            self,
            Orientation::Transpose | Orientation::Rotate90 | Orientation::Transverse | Orientation::Rotate270
        )
    }
}

/// Reads the orientation from a TIFF-structured EXIF block (starting at "II*\0" / "MM\0*").
pub fn exif_orientation(tiff: &[u8]) -> Option<Orientation> {
    let (r, version) = crate::tiff_header::Reader::open(tiff)?;
    if version != 42 {
        return None;
    }
    let ifd = r.uint(4, 4)? as usize;
    let entries = r.uint(ifd, 2)? as usize;
    for i in 0..entries.min(512) {
        let e = ifd + 2 + i * 12;
        if r.uint(e, 2)? == 0x0112 {
            return Some(Orientation::from_exif(r.uint(e + 8, 2)? as u16));
        }
    }
    None
}

/// Largest ICC profile pixq keeps (real profiles are a few KB to a few hundred KB; a
/// bigger one is dropped, not copied into every output).
pub const MAX_ICC: usize = 4 << 20;

/// Whether the ICC profile `icc` describes pixels of layout `channels`: a profile is kept
/// in an output only when its colour space (header bytes 16..20) is the output's, so a
/// grey output never carries an RGB profile and no output carries a CMYK one (CMYK input is
/// converted to RGB). Anything that is not a profile (no `acsp` signature) is dropped.
pub fn icc_fits(icc: &[u8], channels: crate::Channels) -> bool {
    if icc.len() < 128 || &icc[36..40] != b"acsp" {
        return false;
    }
    match &icc[16..20] {
        b"RGB " => matches!(channels, crate::Channels::Rgb | crate::Channels::Rgba),
        b"GRAY" => matches!(channels, crate::Channels::Gray | crate::Channels::GrayAlpha),
        _ => false,
    }
}

/// What pixq takes from a JPEG's marker segments.
#[derive(Debug, Default, Clone)]
pub struct JpegMeta {
    /// EXIF orientation, `Normal` when absent.
    pub orientation: Orientation,
    /// ICC profile, reassembled from its APP2 chunks.
    pub icc: Option<Vec<u8>>,
    /// APP2 segments that call themselves part of an ICC profile (a profile has at most
    /// 255 parts).
    pub icc_parts: usize,
}

/// The marker segments before the first scan, walked as libjpeg walks them: bytes that are
/// not a marker are skipped up to the next 0xFF (libjpeg warns "extraneous bytes"), fill
/// bytes (0xFF 0xFF ...) are skipped, the standalone markers (SOI, RST0-7, TEM) carry no
/// length, a segment whose length field is 0 or 1 is empty (libjpeg reads on right after
/// its length), and a segment whose length runs past the end stops the walk. Yields
/// (marker, body).
pub fn jpeg_segments(jpeg: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut i = 2;
    std::iter::from_fn(move || {
        loop {
            while i < jpeg.len() && jpeg[i] != 0xFF {
                i += 1;
            }
            while i + 1 < jpeg.len() && jpeg[i + 1] == 0xFF {
                i += 1;
            }
            let marker = *jpeg.get(i + 1)?;
            if marker == 0x00 {
                // A stuffed zero is data, not a marker.
                i += 2;
                continue;
            }
            if matches!(marker, 0x01 | 0xD0..=0xD8) {
                i += 2;
                continue;
            }
            if marker == 0xDA || marker == 0xD9 {
                return None;
            }
            let len = u16::from_be_bytes([*jpeg.get(i + 2)?, *jpeg.get(i + 3)?]) as usize;
            if len < 2 {
                // Read as libjpeg reads it: an empty segment, the next marker right after.
                i += 4;
                return Some((marker, &[][..]));
            }
            if i + 2 + len > jpeg.len() {
                return None;
            }
            let body = &jpeg[i + 4..i + 2 + len];
            i += 2 + len;
            return Some((marker, body));
        }
    })
}

/// Reads orientation and ICC from the segments before the first scan. Malformed segments end
/// the walk quietly: the decoder, not this reader, decides whether the file is broken.
pub fn read_jpeg_meta(jpeg: &[u8]) -> JpegMeta {
    let mut meta = JpegMeta::default();
    // A profile has at most 255 parts (its sequence numbers are a byte) and MAX_ICC bytes:
    // past either, the parts are dropped as they come, not collected first.
    let (mut chunks, mut total, mut dropped): (Vec<(u8, &[u8])>, usize, bool) = (Vec::new(), 0, false);
    for (marker, body) in jpeg_segments(jpeg) {
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            if let Some(o) = exif_orientation(&body[6..]) {
                meta.orientation = o;
            }
        } else if marker == 0xE2 && body.starts_with(b"ICC_PROFILE\0") && body.len() > 14 {
            meta.icc_parts += 1;
            if dropped {
                continue;
            }
            total += body.len() - 14;
            if chunks.len() == 255 || total > MAX_ICC {
                (chunks, dropped) = (Vec::new(), true);
            } else {
                chunks.push((body[12], &body[14..]));
            }
        }
    }
    if !chunks.is_empty() {
        chunks.sort_by_key(|c| c.0);
        meta.icc = Some(chunks.iter().flat_map(|c| c.1.iter().copied()).collect());
    }
    meta
}

/// Inserts an ICC profile into a freshly encoded JPEG (right after SOI and any APP0).
pub fn jpeg_with_icc(jpeg: Vec<u8>, icc: &[u8]) -> Vec<u8> {
    const MAX_CHUNK: usize = 65_519;
    if icc.is_empty() || jpeg.len() < 2 {
        return jpeg;
    }
    let mut at = 2;
    if jpeg.len() > 6 && jpeg[2] == 0xFF && jpeg[3] == 0xE0 {
        at = 4 + u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    }
    let n = icc.len().div_ceil(MAX_CHUNK);
    let mut out = Vec::with_capacity(jpeg.len() + icc.len() + n * 18);
    out.extend_from_slice(&jpeg[..at]);
    for (k, chunk) in icc.chunks(MAX_CHUNK).enumerate() {
        let len = (2 + 12 + 2 + chunk.len()) as u16;
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.push((k + 1) as u8);
        out.push(n as u8);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// Appends a RIFF chunk: its four-character code, its size, its payload padded to an even
/// length.
pub(crate) fn riff_chunk(out: &mut Vec<u8>, fourcc: &[u8], payload: &[u8]) {
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
}

/// Puts an ICC profile into a freshly encoded WebP: the extended format (a `VP8X` header
/// chunk with the ICC flag, then `ICCP` before the image chunks), keeping an existing `VP8X`
/// (libwebp writes one for images with alpha). Anything that is not a WebP is returned as is.
pub fn webp_with_icc(webp: Vec<u8>, icc: &[u8], width: u32, height: u32, alpha: bool) -> Vec<u8> {
    if icc.is_empty() || webp.len() < 20 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return webp;
    }
    let body = &webp[12..];
    let mut chunks = Vec::with_capacity(body.len() + icc.len() + 32);
    if &body[..4] == b"VP8X" {
        let size = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let end = (8 + size + size % 2).min(body.len());
        chunks.extend_from_slice(&body[..end]);
        chunks[8] |= 0x20;
        riff_chunk(&mut chunks, b"ICCP", icc);
        chunks.extend_from_slice(&body[end..]);
    } else {
        let mut vp8x = [0u8; 10];
        vp8x[0] = 0x20 | if alpha { 0x10 } else { 0 };
        vp8x[4..7].copy_from_slice(&(width.saturating_sub(1)).to_le_bytes()[..3]);
        vp8x[7..10].copy_from_slice(&(height.saturating_sub(1)).to_le_bytes()[..3]);
        riff_chunk(&mut chunks, b"VP8X", &vp8x);
        riff_chunk(&mut chunks, b"ICCP", icc);
        chunks.extend_from_slice(body);
    }
    riff_webp(&chunks)
}

/// A WebP file around `chunks`: the RIFF header with its size, then the chunks.
pub(crate) fn riff_webp(chunks: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + chunks.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + chunks.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(chunks);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn exif_block(orientation: u16, little_endian: bool) -> Vec<u8> {
        let mut t = Vec::new();
        let w16 = |t: &mut Vec<u8>, v: u16| {
            t.extend_from_slice(&if little_endian { v.to_le_bytes() } else { v.to_be_bytes() })
        };
        let w32 = |t: &mut Vec<u8>, v: u32| {
            t.extend_from_slice(&if little_endian { v.to_le_bytes() } else { v.to_be_bytes() })
        };
        t.extend_from_slice(if little_endian { b"II" } else { b"MM" });
        w16(&mut t, 42);
        w32(&mut t, 8);
        w16(&mut t, 1);
        w16(&mut t, 0x0112);
        w16(&mut t, 3);
        w32(&mut t, 1);
        w16(&mut t, orientation);
        w16(&mut t, 0);
        w32(&mut t, 0);
        t
    }

    #[test]
    fn reads_orientation_in_both_byte_orders() {
        for v in 1..=8 {
            assert_eq!(exif_orientation(&exif_block(v, true)), Some(Orientation::from_exif(v)));
            assert_eq!(exif_orientation(&exif_block(v, false)), Some(Orientation::from_exif(v)));
        }
        assert_eq!(exif_orientation(b"garbage"), None);
        assert_eq!(exif_orientation(&exif_block(6, true)[..12]), None);
    }

    #[test]
    fn segment_walk_skips_standalone_markers_fill_bytes_and_garbage() {
        // SOI, RST0 (no length), fill bytes, APP1 whose body holds a fake segment, then
        // garbage, then COM, then SOS.
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xD0, 0xFF, 0xFF, 0xFF, 0xE1, 0, 8];
        j.extend_from_slice(&[0xFF, 0xC0, 0, 4, 1, 2]);
        j.extend_from_slice(&[0x12, 0x34, 0xFF, 0xFE, 0, 3, b'x', 0xFF, 0x01, 0xFF, 0xDA, 0, 2]);
        let segs: Vec<(u8, Vec<u8>)> = jpeg_segments(&j).map(|(m, b)| (m, b.to_vec())).collect();
        assert_eq!(segs, vec![(0xE1, vec![0xFF, 0xC0, 0, 4, 1, 2]), (0xFE, vec![b'x'])]);
        // A length that runs past the end stops the walk.
        assert_eq!(jpeg_segments(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 1]).count(), 0);
        // Lengths 0 and 1 are empty segments, and the walk goes on behind them.
        for len in [0u8, 1] {
            let j = [0xFF, 0xD8, 0xFF, 0xE0, 0, len, 0xFF, 0xFE, 0, 4, b'a', b'b', 0xFF, 0xDA];
            let segs: Vec<(u8, Vec<u8>)> = jpeg_segments(&j).map(|(m, b)| (m, b.to_vec())).collect();
            assert_eq!(segs, vec![(0xE0, vec![]), (0xFE, b"ab".to_vec())], "length {len}");
        }
    }

    #[test]
    fn icc_round_trips_through_jpeg_markers() {
        let fake_jpeg = vec![0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 0xFF, 0xD9];
        let icc: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        let with = jpeg_with_icc(fake_jpeg.clone(), &icc);
        assert_eq!(read_jpeg_meta(&with).icc.as_deref(), Some(&icc[..]));
        // A "profile" over MAX_ICC is dropped, not copied into every output.
        let huge = vec![7u8; MAX_ICC + 1];
        assert_eq!(read_jpeg_meta(&jpeg_with_icc(fake_jpeg, &huge)).icc, None);
    }
}
