//! Steps that change pixel values one at a time: `grayscale`, `brightness`, `contrast`,
//! `gamma`, `invert`, `threshold`, `saturation`. Each has its spec, canonical form, size rule and pixels
//! here; the algorithms (tone tables, luma) are in `ops::color`.

use super::Op;
use super::operation::{Apply, Operation, Shape, Sizing};
use super::spec::{Parsed, Spec};
use crate::ops::color;
use crate::{Channels, Error, Raster};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Applies a tone table in the image's own buffer.
fn with_lut(mut img: Raster, lut: &color::Lut) -> Result<Raster, Error> {
    color::apply_lut(&mut img, lut);
    Ok(img)
}

/// The layout of a one-channel result of an image in layout `ch` (alpha kept).
fn gray_of(ch: Channels) -> Channels {
    if ch.has_alpha() { Channels::GrayAlpha } else { Channels::Gray }
}

/// `grayscale`: Rec. 601 luma, alpha kept (the enum's `Op::Grayscale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grayscale;

pub(super) const GRAYSCALE: Spec = Spec {
    names: &["grayscale", "greyscale", "gray", "grey"],
    syntax: "grayscale",
    about: "convert to luma (Rec. 601), alpha kept",
    example: "grayscale",
    args: (0, 0),
    parse: |_, _| Ok(Parsed::Op(Op::Grayscale)),
};

impl Operation for Grayscale {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("grayscale")
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, gray_of(s.ch)))
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        Ok(color::grayscale(&img))
    }
}

/// `brightness:N`: add N (-255..=255) to every colour channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brightness {
    /// Offset.
    pub amount: i16,
}

pub(super) const BRIGHTNESS: Spec = Spec {
    names: &["brightness"],
    syntax: "brightness:N",
    about: "add N (-255..255) to colour channels",
    example: "brightness:20",
    args: (1, 1),
    parse: |s, _| {
        let v: i32 = s.num(0, "amount")?;
        if !(-255..=255).contains(&v) {
            return Err(s.err(format!("amount must be in -255..=255, got {v}")));
        }
        Ok(Parsed::Op(Op::Brightness(Brightness { amount: v as i16 })))
    },
};

impl Operation for Brightness {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "brightness:{}", self.amount)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).in_place())
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        with_lut(img, &color::brightness_lut(self.amount))
    }
}

/// `contrast:F`: scale around mid-grey by F (0..=10).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Contrast {
    /// Factor.
    pub factor: f32,
}

pub(super) const CONTRAST: Spec = Spec {
    names: &["contrast"],
    syntax: "contrast:F",
    about: "scale around mid-grey by F (0..10)",
    example: "contrast:1.2",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Contrast(Contrast { factor: s.f32_in(0, "factor", 0.0, 10.0, false)? }))),
};

impl Operation for Contrast {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "contrast:{}", self.factor)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).in_place())
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        with_lut(img, &color::contrast_lut(self.factor))
    }
}

/// `gamma:G`: out = in^(1/G) (0.1..=10).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gamma {
    /// Gamma.
    pub gamma: f32,
}

pub(super) const GAMMA: Spec = Spec {
    names: &["gamma"],
    syntax: "gamma:G",
    about: "gamma correction, 0.1..10",
    example: "gamma:2.2",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Gamma(Gamma { gamma: s.f32_in(0, "gamma", 0.1, 10.0, false)? }))),
};

impl Operation for Gamma {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gamma:{}", self.gamma)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).in_place())
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        with_lut(img, &color::gamma_lut(self.gamma))
    }
}

/// `invert`: negative of the colour channels (the enum's `Op::Invert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invert;

pub(super) const INVERT: Spec = Spec {
    names: &["invert", "negate"],
    syntax: "invert",
    about: "negative",
    example: "invert",
    args: (0, 0),
    parse: |_, _| Ok(Parsed::Op(Op::Invert)),
};

impl Operation for Invert {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invert")
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).in_place())
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        with_lut(img, &color::invert_lut())
    }
}

/// `threshold:N`: luma >= N becomes white, else black.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    /// Level 0..=255.
    pub level: u8,
}

pub(super) const THRESHOLD: Spec = Spec {
    names: &["threshold"],
    syntax: "threshold:N",
    about: "luma >= N white, else black",
    example: "threshold:128",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Threshold(Threshold { level: s.u32_in(0, "level", 0, 255)? as u8 }))),
};

impl Operation for Threshold {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "threshold:{}", self.level)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, gray_of(s.ch)))
    }

    fn apply(&self, img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        Ok(color::threshold(&img, self.level))
    }
}

/// `saturation:F`: colour scaled away from (F > 1) or towards (F < 1) each pixel's luma;
/// 0 is grey (0..=10).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Saturation {
    /// Factor.
    pub factor: f32,
}

pub(super) const SATURATION: Spec = Spec {
    names: &["saturation", "saturate"],
    syntax: "saturation:F",
    about: "colour saturation x F (0 grey, 1 unchanged, 0..10); grey images unchanged",
    example: "saturation:1.4",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Saturation(Saturation { factor: s.f32_in(0, "factor", 0.0, 10.0, false)? }))),
};

impl Operation for Saturation {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saturation:{}", self.factor)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        Ok(s.shape(s.w, s.h, s.ch).in_place())
    }

    fn apply(&self, mut img: Raster, _: &mut Apply<'_>) -> Result<Raster, Error> {
        color::saturate(&mut img, self.factor);
        Ok(img)
    }
}
