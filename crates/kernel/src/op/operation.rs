//! What every pixel step defines beside its [`Spec`](super::Spec): its canonical form, the
//! size rule the plan uses before any pixel exists, and the pixels. Each step implements
//! [`Operation`] next to its spec, in its family's file (`resizing.rs`, `cropping.rs`,
//! `orienting.rs`, `tone.rs`, `filters.rs`); [`Op::operation`](super::Op::operation) is the
//! one match that dispatches to it.

use super::Op;
use crate::ops::resize::Resizer;
use crate::{Channels, Error, Limits, Raster, Rect, Stop};
use std::fmt;

/// One pixel-transforming step.
pub(crate) trait Operation {
    /// Writes the canonical form: every argument spelled out, so it parses back to an equal
    /// `Op` and equal pipelines hash alike (output keys depend on it: changing a spelling
    /// changes every key, so bump `KERNEL_VERSION`).
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// The size the decoder must deliver at least (oriented) when this is the first step of
    /// a pipeline on a `w x h` source and it only shrinks; `None` decodes at full size.
    fn shrink_need(&self, _w: u32, _h: u32) -> Option<(u64, u64)> {
        None
    }

    /// The output size, layout and scratch, from sizes alone. Refuses an output over the
    /// limits (`Sizing::check_out`) or a step that cannot apply (a crop off the image).
    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error>;

    /// The pixels: turns `img` into the image the plan described (`cx.want`).
    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error>;

    /// Whether the output size depends on the pixels (`trim`): the plan then counts the
    /// input's size for it, an upper bound, and the processor plans the steps after it
    /// again from the image it made (refusing the job if they would need more memory than
    /// the plan it was admitted on).
    fn content_sized(&self) -> bool {
        false
    }

    /// Rough time on one core per pixel of the step's input and output, nanoseconds: the
    /// plan's time estimate (routing sends what a function could not finish elsewhere).
    /// Most steps touch each pixel a few times; filters override it with their taps.
    fn ns_per_px(&self) -> f64 {
        2.0
    }
}

/// Time per pixel of a separable Gaussian of `sigma`: two passes of about 6 sigma taps on
/// three channels (measured: 1.5 ns per tap and pixel).
pub(crate) fn gaussian_ns_per_px(sigma: f32) -> f64 {
    2.0 * (6.0 * f64::from(sigma) + 1.0) * 1.5 + 2.0
}

/// What a step's size rule sees.
pub(crate) struct Sizing<'a> {
    /// The step (for error messages).
    pub op: &'a Op,
    /// The size the step's own rule is computed from: the declared (oriented) source for
    /// the first step, so shrink-on-load never changes output dimensions; else `w x h`.
    pub lw: u32,
    /// See `lw`.
    pub lh: u32,
    /// The image in hand (after shrink-on-load for the first step).
    pub w: u32,
    /// See `w`.
    pub h: u32,
    /// Its layout.
    pub ch: Channels,
    /// The limits in force.
    pub limits: &'a Limits,
}

impl Sizing<'_> {
    /// `(w, h)` as pixel sides, or `Error::OutputTooLarge` when either is 0 or over the
    /// limit's largest side.
    pub fn check_out(&self, w: u64, h: u64) -> Result<(u32, u32), Error> {
        let max = self.limits.max_output_dimension;
        if w > u64::from(max) || h > u64::from(max) || w == 0 || h == 0 {
            return Err(Error::OutputTooLarge { op: self.op.to_string(), width: w, height: h, max });
        }
        Ok((w as u32, h as u32))
    }

    /// An output of `w x h` in layout `ch` with no scratch, beside its input.
    pub fn shape(&self, w: u32, h: u32, ch: Channels) -> Shape {
        Shape { w, h, ch, scratch: 0, in_place: false }
    }
}

/// A step's output as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Layout.
    pub ch: Channels,
    /// Bytes of scratch besides the input and output images.
    pub scratch: u64,
    /// Works in the input's buffer (no output image beside it).
    pub in_place: bool,
}

impl Shape {
    /// This shape with `bytes` of scratch.
    pub fn with_scratch(self, bytes: u64) -> Shape {
        Shape { scratch: bytes, ..self }
    }

    /// This shape, computed in the input's buffer.
    pub fn in_place(self) -> Shape {
        Shape { in_place: true, ..self }
    }
}

/// What a step's pixels get besides the image.
pub(crate) struct Apply<'a> {
    /// The size the plan computed for this step's output.
    pub want: (u32, u32),
    /// The processor's reusable resampler.
    pub resizer: &'a mut Resizer,
    /// Where `smartcrop` reports the box it chose.
    pub smart: &'a mut Option<Rect>,
    /// The box `smartcrop` must use instead of looking for one: an animation's frames all
    /// take the box found on its first frame.
    pub pinned: Option<Rect>,
    /// Cancellation and time limit, for steps that loop over rows.
    pub stop: &'a Stop,
    /// Images steps lay on the picture (`watermark`), by name, as files.
    pub overlays: &'a crate::Overlays,
    /// Whether a step that resamples may keep the image it consumes in the resizer's pool
    /// for the next image (the plan says the rest of the job fits with it held).
    pub keep_source: bool,
}

/// Bytes of a `w x h` image in layout `c`.
pub(crate) fn bytes(w: u64, h: u64, c: Channels) -> u64 {
    w.saturating_mul(h).saturating_mul(c.count() as u64)
}

/// The resizer's scratch: one intermediate pass (destination width x source height, or the
/// other way round) plus its coefficient tables.
pub(crate) fn resize_scratch(sw: u32, sh: u32, dw: u32, dh: u32, c: Channels) -> u64 {
    let a = bytes(u64::from(dw), u64::from(sh), c);
    let b = bytes(u64::from(sw), u64::from(dh), c);
    a.max(b) + (u64::from(sw) + u64::from(sh) + u64::from(dw) + u64::from(dh)) * 64
}
