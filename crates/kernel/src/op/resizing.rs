//! Steps that resample: `resize`, `thumbnail`, `smartcrop`. Each has its spec (names,
//! syntax, help, example, argument ranges), its canonical form, its size rule and its pixels
//! here; the algorithms are in `ops::resize` and `ops::smartcrop`.

use super::operation::{Apply, Operation, Shape, Sizing, bytes, resize_scratch};
use super::spec::{FILTERS, FITS, MAX_SIDE, Parsed, Spec, name_of};
use super::{Filter, Fit, Gravity, Op};
use crate::ops::{geometry, resize, smartcrop};
use crate::{Error, Raster};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `resize:W:H[:fit[:filter]]`; `0` for W or H keeps the aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resize {
    /// Target width, 0 = derived from height.
    pub width: u32,
    /// Target height, 0 = derived from width.
    pub height: u32,
    /// Fit mode.
    #[serde(default)]
    pub fit: Fit,
    /// Resampling filter.
    #[serde(default)]
    pub filter: Filter,
}

pub(super) const RESIZE: Spec = Spec {
    names: &["resize"],
    syntax: "resize:W:H[:fit[:filter]]",
    about: "resize; W or H 0 = keep aspect; fit contain|cover|fill|inside; filter nearest|box|bilinear|hamming|catmullrom|mitchell|lanczos3",
    example: "resize:800:600:cover",
    args: (2, 4),
    parse: |s, _| {
        let width = s.u32_in(0, "width", 0, MAX_SIDE)?;
        let height = s.u32_in(1, "height", 0, MAX_SIDE)?;
        if width == 0 && height == 0 {
            return Err(s.err("width and height cannot both be 0"));
        }
        let fit = if s.args.len() > 2 { s.choice(2, "fit", FITS)? } else { Fit::default() };
        let filter = if s.args.len() > 3 { s.choice(3, "filter", FILTERS)? } else { Filter::default() };
        if (width == 0 || height == 0) && matches!(fit, Fit::Cover | Fit::Fill) {
            return Err(s.err("fit cover and fill need both width and height"));
        }
        Ok(Parsed::Op(Op::Resize(Resize { width, height, fit, filter })))
    },
};

impl Operation for Resize {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Resize { width, height, fit, filter } = *self;
        write!(f, "resize:{width}:{height}:{}:{}", name_of(FITS, fit), name_of(FILTERS, filter))
    }

    fn shrink_need(&self, w: u32, h: u32) -> Option<(u64, u64)> {
        // Nearest picks source pixels: a block-filtered decode would change them.
        (self.filter != Filter::Nearest).then(|| resize::source_scale_dims(w, h, self.width, self.height, self.fit))
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let (a, b) = resize::resize_dims(s.lw, s.lh, self.width, self.height, self.fit);
        let (a, b) = s.check_out(a, b)?;
        Ok(s.shape(a, b, s.ch).with_scratch(resize_scratch(s.w, s.h, a, b, s.ch)))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        let (w, h) = cx.want;
        cx.resizer.resize_owned(img, w, h, self.filter, self.fit == Fit::Cover, cx.keep_source)
    }
}

/// `thumbnail:N`: longest side at most N, never enlarged, Lanczos3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// Longest side.
    pub size: u32,
}

pub(super) const THUMBNAIL: Spec = Spec {
    names: &["thumbnail", "thumb"],
    syntax: "thumbnail:N",
    about: "longest side at most N, never enlarges (Lanczos3, shrink-on-load for JPEG)",
    example: "thumbnail:1024",
    args: (1, 1),
    parse: |s, _| Ok(Parsed::Op(Op::Thumbnail(Thumbnail { size: s.u32_in(0, "size", 1, MAX_SIDE)? }))),
};

impl Operation for Thumbnail {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thumbnail:{}", self.size)
    }

    fn shrink_need(&self, w: u32, h: u32) -> Option<(u64, u64)> {
        Some(resize::thumbnail_dims(w, h, self.size))
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let (a, b) = resize::thumbnail_dims(s.lw, s.lh, self.size);
        let (a, b) = s.check_out(a, b)?;
        Ok(s.shape(a, b, s.ch).with_scratch(resize_scratch(s.w, s.h, a, b, s.ch)))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        let (w, h) = cx.want;
        cx.resizer.resize_owned(img, w, h, Filter::Lanczos3, false, cx.keep_source)
    }
}

/// `smartcrop:W:H`: the box of that aspect ratio where attention gathers, resized to W x H.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartCrop {
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
}

pub(super) const SMARTCROP: Spec = Spec {
    names: &["smartcrop"],
    syntax: "smartcrop:W:H",
    about: "crop to where attention gathers (edges, skin, colour) at aspect W:H and resize to W x H",
    example: "smartcrop:300:300",
    args: (2, 2),
    parse: |s, _| {
        Ok(Parsed::Op(Op::SmartCrop(SmartCrop {
            width: s.u32_in(0, "width", 1, MAX_SIDE)?,
            height: s.u32_in(1, "height", 1, MAX_SIDE)?,
        })))
    },
};

impl Operation for SmartCrop {
    fn canonical(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "smartcrop:{}:{}", self.width, self.height)
    }

    fn plan(&self, s: &Sizing<'_>) -> Result<Shape, Error> {
        let (a, b) = s.check_out(u64::from(self.width), u64::from(self.height))?;
        let full = geometry::aspect_box(s.w, s.h, a, b, Gravity::Center);
        let cropped = bytes(u64::from(full.width), u64::from(full.height), s.ch);
        let luma = u64::from(s.w) * u64::from(s.h);
        Ok(s.shape(a, b, s.ch).with_scratch(luma.max(cropped + resize_scratch(full.width, full.height, a, b, s.ch))))
    }

    fn apply(&self, img: Raster, cx: &mut Apply<'_>) -> Result<Raster, Error> {
        let (w, h) = cx.want;
        let b = cx.pinned.unwrap_or_else(|| smartcrop::smart_box(&img, w, h));
        *cx.smart = Some(b);
        let cropped = geometry::crop(&img, b)?;
        if cx.keep_source {
            cx.resizer.recycle(img);
        }
        cx.resizer.resize_owned(cropped, w, h, Filter::Lanczos3, false, false)
    }
}
