//! An AVIF decode stays on the calling thread: dav1d left at its default takes a thread
//! (and a frame context) for every core, under a plan and a lane that count one. A test
//! binary of its own, so no other test's threads come and go while it counts.
#![cfg(all(feature = "heif", feature = "avif"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pixq_kernel::{Channels, Format, Limits, Pipeline, Raster};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn an_avif_decode_starts_no_threads() {
    let src = Raster::from_fn(1600, 1200, Channels::Rgb, |x, y, p| {
        p.copy_from_slice(&[(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 239) as u8])
    });
    let png = pixq_kernel::encode(&src, Format::Png, &Default::default()).unwrap();
    let avif =
        pixq_kernel::process(&png, &Pipeline::parse("format:avif,speed:10").unwrap(), &Limits::default()).unwrap();
    let (done, most) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (done, most) = (done.clone(), most.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(threads(), Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    let before = threads();
    for _ in 0..3 {
        let img = pixq_kernel::decode(&avif.bytes, &Limits::default()).unwrap();
        assert_eq!((img.width(), img.height()), (1600, 1200));
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let most = most.load(Ordering::Relaxed);
    assert!(most <= before, "{before} threads before the decodes, {most} during them");
}
