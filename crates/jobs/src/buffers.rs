//! Input buffers kept between jobs.
//!
//! A photo read from the store lands in a fresh allocation of several MB: the allocator
//! maps new pages, and the first write to each one faults (a page zeroed and charged to
//! the process), about 1,500 faults for a 6 MB photo, before the decoder reads a byte. The
//! worker hands each input's buffer back here once its kernel is done, and the embedded
//! store reads the next input into one of them: pages already mapped, no faults.
//!
//! Kept buffers are memory the admission budget does not see, so a worker caps them at an
//! eighth of its budget ([`keep_at_most`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Buffers smaller than this are not kept (a small allocation comes from the allocator's
/// free lists anyway).
const KEEP_FROM: usize = 1 << 20;
/// At most this many buffers, and this many bytes (unless lowered), are kept.
const MAX_KEPT: usize = 4;
const MAX_KEPT_BYTES: usize = 96 << 20;

static KEPT: Kept = Kept(Mutex::new(Vec::new()), AtomicUsize::new(MAX_KEPT_BYTES));

/// A set of kept buffers and the most bytes it keeps (the process has one; tests make
/// their own).
struct Kept(Mutex<Vec<Vec<u8>>>, AtomicUsize);

impl Kept {
    /// An empty buffer with room for at least `len` bytes: the smallest kept one that
    /// fits, or a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        if len >= KEEP_FROM {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let best = kept.iter().enumerate().filter(|(_, b)| b.capacity() >= len).min_by_key(|(_, b)| b.capacity());
            if let Some((i, _)) = best {
                return kept.swap_remove(i);
            }
        }
        Vec::with_capacity(len)
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        let limit = self.1.load(Ordering::Relaxed);
        if buf.capacity() < KEEP_FROM || buf.capacity() > limit {
            return;
        }
        buf.clear();
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if kept.len() < MAX_KEPT && held + buf.capacity() <= limit {
            kept.push(buf);
        }
    }

    fn keep_at_most(&self, bytes: usize) {
        let limit = self.1.fetch_min(bytes, Ordering::Relaxed).min(bytes);
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The largest go first until the rest fits.
        kept.sort_by_key(Vec::capacity);
        while kept.iter().map(Vec::capacity).sum::<usize>() > limit {
            kept.pop();
        }
    }

    fn read_file(&self, path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
        self.read_open(&mut std::fs::File::open(path)?, max)
    }

    fn read_open(&self, f: &mut std::fs::File, max: u64) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0).min(max);
        // One byte over the size: `read_to_end` sees the end without growing the buffer.
        let mut buf = self.take(usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1));
        // Never more than one byte past `max`, however large the file is or grows meanwhile.
        f.take(max.saturating_add(1)).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// Keeps `buf` for a later [`read_file`] if it is large and there is room; otherwise frees it.
/// Its contents are dropped (the length is set to zero; a later reader writes before it
/// reads, as `Read::read_to_end` does).
pub fn give_back(buf: Vec<u8>) {
    KEPT.give_back(buf)
}

/// The file at `path`, read into the smallest kept buffer that fits, or a new one: the
/// whole file, or `max + 1` bytes of a longer one (so the caller sees it is too long
/// without reading the rest).
pub fn read_file(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    KEPT.read_file(path, max)
}

/// The rest of the open file `f`, read as [`read_file`] does.
pub fn read_open(f: &mut std::fs::File, max: u64) -> std::io::Result<Vec<u8>> {
    KEPT.read_open(f, max)
}

/// Keeps no more than `bytes` of buffers from now on (never more than 96 MB; of several
/// calls the smallest holds), dropping kept ones over it.
pub fn keep_at_most(bytes: usize) {
    KEPT.keep_at_most(bytes)
}

/// Bytes of capacity kept now.
pub fn kept_bytes() -> usize {
    KEPT.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(Vec::capacity).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> Kept {
        Kept(Mutex::new(Vec::new()), AtomicUsize::new(MAX_KEPT_BYTES))
    }

    #[test]
    fn a_returned_buffer_serves_the_next_read_and_reads_are_exact() {
        let k = kept();
        let d = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let small: Vec<u8> = (0..1_500_000u32).map(|i| (i % 13) as u8).collect();
        std::fs::write(d.path().join("big"), &big).unwrap();
        std::fs::write(d.path().join("small"), &small).unwrap();
        let first = k.read_file(&d.path().join("big"), u64::MAX).unwrap();
        assert_eq!(first, big);
        let ptr = first.as_ptr();
        k.give_back(first);
        // The smaller file goes into the kept buffer: same memory, only its own bytes.
        let second = k.read_file(&d.path().join("small"), u64::MAX).unwrap();
        assert_eq!(second.as_ptr(), ptr);
        assert_eq!(second, small);
        k.give_back(second);
        let third = k.read_file(&d.path().join("big"), u64::MAX).unwrap();
        assert_eq!((third.as_ptr(), &third), (ptr, &big));
        // A file larger than every kept buffer gets a new one.
        k.give_back(third);
        let larger: Vec<u8> = vec![9; 4_000_000];
        std::fs::write(d.path().join("larger"), &larger).unwrap();
        let fourth = k.read_file(&d.path().join("larger"), u64::MAX).unwrap();
        assert_ne!(fourth.as_ptr(), ptr);
        assert_eq!(fourth, larger);
    }

    #[test]
    fn small_and_surplus_buffers_are_not_kept() {
        let k = kept();
        k.give_back(Vec::with_capacity(1000));
        k.give_back(Vec::with_capacity(MAX_KEPT_BYTES + 1));
        assert!(k.0.lock().unwrap().is_empty());
        for _ in 0..MAX_KEPT + 3 {
            k.give_back(vec![1; 2 << 20]);
        }
        let kept = k.0.lock().unwrap();
        assert_eq!(kept.len(), MAX_KEPT);
        assert!(kept.iter().all(|b| b.capacity() >= KEEP_FROM && b.is_empty()));
    }

    #[test]
    fn a_lower_limit_drops_what_is_over_it_and_holds() {
        let k = kept();
        for mb in [2, 3, 4] {
            k.give_back(Vec::with_capacity(mb << 20));
        }
        k.keep_at_most(6 << 20);
        let caps = |k: &Kept| k.0.lock().unwrap().iter().map(Vec::capacity).collect::<Vec<_>>();
        assert!(caps(&k).iter().sum::<usize>() <= 6 << 20, "{:?}", caps(&k));
        assert_eq!(caps(&k).len(), 2, "only the largest went: {:?}", caps(&k));
        // A later, higher limit does not raise it; buffers over it are not kept.
        k.keep_at_most(64 << 20);
        k.give_back(Vec::with_capacity(5 << 20));
        assert!(caps(&k).iter().sum::<usize>() <= 6 << 20, "{:?}", caps(&k));
        k.give_back(Vec::with_capacity(7 << 20));
        assert!(caps(&k).iter().all(|&c| c < 7 << 20));
    }
}
