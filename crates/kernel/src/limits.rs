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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 100 * 1024 * 1024,
            max_pixels: 120_000_000,
            max_dimension: 50_000,
            max_output_dimension: 16_384,
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
