//! Limits checked from the header, before any pixel is decoded.

use serde::{Deserialize, Serialize};

/// Resource limits for one image. A decompression bomb is refused from its header, so it
/// costs a header read and not the memory it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest accepted input, in bytes (checked before the header is even parsed).
    pub max_input_bytes: u64,
    /// Largest accepted width * height of the source. 120 MP: every current full-frame
    /// camera (61 MP: 9504x6336) and 100 MP medium format (11648x8736) fit; imgproxy's
    /// default of 50 MP refuses 50.3 MP cameras. Memory is bounded by the caller's budget
    /// over the plan's estimate, not by this limit alone.
    pub max_pixels: u64,
    /// Longest accepted side of the source.
    pub max_dimension: u32,
    /// Longest side any step may produce (stops `resize:100000:100000`).
    pub max_output_dimension: u32,
    /// Most frames of an animation processed as one (animated GIF or WebP output), and the
    /// highest frame `frame:N` may pick. 1,000: 40 s at 25 frames a second.
    pub max_frames: u32,
    /// Most pixels over all the frames of an animation processed as one (frames x canvas):
    /// the work of an animation grows with it, as a still's grows with `max_pixels`.
    /// 500 MP: 1,000 frames of 720x640, or 240 frames of 1920x1080 (imgproxy counts the
    /// same sum against its source resolution limit).
    pub max_animation_pixels: u64,
}

impl Limits {
    /// The default `max_input_bytes`: 100 MiB.
    pub const DEFAULT_MAX_INPUT_BYTES: u64 = 100 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: Limits::DEFAULT_MAX_INPUT_BYTES,
            max_pixels: 120_000_000,
            max_dimension: 50_000,
            max_output_dimension: 16_384,
            max_frames: 1_000,
            max_animation_pixels: 500_000_000,
        }
    }
}

impl Limits {
    /// Sets `max_input_bytes`.
    pub fn max_input_bytes(mut self, v: u64) -> Self {
        self.max_input_bytes = v;
        self
    }
    /// Sets `max_pixels`.
    pub fn max_pixels(mut self, v: u64) -> Self {
        self.max_pixels = v;
        self
    }
    /// Sets `max_dimension`.
    pub fn max_dimension(mut self, v: u32) -> Self {
        self.max_dimension = v;
        self
    }
    /// Sets `max_output_dimension`.
    pub fn max_output_dimension(mut self, v: u32) -> Self {
        self.max_output_dimension = v;
        self
    }

    /// Sets `max_frames`.
    pub fn max_frames(mut self, v: u32) -> Self {
        self.max_frames = v;
        self
    }
    /// Sets `max_animation_pixels`.
    pub fn max_animation_pixels(mut self, v: u64) -> Self {
        self.max_animation_pixels = v;
        self
    }

    /// Checks an animation of `frames` frames of `width` x `height` against the limits.
    pub fn check_animation(&self, frames: u32, width: u32, height: u32) -> Result<(), crate::Error> {
        let pixels = u64::from(frames) * u64::from(width) * u64::from(height);
        if frames > self.max_frames {
            return Err(crate::Error::AnimationTooLarge {
                frames,
                pixels,
                limit: format!("{} frames", self.max_frames),
            });
        }
        if pixels > self.max_animation_pixels {
            return Err(crate::Error::AnimationTooLarge {
                frames,
                pixels,
                limit: format!("{} pixels over all frames", self.max_animation_pixels),
            });
        }
        Ok(())
    }

    /// Checks declared dimensions against the limits.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), crate::Error> {
        if width > self.max_dimension || height > self.max_dimension {
            return Err(crate::Error::DimensionTooLarge { width, height, max: self.max_dimension });
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Err(crate::Error::TooManyPixels { width, height, pixels, max: self.max_pixels });
        }
        Ok(())
    }
}
