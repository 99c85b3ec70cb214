//! Steps that set how the result is written rather than its pixels: `format`, `quality`,
//! `lossless`, `progressive`, `compression`, `keep-icc`, `max-bytes`, and `frame` (which frame of an animation to
//! decode). Their canonical forms are written by `Pipeline::canonical`, output settings last
//! in a fixed order.

use super::MAX_FRAME;
use super::spec::{Parsed, Spec};

pub(super) const FORMAT: Spec = Spec {
    names: &["format"],
    syntax: "format:F",
    about: "output format jpeg|png|webp|avif|gif|tiff|bmp (default: the input's, JPEG for a HEIC); webp and avif are lossy",
    example: "format:webp",
    args: (1, 1),
    parse: |s, out| {
        let f: crate::Format = s.args[0].trim().parse().map_err(|e: String| s.err(e))?;
        if !crate::Format::WRITE.contains(&f) {
            return Err(s.err(format!("{f} is read, not written: write jpeg, webp or avif")));
        }
        out.format = Some(f);
        Ok(Parsed::Output)
    },
};

pub(super) const QUALITY: Spec = Spec {
    names: &["quality"],
    syntax: "quality:Q",
    about: "JPEG quality 1..100 (default 85), lossy WebP quality (default 80), AVIF quality (default 60)",
    example: "quality:80",
    args: (1, 1),
    parse: |s, out| {
        out.quality = Some(s.u32_in(0, "quality", 1, 100)? as u8);
        Ok(Parsed::Output)
    },
};

pub(super) const LOSSLESS: Spec = Spec {
    names: &["lossless"],
    syntax: "lossless",
    about: "lossless WebP (with format:webp)",
    example: "format:webp,lossless",
    args: (0, 0),
    parse: |_, out| {
        out.lossless = true;
        Ok(Parsed::Output)
    },
};

pub(super) const PROGRESSIVE: Spec = Spec {
    names: &["progressive"],
    syntax: "progressive",
    about: "progressive JPEG",
    example: "progressive",
    args: (0, 0),
    parse: |_, out| {
        out.progressive = true;
        Ok(Parsed::Output)
    },
};

pub(super) const KEEP_ICC: Spec = Spec {
    names: &["keep-icc"],
    syntax: "keep-icc",
    about: "keep the input's ICC profile and its colours (default: convert to sRGB, drop the profile)",
    example: "keep-icc",
    args: (0, 0),
    parse: |_, out| {
        out.keep_icc = true;
        Ok(Parsed::Output)
    },
};

pub(super) const MAX_BYTES: Spec = Spec {
    names: &["max-bytes"],
    syntax: "max-bytes:N",
    about: "JPEG, lossy WebP or AVIF of at most N bytes: the highest quality that fits (1024..=100000000)",
    example: "max-bytes:50000",
    args: (1, 1),
    parse: |s, out| {
        out.max_bytes = Some(s.u32_in(0, "bytes", 1024, 100_000_000)?);
        Ok(Parsed::Output)
    },
};

pub(super) const SPEED: Spec = Spec {
    names: &["speed"],
    syntax: "speed:S",
    about: "AVIF encoder speed 1 (smallest file, slowest) ..= 10 (fastest), default 6 (with format:avif)",
    example: "format:avif,speed:8",
    args: (1, 1),
    parse: |s, out| {
        out.speed = Some(s.u32_in(0, "speed", 1, 10)? as u8);
        Ok(Parsed::Output)
    },
};

pub(super) const COMPRESSION: Spec = Spec {
    names: &["compression"],
    syntax: "compression:L",
    about: "PNG zlib level 0..9 (default 6)",
    example: "compression:9",
    args: (1, 1),
    parse: |s, out| {
        out.compression = Some(s.u32_in(0, "level", 0, 9)? as u8);
        Ok(Parsed::Output)
    },
};

pub(super) const FRAME: Spec = Spec {
    names: &["frame"],
    syntax: "frame:N",
    about: "write frame N (0-based) of an animated GIF/WebP as a still (without it, an animation stays animated in GIF/WebP output and gives its first frame in other formats)",
    example: "frame:3",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Frame(s.u32_in(0, "frame", 0, MAX_FRAME)?)),
};
