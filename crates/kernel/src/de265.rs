//! libde265's start-up cost, paid only by a process that decodes HEVC.
//!
//! libheif registers its decoders from a static constructor, and registering the HEVC one
//! calls libde265's `de265_init`, which builds the decoder's tables: about 1.5 ms of every
//! start of every program that links libheif (half of what `pixq --version` took), although
//! only the HEIF child (`crate::isolation`) ever decodes HEVC.
//!
//! This crate defines `de265_init` itself. A definition in the executable comes before the
//! shared library's, for libheif (linked into the executable) and for libde265's own calls
//! (`de265_new_decoder` calls `de265_init` through its PLT). Calls made before this process
//! first reads a HEIF file are counted and answered "ok" without building anything; the
//! first read ([`settle`], called before every libheif call) makes them for real, so
//! libde265's own count of initialisations ends as it would have been, and every later call
//! goes straight to libde265's.
//!
//! The only unsafe code in the kernel: a symbol defined for a C library, and one `dlsym`.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::sync::Mutex;

/// `DE265_OK`.
const OK: c_int = 0;
/// `DE265_ERROR_LIBRARY_INITIALIZATION_FAILED`.
const INIT_FAILED: c_int = 11;

type Init = unsafe extern "C" fn() -> c_int;

/// Calls owed to libde265 until the first HEIF read; `None` once they are paid.
static OWED: Mutex<Option<u32>> = Mutex::new(Some(0));

/// libde265's own `de265_init`: the next definition after this executable's.
fn real() -> Option<Init> {
    // SAFETY: dlsym with a NUL-terminated name; a non-null result is libde265's
    // `de265_error de265_init(void)`, which has this signature.
    unsafe {
        let f = libc::dlsym(libc::RTLD_NEXT, c"de265_init".as_ptr());
        (!f.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, Init>(f))
    }
}

fn call_real() -> c_int {
    match real() {
        // SAFETY: libde265's initialiser takes nothing and is safe to call from any thread
        // (it takes its own lock).
        Some(f) => unsafe { f() },
        None => INIT_FAILED,
    }
}

/// Makes the calls deferred so far; the first HEIF read of a process calls this.
pub(crate) fn settle() {
    let mut owed = OWED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = owed.take() {
        for _ in 0..n {
            call_real();
        }
    }
}

/// The calls held back so far, `None` once they were made.
pub(crate) fn held_back() -> Option<u32> {
    *OWED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes the place of libde265's `de265_init` in this program (see the module's note).
#[unsafe(no_mangle)]
pub extern "C" fn de265_init() -> c_int {
    {
        let mut owed = OWED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = owed.as_mut() {
            *n += 1;
            return OK;
        }
    }
    call_real()
}
