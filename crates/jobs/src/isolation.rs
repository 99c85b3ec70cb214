//! HEIF and AVIF files read in child processes of the running program, so a file that
//! crashes libheif or a decoder under it fails its own job and nothing else
//! (`pixq_kernel::isolation` says why, and what stays in the calling process).
//!
//! A binary calls [`init`] first thing in `main`. Started as a child (first argument
//! [`CHILD_ARG`]) it answers the request on its standard input and exits; otherwise it has
//! the kernel send every libheif call to a child of this same program (`/proc/self/exe` on
//! Linux: still this program when an upgrade has replaced its file meanwhile).

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pixq_kernel::Stop;
use pixq_kernel::isolation::{Failure, Runner};

/// The first argument that makes a pixq binary a HEIF reader's child.
pub const CHILD_ARG: &str = "--pixq-heif-child";

/// How often a waiting runner looks at its stop.
const STOP_POLL: Duration = Duration::from_millis(20);

/// The environment variable a runner tells its child's memory limit by ([`data_limit`]).
pub const DATA_MAX_ENV: &str = "PIXQ_HEIF_CHILD_DATA_MAX";

/// The most memory a child may map for data (heap, anonymous mappings, thread stacks:
/// `RLIMIT_DATA`) for a request of `request_len` bytes whose answer may take `reply_max`:
/// 256 MiB, eight times the answer and twice the request (read into a growing buffer). The
/// answer is 8-bit RGB(A), 3-4 bytes a pixel; libheif holds the decoded planes, their
/// conversion and the answer at once, and a 10- or 12-bit 4:4:4 picture with alpha takes 2
/// bytes a sample in the first two: 8x leaves room for that. An 11 MP 8-bit HEIC decode
/// peaks near 80 MB against its 520 MB; a file that makes libheif or a decoder ask for
/// more fails its job at once, where it would otherwise grow until the out-of-memory
/// killer ended it (and the machine's other work slowed meanwhile), again on every retry.
pub fn data_limit(request_len: usize, reply_max: usize) -> u64 {
    const BASE: u64 = 256 << 20;
    BASE.saturating_add((reply_max as u64).saturating_mul(8)).saturating_add((request_len as u64).saturating_mul(2))
}

/// Call first in `main`. In a child (started with [`CHILD_ARG`]) it answers the request on
/// standard input and exits the process; otherwise it makes this process read HEIF and AVIF
/// files in children of its own program, and returns.
pub fn init() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(CHILD_ARG)) {
        std::process::exit(serve_child());
    }
    pixq_kernel::isolation::isolate_heif(Box::new(ChildRunner::this_program()));
}

/// The child's whole life: read the request to its end, give up every system call the
/// answer does not need ([`confine`]), answer it, write the answer.
fn serve_child() -> i32 {
    // The out-of-memory killer takes this child before its parent, and the child ends with
    // its parent.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    seccomp::end_with_parent();
    // Before the request is read: its buffer counts too. A platform without the limit
    // answers all the same.
    let _ = limit_memory();
    let mut request = Vec::new();
    if std::io::stdin().lock().read_to_end(&mut request).is_err() {
        return 2;
    }
    // Where the kernel has no seccomp (or refuses it), the child still answers: it is a
    // process of its own either way.
    let _ = confine();
    let reply = pixq_kernel::isolation::answer(&request);
    drop(request);
    let mut out = std::io::stdout().lock();
    match out.write_all(&reply).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

/// Puts the calling process, for good, under the data limit its runner set in
/// [`DATA_MAX_ENV`]: `Ok(Some(bytes))` when set, `Ok(None)` when the variable is not there.
/// A child calls it first thing; public for tests' own children.
pub fn limit_memory() -> std::io::Result<Option<u64>> {
    let Some(value) = std::env::var_os(DATA_MAX_ENV) else { return Ok(None) };
    let bytes = value
        .to_str()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other(format!("{DATA_MAX_ENV} is not a number of bytes: {value:?}")))?;
    limit_data(bytes)?;
    Ok(Some(bytes))
}

/// Starts `program args...` for each request; the program must answer as [`init`] does.
#[derive(Debug, Clone)]
pub struct ChildRunner {
    program: PathBuf,
    args: Vec<OsString>,
}

impl ChildRunner {
    /// A runner starting `program` with `args`.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> ChildRunner {
        ChildRunner { program: program.into(), args: args.into_iter().map(Into::into).collect() }
    }

    /// A runner starting the running program with [`CHILD_ARG`].
    pub fn this_program() -> ChildRunner {
        // Where /proc is mounted (Linux); else the path this program was started from.
        let program = if std::path::Path::new("/proc/self/exe").exists() {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()))
        };
        ChildRunner::new(program, [CHILD_ARG])
    }
}

impl Runner for ChildRunner {
    fn run(&self, request: &[&[u8]], reply_max: usize, stop: &Stop) -> Result<Vec<u8>, Failure> {
        use std::os::unix::process::CommandExt;
        stop.check().map_err(Failure::Stopped)?;
        // Of this process's environment (credentials, settings) the child gets only what
        // the dynamic loader and the allocator read. In a process group of its own, so a
        // Ctrl-C meant for a terminal's pixq does not end its children before the worker
        // decides what becomes of their jobs.
        let limit = data_limit(request.iter().map(|part| part.len()).sum(), reply_max);
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| passed_on(k)))
            .env(DATA_MAX_ENV, limit.to_string())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Failure::Unavailable(format!("could not be started: {e}")))?;
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            reap(&mut child);
            return Err(Failure::Unavailable("has no pipes".into()));
        };
        let (done, finished) = mpsc::channel();
        let outcome = std::thread::scope(|s| {
            // The child reads its whole request before it writes a byte, so one thread
            // writes all, closes, then reads; this one watches the stop meanwhile.
            let io = std::thread::Builder::new().spawn_scoped(s, move || {
                let wrote = request.iter().try_for_each(|part| stdin.write_all(part));
                drop(stdin);
                let read = read_at_most(&mut stdout, reply_max);
                let _ = done.send(());
                (wrote, read)
            });
            let Ok(io) = io else {
                reap(&mut child);
                return Err(Failure::Unavailable("no thread to feed it".into()));
            };
            let mut stopped = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(STOP_POLL) {
                if let Err(e) = stop.check() {
                    // The pipes break when it dies, which ends the thread's writes and reads
                    // (the child starts no process that could hold them: `confine`).
                    let _ = child.kill();
                    stopped = Some(e);
                    break;
                }
            }
            let (wrote, read) = io
                .join()
                .unwrap_or_else(|_| (Err(std::io::Error::other("panicked")), Err(std::io::Error::other("panicked"))));
            Ok((stopped, wrote, read))
        });
        let (stopped, wrote, read) = outcome?;
        // A child that closed its output and goes on is waited for under the stop too.
        let status = wait_under(&mut child, stop)?;
        if let Some(e) = stopped {
            return Err(Failure::Stopped(e));
        }
        if !status.success() {
            return Err(ended(status, limit));
        }
        wrote.map_err(|e| Failure::Unavailable(format!("could not be written to: {e}")))?;
        read.map_err(|e| Failure::Unavailable(format!("could not be read from: {e}")))?
            .ok_or_else(|| Failure::Crashed(format!("wrote more than the {reply_max} bytes its answer can take")))
    }
}

/// Environment variables a child keeps: the dynamic loader's library path (decoders
/// installed outside the system's folders) and the C library's tunables and allocator
/// settings. Nothing else: no credentials, no settings of pixq's.
fn passed_on(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name == b"LD_LIBRARY_PATH" || name == b"GLIBC_TUNABLES" || name.starts_with(b"MALLOC_")
}

/// Reads to the end, at most `max` bytes, into a buffer of that capacity; `None` when there
/// is more (without growing the buffer to take it).
fn read_at_most(from: &mut impl Read, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut reply = Vec::with_capacity(max);
    from.take(max as u64).read_to_end(&mut reply)?;
    let mut more = [0u8; 1];
    Ok(if from.read(&mut more)? == 0 { Some(reply) } else { None })
}

/// Kills and waits for a child this runner will not talk to.
fn reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a child to end, killing it when `stop` fires meanwhile.
fn wait_under(child: &mut Child, stop: &Stop) -> Result<ExitStatus, Failure> {
    let mut pause = Duration::from_micros(100);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if stop.check().is_err() => {
                let _ = child.kill();
                return child.wait().map_err(|e| Failure::Unavailable(format!("could not be waited for: {e}")));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(STOP_POLL);
            }
            Err(e) => return Err(Failure::Unavailable(format!("could not be waited for: {e}"))),
        }
    }
}

/// A child that did not exit with status 0. A signal a fault raises (a segmentation fault,
/// an abort, an illegal instruction, a bad system call) is the input's doing: it would again.
/// Every other end is not: SIGKILL (the out-of-memory killer, for which a child volunteers,
/// or an operator), SIGTERM or SIGINT (a shutdown), and an exit code, which our child only
/// gives when it could not start (the dynamic loader's 127) or lost its pipes. A fault's
/// message names the child's memory limit (`limit` bytes): an allocation refused past it
/// ends C++ code and Rust's allocator in an abort, and C code may fault on the null.
fn ended(status: ExitStatus, limit: u64) -> Failure {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        let fault = match sig {
            4 => Some("SIGILL"),
            5 => Some("SIGTRAP"),
            6 => Some("SIGABRT"),
            7 => Some("SIGBUS"),
            8 => Some("SIGFPE"),
            11 => Some("SIGSEGV"),
            31 => Some("SIGSYS"),
            _ => None,
        };
        return match fault {
            Some(name) if cfg!(target_os = "linux") => {
                Failure::Crashed(format!("crashed with signal {sig} ({name}), with {} MiB it may map", limit >> 20))
            }
            Some(name) => Failure::Crashed(format!("crashed with signal {sig} ({name})")),
            None => {
                let name = match sig {
                    2 => " (SIGINT)",
                    9 => " (SIGKILL)",
                    15 => " (SIGTERM)",
                    _ => "",
                };
                Failure::Unavailable(format!("was ended by signal {sig}{name}"))
            }
        };
    }
    match status.code() {
        Some(code) => Failure::Unavailable(format!("exited with code {code} before it answered")),
        None => Failure::Unavailable("ended before it answered".into()),
    }
}

/// Confines the calling process for good to the system calls a HEIF reader's child needs
/// once it holds its request: memory, threads and their locks, signals, the clock, reading
/// and writing the pipes it has, exiting. Every other call (open, socket, connect, execve,
/// ptrace, kill, ...) fails with EPERM instead of running, so a decoder a crafted file has
/// taken over reads no file, reaches no network and starts nothing. Linux on x86_64 and
/// aarch64 (seccomp); elsewhere an error, and nothing changes.
pub fn confine() -> std::io::Result<()> {
    seccomp::confine()
}

/// One of the two places pixq-jobs calls C (with [`limit_data`]): installing a seccomp
/// filter has no safe wrapper (rustix sets the mode, not a filter). The filter applies to the calling thread and the threads it
/// starts later; the child calls it from its only thread, before libheif starts any.
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
#[allow(unsafe_code)]
mod seccomp {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W, ENOSYS, EPERM, PR_SET_NO_NEW_PRIVS,
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, c_long,
        sock_filter, sock_fprog,
    };

    /// The architecture a system call comes from (`seccomp_data.arch`): another one (a
    /// 32-bit call) ends the process.
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7;

    /// What the child may still do (`strace -f` of children decoding HEIC and AVIF, plus
    /// what a thread start, an abort, an interrupted wait and the allocator can ask for).
    /// Three more are allowed with conditions: `clone` for threads only (no process), so
    /// nothing outlives the child holding its pipes; `tgkill` to this process only (an
    /// abort), no other; `clone3` answers ENOSYS, so the C library starts threads by `clone`.
    const ALLOWED: &[c_long] = &[
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_getrandom,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_restart_syscall,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];

    /// Where a filter instruction goes on: the next one, or one of the returns at the end.
    #[derive(Clone, Copy, PartialEq)]
    enum To {
        Next,
        Allow,
        Refuse,
        NoSys,
        /// The instruction at this index.
        At(usize),
    }

    pub(super) fn confine() -> std::io::Result<()> {
        const JEQ: u32 = BPF_JMP | BPF_JEQ | BPF_K;
        // seccomp_data: nr at offset 0, arch at 4, the first argument at 16 (its low half on
        // these little-endian machines).
        let load = |at: u32| (BPF_LD | BPF_W | BPF_ABS, To::Next, To::Next, at);
        let mut prog: Vec<(u32, To, To, u32)> = Vec::with_capacity(ALLOWED.len() + 16);
        prog.push(load(4));
        prog.push((JEQ, To::Next, To::At(usize::MAX), ARCH));
        prog.push(load(0));
        for &nr in ALLOWED {
            prog.push((JEQ, To::Allow, To::Next, nr as u32));
        }
        let tgkill = prog.len() + 4;
        let clone = tgkill + 2;
        prog.push((JEQ, To::At(tgkill), To::Next, libc::SYS_tgkill as u32));
        prog.push((JEQ, To::At(clone), To::Next, libc::SYS_clone as u32));
        prog.push((JEQ, To::NoSys, To::Next, libc::SYS_clone3 as u32));
        prog.push((BPF_RET | BPF_K, To::Next, To::Next, SECCOMP_RET_ERRNO | EPERM as u32));
        prog.push(load(16));
        prog.push((JEQ, To::Allow, To::Refuse, std::process::id()));
        prog.push(load(16));
        prog.push((BPF_JMP | BPF_JSET | BPF_K, To::Allow, To::Refuse, libc::CLONE_THREAD as u32));
        let ends = prog.len();
        let [allow, refuse, nosys, kill] = [ends, ends + 1, ends + 2, ends + 3];
        let mut filter: Vec<sock_filter> = prog
            .iter()
            .enumerate()
            .map(|(i, &(code, jt, jf, k))| {
                let off = |to: To| match to {
                    To::Next => 0,
                    To::Allow => (allow - i - 1) as u8,
                    To::Refuse => (refuse - i - 1) as u8,
                    To::NoSys => (nosys - i - 1) as u8,
                    To::At(usize::MAX) => (kill - i - 1) as u8,
                    To::At(at) => (at - i - 1) as u8,
                };
                sock_filter { code: code as u16, jt: off(jt), jf: off(jf), k }
            })
            .collect();
        for k in [SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM as u32, SECCOMP_RET_ERRNO | ENOSYS as u32] {
            filter.push(sock_filter { code: (BPF_RET | BPF_K) as u16, jt: 0, jf: 0, k });
        }
        // Another architecture's system calls (32-bit ones) end the process.
        filter.push(sock_filter { code: (BPF_RET | BPF_K) as u16, jt: 0, jf: 0, k: SECCOMP_RET_KILL_PROCESS });
        let fprog = sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
        // SAFETY: plain prctl calls; the filter program outlives the second one, which
        // copies it into the kernel.
        unsafe {
            if libc::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog as *const sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// SIGKILL when the parent ends; a child whose parent is already gone exits.
    pub(super) fn end_with_parent() {
        // SAFETY: plain prctl and getppid calls.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            if libc::getppid() == 1 {
                std::process::exit(2);
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
mod seccomp {
    pub(super) fn confine() -> std::io::Result<()> {
        Err(std::io::Error::other("no seccomp filter on this platform"))
    }

    pub(super) fn end_with_parent() {}
}

/// `RLIMIT_DATA`, soft and hard, at `bytes`: from then on a mapping or heap growth past it
/// fails (ENOMEM, Linux 4.7 and later), so an allocation returns nothing instead of the
/// process growing. Every Linux architecture, seccomp filter or not.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn limit_data(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: a plain setrlimit call with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn limit_data(_: u64) -> std::io::Result<()> {
    Err(std::io::Error::other("no data limit set on this platform"))
}
