//! Smart crop: the most detailed box of a target aspect ratio, found by luma entropy.
//!
//! The luma is box-reduced to at most 256 pixels on the long side; the largest box of the
//! target aspect slides along the free axis one step at a time with an incremental
//! histogram, and the position with the highest Shannon entropy wins (flat sky and walls
//! score low, textured subjects high).

use crate::Raster;
use crate::op::Gravity;
use crate::ops::color::luma_plane;
use crate::ops::geometry::{Rect, aspect_box};

const WORK_SIDE: u32 = 256;

fn entropy(hist: &[u32; 256], total: u32) -> f64 {
    let t = f64::from(total);
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / t;
            -p * p.log2()
        })
        .sum()
}

/// The box (in `src` pixels) of aspect `aw:ah` with the most detail.
pub fn smart_box(src: &Raster, aw: u32, ah: u32) -> Rect {
    let (w, h) = (src.width(), src.height());
    let full = aspect_box(w, h, aw, ah, Gravity::Center);
    if full.width == w && full.height == h {
        return full;
    }
    // Box-reduce the luma by an integer factor.
    let f = w.max(h).div_ceil(WORK_SIDE).max(1);
    let (lw, lh) = (w / f, h / f);
    if lw < 2 || lh < 2 {
        return full;
    }
    let l = luma_plane(src);
    let mut small = vec![0u8; (lw * lh) as usize];
    for y in 0..lh {
        for x in 0..lw {
            let mut s = 0u32;
            for yy in 0..f {
                let row = ((y * f + yy) * w) as usize;
                for xx in 0..f {
                    s += u32::from(l[row + (x * f + xx) as usize]);
                }
            }
            small[(y * lw + x) as usize] = (s / (f * f)) as u8;
        }
    }
    let bw = (full.width / f).clamp(1, lw);
    let bh = (full.height / f).clamp(1, lh);
    let horizontal = full.width < w;
    let positions = if horizontal { lw - bw + 1 } else { lh - bh + 1 };
    let px = |x: u32, y: u32| small[(y * lw + x) as usize] as usize;
    let mut hist = [0u32; 256];
    for y in 0..bh {
        for x in 0..bw {
            hist[px(x, y)] += 1;
        }
    }
    let total = bw * bh;
    let (mut best, mut best_score) = (0u32, entropy(&hist, total));
    for p in 1..positions {
        if horizontal {
            for y in 0..bh {
                hist[px(p - 1, y)] -= 1;
                hist[px(p + bw - 1, y)] += 1;
            }
        } else {
            for x in 0..bw {
                hist[px(x, p - 1)] -= 1;
                hist[px(x, p + bh - 1)] += 1;
            }
        }
        let s = entropy(&hist, total);
        if s > best_score + 1e-9 {
            best = p;
            best_score = s;
        }
    }
    let offset = best * f;
    if horizontal {
        Rect { x: offset.min(w - full.width), ..full }
    } else {
        Rect { y: offset.min(h - full.height), ..full }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Channels;

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
    fn same_aspect_returns_the_whole_image() {
        let src = Raster::new(300, 200, Channels::Gray);
        assert_eq!(smart_box(&src, 3, 2), Rect { x: 0, y: 0, width: 300, height: 200 });
    }
}
