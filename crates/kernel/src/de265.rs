//! libde265's start-up cost, paid only by a process that decodes HEVC.
//!
//! libheif registers its decoders from a static constructor, and registering the HEVC one
//! calls libde265's `de265_init`, which builds the decoder's tables: about 1.5 ms of every
//! start of every program that links libheif (half of what `pixq --version` took), although
//! only the HEIF child (`crate::isolation`) ever decodes HEVC.
//!
//! This crate defines `de265_init` itself. A definition in the executable comes before the
//! shared library's, for libheif (linked into the executable) and for libde265's own calls
//! (`de265_new_decoder` calls `de265_init` through its PLT). The process's first call
//! (libheif's, from its constructor) is answered "ok" without building anything; the first
//! HEIF read ([`settle`], called before every libheif call) makes it for real, so libde265's
//! own count of initialisations ends as it would have been. Any other call settles first
//! and then goes straight to libde265's.
//!
//! This holds for an executable that links libde265 as a shared library (Debian's). Linked
//! statically, the two definitions collide and the link fails; built into a shared library
//! of its own, `RTLD_NEXT` may find no libde265 and HEVC decoding fails with libde265's
//! initialisation error.
//!
//! The only unsafe code in the kernel: a symbol defined for a C library, and one `dlsym`.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::sync::{Mutex, OnceLock};

/// `DE265_OK`.
const OK: c_int = 0;
/// `DE265_ERROR_LIBRARY_INITIALIZATION_FAILED`.
const INIT_FAILED: c_int = 11;

type Init = unsafe extern "C" fn() -> c_int;

/// Until the first HEIF read: whether the one call held back (libheif's, from its static
/// constructor) was made. `None` once settled.
static HELD: Mutex<Option<bool>> = Mutex::new(Some(false));

fn held() -> std::sync::MutexGuard<'static, Option<bool>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// libde265's own `de265_init`: the next definition after this executable's, looked up once.
fn real() -> Option<Init> {
    static REAL: OnceLock<Option<Init>> = OnceLock::new();
    *REAL.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; a non-null result is libde265's
        // `de265_error de265_init(void)`, which has this signature.
        let f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"de265_init".as_ptr()) };
        // Never this definition itself (it would call itself for ever).
        let ours = de265_init as Init as usize;
        (!f.is_null() && f as usize != ours).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Init>(f) })
    })
}

fn call_real() -> c_int {
    match real() {
        // SAFETY: libde265's initialiser takes nothing and is safe to call from any thread
        // (it takes its own lock).
        Some(f) => unsafe { f() },
        // A decoder made now fails with this, as a HEIF read's error.
        None => INIT_FAILED,
    }
}

/// Makes the call held back, if any; the first HEIF read of a process calls this. No lock
/// is held while libde265 runs.
pub(crate) fn settle() {
    let taken = held().take();
    if taken == Some(true) {
        call_real();
    }
}

/// Calls held back so far (0 or 1), `None` once settled.
pub(crate) fn held_back() -> Option<u32> {
    held().map(u32::from)
}

/// Takes the place of libde265's `de265_init` in this program (see the module's note).
/// Only the first call of the process is held back: any other settles first, so a decoder
/// made before the first HEIF read (by code other than libheif's constructor) still finds
/// its tables built.
#[unsafe(no_mangle)]
pub extern "C" fn de265_init() -> c_int {
    {
        let mut h = held();
        if *h == Some(false) {
            *h = Some(true);
            return OK;
        }
    }
    settle();
    call_real()
}
