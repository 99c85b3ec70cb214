//! HEIF and AVIF read through a runner (`pixq_kernel::isolation`): what travels as requests
//! and replies gives the same probe and the same pixels as libheif called in place, and every
//! way a child can fail (a crash, a missing program, a stop, a reply that does not add up) is
//! the job's error, never a panic. The runner here answers in this process, so the test sees
//! the wire format alone; `pixq-jobs`' `tests/isolation.rs` runs real child processes.
//! One test function: the runner is installed once per process, after the in-place reads.
#![cfg(all(feature = "heif", feature = "avif"))]

mod common;

use std::sync::Mutex;

use pixq_kernel::isolation::{Failure, Runner, answer, isolate_heif};
use pixq_kernel::{Channels, Error, Format, Limits, Pipeline, Processor, Raster, Stop};

/// What the loopback runner does with the next requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Answer,
    Crash,
    Unavailable,
    /// Answers, then flips the byte at this offset from the end of the reply.
    Flip(usize),
    /// Answers, then drops the reply's last `n` bytes.
    Cut(usize),
    /// Answers with more than `reply_max` bytes.
    TooLong,
    /// Waits for the stop, checking it as a real runner does.
    Hang,
}

static MODE: Mutex<(Mode, Mode)> = Mutex::new((Mode::Answer, Mode::Answer));
static CALLS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Answers in this process through the wire format: (mode for header reads, mode for decodes).
struct Loopback;

impl Runner for Loopback {
    fn run(&self, request: &[&[u8]], reply_max: usize, stop: &Stop) -> Result<Vec<u8>, Failure> {
        let request = request.concat();
        CALLS.lock().unwrap().push(request[0]);
        let (header, pixels) = *MODE.lock().unwrap();
        let mode = if request[0] == 1 { header } else { pixels };
        let mut reply = answer(&request);
        assert!(reply.len() <= reply_max, "the answer ({} bytes) is over the runner's limit {reply_max}", reply.len());
        match mode {
            Mode::Answer => {}
            Mode::Crash => return Err(Failure::Crashed("crashed with signal 11 (SIGSEGV)".into())),
            Mode::Unavailable => return Err(Failure::Unavailable("could not be started: no such file".into())),
            Mode::Flip(at) => {
                let i = reply.len() - at;
                reply[i] ^= 0x5A;
            }
            Mode::Cut(n) => reply.truncate(reply.len().saturating_sub(n)),
            Mode::TooLong => return Err(Failure::Crashed(format!("wrote more than the {reply_max} bytes"))),
            Mode::Hang => loop {
                if let Err(e) = stop.check() {
                    return Err(Failure::Stopped(e));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            },
        }
        Ok(reply)
    }
}

fn set(header: Mode, pixels: Mode) {
    *MODE.lock().unwrap() = (header, pixels);
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(common::samples_dir().join(name)).unwrap()
}

/// The inputs: both real samples, an AVIF with alpha, one whose colours an `nclx` box names
/// (Display P3: the probe makes a profile of it), and a HEIC of a file type box alone
/// (libheif's error).
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let alpha = Raster::from_fn(64, 48, Channels::Rgba, |x, y, p| {
        p.copy_from_slice(&[(x * 4) as u8, (y * 5) as u8, 90, if x < 32 { 255 } else { 0 }]);
    });
    let png = pixq_kernel::encode(&alpha, Format::Png, &Default::default()).unwrap();
    let limits = Limits::default();
    let with_alpha = pixq_kernel::process(&png, &Pipeline::parse("format:avif,quality:90").unwrap(), &limits).unwrap();
    let rgb = Raster::from_fn(64, 64, Channels::Rgb, |x, y, p| p.copy_from_slice(&[(x * 3) as u8, (y * 3) as u8, 120]));
    let png = pixq_kernel::encode(&rgb, Format::Png, &Default::default()).unwrap();
    let ours = pixq_kernel::process(&png, &Pipeline::parse("format:avif,quality:90").unwrap(), &limits).unwrap().bytes;
    let mdat = ours.windows(4).position(|w| w == b"mdat").unwrap();
    let size = u32::from_be_bytes(ours[mdat - 4..mdat].try_into().unwrap()) as usize;
    let p3 = avif_serialize::Aviffy::new()
        .set_color_primaries(avif_serialize::constants::ColorPrimaries::DisplayP3)
        .to_vec(&ours[mdat + 4..mdat - 4 + size], None, 64, 64, 8);
    let heic = sample("chelsea-hevc.heic");
    // A file type box and nothing else: past the box walk, refused by libheif.
    let bare = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    vec![
        ("chelsea-hevc.heic", heic),
        ("chelsea-av1.avif", sample("chelsea-av1.avif")),
        ("alpha.avif", with_alpha.bytes),
        ("p3.avif", p3),
        ("bare.heic", bare),
    ]
}

/// A read's outcome as comparable text.
fn read(input: &[u8]) -> (String, String) {
    let limits = Limits::default();
    let probe = match pixq_kernel::codec::probe(input, &limits) {
        Ok(p) => format!("{p:?}"),
        Err(e) => format!("error: {e}"),
    };
    let pixels = match pixq_kernel::decode(input, &limits) {
        Ok(r) => format!("{}x{} {:?} {}", r.width(), r.height(), r.channels(), fingerprint(r.data())),
        Err(e) => format!("error: {e}"),
    };
    (probe, pixels)
}

/// A short fingerprint of pixels (FNV-1a).
fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn decode_err(input: &[u8]) -> Error {
    pixq_kernel::decode(input, &Limits::default()).expect_err("a failed read is an error")
}

#[test]
fn reads_through_a_runner_match_reads_in_place_and_failures_are_errors() {
    let inputs = inputs();
    let in_place: Vec<_> = inputs.iter().map(|(_, b)| read(b)).collect();
    assert!(!in_place[0].1.starts_with("error"), "the HEIC decodes in place: {:?}", in_place[0]);
    assert!(in_place[2].0.contains("Rgba"), "alpha is seen: {}", in_place[2].0);
    assert!(in_place[3].0.contains("icc: Some"), "the nclx colours become a profile: {}", in_place[3].0);
    assert!(in_place[4].0.starts_with("error: cannot decode heic"), "{}", in_place[4].0);
    assert!(CALLS.lock().unwrap().is_empty());

    assert!(isolate_heif(Box::new(Loopback)));
    assert!(!isolate_heif(Box::new(Loopback)), "a second runner is refused");
    for ((name, bytes), want) in inputs.iter().zip(&in_place) {
        assert_eq!(&read(bytes), want, "{name} through the runner");
    }
    let calls = CALLS.lock().unwrap().clone();
    assert!(calls.contains(&1) && calls.contains(&2), "both reads went through the runner: {calls:?}");
    // Not HEIF: never handed to the runner.
    let n = CALLS.lock().unwrap().len();
    let png = pixq_kernel::encode(&Raster::new(4, 4, Channels::Rgb), Format::Png, &Default::default()).unwrap();
    pixq_kernel::decode(&png, &Limits::default()).unwrap();
    assert_eq!(CALLS.lock().unwrap().len(), n);

    let heic = &inputs[0].1;
    // A crash is the file's: a decode error naming it. A missing program is not: Unavailable.
    for (header, pixels) in [(Mode::Crash, Mode::Answer), (Mode::Answer, Mode::Crash)] {
        set(header, pixels);
        match decode_err(heic) {
            Error::Decode { format: Format::Heic, reason } => {
                assert!(reason.contains("process crashed with signal 11"), "{reason}")
            }
            e => panic!("a crash in {header:?}/{pixels:?} gave {e:?}"),
        }
    }
    for (header, pixels) in [(Mode::Unavailable, Mode::Answer), (Mode::Answer, Mode::Unavailable)] {
        set(header, pixels);
        assert!(matches!(decode_err(heic), Error::Unavailable(r) if r.contains("could not be started")));
    }
    // Replies that do not add up: every byte of the header reply's tail and of the picture
    // reply's tail flipped, replies cut short, too long.
    // A header of another size is refused by the child that decodes; flipped colour code
    // points only name other colours.
    for at in 1..=14 {
        set(Mode::Flip(at), Mode::Answer);
        if let Ok(r) = pixq_kernel::decode(heic, &Limits::default()) {
            assert!(
                at == 2 || at == 3,
                "flipping byte -{at} of the header reply went unseen: {}x{}",
                r.width(),
                r.height()
            );
        }
    }
    for at in 1..=10 {
        set(Mode::Answer, Mode::Flip(at));
        let e = decode_err(heic);
        assert!(matches!(e, Error::Decode { .. }), "flipping byte -{at} of the picture reply: {e:?}");
    }
    for n in [1, 2, 9, 13, 14, 100] {
        for (header, pixels) in [(Mode::Cut(n), Mode::Answer), (Mode::Answer, Mode::Cut(n))] {
            set(header, pixels);
            assert!(matches!(decode_err(heic), Error::Decode { .. }), "cut {n} from {header:?}/{pixels:?}");
        }
    }
    set(Mode::Answer, Mode::TooLong);
    assert!(matches!(decode_err(heic), Error::Decode { reason, .. } if reason.contains("wrote more")));
    // A stop reaches a decode in a child: cancelled, or timed out.
    set(Mode::Answer, Mode::Hang);
    let pipeline = Pipeline::parse("thumbnail:64").unwrap();
    let stop = Stop::new();
    let canceller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            stop.cancel();
        })
    };
    let e = Processor::new(Limits::default()).process_with(heic, &pipeline, &stop).unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(e, Error::Cancelled), "{e:?}");
    let stop = Stop::new().with_time_limit(std::time::Duration::from_millis(100));
    let e = Processor::new(Limits::default()).process_with(heic, &pipeline, &stop).unwrap_err();
    assert!(matches!(e, Error::TimedOut { .. }), "{e:?}");
    // A header read has no caller's stop: it has a time limit of its own (10 s).
    set(Mode::Hang, Mode::Answer);
    let e = pixq_kernel::codec::probe(heic, &Limits::default()).unwrap_err();
    assert!(matches!(&e, Error::Decode { reason, .. } if reason.contains("took over 10s to read the header")), "{e:?}");
    set(Mode::Answer, Mode::Answer);
    assert_eq!(read(heic), in_place[0]);
}
