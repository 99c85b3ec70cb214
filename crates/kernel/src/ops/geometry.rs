//! Geometry: crop, aspect crop with gravity, exact and free rotation, flips, orientation.

use crate::op::{Gravity, Rgba};
use crate::{Channels, Error, Orientation, Raster, Stop};

/// A box in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Copies a box out of the image. The box is clamped to the image; an empty intersection is
/// an error.
pub fn crop(src: &Raster, rect: Rect) -> Result<Raster, Error> {
    let Some(b) = clamp_box(src.width(), src.height(), rect) else {
        return Err(crop_outside(rect, src.width(), src.height()));
    };
    let n = src.channels().count();
    let (x0, y0, x1, y1) = (b.x, b.y, b.x + b.width, b.y + b.height);
    let (w, h) = (b.width, b.height);
    let mut data = Vec::with_capacity(w as usize * h as usize * n);
    for y in y0..y1 {
        data.extend_from_slice(&src.row(y)[x0 as usize * n..x1 as usize * n]);
    }
    Raster::from_vec(w, h, src.channels(), data)
}

/// The box inside the uniform border of `img`: the border's colour is the top-left
/// pixel's, and a pixel belongs to it when every channel (alpha too) is within `threshold`
/// of it. `None` when the whole image is that colour (nothing to keep apart from it).
pub fn trim_box(img: &Raster, threshold: u8, stop: &crate::Stop) -> Result<Option<Rect>, Error> {
    let (w, h, n) = (img.width() as usize, img.height() as usize, img.channels().count());
    let bg: Vec<u8> = img.pixel(0, 0).to_vec();
    let near = |p: &[u8]| p.iter().zip(&bg).all(|(a, b)| a.abs_diff(*b) <= threshold);
    let row_is_bg = |y: usize| img.row(y as u32).chunks_exact(n).all(near);
    let mut top = 0;
    while top < h && row_is_bg(top) {
        if top % 64 == 0 {
            stop.check()?;
        }
        top += 1;
    }
    if top == h {
        return Ok(None);
    }
    let mut bottom = h - 1;
    while bottom > top && row_is_bg(bottom) {
        if bottom % 64 == 0 {
            stop.check()?;
        }
        bottom -= 1;
    }
    // Columns: the leftmost and rightmost content pixel over the rows kept.
    let (mut left, mut right) = (w, 0);
    for y in top..=bottom {
        if y % 64 == 0 {
            stop.check()?;
        }
        let row = img.row(y as u32);
        if let Some(x) = row.chunks_exact(n).position(|p| !near(p)) {
            left = left.min(x);
            let last = row.chunks_exact(n).rposition(|p| !near(p)).unwrap_or(x);
            right = right.max(last);
        }
    }
    Ok(Some(Rect {
        x: left as u32,
        y: top as u32,
        width: (right - left + 1) as u32,
        height: (bottom - top + 1) as u32,
    }))
}

/// The error for a crop box that misses the image.
pub(crate) fn crop_outside(rect: Rect, width: u32, height: u32) -> Error {
    Error::Op {
        op: format!("crop:{}:{}:{}:{}", rect.x, rect.y, rect.width, rect.height),
        reason: format!("box lies outside the {width}x{height} image"),
    }
}

/// The largest box of aspect `aw:ah` inside a `width x height` image, placed by gravity.
pub fn aspect_box(width: u32, height: u32, aw: u32, ah: u32, gravity: Gravity) -> Rect {
    let (w, h) = if u64::from(width) * u64::from(ah) > u64::from(height) * u64::from(aw) {
        ((u64::from(height) * u64::from(aw) / u64::from(ah)).max(1) as u32, height)
    } else {
        (width, (u64::from(width) * u64::from(ah) / u64::from(aw)).max(1) as u32)
    };
    let (x, y) = place(width, height, w, h, gravity);
    Rect { x, y, width: w, height: h }
}

/// Where a `w x h` box goes inside `width x height` (it fits) by gravity.
pub fn place(width: u32, height: u32, w: u32, h: u32, gravity: Gravity) -> (u32, u32) {
    let (free_x, free_y) = (width.saturating_sub(w), height.saturating_sub(h));
    let x = match gravity {
        Gravity::West | Gravity::NorthWest | Gravity::SouthWest => 0,
        Gravity::East | Gravity::NorthEast | Gravity::SouthEast => free_x,
        _ => free_x / 2,
    };
    let y = match gravity {
        Gravity::North | Gravity::NorthEast | Gravity::NorthWest => 0,
        Gravity::South | Gravity::SouthEast | Gravity::SouthWest => free_y,
        _ => free_y / 2,
    };
    (x, y)
}

/// Blends `over` (RGBA) onto `base` (RGB or RGBA) at `(x, y)` with its alpha times
/// `opacity`; the part of `over` outside `base` is clipped.
pub fn composite(
    base: &mut Raster,
    over: &Raster,
    x: u32,
    y: u32,
    opacity: f32,
    stop: &crate::Stop,
) -> Result<(), Error> {
    let n = base.channels().count();
    debug_assert!(matches!(base.channels(), Channels::Rgb | Channels::Rgba) && over.channels() == Channels::Rgba);
    let w = over.width().min(base.width().saturating_sub(x)) as usize;
    let h = over.height().min(base.height().saturating_sub(y));
    let stride = base.stride();
    for oy in 0..h {
        if oy % 64 == 0 {
            stop.check()?;
        }
        let src = &over.row(oy)[..w * 4];
        let start = (y + oy) as usize * stride + x as usize * n;
        let dst = &mut base.data_mut()[start..start + w * n];
        for (d, s) in dst.chunks_exact_mut(n).zip(src.chunks_exact(4)) {
            let a = f32::from(s[3]) / 255.0 * opacity;
            if a <= 0.0 {
                continue;
            }
            for c in 0..3 {
                d[c] = (f32::from(s[c]) * a + f32::from(d[c]) * (1.0 - a)).round() as u8;
            }
            if n == 4 {
                d[3] = ((a + f32::from(d[3]) / 255.0 * (1.0 - a)) * 255.0).round() as u8;
            }
        }
    }
    Ok(())
}

/// Generic pixel remap for the eight axis-aligned transforms, walked in tiles so both the
/// source and the destination stay in cache (matters for 90 degree turns of big photos).
fn remap<const N: usize>(src: &Raster, t: Orientation) -> Raster {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = if t.swaps_dimensions() { (sh, sw) } else { (sw, sh) };
    let mut dst = Raster::new(dw as u32, dh as u32, src.channels());
    let s = src.data();
    let d = dst.data_mut();
    // Destination (x, y) for source (x, y).
    let map = |x: usize, y: usize| -> (usize, usize) {
        match t {
            Orientation::Normal => (x, y),
            Orientation::FlipH => (sw - 1 - x, y),
            Orientation::Rotate180 => (sw - 1 - x, sh - 1 - y),
            Orientation::FlipV => (x, sh - 1 - y),
            Orientation::Transpose => (y, x),
            Orientation::Rotate90 => (sh - 1 - y, x),
            Orientation::Transverse => (sh - 1 - y, sw - 1 - x),
            Orientation::Rotate270 => (y, sw - 1 - x),
        }
    };
    const TILE: usize = 32;
    for ty in (0..sh).step_by(TILE) {
        for tx in (0..sw).step_by(TILE) {
            for y in ty..(ty + TILE).min(sh) {
                let row = &s[y * sw * N..(y + 1) * sw * N];
                for x in tx..(tx + TILE).min(sw) {
                    let (dx, dy) = map(x, y);
                    let di = (dy * dw + dx) * N;
                    d[di..di + N].copy_from_slice(&row[x * N..x * N + N]);
                }
            }
        }
    }
    dst
}

/// Applies one of the eight EXIF orientations (or any axis-aligned flip/turn).
pub fn orient(src: &Raster, t: Orientation) -> Raster {
    match (t, src.channels().count()) {
        (Orientation::Normal, _) => src.clone(),
        (Orientation::FlipV, _) => {
            let mut dst = Raster::new(src.width(), src.height(), src.channels());
            let s = src.stride();
            for y in 0..src.height() as usize {
                let from = (src.height() as usize - 1 - y) * s;
                dst.data_mut()[y * s..(y + 1) * s].copy_from_slice(&src.data()[from..from + s]);
            }
            dst
        }
        (_, 1) => remap::<1>(src, t),
        (_, 2) => remap::<2>(src, t),
        (_, 3) => remap::<3>(src, t),
        _ => remap::<4>(src, t),
    }
}

/// Rotates clockwise by any angle. Multiples of 90 are exact; other angles sample bilinearly
/// onto a canvas that holds the whole rotated image, corners filled with `background` (an
/// alpha channel is added when the background is not opaque).
pub fn rotate(src: &Raster, degrees: f32, background: Rgba, stop: &Stop) -> Result<Raster, Error> {
    let d = degrees.rem_euclid(360.0);
    if d == 0.0 {
        return Ok(src.clone());
    } else if d == 90.0 {
        return Ok(orient(src, Orientation::Rotate90));
    } else if d == 180.0 {
        return Ok(orient(src, Orientation::Rotate180));
    } else if d == 270.0 {
        return Ok(orient(src, Orientation::Rotate270));
    }
    let channels = if background.0[3] < 255 { src.channels().with_alpha() } else { src.channels() };
    let src = crate::ops::color::convert(src, channels);
    let n = channels.count();
    let bg: Vec<u8> = match channels {
        Channels::Gray => vec![crate::ops::color::luma(background.0[0], background.0[1], background.0[2])],
        Channels::GrayAlpha => {
            vec![crate::ops::color::luma(background.0[0], background.0[1], background.0[2]), background.0[3]]
        }
        Channels::Rgb => background.0[..3].to_vec(),
        Channels::Rgba => background.0.to_vec(),
    };
    let (sin, cos) = (d.to_radians() as f64).sin_cos();
    let (sw, sh) = (f64::from(src.width()), f64::from(src.height()));
    let (dw, dh) = rotated_dims(src.width(), src.height(), d);
    let (dw, dh) = (dw as f64, dh as f64);
    let mut dst = Raster::new(dw as u32, dh as u32, channels);
    let (scx, scy, dcx, dcy) = (sw / 2.0, sh / 2.0, dw / 2.0, dh / 2.0);
    let stride = src.stride();
    let s = src.data();
    let (iw, ih) = (src.width() as i64, src.height() as i64);
    let mut acc = vec![0f64; n];
    for (y, row) in dst.data_mut().chunks_exact_mut(dw as usize * n).enumerate() {
        stop.check_row(y)?;
        let fy = y as f64 + 0.5 - dcy;
        for (x, px) in row.chunks_exact_mut(n).enumerate() {
            let fx = x as f64 + 0.5 - dcx;
            // Inverse rotation: destination -> source.
            let sx = fx * cos + fy * sin + scx - 0.5;
            let sy = -fx * sin + fy * cos + scy - 0.5;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (ax, ay) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (dy, wy) in [(0, 1.0 - ay), (1, ay)] {
                for (dx, wx) in [(0, 1.0 - ax), (1, ax)] {
                    let (xx, yy) = (x0 + dx, y0 + dy);
                    let w = wx * wy;
                    if xx >= 0 && yy >= 0 && xx < iw && yy < ih {
                        let i = yy as usize * stride + xx as usize * n;
                        for c in 0..n {
                            acc[c] += w * f64::from(s[i + c]);
                        }
                    } else {
                        for c in 0..n {
                            acc[c] += w * f64::from(bg[c]);
                        }
                    }
                }
            }
            for c in 0..n {
                px[c] = acc[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(dst)
}

/// The canvas a clockwise rotation by `degrees` needs (exact for multiples of 90), computed
/// before anything is allocated so an oversized result is refused at once.
pub fn rotated_dims(width: u32, height: u32, degrees: f32) -> (u64, u64) {
    let d = degrees.rem_euclid(360.0);
    if d == 0.0 || d == 180.0 {
        return (u64::from(width), u64::from(height));
    }
    if d == 90.0 || d == 270.0 {
        return (u64::from(height), u64::from(width));
    }
    let (sin, cos) = (d.to_radians() as f64).sin_cos();
    let (sw, sh) = (f64::from(width), f64::from(height));
    let dw = (sw * cos.abs() + sh * sin.abs()).round().max(1.0);
    let dh = (sw * sin.abs() + sh * cos.abs()).round().max(1.0);
    (dw as u64, dh as u64)
}

/// The box [`crop`] copies: `rect` clamped to a `width x height` image, `None` when empty.
pub fn clamp_box(width: u32, height: u32, rect: Rect) -> Option<Rect> {
    let x0 = rect.x.min(width);
    let y0 = rect.y.min(height);
    let x1 = rect.x.saturating_add(rect.width).min(width);
    let y1 = rect.y.saturating_add(rect.height).min(height);
    (x1 > x0 && y1 > y0).then(|| Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 })
}

/// The layout a `pad` with `colour` gives an image of layout `ch`: alpha added for a colour
/// that is not opaque, colour channels for a colour that is not grey.
pub fn padded_channels(ch: Channels, colour: Rgba) -> Channels {
    let [r, g, b, a] = colour.0;
    let ch = if a < 255 { ch.with_alpha() } else { ch };
    match ch {
        Channels::Gray if r != g || g != b => Channels::Rgb,
        Channels::GrayAlpha if r != g || g != b => Channels::Rgba,
        c => c,
    }
}

/// Adds `top`, `right`, `bottom`, `left` pixels of `colour` around the image.
pub fn pad(src: &Raster, top: u32, right: u32, bottom: u32, left: u32, colour: Rgba) -> Result<Raster, Error> {
    let ch = padded_channels(src.channels(), colour);
    let converted;
    let src = if ch == src.channels() {
        src
    } else {
        converted = crate::ops::color::convert(src, ch);
        &converted
    };
    let [r, g, b, a] = colour.0;
    let fill: &[u8] = match ch {
        Channels::Gray => &[r],
        Channels::GrayAlpha => &[r, a],
        Channels::Rgb => &[r, g, b],
        Channels::Rgba => &[r, g, b, a],
    };
    let (w, h) = (src.width() + left + right, src.height() + top + bottom);
    let n = ch.count();
    let mut data = Vec::with_capacity(w as usize * h as usize * n);
    for _ in 0..w as usize * top as usize {
        data.extend_from_slice(fill);
    }
    for y in 0..src.height() {
        for _ in 0..left {
            data.extend_from_slice(fill);
        }
        data.extend_from_slice(src.row(y));
        for _ in 0..right {
            data.extend_from_slice(fill);
        }
    }
    for _ in 0..w as usize * bottom as usize {
        data.extend_from_slice(fill);
    }
    Raster::from_vec(w, h, ch, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(w: u32, h: u32) -> Raster {
        Raster::from_fn(w, h, Channels::Gray, |x, y, p| p[0] = (y * w + x) as u8)
    }

    #[test]
    fn crop_copies_and_clamps() {
        let r = numbered(4, 3);
        let c = crop(&r, Rect { x: 1, y: 1, width: 2, height: 5 }).unwrap();
        assert_eq!((c.width(), c.height()), (2, 2));
        assert_eq!(c.data(), &[5, 6, 9, 10]);
        assert!(crop(&r, Rect { x: 4, y: 0, width: 2, height: 2 }).is_err());
    }

    #[test]
    fn aspect_box_respects_gravity() {
        assert_eq!(aspect_box(400, 300, 1, 1, Gravity::Center), Rect { x: 50, y: 0, width: 300, height: 300 });
        assert_eq!(aspect_box(400, 300, 1, 1, Gravity::West).x, 0);
        assert_eq!(aspect_box(400, 300, 1, 1, Gravity::SouthEast), Rect { x: 100, y: 0, width: 300, height: 300 });
        assert_eq!(aspect_box(400, 300, 16, 9, Gravity::North), Rect { x: 0, y: 0, width: 400, height: 225 });
        assert_eq!(aspect_box(400, 300, 16, 9, Gravity::South).y, 75);
    }

    #[test]
    fn quarter_turns_move_corners() {
        // 3x2:  0 1 2 / 3 4 5
        let r = numbered(3, 2);
        let cw = orient(&r, Orientation::Rotate90);
        assert_eq!((cw.width(), cw.height()), (2, 3));
        assert_eq!(cw.data(), &[3, 0, 4, 1, 5, 2]);
        let ccw = orient(&r, Orientation::Rotate270);
        assert_eq!(ccw.data(), &[2, 5, 1, 4, 0, 3]);
        assert_eq!(orient(&r, Orientation::Rotate180).data(), &[5, 4, 3, 2, 1, 0]);
        assert_eq!(orient(&r, Orientation::FlipH).data(), &[2, 1, 0, 5, 4, 3]);
        assert_eq!(orient(&r, Orientation::FlipV).data(), &[3, 4, 5, 0, 1, 2]);
        assert_eq!(orient(&r, Orientation::Transpose).data(), &[0, 3, 1, 4, 2, 5]);
        assert_eq!(orient(&r, Orientation::Transverse).data(), &[5, 2, 4, 1, 3, 0]);
    }

    #[test]
    fn four_quarter_turns_are_identity_on_big_tiles() {
        let r = Raster::from_fn(70, 45, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, (x ^ y) as u8]));
        let mut t = r.clone();
        for _ in 0..4 {
            t = rotate(&t, 90.0, Rgba::default(), &Stop::new()).unwrap();
        }
        assert_eq!(t, r);
    }

    #[test]
    fn free_rotation_grows_the_canvas_and_fills_corners() {
        let r = Raster::from_fn(100, 50, Channels::Rgb, |_, _, p| p.copy_from_slice(&[200, 10, 10]));
        let out = rotate(&r, 45.0, Rgba([0, 0, 255, 255]), &Stop::new()).unwrap();
        assert_eq!(rotated_dims(100, 50, 45.0), (106, 106));
        assert_eq!((out.width(), out.height()), (106, 106));
        assert_eq!(out.pixel(0, 0), &[0, 0, 255]);
        assert_eq!(out.pixel(53, 53), &[200, 10, 10]);
        let t = rotate(&r, 30.0, Rgba([0, 0, 0, 0]), &Stop::new()).unwrap();
        assert_eq!(t.channels(), Channels::Rgba);
        assert_eq!(t.pixel(0, 0)[3], 0);
    }

    #[test]
    fn pad_surrounds_the_image_and_widens_the_layout_when_the_colour_needs_it() {
        let r = numbered(2, 2);
        let p = pad(&r, 1, 2, 0, 1, Rgba([9, 9, 9, 255])).unwrap();
        assert_eq!((p.width(), p.height(), p.channels()), (5, 3, Channels::Gray));
        assert_eq!(p.row(0), [9, 9, 9, 9, 9]);
        assert_eq!(p.row(1), [9, 0, 1, 9, 9]);
        assert_eq!(p.row(2), [9, 2, 3, 9, 9]);
        let red = pad(&r, 0, 1, 0, 0, Rgba([255, 0, 0, 255])).unwrap();
        assert_eq!(red.channels(), Channels::Rgb);
        assert_eq!(red.pixel(2, 0), [255, 0, 0]);
        assert_eq!(red.pixel(1, 1), [3, 3, 3]);
        let clear = pad(&r, 1, 0, 0, 0, Rgba([0, 0, 0, 0])).unwrap();
        assert_eq!(clear.channels(), Channels::GrayAlpha);
        assert_eq!((clear.pixel(0, 0), clear.pixel(1, 2)), (&[0u8, 0][..], &[3u8, 255][..]));
    }
}
