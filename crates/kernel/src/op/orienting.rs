//! Steps that turn or mirror the image: `rotate` and `flip`. Each has its spec, canonical
//! form, size rule and pixels here; the algorithms are in `ops::geometry`.

use super::operation::{Apply, Operation, Shape, Sizing, bytes};
use super::spec::{AXES, Parsed, Spec, name_of, parse_colour};
use super::{Axis, Op, Rgba};
use crate::ops::geometry;
use crate::{Error, Orientation, Raster};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `rotate:DEG[:rrggbb[aa]]`: clockwise; 90/180/270 are exact, other angles are resampled
/// onto a larger canvas filled with the background colour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rotate {
    /// Clockwise angle in degrees.
    pub degrees: f32,
    /// Fill for uncovered corners.
    #[serde(default)]
    pub background: Rgba,
}

pub(super) const ROTATE: Spec = Spec {
    names: &["rotate"],
    syntax: "rotate:DEG[:rrggbb[aa]]",
    about: "rotate clockwise; 90/180/270 exact, other angles on a larger canvas",
    example: "rotate:15:ffffff",
    args: (1, 2),
    parse: |s, _| {
        let degrees = s.f32_in(0, "angle", -360.0, 360.0, false)?.rem_euclid(360.0);
        let background = if s.args.len() > 1 { parse_colour(s, 1)? } else { Rgba::default() };
        Ok(Parsed::Op(Op::Rotate(Rotate { degrees, background })))
    },
};

impl Operation for Rotate {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Rgba([r, g, b, a]) = self.background;
        write!(f, "rotate:{}:{r:02x}{g:02x}{b:02x}{a:02x}", self.degrees)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let (a, b) = geometry::rotated_dims(s.w, s.h, self.degrees);
        let (a, b) = s.check_out(a, b)?;
        let right = self.degrees.rem_euclid(90.0) == 0.0;
        // A see-through background adds an alpha channel to a free rotation.
        let ch = if !right && self.background.0[3] < 255 { s.ch.with_alpha() } else { s.ch };
        let scratch = if right { 0 } else { bytes(u64::from(s.w), u64::from(s.h), ch) };
        Ok(s.shape(a, b, ch).with_scratch(scratch))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        geometry::rotate(&img, self.degrees, self.background, cx.stop)
    }
}

/// `flip:h` or `flip:v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flip {
    /// Mirror axis.
    pub axis: Axis,
}

pub(super) const FLIP: Spec = Spec {
    names: &["flip"],
    syntax: "flip:h|v",
    about: "mirror horizontally or vertically",
    example: "flip:h",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Flip(Flip { axis: s.choice(0, "axis", AXES)? }))),
};

impl Operation for Flip {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flip:{}", name_of(AXES, self.axis))
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch))
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        let t = match self.axis {
            Axis::Horizontal => Orientation::FlipH,
            Axis::Vertical => Orientation::FlipV,
        };
        Ok(geometry::orient(&img, t))
    }
}
