//! Convolution filters: separable Gaussian blur and the unsharp mask built on it.
//!
//! The blur runs in 16-bit fixed point (weights sum to 2^14), one row at a time, with the
//! inner loop over x so it vectorises. Borders repeat the edge pixel.

use crate::{Error, Raster, Stop};

const SHIFT: u32 = 14;

/// Integer Gaussian weights for `sigma`, radius ceil(3 sigma), summing to 2^SHIFT.
fn kernel(sigma: f32) -> Vec<u32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let w: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let d = i as f64 - radius as f64;
            (-(d * d) / (2.0 * f64::from(sigma) * f64::from(sigma))).exp()
        })
        .collect();
    let sum: f64 = w.iter().sum();
    let mut k: Vec<u32> = w.iter().map(|v| (v / sum * f64::from(1u32 << SHIFT)).round() as u32).collect();
    // Put the rounding error on the centre tap so flat areas stay exactly flat.
    let total: i64 = k.iter().map(|&v| i64::from(v)).sum();
    let fix = i64::from(1u32 << SHIFT) - total;
    k[radius] = (i64::from(k[radius]) + fix) as u32;
    k
}

/// Gaussian blur of every channel (alpha included: a blurred edge fades out).
pub fn blur(src: &Raster, sigma: f32, stop: &Stop) -> Result<Raster, Error> {
    let k = kernel(sigma);
    let r = k.len() / 2;
    let (w, h) = (src.width() as usize, src.height() as usize);
    let n = src.channels().count();
    let stride = w * n;

    // Horizontal pass into a temporary image.
    let mut tmp = vec![0u8; stride * h];
    let mut padded = vec![0u8; (w + 2 * r) * n];
    let mut acc = vec![0u32; stride];
    for y in 0..h {
        stop.check_row(y)?;
        let row = &src.data()[y * stride..(y + 1) * stride];
        for i in 0..r {
            padded[i * n..(i + 1) * n].copy_from_slice(&row[..n]);
            padded[(r + w + i) * n..(r + w + i + 1) * n].copy_from_slice(&row[stride - n..]);
        }
        padded[r * n..(r + w) * n].copy_from_slice(row);
        acc.iter_mut().for_each(|a| *a = 1 << (SHIFT - 1));
        for (t, &kw) in k.iter().enumerate() {
            let window = &padded[t * n..t * n + stride];
            for (a, &v) in acc.iter_mut().zip(window) {
                *a += kw * u32::from(v);
            }
        }
        for (o, &a) in tmp[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            *o = (a >> SHIFT) as u8;
        }
    }

    // Vertical pass: each output row is a weighted sum of 2r+1 rows of tmp.
    let mut out = vec![0u8; stride * h];
    for y in 0..h {
        stop.check_row(y)?;
        acc.iter_mut().for_each(|a| *a = 1 << (SHIFT - 1));
        for (t, &kw) in k.iter().enumerate() {
            let sy = (y + t).saturating_sub(r).min(h - 1);
            let srow = &tmp[sy * stride..(sy + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(srow) {
                *a += kw * u32::from(v);
            }
        }
        for (o, &a) in out[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            *o = (a >> SHIFT) as u8;
        }
    }
    Raster::from_vec(src.width(), src.height(), src.channels(), out)
}

/// Unsharp mask: `v + amount * (v - blur(v))`, colour channels only.
pub fn sharpen(src: &Raster, sigma: f32, amount: f32, stop: &Stop) -> Result<Raster, Error> {
    let blurred = blur(src, sigma, stop)?;
    let ch = src.channels();
    let (n, colour) = (ch.count(), ch.colour_count());
    let mut out = src.clone();
    let amt = (amount * 256.0).round() as i32;
    for (i, (o, &b)) in out.data_mut().iter_mut().zip(blurred.data()).enumerate() {
        if i % n < colour {
            let v = i32::from(*o);
            *o = (v + ((amt * (v - i32::from(b)) + 128) >> 8)).clamp(0, 255) as u8;
        }
    }
    Ok(out)
}

/// Pixelates: every `block x block` tile (the last row and column of tiles may be smaller)
/// becomes the mean of its pixels, alpha included. In place; checks `stop` every tile row.
pub fn pixelate(img: &mut Raster, block: u32, stop: &Stop) -> Result<(), Error> {
    let (w, h, n) = (img.width(), img.height(), img.channels().count());
    let block = block.max(1);
    let stride = img.stride();
    let data = img.data_mut();
    let mut sum = vec![0u32; n];
    for ty in (0..h).step_by(block as usize) {
        stop.check()?;
        let y1 = (ty + block).min(h);
        for tx in (0..w).step_by(block as usize) {
            let x1 = (tx + block).min(w);
            sum.iter_mut().for_each(|s| *s = 0);
            for y in ty..y1 {
                let row = &data[y as usize * stride..][tx as usize * n..x1 as usize * n];
                for p in row.chunks_exact(n) {
                    for (s, &v) in sum.iter_mut().zip(p) {
                        *s += u32::from(v);
                    }
                }
            }
            let count = (x1 - tx) * (y1 - ty);
            let mean: Vec<u8> = sum.iter().map(|&s| ((s + count / 2) / count) as u8).collect();
            for y in ty..y1 {
                let row = &mut data[y as usize * stride..][tx as usize * n..x1 as usize * n];
                for p in row.chunks_exact_mut(n) {
                    p.copy_from_slice(&mean);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Channels;

    #[test]
    fn kernel_sums_to_one_and_is_symmetric() {
        for s in [0.5, 1.0, 2.0, 7.3] {
            let k = kernel(s);
            assert_eq!(k.iter().sum::<u32>(), 1 << SHIFT);
            assert!(k.iter().eq(k.iter().rev()));
        }
    }

    #[test]
    fn blur_keeps_flat_images_flat_and_spreads_a_dot() {
        let flat = Raster::from_fn(20, 10, Channels::Rgb, |_, _, p| p.copy_from_slice(&[10, 128, 250]));
        assert_eq!(blur(&flat, 2.0, &Stop::new()).unwrap(), flat);
        let dot = Raster::from_fn(21, 21, Channels::Gray, |x, y, p| p[0] = if (x, y) == (10, 10) { 255 } else { 0 });
        let b = blur(&dot, 1.5, &Stop::new()).unwrap();
        assert!(b.pixel(10, 10)[0] < 255 && b.pixel(10, 10)[0] > 0);
        assert!(b.pixel(11, 10)[0] > 0);
        assert_eq!(b.pixel(11, 10), b.pixel(9, 10));
        assert_eq!(b.pixel(10, 11), b.pixel(10, 9));
        assert_eq!(b.pixel(0, 0)[0], 0);
    }

    #[test]
    fn a_cancelled_blur_stops() {
        let img = Raster::from_fn(64, 64, Channels::Gray, |x, _, p| p[0] = x as u8);
        let stop = Stop::new();
        stop.cancel();
        assert!(matches!(blur(&img, 3.0, &stop), Err(Error::Cancelled)));
        assert!(matches!(sharpen(&img, 3.0, 1.0, &stop), Err(Error::Cancelled)));
    }

    #[test]
    fn sharpen_increases_edge_contrast() {
        let edge = Raster::from_fn(20, 4, Channels::Gray, |x, _, p| p[0] = if x < 10 { 100 } else { 150 });
        let s = sharpen(&edge, 1.0, 1.0, &Stop::new()).unwrap();
        assert!(s.pixel(9, 0)[0] < 100);
        assert!(s.pixel(10, 0)[0] > 150);
        assert_eq!(s.pixel(0, 0)[0], 100);
    }

    #[test]
    fn pixelate_fills_each_tile_with_its_mean() {
        let mut img = Raster::from_fn(5, 3, Channels::Gray, |x, y, p| p[0] = (x * 10 + y) as u8);
        pixelate(&mut img, 2, &Stop::new()).unwrap();
        // Tile (0,0): x 0..2, y 0..2 -> values 0,10,1,11 -> mean 5.5 -> 6 (rounded half up).
        assert_eq!(img.pixel(0, 0)[0], 6);
        assert_eq!(img.pixel(1, 1)[0], 6);
        // The last column is a 1-wide tile: x 4, y 0..2 -> 40, 41 -> 41 (40.5 rounded).
        assert_eq!(img.pixel(4, 1)[0], 41);
        // The last row is a 1-high tile: x 2..4, y 2 -> 22, 32 -> 27.
        assert_eq!(img.pixel(3, 2)[0], 27);
        let mut one = Raster::from_fn(3, 3, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, 9]));
        let before = one.clone();
        pixelate(&mut one, 1, &Stop::new()).unwrap();
        assert_eq!(one, before);
    }
}
