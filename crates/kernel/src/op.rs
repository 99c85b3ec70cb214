//! The `Op` model and the user-facing pipeline syntax.
//!
//! A pipeline string is comma-separated steps `name[:arg[:arg]]`, for example
//! `thumbnail:1024,grayscale,blur:2,format:webp`. Steps that transform pixels become [`Op`]s;
//! `format`, `quality`, `progressive` and `compression` set the [`OutputSpec`]. The canonical
//! form ([`Pipeline::canonical`]) spells every argument, so two pipelines that mean the same
//! thing hash the same, and it parses back to an equal pipeline.

use crate::{Format, ParseError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How `resize` fits the source into the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Keep the aspect ratio, fit inside the box (may enlarge).
    #[default]
    Contain,
    /// Keep the aspect ratio, cover the box, crop the overflow (centred).
    Cover,
    /// Stretch to exactly the box.
    Fill,
    /// Like `contain`, but never enlarge.
    Inside,
}

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Nearest neighbour.
    Nearest,
    /// Box (area average).
    Box,
    /// Bilinear (triangle).
    Bilinear,
    /// Hamming.
    Hamming,
    /// Catmull-Rom bicubic.
    CatmullRom,
    /// Mitchell-Netravali bicubic.
    Mitchell,
    /// Lanczos with 3 lobes: the default, sharpest for downscaling.
    #[default]
    Lanczos3,
}

/// Where a crop box sits when the image is larger than the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gravity {
    /// Centre.
    #[default]
    Center,
    /// Top edge, centred horizontally.
    North,
    /// Bottom edge.
    South,
    /// Right edge.
    East,
    /// Left edge.
    West,
    /// Top right.
    NorthEast,
    /// Top left.
    NorthWest,
    /// Bottom right.
    SouthEast,
    /// Bottom left.
    SouthWest,
}

/// Mirror axis for `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// Mirror left-right.
    Horizontal,
    /// Mirror top-bottom.
    Vertical,
}

/// An RGBA colour, written `rrggbb` or `rrggbbaa` in pipeline strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rgba(pub [u8; 4]);

impl Default for Rgba {
    fn default() -> Self {
        Rgba([0, 0, 0, 255])
    }
}

/// One pixel-transforming step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `resize:W:H[:fit[:filter]]`; `0` for W or H keeps the aspect ratio.
    Resize {
        /// Target width, 0 = derived from height.
        width: u32,
        /// Target height, 0 = derived from width.
        height: u32,
        /// Fit mode.
        #[serde(default)]
        fit: Fit,
        /// Resampling filter.
        #[serde(default)]
        filter: Filter,
    },
    /// `thumbnail:N`: longest side at most N, never enlarged, Lanczos3.
    Thumbnail {
        /// Longest side.
        size: u32,
    },
    /// `crop:X:Y:W:H`: a box in pixels (clamped to the image).
    Crop {
        /// Left.
        x: u32,
        /// Top.
        y: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// `aspect:W:H[:gravity]`: the largest box of that aspect ratio, placed by gravity.
    Aspect {
        /// Ratio numerator.
        width: u32,
        /// Ratio denominator.
        height: u32,
        /// Placement.
        #[serde(default)]
        gravity: Gravity,
    },
    /// `smartcrop:W:H`: the most interesting box of that aspect ratio, resized to W x H.
    SmartCrop {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
    },
    /// `rotate:DEG[:rrggbb[aa]]`: clockwise; 90/180/270 are exact, other angles are
    /// resampled onto a larger canvas filled with the background colour.
    Rotate {
        /// Clockwise angle in degrees.
        degrees: f32,
        /// Fill for uncovered corners.
        #[serde(default)]
        background: Rgba,
    },
    /// `flip:h` or `flip:v`.
    Flip {
        /// Mirror axis.
        axis: Axis,
    },
    /// `grayscale`: Rec. 601 luma, alpha kept.
    Grayscale,
    /// `blur:SIGMA`: Gaussian blur.
    Blur {
        /// Standard deviation in pixels.
        sigma: f32,
    },
    /// `sharpen:SIGMA[:AMOUNT]`: unsharp mask.
    Sharpen {
        /// Blur radius of the mask.
        sigma: f32,
        /// Strength (1 = add the full difference once).
        amount: f32,
    },
    /// `brightness:N`: add N (-255..=255) to every colour channel.
    Brightness {
        /// Offset.
        amount: i16,
    },
    /// `contrast:F`: scale around mid-grey by F (0..=10).
    Contrast {
        /// Factor.
        factor: f32,
    },
    /// `gamma:G`: out = in^(1/G) (0.1..=10).
    Gamma {
        /// Gamma.
        gamma: f32,
    },
    /// `invert`: negative of the colour channels.
    Invert,
    /// `sobel` (alias `edges`): Sobel gradient magnitude of the luma, one channel.
    Sobel,
    /// `threshold:N`: luma >= N becomes white, else black.
    Threshold {
        /// Level 0..=255.
        level: u8,
    },
}

/// How the result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputSpec {
    /// Output format; `None` keeps the input's.
    pub format: Option<Format>,
    /// JPEG quality 1..=100 (`None`: 85); lossy WebP quality (`None`: 80).
    pub quality: Option<u8>,
    /// Progressive JPEG.
    pub progressive: bool,
    /// PNG zlib level 0..=9; `None` means 6.
    pub compression: Option<u8>,
    /// Lossless WebP (WebP is lossy otherwise); only with `format:webp`.
    pub lossless: bool,
}

impl OutputSpec {
    /// Default JPEG quality.
    pub const DEFAULT_QUALITY: u8 = 85;
    /// Default PNG zlib level.
    pub const DEFAULT_COMPRESSION: u8 = 6;
    /// Default lossy WebP quality.
    pub const DEFAULT_WEBP_QUALITY: u8 = 80;
}

/// Parsed pipeline: operations in order plus output settings.
///
/// Deserialising one (from a queued job, say) runs the same checks as [`Pipeline::parse`]:
/// the value is re-read through its canonical string, so every range, combination and count
/// rule lives in the parser alone and a message cannot carry what the parser would refuse.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Pipeline {
    /// Steps, applied in order after EXIF orientation.
    pub ops: Vec<Op>,
    /// Output settings.
    #[serde(default)]
    pub output: OutputSpec,
    /// Frame of an animated GIF/WebP to decode (`frame:N`, 0-based); `None` = the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
}

/// Highest frame index `frame:N` accepts.
pub const MAX_FRAME: u32 = 10_000;

/// Most pixel-transforming steps one pipeline may have (output settings do not count). Time
/// is bounded separately by the caller's time limit; this keeps a pipeline readable and its
/// plan small.
pub const MAX_STEPS: usize = 32;

/// The wire shape of a [`Pipeline`] before validation.
#[derive(Deserialize)]
struct Unchecked {
    ops: Vec<Op>,
    #[serde(default)]
    output: OutputSpec,
    #[serde(default)]
    frame: Option<u32>,
}

impl TryFrom<Unchecked> for Pipeline {
    type Error = ParseError;
    fn try_from(u: Unchecked) -> Result<Pipeline, ParseError> {
        let raw = Pipeline { ops: u.ops, output: u.output, frame: u.frame };
        Pipeline::parse(&raw.canonical())
    }
}

/// One line of `pixq ops`: a step's syntax, meaning and an example.
#[derive(Debug, Clone, Copy)]
pub struct StepHelp {
    /// Syntax.
    pub syntax: &'static str,
    /// What it does.
    pub about: &'static str,
    /// A valid example.
    pub example: &'static str,
}

/// Every step the parser knows, for help screens.
pub const STEPS: &[StepHelp] = &[
    StepHelp {
        syntax: "resize:W:H[:fit[:filter]]",
        about: "resize; W or H 0 = keep aspect; fit contain|cover|fill|inside; filter nearest|box|bilinear|hamming|catmullrom|mitchell|lanczos3",
        example: "resize:800:600:cover",
    },
    StepHelp {
        syntax: "thumbnail:N",
        about: "longest side at most N, never enlarges (Lanczos3, shrink-on-load for JPEG)",
        example: "thumbnail:1024",
    },
    StepHelp {
        syntax: "crop:X:Y:W:H",
        about: "crop a box in pixels (clamped to the image)",
        example: "crop:10:10:400:300",
    },
    StepHelp {
        syntax: "aspect:W:H[:gravity]",
        about: "largest box of aspect W:H; gravity center|north|south|east|west|northeast|northwest|southeast|southwest",
        example: "aspect:16:9:north",
    },
    StepHelp {
        syntax: "smartcrop:W:H",
        about: "crop the most detailed region of aspect W:H and resize to W x H",
        example: "smartcrop:300:300",
    },
    StepHelp {
        syntax: "rotate:DEG[:rrggbb[aa]]",
        about: "rotate clockwise; 90/180/270 exact, other angles on a larger canvas",
        example: "rotate:15:ffffff",
    },
    StepHelp { syntax: "flip:h|v", about: "mirror horizontally or vertically", example: "flip:h" },
    StepHelp { syntax: "grayscale", about: "convert to luma (Rec. 601), alpha kept", example: "grayscale" },
    StepHelp { syntax: "blur:SIGMA", about: "Gaussian blur, 0 < sigma <= 100", example: "blur:2" },
    StepHelp {
        syntax: "sharpen:SIGMA[:AMOUNT]",
        about: "unsharp mask, amount defaults to 1",
        example: "sharpen:1:0.8",
    },
    StepHelp { syntax: "brightness:N", about: "add N (-255..255) to colour channels", example: "brightness:20" },
    StepHelp { syntax: "contrast:F", about: "scale around mid-grey by F (0..10)", example: "contrast:1.2" },
    StepHelp { syntax: "gamma:G", about: "gamma correction, 0.1..10", example: "gamma:2.2" },
    StepHelp { syntax: "invert", about: "negative", example: "invert" },
    StepHelp { syntax: "sobel | edges", about: "Sobel gradient magnitude (one channel)", example: "sobel" },
    StepHelp { syntax: "threshold:N", about: "luma >= N white, else black", example: "threshold:128" },
    StepHelp {
        syntax: "format:F",
        about: "output format jpeg|png|webp|gif|tiff|bmp (default: the input's); webp is lossy",
        example: "format:webp",
    },
    StepHelp {
        syntax: "quality:Q",
        about: "JPEG quality 1..100 (default 85), lossy WebP quality (default 80)",
        example: "quality:80",
    },
    StepHelp { syntax: "lossless", about: "lossless WebP (with format:webp)", example: "format:webp,lossless" },
    StepHelp { syntax: "progressive", about: "progressive JPEG", example: "progressive" },
    StepHelp { syntax: "compression:L", about: "PNG zlib level 0..9 (default 6)", example: "compression:9" },
    StepHelp {
        syntax: "frame:N",
        about: "decode frame N (0-based) of an animated GIF/WebP instead of the first",
        example: "frame:3",
    },
];

struct Step<'a> {
    index: usize,
    text: &'a str,
    name: &'a str,
    args: Vec<&'a str>,
}

impl Step<'_> {
    fn err(&self, reason: impl Into<String>) -> ParseError {
        ParseError { step: self.index, text: self.text.to_string(), reason: reason.into() }
    }

    fn arity(&self, min: usize, max: usize) -> Result<(), ParseError> {
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

    fn num<T: std::str::FromStr>(&self, i: usize, what: &str) -> Result<T, ParseError> {
        self.args[i]
            .trim()
            .parse::<T>()
            .map_err(|_| self.err(format!("{what} '{}' is not a valid number", self.args[i])))
    }

    fn u32_in(&self, i: usize, what: &str, lo: u32, hi: u32) -> Result<u32, ParseError> {
        let v: u32 = self.num(i, what)?;
        if v < lo || v > hi {
            return Err(self.err(format!("{what} must be in {lo}..={hi}, got {v}")));
        }
        Ok(v)
    }

    fn f32_in(&self, i: usize, what: &str, lo: f32, hi: f32, lo_exclusive: bool) -> Result<f32, ParseError> {
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

    fn choice<T: Copy>(&self, i: usize, what: &str, table: &[(&str, T)]) -> Result<T, ParseError> {
        let a = self.args[i].trim().to_ascii_lowercase();
        table.iter().find(|(n, _)| *n == a).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            self.err(format!("unknown {what} '{}' (expected {})", self.args[i], names.join(", ")))
        })
    }
}

const FITS: &[(&str, Fit)] =
    &[("contain", Fit::Contain), ("cover", Fit::Cover), ("fill", Fit::Fill), ("inside", Fit::Inside)];
const FILTERS: &[(&str, Filter)] = &[
    ("nearest", Filter::Nearest),
    ("box", Filter::Box),
    ("bilinear", Filter::Bilinear),
    ("hamming", Filter::Hamming),
    ("catmullrom", Filter::CatmullRom),
    ("mitchell", Filter::Mitchell),
    ("lanczos3", Filter::Lanczos3),
];
const GRAVITIES: &[(&str, Gravity)] = &[
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
const AXES: &[(&str, Axis)] = &[("h", Axis::Horizontal), ("v", Axis::Vertical)];

fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, t)| *t == v).map(|(n, _)| *n).unwrap_or("?")
}

fn parse_colour(step: &Step<'_>, i: usize) -> Result<Rgba, ParseError> {
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
const MAX_SIDE: u32 = 1_000_000;

impl Pipeline {
    /// Parses a pipeline string. An empty string is the identity pipeline (re-encode only).
    pub fn parse(s: &str) -> Result<Pipeline, ParseError> {
        let mut p = Pipeline::default();
        let mut seen_output: Vec<&str> = Vec::new();
        let mut lossless_step: Option<(usize, String)> = None;
        if s.trim().is_empty() {
            return Ok(p);
        }
        for (i, text) in s.split(',').enumerate() {
            let trimmed = text.trim();
            let mut parts = trimmed.split(':');
            let name = parts.next().unwrap_or_default().trim();
            let step = Step { index: i + 1, text: trimmed, name, args: parts.collect() };
            if step.name.is_empty() {
                return Err(step.err("empty step"));
            }
            let name = step.name.to_ascii_lowercase();
            if ["format", "quality", "progressive", "compression", "lossless", "frame"].contains(&name.as_str()) {
                if seen_output.contains(&step.name) {
                    return Err(step.err(format!("'{}' given twice", step.name)));
                }
                seen_output.push(step.name);
            }
            let op = match name.as_str() {
                "frame" => {
                    step.arity(1, 1)?;
                    p.frame = Some(step.u32_in(0, "frame", 0, MAX_FRAME)?);
                    continue;
                }
                "resize" => {
                    step.arity(2, 4)?;
                    let width = step.u32_in(0, "width", 0, MAX_SIDE)?;
                    let height = step.u32_in(1, "height", 0, MAX_SIDE)?;
                    if width == 0 && height == 0 {
                        return Err(step.err("width and height cannot both be 0"));
                    }
                    let fit = if step.args.len() > 2 { step.choice(2, "fit", FITS)? } else { Fit::default() };
                    let filter =
                        if step.args.len() > 3 { step.choice(3, "filter", FILTERS)? } else { Filter::default() };
                    if (width == 0 || height == 0) && matches!(fit, Fit::Cover | Fit::Fill) {
                        return Err(step.err("fit cover and fill need both width and height"));
                    }
                    Op::Resize { width, height, fit, filter }
                }
                "thumbnail" | "thumb" => {
                    step.arity(1, 1)?;
                    Op::Thumbnail { size: step.u32_in(0, "size", 1, MAX_SIDE)? }
                }
                "crop" => {
                    step.arity(4, 4)?;
                    Op::Crop {
                        x: step.u32_in(0, "x", 0, MAX_SIDE)?,
                        y: step.u32_in(1, "y", 0, MAX_SIDE)?,
                        width: step.u32_in(2, "width", 1, MAX_SIDE)?,
                        height: step.u32_in(3, "height", 1, MAX_SIDE)?,
                    }
                }
                "aspect" => {
                    step.arity(2, 3)?;
                    let gravity =
                        if step.args.len() > 2 { step.choice(2, "gravity", GRAVITIES)? } else { Gravity::default() };
                    Op::Aspect {
                        width: step.u32_in(0, "ratio width", 1, 10_000)?,
                        height: step.u32_in(1, "ratio height", 1, 10_000)?,
                        gravity,
                    }
                }
                "smartcrop" => {
                    step.arity(2, 2)?;
                    Op::SmartCrop {
                        width: step.u32_in(0, "width", 1, MAX_SIDE)?,
                        height: step.u32_in(1, "height", 1, MAX_SIDE)?,
                    }
                }
                "rotate" => {
                    step.arity(1, 2)?;
                    let mut degrees = step.f32_in(0, "angle", -360.0, 360.0, false)?;
                    degrees = degrees.rem_euclid(360.0);
                    let background = if step.args.len() > 1 { parse_colour(&step, 1)? } else { Rgba::default() };
                    Op::Rotate { degrees, background }
                }
                "flip" => {
                    step.arity(1, 1)?;
                    Op::Flip { axis: step.choice(0, "axis", AXES)? }
                }
                "grayscale" | "greyscale" | "gray" | "grey" => {
                    step.arity(0, 0)?;
                    Op::Grayscale
                }
                "blur" => {
                    step.arity(1, 1)?;
                    Op::Blur { sigma: step.f32_in(0, "sigma", 0.0, 100.0, true)? }
                }
                "sharpen" => {
                    step.arity(1, 2)?;
                    let sigma = step.f32_in(0, "sigma", 0.0, 100.0, true)?;
                    let amount = if step.args.len() > 1 { step.f32_in(1, "amount", 0.0, 10.0, true)? } else { 1.0 };
                    Op::Sharpen { sigma, amount }
                }
                "brightness" => {
                    step.arity(1, 1)?;
                    let v: i32 = step.num(0, "amount")?;
                    if !(-255..=255).contains(&v) {
                        return Err(step.err(format!("amount must be in -255..=255, got {v}")));
                    }
                    Op::Brightness { amount: v as i16 }
                }
                "contrast" => {
                    step.arity(1, 1)?;
                    Op::Contrast { factor: step.f32_in(0, "factor", 0.0, 10.0, false)? }
                }
                "gamma" => {
                    step.arity(1, 1)?;
                    let g = step.f32_in(0, "gamma", 0.1, 10.0, false)?;
                    Op::Gamma { gamma: g }
                }
                "invert" | "negate" => {
                    step.arity(0, 0)?;
                    Op::Invert
                }
                "sobel" | "edges" => {
                    step.arity(0, 0)?;
                    Op::Sobel
                }
                "threshold" => {
                    step.arity(1, 1)?;
                    Op::Threshold { level: step.u32_in(0, "level", 0, 255)? as u8 }
                }
                "format" => {
                    step.arity(1, 1)?;
                    p.output.format = Some(step.args[0].trim().parse().map_err(|e: String| step.err(e))?);
                    continue;
                }
                "quality" => {
                    step.arity(1, 1)?;
                    p.output.quality = Some(step.u32_in(0, "quality", 1, 100)? as u8);
                    continue;
                }
                "progressive" => {
                    step.arity(0, 0)?;
                    p.output.progressive = true;
                    continue;
                }
                "compression" => {
                    step.arity(1, 1)?;
                    p.output.compression = Some(step.u32_in(0, "level", 0, 9)? as u8);
                    continue;
                }
                "lossless" => {
                    step.arity(0, 0)?;
                    p.output.lossless = true;
                    lossless_step = Some((step.index, step.text.to_string()));
                    continue;
                }
                _ => return Err(step.err(format!("unknown step '{}' (run `pixq ops` for the list)", step.name))),
            };
            if p.ops.len() == MAX_STEPS {
                return Err(step.err(format!("a pipeline has at most {MAX_STEPS} steps")));
            }
            p.ops.push(op);
        }
        if let Some((index, text)) = lossless_step
            && p.output.format != Some(Format::Webp)
        {
            return Err(ParseError { step: index, text, reason: "lossless is for WebP: add format:webp".into() });
        }
        Ok(p)
    }

    /// The canonical string: every argument spelled out, output settings last in a fixed
    /// order. `Pipeline::parse(&p.canonical()) == Ok(p)` for every valid pipeline.
    pub fn canonical(&self) -> String {
        let mut parts: Vec<String> = self.frame.map(|f| format!("frame:{f}")).into_iter().collect();
        parts.extend(self.ops.iter().map(ToString::to_string));
        let o = &self.output;
        if let Some(f) = o.format {
            parts.push(format!("format:{f}"));
        }
        if let Some(q) = o.quality {
            parts.push(format!("quality:{q}"));
        }
        if o.progressive {
            parts.push("progressive".into());
        }
        if let Some(c) = o.compression {
            parts.push(format!("compression:{c}"));
        }
        if o.lossless {
            parts.push("lossless".into());
        }
        parts.join(",")
    }
}

impl std::str::FromStr for Pipeline {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pipeline::parse(s)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Resize { width, height, fit, filter } => {
                write!(f, "resize:{width}:{height}:{}:{}", name_of(FITS, fit), name_of(FILTERS, filter))
            }
            Op::Thumbnail { size } => write!(f, "thumbnail:{size}"),
            Op::Crop { x, y, width, height } => write!(f, "crop:{x}:{y}:{width}:{height}"),
            Op::Aspect { width, height, gravity } => {
                write!(f, "aspect:{width}:{height}:{}", name_of(GRAVITIES, gravity))
            }
            Op::SmartCrop { width, height } => write!(f, "smartcrop:{width}:{height}"),
            Op::Rotate { degrees, background: Rgba([r, g, b, a]) } => {
                write!(f, "rotate:{degrees}:{r:02x}{g:02x}{b:02x}{a:02x}")
            }
            Op::Flip { axis } => write!(f, "flip:{}", name_of(AXES, axis)),
            Op::Grayscale => f.write_str("grayscale"),
            Op::Blur { sigma } => write!(f, "blur:{sigma}"),
            Op::Sharpen { sigma, amount } => write!(f, "sharpen:{sigma}:{amount}"),
            Op::Brightness { amount } => write!(f, "brightness:{amount}"),
            Op::Contrast { factor } => write!(f, "contrast:{factor}"),
            Op::Gamma { gamma } => write!(f, "gamma:{gamma}"),
            Op::Invert => f.write_str("invert"),
            Op::Sobel => f.write_str("sobel"),
            Op::Threshold { level } => write!(f, "threshold:{level}"),
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_example_from_the_design() {
        let p = Pipeline::parse("thumbnail:1024,grayscale,blur:2,format:webp,quality:80").unwrap();
        assert_eq!(p.ops, vec![Op::Thumbnail { size: 1024 }, Op::Grayscale, Op::Blur { sigma: 2.0 }]);
        assert_eq!(p.output.format, Some(Format::Webp));
        assert_eq!(p.output.quality, Some(80));
        assert_eq!(p.canonical(), "thumbnail:1024,grayscale,blur:2,format:webp,quality:80");
    }

    #[test]
    fn errors_name_the_step_and_the_reason() {
        let e = Pipeline::parse("thumbnail:10,grayscale,blur:-1").unwrap_err();
        assert_eq!(e.to_string(), "step 3 'blur:-1': sigma must be > 0");
        let e = Pipeline::parse("grayscale,wobble:3").unwrap_err();
        assert_eq!(e.step, 2);
        assert!(e.reason.contains("unknown step 'wobble'"), "{e}");
        let e = Pipeline::parse("resize:10").unwrap_err();
        assert!(e.reason.contains("2 to 4 arguments"), "{e}");
        let e = Pipeline::parse("resize:10:10:squash").unwrap_err();
        assert!(e.reason.contains("unknown fit 'squash'"), "{e}");
        let e = Pipeline::parse("quality:0").unwrap_err();
        assert!(e.reason.contains("1..=100"), "{e}");
        let e = Pipeline::parse("thumbnail:abc").unwrap_err();
        assert!(e.reason.contains("not a valid number"), "{e}");
        let e = Pipeline::parse("grayscale,,invert").unwrap_err();
        assert_eq!((e.step, e.reason.as_str()), (2, "empty step"));
        let e = Pipeline::parse("format:png,format:jpeg").unwrap_err();
        assert!(e.reason.contains("twice"), "{e}");
        assert!(Pipeline::parse("rotate:90:zzzzzz").is_err());
        assert!(Pipeline::parse("resize:0:0").is_err());
        assert!(Pipeline::parse("resize:100:0:cover").is_err());
        assert!(Pipeline::parse("gamma:0").is_err());
        assert!(Pipeline::parse("blur:nan").is_err());
    }

    #[test]
    fn canonical_spells_defaults_and_aliases() {
        let p = Pipeline::parse(" resize:800:0 , greyscale,edges,rotate:-90,flip:h,progressive,compression:9").unwrap();
        assert_eq!(
            p.canonical(),
            "resize:800:0:contain:lanczos3,grayscale,sobel,rotate:270:000000ff,flip:h,progressive,compression:9"
        );
        assert_eq!(Pipeline::parse(&p.canonical()).unwrap(), p);
        assert_eq!(Pipeline::parse("").unwrap(), Pipeline::default());
    }

    #[test]
    fn deserialising_runs_the_parser_checks() {
        let bad = [
            (r#"{"ops":[{"op":"blur","sigma":1e10}]}"#, "sigma must be <= 100"),
            (r#"{"ops":[{"op":"blur","sigma":-1}]}"#, "sigma must be > 0"),
            (r#"{"ops":[{"op":"thumbnail","size":0}]}"#, "size must be in 1..=1000000"),
            (r#"{"ops":[{"op":"resize","width":0,"height":0}]}"#, "cannot both be 0"),
            (r#"{"ops":[{"op":"rotate","degrees":1e30}]}"#, "angle"),
            (r#"{"ops":[{"op":"brightness","amount":30000}]}"#, "-255..=255"),
            (r#"{"ops":[{"op":"aspect","width":0,"height":1}]}"#, "ratio width"),
            (r#"{"ops":[],"output":{"quality":0}}"#, "quality"),
            (r#"{"ops":[],"output":{"compression":12}}"#, "level"),
            (r#"{"ops":[],"output":{"lossless":true}}"#, "lossless is for WebP"),
            (r#"{"ops":[],"frame":4000000000}"#, "frame"),
        ];
        for (json, want) in bad {
            let e = serde_json::from_str::<Pipeline>(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let many = format!(r#"{{"ops":[{}]}}"#, vec![r#"{"op":"invert"}"#; MAX_STEPS + 1].join(","));
        assert!(serde_json::from_str::<Pipeline>(&many).unwrap_err().to_string().contains("at most 32 steps"));
        let ok = format!(r#"{{"ops":[{}]}}"#, vec![r#"{"op":"invert"}"#; MAX_STEPS].join(","));
        assert_eq!(serde_json::from_str::<Pipeline>(&ok).unwrap().ops.len(), MAX_STEPS);
        assert!(Pipeline::parse(&vec!["invert"; MAX_STEPS + 1].join(",")).is_err());
    }

    #[test]
    fn serde_json_round_trip() {
        let p = Pipeline::parse(
            "resize:300:200:cover:mitchell,sharpen:1:0.5,rotate:12.5:ffffff80,threshold:100,format:png",
        )
        .unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""op":"resize""#), "{json}");
        let back: Pipeline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
