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

mod cropping;
mod filters;
pub(crate) mod operation;
mod orienting;
mod output;
mod resizing;
mod spec;
mod tone;

pub mod variants;
pub use cropping::{
    Aspect, Crop, Pad, Trim, WATERMARK_MAX_BYTES, WATERMARK_MAX_NAME, WATERMARK_MAX_PIXELS, Watermark,
    check_watermark_name,
};
pub use filters::{Blur, Pixelate, Sharpen};
pub(crate) use operation::Operation;
pub use orienting::{Flip, Rotate};
pub use resizing::{Resize, SmartCrop, Thumbnail};
use spec::{Parsed, Step};
pub use spec::{STEPS, Spec};
pub use tone::{Brightness, Contrast, Gamma, Saturation, Threshold};

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

/// One pixel-transforming step. Each variant's type is the step's home: its spec, canonical
/// form, size rule and pixels sit together in its family's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `resize:W:H[:fit[:filter]]`.
    Resize(Resize),
    /// `thumbnail:N`.
    Thumbnail(Thumbnail),
    /// `crop:X:Y:W:H`.
    Crop(Crop),
    /// `aspect:W:H[:gravity]`.
    Aspect(Aspect),
    /// `smartcrop:W:H`.
    SmartCrop(SmartCrop),
    /// `rotate:DEG[:rrggbb[aa]]`.
    Rotate(Rotate),
    /// `flip:h|v`.
    Flip(Flip),
    /// `grayscale`: Rec. 601 luma, alpha kept.
    Grayscale,
    /// `blur:SIGMA`.
    Blur(Blur),
    /// `sharpen:SIGMA[:AMOUNT]`.
    Sharpen(Sharpen),
    /// `brightness:N`.
    Brightness(Brightness),
    /// `contrast:F`.
    Contrast(Contrast),
    /// `gamma:G`.
    Gamma(Gamma),
    /// `invert`: negative of the colour channels.
    Invert,
    /// `sobel` (alias `edges`): Sobel gradient magnitude of the luma, one channel.
    Sobel,
    /// `threshold:N`.
    Threshold(Threshold),
    /// `saturation:F`.
    Saturation(Saturation),
    /// `pixelate:N`.
    Pixelate(Pixelate),
    /// `trim[:T]`.
    Trim(Trim),
    /// `watermark:NAME[:gravity[:opacity[:scale]]]`.
    Watermark(Watermark),
    /// `pad:T:R:B:L[:rrggbb[aa]]`.
    Pad(Pad),
}

impl Op {
    /// The step's implementation: the one dispatch from the enum to the step's home.
    pub(crate) fn operation(&self) -> &dyn Operation {
        match self {
            Op::Resize(s) => s,
            Op::Thumbnail(s) => s,
            Op::Crop(s) => s,
            Op::Aspect(s) => s,
            Op::SmartCrop(s) => s,
            Op::Rotate(s) => s,
            Op::Flip(s) => s,
            Op::Grayscale => &tone::Grayscale,
            Op::Blur(s) => s,
            Op::Sharpen(s) => s,
            Op::Brightness(s) => s,
            Op::Contrast(s) => s,
            Op::Gamma(s) => s,
            Op::Invert => &tone::Invert,
            Op::Sobel => &filters::Sobel,
            Op::Threshold(s) => s,
            Op::Saturation(s) => s,
            Op::Pixelate(s) => s,
            Op::Trim(s) => s,
            Op::Watermark(s) => s,
            Op::Pad(s) => s,
        }
    }
}

/// The canonical form of the step (see [`Pipeline::canonical`]).
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.operation().canonical(f)
    }
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
    /// Keep the input's ICC profile (and its colours as they are) instead of converting to
    /// sRGB and dropping it.
    pub keep_icc: bool,
    /// Largest output in bytes for JPEG and lossy WebP: the highest quality (up to `quality`)
    /// whose file fits; the smallest file (quality 1) when none does.
    pub max_bytes: Option<u32>,
    /// AVIF encoder speed 1 (smallest file, slowest) ..= 10 (fastest); `None`: 6.
    pub speed: Option<u8>,
}

impl OutputSpec {
    /// Default JPEG quality.
    pub const DEFAULT_QUALITY: u8 = 85;
    /// Default PNG zlib level.
    pub const DEFAULT_COMPRESSION: u8 = 6;
    /// Default lossy WebP quality.
    pub const DEFAULT_WEBP_QUALITY: u8 = 80;
    /// Default AVIF quality (ravif's 0-100 scale).
    pub const DEFAULT_AVIF_QUALITY: u8 = 60;
    /// Default AVIF encoder speed: a queue worker's trade of file size for time.
    pub const DEFAULT_AVIF_SPEED: u8 = 6;

    /// The quality used when none is given, for a lossy format.
    pub fn default_quality(format: Format) -> u8 {
        match format {
            Format::Webp => Self::DEFAULT_WEBP_QUALITY,
            Format::Avif => Self::DEFAULT_AVIF_QUALITY,
            _ => Self::DEFAULT_QUALITY,
        }
    }
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

impl Pipeline {
    /// Parses a pipeline string. An empty string is the identity pipeline (re-encode only).
    /// Each step is looked up in [`STEPS`] and read by its own [`Spec::parse`]; the rules
    /// across steps (output settings once each, at most [`MAX_STEPS`], `lossless` with WebP)
    /// are checked here.
    pub fn parse(s: &str) -> Result<Pipeline, ParseError> {
        let mut p = Pipeline::default();
        let mut seen_output: Vec<&'static str> = Vec::new();
        let mut lossless_step: Option<(usize, String)> = None;
        let mut max_bytes_step: Option<(usize, String)> = None;
        let mut speed_step: Option<(usize, String)> = None;
        let mut keep_icc_step: Option<(usize, String)> = None;
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
            let spec = spec::find(step.name)
                .ok_or_else(|| step.err(format!("unknown step '{}' (run `pixq ops` for the list)", step.name)))?;
            step.arity(spec.args.0, spec.args.1)?;
            match (spec.parse)(&step, &mut p.output)? {
                Parsed::Op(op) => {
                    if p.ops.len() == MAX_STEPS {
                        return Err(step.err(format!("a pipeline has at most {MAX_STEPS} steps")));
                    }
                    p.ops.push(op);
                }
                Parsed::Output => {
                    if seen_output.contains(&spec.name()) {
                        return Err(step.err(format!("'{}' given twice", step.name)));
                    }
                    seen_output.push(spec.name());
                    if spec.name() == "lossless" {
                        lossless_step = Some((step.index, step.text.to_string()));
                    }
                    if spec.name() == "max-bytes" {
                        max_bytes_step = Some((step.index, step.text.to_string()));
                    }
                    if spec.name() == "speed" {
                        speed_step = Some((step.index, step.text.to_string()));
                    }
                    if spec.name() == "keep-icc" {
                        keep_icc_step = Some((step.index, step.text.to_string()));
                    }
                }
                Parsed::Frame(n) => {
                    if p.frame.replace(n).is_some() {
                        return Err(step.err(format!("'{}' given twice", step.name)));
                    }
                }
            }
        }
        if let Some((index, text)) = max_bytes_step {
            let lossy = match p.output.format {
                None | Some(Format::Jpeg) => true,
                Some(Format::Webp) => !p.output.lossless,
                Some(Format::Avif) => true,
                Some(_) => false,
            };
            if !lossy {
                return Err(ParseError {
                    step: index,
                    text,
                    reason: "max-bytes is for JPEG, lossy WebP and AVIF outputs (it lowers the quality)".into(),
                });
            }
        }
        if let Some((index, text)) = speed_step
            && p.output.format != Some(Format::Avif)
        {
            return Err(ParseError { step: index, text, reason: "speed is for AVIF: add format:avif".into() });
        }
        if let Some((index, text)) = keep_icc_step
            && p.output.format == Some(Format::Avif)
        {
            return Err(ParseError {
                step: index,
                text,
                reason: "keep-icc cannot go with format:avif (AVIF is written in sRGB, without a profile)".into(),
            });
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
        if o.keep_icc {
            parts.push("keep-icc".into());
        }
        if let Some(n) = o.max_bytes {
            parts.push(format!("max-bytes:{n}"));
        }
        if let Some(s) = o.speed {
            parts.push(format!("speed:{s}"));
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
        assert_eq!(p.ops, vec![Op::Thumbnail(Thumbnail { size: 1024 }), Op::Grayscale, Op::Blur(Blur { sigma: 2.0 })]);
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
        for twice in ["FORMAT:png,format:jpeg", "frame:1,invert,frame:2", "Quality:80,quality:80", "lossless,LOSSLESS"]
        {
            let e = Pipeline::parse(twice).unwrap_err();
            assert!(e.reason.contains("twice"), "{twice}: {e}");
        }
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
