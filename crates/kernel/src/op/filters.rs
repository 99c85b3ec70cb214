//! Steps that look at a neighbourhood: `blur`, `sharpen`, `sobel`, `pixelate`. Each has its spec,
//! canonical form, size rule and pixels here; the algorithms are in `ops::filter` and
//! `ops::edges`.

use super::Op;
use super::operation::{Apply, Operation, Shape, Sizing, gaussian_ns_per_px};
use super::spec::{MAX_SIDE, Parsed, Spec};
use crate::ops::{edges, filter};
use crate::{Channels, Error, Raster};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Scratch of the separable Gaussian: one intermediate image plus per-column state.
fn gaussian_scratch(s: &Sizing<'_>) -> u64 {
    super::operation::bytes(u64::from(s.w), u64::from(s.h), s.ch) + u64::from(s.w) * 64
}

/// `blur:SIGMA`: Gaussian blur.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Blur {
    /// Standard deviation in pixels.
    pub sigma: f32,
}

pub(super) const BLUR: Spec = Spec {
    names: &["blur"],
    syntax: "blur:SIGMA",
    about: "Gaussian blur, 0 < sigma <= 100",
    example: "blur:2",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Blur(Blur { sigma: s.f32_in(0, "sigma", 0.0, 100.0, true)? }))),
};

impl Operation for Blur {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blur:{}", self.sigma)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).with_scratch(gaussian_scratch(s)))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        filter::blur(&img, self.sigma, cx.stop)
    }

    fn ns_per_px(&self) -> f64 {
        gaussian_ns_per_px(self.sigma)
    }
}

/// `sharpen:SIGMA[:AMOUNT]`: unsharp mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sharpen {
    /// Blur radius of the mask.
    pub sigma: f32,
    /// Strength (1 = add the full difference once).
    pub amount: f32,
}

pub(super) const SHARPEN: Spec = Spec {
    names: &["sharpen"],
    syntax: "sharpen:SIGMA[:AMOUNT]",
    about: "unsharp mask, amount defaults to 1",
    example: "sharpen:1:0.8",
    args: (1, 2),
    parse: |s, _| {
        let sigma = s.f32_in(0, "sigma", 0.0, 100.0, true)?;
        let amount = if s.args.len() > 1 { s.f32_in(1, "amount", 0.0, 10.0, true)? } else { 1.0 };
        Ok(Parsed::Op(Op::Sharpen(Sharpen { sigma, amount })))
    },
};

impl Operation for Sharpen {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sharpen:{}:{}", self.sigma, self.amount)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).with_scratch(gaussian_scratch(s)))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        filter::sharpen(&img, self.sigma, self.amount, cx.stop)
    }

    fn ns_per_px(&self) -> f64 {
        gaussian_ns_per_px(self.sigma) + 5.0
    }
}

/// `sobel` (alias `edges`): Sobel gradient magnitude of the luma, one channel (the enum's
/// `Op::Sobel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sobel;

pub(super) const SOBEL: Spec = Spec {
    names: &["sobel", "edges"],
    syntax: "sobel | edges",
    about: "Sobel gradient magnitude (one channel)",
    example: "sobel",
    args: (0, 0),
    parse: |_, _| Ok(Parsed::Op(Op::Sobel)),
};

impl Operation for Sobel {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sobel")
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        // The luma plane plus a few rows of gradients.
        let scratch = u64::from(s.w) * u64::from(s.h) + u64::from(s.w) * 8;
        Ok(s.shape(s.w, s.h, Channels::Gray).with_scratch(scratch))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        edges::sobel(&img, cx.stop)
    }
}

/// `pixelate:N`: every N x N tile becomes its mean colour (N 1..=1000000; 1 changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pixelate {
    /// Tile side in pixels.
    pub size: u32,
}

pub(super) const PIXELATE: Spec = Spec {
    names: &["pixelate"],
    syntax: "pixelate:N",
    about: "N x N tiles of their mean colour",
    example: "pixelate:12",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Pixelate(Pixelate { size: s.u32_in(0, "size", 1, MAX_SIDE)? }))),
};

impl Operation for Pixelate {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pixelate:{}", self.size)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).in_place())
    }

    fn apply(&self, mut img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        filter::pixelate(&mut img, self.size, cx.stop)?;
        Ok(img)
    }
}
