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
        _ => return,
    };
    if u64::from(probe.width) * u64::from(probe.height) > PROCESS_MAX_PIXELS {
        return;
    }
    // A fresh processor per input keeps every crash reproducible from its input alone.
    if let Ok(out) = Processor::new(*limits).process(data, pipeline) {
        assert_eq!(
            (out.source.width, out.source.height),
            (probe.width, probe.height),
            "process() read a different source size than the probe"
        );
        assert_eq!((out.width, out.height), plan.output, "output size differs from the plan");
    }
});
