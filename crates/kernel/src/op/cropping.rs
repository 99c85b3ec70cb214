//! Steps that cut a box out of the image, add one around it or lay one on it: `crop`,
//! `aspect`, `pad`, `trim`, `watermark`. Each has its spec, canonical form, size rule and
//! pixels here; the algorithms are in `ops::geometry`.

use super::operation::{Apply, Operation, Shape, Sizing, bytes};
use super::spec::{GRAVITIES, MAX_SIDE, Parsed, Spec, name_of, parse_colour};
use super::{Gravity, Op, Rgba};
use crate::ops::geometry;
use crate::{Channels, Error, Raster, Rect};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `crop:X:Y:W:H`: a box in pixels (clamped to the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crop {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Crop {
    fn rect(&self) -> Rect {
        Rect { x: self.x, y: self.y, width: self.width, height: self.height }
    }
}

pub(super) const CROP: Spec = Spec {
    names: &["crop"],
    syntax: "crop:X:Y:W:H",
    about: "crop a box in pixels (clamped to the image)",
    example: "crop:10:10:400:300",
    args: (4, 4),
    parse: |s, _| {
        Ok(Parsed::Op(Op::Crop(Crop {
            x: s.u32_in(0, "x", 0, MAX_SIDE)?,
            y: s.u32_in(1, "y", 0, MAX_SIDE)?,
            width: s.u32_in(2, "width", 1, MAX_SIDE)?,
            height: s.u32_in(3, "height", 1, MAX_SIDE)?,
        })))
    },
};

impl Operation for Crop {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Crop { x, y, width, height } = *self;
        write!(f, "crop:{x}:{y}:{width}:{height}")
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let b =
            geometry::clamp_box(s.w, s.h, self.rect()).ok_or_else(|| geometry::crop_outside(self.rect(), s.w, s.h))?;
        Ok(s.shape(b.width, b.height, s.ch))
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        geometry::crop(&img, self.rect())
    }
}

/// `trim[:T]`: removes the uniform border whose colour is the top-left pixel's, within a
/// tolerance of `T` per channel (alpha included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trim {
    /// Largest difference per channel still counted as the border's colour.
    pub threshold: u8,
}

pub(super) const TRIM: Spec = Spec {
    names: &["trim"],
    syntax: "trim[:T]",
    about: "remove the uniform border (the top-left pixel's colour, within T per channel, default 10)",
    example: "trim:20",
    args: (0, 1),
    parse: |s, _| {
        let threshold = if s.args.is_empty() { 10 } else { s.u32_in(0, "threshold", 0, 255)? as u8 };
        Ok(Parsed::Op(Op::Trim(Trim { threshold })))
    },
};

impl Operation for Trim {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trim:{}", self.threshold)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        // At most the input: the real size is known once the border is found.
        Ok(s.shape(s.w, s.h, s.ch))
    }

    fn content_sized(&self) -> bool {
        true
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        match geometry::trim_box(&img, self.threshold, cx.stop)? {
            Some(b) if (b.width, b.height) != (img.width(), img.height()) => geometry::crop(&img, b),
            _ => Ok(img),
        }
    }
}

/// Largest watermark image, in pixels: logos and marks, not photos.
pub const WATERMARK_MAX_PIXELS: u64 = 2_000_000;

/// Largest watermark file, in bytes.
pub const WATERMARK_MAX_BYTES: u64 = 8 << 20;

/// Longest watermark name.
pub const WATERMARK_MAX_NAME: usize = 64;

/// `watermark:NAME[:gravity[:opacity[:scale]]]`: the image named `NAME` (given to the
/// kernel by the caller: the jobs layer reads it from `watermarks/NAME` in the store) laid
/// on the picture by gravity, its alpha times `opacity`, `scale` times the picture's width
/// wide (0: its own size), never larger than the picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    /// Name: 1-64 of `a-z`, `0-9`, `-`, `_`.
    pub name: String,
    /// Placement.
    #[serde(default)]
    pub gravity: Gravity,
    /// 0 (invisible) ..= 1 (its own alpha).
    pub opacity: f32,
    /// Width as a fraction of the picture's (0 < s <= 1), or 0 for its own size.
    pub scale: f32,
}

/// Checks a watermark name.
pub fn check_watermark_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() || name.len() > WATERMARK_MAX_NAME || !name.chars().all(ok) {
        return Err(format!(
            "watermark name '{}' must be 1 to {WATERMARK_MAX_NAME} of a-z, 0-9, '-' and '_'",
            name.escape_default()
        ));
    }
    Ok(())
}

pub(super) const WATERMARK: Spec = Spec {
    names: &["watermark"],
    syntax: "watermark:NAME[:gravity[:opacity[:scale]]]",
    about: "lay the image watermarks/NAME on the picture: gravity (default southeast), opacity 0..1 (default 1), \
            scale 0..1 of the picture's width (default 0: its own size)",
    example: "watermark:logo:southeast:0.6:0.2",
    args: (1, 4),
    parse: |s, _| {
        let name = s.args[0].trim().to_string();
        check_watermark_name(&name).map_err(|r| s.err(r))?;
        let gravity = if s.args.len() > 1 { s.choice(1, "gravity", GRAVITIES)? } else { Gravity::SouthEast };
        let opacity = if s.args.len() > 2 { s.f32_in(2, "opacity", 0.0, 1.0, false)? } else { 1.0 };
        let scale = if s.args.len() > 3 { s.f32_in(3, "scale", 0.0, 1.0, false)? } else { 0.0 };
        Ok(Parsed::Op(Op::Watermark(Watermark { name, gravity, opacity, scale })))
    },
};

impl Watermark {
    /// The layout of the picture after it: colour (a grey picture becomes RGB).
    fn out_channels(ch: Channels) -> Channels {
        match ch {
            Channels::Gray => Channels::Rgb,
            Channels::GrayAlpha => Channels::Rgba,
            c => c,
        }
    }
}

impl Operation for Watermark {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = name_of(GRAVITIES, self.gravity);
        write!(f, "watermark:{}:{g}:{}:{}", self.name, self.opacity, self.scale)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        // The mark's file decoded, as RGBA, and resampled (at most the picture's size).
        let mark =
            3 * bytes(WATERMARK_MAX_PIXELS, 1, Channels::Rgba) + bytes(u64::from(s.w), u64::from(s.h), Channels::Rgba);
        let ch = Watermark::out_channels(s.ch);
        let shape = s.shape(s.w, s.h, ch).with_scratch(mark + WATERMARK_MAX_BYTES);
        Ok(if ch == s.ch { shape.in_place() } else { shape })
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        let op = || format!("watermark:{}", self.name);
        let bytes = cx.overlays.get(&self.name).ok_or_else(|| Error::Op {
            op: op(),
            reason: format!(
                "no watermark image named '{}' was given (it is read from watermarks/{})",
                self.name, self.name
            ),
        })?;
        let limits = crate::Limits::default().max_pixels(WATERMARK_MAX_PIXELS).max_input_bytes(WATERMARK_MAX_BYTES);
        let mark =
            crate::decode(bytes, &limits).map_err(|e| Error::Op { op: op(), reason: format!("its image: {e}") })?;
        let mark = crate::ops::color::convert(&mark, Channels::Rgba);
        let (w, h) = (img.width(), img.height());
        let (mw, mh) = (u64::from(mark.width()), u64::from(mark.height()));
        let (mut tw, mut th) = if self.scale > 0.0 {
            let tw = ((f64::from(self.scale) * f64::from(w)).round() as u64).max(1);
            (tw, (tw * mh).div_ceil(mw).max(1))
        } else {
            (mw, mh)
        };
        // Never larger than the picture.
        if tw > u64::from(w) || th > u64::from(h) {
            let k = (f64::from(w) / tw as f64).min(f64::from(h) / th as f64);
            (tw, th) = (((tw as f64 * k) as u64).max(1), ((th as f64 * k) as u64).max(1));
        }
        let mark = if (tw, th) == (mw, mh) {
            mark
        } else {
            cx.resizer.resize(&mark, tw as u32, th as u32, super::Filter::Lanczos3, false)?
        };
        let mut base = match img.channels() {
            Channels::Gray | Channels::GrayAlpha => {
                crate::ops::color::convert(&img, Watermark::out_channels(img.channels()))
            }
            _ => img,
        };
        let (x, y) = geometry::place(w, h, mark.width(), mark.height(), self.gravity);
        geometry::composite(&mut base, &mark, x, y, self.opacity, cx.stop)?;
        Ok(base)
    }
}

/// `aspect:W:H[:gravity]`: the largest box of that aspect ratio, placed by gravity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aspect {
    /// Ratio numerator.
    pub width: u32,
    /// Ratio denominator.
    pub height: u32,
    /// Placement.
    #[serde(default)]
    pub gravity: Gravity,
}

pub(super) const ASPECT: Spec = Spec {
    names: &["aspect"],
    syntax: "aspect:W:H[:gravity]",
    about: "largest box of aspect W:H; gravity center|north|south|east|west|northeast|northwest|southeast|southwest",
    example: "aspect:16:9:north",
    args: (2, 3),
    parse: |s, _| {
        let gravity = if s.args.len() > 2 { s.choice(2, "gravity", GRAVITIES)? } else { Gravity::default() };
        Ok(Parsed::Op(Op::Aspect(Aspect {
            width: s.u32_in(0, "ratio width", 1, 10_000)?,
            height: s.u32_in(1, "ratio height", 1, 10_000)?,
            gravity,
        })))
    },
};

impl Operation for Aspect {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aspect:{}:{}:{}", self.width, self.height, name_of(GRAVITIES, self.gravity))
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let b = geometry::aspect_box(s.w, s.h, self.width, self.height, self.gravity);
        Ok(s.shape(b.width, b.height, s.ch))
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        let b = geometry::aspect_box(img.width(), img.height(), self.width, self.height, self.gravity);
        geometry::crop(&img, b)
    }
}

/// `pad:T:R:B:L[:rrggbb[aa]]`: a border of the colour (default opaque white) around the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pad {
    /// Pixels above.
    pub top: u32,
    /// Pixels to the right.
    pub right: u32,
    /// Pixels below.
    pub bottom: u32,
    /// Pixels to the left.
    pub left: u32,
    /// Border colour.
    #[serde(default = "white")]
    pub colour: Rgba,
}

fn white() -> Rgba {
    Rgba([255, 255, 255, 255])
}

pub(super) const PAD: Spec = Spec {
    names: &["pad", "extend"],
    syntax: "pad:T:R:B:L[:rrggbb[aa]]",
    about: "border of T, R, B, L pixels in a colour (default white; alpha < ff adds transparency)",
    example: "pad:10:20:10:20:000000",
    args: (4, 5),
    parse: |s, _| {
        Ok(Parsed::Op(Op::Pad(Pad {
            top: s.u32_in(0, "top", 0, MAX_SIDE)?,
            right: s.u32_in(1, "right", 0, MAX_SIDE)?,
            bottom: s.u32_in(2, "bottom", 0, MAX_SIDE)?,
            left: s.u32_in(3, "left", 0, MAX_SIDE)?,
            colour: if s.args.len() > 4 { parse_colour(s, 4)? } else { white() },
        })))
    },
};

impl Operation for Pad {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Rgba([r, g, b, a]) = self.colour;
        write!(f, "pad:{}:{}:{}:{}:{r:02x}{g:02x}{b:02x}{a:02x}", self.top, self.right, self.bottom, self.left)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let w = u64::from(s.w) + u64::from(self.left) + u64::from(self.right);
        let h = u64::from(s.h) + u64::from(self.top) + u64::from(self.bottom);
        let (w, h) = s.check_out(w, h)?;
        let ch = geometry::padded_channels(s.ch, self.colour);
        // A widened layout converts the image first.
        let scratch = if ch == s.ch { 0 } else { bytes(u64::from(s.w), u64::from(s.h), ch) };
        Ok(s.shape(w, h, ch).with_scratch(scratch))
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        geometry::pad(&img, self.top, self.right, self.bottom, self.left, self.colour)
    }
}
