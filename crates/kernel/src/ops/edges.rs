//! Edge detection: Sobel gradient magnitude.

use crate::ops::color::luma_plane;
use crate::{Channels, Error, Raster, Stop};

/// Sobel magnitude `sqrt(gx^2 + gy^2)` of the luma, clamped to 255, as a one-channel image.
/// Borders repeat the edge pixel.
pub fn sobel(src: &Raster, stop: &Stop) -> Result<Raster, Error> {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let l = luma_plane(src);
    let mut out = vec![0u8; w * h];
    let mut prev = vec![0i16; w + 2];
    let mut cur = vec![0i16; w + 2];
    let mut next = vec![0i16; w + 2];
    let load = |buf: &mut [i16], y: usize| {
        let row = &l[y * w..(y + 1) * w];
        for (b, &v) in buf[1..=w].iter_mut().zip(row) {
            *b = i16::from(v);
        }
        buf[0] = buf[1];
        buf[w + 1] = buf[w];
    };
    load(&mut prev, 0);
    load(&mut cur, 0);
    for y in 0..h {
        stop.check_row(y)?;
        load(&mut next, (y + 1).min(h - 1));
        let o = &mut out[y * w..(y + 1) * w];
        for x in 0..w {
            let (a, b, c) = (prev[x], prev[x + 1], prev[x + 2]);
            let (d, f) = (cur[x], cur[x + 2]);
            let (g, hh, i) = (next[x], next[x + 1], next[x + 2]);
            let gx = i32::from((c - a) + 2 * (f - d) + (i - g));
            let gy = i32::from((g - a) + 2 * (hh - b) + (i - c));
            let m = ((gx * gx + gy * gy) as f32).sqrt();
            o[x] = m.min(255.0) as u8;
        }
        std::mem::swap(&mut prev, &mut cur);
        std::mem::swap(&mut cur, &mut next);
    }
    Raster::from_vec(src.width(), src.height(), Channels::Gray, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_is_zero_and_a_step_is_bright() {
        let flat = Raster::from_fn(8, 8, Channels::Rgb, |_, _, p| p.copy_from_slice(&[90, 90, 90]));
        assert!(sobel(&flat, &Stop::new()).unwrap().data().iter().all(|&v| v == 0));
        let step = Raster::from_fn(8, 8, Channels::Gray, |x, _, p| p[0] = if x < 4 { 0 } else { 100 });
        let e = sobel(&step, &Stop::new()).unwrap();
        assert_eq!(e.channels(), Channels::Gray);
        assert_eq!(e.pixel(0, 4)[0], 0);
        assert_eq!(e.pixel(3, 4)[0], 255);
        assert_eq!(e.pixel(4, 4)[0], 255);
        assert_eq!(e.pixel(6, 4)[0], 0);
    }
}
