//! The plan of a job before any pixel exists: the decode scale, every step's output size and
//! layout, and an upper estimate of the kernel's peak heap use, from the header alone.
//!
//! [`crate::Processor`] plans before it decodes, so a step that would make an oversized
//! image is refused at once (not after minutes of work on a giant canvas), and it checks
//! after each step that the image is the size the plan said (a mismatch is a bug, reported as
//! `Error::Internal`). The job layer admits a job under its memory budget by the plan's
//! `peak_bytes`, so several workers cannot together allocate more than the machine has.
//!
//! The estimate counts the input bytes, each stage's input and output rasters and its scratch
//! (blur's intermediate image, the resizer's intermediate pass, encoder buffers, the
//! decoder's native buffer for 16-bit or CMYK inputs) and takes the maximum over the stages:
//! images are dropped as soon as the next step has been computed. Encoders written in C
//! (libjpeg-turbo, libwebp) get a generous allowance, since their buffers are not ours to
//! count.

use crate::op::operation::{Shape, Sizing, bytes};
use crate::op::{Op, Pipeline};
use crate::{Channels, Error, Format, Limits, Orientation, Probe};

/// JPEG shrink-on-load keeps at least this factor for the final resample, as libvips does:
/// the DCT-domain reduction is a block filter, the Lanczos pass after it does the quality.
pub(crate) const SHRINK_MARGIN: f64 = 2.0;

/// A JPEG's entropy decoding per source pixel (done whatever the DCT scale), and the rest of
/// the decode per decoded pixel, nanoseconds on one core (libjpeg-turbo: about 100 MP/s at
/// full scale).
const DECODE_NS_ENTROPY: f64 = 6.0;
const DECODE_NS_PER_PX: f64 = 6.0;

/// Fixed allowance for codec handles, tables and small buffers (the WebP decoder alone
/// allocates about 4 MB of tables for any image).
const OVERHEAD: u64 = 8 << 20;

/// A step's output: width, height, layout.
pub type StepSize = (u32, u32, Channels);

/// What a pipeline will do to one image, computed before decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Size the decoder must deliver at least (stored orientation), when the first step only
    /// shrinks: JPEG then decodes at the smallest M/8 scale that covers it.
    pub decode_need: Option<(u64, u64)>,
    /// Decoded size (stored orientation, after shrink-on-load).
    pub decoded: (u32, u32),
    /// Size and layout after each step, in order (oriented).
    pub steps: Vec<(u32, u32, Channels)>,
    /// Output size.
    pub output: (u32, u32),
    /// Output format.
    pub format: Format,
    /// Estimated peak heap bytes of the whole job in the kernel, input included.
    pub peak_bytes: u64,
    /// The stage that sets the peak, e.g. `step 2 'blur:3' on 8000x6000`.
    pub peak_at: String,
    /// Rough kernel time on one core, nanoseconds: decoding (the entropy decoding of the
    /// whole source, even at a reduced DCT scale), each step's pixels, encoding. An order
    /// of magnitude for routing, not a promise.
    pub cpu_ns: u64,
    /// The decoding's share of `cpu_ns` (done once for all the variants of a job).
    pub decode_ns: u64,
    /// Frames processed: an animation's frame count when it is written as an animation
    /// (see [`animation`]), else 1. The steps' sizes are each frame's; time counts them all.
    pub frames: u32,
    /// Whether the image the first step consumes may be kept (for the processor's next
    /// image) through the rest of the job and still stay within `peak_bytes`: every later
    /// stage with that buffer added fits under the peak the first step (or the decode) set.
    pub(crate) keeps_source: bool,
}

impl Plan {
    /// Peak estimate in MB (rounded up).
    pub fn peak_mb(&self) -> u64 {
        self.peak_bytes.div_ceil(1 << 20)
    }

    /// `Error::OverBudget` when the peak is over `budget_bytes`.
    pub fn check_budget(&self, budget_bytes: u64) -> Result<(), Error> {
        if self.peak_bytes > budget_bytes {
            return Err(Error::OverBudget {
                needed_mb: self.peak_mb(),
                budget_mb: budget_bytes / (1 << 20),
                detail: self.peak_at.clone(),
            });
        }
        Ok(())
    }
}

/// The animation `pipeline` writes from the image `probe` describes: the input is animated,
/// no `frame:N` picks one frame, and the output format holds animations (GIF, WebP).
/// Anything else decodes one frame (the first unless `frame:N` says).
pub fn animation(probe: &Probe, pipeline: &Pipeline) -> Option<crate::anim::Animation> {
    let format = pipeline.output.format.unwrap_or(probe.format.default_output());
    probe.animation.filter(|_| pipeline.frame.is_none() && crate::anim::animatable(format))
}

/// The steps that cannot run on every frame of an animation alike, refused before any work.
fn check_animated(pipeline: &Pipeline) -> Result<(), Error> {
    let refuse = |op: String, why: &str| {
        Err(Error::Op { op, reason: format!("{why}; pick one frame with frame:N, or write a still format") })
    };
    if let Some(op) = pipeline.ops.iter().find(|op| op.operation().content_sized()) {
        return refuse(op.to_string(), "its size depends on each frame's pixels, and an animation has one size");
    }
    if let Some(m) = pipeline.output.max_bytes {
        return refuse(format!("max-bytes:{m}"), "the quality search is for still images");
    }
    Ok(())
}

/// Size the first op needs from the decoder, in oriented coordinates, if it only shrinks.
fn shrink_need(ops: &[Op], w: u32, h: u32) -> Option<(u64, u64)> {
    let (nw, nh) = ops.first()?.operation().shrink_need(w, h)?;
    let m = |v: u64| (v as f64 * SHRINK_MARGIN).ceil() as u64;
    Some((m(nw), m(nh)))
}

pub(crate) struct Peak {
    pub(crate) bytes: u64,
    pub(crate) at: String,
}

impl Peak {
    fn see(&mut self, bytes: u64, at: impl FnOnce() -> String) {
        if bytes > self.bytes {
            self.bytes = bytes;
            self.at = at();
        }
    }
}

/// Plans `pipeline` on the image `probe` describes (`input_len` bytes). Refuses at once a
/// step whose output would exceed `limits.max_output_dimension`, and a crop that misses the
/// image.
pub fn plan(input_len: usize, probe: &Probe, pipeline: &Pipeline, limits: &Limits) -> Result<Plan, Error> {
    plan_decoded_for(input_len, probe, pipeline, limits, own_need(probe, pipeline))
}

/// The size `pipeline` needs from the decoder (stored orientation), `None` for all of it.
fn own_need(probe: &Probe, pipeline: &Pipeline) -> Option<(u64, u64)> {
    if pipeline.frame.is_some_and(|n| n > 0) || animation(probe, pipeline).is_some() {
        return None;
    }
    let (ow, oh) = probe.oriented_dims();
    shrink_need(&pipeline.ops, ow, oh).map(|(a, b)| if probe.orientation.swaps_dimensions() { (b, a) } else { (a, b) })
}

/// The plans of several pipelines run on one decode (a job's variants): the decode covers
/// what every variant needs (the largest shrink-on-load size, or the whole image when one
/// variant starts with a step that does not only shrink). Returns each variant's plan at
/// that decode, and their union: every variant's steps in order, the first variant's output,
/// the time with the decoding counted once, and the peak of the largest variant while the
/// shared decoded image is held for the next ones.
pub fn plan_variants(
    input_len: usize,
    probe: &Probe,
    pipelines: &[&Pipeline],
    limits: &Limits,
) -> Result<(Plan, Vec<Plan>), Error> {
    let needs: Vec<_> = pipelines.iter().map(|p| own_need(probe, p)).collect();
    let need = if needs.iter().any(Option::is_none) {
        None
    } else {
        needs.iter().flatten().copied().reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    };
    let plans =
        pipelines.iter().map(|p| plan_decoded_for(input_len, probe, p, limits, need)).collect::<Result<Vec<_>, _>>()?;
    let first = plans.first().ok_or_else(|| Error::Internal("a job with no variant".into()))?;
    let mut union = first.clone();
    if plans.len() == 1 {
        return Ok((union, plans));
    }
    let ch =
        if pipelines[0].frame.is_some_and(|n| n > 0) || first.frames > 1 { Channels::Rgba } else { probe.channels };
    let held = bytes(u64::from(first.decoded.0), u64::from(first.decoded.1), ch);
    union.steps = plans.iter().flat_map(|p| p.steps.iter().copied()).collect();
    union.cpu_ns = if plans.iter().any(|p| p.frames > 1) {
        // Animations decode on their own, each variant again.
        plans.iter().map(|p| p.cpu_ns).sum()
    } else {
        plans.iter().map(|p| p.cpu_ns - p.decode_ns).sum::<u64>() + first.decode_ns
    };
    let (i, top) = plans.iter().enumerate().max_by_key(|(_, p)| p.peak_bytes).expect("not empty");
    union.peak_bytes = top.peak_bytes + held;
    union.peak_at = format!("{} in variant {}, the shared decode held", top.peak_at, i + 1);
    Ok((union, plans))
}

/// [`plan`] with the decoder asked for `decode_need`.
fn plan_decoded_for(
    input_len: usize,
    probe: &Probe,
    pipeline: &Pipeline,
    limits: &Limits,
    decode_need: Option<(u64, u64)>,
) -> Result<Plan, Error> {
    // Held through the whole job: the input, the ICC profile, codec state.
    let mut input = input_len as u64 + OVERHEAD + probe.icc.as_ref().map_or(0, |p| p.len() as u64);
    let (ow, oh) = probe.oriented_dims();
    let mut peak = Peak { bytes: 0, at: String::new() };
    let canvas = bytes(u64::from(probe.width), u64::from(probe.height), Channels::Rgba);
    let animated = animation(probe, pipeline);
    if let Some(a) = animated {
        limits.check_animation(a.frames, probe.width, probe.height)?;
        check_animated(pipeline)?;
        // The decoder keeps its canvas, the previous frame and what it read of the file
        // (within its allocation cap, `codec::decode_alloc`) from one frame to the next.
        input += 2 * canvas + 2 * crate::codec::DECODE_SLACK;
    }
    if let Some(n) = pipeline.frame.filter(|&n| n > 0) {
        if let Some(a) = probe.animation.filter(|a| n >= a.frames) {
            return Err(Error::too_few_frames(format!("frame:{n}"), a.frames));
        }
        // Every frame before it is decoded and composed on the whole canvas: as many
        // canvases as an animation of n+1 frames, under the same limits.
        if let Err(Error::AnimationTooLarge { frames, pixels, limit }) =
            limits.check_animation(n.saturating_add(1), probe.width, probe.height)
        {
            let limit = format!("{limit} (frame:{n} decodes the frames before it)");
            return Err(Error::AnimationTooLarge { frames, pixels, limit });
        }
    }

    // Decode (and orientation).
    let mut ch = probe.channels;
    let source_px = f64::from(probe.width) * f64::from(probe.height);
    let mut ns = 0.0;
    let decoded = if pipeline.frame.is_some_and(|n| n > 0) || animated.is_some() {
        // Animated frames are composed on an RGBA canvas: the canvas, the frame, the copy.
        ch = Channels::Rgba;
        let slack = if animated.is_some() { 0 } else { 2 * crate::codec::DECODE_SLACK };
        peak.see(input + 3 * canvas + slack, || format!("decoding a frame of {}x{}", probe.width, probe.height));
        (probe.width, probe.height)
    } else if probe.shrinkable {
        let m = crate::codec::jpeg_scale(probe.width, probe.height, decode_need);
        let (w, h) = ((probe.width * m).div_ceil(8), (probe.height * m).div_ceil(8));
        peak.see(input + bytes(u64::from(w), u64::from(h), ch), || format!("decoding at {w}x{h}"));
        (w, h)
    } else {
        // The decoder's buffer, the 8-bit raster, and the decoder's tables and ancillary data
        // (an ICC profile inflated again, up to the slack, in a buffer that may double while
        // it grows); the decoder's hard cap is higher (`codec::decode_alloc`).
        let raster = bytes(u64::from(probe.width), u64::from(probe.height), ch);
        let cost = input + probe.native_bytes + raster + 2 * crate::codec::DECODE_SLACK;
        peak.see(cost, || format!("decoding {}x{}", probe.width, probe.height));
        (probe.width, probe.height)
    };
    let decoded_px = f64::from(decoded.0) * f64::from(decoded.1);
    ns += if probe.shrinkable {
        source_px * DECODE_NS_ENTROPY + decoded_px * DECODE_NS_PER_PX
    } else {
        // `frame:N` decodes the N frames before it too.
        decoded_px * 10.0 * f64::from(pipeline.frame.unwrap_or(0).saturating_add(1))
    };
    if probe.icc.is_some() && !pipeline.output.keep_icc {
        // The conversion to sRGB (see `cms`), on the decoded raster.
        ns += decoded_px * 4.0;
    }
    let decode_ns = ns as u64;
    let (mut w, mut h) = if probe.orientation.swaps_dimensions() { (decoded.1, decoded.0) } else { decoded };
    if probe.orientation != Orientation::Normal {
        peak.see(input + 2 * bytes(u64::from(w), u64::from(h), ch), || format!("orienting {w}x{h}"));
    }

    // Steps. The first sizes itself from the declared source (shrink-on-load never changes
    // output dimensions); the rest from the image in hand.
    let oriented = (w, h, ch);
    let steps = plan_steps(&pipeline.ops, Some((ow, oh)), (w, h, ch), limits, input, &mut peak, &mut ns)?;
    (w, h, ch) = steps.last().copied().unwrap_or((w, h, ch));

    // Encode.
    let format = pipeline.output.format.unwrap_or(probe.format.default_output());
    let icc = probe.icc.as_ref().map_or(0, |p| p.len() as u64);
    let frames = animated.map_or(1, |a| a.frames);
    if frames > 1 {
        // An animation is written frame by frame: the file so far (at most about 3 bytes a
        // pixel lossless, well under 1 lossy or GIF, held while its buffer doubles), and the
        // previous frame's RGBA pixels besides each frame's own encode.
        let px = u64::from(w) * u64::from(h);
        let per_px = if pipeline.output.lossless { 6 } else { 2 };
        input += u64::from(frames) * px * per_px + px * 4;
    }
    plan_encode(format, &pipeline.output, (w, h, ch), icc, input, &mut peak, &mut ns);
    // Every frame is decoded, stepped and encoded.
    ns *= f64::from(frames);
    let keeps_source = frames == 1 && !steps.is_empty() && {
        // The stages after the first step again, on their own, with the source held. A JPEG
        // encoder writes into the held buffer when it is large enough, rather than allocate.
        let (first, source) = (steps[0], bytes(u64::from(oriented.0), u64::from(oriented.1), oriented.2));
        let (mut rest, mut enc) = (Peak { bytes: 0, at: String::new() }, Peak { bytes: 0, at: String::new() });
        let mut ns_rest = 0.0;
        let later = plan_steps(&pipeline.ops[1..], None, first, limits, input, &mut rest, &mut ns_rest)?;
        let last = later.last().copied().unwrap_or(first);
        plan_encode(format, &pipeline.output, last, icc, input, &mut enc, &mut ns_rest);
        let buffer = jpeg_buffer(last.0, last.1);
        let borrowed = JPEG_ENCODE_BORROWS && format == Format::Jpeg && source >= buffer;
        let enc_held = if borrowed { enc.bytes - buffer } else { enc.bytes };
        rest.bytes.max(enc_held) + source <= peak.bytes
    };

    Ok(Plan {
        decode_need,
        decoded,
        steps,
        output: (w, h),
        format,
        peak_bytes: peak.bytes,
        peak_at: peak.at,
        cpu_ns: ns as u64,
        decode_ns: decode_ns * u64::from(frames),
        frames,
        keeps_source,
    })
}

/// The steps' sizes from an image of `start` (size and layout) in hand, adding each step's
/// memory to `peak` and its time to `ns`. `declared` is the size the first step's own rule
/// is computed from (the declared source, so shrink-on-load never changes output sizes).
fn plan_steps(
    ops: &[Op],
    declared: Option<(u32, u32)>,
    start: (u32, u32, Channels),
    limits: &Limits,
    input: u64,
    peak: &mut Peak,
    ns: &mut f64,
) -> Result<Vec<(u32, u32, Channels)>, Error> {
    let (mut w, mut h, mut ch) = start;
    let mut steps = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let (lw, lh) = match declared {
            Some(d) if i == 0 => d,
            _ => (w, h),
        };
        let before = bytes(u64::from(w), u64::from(h), ch);
        let sizing = Sizing { op, lw, lh, w, h, ch, limits };
        let Shape { w: nw, h: nh, ch: nch, scratch, in_place } = op.operation().plan(&sizing)?;
        let after = if in_place { 0 } else { bytes(u64::from(nw), u64::from(nh), nch) };
        peak.see(input + before + after + scratch, || format!("step {} '{op}' on {w}x{h}", i + 1));
        let px = f64::from(w) * f64::from(h) + f64::from(nw) * f64::from(nh);
        *ns += px * op.operation().ns_per_px();
        (w, h, ch) = (nw, nh, nch);
        steps.push((w, h, ch));
    }
    Ok(steps)
}

/// The copy without alpha a JPEG encoder makes of an image with alpha.
fn jpeg_flattened(px: u64, ch: Channels) -> u64 {
    if ch.has_alpha() { px * 3 } else { 0 }
}

/// libjpeg-turbo's worst-case output buffer for a `w x h` image, over `tj3JPEGBufSize`
/// (each side padded to 16, 3 bytes a pixel at most, 2 KB more).
fn jpeg_buffer(w: u32, h: u32) -> u64 {
    (u64::from(w) + 16) * (u64::from(h) + 16) * 3 + (64 << 10)
}

/// Whether the JPEG encoder writes into a buffer the processor keeps, when one is large
/// enough, instead of allocating its worst-case buffer (libjpeg-turbo only).
const JPEG_ENCODE_BORROWS: bool = cfg!(feature = "turbojpeg");

/// The encoder's memory (into `peak`) and time (into `ns`) for an image of `img`.
fn plan_encode(
    format: Format,
    spec: &crate::OutputSpec,
    img: (u32, u32, Channels),
    icc: u64,
    input: u64,
    peak: &mut Peak,
    ns: &mut f64,
) {
    let (w, h, ch) = img;
    let raster = bytes(u64::from(w), u64::from(h), ch);
    let px = u64::from(w) * u64::from(h);
    let encode = match format {
        // A flattened copy without alpha (of an image with alpha), libjpeg-turbo's buffer
        // and our copy of it.
        Format::Jpeg => jpeg_flattened(px, ch) + 2 * jpeg_buffer(w, h) + icc,
        // Compressed data can exceed the raw rows slightly; it is held twice (stream, file).
        Format::Png => 2 * (raster + raster / 64 + (64 << 10)) + icc,
        // Our RGB(A) copy, libwebp's YUV planes and output, and the muxed copy.
        Format::Webp => px * 4 + px * 4 + 2 * (px * 4 + (64 << 10)) + icc,
        // The `image` encoders: a copy, an RGBA copy, the quantiser's buffers, the file.
        Format::Gif => raster + 5 * (px * 4) + (64 << 10),
        Format::Tiff | Format::Bmp | Format::Heic => raster + 2 * (px * 4) + (64 << 10),
        // Our RGB(A) pixel copy, then rav1e: the source frame in 4:2:0 planes at 16 bits a
        // sample, the reconstruction, its reference and analysis buffers (about 30 bytes a
        // pixel measured at speed 6), and the file.
        Format::Avif => raster + px * 4 + px * 30 + (4 << 20),
    };
    // `max-bytes` keeps the best and the smallest file of its search besides the encoder's
    // own buffers, and encodes up to 8 times (a halving search over the quality).
    let (search_bytes, encodes) = if spec.max_bytes.is_some() { (2 * (px * 4 + (64 << 10)), 8.0) } else { (0, 1.0) };
    peak.see(input + raster + encode + search_bytes, || format!("encoding {w}x{h} as {format}"));
    *ns += encodes
        * px as f64
        * match format {
            Format::Jpeg => 6.0,
            Format::Png => 25.0,
            Format::Webp => 60.0,
            Format::Gif => 80.0,
            Format::Tiff | Format::Bmp | Format::Heic => 3.0,
            // rav1e at speed 6 took 1,500 ns a pixel with its x86-64 assembly and 3,800
            // without (the arm64 build) on the bench photos; routing plans for the function,
            // so the slower figure, scaled by the speed setting.
            Format::Avif => {
                3_500.0
                    * match spec.speed.unwrap_or(crate::OutputSpec::DEFAULT_AVIF_SPEED) {
                        1 => 10.0,
                        2 => 6.0,
                        3 => 3.0,
                        4 => 1.3,
                        5 => 1.1,
                        6 => 1.0,
                        7 => 0.95,
                        8 => 0.9,
                        9 => 0.8,
                        _ => 0.7,
                    }
            }
        };
}

/// The steps after a content-sized one (`trim`), planned again from the image it made:
/// their sizes, and the peak of them and the encoder, to hold against the peak the job
/// was admitted on.
pub(crate) fn replan(
    ops: &[Op],
    img: (u32, u32, Channels),
    pipeline: &Pipeline,
    probe: &Probe,
    input_len: usize,
    limits: &Limits,
) -> Result<(Vec<StepSize>, Peak), Error> {
    let icc = probe.icc.as_ref().map_or(0, |p| p.len() as u64);
    let input = input_len as u64 + OVERHEAD + icc;
    let (mut peak, mut ns) = (Peak { bytes: 0, at: String::new() }, 0.0);
    let steps = plan_steps(ops, None, img, limits, input, &mut peak, &mut ns)?;
    let last = steps.last().copied().unwrap_or(img);
    let format = pipeline.output.format.unwrap_or(probe.format.default_output());
    plan_encode(format, &pipeline.output, last, icc, input, &mut peak, &mut ns);
    Ok((steps, peak))
}
