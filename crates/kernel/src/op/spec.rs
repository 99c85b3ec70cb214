//! The parser's table of steps: each step's [`Spec`] (names, syntax, help, example,
//! argument count and its `parse`, which checks ranges) lives with the step itself, in its
//! family's file (`resizing.rs`, `cropping.rs`, `orienting.rs`, `tone.rs`, `filters.rs`,
//! `output.rs`); this file lists them in [`STEPS`] and holds what their parsers share.
//! ARCHITECTURE.md lists every place an added step touches.

use super::{Axis, Filter, Fit, Gravity, Op, OutputSpec, Rgba};
use super::{cropping, filters, orienting, output, resizing, tone};
use crate::ParseError;
use std::fmt;

/// What one step contributes to a pipeline.
pub(super) enum Parsed {
    /// A pixel-transforming step.
    Op(Op),
    /// An output setting, already written into the [`OutputSpec`].
    Output,
    /// The frame to decode.
    Frame(u32),
}

/// One pipeline step: how `pixq ops` shows it and how the parser reads it.
#[derive(Clone, Copy)]
pub struct Spec {
    /// Names the parser accepts, canonical first.
    pub names: &'static [&'static str],
    /// Syntax.
    pub syntax: &'static str,
    /// What it does.
    pub about: &'static str,
    /// A valid example.
    pub example: &'static str,
    /// Fewest and most arguments.
    pub(super) args: (usize, usize),
    /// Reads the (counted) arguments.
    pub(super) parse: fn(&Step<'_>, &mut OutputSpec) -> Result<Parsed, ParseError>,
}

impl Spec {
    /// The canonical name.
    pub fn name(&self) -> &'static str {
        self.names[0]
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec").field("syntax", &self.syntax).finish()
    }
}

/// The step named `name` (any case, any alias).
pub(super) fn find(name: &str) -> Option<&'static Spec> {
    STEPS.iter().find(|s| s.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// Every step the parser knows, in the order `pixq ops` lists them.
pub const STEPS: &[Spec] = &[
    resizing::RESIZE,
    resizing::THUMBNAIL,
    cropping::CROP,
    cropping::ASPECT,
    cropping::PAD,
    cropping::TRIM,
    cropping::WATERMARK,
    resizing::SMARTCROP,
    orienting::ROTATE,
    orienting::FLIP,
    tone::GRAYSCALE,
    filters::BLUR,
    filters::SHARPEN,
    tone::BRIGHTNESS,
    tone::CONTRAST,
    tone::GAMMA,
    tone::INVERT,
    filters::SOBEL,
    tone::THRESHOLD,
    tone::SATURATION,
    filters::PIXELATE,
    output::FORMAT,
    output::QUALITY,
    output::LOSSLESS,
    output::PROGRESSIVE,
    output::KEEP_ICC,
    output::MAX_BYTES,
    output::SPEED,
    output::COMPRESSION,
    output::FRAME,
];

/// One step of a pipeline string, split into its name and arguments.
pub(super) struct Step<'a> {
    pub(super) index: usize,
    pub(super) text: &'a str,
    pub(super) name: &'a str,
    pub(super) args: Vec<&'a str>,
}

impl Step<'_> {
    pub(super) fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError { step: self.index, text: self.text.to_string(), reason: reason.into() }
    }

    pub(super) fn arity(&self, min: usize, max: usize) -> Result<(), ParseError> {
        let n = self.args.len();
        if n < min || n > max {
            let want = match (min, max) {
                (0, 0) => "no arguments".to_string(),
                (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                (a, b) => format!("{a} to {b} arguments"),
            };
            return Err(self.err(format!("takes {want}, got {n}")));
        }
        Ok(())
    }

    pub(super) fn num<T: std::str::FromStr>(&self, i: usize, what: &str) -> Result<T, ParseError> {
        self.args[i]
            .trim()
            .parse::<T>()
            .map_err(|_| self.err(format!("{what} '{}' is not a valid number", self.args[i])))
    }

    pub(super) fn u32_in(&self, i: usize, what: &str, lo: u32, hi: u32) -> Result<u32, ParseError> {
        let v: u32 = self.num(i, what)?;
        if v < lo || v > hi {
            return Err(self.err(format!("{what} must be in {lo}..={hi}, got {v}")));
        }
        Ok(v)
    }

    pub(super) fn f32_in(&self, i: usize, what: &str, lo: f32, hi: f32, lo_exclusive: bool) -> Result<f32, ParseError> {
        let v: f32 = self.num(i, what)?;
        if !v.is_finite() {
            return Err(self.err(format!("{what} must be finite")));
        }
        if lo_exclusive {
            if v <= lo {
                return Err(self.err(format!("{what} must be > {lo}")));
            }
        } else if v < lo {
            return Err(self.err(format!("{what} must be in {lo}..={hi}, got {v}")));
        }
        if v > hi {
            return Err(self.err(format!("{what} must be <= {hi}, got {v}")));
        }
        Ok(v)
    }

    pub(super) fn choice<T: Copy>(&self, i: usize, what: &str, table: &[(&str, T)]) -> Result<T, ParseError> {
        let a = self.args[i].trim().to_ascii_lowercase();
        table.iter().find(|(n, _)| *n == a).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            self.err(format!("unknown {what} '{}' (expected {})", self.args[i], names.join(", ")))
        })
    }
}

pub(super) const FITS: &[(&str, Fit)] =
    &[("contain", Fit::Contain), ("cover", Fit::Cover), ("fill", Fit::Fill), ("inside", Fit::Inside)];
pub(super) const FILTERS: &[(&str, Filter)] = &[
    ("nearest", Filter::Nearest),
    ("box", Filter::Box),
    ("bilinear", Filter::Bilinear),
    ("hamming", Filter::Hamming),
    ("catmullrom", Filter::CatmullRom),
    ("mitchell", Filter::Mitchell),
    ("lanczos3", Filter::Lanczos3),
];
pub(super) const GRAVITIES: &[(&str, Gravity)] = &[
    ("center", Gravity::Center),
    ("north", Gravity::North),
    ("south", Gravity::South),
    ("east", Gravity::East),
    ("west", Gravity::West),
    ("northeast", Gravity::NorthEast),
    ("northwest", Gravity::NorthWest),
    ("southeast", Gravity::SouthEast),
    ("southwest", Gravity::SouthWest),
];
pub(super) const AXES: &[(&str, Axis)] = &[("h", Axis::Horizontal), ("v", Axis::Vertical)];

pub(super) fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, t)| *t == v).map(|(n, _)| *n).unwrap_or("?")
}

pub(super) fn parse_colour(step: &Step<'_>, i: usize) -> Result<Rgba, ParseError> {
    let s = step.args[i].trim().trim_start_matches('#');
    let bad = || step.err(format!("colour '{}' must be rrggbb or rrggbbaa hex", step.args[i]));
    if !(s.len() == 6 || s.len() == 8) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut c = [0, 0, 0, 255];
    for (k, slot) in c.iter_mut().enumerate().take(s.len() / 2) {
        *slot = u8::from_str_radix(&s[2 * k..2 * k + 2], 16).map_err(|_| bad())?;
    }
    Ok(Rgba(c))
}

/// Largest side accepted by any size argument; the real cap is `Limits::max_output_dimension`.
pub(super) const MAX_SIDE: u32 = 1_000_000;
