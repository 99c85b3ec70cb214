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

use libheif_rs::{ColorSpace, HeifContext, ImageHandle, LibHeif, RgbChroma};

use crate::codec::{Probe, decode_err};
use crate::{Channels, Error, Format, Limits, Orientation, Raster};

/// A context on `input` under libheif's own default security limits (image size, memory
/// blocks, tiles, items). They are not replaced by ours: libheif-rs' limits struct is the
/// 1.19 layout while the embedded libheif is 1.23 and reads fields past its end (a clean
/// run saw a memory limit of 1 byte). Ours are checked on the header before decoding, and
/// the input is already within `max_input_bytes`.
fn context(input: &[u8], format: Format) -> Result<HeifContext<'_>, Error> {
    let err = |e: libheif_rs::HeifError| decode_err(format, e);
    let mut ctx = HeifContext::new().map_err(err)?;
    // Tiles decoded on the calling thread (1 would be one background thread): a worker
    // runs one job per lane.
    ctx.set_max_decoding_threads(0);
    ctx.read_bytes(input).map_err(err)?;
    Ok(ctx)
}

fn primary(ctx: &HeifContext<'_>, format: Format) -> Result<ImageHandle, Error> {
    ctx.primary_image_handle().map_err(|e| decode_err(format, e))
}

/// The header of a HEIC or AVIF file: the primary image's size (after libheif's
/// transformations), alpha, and ICC profile (or the `nclx` box's colours as one).
pub(crate) fn probe(input: &[u8], format: Format, limits: &Limits) -> Result<Probe, Error> {
    crate::heif_boxes::check(input, format, limits)?;
    let _lib = LibHeif::new();
    let ctx = context(input, format)?;
    let handle = primary(&ctx, format)?;
    let (width, height) = (handle.width(), handle.height());
    if width == 0 || height == 0 {
        return Err(decode_err(format, "the primary image declares a zero size"));
    }
    limits.check_dimensions(width, height)?;
    let channels = if handle.has_alpha_channel() { Channels::Rgba } else { Channels::Rgb };
    // An ICC profile, or else the colours the `nclx` box names (Display P3, BT.2020, ...)
    // as a profile of their own, so they are converted to sRGB like a tagged JPEG's.
    let icc = handle
        .color_profile_raw()
        .map(|p| p.data)
        .filter(|p| !p.is_empty() && p.len() <= crate::meta::MAX_ICC)
        .or_else(|| {
            let nclx = handle.color_profile_nclx()?;
            crate::cms::icc_from_cicp(nclx.color_primaries() as u8, nclx.transfer_characteristics() as u8)
        });
    // The decoder's reference frame and libheif's copy of it (YCbCr, up to 4:4:4: 3 bytes
    // a pixel each at 8 bits, 6 above), the alpha plane in both, and libheif's interleaved
    // RGB(A).
    let deep = handle.luma_bits_per_pixel() > 8 || handle.chroma_bits_per_pixel() > 8;
    let (planes, alpha) = match (deep, channels == Channels::Rgba) {
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
pub(crate) fn decode(input: &[u8], probe: &Probe) -> Result<Raster, Error> {
    let format = probe.format;
    let lib = LibHeif::new();
    let ctx = context(input, format)?;
    let handle = primary(&ctx, format)?;
    if (handle.width(), handle.height()) != (probe.width, probe.height) {
        return Err(decode_err(format, "inconsistent headers: the primary image changed size between reads"));
    }
    let chroma = if probe.channels == Channels::Rgba { RgbChroma::Rgba } else { RgbChroma::Rgb };
    // One codec thread too: left at 0, dav1d takes every core the machine has (and a
    // frame context for each), under a plan that counts one.
    let mut options =
        libheif_rs::DecodingOptions::new().ok_or_else(|| decode_err(format, "libheif made no decoding options"))?;
    options.set_num_codec_threads(1);
    let img = lib.decode(&handle, ColorSpace::Rgb(chroma), Some(options)).map_err(|e| decode_err(format, e))?;
    let planes = img.planes();
    let plane = planes.interleaved.ok_or_else(|| decode_err(format, "libheif gave no interleaved plane"))?;
    let n = probe.channels.count();
    let (w, h) = (probe.width as usize, probe.height as usize);
    if (plane.width, plane.height) != (probe.width, probe.height)
        || plane.storage_bits_per_pixel as usize != 8 * n
        || plane.stride < w * n
        || plane.data.len() < plane.stride * (h - 1) + w * n
    {
        return Err(decode_err(format, "libheif's decoded image does not match its header"));
    }
    let mut data = Vec::with_capacity(w * h * n);
    for row in plane.data.chunks(plane.stride).take(h) {
        data.extend_from_slice(&row[..w * n]);
    }
    Raster::from_vec(probe.width, probe.height, probe.channels, data)
}
