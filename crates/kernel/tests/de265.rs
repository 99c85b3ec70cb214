//! libde265's initialiser is held back until a process first reads a HEIF file
//! (`src/de265.rs`). One test in its own binary: nothing reads HEIF before it starts.
#![cfg(all(feature = "heif", target_os = "linux"))]

mod common;

use pixq_kernel::{Limits, de265_inits_held_back};

#[test]
fn libheifs_start_up_call_to_libde265_waits_for_the_first_heif_read() {
    // libheif's static constructor registered its HEVC decoder before main: that call came
    // here, not to libde265, and built nothing yet. Fails if the executable's definition
    // stops coming first (libde265's own would take the call, unseen).
    let held = de265_inits_held_back();
    assert!(matches!(held, Some(n) if n >= 1), "held back at start: {held:?}");
    let heic = std::fs::read(common::samples_dir().join("chelsea-hevc.heic")).unwrap();
    let jpeg =
        pixq_kernel::decode(&std::fs::read(common::samples_dir().join("chelsea.jpg")).unwrap(), &Limits::default())
            .unwrap();
    // The first read makes the held-back calls, and libde265 decodes with its tables built;
    // the second, after libheif's deinit and init between the two, still does.
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
