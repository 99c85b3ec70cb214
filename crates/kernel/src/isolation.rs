//! HEIF and AVIF files read in another process: a crafted file fails its job, never the
//! process.
//!
//! libheif (C++) and the decoders under it (libde265 and dav1d, C) are not ours. A file that
//! trips one of them ends the whole process, and Rust can catch neither way: a C++ exception
//! (a `bad_alloc`, a `length_error`) crosses libheif's C API uncaught and aborts, a decoder
//! bug is a segmentation fault. A program that serves many jobs installs a [`Runner`] with
//! [`isolate_heif`]: every libheif call (the header read and the decode) then goes to a
//! process the runner starts, which answers it with [`answer`]. The walk of the boxes
//! (`heif_boxes`, safe Rust) and every limit check stay in the calling process, and the
//! child decodes only an image of the size the caller already checked. Without a runner
//! (tests, tools, the fuzz targets) libheif runs in the calling process.
//!
//! The child's answer is the bytes it writes: a payload and a status byte at the very end
//! (0: the payload is the answer, 1: it is an error message), so a decoded picture is the
//! reply's first bytes and is kept without a copy. A child that ends without a whole answer
//! is a [`Failure`].

use std::sync::OnceLock;

use crate::{Error, Stop};

/// Why a [`Runner`] has no answer.
#[derive(Debug)]
pub enum Failure {
    /// The process could not be started or fed, or was killed from outside (SIGKILL: the
    /// out-of-memory killer, an operator). Not the input's fault: worth retrying.
    Unavailable(String),
    /// The process ended without an answer: a signal such as SIGSEGV or SIGABRT, an exit
    /// code, or a malformed reply. The input took the decoder down; it would again.
    Crashed(String),
    /// The caller's stop fired ([`Stop::check`]'s error); the process was killed.
    Stopped(Error),
}

/// Starts a process per request and hands it the request.
pub trait Runner: Send + Sync {
    /// Writes `request` (its parts in order) to a new process that answers it with
    /// [`answer`], and returns everything the process wrote: at most `reply_max` bytes
    /// (more is [`Failure::Crashed`]), read into a buffer of that capacity. A process that
    /// does not exit with status 0 is a [`Failure`] whatever it wrote. Watches `stop` while
    /// it waits and kills the process when it fires.
    fn run(&self, request: &[&[u8]], reply_max: usize, stop: &Stop) -> Result<Vec<u8>, Failure>;
}

static RUNNER: OnceLock<Box<dyn Runner>> = OnceLock::new();

/// From now on this process reads HEIF and AVIF files through `runner`. Once per process:
/// false (and `runner` is dropped) when one is installed already.
pub fn isolate_heif(runner: Box<dyn Runner>) -> bool {
    RUNNER.set(runner).is_ok()
}

/// Whether reading `input`'s header starts a process: a HEIF or AVIF file in a build that
/// reads them, with a runner installed. An async caller plans such an input off its event
/// loop's threads, since the probe waits for the child.
pub fn starts_a_process(input: &[u8]) -> bool {
    cfg!(feature = "heif")
        && runner().is_some()
        && matches!(crate::Format::sniff(input), Some(crate::Format::Heic | crate::Format::Avif))
}

/// The installed runner, if any.
pub(crate) fn runner() -> Option<&'static dyn Runner> {
    RUNNER.get().map(|r| r.as_ref())
}

/// The child's side: answers one request (all a [`Runner`] wrote to it) in this process.
/// A panic inside is answered as an error too; only a crash of the C code ends the process.
pub fn answer(request: &[u8]) -> Vec<u8> {
    #[cfg(feature = "heif")]
    match std::panic::catch_unwind(|| crate::heif::answer(request)) {
        Ok(reply) => reply,
        Err(_) => error_reply("the HEIF reader panicked"),
    }
    #[cfg(not(feature = "heif"))]
    {
        let _ = request;
        error_reply("this build reads no HEIF or AVIF files")
    }
}

/// Status byte: the payload before it is the answer.
pub(crate) const OK: u8 = 0;
/// Status byte: the payload before it is an error message (UTF-8).
pub(crate) const ERR: u8 = 1;

/// The most of an error message a reply's reader keeps.
const MAX_MESSAGE: usize = 1024;

/// An error answer.
pub(crate) fn error_reply(msg: &str) -> Vec<u8> {
    let mut r = Vec::with_capacity(msg.len() + 1);
    r.extend_from_slice(msg.as_bytes());
    r.push(ERR);
    r
}

/// Splits a reply into its answer's payload (the status byte removed, the payload left in
/// the same buffer) or the decoder's error message; a reply with neither status is a
/// crash's cut-off output.
#[cfg_attr(not(feature = "heif"), allow(dead_code))]
pub(crate) fn open_reply(mut reply: Vec<u8>) -> Result<Result<Vec<u8>, String>, Failure> {
    match reply.pop() {
        Some(OK) => Ok(Ok(reply)),
        Some(ERR) => {
            // A message is a line in a record, not a payload: at most 1 KiB of it is kept.
            reply.truncate(MAX_MESSAGE);
            Ok(Err(String::from_utf8_lossy(&reply).into_owned()))
        }
        _ => Err(Failure::Crashed("its reply was cut short".into())),
    }
}
