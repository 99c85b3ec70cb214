//! Helpers shared by the test files that need them (each file is its own crate, so not
//! every one uses every helper).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pixq_jobs::kernel::{Channels, Format, OutputSpec, Raster};
use pixq_jobs::queue::Queue;
use pixq_jobs::store::ObjectStore;
use pixq_jobs::worker::{self, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// A PNG of noise, about 3 bytes a pixel (it does not compress).
pub fn noisy_png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let img = Raster::from_fn(w, h, Channels::Rgb, |_, _, p| {
        for v in p.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = x as u8;
        }
    });
    pixq_jobs::kernel::encode(&img, Format::Png, &OutputSpec { compression: Some(1), ..Default::default() }).unwrap()
}

/// Runs a worker until nothing is left visible, in flight or delayed on `queue` (at most a
/// minute), then stops it.
pub async fn drain(queue: Arc<dyn Queue>, store: Arc<dyn ObjectStore>, cfg: WorkerConfig) {
    let stop = CancellationToken::new();
    let h = tokio::spawn(worker::run(queue.clone(), store, cfg, stop.clone()));
    let t = std::time::Instant::now();
    loop {
        let c = queue.counts().await.unwrap();
        if c.visible + c.in_flight + c.delayed == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the worker did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    h.await.unwrap();
}
