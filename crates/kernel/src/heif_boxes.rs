//! A walk of a HEIF/AVIF file's boxes before libheif reads it, refusing structures whose
//! cost libheif does not bound by the image's size. libheif checks each box on its own
//! (sizes, item and reference counts, cycles along one path), but not what they multiply
//! to, and it decodes what it is told to decode:
//!
//! - derived images (`grid`, `iovl`, `iden`) form a graph, decoded by recursion (at most
//!   [`MAX_DEPTH`] levels), and a shared child is decoded once per path to it: 30 levels of two overlays over one 8x8 picture decode it 2^31
//!   times. The decodes from the primary image (and its alpha) are counted along every
//!   path; at most [`MAX_DECODES`], and their pixels at most [`MAX_PIXEL_FACTOR`] times the
//!   primary's.
//! - a grid's or an overlay's canvas comes from its own payload, checked against the image
//!   size limit only: it must be the item's `ispe`. A grid's tiles must not reach a tile
//!   past its canvas, and every image decoded (tile, alpha) is at most the primary's size
//!   (padded by a coding block on each side).
//! - an item may list `irot`, `imir` or `clap` any number of times, each a full copy of the
//!   picture: at most one of each.
//! - an item's extents may overlap, so one item can be many times the file: each item's
//!   extents are at most the file's length, all of them at most [`MAX_DATA_FACTOR`] times.
//! - a track (`moov`) is read even when only the still image is wanted, and its timing
//!   table is built in time proportional to its `stts` entries times its samples: at most
//!   [`MAX_TIMING_WORK`].
//! - an HEVC picture may carry its own parameter sets (VPS, SPS, PPS) in its data, which
//!   the system's libde265 reads without libheif's size check (a SPS declaring 32768x32768
//!   allocates gigabytes): refused; encoders put them in the `hvcC` property.
//!
//! The walk reads only box headers, the item tables and the few bytes of a grid's or an
//! overlay's payload; a file it cannot follow is left to libheif's own errors.

use crate::codec::decode_err;
use crate::{Error, Format, Limits};

/// Most images decoded for the primary image and its alpha, counting every path.
pub const MAX_DECODES: u64 = 1024;
/// Most pixels decoded, as a multiple of the primary image's (a grid's canvas and its
/// tiles, an alpha plane).
pub const MAX_PIXEL_FACTOR: u64 = 8;
/// Most levels of derived images (an `iden` of a grid of tiles is three).
pub const MAX_DEPTH: usize = 16;
/// Most item data, as a multiple of the file's length.
pub const MAX_DATA_FACTOR: u64 = 4;
/// Most `stts` entries times samples of one track.
pub const MAX_TIMING_WORK: u64 = 100_000_000;

/// A box: its type and body.
struct Bx<'a> {
    kind: [u8; 4],
    body: &'a [u8],
}

/// The boxes in `data`, in order; `None` for one that runs past the end (or is malformed).
fn boxes(mut data: &[u8]) -> impl Iterator<Item = Option<Bx<'_>>> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size = u64::from(u32::from_be_bytes(data[..4].try_into().ok()?));
        let kind: [u8; 4] = data[4..8].try_into().ok()?;
        let (head, size) = match size {
            0 => (8, data.len() as u64),
            1 if data.len() >= 16 => (16, u64::from_be_bytes(data[8..16].try_into().ok()?)),
            n => (8, n),
        };
        if size < head as u64 || size > data.len() as u64 {
            data = &[];
            return Some(None);
        }
        let (this, rest) = data.split_at(size as usize);
        data = rest;
        Some(Some(Bx { kind, body: &this[head..] }))
    })
}

/// Big-endian reader over a body.
struct Rd<'a> {
    d: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn new(d: &'a [u8]) -> Rd<'a> {
        Rd { d, at: 0 }
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.d.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(self.bytes(n)?.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.uint(2).map(|v| v as u16)
    }
    fn u32(&mut self) -> Option<u32> {
        self.uint(4).map(|v| v as u32)
    }
    /// A full box's version and flags.
    fn full(&mut self) -> Option<(u8, u32)> {
        let v = self.u32()?;
        Some(((v >> 24) as u8, v & 0xFF_FFFF))
    }
    fn rest(&self) -> &'a [u8] {
        &self.d[self.at.min(self.d.len())..]
    }
}

/// (construction method, offset, length) of an item's extent.
type Extent = (u8, u64, u64);

#[derive(Default)]
struct Item {
    kind: [u8; 4],
    /// Property indexes (1-based into `ipco`).
    props: Vec<u16>,
    /// Its data, base offset applied.
    extents: Vec<Extent>,
    /// `dimg` references: the images it is derived from.
    from: Vec<u32>,
}

#[derive(Default)]
struct Meta<'a> {
    primary: Option<u32>,
    items: std::collections::BTreeMap<u32, Item>,
    props: Vec<Bx<'a>>,
    idat: &'a [u8],
    /// (alpha item, the image it is the alpha of) from `auxl` references.
    aux: Vec<(u32, u32)>,
}

/// Checks `input`'s boxes as the module says, and the primary image's declared size (before
/// its crop or rotation) against `limits`: a grid's canvas is made at that size.
pub(crate) fn check(input: &[u8], format: Format, limits: &Limits) -> Result<(), Error> {
    let bad = |why: String| Err(decode_err(format, why));
    for b in boxes(input) {
        let Some(b) = b else { break };
        match &b.kind {
            b"meta" => {
                let Some(meta) = read_meta(b.body) else { continue };
                if let Some((w, h)) = meta.items.get(&meta.primary.unwrap_or(0)).and_then(|p| meta.ispe(p)) {
                    limits
                        .check_dimensions(u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX))?;
                }
                if let Err(why) = check_meta(&meta, input) {
                    return bad(why);
                }
            }
            b"moov" => {
                if let Some(work) = timing_work(b.body)
                    && work > MAX_TIMING_WORK
                {
                    return bad(format!("a track's timing table takes {work} steps to build, over {MAX_TIMING_WORK}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_meta(body: &[u8]) -> Option<Meta<'_>> {
    let mut r = Rd::new(body);
    r.full()?;
    let mut m = Meta::default();
    let mut locs: Vec<(u32, Vec<Extent>)> = Vec::new();
    let mut assoc: Vec<(u32, Vec<u16>)> = Vec::new();
    for b in boxes(r.rest()) {
        let b = b?;
        let mut r = Rd::new(b.body);
        match &b.kind {
            b"pitm" => {
                let (v, _) = r.full()?;
                m.primary = Some(if v == 0 { u32::from(r.u16()?) } else { r.u32()? });
            }
            b"iinf" => {
                let (v, _) = r.full()?;
                if v == 0 {
                    r.u16()?;
                } else {
                    r.u32()?;
                }
                for e in boxes(r.rest()) {
                    let e = e?;
                    if &e.kind != b"infe" {
                        continue;
                    }
                    let mut r = Rd::new(e.body);
                    let (v, _) = r.full()?;
                    if v < 2 {
                        continue;
                    }
                    let id = if v == 2 { u32::from(r.u16()?) } else { r.u32()? };
                    r.u16()?;
                    let kind: [u8; 4] = r.bytes(4)?.try_into().ok()?;
                    m.items.entry(id).or_default().kind = kind;
                }
            }
            b"iref" => {
                let (v, _) = r.full()?;
                for e in boxes(r.rest()) {
                    let e = e?;
                    let mut r = Rd::new(e.body);
                    let id = |r: &mut Rd| if v == 0 { r.u16().map(u32::from) } else { r.u32() };
                    let from = id(&mut r)?;
                    let n = r.u16()?;
                    let mut to = Vec::with_capacity(usize::from(n).min(r.rest().len() / 2));
                    for _ in 0..n {
                        to.push(id(&mut r)?);
                    }
                    match &e.kind {
                        b"dimg" => m.items.entry(from).or_default().from.extend(to),
                        b"auxl" => m.aux.extend(to.into_iter().map(|t| (from, t))),
                        _ => {}
                    }
                }
            }
            b"iprp" => {
                for e in boxes(b.body) {
                    let e = e?;
                    match &e.kind {
                        b"ipco" => m.props = boxes(e.body).collect::<Option<Vec<_>>>()?,
                        b"ipma" => {
                            let mut r = Rd::new(e.body);
                            let (v, flags) = r.full()?;
                            for _ in 0..r.u32()? {
                                let id = if v < 1 { u32::from(r.u16()?) } else { r.u32()? };
                                let n = r.u8()?;
                                let mut list = Vec::with_capacity(usize::from(n));
                                for _ in 0..n {
                                    list.push(if flags & 1 == 1 {
                                        r.u16()? & 0x7FFF
                                    } else {
                                        u16::from(r.u8()? & 0x7F)
                                    });
                                }
                                assoc.push((id, list));
                            }
                        }
                        _ => {}
                    }
                }
            }
            b"iloc" => {
                let (v, _) = r.full()?;
                let sizes = r.u8()?;
                let (off_size, len_size) = (usize::from(sizes >> 4), usize::from(sizes & 15));
                let sizes = r.u8()?;
                let base_size = usize::from(sizes >> 4);
                let index_size = if v == 1 || v == 2 { usize::from(sizes & 15) } else { 0 };
                let count = if v < 2 { u32::from(r.u16()?) } else { r.u32()? };
                for _ in 0..count {
                    let id = if v < 2 { u32::from(r.u16()?) } else { r.u32()? };
                    let method = if v == 1 || v == 2 { (r.u16()? & 15) as u8 } else { 0 };
                    r.u16()?;
                    let base = r.uint(base_size)?;
                    let n = r.u16()?;
                    let mut ext = Vec::with_capacity(usize::from(n).min(64));
                    for _ in 0..n {
                        r.uint(index_size)?;
                        let off = r.uint(off_size)?;
                        let len = r.uint(len_size)?;
                        ext.push((method, base.saturating_add(off), len));
                    }
                    locs.push((id, ext));
                }
            }
            b"idat" => m.idat = b.body,
            _ => {}
        }
    }
    for (id, ext) in locs {
        m.items.entry(id).or_default().extents.extend(ext);
    }
    for (id, list) in assoc {
        m.items.entry(id).or_default().props.extend(list);
    }
    Some(m)
}

impl<'a> Meta<'a> {
    fn prop(&self, item: &Item, kind: &[u8; 4]) -> impl Iterator<Item = &Bx<'a>> {
        let kind = *kind;
        item.props
            .iter()
            .filter_map(|&i| self.props.get(usize::from(i).checked_sub(1)?))
            .filter(move |p| p.kind == kind)
    }

    /// The item's `ispe` as (width, height).
    fn ispe(&self, item: &Item) -> Option<(u64, u64)> {
        let p = self.prop(item, b"ispe").next()?;
        let mut r = Rd::new(p.body);
        r.full()?;
        Some((u64::from(r.u32()?), u64::from(r.u32()?)))
    }

    /// The item's data, when small (a derived image's payload).
    fn data(&self, item: &Item, input: &'a [u8], max: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for &(method, off, len) in &item.extents {
            let src = match method {
                0 => input,
                1 => self.idat,
                _ => return None,
            };
            let end = if len == 0 { src.len() as u64 } else { off.checked_add(len)? };
            if end > src.len() as u64 || end < off || out.len() as u64 + (end - off) > max {
                return None;
            }
            out.extend_from_slice(&src[off as usize..end as usize]);
        }
        Some(out)
    }
}

fn check_meta(m: &Meta, input: &[u8]) -> Result<(), String> {
    let len = input.len() as u64;
    // Item data: no item longer than the file, not all together many times it.
    let mut total = 0u64;
    for (id, item) in &m.items {
        let own = item.extents.iter().fold(0u64, |s, e| s.saturating_add(e.2));
        if own > len {
            return Err(format!("item {id} claims {own} bytes of data, more than the file's {len}"));
        }
        total = total.saturating_add(own);
    }
    if total > MAX_DATA_FACTOR * len {
        return Err(format!("its items claim {total} bytes of data, over {MAX_DATA_FACTOR} times the file's {len}"));
    }
    let Some(primary) = m.primary else { return Ok(()) };
    let Some(p) = m.items.get(&primary) else { return Ok(()) };
    let Some((pw, ph)) = m.ispe(p) else { return Ok(()) };
    let primary_px = pw.saturating_mul(ph).max(1);
    // Every decode from the primary and its alpha, along every path.
    let mut walk = Walk { m, input, decodes: 0, pixels: 0, primary_px, primary: (pw, ph), stack: Vec::new() };
    walk.visit(primary)?;
    for &(alpha, of) in &m.aux {
        if of == primary && m.items.get(&alpha).is_some_and(|i| is_image(&i.kind)) {
            walk.visit(alpha)?;
        }
    }
    Ok(())
}

fn is_image(kind: &[u8; 4]) -> bool {
    matches!(kind, b"hvc1" | b"av01" | b"jpeg" | b"grid" | b"iovl" | b"iden")
}

struct Walk<'m, 'a> {
    m: &'m Meta<'a>,
    input: &'a [u8],
    decodes: u64,
    pixels: u64,
    primary_px: u64,
    primary: (u64, u64),
    stack: Vec<u32>,
}

/// What a coded picture may exceed its image by on each side: coding-block padding.
const PAD: u64 = 128;

impl Walk<'_, '_> {
    fn visit(&mut self, id: u32) -> Result<(), String> {
        let Some(item) = self.m.items.get(&id) else { return Ok(()) };
        if self.stack.contains(&id) {
            return Err(format!("image {id} is derived from itself"));
        }
        // libheif decodes a derived image by recursion on the calling thread's stack.
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("its images are derived over {MAX_DEPTH} levels deep"));
        }
        self.decodes += 1;
        if self.decodes > MAX_DECODES {
            return Err(format!("its primary image takes over {MAX_DECODES} image decodes"));
        }
        for kind in [b"irot", b"imir", b"clap"] {
            if self.m.prop(item, kind).count() > 1 {
                return Err(format!("image {id} lists '{}' more than once", String::from_utf8_lossy(kind)));
            }
        }
        let size = self.m.ispe(item);
        if let Some((w, h)) = size {
            // A coded picture may be padded to its coding blocks (HEVC 64, AV1 128 pixels).
            let (pw, ph) = self.primary;
            if w.saturating_mul(h) > (pw + PAD).saturating_mul(ph + PAD) {
                return Err(format!("image {id} ({w}x{h}) is larger than the primary image ({pw}x{ph})"));
            }
            self.pixels = self.pixels.saturating_add(w.saturating_mul(h));
            if self.pixels > MAX_PIXEL_FACTOR.saturating_mul(self.primary_px).saturating_add(1 << 16) {
                return Err(format!(
                    "its primary image decodes over {MAX_PIXEL_FACTOR} times its own {} pixels",
                    self.primary_px
                ));
            }
        }
        match &item.kind {
            b"grid" | b"iovl" => self.canvas(id, item, size)?,
            b"hvc1" => self.hevc(id, item)?,
            _ => {}
        }
        self.stack.push(id);
        for &child in &item.from {
            self.visit(child)?;
        }
        self.stack.pop();
        Ok(())
    }

    /// A grid's or an overlay's canvas is its `ispe`; a grid's tiles stay within a tile of it.
    fn canvas(&self, id: u32, item: &Item, size: Option<(u64, u64)>) -> Result<(), String> {
        let payload =
            self.m.data(item, self.input, 1 << 20).ok_or(format!("image {id}'s description is unreadable"))?;
        let mut r = Rd::new(&payload);
        let short = || format!("image {id}'s description is cut short");
        r.u8().ok_or_else(short)?;
        let flags = r.u8().ok_or_else(short)?;
        let (rows, cols) = if &item.kind == b"grid" {
            (u64::from(r.u8().ok_or_else(short)?) + 1, u64::from(r.u8().ok_or_else(short)?) + 1)
        } else {
            r.bytes(8).ok_or_else(short)?;
            (0, 0)
        };
        let field = if flags & 1 == 1 { 4 } else { 2 };
        let (w, h) = (r.uint(field).ok_or_else(short)?, r.uint(field).ok_or_else(short)?);
        if size != Some((w, h)) {
            return Err(format!("image {id}'s canvas ({w}x{h}) is not its declared size"));
        }
        if rows > 0 {
            for &t in &item.from {
                let Some((tw, th)) = self.m.items.get(&t).and_then(|i| self.m.ispe(i)) else { continue };
                if cols.saturating_mul(tw) >= w.saturating_add(tw.max(1))
                    || rows.saturating_mul(th) >= h.saturating_add(th.max(1))
                {
                    return Err(format!("image {id}'s {cols}x{rows} tiles of {tw}x{th} reach past its {w}x{h} canvas"));
                }
            }
        }
        Ok(())
    }

    /// No VPS, SPS or PPS among an HEVC picture's NAL units.
    fn hevc(&self, id: u32, item: &Item) -> Result<(), String> {
        let Some(cfg) = self.m.prop(item, b"hvcC").next() else { return Ok(()) };
        let Some(&b) = cfg.body.get(21) else { return Ok(()) };
        let n = usize::from(b & 3) + 1;
        for &(method, off, len) in &item.extents {
            let src = if method == 1 { self.m.idat } else { self.input };
            let Some(mut data) =
                usize::try_from(off).ok().and_then(|o| src.get(o..o.checked_add(usize::try_from(len).ok()?)?))
            else {
                continue;
            };
            while data.len() > n {
                let size = data[..n].iter().fold(0usize, |v, b| (v << 8) | usize::from(*b));
                let Some(&head) = data.get(n) else { break };
                if (32..=34).contains(&((head >> 1) & 0x3F)) {
                    return Err(format!("image {id} carries HEVC parameter sets in its data"));
                }
                data = data.get(n.saturating_add(size)..).unwrap_or_default();
            }
        }
        Ok(())
    }
}

/// The largest `stts` entries times samples of the tracks in `moov`.
fn timing_work(moov: &[u8]) -> Option<u64> {
    let mut worst = 0u64;
    for trak in boxes(moov).map_while(|b| b).filter(|b| &b.kind == b"trak") {
        let Some(stbl) = ["mdia", "minf", "stbl"].iter().try_fold(trak.body, |body, want| {
            boxes(body).map_while(|b| b).find(|b| b.kind == want.as_bytes()).map(|b| b.body)
        }) else {
            continue;
        };
        let (mut entries, mut samples) = (0u64, 0u64);
        for b in boxes(stbl).map_while(|b| b) {
            let mut r = Rd::new(b.body);
            match &b.kind {
                b"stts" => {
                    r.full()?;
                    entries = u64::from(r.u32()?);
                }
                b"stsz" => {
                    r.full()?;
                    r.u32()?;
                    samples = u64::from(r.u32()?);
                }
                b"stz2" => {
                    r.full()?;
                    r.u32()?;
                    samples = u64::from(r.u32()?);
                }
                _ => {}
            }
        }
        worst = worst.max(entries.saturating_mul(samples));
    }
    Some(worst)
}
