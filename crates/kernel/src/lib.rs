//! pixq-kernel: the pure, synchronous image kernel every pixq runtime shares.
//!
//! It takes input bytes, a [`Pipeline`] and [`Limits`], and returns output bytes plus
//! metadata. No async runtime, no AWS, no filesystem: async callers run it on a blocking
//! thread (`spawn_blocking`).
//!
//! # Layout
//! - [`op`]: the pipeline steps, each in one home (its arguments, spec and parser, canonical
//!   form, size rule and pixels), the pipeline-string parser and its canonical form.
//! - [`codec`]: header probe with limits, decode (libjpeg-turbo shrink-on-load for JPEG,
//!   the `image` crate for the rest), encode.
//! - [`meta`]: EXIF orientation and ICC profiles.
//! - [`ops`]: the algorithms behind the steps, one module per family (geometry, resize, color, filter, edges,
//!   smartcrop).
//! - [`png`]: the PNG encoder (adaptive filters, zlib-rs).
//! - [`plan`]: every step's size and the peak memory of a job, from the header alone.
//! - [`Stop`]: cooperative cancellation and time limits, checked inside long operations.
//! - [`Processor`]: one call from bytes to bytes, with per-stage timings; keep one per
//!   worker thread to reuse scratch buffers and codec handles.
//!
//! # Example
//! ```
//! use pixq_kernel::{Limits, Pipeline, Processor, Raster, Channels, Format};
//! let src = Raster::from_fn(64, 48, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, 0]));
//! let png = pixq_kernel::encode(&src, Format::Png, &Default::default()).unwrap();
//! let pipeline = Pipeline::parse("thumbnail:32,grayscale,format:jpeg").unwrap();
//! let out = Processor::new(Limits::default()).process(&png, &pipeline).unwrap();
//! assert_eq!((out.width, out.height, out.format), (32, 24, Format::Jpeg));
//! ```

pub mod anim;
pub mod cms;
pub mod codec;
#[cfg(all(feature = "heif", target_os = "linux"))]
mod de265;
mod error;
mod format;
/// Calls to libde265's initialiser held back until this process first reads a HEIF file
/// (`None` once they were made): see `src/de265.rs`. For tests.
#[cfg(all(feature = "heif", target_os = "linux"))]
#[doc(hidden)]
pub fn de265_inits_held_back() -> Option<u32> {
    de265::held_back()
}
#[cfg(feature = "heif")]
mod heif;
#[cfg(feature = "heif")]
mod heif_boxes;
pub mod isolation;
mod limits;
pub mod meta;
pub mod op;
pub mod ops;
pub mod plan;
pub mod png;
mod raster;
mod stop;
mod tiff_header;

use std::time::{Duration, Instant};

pub use codec::Probe;
pub use error::{Error, ParseError};
pub use format::Format;
pub use limits::Limits;
pub use meta::Orientation;
pub use op::variants::{Recipe, Variant};
pub use op::{Op, OutputSpec, Pipeline};
pub use ops::geometry::Rect;
pub use plan::Plan;
pub use raster::{Channels, Raster};
pub use stop::Stop;

/// Version of the pixel semantics. It is hashed into content-addressed output keys, so bump
/// it whenever the same input and pipeline could give different bytes.
pub const KERNEL_VERSION: &str = concat!("k9-", env!("CARGO_PKG_VERSION"));

/// Time spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Header probe and pixel decode (including orientation).
    pub decode: Duration,
    /// All operations.
    pub ops: Duration,
    /// Encode.
    pub encode: Duration,
}

/// The result of one [`Processor::process`] call.
#[derive(Debug, Clone)]
pub struct Output {
    /// Encoded image.
    pub bytes: Vec<u8>,
    /// Output format.
    pub format: Format,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
    /// What the input header said.
    pub source: Probe,
    /// The box the last `smartcrop` chose, in the coordinates of the image it cropped.
    pub smart_crop: Option<Rect>,
    /// Per-stage wall time.
    pub timings: Timings,
}

/// Images that steps lay on the picture (`watermark:NAME`), by name, as encoded files. The
/// kernel reads no store: its caller fetches them (the jobs layer from `watermarks/NAME`).
pub type Overlays = std::collections::BTreeMap<String, Vec<u8>>;

/// Bytes-to-bytes processing with reusable state (resizer buffers, codec handles).
#[derive(Debug)]
pub struct Processor {
    limits: Limits,
    resizer: ops::resize::Resizer,
    codecs: codec::Codecs,
    overlays: Overlays,
}

/// Processes one image with a fresh [`Processor`].
pub fn process(input: &[u8], pipeline: &Pipeline, limits: &Limits) -> Result<Output, Error> {
    Processor::new(*limits).process(input, pipeline)
}

/// Encodes a raster with default codec state (handy for tests and tools).
pub fn encode(img: &Raster, format: Format, spec: &OutputSpec) -> Result<Vec<u8>, Error> {
    codec::Codecs::default().encode(img, format, spec, None, &Stop::new(), &mut raster::Pool::default())
}

/// Decodes bytes to a raster with orientation applied (no operations).
pub fn decode(input: &[u8], limits: &Limits) -> Result<Raster, Error> {
    let probe = codec::probe(input, limits)?;
    let r = codec::Codecs::default().decode(input, &probe, limits, None, &mut raster::Pool::default(), &Stop::new())?;
    Ok(ops::geometry::orient(&r, probe.orientation))
}

/// Probes `input` and plans `pipeline` on it: every step's size and the peak memory, without
/// decoding a pixel. Refuses what the limits refuse.
pub fn plan(input: &[u8], pipeline: &Pipeline, limits: &Limits) -> Result<(Probe, Plan), Error> {
    let probe = codec::probe(input, limits)?;
    let plan = plan::plan(input.len(), &probe, pipeline, limits)?;
    Ok((probe, plan))
}

/// [`plan`] for a job's variants run on one decode: their union (see
/// [`plan::plan_variants`]). With one pipeline it is that pipeline's plan.
pub fn plan_all(input: &[u8], pipelines: &[&Pipeline], limits: &Limits) -> Result<(Probe, Plan), Error> {
    let probe = codec::probe(input, limits)?;
    let (union, _) = plan::plan_variants(input.len(), &probe, pipelines, limits)?;
    Ok((probe, union))
}

impl Processor {
    /// A processor enforcing `limits`.
    pub fn new(limits: Limits) -> Processor {
        Processor {
            limits,
            resizer: ops::resize::Resizer::new(),
            codecs: codec::Codecs::default(),
            overlays: Overlays::new(),
        }
    }

    /// Sets the images `watermark` steps lay on pictures, until set again.
    pub fn set_overlays(&mut self, overlays: Overlays) {
        self.overlays = overlays;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Encodes; with `max-bytes` on a JPEG or lossy WebP output that is too large, searches
    /// (by halving) for the highest quality below the asked one whose file fits, and gives
    /// the quality-1 file when none does.
    fn encode_within(
        &mut self,
        img: &Raster,
        format: Format,
        spec: &OutputSpec,
        icc: Option<&[u8]>,
        stop: &Stop,
    ) -> Result<Vec<u8>, Error> {
        let first = self.codecs.encode(img, format, spec, icc, stop, &mut self.resizer.pool)?;
        let lossy = format == Format::Jpeg || format == Format::Avif || (format == Format::Webp && !spec.lossless);
        let Some(max) = spec.max_bytes.map(|m| m as usize).filter(|m| lossy && first.len() > *m) else {
            return Ok(first);
        };
        let asked = spec.quality.unwrap_or(OutputSpec::default_quality(format));
        let (mut lo, mut hi) = (1u8, asked.saturating_sub(1).max(1));
        let (mut best, mut smallest) = (None, first);
        while lo <= hi {
            stop.check()?;
            let q = lo + (hi - lo) / 2;
            let bytes = self.codecs.encode(
                img,
                format,
                &OutputSpec { quality: Some(q), ..*spec },
                icc,
                stop,
                &mut self.resizer.pool,
            )?;
            if bytes.len() <= max {
                best = Some(bytes);
                lo = q + 1;
            } else {
                if bytes.len() < smallest.len() {
                    smallest = bytes;
                }
                if q == 1 {
                    break;
                }
                hi = q - 1;
            }
        }
        Ok(best.unwrap_or(smallest))
    }

    /// Decodes `input`, applies EXIF orientation and every op, and encodes the result.
    pub fn process(&mut self, input: &[u8], pipeline: &Pipeline) -> Result<Output, Error> {
        self.process_with(input, pipeline, &Stop::new())
    }

    /// [`Processor::process`] that ends early with `Error::Cancelled` or `Error::TimedOut`
    /// when `stop` fires (checked between steps and every few rows inside long ones).
    pub fn process_with(&mut self, input: &[u8], pipeline: &Pipeline, stop: &Stop) -> Result<Output, Error> {
        let mut outs = self.process_variants(input, &[pipeline], stop)?;
        outs.pop().ok_or_else(|| Error::Internal("no output".into()))
    }

    /// Several outputs from one decode (a job's variants, e.g. a small and a large
    /// thumbnail): the image is decoded once at the shrink-on-load size the most demanding
    /// variant needs ([`plan::plan_variants`]), converted and oriented once, and each
    /// pipeline runs on its own copy. Output `i` is what `process_with(input, pipelines[i])`
    /// gives in size and format; its pixels may differ slightly when the shared decode is
    /// larger than that variant alone would have decoded (its resample then starts from more
    /// pixels). The pipelines must agree on `frame` and `keep-icc` (see
    /// [`op::variants::Variant`]). The first output's timings carry the decode.
    pub fn process_variants(
        &mut self,
        input: &[u8],
        pipelines: &[&Pipeline],
        stop: &Stop,
    ) -> Result<Vec<Output>, Error> {
        if pipelines.is_empty() {
            return Ok(Vec::new());
        }
        let probe = codec::probe(input, &self.limits)?;
        self.process_probed(input, &probe, pipelines, stop)
    }

    /// [`Processor::process_variants`] with the header already read: `probe` is what
    /// [`plan_all`] (or `codec::probe`) gave for `input` under this processor's limits, so a
    /// caller that planned the job does not read the header twice (for a HEIF file, that is
    /// a second child process). The decoders still hold the image to the probe's size: a
    /// probe of other bytes is an error, not another image's output.
    pub fn process_probed(
        &mut self,
        input: &[u8],
        probe: &Probe,
        pipelines: &[&Pipeline],
        stop: &Stop,
    ) -> Result<Vec<Output>, Error> {
        let t0 = Instant::now();
        let Some(first) = pipelines.first() else {
            return Ok(Vec::new());
        };
        // What the probe checked that is cheap to check again: the input's size and format,
        // and the declared size against this processor's limits.
        if codec::sniff(input, &self.limits)? != probe.format {
            return Err(codec::decode_err(probe.format, "the probe is of a file of another format"));
        }
        self.limits.check_dimensions(probe.width, probe.height)?;
        let (union, plans) = plan::plan_variants(input.len(), probe, pipelines, &self.limits)?;
        stop.check()?;
        if plans.iter().any(|p| p.frames > 1) {
            // An animation is decoded frame by frame for each variant that writes one; a
            // variant that writes a still takes its frame on its own.
            return pipelines
                .iter()
                .zip(&plans)
                .map(|(pipeline, plan)| {
                    if plan.frames > 1 {
                        self.animate(input, probe, pipeline, plan, stop)
                    } else {
                        self.process_probed(input, probe, &[pipeline], stop).map(|mut o| o.remove(0))
                    }
                })
                .collect();
        }
        let decoded = match first.frame {
            Some(n) if n > 0 => self.codecs.decode_frame(input, probe, &self.limits, n, stop)?,
            _ => self.codecs.decode(input, probe, &self.limits, union.decode_need, &mut self.resizer.pool, stop)?,
        };
        let mut shared = Some(self.prepare(decoded, probe, first.output.keep_icc, stop)?);
        let mut decode_time = t0.elapsed();
        let mut outs = Vec::with_capacity(pipelines.len());
        for (i, (pipeline, plan)) in pipelines.iter().zip(&plans).enumerate() {
            let img = if i + 1 == pipelines.len() {
                shared.take().expect("held until the last variant")
            } else {
                shared.clone().expect("held until the last variant")
            };
            let keep = pipelines.len() == 1 && plan.keeps_source;
            let mut out = self.finish(img, probe, input.len(), pipeline, plan, keep, stop)?;
            out.timings.decode = std::mem::take(&mut decode_time);
            outs.push(out);
        }
        Ok(outs)
    }

    /// Writes an animation: each frame decoded (composed on the canvas), converted to sRGB
    /// (an animated output carries no profile), oriented, run through the steps and encoded
    /// before the next is decoded. Delays and the loop count are kept. Frames after the
    /// first crop where the first one's `smartcrop` did, so the subject does not jump.
    fn animate(
        &mut self,
        input: &[u8],
        probe: &Probe,
        pipeline: &Pipeline,
        plan: &Plan,
        stop: &Stop,
    ) -> Result<Output, Error> {
        let plays = probe.animation.map_or(0, |a| a.plays);
        let mut timings = Timings::default();
        let mut t = Instant::now();
        let frames = self.codecs.frames(input, probe, &self.limits)?;
        let (mut writer, mut pins, mut smart_crop, mut seen) = (None, Vec::new(), None, 0u32);
        for frame in frames {
            stop.check()?;
            let frame = frame.map_err(|e| codec::decode_err(probe.format, e))?;
            seen += 1;
            if seen > plan.frames {
                return Err(codec::decode_err(
                    probe.format,
                    format!("the decoder finds more frames than the {} the file's blocks declare", plan.frames),
                ));
            }
            let delay = codec::frame_delay_ms(&frame);
            let img = self.prepare(codec::frame_raster(frame), probe, false, stop)?;
            timings.decode += lap(&mut t);
            let (img, chosen) = self.run_steps(img, probe, input.len(), pipeline, plan, false, stop, &mut pins)?;
            smart_crop = smart_crop.or(chosen);
            timings.ops += lap(&mut t);
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    writer.insert(anim::Writer::new(plan.format, img.width(), img.height(), plays, &pipeline.output)?)
                }
            };
            w.add(&img, delay)?;
            timings.encode += lap(&mut t);
        }
        let writer = writer.ok_or_else(|| codec::decode_err(probe.format, "the animation has no frame"))?;
        let bytes = writer.finish()?;
        timings.encode += t.elapsed();
        Ok(Output {
            bytes,
            format: plan.format,
            width: plan.output.0,
            height: plan.output.1,
            source: probe.clone(),
            smart_crop,
            timings,
        })
    }

    /// The decoded image in sRGB (unless the profile is kept) and upright.
    fn prepare(&mut self, mut decoded: Raster, probe: &Probe, keep_icc: bool, stop: &Stop) -> Result<Raster, Error> {
        // Colours to sRGB (on the smallest raster there is: after shrink-on-load), unless
        // the pipeline keeps the profile.
        if let Some(icc) = probe.icc.as_deref().filter(|_| !keep_icc && !probe.inks) {
            cms::to_srgb(&mut decoded, icc, stop)?;
        }
        Ok(if probe.orientation == Orientation::Normal {
            decoded
        } else {
            ops::geometry::orient(&decoded, probe.orientation)
        })
    }

    /// Runs `pipeline`'s steps on a prepared image (or one frame of an animation). Returns
    /// the image and the box the last `smartcrop` chose. `pins` is empty for the first (or
    /// only) frame, and gets the box each step chose; later frames take those boxes.
    #[allow(clippy::too_many_arguments)]
    fn run_steps(
        &mut self,
        mut img: Raster,
        probe: &Probe,
        input_len: usize,
        pipeline: &Pipeline,
        plan: &Plan,
        keep_source: bool,
        stop: &Stop,
        pins: &mut Vec<Option<Rect>>,
    ) -> Result<(Raster, Option<Rect>), Error> {
        let record = pins.is_empty();
        let mut smart_crop = None;
        let mut steps = std::borrow::Cow::Borrowed(&plan.steps[..]);
        // Each step makes the size its plan computed (the first one from the source as
        // declared, so shrink-on-load never changes output dimensions), checked after it.
        // A content-sized step (`trim`) makes at most its planned size; the steps after it
        // are planned again from what it made, within the memory the job was admitted on.
        for (i, op) in pipeline.ops.iter().enumerate() {
            stop.check()?;
            let want = steps.get(i).copied().ok_or_else(|| Error::Internal(format!("no plan for step {}", i + 1)))?;
            let mut chosen = None;
            let mut cx = op::operation::Apply {
                want: (want.0, want.1),
                resizer: &mut self.resizer,
                smart: &mut chosen,
                pinned: if record { None } else { pins.get(i).copied().flatten() },
                stop,
                overlays: &self.overlays,
                keep_source: i == 0 && keep_source,
            };
            img = op.operation().apply(img, &mut cx)?;
            if record {
                pins.push(chosen);
            }
            smart_crop = chosen.or(smart_crop);
            let got = (img.width(), img.height(), img.channels());
            if op.operation().content_sized() && got != want && got.0 <= want.0 && got.1 <= want.1 && got.2 == want.2 {
                let (rest, peak) = plan::replan(&pipeline.ops[i + 1..], got, pipeline, probe, input_len, &self.limits)?;
                if peak.bytes > plan.peak_bytes {
                    return Err(Error::OverBudget {
                        needed_mb: peak.bytes.div_ceil(1 << 20),
                        budget_mb: plan.peak_mb(),
                        detail: format!(
                            "after step {} '{op}' made {}x{}, {} (the job was admitted for its plan)",
                            i + 1,
                            got.0,
                            got.1,
                            peak.at
                        ),
                    });
                }
                let mut s = steps.into_owned();
                s.truncate(i);
                s.push(got);
                s.extend(rest);
                steps = std::borrow::Cow::Owned(s);
                continue;
            }
            if got != want {
                return Err(Error::Internal(format!(
                    "step {} '{op}' made {}x{} {:?}, its plan said {want:?}",
                    i + 1,
                    img.width(),
                    img.height(),
                    img.channels()
                )));
            }
        }
        Ok((img, smart_crop))
    }

    /// Runs `pipeline`'s steps on the prepared image and encodes the result.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        img: Raster,
        probe: &Probe,
        input_len: usize,
        pipeline: &Pipeline,
        plan: &Plan,
        keep_source: bool,
        stop: &Stop,
    ) -> Result<Output, Error> {
        let t1 = Instant::now();
        let (img, smart_crop) =
            self.run_steps(img, probe, input_len, pipeline, plan, keep_source, stop, &mut Vec::new())?;
        let t2 = Instant::now();
        stop.check()?;

        let format = plan.format;
        // The profile goes out only with `keep-icc` (the pixels were converted to sRGB
        // otherwise), and only onto an output of its colour space.
        let icc = probe
            .icc
            .as_deref()
            .filter(|p| pipeline.output.keep_icc && !probe.inks && meta::icc_fits(p, img.channels()));
        let bytes = self.encode_within(&img, format, &pipeline.output, icc, stop)?;
        let t3 = Instant::now();
        let out = Output {
            bytes,
            format,
            width: img.width(),
            height: img.height(),
            source: probe.clone(),
            smart_crop,
            timings: Timings { decode: Duration::ZERO, ops: t2 - t1, encode: t3 - t2 },
        };
        // The job's last allocation is made: its image is kept for the next one.
        self.resizer.recycle(img);
        Ok(out)
    }
}

/// The time since `t`, and `t` moved to now: one stage of a loop's timings.
fn lap(t: &mut Instant) -> Duration {
    let now = Instant::now();
    let d = now - *t;
    *t = now;
    d
}
