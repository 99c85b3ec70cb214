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

/// Pixel buffers kept between images by a [`crate::Processor`], so one thread that runs many
/// jobs reuses its largest buffers instead of taking fresh pages from the system for every
/// image: a 20 MP photo decoded at 5/8 scale is 14 MB, and mapping it anew costs about 3,500
/// page faults, each zero-filled by the kernel. A buffer taken is handed out at the asked
/// length holding the bytes of the image it last held; every user overwrites all of them
/// (the JPEG decoder writes each scanline before it reports success, the resampler each
/// output pixel), and a failed decode drops its buffer rather than giving it back.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    bufs: Vec<Vec<u8>>,
}

impl Pool {
    /// At most this many buffers are kept...
    const MAX_BUFFERS: usize = 2;
    /// ...of at most this many bytes together: what an idle worker thread holds.
    const MAX_BYTES: usize = 64 << 20;

    /// A buffer of exactly `n` bytes: the smallest kept one that holds them (its old bytes
    /// left in place, for the caller to overwrite), else a new zeroed one.
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let fit = self.bufs.iter().enumerate().filter(|(_, b)| b.capacity() >= n).min_by_key(|(_, b)| b.capacity());
        match fit.map(|(i, _)| i) {
            Some(i) => {
                let mut b = self.bufs.swap_remove(i);
                if b.len() >= n {
                    b.truncate(n);
                } else {
                    b.resize(n, 0);
                }
                b
            }
            None => vec![0u8; n],
        }
    }

    /// A kept buffer of `n` bytes, if one holds them; never a new one.
    #[cfg_attr(not(feature = "turbojpeg"), allow(dead_code))]
    pub(crate) fn take_kept(&mut self, n: usize) -> Option<Vec<u8>> {
        self.bufs.iter().any(|b| b.capacity() >= n).then(|| self.take(n))
    }

    /// Keeps `buf` for a later [`Pool::take`] when it is among the largest seen and the
    /// pool stays within its bounds.
    pub(crate) fn give(&mut self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > Self::MAX_BYTES {
            return;
        }
        self.bufs.push(buf);
        self.bufs.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        self.bufs.truncate(Self::MAX_BUFFERS);
        while self.bufs.iter().map(Vec::capacity).sum::<usize>() > Self::MAX_BYTES {
            self.bufs.remove(0);
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.bufs.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod pool_tests {
    use super::Pool;

    #[test]
    fn a_buffer_given_back_is_taken_again_without_a_new_allocation() {
        let mut pool = Pool::default();
        let a = pool.take(1000);
        assert_eq!(a.len(), 1000);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(800);
        assert_eq!((b.len(), b.as_ptr()), (800, ptr), "the kept buffer, cut to the asked length");
        pool.give(b);
        // Grown back within its capacity: the same buffer again, the new tail zeroed.
        let c = pool.take(1000);
        assert_eq!((c.len(), c.as_ptr()), (1000, ptr));
        assert!(c[800..].iter().all(|&v| v == 0));
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn the_smallest_fitting_buffer_is_taken_and_a_larger_ask_gets_a_new_one() {
        let mut pool = Pool::default();
        let (big, small) = (vec![1u8; 4000], vec![2u8; 1000]);
        let ps = small.as_ptr();
        pool.give(big);
        pool.give(small);
        let small = pool.take(900);
        assert_eq!(small.as_ptr(), ps);
        // Nothing kept holds 5000 bytes: a new buffer, and the kept one stays.
        assert_eq!(pool.take(5000).len(), 5000);
        assert_eq!(pool.held(), 4000);
        pool.give(small);
        let again = pool.take(500);
        assert_eq!(again.as_ptr(), ps);
    }

    #[test]
    fn the_pool_keeps_two_buffers_and_a_bounded_total() {
        let mut pool = Pool::default();
        for n in [10usize, 30, 20] {
            pool.give(vec![0; n]);
        }
        assert_eq!(pool.held(), 50, "the two largest");
        pool.give(vec![0; Pool::MAX_BYTES + 1]);
        assert_eq!(pool.held(), 50, "a buffer over the bound is dropped");
        pool.give(vec![0; Pool::MAX_BYTES - 20]);
        assert!(pool.held() <= Pool::MAX_BYTES, "{}", pool.held());
    }
}
