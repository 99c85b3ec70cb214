//! The in-memory image every operation works on: 8 bits per channel, rows packed.

use crate::Error;

/// Channel layout of a [`Raster`]. Alpha, when present, is the last channel and is straight
/// (not premultiplied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channels {
    /// One luminance channel.
    Gray,
    /// Luminance and alpha.
    GrayAlpha,
    /// Red, green, blue.
    Rgb,
    /// Red, green, blue, alpha.
    Rgba,
}

impl Channels {
    /// Bytes per pixel.
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::GrayAlpha => 2,
            Channels::Rgb => 3,
            Channels::Rgba => 4,
        }
    }

    /// Whether the last channel is alpha.
    pub fn has_alpha(self) -> bool {
        matches!(self, Channels::GrayAlpha | Channels::Rgba)
    }

    /// Number of colour (non-alpha) channels.
    pub fn colour_count(self) -> usize {
        self.count() - usize::from(self.has_alpha())
    }

    /// The same layout with an alpha channel added.
    pub fn with_alpha(self) -> Channels {
        match self {
            Channels::Gray | Channels::GrayAlpha => Channels::GrayAlpha,
            Channels::Rgb | Channels::Rgba => Channels::Rgba,
        }
    }
}

/// An 8-bit image with packed rows (`stride == width * channels`).
///
/// Inputs with 16 bits per channel are reduced to 8 bits when decoded: every output format
/// pixq writes is 8-bit, and one sample type keeps each operation a single tight loop.
#[derive(Clone, PartialEq, Eq)]
pub struct Raster {
    width: u32,
    height: u32,
    channels: Channels,
    data: Vec<u8>,
}

impl std::fmt::Debug for Raster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raster")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Raster {
    /// A raster filled with zeros.
    pub fn new(width: u32, height: u32, channels: Channels) -> Raster {
        let len = width as usize * height as usize * channels.count();
        Raster { width, height, channels, data: vec![0; len] }
    }

    /// A raster over existing pixel bytes; fails when the length does not match.
    pub fn from_vec(width: u32, height: u32, channels: Channels, data: Vec<u8>) -> Result<Raster, Error> {
        let expected = width as usize * height as usize * channels.count();
        if data.len() != expected || width == 0 || height == 0 {
            return Err(Error::Internal(format!(
                "raster {width}x{height}x{} needs {expected} bytes, got {}",
                channels.count(),
                data.len()
            )));
        }
        Ok(Raster { width, height, channels, data })
    }

    /// A raster where every pixel is computed by `f(x, y, pixel)`; handy for tests.
    pub fn from_fn(width: u32, height: u32, channels: Channels, mut f: impl FnMut(u32, u32, &mut [u8])) -> Raster {
        let mut r = Raster::new(width, height, channels);
        let n = channels.count();
        for y in 0..height {
            for x in 0..width {
                let i = (y as usize * width as usize + x as usize) * n;
                f(x, y, &mut r.data[i..i + n]);
            }
        }
        r
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Channel layout.
    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// Bytes per row.
    pub fn stride(&self) -> usize {
        self.width as usize * self.channels.count()
    }

    /// All pixel bytes, row after row.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// All pixel bytes, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Gives the pixel bytes away.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    /// One row.
    pub fn row(&self, y: u32) -> &[u8] {
        let s = self.stride();
        &self.data[y as usize * s..(y as usize + 1) * s]
    }

    /// One pixel's channels.
    pub fn pixel(&self, x: u32, y: u32) -> &[u8] {
        let n = self.channels.count();
        let i = (y as usize * self.width as usize + x as usize) * n;
        &self.data[i..i + n]
    }

    /// Number of pixels.
    pub fn pixel_count(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}
