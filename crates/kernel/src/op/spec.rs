//! The home of every pipeline step: its names, syntax, help, example, argument count and
//! ranges (its `parse`), and, below the table, its canonical form (`Display for Op`). The
//! pixels of each [`Op`] are computed in `Processor::apply` (lib.rs), the shrink-on-load and
//! size rules in `plan.rs`; ARCHITECTURE.md lists every place an added step touches.

use super::{Axis, Filter, Fit, Gravity, MAX_FRAME, Op, OutputSpec, Rgba};
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
    Spec {
        names: &["resize"],
        syntax: "resize:W:H[:fit[:filter]]",
        about: "resize; W or H 0 = keep aspect; fit contain|cover|fill|inside; filter nearest|box|bilinear|hamming|catmullrom|mitchell|lanczos3",
        example: "resize:800:600:cover",
        args: (2, 4),
        parse: |s, _| {
            let width = s.u32_in(0, "width", 0, MAX_SIDE)?;
            let height = s.u32_in(1, "height", 0, MAX_SIDE)?;
            if width == 0 && height == 0 {
                return Err(s.err("width and height cannot both be 0"));
            }
            let fit = if s.args.len() > 2 { s.choice(2, "fit", FITS)? } else { Fit::default() };
            let filter = if s.args.len() > 3 { s.choice(3, "filter", FILTERS)? } else { Filter::default() };
            if (width == 0 || height == 0) && matches!(fit, Fit::Cover | Fit::Fill) {
                return Err(s.err("fit cover and fill need both width and height"));
            }
            Ok(Parsed::Op(Op::Resize { width, height, fit, filter }))
        },
    },
    Spec {
        names: &["thumbnail", "thumb"],
        syntax: "thumbnail:N",
        about: "longest side at most N, never enlarges (Lanczos3, shrink-on-load for JPEG)",
        example: "thumbnail:1024",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Op(Op::Thumbnail { size: s.u32_in(0, "size", 1, MAX_SIDE)? })),
    },
    Spec {
        names: &["crop"],
        syntax: "crop:X:Y:W:H",
        about: "crop a box in pixels (clamped to the image)",
        example: "crop:10:10:400:300",
        args: (4, 4),
        parse: |s, _| {
            Ok(Parsed::Op(Op::Crop {
                x: s.u32_in(0, "x", 0, MAX_SIDE)?,
                y: s.u32_in(1, "y", 0, MAX_SIDE)?,
                width: s.u32_in(2, "width", 1, MAX_SIDE)?,
                height: s.u32_in(3, "height", 1, MAX_SIDE)?,
            }))
        },
    },
    Spec {
        names: &["aspect"],
        syntax: "aspect:W:H[:gravity]",
        about: "largest box of aspect W:H; gravity center|north|south|east|west|northeast|northwest|southeast|southwest",
        example: "aspect:16:9:north",
        args: (2, 3),
        parse: |s, _| {
            let gravity = if s.args.len() > 2 { s.choice(2, "gravity", GRAVITIES)? } else { Gravity::default() };
            Ok(Parsed::Op(Op::Aspect {
                width: s.u32_in(0, "ratio width", 1, 10_000)?,
                height: s.u32_in(1, "ratio height", 1, 10_000)?,
                gravity,
            }))
        },
    },
    Spec {
        names: &["smartcrop"],
        syntax: "smartcrop:W:H",
        about: "crop the most detailed region of aspect W:H and resize to W x H",
        example: "smartcrop:300:300",
        args: (2, 2),
        parse: |s, _| {
            Ok(Parsed::Op(Op::SmartCrop {
                width: s.u32_in(0, "width", 1, MAX_SIDE)?,
                height: s.u32_in(1, "height", 1, MAX_SIDE)?,
            }))
        },
    },
    Spec {
        names: &["rotate"],
        syntax: "rotate:DEG[:rrggbb[aa]]",
        about: "rotate clockwise; 90/180/270 exact, other angles on a larger canvas",
        example: "rotate:15:ffffff",
        args: (1, 2),
        parse: |s, _| {
            let degrees = s.f32_in(0, "angle", -360.0, 360.0, false)?.rem_euclid(360.0);
            let background = if s.args.len() > 1 { parse_colour(s, 1)? } else { Rgba::default() };
            Ok(Parsed::Op(Op::Rotate { degrees, background }))
        },
    },
    Spec {
        names: &["flip"],
        syntax: "flip:h|v",
        about: "mirror horizontally or vertically",
        example: "flip:h",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Op(Op::Flip { axis: s.choice(0, "axis", AXES)? })),
    },
    Spec {
        names: &["grayscale", "greyscale", "gray", "grey"],
        syntax: "grayscale",
        about: "convert to luma (Rec. 601), alpha kept",
        example: "grayscale",
        args: (0, 0),
        parse: |_, _| Ok(Parsed::Op(Op::Grayscale)),
    },
    Spec {
        names: &["blur"],
        syntax: "blur:SIGMA",
        about: "Gaussian blur, 0 < sigma <= 100",
        example: "blur:2",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Op(Op::Blur { sigma: s.f32_in(0, "sigma", 0.0, 100.0, true)? })),
    },
    Spec {
        names: &["sharpen"],
        syntax: "sharpen:SIGMA[:AMOUNT]",
        about: "unsharp mask, amount defaults to 1",
        example: "sharpen:1:0.8",
        args: (1, 2),
        parse: |s, _| {
            let sigma = s.f32_in(0, "sigma", 0.0, 100.0, true)?;
            let amount = if s.args.len() > 1 { s.f32_in(1, "amount", 0.0, 10.0, true)? } else { 1.0 };
            Ok(Parsed::Op(Op::Sharpen { sigma, amount }))
        },
    },
    Spec {
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
            Ok(Parsed::Op(Op::Brightness { amount: v as i16 }))
        },
    },
    Spec {
        names: &["contrast"],
        syntax: "contrast:F",
        about: "scale around mid-grey by F (0..10)",
        example: "contrast:1.2",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Op(Op::Contrast { factor: s.f32_in(0, "factor", 0.0, 10.0, false)? })),
    },
    Spec {
        names: &["gamma"],
        syntax: "gamma:G",
        about: "gamma correction, 0.1..10",
        example: "gamma:2.2",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Op(Op::Gamma { gamma: s.f32_in(0, "gamma", 0.1, 10.0, false)? })),
    },
    Spec {
        names: &["invert", "negate"],
        syntax: "invert",
        about: "negative",
        example: "invert",
        args: (0, 0),
        parse: |_, _| Ok(Parsed::Op(Op::Invert)),
    },
    Spec {
        names: &["sobel", "edges"],
        syntax: "sobel | edges",
        about: "Sobel gradient magnitude (one channel)",
        example: "sobel",
        args: (0, 0),
        parse: |_, _| Ok(Parsed::Op(Op::Sobel)),
    },
    Spec {
        names: &["threshold"],
        syntax: "threshold:N",
        about: "luma >= N white, else black",
        example: "threshold:128",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Op(Op::Threshold { level: s.u32_in(0, "level", 0, 255)? as u8 })),
    },
    Spec {
        names: &["format"],
        syntax: "format:F",
        about: "output format jpeg|png|webp|gif|tiff|bmp (default: the input's); webp is lossy",
        example: "format:webp",
        args: (1, 1),
        parse: |s, out| {
            out.format = Some(s.args[0].trim().parse().map_err(|e: String| s.err(e))?);
            Ok(Parsed::Output)
        },
    },
    Spec {
        names: &["quality"],
        syntax: "quality:Q",
        about: "JPEG quality 1..100 (default 85), lossy WebP quality (default 80)",
        example: "quality:80",
        args: (1, 1),
        parse: |s, out| {
            out.quality = Some(s.u32_in(0, "quality", 1, 100)? as u8);
            Ok(Parsed::Output)
        },
    },
    Spec {
        names: &["lossless"],
        syntax: "lossless",
        about: "lossless WebP (with format:webp)",
        example: "format:webp,lossless",
        args: (0, 0),
        parse: |_, out| {
            out.lossless = true;
            Ok(Parsed::Output)
        },
    },
    Spec {
        names: &["progressive"],
        syntax: "progressive",
        about: "progressive JPEG",
        example: "progressive",
        args: (0, 0),
        parse: |_, out| {
            out.progressive = true;
            Ok(Parsed::Output)
        },
    },
    Spec {
        names: &["compression"],
        syntax: "compression:L",
        about: "PNG zlib level 0..9 (default 6)",
        example: "compression:9",
        args: (1, 1),
        parse: |s, out| {
            out.compression = Some(s.u32_in(0, "level", 0, 9)? as u8);
            Ok(Parsed::Output)
        },
    },
    Spec {
        names: &["frame"],
        syntax: "frame:N",
        about: "decode frame N (0-based) of an animated GIF/WebP instead of the first",
        example: "frame:3",
        args: (1, 1),
        parse: |s, _| Ok(Parsed::Frame(s.u32_in(0, "frame", 0, MAX_FRAME)?)),
    },
];

/// The canonical form of each step: every argument spelled out, so it parses back to an
/// equal `Op` and equal pipelines hash alike (output keys depend on it: changing a spelling
/// here changes every key; bump `KERNEL_VERSION`).
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
