//! The kernel's error type. Every kernel error is permanent: the same bytes and pipeline give
//! the same error again, so a caller never needs to retry one. Two exceptions:
//! [`Error::Cancelled`] (the caller stopped the kernel itself, see [`crate::Stop`]) and
//! [`Error::Unavailable`] (a process the kernel reads HEIF files in could not be started).

use crate::Format;

/// Why a pipeline string (or one step of it) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step} '{text}': {reason}")]
pub struct ParseError {
    /// 1-based position of the offending step.
    pub step: usize,
    /// The step as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Everything that can go wrong in the kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is empty.
    #[error("input is empty (0 bytes)")]
    Empty,
    /// The input's first bytes match no supported image format.
    #[error("not a supported image (JPEG, PNG, WebP, GIF, TIFF, BMP): unrecognised leading bytes")]
    UnknownFormat,
    /// The input is larger than `Limits::max_input_bytes`.
    #[error("input is {size} bytes, over the limit of {max} bytes")]
    InputTooLarge {
        /// Input size.
        size: u64,
        /// Configured limit.
        max: u64,
    },
    /// The header declares more pixels than `Limits::max_pixels`.
    #[error("image is {width}x{height} ({pixels} pixels), over the limit of {max} pixels")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width * height.
        pixels: u64,
        /// Configured limit.
        max: u64,
    },
    /// The header declares a side longer than `Limits::max_dimension`.
    #[error("image is {width}x{height}, a side is over the limit of {max} pixels")]
    DimensionTooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Configured limit.
        max: u32,
    },
    /// An animation declares more frames, or more pixels over all its frames, than
    /// `Limits::max_frames` or `Limits::max_animation_pixels` allow.
    #[error("animation of {frames} frames ({pixels} pixels over all frames) is over the limit of {limit}")]
    AnimationTooLarge {
        /// Frames the file declares.
        frames: u32,
        /// Frames x canvas.
        pixels: u64,
        /// The limit it is over.
        limit: String,
    },
    /// An operation would produce an image with a side over `Limits::max_output_dimension`.
    #[error("step '{op}' would make a {width}x{height} image, a side is over the limit of {max}")]
    OutputTooLarge {
        /// The step, canonical form.
        op: String,
        /// Requested width.
        width: u64,
        /// Requested height.
        height: u64,
        /// Configured limit.
        max: u32,
    },
    /// The bytes claim a format but cannot be decoded (truncated, corrupt, unsupported variant).
    #[error("cannot decode {format} image: {reason}")]
    Decode {
        /// Format sniffed from the leading bytes.
        format: Format,
        /// Decoder's explanation.
        reason: String,
    },
    /// An operation cannot be applied to this image.
    #[error("step '{op}' failed: {reason}")]
    Op {
        /// The step, canonical form.
        op: String,
        /// Why.
        reason: String,
    },
    /// The encoder refused the image.
    #[error("cannot encode {format}: {reason}")]
    Encode {
        /// Output format.
        format: Format,
        /// Encoder's explanation.
        reason: String,
    },
    /// The pipeline string is malformed.
    #[error("bad pipeline: {0}")]
    Pipeline(#[from] ParseError),
    /// The pipeline's estimated peak memory is over the budget the caller allows.
    #[error("needs about {needed_mb} MB of memory ({detail}), over the budget of {budget_mb} MB")]
    OverBudget {
        /// Estimated peak, MB.
        needed_mb: u64,
        /// Budget, MB.
        budget_mb: u64,
        /// Which step needs it and at what size.
        detail: String,
    },
    /// The job ran past its time limit (stopped cooperatively).
    #[error("stopped after its time limit of {limit:?}")]
    TimedOut {
        /// The limit that was exceeded.
        limit: std::time::Duration,
    },
    /// The caller cancelled the work (shutdown); not a property of the input.
    #[error("cancelled")]
    Cancelled,
    /// Something the kernel needs from its environment is missing, not the input's fault:
    /// the process that reads a HEIF or AVIF file (`crate::isolation`) could not be
    /// started, or was killed from outside. Worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A broken invariant inside the kernel (a bug, reported instead of panicking).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// True for errors raised by a configured limit (size, pixels, dimensions).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Error::InputTooLarge { .. }
                | Error::TooManyPixels { .. }
                | Error::DimensionTooLarge { .. }
                | Error::AnimationTooLarge { .. }
                | Error::OutputTooLarge { .. }
                | Error::OverBudget { .. }
                | Error::TimedOut { .. }
        )
    }

    /// `frame:N` (step text `op`) past the end of an image of `frames` frames.
    pub(crate) fn too_few_frames(op: String, frames: u32) -> Error {
        let s = if frames == 1 { "" } else { "s" };
        Error::Op { op, reason: format!("the image has only {frames} frame{s}") }
    }
}
