//! HEIC and AVIF input through libheif (cargo feature `heif`): libheif 1.23 built from the
//! sources libheif-sys embeds, with the system's libde265 (HEVC) and dav1d (AV1) decoders.
//! Only the primary image is read (an image sequence gives its first picture), with
//! libheif's own transformations (rotation, mirror, crop) applied, so the EXIF orientation
//! is not applied again.
//!
//! The boxes are walked first (`heif_boxes`): what libheif would decode for the primary
//! image, counted along every path, its canvases and tiles, its item data and tracks. The
//! header is then read by libheif itself (the same parser that decodes), under libheif's
//! default security limits, and our limits are checked on the dimensions it reports before
//! any pixel is decoded. The decode re-reads the file and refuses a primary image of another
//! size than the probe saw.
//!
//! Every libheif call is one of two reads, [`read_header`] and [`read_pixels`], each from
//! the file's bytes to plain values or an error message. With a runner installed
//! (`crate::isolation`) both run in a child process and travel as requests and replies;
//! the checks on what they give stay here.

use libheif_rs::{ColorSpace, HeifContext, ImageHandle, LibHeif, RgbChroma};

use crate::codec::{Probe, decode_err};
use crate::isolation::{self, Failure, OK};
use crate::{Channels, Error, Format, Limits, Orientation, Raster, Stop};

/// Request: read the primary image's header.
const HEADER: u8 = 1;
/// Request: decode the primary image (then: alpha flag, expected width and height).
const PIXELS: u8 = 2;
/// Bytes after a header reply's profile: width, height, alpha, deep, colour kind,
/// primaries, transfer.
const HEADER_TAIL: usize = 4 + 4 + 1 + 1 + 1 + 1 + 1;
/// How long a child may take to read a header: libheif parses one in milliseconds, and a
/// probe has no caller's stop, so a child that hangs on a crafted file is ended by this.
const HEADER_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes after a pixel reply's picture: width, height, channels.
const PIXELS_TAIL: usize = 4 + 4 + 1;

/// A context on `input` under libheif's own default security limits (image size, memory
/// blocks, tiles, items). They are not replaced by ours: libheif-rs' limits struct is the
/// 1.19 layout while the embedded libheif is 1.23 and reads fields past its end (a clean
/// run saw a memory limit of 1 byte). Ours are checked on the header before decoding, and
/// the input is already within `max_input_bytes`.
fn context(input: &[u8]) -> Result<HeifContext<'_>, String> {
    let mut ctx = HeifContext::new().map_err(|e| e.to_string())?;
    // Tiles decoded on the calling thread (1 would be one background thread): a worker
    // runs one job per lane.
    ctx.set_max_decoding_threads(0);
    ctx.read_bytes(input).map_err(|e| e.to_string())?;
    Ok(ctx)
}

/// libheif, held for one read; libde265's held-back start-up call is made first
/// (`crate::de265`). Every libheif call of the kernel comes after this.
fn libheif() -> LibHeif {
    #[cfg(target_os = "linux")]
    crate::de265::settle();
    LibHeif::new()
}

fn primary(ctx: &HeifContext<'_>) -> Result<ImageHandle, String> {
    ctx.primary_image_handle().map_err(|e| e.to_string())
}

/// How a file names its colours.
#[derive(Debug, PartialEq)]
enum Colour {
    /// Neither a profile nor an `nclx` box.
    Unnamed,
    /// An ICC profile, at most `meta::MAX_ICC` bytes (a larger one is left out).
    Icc(Vec<u8>),
    /// An `nclx` box's colour primaries and transfer characteristics.
    Nclx(u8, u8),
}

/// What libheif reports about the primary image, after its transformations.
#[derive(Debug, PartialEq)]
struct Header {
    width: u32,
    height: u32,
    alpha: bool,
    /// Luma or chroma above 8 bits.
    deep: bool,
    colour: Colour,
}

/// Reads the primary image's header with libheif.
fn read_header(input: &[u8]) -> Result<Header, String> {
    let _lib = libheif();
    let ctx = context(input)?;
    let handle = primary(&ctx)?;
    let colour = match handle.color_profile_raw().map(|p| p.data) {
        Some(p) if !p.is_empty() && p.len() <= crate::meta::MAX_ICC => Colour::Icc(p),
        _ => match handle.color_profile_nclx() {
            Some(n) => Colour::Nclx(n.color_primaries() as u8, n.transfer_characteristics() as u8),
            None => Colour::Unnamed,
        },
    };
    Ok(Header {
        width: handle.width(),
        height: handle.height(),
        alpha: handle.has_alpha_channel(),
        deep: handle.luma_bits_per_pixel() > 8 || handle.chroma_bits_per_pixel() > 8,
        colour,
    })
}

/// Decodes the primary image with libheif to interleaved 8-bit RGB(A), rows packed,
/// refusing a primary image of another size than `width` x `height` before decoding.
fn read_pixels(input: &[u8], alpha: bool, width: u32, height: u32) -> Result<Vec<u8>, String> {
    let lib = libheif();
    let ctx = context(input)?;
    let handle = primary(&ctx)?;
    if (handle.width(), handle.height()) != (width, height) {
        return Err("inconsistent headers: the primary image changed size between reads".into());
    }
    let chroma = if alpha { RgbChroma::Rgba } else { RgbChroma::Rgb };
    // One codec thread too: left at 0, dav1d takes every core the machine has (and a
    // frame context for each), under a plan that counts one.
    let mut options = libheif_rs::DecodingOptions::new().ok_or("libheif made no decoding options")?;
    options.set_num_codec_threads(1);
    let img = lib.decode(&handle, ColorSpace::Rgb(chroma), Some(options)).map_err(|e| e.to_string())?;
    let planes = img.planes();
    let plane = planes.interleaved.ok_or("libheif gave no interleaved plane")?;
    let n = if alpha { 4 } else { 3 };
    let (w, h) = (width as usize, height as usize);
    if (plane.width, plane.height) != (width, height)
        || plane.storage_bits_per_pixel as usize != 8 * n
        || plane.stride < w * n
        || plane.data.len() < plane.stride * (h - 1) + w * n
    {
        return Err("libheif's decoded image does not match its header".into());
    }
    // Room for a reply's tail, so a child answers without growing the buffer.
    let mut data = Vec::with_capacity(w * h * n + PIXELS_TAIL + 1);
    for row in plane.data.chunks(plane.stride).take(h) {
        data.extend_from_slice(&row[..w * n]);
    }
    Ok(data)
}

/// The child's side of [`isolation::answer`]: one request, one reply.
pub(crate) fn answer(request: &[u8]) -> Vec<u8> {
    match request {
        [HEADER, input @ ..] => match read_header(input) {
            Ok(h) => {
                let (kind, icc, p, t) = match h.colour {
                    Colour::Unnamed => (0, Vec::new(), 0, 0),
                    Colour::Icc(icc) => (1, icc, 0, 0),
                    Colour::Nclx(p, t) => (2, Vec::new(), p, t),
                };
                let mut r = icc;
                r.extend_from_slice(&h.width.to_le_bytes());
                r.extend_from_slice(&h.height.to_le_bytes());
                r.extend_from_slice(&[u8::from(h.alpha), u8::from(h.deep), kind, p, t, OK]);
                r
            }
            Err(e) => isolation::error_reply(&e),
        },
        [PIXELS, alpha, rest @ ..] if rest.len() >= 8 => {
            let width = u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default());
            let height = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
            match read_pixels(&rest[8..], *alpha != 0, width, height) {
                Ok(mut r) => {
                    r.extend_from_slice(&width.to_le_bytes());
                    r.extend_from_slice(&height.to_le_bytes());
                    r.extend_from_slice(&[if *alpha != 0 { 4 } else { 3 }, OK]);
                    r
                }
                Err(e) => isolation::error_reply(&e),
            }
        }
        _ => isolation::error_reply("not a request this program answers"),
    }
}

/// A runner's failure as the kernel's error: a crash is the file's, the rest are not.
fn failed(format: Format, f: Failure) -> Error {
    match f {
        Failure::Crashed(why) => decode_err(format, format!("the HEIF reader's process {why}")),
        Failure::Unavailable(why) => Error::Unavailable(format!("the HEIF reader's process: {why}")),
        Failure::Stopped(e) => e,
    }
}

/// A reply's answer, or the kernel's error for the child's message or its broken reply.
fn payload(reply: Vec<u8>, format: Format) -> Result<Vec<u8>, Error> {
    isolation::open_reply(reply).map_err(|f| failed(format, f))?.map_err(|e| decode_err(format, e))
}

/// [`read_header`] here or in a runner's process.
fn header(input: &[u8], format: Format) -> Result<Header, Error> {
    let Some(runner) = isolation::runner() else {
        return read_header(input).map_err(|e| decode_err(format, e));
    };
    let max = crate::meta::MAX_ICC + HEADER_TAIL + 1;
    let reply =
        runner.run(&[&[HEADER], input], max, &Stop::new().with_time_limit(HEADER_TIME)).map_err(|f| match f {
            Failure::Stopped(Error::TimedOut { .. }) => {
                decode_err(format, format!("the HEIF reader's process took over {HEADER_TIME:?} to read the header"))
            }
            f => failed(format, f),
        })?;
    let mut r = payload(reply, format)?;
    let bad = || decode_err(format, "the HEIF reader's process gave a malformed header");
    let tail = r.len().checked_sub(HEADER_TAIL).ok_or_else(bad)?;
    let t = r.split_off(tail);
    let flag = |b: u8| match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad()),
    };
    let colour = match t[10] {
        0 if r.is_empty() => Colour::Unnamed,
        1 if !r.is_empty() && r.len() <= crate::meta::MAX_ICC => Colour::Icc(r),
        2 if r.is_empty() => Colour::Nclx(t[11], t[12]),
        _ => return Err(bad()),
    };
    Ok(Header {
        width: u32::from_le_bytes([t[0], t[1], t[2], t[3]]),
        height: u32::from_le_bytes([t[4], t[5], t[6], t[7]]),
        alpha: flag(t[8])?,
        deep: flag(t[9])?,
        colour,
    })
}

/// [`read_pixels`] here or in a runner's process (which `stop` kills).
fn pixels(input: &[u8], probe: &Probe, stop: &Stop) -> Result<Vec<u8>, Error> {
    let format = probe.format;
    let alpha = probe.channels == Channels::Rgba;
    let Some(runner) = isolation::runner() else {
        return read_pixels(input, alpha, probe.width, probe.height).map_err(|e| decode_err(format, e));
    };
    let n = probe.channels.count();
    let size = (probe.width as usize)
        .checked_mul(probe.height as usize)
        .and_then(|px| px.checked_mul(n))
        .filter(|&s| s < usize::MAX - PIXELS_TAIL - 1)
        .ok_or_else(|| decode_err(format, "the image is too large to decode here"))?;
    let mut ask = [PIXELS, u8::from(alpha), 0, 0, 0, 0, 0, 0, 0, 0];
    ask[2..6].copy_from_slice(&probe.width.to_le_bytes());
    ask[6..10].copy_from_slice(&probe.height.to_le_bytes());
    // The whole reply fits the buffer it is read into: the picture stays where it lands.
    let reply = runner.run(&[&ask, input], size + PIXELS_TAIL + 1, stop).map_err(|f| failed(format, f))?;
    let mut r = payload(reply, format)?;
    let mut tail = [0u8; PIXELS_TAIL];
    tail[..4].copy_from_slice(&probe.width.to_le_bytes());
    tail[4..8].copy_from_slice(&probe.height.to_le_bytes());
    tail[8] = n as u8;
    if r.len() != size + PIXELS_TAIL || r[size..] != tail {
        return Err(decode_err(format, "the HEIF reader's process gave a picture of another size"));
    }
    r.truncate(size);
    Ok(r)
}

/// The header of a HEIC or AVIF file: the primary image's size (after libheif's
/// transformations), alpha, and ICC profile (or the `nclx` box's colours as one).
pub(crate) fn probe(input: &[u8], format: Format, limits: &Limits) -> Result<Probe, Error> {
    crate::heif_boxes::check(input, format, limits)?;
    let h = header(input, format)?;
    let (width, height) = (h.width, h.height);
    if width == 0 || height == 0 {
        return Err(decode_err(format, "the primary image declares a zero size"));
    }
    limits.check_dimensions(width, height)?;
    let channels = if h.alpha { Channels::Rgba } else { Channels::Rgb };
    // An ICC profile, or else the colours the `nclx` box names (Display P3, BT.2020, ...)
    // as a profile of their own, so they are converted to sRGB like a tagged JPEG's.
    let icc = match h.colour {
        Colour::Icc(p) => Some(p),
        Colour::Nclx(primaries, transfer) => crate::cms::icc_from_cicp(primaries, transfer),
        Colour::Unnamed => None,
    };
    // The decoder's reference frame and libheif's copy of it (YCbCr, up to 4:4:4: 3 bytes
    // a pixel each at 8 bits, 6 above), the alpha plane in both, and libheif's interleaved
    // RGB(A).
    let (planes, alpha) = match (h.deep, h.alpha) {
        (false, a) => (6, if a { 2 } else { 0 }),
        (true, a) => (12, if a { 4 } else { 0 }),
    };
    let native_bytes = u64::from(width) * u64::from(height) * (planes + alpha + channels.count() as u64);
    Ok(Probe {
        format,
        width,
        height,
        channels,
        native_bytes,
        shrinkable: false,
        orientation: Orientation::Normal,
        icc,
        inks: false,
        animation: None,
    })
}

/// Decodes the primary image to 8-bit RGB(A).
pub(crate) fn decode(input: &[u8], probe: &Probe, stop: &Stop) -> Result<Raster, Error> {
    let data = pixels(input, probe, stop)?;
    Raster::from_vec(probe.width, probe.height, probe.channels, data)
}
