//! Resampling: resize with fit modes and thumbnails, on SIMD convolution (fast_image_resize).

use crate::op::{Filter, Fit};
use crate::{Channels, Error, Raster};
use fast_image_resize as fir;

/// Output size of a resize of a `sw x sh` source. `width` or `height` 0 keeps the aspect.
pub fn resize_dims(sw: u32, sh: u32, width: u32, height: u32, fit: Fit) -> (u64, u64) {
    let (sw, sh) = (sw as f64, sh as f64);
    let scaled = |s: f64| ((sw * s).round().max(1.0) as u64, (sh * s).round().max(1.0) as u64);
    let (w, h) = (f64::from(width), f64::from(height));
    let enlarge_ok = fit != Fit::Inside;
    let cap = |s: f64| if enlarge_ok { s } else { s.min(1.0) };
    if width == 0 {
        return scaled(cap(h / sh));
    }
    if height == 0 {
        return scaled(cap(w / sw));
    }
    match fit {
        Fit::Fill | Fit::Cover => (u64::from(width), u64::from(height)),
        Fit::Contain | Fit::Inside => scaled(cap((w / sw).min(h / sh))),
    }
}

/// Output size of `thumbnail:size`: longest side at most `size`, never enlarged.
pub fn thumbnail_dims(sw: u32, sh: u32, size: u32) -> (u64, u64) {
    if sw.max(sh) <= size {
        return (u64::from(sw), u64::from(sh));
    }
    let s = f64::from(size) / f64::from(sw.max(sh));
    ((f64::from(sw) * s).round().max(1.0) as u64, (f64::from(sh) * s).round().max(1.0) as u64)
}

/// The size the *whole* source is scaled to by a resize (for `cover` it is larger than the
/// output, which is then cut from it). Shrink-on-load must not go below this.
pub fn source_scale_dims(sw: u32, sh: u32, width: u32, height: u32, fit: Fit) -> (u64, u64) {
    if fit == Fit::Cover && width > 0 && height > 0 {
        let s = (f64::from(width) / f64::from(sw)).max(f64::from(height) / f64::from(sh));
        return ((f64::from(sw) * s).ceil() as u64, (f64::from(sh) * s).ceil() as u64);
    }
    resize_dims(sw, sh, width, height, fit)
}

fn alg(filter: Filter) -> fir::ResizeAlg {
    use fir::FilterType as F;
    match filter {
        Filter::Nearest => fir::ResizeAlg::Nearest,
        Filter::Box => fir::ResizeAlg::Convolution(F::Box),
        Filter::Bilinear => fir::ResizeAlg::Convolution(F::Bilinear),
        Filter::Hamming => fir::ResizeAlg::Convolution(F::Hamming),
        Filter::CatmullRom => fir::ResizeAlg::Convolution(F::CatmullRom),
        Filter::Mitchell => fir::ResizeAlg::Convolution(F::Mitchell),
        Filter::Lanczos3 => fir::ResizeAlg::Convolution(F::Lanczos3),
    }
}

fn pixel_type(c: Channels) -> fir::PixelType {
    match c {
        Channels::Gray => fir::PixelType::U8,
        Channels::GrayAlpha => fir::PixelType::U8x2,
        Channels::Rgb => fir::PixelType::U8x3,
        Channels::Rgba => fir::PixelType::U8x4,
    }
}

/// A reusable resizer: keeps its scratch buffers between images, so a worker thread that
/// holds one does not reallocate them per job, and the processor's pool of pixel buffers
/// (the decoder takes from it too).
#[derive(Default)]
pub struct Resizer {
    inner: fir::Resizer,
    pub(crate) pool: crate::raster::Pool,
}

impl std::fmt::Debug for Resizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resizer").finish_non_exhaustive()
    }
}

impl Resizer {
    /// A new resizer (CPU extensions detected at run time).
    pub fn new() -> Resizer {
        Resizer::default()
    }

    /// Resamples `src` to exactly `width x height`. With `cover`, the source is cropped
    /// (centred, sub-pixel exact) to the output's aspect ratio first.
    pub fn resize(
        &mut self,
        src: &Raster,
        width: u32,
        height: u32,
        filter: Filter,
        cover: bool,
    ) -> Result<Raster, Error> {
        if (width, height) == (src.width(), src.height()) {
            return Ok(src.clone());
        }
        let pt = pixel_type(src.channels());
        let data = self.plane(src.data(), src.width(), src.height(), width, height, pt, filter, cover)?;
        Raster::from_vec(width, height, src.channels(), data)
    }

    /// [`Resizer::resize`] of an image no longer needed afterwards; with `keep`, its buffer
    /// is kept for the next image.
    pub fn resize_owned(
        &mut self,
        src: Raster,
        width: u32,
        height: u32,
        filter: Filter,
        cover: bool,
        keep: bool,
    ) -> Result<Raster, Error> {
        if (width, height) == (src.width(), src.height()) {
            return Ok(src);
        }
        let out = self.resize(&src, width, height, filter, cover);
        if keep {
            self.recycle(src);
        }
        out
    }

    /// Keeps the buffer of an image no longer needed, for a later decode or resample.
    pub(crate) fn recycle(&mut self, img: Raster) {
        self.pool.give(img.into_vec());
    }

    /// Resamples one packed plane of `pt` pixels.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn plane(
        &mut self,
        src: &[u8],
        sw: u32,
        sh: u32,
        width: u32,
        height: u32,
        pt: fir::PixelType,
        filter: Filter,
        cover: bool,
    ) -> Result<Vec<u8>, Error> {
        let internal = |e: &dyn std::fmt::Display| Error::Internal(format!("resize: {e}"));
        let src_img = fir::images::ImageRef::new(sw, sh, src, pt).map_err(|e| internal(&e))?;
        // Every output pixel is written, so a kept buffer needs no clearing.
        let buf = self.pool.take(width as usize * height as usize * pt.size());
        let mut dst = fir::images::Image::from_vec_u8(width, height, buf, pt).map_err(|e| internal(&e))?;
        let mut opts = fir::ResizeOptions::new().resize_alg(alg(filter));
        if cover {
            opts = opts.fit_into_destination(None);
        }
        self.inner.resize(&src_img, &mut dst, &opts).map_err(|e| internal(&e))?;
        Ok(dst.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_for_every_fit() {
        assert_eq!(resize_dims(400, 300, 200, 0, Fit::Contain), (200, 150));
        assert_eq!(resize_dims(400, 300, 0, 600, Fit::Contain), (800, 600));
        assert_eq!(resize_dims(400, 300, 0, 600, Fit::Inside), (400, 300));
        assert_eq!(resize_dims(400, 300, 200, 200, Fit::Contain), (200, 150));
        assert_eq!(resize_dims(400, 300, 800, 800, Fit::Inside), (400, 300));
        assert_eq!(resize_dims(400, 300, 200, 200, Fit::Cover), (200, 200));
        assert_eq!(resize_dims(400, 300, 123, 45, Fit::Fill), (123, 45));
        assert_eq!(source_scale_dims(400, 300, 200, 200, Fit::Cover), (267, 200));
        assert_eq!(thumbnail_dims(4000, 3000, 1024), (1024, 768));
        assert_eq!(thumbnail_dims(300, 3000, 1024), (102, 1024));
        assert_eq!(thumbnail_dims(800, 600, 1024), (800, 600));
        assert_eq!(thumbnail_dims(10000, 1, 100), (100, 1));
    }

    #[test]
    fn resize_keeps_a_flat_colour_and_alpha() {
        let src = Raster::from_fn(64, 48, Channels::Rgba, |_, _, p| p.copy_from_slice(&[200, 100, 50, 255]));
        let mut r = Resizer::new();
        for f in [Filter::Nearest, Filter::Box, Filter::Bilinear, Filter::Mitchell, Filter::Lanczos3] {
            let out = r.resize(&src, 17, 13, f, false).unwrap();
            assert_eq!((out.width(), out.height()), (17, 13));
            assert!(out.data().chunks(4).all(|p| p == [200, 100, 50, 255]), "{f:?}");
        }
    }

    #[test]
    fn cover_crops_the_centre() {
        // Left third red, middle green, right third blue; a square cover keeps the green.
        let src = Raster::from_fn(300, 100, Channels::Rgb, |x, _, p| {
            p.copy_from_slice(match x / 100 {
                0 => &[255, 0, 0],
                1 => &[0, 255, 0],
                _ => &[0, 0, 255],
            })
        });
        let out = Resizer::new().resize(&src, 50, 50, Filter::Lanczos3, true).unwrap();
        assert!(out.data().chunks(3).all(|p| p[1] > 240 && p[0] < 15 && p[2] < 15));
    }
}
