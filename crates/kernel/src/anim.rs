//! Animated GIF and WebP: what the file declares (frame count, loop count), read by a walk
//! over its blocks without decoding a pixel, and the encoders that write an animation one
//! frame at a time.
//!
//! The walk bounds the work before it starts: the plan refuses an animation with more
//! frames, or more pixels over all its frames, than the limits allow. It is not trusted
//! beyond that: the decode counts frames again as they come and stops at the count the
//! walk found (a file whose decoder finds more frames than its blocks declare is refused),
//! so a file that fools the walk cannot make the decoder do more than the limits allowed.
//!
//! Loop counts are kept as the number of times the animation plays, 0 for forever (WebP's
//! meaning). GIF stores repeats after the first play in its NETSCAPE2.0 block, and a GIF
//! without that block plays once: a GIF without it comes out without it, a GIF with
//! repeat N comes out with repeat N, and a WebP output plays N + 1 times.

use crate::{Channels, Error, Format, Raster};

/// What an animated file declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Animation {
    /// Frames in the file (at least 2: a one-frame file is a still image).
    pub frames: u32,
    /// Times the animation plays; 0 = forever.
    pub plays: u32,
}

/// The animation `input` declares, `None` for a still image (or a file whose blocks cannot
/// be walked: the decoder then reports what is wrong with it, and decodes one frame).
pub fn scan(input: &[u8], format: Format) -> Option<Animation> {
    let a = match format {
        Format::Gif => walk_gif(input).map(|(a, _)| a),
        Format::Webp => scan_webp(input),
        _ => None,
    }?;
    (a.frames > 1).then_some(a)
}

/// Bytes of a GIF's application extensions (ICC profiles, XMP and others): the `gif` crate
/// keeps an ICC or XMP one whole (up to 50 MB each) for as long as it decodes. `None` when
/// the blocks cannot be walked.
pub(crate) fn gif_application_bytes(input: &[u8]) -> Option<u64> {
    walk_gif(input).map(|(_, app)| app)
}

/// The frames and plays a GIF's blocks declare, and the bytes of its application
/// extensions' data.
fn walk_gif(b: &[u8]) -> Option<(Animation, u64)> {
    let table = |packed: u8| if packed & 0x80 != 0 { 3usize << ((packed & 7) + 1) } else { 0 };
    // Skips data sub-blocks (a length byte, that many bytes, until a zero length).
    let sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let n = *b.get(i)? as usize;
            i += 1;
            if n == 0 {
                return Some(i);
            }
            i += n;
        }
    };
    let mut i = 13 + table(*b.get(10)?);
    let (mut frames, mut plays, mut app) = (0u32, 1u32, 0u64);
    loop {
        match b.get(i) {
            Some(0x21) => {
                let label = *b.get(i + 1)?;
                if label == 0xFF
                    && b.get(i + 2) == Some(&11)
                    && matches!(b.get(i + 3..i + 14), Some(b"NETSCAPE2.0" | b"ANIMEXTS1.0"))
                    && b.get(i + 14) == Some(&3)
                    && b.get(i + 15) == Some(&1)
                {
                    let repeat = u16::from_le_bytes([*b.get(i + 16)?, *b.get(i + 17)?]);
                    plays = if repeat == 0 { 0 } else { u32::from(repeat) + 1 };
                }
                let end = sub_blocks(i + 2)?;
                if label == 0xFF {
                    app += (end - i) as u64;
                }
                i = end;
            }
            Some(0x2C) => {
                frames = frames.saturating_add(1);
                let packed = *b.get(i + 9)?;
                // Descriptor, local colour table, LZW code size, then the data.
                i = sub_blocks(i + 10 + table(packed) + 1)?;
            }
            // The trailer, or the end of a truncated file: what was seen so far.
            _ => return Some((Animation { frames, plays }, app)),
        }
    }
}

/// Walks the chunks of a RIFF WebP body: (fourcc, payload), stopping at the first chunk
/// that runs past the end.
pub(crate) fn riff_chunks(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        let head = body.get(i..i + 8)?;
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let payload = body.get(i + 8..(i + 8).checked_add(size)?)?;
        i += 8 + size + size % 2;
        Some((&head[..4], payload))
    })
}

fn scan_webp(b: &[u8]) -> Option<Animation> {
    if b.get(..4)? != b"RIFF" || b.get(8..12)? != b"WEBP" {
        return None;
    }
    let mut chunks = riff_chunks(&b[12..]);
    let (fourcc, vp8x) = chunks.next()?;
    if fourcc != b"VP8X" || vp8x.first()? & 0x02 == 0 {
        return None;
    }
    let (mut frames, mut plays) = (0u32, 0u32);
    for (fourcc, payload) in chunks {
        match fourcc {
            b"ANIM" if payload.len() >= 6 => plays = u32::from(u16::from_le_bytes([payload[4], payload[5]])),
            b"ANMF" => frames = frames.saturating_add(1),
            _ => {}
        }
    }
    Some(Animation { frames, plays })
}

/// Whether `format` can be written as an animation.
pub fn animatable(format: Format) -> bool {
    matches!(format, Format::Gif | Format::Webp)
}

/// RGBA bytes of `img` (the animation encoders take RGBA).
fn rgba(img: &Raster) -> Vec<u8> {
    if img.channels() == Channels::Rgba {
        img.data().to_vec()
    } else {
        crate::ops::color::convert(img, Channels::Rgba).into_vec()
    }
}

/// Writes an animation frame by frame: only the encoded frames and the previous frame's
/// pixels are held, never the whole animation's pixels.
pub(crate) enum Writer {
    /// GIF: each frame quantised to its own 256-colour palette (NeuQuant, speed 10).
    Gif(Box<gif::Encoder<Vec<u8>>>),
    /// WebP: each frame the rectangle that changed since the previous one, encoded on its
    /// own by libwebp (lossy) or the `image` crate (lossless), in a container of ours.
    Webp(Box<WebpAnimation>),
}

impl Writer {
    /// A writer of `format` for frames of `width` x `height`.
    pub(crate) fn new(
        format: Format,
        width: u32,
        height: u32,
        plays: u32,
        spec: &crate::OutputSpec,
    ) -> Result<Writer, Error> {
        let enc_err = |e: &dyn std::fmt::Display| Error::Encode { format, reason: e.to_string() };
        match format {
            Format::Gif => {
                let too_big = |_| enc_err(&"GIF sides are at most 65535 pixels");
                let (w, h) = (u16::try_from(width).map_err(too_big)?, u16::try_from(height).map_err(too_big)?);
                let mut enc = gif::Encoder::new(Vec::new(), w, h, &[]).map_err(|e| enc_err(&e))?;
                if plays != 1 {
                    let repeat = match plays {
                        0 => gif::Repeat::Infinite,
                        n => gif::Repeat::Finite(u16::try_from(n - 1).unwrap_or(u16::MAX)),
                    };
                    enc.set_repeat(repeat).map_err(|e| enc_err(&e))?;
                }
                Ok(Writer::Gif(Box::new(enc)))
            }
            Format::Webp => Ok(Writer::Webp(Box::new(WebpAnimation {
                width,
                height,
                plays: plays.min(u32::from(u16::MAX)),
                quality: spec.quality.unwrap_or(crate::OutputSpec::DEFAULT_WEBP_QUALITY),
                lossless: spec.lossless,
                alpha: false,
                previous: None,
                frames: Vec::new(),
            }))),
            other => Err(enc_err(&format!("{other} cannot hold an animation"))),
        }
    }

    /// Adds a frame shown for `delay_ms`.
    pub(crate) fn add(&mut self, img: &Raster, delay_ms: u32) -> Result<(), Error> {
        match self {
            Writer::Gif(enc) => {
                let mut px = rgba(img);
                // GIF has one transparent colour: at least half-transparent pixels become it.
                for p in px.chunks_exact_mut(4) {
                    p[3] = if p[3] < 128 { 0 } else { 255 };
                }
                let (w, h) = (img.width() as u16, img.height() as u16);
                let mut frame = gif::Frame::from_rgba_speed(w, h, &mut px, 10);
                frame.delay = u16::try_from(delay_ms.div_ceil(10)).unwrap_or(u16::MAX);
                // Every frame covers the canvas, transparent pixels included.
                frame.dispose = gif::DisposalMethod::Background;
                enc.write_frame(&frame).map_err(|e| Error::Encode { format: Format::Gif, reason: e.to_string() })
            }
            Writer::Webp(anim) => anim.add(img, delay_ms),
        }
    }

    /// The encoded file.
    pub(crate) fn finish(self) -> Result<Vec<u8>, Error> {
        match self {
            Writer::Gif(enc) => {
                enc.into_inner().map_err(|e| Error::Encode { format: Format::Gif, reason: e.to_string() })
            }
            Writer::Webp(anim) => Ok(anim.finish()),
        }
    }
}

/// An animated WebP being written.
pub(crate) struct WebpAnimation {
    width: u32,
    height: u32,
    plays: u32,
    quality: u8,
    lossless: bool,
    alpha: bool,
    /// The previous frame's RGBA pixels, to find what changed.
    previous: Option<Vec<u8>>,
    /// The `ANMF` chunks so far.
    frames: Vec<u8>,
}

impl WebpAnimation {
    fn add(&mut self, img: &Raster, delay_ms: u32) -> Result<(), Error> {
        let enc_err = |e: String| Error::Encode { format: Format::Webp, reason: e };
        if (img.width(), img.height()) != (self.width, self.height) {
            return Err(Error::Internal(format!(
                "an animation frame of {}x{} on a canvas of {}x{}",
                img.width(),
                img.height(),
                self.width,
                self.height
            )));
        }
        self.alpha |= img.channels().has_alpha();
        let px = rgba(img);
        let (w, h) = (self.width as usize, self.height as usize);
        // The box of pixels that differ from the previous frame; it is drawn without
        // blending (alpha included) over a canvas left as the previous frame made it. Frame
        // offsets are stored halved, so the box starts on even coordinates.
        let (x0, y0, x1, y1) = match &self.previous {
            None => (0, 0, w, h),
            Some(prev) => {
                let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
                for y in 0..h {
                    let row = &px[y * w * 4..(y + 1) * w * 4];
                    let old = &prev[y * w * 4..(y + 1) * w * 4];
                    if row == old {
                        continue;
                    }
                    let first = row.chunks_exact(4).zip(old.chunks_exact(4)).position(|(a, b)| a != b).unwrap_or(0);
                    let last = row.chunks_exact(4).zip(old.chunks_exact(4)).rposition(|(a, b)| a != b).unwrap_or(0);
                    (x0, x1, y0, y1) = (x0.min(first), x1.max(last + 1), y0.min(y), y + 1);
                }
                if x1 == 0 {
                    // Nothing changed: a one-pixel frame keeps the frame (and its delay).
                    (0, 0, 1, 1)
                } else {
                    (x0 & !1, y0 & !1, x1, y1)
                }
            }
        };
        let (fw, fh) = (x1 - x0, y1 - y0);
        let mut sub = Vec::with_capacity(fw * fh * 4);
        for y in y0..y1 {
            sub.extend_from_slice(&px[(y * w + x0) * 4..(y * w + x1) * 4]);
        }
        let still = if self.lossless {
            use image::ImageEncoder;
            let mut out = Vec::new();
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .write_image(&sub, fw as u32, fh as u32, image::ExtendedColorType::Rgba8)
                .map_err(|e| enc_err(e.to_string()))?;
            out
        } else {
            webp::Encoder::from_rgba(&sub, fw as u32, fh as u32)
                .encode_simple(false, f32::from(self.quality))
                .map_err(|e| enc_err(format!("libwebp: {e:?}")))?
                .to_vec()
        };
        let mut payload = Vec::with_capacity(still.len() + 16);
        for v in [x0 / 2, y0 / 2, fw - 1, fh - 1, delay_ms.min(0xFF_FFFF) as usize] {
            payload.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        // Do not blend (bit 1), do not dispose (bit 0 clear).
        payload.push(0b10);
        for (fourcc, data) in riff_chunks(still.get(12..).unwrap_or_default()) {
            if matches!(fourcc, b"ALPH" | b"VP8 " | b"VP8L") {
                crate::meta::riff_chunk(&mut payload, fourcc, data);
            }
        }
        crate::meta::riff_chunk(&mut self.frames, b"ANMF", &payload);
        self.previous = Some(px);
        Ok(())
    }

    fn finish(self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.frames.len() + 40);
        let mut vp8x = [0u8; 10];
        vp8x[0] = 0x02 | if self.alpha { 0x10 } else { 0 };
        vp8x[4..7].copy_from_slice(&(self.width - 1).to_le_bytes()[..3]);
        vp8x[7..10].copy_from_slice(&(self.height - 1).to_le_bytes()[..3]);
        crate::meta::riff_chunk(&mut body, b"VP8X", &vp8x);
        let mut anim = [0u8; 6];
        anim[4..6].copy_from_slice(&(self.plays as u16).to_le_bytes());
        crate::meta::riff_chunk(&mut body, b"ANIM", &anim);
        body.extend_from_slice(&self.frames);
        crate::meta::riff_webp(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gif_walk_counts_frames_and_reads_the_repeat() {
        let mut out = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut out, 2, 2, &[]).unwrap();
            enc.set_repeat(gif::Repeat::Finite(2)).unwrap();
            for _ in 0..3 {
                let mut px = vec![200u8; 16];
                enc.write_frame(&gif::Frame::from_rgba(2, 2, &mut px)).unwrap();
            }
        }
        assert_eq!(scan(&out, Format::Gif), Some(Animation { frames: 3, plays: 3 }));
        // Truncated inside the second frame: one frame seen, a still.
        let cut = out.len() / 2;
        assert!(scan(&out[..cut], Format::Gif).is_none_or(|a| a.frames < 3));
        // Garbage after the header does not loop or panic.
        let mut junk = out[..13].to_vec();
        junk.extend_from_slice(&[0x21, 0xFF, 0xFF, 0xFF]);
        assert_eq!(scan(&junk, Format::Gif), None);
    }
}
