//! Smart crop: the box of a target aspect ratio that holds what a person would look at, the
//! way libvips' `attention` crop finds it (its published method, our implementation).
//!
//! The image is averaged into a 32 x 32 grid of colours (through a copy box-reduced to at most
//! 256 pixels on the long side). In CIE Lab, each cell scores its edges (the Sobel gradient
//! of L, |gx| + |gy|), plus 255 when it looks like skin (a in 3..=22, b in 4..=31, L >= 15)
//! and 255 when it is strongly coloured (chroma over 60). The scores are blurred with a
//! Gaussian about a sixth of the crop's diagonal wide, so the peak is where the most
//! attention gathers at the crop's scale; the crop is centred on it, inside the image. Flat
//! images crop in the middle.

use crate::op::Gravity;
use crate::ops::geometry::{Rect, aspect_box};
use crate::{Channels, Raster};

const WORK_SIDE: u32 = 256;
const GRID: usize = 32;

/// The RGB copy, box-reduced by an integer factor `f`: (pixels, width, height).
fn reduce(src: &Raster, f: u32) -> (Vec<[f32; 3]>, u32, u32) {
    let (w, h) = (src.width(), src.height());
    let (lw, lh) = (w / f, h / f);
    let n = src.channels().count();
    let grey = matches!(src.channels(), Channels::Gray | Channels::GrayAlpha);
    let data = src.data();
    let mut out = Vec::with_capacity((lw * lh) as usize);
    for y in 0..lh {
        for x in 0..lw {
            let mut s = [0u32; 3];
            for yy in 0..f {
                let row = ((y * f + yy) * w) as usize;
                for xx in 0..f {
                    let p = &data[(row + (x * f + xx) as usize) * n..];
                    if grey {
                        s.iter_mut().for_each(|c| *c += u32::from(p[0]));
                    } else {
                        (0..3).for_each(|c| s[c] += u32::from(p[c]));
                    }
                }
            }
            let d = (f * f) as f32;
            out.push([s[0] as f32 / d, s[1] as f32 / d, s[2] as f32 / d]);
        }
    }
    (out, lw, lh)
}

/// sRGB (0..255) to CIE Lab, D65.
fn lab(p: [f32; 3]) -> [f32; 3] {
    let lin = |v: f32| {
        let c = v / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (lin(p[0]), lin(p[1]), lin(p[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.950_47;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.088_83;
    let f = |t: f32| if t > 0.008_856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// Attention of each pixel of the reduced copy.
fn attention(px: &[[f32; 3]], w: usize, h: usize) -> Vec<f32> {
    let labs: Vec<[f32; 3]> = px.iter().map(|p| lab(*p)).collect();
    let l = |x: usize, y: usize| labs[y * w + x][0];
    let mut map = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (xm, xp, ym, yp) = (x.saturating_sub(1), (x + 1).min(w - 1), y.saturating_sub(1), (y + 1).min(h - 1));
            let gx = l(xp, ym) + 2.0 * l(xp, y) + l(xp, yp) - l(xm, ym) - 2.0 * l(xm, y) - l(xm, yp);
            let gy = l(xm, yp) + 2.0 * l(x, yp) + l(xp, yp) - l(xm, ym) - 2.0 * l(x, ym) - l(xp, ym);
            let [lv, a, b] = labs[y * w + x];
            let skin = (3.0..=22.0).contains(&a) && (4.0..=31.0).contains(&b) && lv >= 15.0;
            let coloured = (a * a + b * b).sqrt() > 60.0;
            map[y * w + x] = gx.abs() + gy.abs() + if skin { 255.0 } else { 0.0 } + if coloured { 255.0 } else { 0.0 };
        }
    }
    map
}

/// A separable Gaussian blur of a `GRID x GRID` map (edges extended).
fn blur(grid: &[f32], sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let norm: f32 = k.iter().sum();
    let at = |i: isize| i.clamp(0, GRID as isize - 1) as usize;
    let mut tmp = vec![0f32; GRID * GRID];
    for y in 0..GRID {
        for x in 0..GRID {
            tmp[y * GRID + x] =
                (-r..=r).map(|i| grid[y * GRID + at(x as isize + i)] * k[(i + r) as usize]).sum::<f32>() / norm;
        }
    }
    let mut out = vec![0f32; GRID * GRID];
    for y in 0..GRID {
        for x in 0..GRID {
            out[y * GRID + x] =
                (-r..=r).map(|i| tmp[at(y as isize + i) * GRID + x] * k[(i + r) as usize]).sum::<f32>() / norm;
        }
    }
    out
}

/// The box (in `src` pixels) of aspect `aw:ah` centred on the image's attention peak.
pub fn smart_box(src: &Raster, aw: u32, ah: u32) -> Rect {
    let (w, h) = (src.width(), src.height());
    let full = aspect_box(w, h, aw, ah, Gravity::Center);
    if full.width == w && full.height == h {
        return full;
    }
    let f = w.max(h).div_ceil(WORK_SIDE).max(1);
    let (px, lw, lh) = reduce(src, f);
    let (lw, lh) = (lw as usize, lh as usize);
    if lw < GRID || lh < GRID {
        return full;
    }
    // The copy averaged into the grid first (cell (i, j) covers reduced pixels
    // [i*lw/GRID, (i+1)*lw/GRID)), so the cues see shapes at the crop's scale rather than
    // fine texture; then the attention of each cell.
    let mut cells = vec![[0f32; 3]; GRID * GRID];
    for j in 0..GRID {
        let (y0, y1) = (j * lh / GRID, (j + 1) * lh / GRID);
        for i in 0..GRID {
            let (x0, x1) = (i * lw / GRID, (i + 1) * lw / GRID);
            let n = ((y1 - y0) * (x1 - x0)).max(1) as f32;
            let mut sum = [0f32; 3];
            for p in (y0..y1).flat_map(|y| px[y * lw + x0..y * lw + x1].iter()) {
                (0..3).for_each(|c| sum[c] += p[c]);
            }
            cells[j * GRID + i] = sum.map(|v| v / n);
        }
    }
    let grid = attention(&cells, GRID, GRID);
    let (cw, ch) = (full.width as f32 * GRID as f32 / w as f32, full.height as f32 * GRID as f32 / h as f32);
    let blurred = blur(&grid, ((cw * cw + ch * ch).sqrt() / 6.0).max(0.5));
    // The peak; ties go to the cell nearest the centre.
    let c = (GRID as f32 - 1.0) / 2.0;
    let (mut best, mut best_v) = (None, f32::MIN);
    for (k, v) in blurred.iter().enumerate() {
        let d = ((k % GRID) as f32 - c).abs() + ((k / GRID) as f32 - c).abs();
        let v = v - d * 1e-4;
        if v > best_v {
            (best, best_v) = (Some(k), v);
        }
    }
    let lowest = blurred.iter().cloned().fold(f32::MAX, f32::min);
    if best_v - lowest < 1e-2 {
        return full;
    }
    let k = best.unwrap_or(GRID * GRID / 2 + GRID / 2);
    let cx = ((k % GRID) as f64 + 0.5) * f64::from(w) / GRID as f64;
    let cy = ((k / GRID) as f64 + 0.5) * f64::from(h) / GRID as f64;
    let place = |centre: f64, size: u32, total: u32| {
        (centre - f64::from(size) / 2.0).round().clamp(0.0, f64::from(total - size)) as u32
    };
    Rect { x: place(cx, full.width, w), y: place(cy, full.height, h), ..full }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_textured_region() {
        // Flat grey except a noisy patch on the right.
        let mut seed = 7u32;
        let src = Raster::from_fn(600, 200, Channels::Rgb, |x, _, p| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let v = if x >= 420 { (seed >> 16) as u8 } else { 128 };
            p.copy_from_slice(&[v, v, v]);
        });
        let b = smart_box(&src, 1, 1);
        assert_eq!((b.width, b.height, b.y), (200, 200, 0));
        assert!(b.x >= 380, "chose {b:?}");
    }

    #[test]
    fn skin_outweighs_a_textured_background() {
        // A fine grey texture on the left third; a smooth skin-toned disc low on the right.
        let src = Raster::from_fn(300, 600, Channels::Rgb, |x, y, p| {
            let (dx, dy) = (x as f32 - 200.0, y as f32 - 450.0);
            if dx * dx + dy * dy < 60.0 * 60.0 {
                p.copy_from_slice(&[224, 172, 140]);
            } else if x < 100 && (x / 3 + y / 3) % 2 == 0 {
                p.copy_from_slice(&[90, 90, 90]);
            } else {
                p.copy_from_slice(&[120, 120, 120]);
            }
        });
        let b = smart_box(&src, 1, 1);
        assert_eq!((b.width, b.height, b.x), (300, 300, 0));
        assert!(b.y <= 390 && b.y + 300 >= 510, "the disc (y 390-510) is in the box: {b:?}");
    }

    #[test]
    fn flat_images_crop_in_the_middle_and_same_aspect_returns_the_whole() {
        let flat = Raster::from_fn(500, 100, Channels::Rgb, |_, _, p| p.copy_from_slice(&[30, 90, 200]));
        assert_eq!(smart_box(&flat, 1, 1).x, 200);
        let src = Raster::new(300, 200, Channels::Gray);
        assert_eq!(smart_box(&src, 3, 2), Rect { x: 0, y: 0, width: 300, height: 200 });
    }
}
