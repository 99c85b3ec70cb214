//! libde265's initialiser is held back until a process first reads a HEIF file
//! (`src/de265.rs`). One test in its own binary: nothing reads HEIF before it starts.
#![cfg(all(feature = "heif", target_os = "linux"))]
// A call to `de265_init` as another user of libde265 would make it.
#![allow(unsafe_code)]

mod common;

use pixq_kernel::{Limits, de265_inits_held_back};

#[test]
fn libheifs_start_up_call_to_libde265_waits_for_the_first_heif_read() {
    // libheif's static constructor registered its HEVC decoder before main: that call came
    // here, not to libde265, and built nothing yet. Fails if the executable's definition
    // stops coming first (libde265's own would take the call, unseen).
    let held = de265_inits_held_back();
    assert_eq!(held, Some(1), "held back at start");
    // Any later call, before a HEIF read too, is made for real after the held-back one:
    // libde265's answer (DE265_OK), and nothing held back any more.
    unsafe extern "C" {
        fn de265_init() -> std::ffi::c_int;
    }
    // SAFETY: libde265's initialiser (through the kernel's definition) takes nothing.
    assert_eq!(unsafe { de265_init() }, 0);
    assert_eq!(de265_inits_held_back(), None);
    let heic = std::fs::read(common::samples_dir().join("chelsea-hevc.heic")).unwrap();
    let jpeg =
        pixq_kernel::decode(&std::fs::read(common::samples_dir().join("chelsea.jpg")).unwrap(), &Limits::default())
            .unwrap();
    // libde265 decodes with its tables built, and again after libheif's deinit and init
    // between the two reads.
    for round in 0..2 {
        let img = pixq_kernel::decode(&heic, &Limits::default()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(de265_inits_held_back(), None, "round {round}");
        assert_eq!((img.width(), img.height()), (jpeg.width(), jpeg.height()));
        let mean_diff =
            img.data().iter().zip(jpeg.data()).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).sum::<i32>() as f64
                / img.data().len() as f64;
        assert!(mean_diff < 6.0, "round {round}: mean difference {mean_diff:.2} from the JPEG it was made from");
    }
}
