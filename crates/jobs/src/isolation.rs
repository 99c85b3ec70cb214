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
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pixq_kernel::Stop;
use pixq_kernel::isolation::{Failure, Runner};

/// The first argument that makes a pixq binary a HEIF reader's child.
pub const CHILD_ARG: &str = "--pixq-heif-child";

/// How often a waiting runner looks at its stop.
const STOP_POLL: Duration = Duration::from_millis(20);

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
        let program = if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()))
        };
        ChildRunner::new(program, [CHILD_ARG])
    }
}

impl Runner for ChildRunner {
    fn run(&self, request: &[&[u8]], reply_max: usize, stop: &Stop) -> Result<Vec<u8>, Failure> {
        stop.check().map_err(Failure::Stopped)?;
        // Nothing of this process's environment (credentials, settings) reaches the child.
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Failure::Unavailable(format!("could not be started: {e}")))?;
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::Unavailable("has no pipes".into()));
        };
        let (done, finished) = mpsc::channel();
        let (stopped, wrote, read) = std::thread::scope(|s| {
            // The child reads its whole request before it writes a byte, so one thread
            // writes all, closes, then reads; this one watches the stop meanwhile.
            let io = s.spawn(move || {
                let wrote = request.iter().try_for_each(|part| stdin.write_all(part));
                drop(stdin);
                let mut reply = Vec::with_capacity(reply_max);
                let read = (&mut stdout).take(reply_max as u64 + 1).read_to_end(&mut reply).map(|_| reply);
                let _ = done.send(());
                (wrote, read)
            });
            let mut stopped = None;
            while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(STOP_POLL) {
                if let Err(e) = stop.check() {
                    // The pipes break when it dies, which ends the thread's writes and reads.
                    let _ = child.kill();
                    stopped = Some(e);
                    break;
                }
            }
            let (wrote, read) = io
                .join()
                .unwrap_or_else(|_| (Err(std::io::Error::other("panicked")), Err(std::io::Error::other("panicked"))));
            (stopped, wrote, read)
        });
        let status = child.wait().map_err(|e| Failure::Unavailable(format!("could not be waited for: {e}")))?;
        if let Some(e) = stopped {
            return Err(Failure::Stopped(e));
        }
        if !status.success() {
            return Err(ended(status));
        }
        let reply = read.map_err(|e| Failure::Unavailable(format!("could not be read from: {e}")))?;
        wrote.map_err(|e| Failure::Unavailable(format!("could not be written to: {e}")))?;
        if reply.len() > reply_max {
            return Err(Failure::Crashed(format!("wrote more than the {reply_max} bytes its answer can take")));
        }
        Ok(reply)
    }
}

/// A child that did not exit with status 0: a signal other than SIGKILL is the input's doing;
/// SIGKILL comes from outside (the out-of-memory killer, an operator).
fn ended(status: ExitStatus) -> Failure {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                31 => " (SIGSYS)",
                _ => "",
            };
            return if sig == 9 {
                Failure::Unavailable(format!("was killed by signal 9{name}"))
            } else {
                Failure::Crashed(format!("crashed with signal {sig}{name}"))
            };
        }
    }
    match status.code() {
        Some(code) => Failure::Crashed(format!("exited with code {code} without an answer")),
        None => Failure::Crashed("ended without an answer".into()),
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

/// The one place pixq-jobs calls C: installing a seccomp filter has no safe wrapper (rustix
/// sets the mode, not a filter). The filter applies to the calling thread and the threads it
/// starts later; the child calls it from its only thread, before libheif starts any.
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
#[allow(unsafe_code)]
mod seccomp {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, EPERM, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP,
        SECCOMP_MODE_FILTER, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, c_long, sock_filter,
        sock_fprog,
    };

    /// The architecture a system call comes from (`seccomp_data.arch`): another one (a
    /// 32-bit call) ends the process.
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7;

    /// What the child may still do (`strace -f` of children decoding HEIC and AVIF, plus
    /// what a thread start, an abort and the allocator can ask for).
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
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_getrandom,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_tgkill,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];

    pub(super) fn confine() -> std::io::Result<()> {
        let op = |code: u32, jt: u8, k: u32| sock_filter { code: code as u16, jt, jf: 0, k };
        let n = ALLOWED.len();
        let mut prog = Vec::with_capacity(n + 6);
        // seccomp_data: nr at offset 0, arch at 4.
        prog.push(op(BPF_LD | BPF_W | BPF_ABS, 0, 4));
        prog.push(op(BPF_JMP | BPF_JEQ | BPF_K, 1, ARCH));
        prog.push(op(BPF_RET | BPF_K, 0, SECCOMP_RET_KILL_PROCESS));
        prog.push(op(BPF_LD | BPF_W | BPF_ABS, 0, 0));
        for (i, &nr) in ALLOWED.iter().enumerate() {
            // A match jumps over the rest and the refusal, to the allow.
            prog.push(op(BPF_JMP | BPF_JEQ | BPF_K, (n - i) as u8, nr as u32));
        }
        prog.push(op(BPF_RET | BPF_K, 0, SECCOMP_RET_ERRNO | EPERM as u32));
        prog.push(op(BPF_RET | BPF_K, 0, SECCOMP_RET_ALLOW));
        let fprog = sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
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
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
mod seccomp {
    pub(super) fn confine() -> std::io::Result<()> {
        Err(std::io::Error::other("no seccomp filter on this platform"))
    }
}
