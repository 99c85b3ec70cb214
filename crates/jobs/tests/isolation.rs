//! HEIF and AVIF read in real child processes (`pixq_jobs::isolation`). A child that
//! aborts (what an uncaught C++ exception in libheif does) or segfaults (a decoder bug)
//! fails its own job with the signal named, and the worker goes on with the next jobs; a
//! child killed from outside (SIGKILL: the out-of-memory killer) is retried, not blamed on
//! the file; a stop kills a child that hangs. What the children answer matches libheif
//! called in place.
//!
//! This test binary (harness = false) is its own child: started with `CHILD_ARG` it answers
//! as every pixq binary does through `isolation::init`, or first fails the way its next
//! argument says. The runner the kernel gets picks that argument by the input's bytes.
// The segmentation fault under test, and system calls a confined child must not make.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pixq_jobs::batch::{self, batch_status};
use pixq_jobs::isolation::{CHILD_ARG, ChildRunner, data_limit};
use pixq_jobs::kernel::isolation::{Failure, Runner};
use pixq_jobs::kernel::{Error, Limits, Pipeline, Stop};
use pixq_jobs::keys;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::schema::{ObjectRef, OutputLocation, Status};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::store::fs::FsStore;
use pixq_jobs::worker::WorkerConfig;

mod common;

/// How the child for one input behaves: (header read, decode).
type Modes = (&'static str, &'static str);

static MODES: Mutex<Option<HashMap<Vec<u8>, Modes>>> = Mutex::new(None);
/// Every request handed to a child: (its kind, its input's length).
static CALLS: Mutex<Vec<(u8, usize)>> = Mutex::new(Vec::new());

fn set_modes(input: &[u8], modes: Modes) {
    MODES.lock().unwrap().get_or_insert_with(HashMap::new).insert(input.to_vec(), modes);
}

/// Starts this binary as the child, with the mode set for the request's input.
struct Switch;

impl Runner for Switch {
    fn run(&self, request: &[&[u8]], reply_max: usize, stop: &Stop) -> Result<Vec<u8>, Failure> {
        let (header, pixels) =
            MODES.lock().unwrap().as_ref().and_then(|m| m.get(request[1]).copied()).unwrap_or(("answer", "answer"));
        let mode = if request[0][0] == 1 { header } else { pixels };
        CALLS.lock().unwrap().push((request[0][0], request[1].len()));
        child(mode).run(request, reply_max, stop)
    }
}

fn child(mode: &str) -> ChildRunner {
    ChildRunner::new(std::env::current_exe().unwrap(), [CHILD_ARG, mode])
}

/// The child's side: fail as asked, or answer.
fn be_the_child(mode: &str) -> ! {
    match mode {
        "abort" => std::process::abort(),
        // SAFETY: none, on purpose: this is the crash under test (address 8 is never mapped).
        "segv" => unsafe { std::ptr::without_provenance_mut::<u8>(8).write_volatile(1) },
        "exit3" => std::process::exit(3),
        "confined-abort" => {
            pixq_jobs::isolation::confine().unwrap();
            std::process::abort()
        }
        "term" => {
            let _ = std::process::Command::new("/bin/sh").args(["-c", "kill -15 $PPID"]).status();
            std::thread::sleep(Duration::from_secs(300));
        }
        "kill" => {
            let _ = std::process::Command::new("/bin/sh").args(["-c", "kill -9 $PPID"]).status();
            std::thread::sleep(Duration::from_secs(300));
        }
        "hang" => std::thread::sleep(Duration::from_secs(300)),
        "escape" => escape(),
        "memory" => memory(),
        // What a decoder asking for more than the limit meets: no memory, and (for Rust's
        // allocator, or C++'s `new` uncaught) an abort.
        "hog" => {
            let limit = pixq_jobs::isolation::limit_memory().unwrap().unwrap();
            let hog = vec![1u8; usize::try_from(limit).unwrap()];
            std::process::exit(i32::from(hog[hog.len() / 2]))
        }
        _ => {}
    }
    pixq_jobs::isolation::init();
    unreachable!("init returns only outside a child")
}

/// What a decoder a crafted file has taken over would try, before and after the
/// confinement every child puts itself under: read a file, reach the parent's listener,
/// start a program. Answers with an error reply naming each outcome.
fn escape() -> ! {
    let port: u16 = std::env::args().nth(3).and_then(|p| p.parse().ok()).unwrap();
    let parent = std::os::unix::process::parent_id() as i32;
    let attempt = || {
        let read =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).map(|_| ()).map_err(|e| e.raw_os_error());
        let connect = std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.raw_os_error());
        let exec = std::process::Command::new("/bin/true").status().map(|_| ()).map_err(|e| e.raw_os_error());
        // Signal 0: only whether the parent could be signalled, by either call.
        // SAFETY: plain system calls.
        let signal = unsafe { libc::syscall(libc::SYS_tgkill, parent, parent, 0) };
        // SAFETY: as above.
        let kill = unsafe { libc::kill(parent, 0) };
        let thread = std::thread::spawn(|| 7).join().ok();
        format!("read {read:?}, connect {connect:?}, exec {exec:?}, tgkill {signal}, kill {kill}, thread {thread:?}")
    };
    let before = attempt();
    let confined = pixq_jobs::isolation::confine().map_err(|e| e.to_string());
    let after = attempt();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "before: {before}; confined: {confined:?}; after: {after}\x01");
    let _ = out.flush();
    std::process::exit(0)
}

/// The limit its runner set, and what the child can still map under it once it holds its
/// request: answers with an error reply naming both.
fn memory() -> ! {
    let limit = pixq_jobs::isolation::limit_memory().unwrap().unwrap();
    // The request is read whole under the limit, as every child reads it.
    let mut request = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut request).unwrap();
    let reserve = |bytes: u64| Vec::<u8>::new().try_reserve_exact(usize::try_from(bytes).unwrap()).is_ok();
    let (half, whole) = (reserve(limit / 2), reserve(limit));
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "limit {limit}: half taken {half}, whole taken {whole}\x01");
    let _ = out.flush();
    std::process::exit(0)
}

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

/// A decode's outcome as comparable text: size, channels and a fingerprint of the pixels.
fn decoded(input: &[u8]) -> String {
    match pixq_jobs::kernel::decode(input, &Limits::default()) {
        Ok(r) => {
            let h = r
                .data()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            format!("{}x{} {:?} {h:x}", r.width(), r.height(), r.channels())
        }
        Err(e) => format!("error: {e}"),
    }
}

/// A test: the HEIC sample, the AVIF sample, what each decodes to in place.
type Test = fn(&[u8], &[u8], &[String; 2]);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        be_the_child(args.get(2).map_or("", String::as_str));
    }
    let heic = std::fs::read(samples().join("chelsea-hevc.heic")).unwrap();
    let avif = std::fs::read(samples().join("chelsea-av1.avif")).unwrap();
    let in_place = [decoded(&heic), decoded(&avif)];
    assert!(!in_place[0].starts_with("error") && !in_place[1].starts_with("error"), "{in_place:?}");
    assert!(pixq_jobs::kernel::isolation::isolate_heif(Box::new(Switch)));

    let tests: [(&str, Test); 6] = [
        (
            "a_confined_child_reads_no_file_reaches_no_network_starts_nothing",
            a_confined_child_reads_no_file_reaches_no_network_starts_nothing,
        ),
        ("children_answer_what_libheif_in_place_gives", children_answer_what_libheif_in_place_gives),
        ("a_child_maps_no_more_memory_than_its_limit", a_child_maps_no_more_memory_than_its_limit),
        ("a_child_that_crashes_fails_the_read_with_its_signal", a_child_that_crashes_fails_the_read_with_its_signal),
        ("a_stop_kills_a_child_that_hangs", a_stop_kills_a_child_that_hangs),
        ("a_worker_outlives_children_that_crash", a_worker_outlives_children_that_crash),
    ];
    for (name, test) in tests {
        let t = Instant::now();
        test(&heic, &avif, &in_place);
        println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64());
    }
}

fn children_answer_what_libheif_in_place_gives(heic: &[u8], avif: &[u8], in_place: &[String; 2]) {
    assert_eq!(decoded(heic), in_place[0]);
    assert_eq!(decoded(avif), in_place[1]);
    // A file libheif refuses (a file type box alone): its message comes back.
    let bare = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
    assert!(decoded(bare).starts_with("error: cannot decode heic"), "{}", decoded(bare));
}

fn a_confined_child_reads_no_file_reaches_no_network_starts_nothing(_: &[u8], _: &[u8], _: &[String; 2]) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let runner = ChildRunner::new(std::env::current_exe().unwrap(), [CHILD_ARG, "escape", &port]);
    let mut reply = runner.run(&[&[1]], 4096, &Stop::new()).unwrap();
    assert_eq!(reply.pop(), Some(1));
    let said = String::from_utf8(reply).unwrap();
    let free = "read Ok(()), connect Ok(()), exec Ok(()), tgkill 0, kill 0, thread Some(7)";
    assert!(said.starts_with(&format!("before: {free}; ")), "{said}");
    // EPERM (1) for each, from the filter: nothing ran. Threads still start.
    let confined = "read Err(Some(1)), connect Err(Some(1)), exec Err(Some(1)), tgkill -1, kill -1, thread Some(7)";
    assert!(said.ends_with(&format!("confined: Ok(()); after: {confined}")), "{said}");
    // The one connection made is the one before the confinement.
    assert!(listener.accept().is_ok());
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock));
}

fn a_child_maps_no_more_memory_than_its_limit(heic: &[u8], _: &[u8], _: &[String; 2]) {
    // The limit follows the request: its input, and the picture the answer may carry.
    // The real child (`init`, as every pixq binary starts) sets it before it reads a byte.
    let mut real = std::process::Command::new(std::env::current_exe().unwrap())
        .args([CHILD_ARG, "answer"])
        .env(pixq_jobs::isolation::DATA_MAX_ENV, "300000000")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let limits = (0..2000)
        .find_map(|_| {
            let l = std::fs::read_to_string(format!("/proc/{}/limits", real.id())).unwrap_or_default();
            let line = l.lines().find(|l| l.starts_with("Max data size"))?.to_string();
            if line.contains("300000000") {
                return Some(line);
            }
            std::thread::sleep(Duration::from_millis(10));
            None
        })
        .unwrap_or_else(|| "not set within 20 s".into());
    drop(real.stdin.take());
    real.wait().unwrap();
    assert_eq!(
        limits.split_whitespace().collect::<Vec<_>>(),
        ["Max", "data", "size", "300000000", "300000000", "bytes"]
    );
    let large = vec![7u8; 3 << 20];
    for (input, reply_max) in [(heic, 4096), (&large[..], 64 << 20)] {
        let mut reply = child("memory").run(&[&[2, 0], input], reply_max, &Stop::new()).unwrap();
        assert_eq!(reply.pop(), Some(1));
        let limit = data_limit(input.len() + 2, reply_max);
        assert_eq!(limit, (256 << 20) + 8 * reply_max as u64 + 2 * (input.len() as u64 + 2));
        assert_eq!(String::from_utf8(reply).unwrap(), format!("limit {limit}: half taken true, whole taken false"));
    }
    // A child that asks for more aborts: the file's doing, failed at once, never retried.
    set_modes(heic, ("answer", "hog"));
    let started = Instant::now();
    let limit = data_limit(heic.len() + 10, 3 * 451 * 300 + 10) >> 20;
    match decoded(heic) {
        e if e.contains(&format!("crashed with signal 6 (SIGABRT), with {limit} MiB it may map")) => {}
        other => panic!("a child over its limit: {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60), "the allocation failed at once");
    set_modes(heic, ("answer", "answer"));
}

fn a_child_that_crashes_fails_the_read_with_its_signal(heic: &[u8], _: &[u8], _: &[String; 2]) {
    for (modes, want) in [
        (("abort", "answer"), "crashed with signal 6 (SIGABRT)"),
        (("answer", "abort"), "crashed with signal 6 (SIGABRT)"),
        (("answer", "segv"), "crashed with signal 11 (SIGSEGV)"),
        (("answer", "confined-abort"), "crashed with signal 6 (SIGABRT)"),
    ] {
        set_modes(heic, modes);
        match pixq_jobs::kernel::decode(heic, &Limits::default()) {
            Err(Error::Decode { reason, .. }) => assert!(reason.contains(want), "{modes:?}: {reason}"),
            other => panic!("{modes:?}: {other:?}"),
        }
    }
    // Not the file's doing: killed from outside, shut down, or a program that could not
    // start (the dynamic loader exits 127).
    for (mode, want) in [
        ("kill", "ended by signal 9 (SIGKILL)"),
        ("term", "ended by signal 15 (SIGTERM)"),
        ("exit3", "exited with code 3 before it answered"),
    ] {
        set_modes(heic, ("answer", mode));
        match pixq_jobs::kernel::decode(heic, &Limits::default()) {
            Err(Error::Unavailable(reason)) => assert!(reason.contains(want), "{mode}: {reason}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
    set_modes(heic, ("answer", "answer"));
    // A program that cannot be started is not the input's fault either.
    let missing = ChildRunner::new("/nonexistent/pixq", [CHILD_ARG]);
    match missing.run(&[&[1], heic], 1024, &Stop::new()) {
        Err(Failure::Unavailable(r)) => assert!(r.contains("could not be started"), "{r}"),
        other => panic!("a missing program: {other:?}"),
    }
}

fn a_stop_kills_a_child_that_hangs(heic: &[u8], _: &[u8], _: &[String; 2]) {
    let hang = child("hang");
    let stop = Stop::new();
    let canceller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.cancel();
        })
    };
    let t = Instant::now();
    let r = hang.run(&[&[1], heic], 1024, &stop);
    canceller.join().unwrap();
    assert!(matches!(r, Err(Failure::Stopped(Error::Cancelled))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(60), "the hanging child was waited out");
    let r = hang.run(&[&[1], heic], 1024, &Stop::new().with_time_limit(Duration::from_millis(200)));
    assert!(matches!(r, Err(Failure::Stopped(Error::TimedOut { .. }))), "{r:?}");
    // The job's time limit reaches a decode in a child.
    set_modes(heic, ("answer", "hang"));
    let stop = Stop::new().with_time_limit(Duration::from_secs(2));
    let e = pixq_jobs::kernel::Processor::new(Limits::default())
        .process_with(heic, &Pipeline::parse("thumbnail:64").unwrap(), &stop)
        .unwrap_err();
    assert!(matches!(e, Error::TimedOut { .. }), "{e:?}");
    set_modes(heic, ("answer", "answer"));
}

fn a_worker_outlives_children_that_crash(heic: &[u8], avif: &[u8], _: &[String; 2]) {
    const BUCKET: &str = "pixq";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::new(dir.path().join("store")));
    let queue = Arc::new(
        SqliteQueue::open(&dir.path().join("q.db"), QueueConfig { max_receives: 2, ..QueueConfig::default() }).unwrap(),
    );
    // The HEIC crashes its decoder, the AVIF's child is killed from outside every time, the
    // JPEG and another AVIF are fine.
    set_modes(heic, ("answer", "segv"));
    set_modes(avif, ("answer", "kill"));
    let jpeg = std::fs::read(samples().join("chelsea.jpg")).unwrap();
    let fine_avif =
        pixq_jobs::kernel::process(&jpeg, &Pipeline::parse("thumbnail:200,format:avif").unwrap(), &Limits::default())
            .unwrap()
            .bytes;
    let inputs: [(&str, &[u8]); 4] =
        [("crash.heic", heic), ("killed.avif", avif), ("fine.jpg", &jpeg), ("fine.avif", &fine_avif)];
    rt.block_on(async {
        let out = OutputLocation { bucket: BUCKET.into(), prefix: "outputs/".into() };
        let mut jobs = Vec::new();
        for (i, (name, bytes)) in inputs.iter().enumerate() {
            let key = format!("inputs/b/{name}");
            store.put(BUCKET, &key, bytes.to_vec(), "application/octet-stream").await.unwrap();
            let input = ObjectRef { bucket: BUCKET.into(), key };
            let pipeline = Pipeline::parse("thumbnail:64").unwrap();
            jobs.push(batch::new_job("b", i, input, Some(keys::content_digest(bytes)), &pipeline, &out));
        }
        batch::enqueue(queue.as_ref(), &jobs, false).await.unwrap();
        let cfg = WorkerConfig {
            concurrency: 2,
            visibility: Duration::from_secs(30),
            wait: Duration::from_millis(50),
            retry: pixq_jobs::settle::RetryPolicy { base: Duration::from_millis(20), max: Duration::from_millis(200) },
            ..WorkerConfig::default()
        };
        common::drain(queue.clone(), store.clone(), cfg).await;
        let status = batch_status(store.as_ref(), BUCKET, "b").await.unwrap();
        let by_name = |i: usize| status.results.iter().find(|r| r.job_id == jobs[i].id).unwrap();
        let crash = by_name(0);
        assert_eq!(crash.status, Status::Failed);
        assert!(crash.reason.as_deref().unwrap().contains("crashed with signal 11 (SIGSEGV)"), "{crash:?}");
        assert_eq!(crash.attempts, 1, "a crash is the file's: not retried");
        let killed = by_name(1);
        assert_eq!(killed.status, Status::Failed);
        assert!(killed.reason.as_deref().unwrap().contains("ended by signal 9"), "{killed:?}");
        assert_eq!(killed.attempts, 2, "a kill from outside is retried until the receives run out");
        assert_eq!(by_name(2).status, Status::Ok);
        assert_eq!(by_name(3).status, Status::Ok);
        // One child reads the header (the plan the kernel reuses), one decodes.
        let calls = CALLS.lock().unwrap().iter().filter(|c| c.1 == fine_avif.len()).map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(calls, [1, 2]);
        let dead = queue.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 2, "{dead:#?}");
    });
    set_modes(heic, ("answer", "answer"));
    set_modes(avif, ("answer", "answer"));
}
