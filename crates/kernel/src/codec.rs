//! Decoding with limits and encoding.
//!
//! Decoding always starts with a header-only [`probe`]: the limits are checked against the
//! declared size before a single pixel buffer is allocated. The probe is the decoder's own
//! header parse (libjpeg-turbo's for JPEG, the `image` decoders' for the rest), never a
//! walk of our own that could read a different frame header than the decoder does. Two
//! guards follow it: the decode re-reads the header and refuses one that disagrees with the
//! probe, and it sizes its own allocation from the probed (limit-checked) dimensions. JPEG goes through libjpeg-turbo
//! (feature `turbojpeg`, on by default) which can decode at M/8 scale in the DCT domain
//! ("shrink-on-load"); everything else, and JPEG without the feature, through the `image`
//! crate's pure-Rust decoders.

use std::io::Cursor;

use crate::meta::{JpegMeta, Orientation, read_jpeg_meta};
use crate::op::OutputSpec;
use crate::{Channels, Error, Format, Limits, Raster};

/// What the header says, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Sniffed format.
    pub format: Format,
    /// Stored width (before orientation).
    pub width: u32,
    /// Stored height (before orientation).
    pub height: u32,
    /// Channel layout of the decoded raster (8 bits each).
    pub channels: Channels,
    /// Bytes the decoder's own buffer takes at full scale (16-bit and CMYK inputs take more
    /// than the 8-bit raster they become).
    pub native_bytes: u64,
    /// Whether the decoder can shrink on load (libjpeg-turbo's DCT scaling: lossy YCbCr or
    /// gray JPEG); everything else decodes at full size.
    pub shrinkable: bool,
    /// EXIF orientation.
    pub orientation: Orientation,
    /// Embedded ICC profile.
    pub icc: Option<Vec<u8>>,
    /// The file stores CMYK inks (a CMYK or YCCK JPEG): the decoder turns them into sRGB
    /// itself, through `icc` when it is a CMYK profile or a built-in one, so no later step
    /// reads `icc` as the colour space of the decoded pixels.
    pub inks: bool,
    /// Frame and loop counts of an animated GIF or WebP (`None` for a still image).
    pub animation: Option<crate::anim::Animation>,
}

impl Probe {
    /// Dimensions after the orientation is applied.
    pub fn oriented_dims(&self) -> (u32, u32) {
        if self.orientation.swaps_dimensions() { (self.height, self.width) } else { (self.width, self.height) }
    }
}

pub(crate) fn decode_err(format: Format, e: impl std::fmt::Display) -> Error {
    Error::Decode { format, reason: e.to_string() }
}

/// Reusable codec state: libjpeg-turbo handles are created once per worker thread.
#[derive(Default)]
pub struct Codecs {
    #[cfg(feature = "turbojpeg")]
    dec: Option<turbojpeg::Decompressor>,
    #[cfg(feature = "turbojpeg")]
    enc: Option<turbojpeg::Compressor>,
}

impl std::fmt::Debug for Codecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codecs").finish_non_exhaustive()
    }
}

/// Checks the size and sniffs the format.
pub(crate) fn sniff(input: &[u8], limits: &Limits) -> Result<Format, Error> {
    if input.is_empty() {
        return Err(Error::Empty);
    }
    if input.len() as u64 > limits.max_input_bytes {
        return Err(Error::InputTooLarge { size: input.len() as u64, max: limits.max_input_bytes });
    }
    match Format::sniff(input) {
        Some(f) if !Format::READ.contains(&f) => Err(Error::Decode {
            format: f,
            reason: "this build reads no AVIF or HEIC (cargo feature `heif`: on in the `pixq` CLI, off in the \
                     Lambda and, by default, the EC2 worker): convert it to JPEG, PNG or WebP first"
                .into(),
        }),
        Some(f) => Ok(f),
        None => Err(Error::UnknownFormat),
    }
}

/// What a header read may allocate: the header itself and ancillary data such as an ICC
/// profile. A compressed profile that inflates beyond it (a zlib bomb in a PNG's iCCP) is
/// dropped by the decoder, not allocated.
pub(crate) const HEADER_ALLOC: u64 = 8 << 20;

/// What a decode may allocate beyond twice the decoder's own buffer (tables, rows, the
/// profile read again).
pub(crate) const DECODE_SLACK: u64 = 16 << 20;

/// The `image` crate's limits: strict sides (enforced by the decoders themselves) and an
/// allocation cap of `alloc` bytes, sized from the checked header for a decode, so no
/// decoder (or the ancillary data it inflates) allocates much more than the image it
/// declares.
fn image_limits(limits: &Limits, alloc: u64) -> image::Limits {
    let mut il = image::Limits::default();
    il.max_image_width = Some(limits.max_dimension);
    il.max_image_height = Some(limits.max_dimension);
    il.max_alloc = Some(alloc);
    il
}

/// The allocation cap of a decode of what `probe` describes.
fn decode_alloc(probe: &Probe) -> u64 {
    let canvas = u64::from(probe.width) * u64::from(probe.height) * 4;
    probe.native_bytes.max(canvas).saturating_mul(2).saturating_add(DECODE_SLACK)
}

fn image_reader<'a>(
    input: &'a [u8],
    format: Format,
    limits: &Limits,
    alloc: u64,
) -> Result<image::ImageReader<Cursor<&'a [u8]>>, Error> {
    let f = format.to_image_format().ok_or_else(|| decode_err(format, "not a format the image crate decodes"))?;
    let mut reader = image::ImageReader::with_format(Cursor::new(input), f);
    reader.limits(image_limits(limits, alloc));
    Ok(reader)
}

fn channels_of(ct: image::ColorType) -> Channels {
    match (ct.has_color(), ct.has_alpha()) {
        (false, false) => Channels::Gray,
        (false, true) => Channels::GrayAlpha,
        (true, false) => Channels::Rgb,
        (true, true) => Channels::Rgba,
    }
}

/// The guards of every `image` decode: an allocation cap sized from the checked header, and
/// a header that matches the probe.
fn guarded<D: image::ImageDecoder>(mut d: D, probe: &Probe, limits: &Limits) -> Result<D, Error> {
    d.set_limits(image_limits(limits, decode_alloc(probe))).map_err(|e| limit_or_decode(probe.format, limits, e))?;
    let (w, h) = d.dimensions();
    same_header(probe.format, probe, w, h)?;
    Ok(d)
}

/// Refuses a decoder whose header disagrees with the probe (two parsers, one file, two
/// answers: the file is crafted or broken, and the larger answer must not be allocated).
fn same_header(format: Format, probe: &Probe, width: u32, height: u32) -> Result<(), Error> {
    if (width, height) != (probe.width, probe.height) {
        return Err(decode_err(
            format,
            format!(
                "inconsistent headers: the decoder reads {width}x{height}, the probe read {}x{}",
                probe.width, probe.height
            ),
        ));
    }
    Ok(())
}

/// Reads the header: format, size, orientation, ICC. Refuses inputs over the limits.
pub fn probe(input: &[u8], limits: &Limits) -> Result<Probe, Error> {
    use image::ImageDecoder;
    let format = sniff(input, limits)?;
    if format == Format::Jpeg {
        check_jpeg_complete(input)?;
        // Decoders, the header reader included, collect every part of an ICC profile (the
        // pure-Rust one as a small buffer each): a file of tiny parts by the million is
        // refused before any of them reads it.
        let JpegMeta { orientation, icc, icc_parts } = read_jpeg_meta(input);
        if icc_parts > 255 {
            return Err(decode_err(format, format!("its ICC profile comes in {icc_parts} parts (at most 255)")));
        }
        let (width, height, channels, native, shrinkable) = jpeg_header(input)?;
        if width == 0 || height == 0 {
            return Err(decode_err(format, "frame header declares a zero size"));
        }
        limits.check_dimensions(width, height)?;
        let native_bytes = u64::from(width) * u64::from(height) * native;
        // Four components in the frame header: CMYK or YCCK.
        let inks = crate::meta::jpeg_segments(input)
            .find(|(m, _)| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))
            .is_some_and(|(_, body)| body.get(5) == Some(&4));
        return Ok(Probe {
            format,
            width,
            height,
            channels,
            native_bytes,
            shrinkable,
            orientation,
            icc,
            inks,
            animation: None,
        });
    }
    #[cfg(feature = "heif")]
    if matches!(format, Format::Avif | Format::Heic) {
        return crate::heif::probe(input, format, limits);
    }
    // What a decoder would trust in the header is checked before it reads it; a TIFF's
    // profile is read from the file's own bytes (`tiff_header`).
    let tiff_icc = match format {
        Format::Tiff => crate::tiff_header::check(input, limits)?,
        Format::Png => png_icc_within(input).map(|()| None)?,
        Format::Gif => gif_applications_within(input).map(|()| None)?,
        _ => None,
    };
    // The probe reads the header without the decoders' strict side limits, so an oversized
    // image gets our typed limit error with its declared size.
    let mut il = image_limits(limits, HEADER_ALLOC);
    (il.max_image_width, il.max_image_height) = (None, None);
    let mut reader = image_reader(input, format, limits, HEADER_ALLOC)?;
    reader.limits(il);
    let mut dec = reader.into_decoder().map_err(|e| limit_or_decode(format, limits, e))?;
    let (width, height) = dec.dimensions();
    if width == 0 || height == 0 {
        return Err(decode_err(format, "header declares a zero size"));
    }
    limits.check_dimensions(width, height)?;
    let channels = channels_of(dec.color_type());
    let native_bytes = dec.total_bytes();
    let (orientation, icc) = if format == Format::Webp {
        webp_header(input, width, height)?
    } else {
        let orientation = dec.orientation().map(|o| Orientation::from_exif(u16::from(o.to_exif()))).unwrap_or_default();
        let icc = if format == Format::Tiff { tiff_icc } else { dec.icc_profile().ok().flatten() };
        (orientation, icc)
    };
    let icc = icc.filter(|p| !p.is_empty() && p.len() <= crate::meta::MAX_ICC);
    let animation = crate::anim::scan(input, format);
    Ok(Probe {
        format,
        width,
        height,
        channels,
        native_bytes,
        shrinkable: false,
        orientation,
        icc,
        inks: false,
        animation,
    })
}

/// Refuses a PNG whose ICC profile (iCCP) inflates past the ICC limit. The PNG decoder
/// inflates it once more when it decodes the pixels, under that decode's allocation cap
/// (sized from the image, far above the plan's allowance for a profile on a large canvas),
/// and keeps it for the whole decode: 1 MB of file can hold 800 MB of profile.
fn png_icc_within(input: &[u8]) -> Result<(), Error> {
    let mut i = 8usize;
    while let Some(head) = input.get(i..i.saturating_add(8)) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        let Some(data) = input.get(i + 8..(i + 8).saturating_add(len)) else { break };
        if kind == b"iCCP" {
            // A name, its NUL, the compression method, then the zlib stream.
            let Some(z) = data.iter().position(|&b| b == 0).and_then(|nul| data.get(nul + 2..)) else { break };
            let mut inflate = flate2::Decompress::new(true);
            let mut out = vec![0u8; 64 << 10];
            loop {
                let (read, wrote) = (inflate.total_in(), inflate.total_out());
                let rest = z.get(read as usize..).unwrap_or_default();
                let done = inflate.decompress(rest, &mut out, flate2::FlushDecompress::None);
                if inflate.total_out() > crate::meta::MAX_ICC as u64 {
                    return Err(decode_err(
                        Format::Png,
                        format!("its ICC profile inflates past {} bytes", crate::meta::MAX_ICC),
                    ));
                }
                let stuck = inflate.total_in() == read && inflate.total_out() == wrote;
                if !matches!(done, Ok(flate2::Status::Ok | flate2::Status::BufError)) || stuck {
                    break;
                }
            }
        }
        i = i.saturating_add(12).saturating_add(len);
    }
    Ok(())
}

/// Refuses a GIF whose application extensions (an ICC profile, XMP) hold over
/// [`HEADER_ALLOC`] bytes: the `gif` crate keeps each whole, up to 50 MB, through the decode.
fn gif_applications_within(input: &[u8]) -> Result<(), Error> {
    match crate::anim::gif_application_bytes(input) {
        Some(app) if app > HEADER_ALLOC => {
            Err(decode_err(Format::Gif, format!("its application extensions hold {app} bytes (an ICC profile or XMP)")))
        }
        _ => Ok(()),
    }
}

/// A WebP's EXIF orientation and ICC profile, read from its own chunks (slices of the file):
/// the WebP decoder would allocate a metadata chunk at its declared size before reading it,
/// and a chunk header can declare 4 GiB in a file of 50 bytes. Refuses a WebP whose lossy
/// (VP8) pictures are not the size of their place (the still image's must be the canvas,
/// each animation frame's its frame rectangle): the decoder sizes its planes from the VP8
/// frame header and compares with the canvas only after decoding, so a 1x1 canvas could
/// hold a picture of 16383x16383 (400 MB of planes).
fn webp_header(input: &[u8], width: u32, height: u32) -> Result<(Orientation, Option<Vec<u8>>), Error> {
    // A VP8 key frame: a 3-byte tag, the start code 9D 01 2A, then 14-bit width and height.
    let vp8_size = |p: &[u8]| -> Option<(u32, u32)> {
        let b = p.get(6..10)?;
        Some((
            u32::from(u16::from_le_bytes([b[0], b[1]]) & 0x3FFF),
            u32::from(u16::from_le_bytes([b[2], b[3]]) & 0x3FFF),
        ))
    };
    let u24 = |b: &[u8]| u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
    let misfit = |got: (u32, u32), want: (u32, u32)| {
        Err(decode_err(
            Format::Webp,
            format!("a VP8 picture of {}x{} in a place of {}x{}", got.0, got.1, want.0, want.1),
        ))
    };
    let (mut orientation, mut icc) = (None, None);
    for (fourcc, payload) in crate::anim::riff_chunks(input.get(12..).unwrap_or_default()) {
        match fourcc {
            b"VP8 " => {
                if let Some(got) = vp8_size(payload).filter(|&g| g != (width, height)) {
                    return misfit(got, (width, height));
                }
            }
            b"ANMF" if payload.len() >= 16 => {
                let frame = (u24(&payload[6..9]) + 1, u24(&payload[9..12]) + 1);
                for (kind, sub) in crate::anim::riff_chunks(&payload[16..]) {
                    if let Some(got) = vp8_size(sub).filter(|&g| kind == b"VP8 " && g != frame) {
                        return misfit(got, frame);
                    }
                }
            }
            b"EXIF" if orientation.is_none() => {
                let tiff = payload.strip_prefix(b"Exif\0\0".as_slice()).unwrap_or(payload);
                orientation = Some(crate::meta::exif_orientation(tiff).unwrap_or_default());
            }
            b"ICCP" if icc.is_none() => icc = Some((payload.len() <= crate::meta::MAX_ICC).then(|| payload.to_vec())),
            _ => {}
        }
    }
    Ok((orientation.unwrap_or_default(), icc.flatten()))
}

/// A decoder's limit refusal as our typed limit error (the sides are checked by the decoder
/// itself before we see them), anything else as a decode error.
fn limit_or_decode(format: Format, limits: &Limits, e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) if matches!(l.kind(), image::error::LimitErrorKind::DimensionError) => {
            decode_err(format, format!("a side is over the limit of {} pixels (decoder's check)", limits.max_dimension))
        }
        e => decode_err(format, e),
    }
}

type JpegHeader = (u32, u32, Channels, u64, bool);

/// The JPEG frame header as libjpeg-turbo reads it: (width, height, decoded channels,
/// native bytes per pixel, shrinkable). Header only: no pixel buffer.
#[cfg(feature = "turbojpeg")]
fn jpeg_header(input: &[u8]) -> Result<JpegHeader, Error> {
    let h = turbojpeg::read_header(input).map_err(|e| decode_err(Format::Jpeg, e))?;
    let (channels, native, shrinkable) = match h.colorspace {
        turbojpeg::Colorspace::Gray => (Channels::Gray, 1, !h.is_lossless),
        // CMYK/YCCK decode to their ink values (4 bytes a pixel), then through a profile to RGB.
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK => (Channels::Rgb, 4, false),
        _ => (Channels::Rgb, 3, !h.is_lossless),
    };
    let dim = |v: usize| u32::try_from(v).map_err(|_| decode_err(Format::Jpeg, "frame header size out of range"));
    Ok((dim(h.width)?, dim(h.height)?, channels, native, shrinkable))
}

/// The JPEG frame header as the pure-Rust decoder reads it (no shrink-on-load).
#[cfg(not(feature = "turbojpeg"))]
fn jpeg_header(input: &[u8]) -> Result<JpegHeader, Error> {
    use image::ImageDecoder;
    let dec = image::codecs::jpeg::JpegDecoder::new(Cursor::new(input)).map_err(|e| decode_err(Format::Jpeg, e))?;
    let (w, h) = dec.dimensions();
    let channels = channels_of(dec.color_type());
    Ok((w, h, channels, 4, false))
}

/// A truncated JPEG has no end-of-image marker after its first scan. (Entropy-coded data
/// stuffs every 0xFF with 0x00, so FF D9 after the scan starts can only be a real marker.)
/// Decoders differ in how they treat truncation (libjpeg-turbo warns, others fill grey);
/// checking here makes it an error on every path.
fn check_jpeg_complete(input: &[u8]) -> Result<(), Error> {
    let sos = input.windows(2).position(|w| w == [0xFF, 0xDA]);
    let eoi = input.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (sos, eoi) {
        (Some(s), Some(e)) if e > s => Ok(()),
        _ => Err(decode_err(Format::Jpeg, "truncated: no end-of-image marker after the scan data")),
    }
}

/// The smallest M/8 scale whose output is at least `need` (stored orientation).
pub fn jpeg_scale(width: u32, height: u32, need: Option<(u64, u64)>) -> u32 {
    let Some((nw, nh)) = need else { return 8 };
    (1..=8u32)
        .find(|&m| u64::from((width * m).div_ceil(8)) >= nw && u64::from((height * m).div_ceil(8)) >= nh)
        .unwrap_or(8)
}

impl Codecs {
    /// Decodes to a raster. `need` (stored orientation) lets JPEG shrink on load to the
    /// smallest M/8 scale that is still at least that big.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        probe: &Probe,
        limits: &Limits,
        need: Option<(u64, u64)>,
        pool: &mut crate::raster::Pool,
        stop: &crate::Stop,
    ) -> Result<Raster, Error> {
        #[cfg(feature = "turbojpeg")]
        if probe.format == Format::Jpeg {
            return self.decode_turbo(input, probe, limits, need, pool);
        }
        let _ = (need, pool, stop);
        #[cfg(feature = "heif")]
        if matches!(probe.format, Format::Avif | Format::Heic) {
            return crate::heif::decode(input, probe, stop);
        }
        use image::ImageDecoder;
        let dec = image_reader(input, probe.format, limits, decode_alloc(probe))?
            .into_decoder()
            .map_err(|e| limit_or_decode(probe.format, limits, e))?;
        let dec = guarded(dec, probe, limits)?;
        let (w, h) = dec.dimensions();
        if dec.total_bytes() > probe.native_bytes.max(u64::from(w) * u64::from(h) * 4) {
            return Err(decode_err(probe.format, "the decoder asks for more memory than the header declares"));
        }
        let img = image::DynamicImage::from_decoder(dec).map_err(|e| decode_err(probe.format, e))?;
        Ok(from_dynamic(img))
    }

    /// The frames of an animated GIF or WebP, each composed on the full canvas (RGBA), with
    /// the decoder's guards: an allocation cap sized from the checked header, and a header
    /// that matches the probe.
    pub fn frames<'a>(&mut self, input: &'a [u8], probe: &Probe, limits: &Limits) -> Result<image::Frames<'a>, Error> {
        use image::AnimationDecoder;
        let lim_err = |e: image::ImageError| limit_or_decode(probe.format, limits, e);
        Ok(match probe.format {
            Format::Gif => {
                let d = image::codecs::gif::GifDecoder::new(Cursor::new(input)).map_err(lim_err)?;
                guarded(d, probe, limits)?.into_frames()
            }
            Format::Webp => {
                let d = image::codecs::webp::WebPDecoder::new(Cursor::new(input)).map_err(lim_err)?;
                guarded(d, probe, limits)?.into_frames()
            }
            other => {
                return Err(Error::Op { op: "frame".into(), reason: format!("{other} images have a single frame") });
            }
        })
    }

    /// Decodes frame `n` (0-based) of an animated GIF or WebP. Frames before it are decoded
    /// and dropped one at a time (each is at most the canvas the header declared, which the
    /// limits already allowed), so memory stays at one frame.
    pub fn decode_frame(
        &mut self,
        input: &[u8],
        probe: &Probe,
        limits: &Limits,
        n: u32,
        stop: &crate::Stop,
    ) -> Result<Raster, Error> {
        let op = format!("frame:{n}");
        let frames = self.frames(input, probe, limits).map_err(|e| match e {
            Error::Op { reason, .. } => Error::Op { op: op.clone(), reason },
            e => e,
        })?;
        let mut seen = 0;
        for frame in frames {
            stop.check()?;
            let frame = frame.map_err(|e| decode_err(probe.format, e))?;
            if seen == n {
                return Ok(frame_raster(frame));
            }
            seen += 1;
        }
        Err(Error::too_few_frames(op, seen))
    }

    /// A CMYK or YCCK JPEG: its ink values (libjpeg-turbo turns YCCK into CMYK), through
    /// its CMYK profile, or pixq's built-in one, to sRGB.
    #[cfg(feature = "turbojpeg")]
    fn decode_cmyk(
        dec: &mut turbojpeg::Decompressor,
        input: &[u8],
        probe: &Probe,
        limits: &Limits,
    ) -> Result<Raster, Error> {
        let err = |e: turbojpeg::Error| decode_err(Format::Jpeg, e);
        let (w, h) = (probe.width as usize, probe.height as usize);
        if (w as u64) * (h as u64) > limits.max_pixels {
            return Err(decode_err(Format::Jpeg, "over the pixel limit"));
        }
        dec.set_scaling_factor(turbojpeg::ScalingFactor::ONE).map_err(err)?;
        let mut cmyk = vec![0u8; w * h * 4];
        let image = turbojpeg::Image {
            pixels: &mut cmyk[..],
            width: w,
            pitch: w * 4,
            height: h,
            format: turbojpeg::PixelFormat::CMYK,
        };
        dec.decompress(input, image).map_err(err)?;
        // Inks stored inverted, as Adobe's software writes them (and marks with an APP14
        // "Adobe" segment): nearly every CMYK JPEG there is. Read so whether or not the marker
        // is there, as libvips, Pillow and browsers do.
        crate::cms::cmyk_to_srgb(cmyk, probe.width, probe.height, probe.icc.as_deref(), true, &crate::Stop::new())
    }

    #[cfg(feature = "turbojpeg")]
    fn decode_turbo(
        &mut self,
        input: &[u8],
        probe: &Probe,
        limits: &Limits,
        need: Option<(u64, u64)>,
        pool: &mut crate::raster::Pool,
    ) -> Result<Raster, Error> {
        let err = |e: turbojpeg::Error| decode_err(Format::Jpeg, e);
        if self.dec.is_none() {
            self.dec = Some(turbojpeg::Decompressor::new().map_err(err)?);
        }
        let dec = self.dec.as_mut().expect("just set");
        let header = dec.read_header(input).map_err(err)?;
        let dims = (u32::try_from(header.width).unwrap_or(u32::MAX), u32::try_from(header.height).unwrap_or(u32::MAX));
        same_header(Format::Jpeg, probe, dims.0, dims.1)?;
        let (pf, channels) = match header.colorspace {
            turbojpeg::Colorspace::Gray => (turbojpeg::PixelFormat::GRAY, Channels::Gray),
            turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK => {
                return Self::decode_cmyk(dec, input, probe, limits);
            }
            _ => (turbojpeg::PixelFormat::RGB, Channels::Rgb),
        };
        let m = if header.is_lossless { 8 } else { jpeg_scale(probe.width, probe.height, need) };
        let factor = turbojpeg::ScalingFactor::new(m as usize, 8);
        dec.set_scaling_factor(factor).map_err(err)?;
        let scaled = header.scaled(factor);
        let (w, h) = (scaled.width, scaled.height);
        // The buffer is sized from the checked header, and capped again here on its own.
        let bytes = (w as u64).saturating_mul(h as u64).saturating_mul(channels.count() as u64);
        if w as u64 > u64::from(probe.width) || h as u64 > u64::from(probe.height) || bytes > limits.max_pixels * 3 {
            return Err(decode_err(Format::Jpeg, "decoded size exceeds the checked header"));
        }
        // A kept buffer holds an earlier image's bytes: the decoder writes every scanline
        // before it reports success, and a failure drops the buffer with the error.
        let mut pixels = pool.take(w * h * channels.count());
        let image =
            turbojpeg::Image { pixels: &mut pixels[..], width: w, pitch: w * channels.count(), height: h, format: pf };
        dec.decompress(input, image).map_err(err)?;
        Raster::from_vec(w as u32, h as u32, channels, pixels)
    }

    /// Encodes a raster. JPEG drops alpha by compositing over white; libjpeg-turbo writes
    /// into a buffer kept in `pool` when one is large enough.
    pub(crate) fn encode(
        &mut self,
        img: &Raster,
        format: Format,
        spec: &OutputSpec,
        icc: Option<&[u8]>,
        stop: &crate::Stop,
        pool: &mut crate::raster::Pool,
    ) -> Result<Vec<u8>, Error> {
        let enc_err = |e: &dyn std::fmt::Display| Error::Encode { format, reason: e.to_string() };
        match format {
            Format::Jpeg => {
                let flat;
                let img = match img.channels() {
                    Channels::GrayAlpha => {
                        flat = crate::ops::color::convert(img, Channels::Gray);
                        &flat
                    }
                    Channels::Rgba => {
                        flat = crate::ops::color::convert(img, Channels::Rgb);
                        &flat
                    }
                    _ => img,
                };
                let q = spec.quality.unwrap_or(OutputSpec::DEFAULT_QUALITY);
                let jpeg = self.encode_jpeg(img, q, spec.progressive, pool)?;
                Ok(match icc {
                    Some(p) => crate::meta::jpeg_with_icc(jpeg, p),
                    None => jpeg,
                })
            }
            Format::Png => {
                crate::png::encode(img, spec.compression.unwrap_or(OutputSpec::DEFAULT_COMPRESSION), icc, stop)
            }
            Format::Webp => {
                let (data, alpha) = match img.channels() {
                    // WebP has no gray mode: widen to RGB(A).
                    Channels::Gray => (crate::ops::color::convert(img, Channels::Rgb).into_vec(), false),
                    Channels::GrayAlpha => (crate::ops::color::convert(img, Channels::Rgba).into_vec(), true),
                    Channels::Rgb => (img.data().to_vec(), false),
                    Channels::Rgba => (img.data().to_vec(), true),
                };
                if spec.lossless {
                    use image::ImageEncoder;
                    let mut out = Vec::new();
                    let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
                    if let Some(p) = icc {
                        // Best effort: a profile the encoder refuses is dropped, not fatal.
                        let _ = enc.set_icc_profile(p.to_vec());
                    }
                    let ct = if alpha { image::ExtendedColorType::Rgba8 } else { image::ExtendedColorType::Rgb8 };
                    enc.write_image(&data, img.width(), img.height(), ct).map_err(|e| enc_err(&e))?;
                    return Ok(out);
                }
                let q = f32::from(spec.quality.unwrap_or(OutputSpec::DEFAULT_WEBP_QUALITY));
                let enc = if alpha {
                    webp::Encoder::from_rgba(&data, img.width(), img.height())
                } else {
                    webp::Encoder::from_rgb(&data, img.width(), img.height())
                };
                let out = enc.encode_simple(false, q).map_err(|e| enc_err(&format!("libwebp: {e:?}")))?.to_vec();
                Ok(match icc {
                    Some(p) => crate::meta::webp_with_icc(out, p, img.width(), img.height(), alpha),
                    None => out,
                })
            }
            Format::Avif => encode_avif(img, spec, stop),
            Format::Gif | Format::Tiff | Format::Bmp => {
                let dynimg = to_dynamic(img);
                let dynimg =
                    if format == Format::Gif { image::DynamicImage::ImageRgba8(dynimg.to_rgba8()) } else { dynimg };
                let mut out = Cursor::new(Vec::new());
                let f = format.to_image_format().ok_or_else(|| enc_err(&"no encoder"))?;
                dynimg.write_to(&mut out, f).map_err(|e| enc_err(&e))?;
                Ok(out.into_inner())
            }
            Format::Heic => Err(enc_err(&"HEIC is read, not written: write jpeg, webp or avif")),
        }
    }

    #[cfg(feature = "turbojpeg")]
    fn encode_jpeg(
        &mut self,
        img: &Raster,
        quality: u8,
        progressive: bool,
        pool: &mut crate::raster::Pool,
    ) -> Result<Vec<u8>, Error> {
        let err = |e: turbojpeg::Error| Error::Encode { format: Format::Jpeg, reason: e.to_string() };
        if self.enc.is_none() {
            self.enc = Some(turbojpeg::Compressor::new().map_err(err)?);
        }
        let enc = self.enc.as_mut().expect("just set");
        let gray = img.channels() == Channels::Gray;
        enc.set_quality(i32::from(quality)).map_err(err)?;
        enc.set_subsamp(if gray { turbojpeg::Subsamp::Gray } else { turbojpeg::Subsamp::Sub2x2 }).map_err(err)?;
        enc.set_progressive(progressive).map_err(err)?;
        let image = turbojpeg::Image {
            pixels: img.data(),
            width: img.width() as usize,
            pitch: img.stride(),
            height: img.height() as usize,
            format: if gray { turbojpeg::PixelFormat::GRAY } else { turbojpeg::PixelFormat::RGB },
        };
        // libjpeg-turbo's worst-case output buffer, from a kept one when there is one (the
        // plan counts on it: `plan::JPEG_ENCODE_BORROWS`); the file is copied out of it.
        let need = enc.buf_len(image.width, image.height).map_err(err)?;
        match pool.take_kept(need) {
            Some(mut buf) => {
                let n = enc.compress_to_slice(image, &mut buf[..]);
                let out = n.map(|n| buf[..n].to_vec());
                pool.give(buf);
                out.map_err(err)
            }
            None => enc.compress_to_vec(image).map_err(err),
        }
    }

    #[cfg(not(feature = "turbojpeg"))]
    fn encode_jpeg(
        &mut self,
        img: &Raster,
        quality: u8,
        progressive: bool,
        _pool: &mut crate::raster::Pool,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
        enc.set_progressive(progressive);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        let ct =
            if img.channels() == Channels::Gray { jpeg_encoder::ColorType::Luma } else { jpeg_encoder::ColorType::Rgb };
        let too_big = |_| Error::Encode { format: Format::Jpeg, reason: "larger than 65535 pixels".into() };
        let w = u16::try_from(img.width()).map_err(too_big)?;
        let h = u16::try_from(img.height()).map_err(too_big)?;
        enc.encode(img.data(), w, h, ct).map_err(|e| Error::Encode { format: Format::Jpeg, reason: e.to_string() })?;
        Ok(out)
    }
}

/// A decoded animation frame as a raster (RGBA).
pub(crate) fn frame_raster(frame: image::Frame) -> Raster {
    from_dynamic(image::DynamicImage::ImageRgba8(frame.into_buffer()))
}

/// A decoded frame's delay in milliseconds (rounded down).
pub(crate) fn frame_delay_ms(frame: &image::Frame) -> u32 {
    let (n, d) = frame.delay().numer_denom_ms();
    n.checked_div(d).unwrap_or(0)
}

fn from_dynamic(img: image::DynamicImage) -> Raster {
    use image::DynamicImage as D;
    let (w, h) = (img.width(), img.height());
    let (channels, data) = match img {
        D::ImageLuma8(b) => (Channels::Gray, b.into_raw()),
        D::ImageLumaA8(b) => (Channels::GrayAlpha, b.into_raw()),
        D::ImageRgb8(b) => (Channels::Rgb, b.into_raw()),
        D::ImageRgba8(b) => (Channels::Rgba, b.into_raw()),
        other => {
            let ct = other.color();
            match (ct.has_color(), ct.has_alpha()) {
                (false, false) => (Channels::Gray, other.to_luma8().into_raw()),
                (false, true) => (Channels::GrayAlpha, other.to_luma_alpha8().into_raw()),
                (true, false) => (Channels::Rgb, other.to_rgb8().into_raw()),
                (true, true) => (Channels::Rgba, other.to_rgba8().into_raw()),
            }
        }
    };
    Raster::from_vec(w, h, channels, data).expect("decoder output matches its dimensions")
}

fn to_dynamic(img: &Raster) -> image::DynamicImage {
    let (w, h, d) = (img.width(), img.height(), img.data().to_vec());
    let bad = "raster length matches its dimensions";
    match img.channels() {
        Channels::Gray => image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, d).expect(bad)),
        Channels::GrayAlpha => image::DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_raw(w, h, d).expect(bad)),
        Channels::Rgb => image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, d).expect(bad)),
        Channels::Rgba => image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, d).expect(bad)),
    }
}

/// AVIF through ravif (rav1e): 8-bit 4:2:0 YCbCr, one thread (a worker runs one encode per
/// lane), `quality` (default 60) and `speed` 1-10 (default 6). Grey images are widened to
/// RGB (AVIF's monochrome profile is not written by ravif). No ICC profile: the parser
/// refuses `keep-icc` with AVIF, and otherwise the pixels are sRGB already.
#[cfg(feature = "avif")]
fn encode_avif(img: &Raster, spec: &OutputSpec, stop: &crate::Stop) -> Result<Vec<u8>, Error> {
    use ravif::{BitDepth, Encoder, Img, RGB8, RGBA8};
    stop.check()?;
    let err = |e: ravif::Error| Error::Encode { format: Format::Avif, reason: e.to_string() };
    let q = f32::from(spec.quality.unwrap_or(OutputSpec::DEFAULT_AVIF_QUALITY));
    let enc = Encoder::new()
        .with_quality(q)
        .with_alpha_quality(q)
        .with_speed(spec.speed.unwrap_or(OutputSpec::DEFAULT_AVIF_SPEED))
        .with_bit_depth(BitDepth::Eight)
        .with_num_threads(Some(1));
    let (w, h) = (img.width() as usize, img.height() as usize);
    let out = match img.channels() {
        Channels::Gray | Channels::Rgb => {
            let rgb = if img.channels() == Channels::Gray {
                crate::ops::color::convert(img, Channels::Rgb)
            } else {
                img.clone()
            };
            let px: Vec<RGB8> = rgb.data().chunks_exact(3).map(|p| RGB8::new(p[0], p[1], p[2])).collect();
            enc.encode_rgb(Img::new(&px[..], w, h)).map_err(err)?
        }
        Channels::GrayAlpha | Channels::Rgba => {
            let rgba = if img.channels() == Channels::GrayAlpha {
                crate::ops::color::convert(img, Channels::Rgba)
            } else {
                img.clone()
            };
            let px: Vec<RGBA8> = rgba.data().chunks_exact(4).map(|p| RGBA8::new(p[0], p[1], p[2], p[3])).collect();
            enc.encode_rgba(Img::new(&px[..], w, h)).map_err(err)?
        }
    };
    stop.check()?;
    Ok(out.avif_file)
}

#[cfg(not(feature = "avif"))]
fn encode_avif(_: &Raster, _: &OutputSpec, _: &crate::Stop) -> Result<Vec<u8>, Error> {
    Err(Error::Encode { format: Format::Avif, reason: "this build has no AVIF encoder (cargo feature `avif`)".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_the_smallest_that_still_covers_the_need() {
        assert_eq!(jpeg_scale(4000, 3000, None), 8);
        assert_eq!(jpeg_scale(4000, 3000, Some((2048, 1536))), 5);
        assert_eq!(jpeg_scale(4000, 3000, Some((1024, 768))), 3);
        assert_eq!(jpeg_scale(4000, 3000, Some((100, 75))), 1);
        assert_eq!(jpeg_scale(4000, 3000, Some((5000, 10))), 8);
    }
}
