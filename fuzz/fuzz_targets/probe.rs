//! Arbitrary bytes through the header probe, the planner and (for small declared sizes) the
//! whole processor. Nothing may panic; a successful run must agree with the probe and plan.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pixq_kernel::{Limits, Pipeline, Processor};

/// Declared sizes up to this many pixels are also decoded and processed.
const PROCESS_MAX_PIXELS: u64 = 1_000_000;

static LIMITS: LazyLock<Limits> = LazyLock::new(|| Limits::default().max_pixels(4_000_000).max_dimension(8_000));
static PIPELINE: LazyLock<Pipeline> = LazyLock::new(|| Pipeline::parse("thumbnail:64").unwrap());
/// `PIXQ_FUZZ_TRACE=1` prints what each input did (for checking seeds and triaging).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("PIXQ_FUZZ_TRACE").is_some());

fuzz_target!(|data: &[u8]| {
    let (limits, pipeline) = (&*LIMITS, &*PIPELINE);
    let probe = pixq_kernel::codec::probe(data, limits);
    let planned = pixq_kernel::plan(data, pipeline, limits);
    let (probe, plan) = match (probe, planned) {
        (Ok(probe), Ok((planned_probe, plan))) => {
            assert_eq!(planned_probe, probe, "plan() probed differently from codec::probe()");
            (probe, plan)
        }
        (Err(e), Ok(_)) => panic!("codec::probe refused ({e}) but plan() accepted"),
        (probe, planned) => {
            if *TRACE {
                eprintln!("trace: probe {:?}, plan {:?}", probe.map(|p| (p.format, p.width, p.height)), planned.err());
            }
            return;
        }
    };
    if u64::from(probe.width) * u64::from(probe.height) > PROCESS_MAX_PIXELS {
        if *TRACE {
            eprintln!(
                "trace: {} {}x{} planned, not processed (over {PROCESS_MAX_PIXELS} pixels)",
                probe.format, probe.width, probe.height
            );
        }
        return;
    }
    // A fresh processor per input keeps every crash reproducible from its input alone.
    let result = Processor::new(*limits).process(data, pipeline);
    if *TRACE {
        let (f, w, h, o) = (probe.format, probe.width, probe.height, probe.orientation);
        match &result {
            Ok(out) => eprintln!(
                "trace: {f} {w}x{h} {o:?} -> {}x{} {} ({} bytes)",
                out.width,
                out.height,
                out.format,
                out.bytes.len()
            ),
            Err(e) => eprintln!("trace: {f} {w}x{h} {o:?} -> process error: {e}"),
        }
    }
    if let Ok(out) = result {
        assert_eq!(
            (out.source.width, out.source.height),
            (probe.width, probe.height),
            "process() read a different source size than the probe"
        );
        assert_eq!((out.width, out.height), plan.output, "output size differs from the plan");
    }
});
