//! A ZIP of stored (uncompressed: images are compressed already) entries, produced file by
//! file as the store hands them over, so a large batch never sits in memory whole. Limits
//! of the classic format (no ZIP64): at most 65,535 entries and 4 GiB in all; past them the
//! stream stops with an error instead of writing a broken archive silently.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use pixq_jobs::store::{ObjectStore, StoreError};

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const END: u32 = 0x0605_4b50;
/// General-purpose flag bit 11: names are UTF-8.
const UTF8: u16 = 0x0800;
/// 1980-01-01 00:00, the earliest DOS date: outputs have no meaningful mtime.
const DOS_DATE: u16 = (1 << 5) | 1;

fn le16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn le32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Writer state: what the central directory will list.
#[derive(Default)]
pub struct ZipWriter {
    offset: u64,
    central: Vec<u8>,
    entries: u32,
    /// An entry started with [`ZipWriter::entry_start`]: name, offset and size.
    open: Option<(String, u32, u32)>,
}

/// General-purpose flag bit 3: the checksum follows the data, in a data descriptor.
const DESCRIPTOR: u16 = 0x0008;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;

fn too_big() -> std::io::Error {
    std::io::Error::other("the ZIP would pass 4 GiB or 65,535 entries (no ZIP64)")
}

impl ZipWriter {
    /// The local header and data of one entry.
    pub fn entry(&mut self, name: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut h = self.entry_header(name, crc32fast::hash(data), data.len() as u64)?;
        h.extend_from_slice(data);
        Ok(h)
    }

    /// The local header of an entry of `size` bytes with checksum `crc`, whose data the
    /// caller sends right after it.
    pub fn entry_header(&mut self, name: &str, crc: u32, size: u64) -> std::io::Result<Vec<u8>> {
        let (offset, size) = self.check(name, size)?;
        let h = local_header(name, UTF8, crc, size);
        self.record(name, UTF8, crc, size, offset);
        self.offset += h.len() as u64 + u64::from(size);
        Ok(h)
    }

    /// The local header of an entry of `size` bytes whose checksum is not known yet: the
    /// caller sends the data, then [`ZipWriter::entry_end`] with the checksum of what it sent.
    pub fn entry_start(&mut self, name: &str, size: u64) -> std::io::Result<Vec<u8>> {
        let (offset, size) = self.check(name, size)?;
        let h = local_header(name, UTF8 | DESCRIPTOR, 0, 0);
        self.offset += h.len() as u64 + u64::from(size);
        self.open = Some((name.to_string(), offset, size));
        Ok(h)
    }

    /// The data descriptor closing the entry [`ZipWriter::entry_start`] opened.
    pub fn entry_end(&mut self, crc: u32) -> std::io::Result<Vec<u8>> {
        let (name, offset, size) = self.open.take().ok_or_else(|| std::io::Error::other("no entry is open"))?;
        let mut d = Vec::with_capacity(16);
        for x in [DESCRIPTOR_SIG, crc, size, size] {
            le32(&mut d, x);
        }
        self.record(&name, UTF8 | DESCRIPTOR, crc, size, offset);
        self.offset += d.len() as u64;
        Ok(d)
    }

    /// The offset of a next entry of `size` bytes and its size, both within the format.
    fn check(&self, name: &str, size: u64) -> std::io::Result<(u32, u32)> {
        if self.open.is_some() {
            return Err(std::io::Error::other("an entry is still open"));
        }
        let size = u32::try_from(size).map_err(|_| too_big())?;
        let offset = u32::try_from(self.offset).map_err(|_| too_big())?;
        if self.entries >= u32::from(u16::MAX) || name.len() > usize::from(u16::MAX) {
            return Err(too_big());
        }
        Ok((offset, size))
    }

    /// An entry's record in the central directory.
    fn record(&mut self, name: &str, flags: u16, crc: u32, size: u32, offset: u32) {
        let c = &mut self.central;
        le32(c, CENTRAL);
        for x in [20, 20, flags, 0, 0, DOS_DATE] {
            le16(c, x);
        }
        for x in [crc, size, size] {
            le32(c, x);
        }
        for x in [name.len() as u16, 0, 0, 0, 0] {
            le16(c, x);
        }
        le32(c, 0);
        le32(c, offset);
        c.extend_from_slice(name.as_bytes());
        self.entries += 1;
    }

    /// The central directory and the end record.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        if self.open.is_some() {
            return Err(std::io::Error::other("an entry is still open"));
        }
        let too_big = || std::io::Error::other("the ZIP would pass 4 GiB (no ZIP64)");
        let offset = u32::try_from(self.offset).map_err(|_| too_big())?;
        let size = u32::try_from(self.central.len()).map_err(|_| too_big())?;
        let mut out = self.central;
        le32(&mut out, END);
        for x in [0, 0, self.entries as u16, self.entries as u16] {
            le16(&mut out, x);
        }
        le32(&mut out, size);
        le32(&mut out, offset);
        le16(&mut out, 0);
        Ok(out)
    }
}

/// A local header (no extra field).
fn local_header(name: &str, flags: u16, crc: u32, size: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(30 + name.len());
    le32(&mut h, LOCAL);
    for x in [20, flags, 0, 0, DOS_DATE] {
        le16(&mut h, x);
    }
    for x in [crc, size, size] {
        le32(&mut h, x);
    }
    le16(&mut h, name.len() as u16);
    le16(&mut h, 0);
    h.extend_from_slice(name.as_bytes());
    h
}

/// The archive of `files` (name in the archive, key in `bucket`), chunk by chunk: one
/// object is read at a time, so memory stays at the largest file.
pub fn chunks(store: Arc<dyn ObjectStore>, bucket: String, files: Vec<(String, String)>) -> crate::presign::Chunks {
    let state = (store, bucket, files.into_iter(), Some(ZipWriter::default()));
    let s = futures::stream::unfold(state, |(store, bucket, mut files, writer)| async move {
        let mut w = writer?;
        match files.next() {
            Some((name, key)) => {
                let chunk = match store.get(&bucket, &key).await {
                    Ok(data) => w.entry(&name, &data).map_err(|e| StoreError::Permanent(format!("{name}: {e}"))),
                    Err(e) => Err(e),
                };
                match chunk {
                    Ok(c) => Some((Ok(c), (store, bucket, files, Some(w)))),
                    Err(e) => Some((Err(e), (store, bucket, files, None))),
                }
            }
            None => {
                let end = w.finish().map_err(|e| StoreError::Permanent(format!("zip: {e}")));
                Some((end, (store, bucket, files, None)))
            }
        }
    });
    Box::pin(s)
}

/// A response body that streams the archive of `files` (name in the archive, key in the
/// app's bucket), one object at a time, each sent as [`crate::download`] sends a download:
/// a file in pieces within a window of the budget, its checksum taken from the pieces sent
/// and written after them (a data descriptor); anything else read whole within room for
/// its size, its room held until its last piece is out. An object that cannot be read, or
/// finds no room in time, ends the stream with an error: the archive is cut short.
pub(crate) fn stream(app: Arc<crate::App>, files: Vec<(String, String)>) -> Body {
    let state: (Arc<crate::App>, _, Option<ZipWriter>, Option<Current>) =
        (app, files.into_iter(), Some(ZipWriter::default()), None);
    let s = futures::stream::unfold(state, |(app, mut files, writer, mut current)| async move {
        use futures::StreamExt;
        let mut w = writer?;
        if let Some(c) = current.as_mut() {
            match c.pieces.next().await {
                Some(Ok(piece)) => {
                    if let Some(h) = c.crc.as_mut() {
                        h.update(&piece);
                    }
                    return Some((Ok(piece), (app, files, Some(w), current)));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "ZIP cut short");
                    return Some((Err(e), (app, files, None, None)));
                }
                None => {
                    if let Some(h) = current.take().and_then(|c| c.crc) {
                        let end = w.entry_end(h.finalize()).map(Bytes::from);
                        let w = end.is_ok().then_some(w);
                        return Some((end, (app, files, w, None)));
                    }
                }
            }
        }
        let Some((name, key)) = files.next() else {
            let end = w.finish().map(Bytes::from).map_err(std::io::Error::other);
            return Some((end, (app, files, None, None)));
        };
        match entry(&app, &mut w, &name, &key).await {
            Ok((header, c)) => Some((Ok(header), (app, files, Some(w), Some(c)))),
            Err(e) => {
                tracing::warn!(entry = %name, error = %e, "ZIP cut short");
                Some((Err(std::io::Error::other(e)), (app, files, None, None)))
            }
        }
    });
    Body::from_stream(s)
}

/// The entry being sent: its data, and for a file the checksum of what was sent so far.
struct Current {
    pieces: std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>,
    crc: Option<crc32fast::Hasher>,
}

/// The local header of one entry of [`stream`], and its data to send after it.
async fn entry(app: &crate::App, w: &mut ZipWriter, name: &str, key: &str) -> Result<(Bytes, Current), String> {
    use crate::download::{self, Source};
    let source = download::source(app, key).await.map_err(|e| format!("{name}: {:?}", e.answer("gone")))?;
    match source {
        Source::File(file, len, room) => {
            let header = w.entry_start(name, len).map_err(|e| format!("{name}: {e}"))?;
            let pieces = download::file_pieces(file, len, room);
            Ok((Bytes::from(header), Current { pieces, crc: Some(crc32fast::Hasher::new()) }))
        }
        Source::Whole(data, room) => {
            let header =
                w.entry_header(name, crc32fast::hash(&data), data.len() as u64).map_err(|e| format!("{name}: {e}"))?;
            Ok((Bytes::from(header), Current { pieces: download::whole_pieces(data, room), crc: None }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the archive back through its central directory, as an unzip tool does.
    fn read(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
        let end = zip.len() - 22;
        assert_eq!(u32::from_le_bytes(zip[end..end + 4].try_into().unwrap()), END);
        let n = u16::from_le_bytes(zip[end + 10..end + 12].try_into().unwrap()) as usize;
        let mut at = u32::from_le_bytes(zip[end + 16..end + 20].try_into().unwrap()) as usize;
        let mut out = Vec::new();
        for _ in 0..n {
            assert_eq!(u32::from_le_bytes(zip[at..at + 4].try_into().unwrap()), CENTRAL);
            let crc = u32::from_le_bytes(zip[at + 16..at + 20].try_into().unwrap());
            let size = u32::from_le_bytes(zip[at + 20..at + 24].try_into().unwrap()) as usize;
            let nlen = u16::from_le_bytes(zip[at + 28..at + 30].try_into().unwrap()) as usize;
            let local = u32::from_le_bytes(zip[at + 42..at + 46].try_into().unwrap()) as usize;
            let name = String::from_utf8(zip[at + 46..at + 46 + nlen].to_vec()).unwrap();
            assert_eq!(u32::from_le_bytes(zip[local..local + 4].try_into().unwrap()), LOCAL);
            let data_at = local + 30 + nlen;
            let data = zip[data_at..data_at + size].to_vec();
            assert_eq!(crc32fast::hash(&data), crc, "{name}");
            out.push((name, data));
            at += 46 + nlen;
        }
        out
    }

    #[test]
    fn entries_read_back() {
        let mut w = ZipWriter::default();
        let mut zip = w.entry("a.jpg", b"hello").unwrap();
        zip.extend(w.entry("ü/b.png", &[0u8; 1000]).unwrap());
        zip.extend(w.entry("empty", b"").unwrap());
        zip.extend(w.finish().unwrap());
        let got = read(&zip);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("a.jpg".to_string(), b"hello".to_vec()));
        assert_eq!(got[1].0, "ü/b.png");
        assert_eq!(got[1].1.len(), 1000);
        assert_eq!(got[2].1.len(), 0);
    }

    #[test]
    fn an_entry_with_a_descriptor_is_placed_and_listed_right() {
        let mut w = ZipWriter::default();
        let mut zip = w.entry("first", b"one").unwrap();
        let start = zip.len() as u32;
        zip.extend(w.entry_start("later", 5).unwrap());
        // While it is open, no other entry and no second start.
        assert!(w.entry("other", b"x").is_err() && w.entry_start("other", 1).is_err());
        zip.extend(b"hello");
        zip.extend(w.entry_end(crc32fast::hash(b"hello")).unwrap());
        assert!(w.entry_end(0).is_err(), "nothing is open");
        zip.extend(w.entry("last", b"z").unwrap());
        let dir_at = zip.len() as u32;
        zip.extend(w.finish().unwrap());
        let le32 = |i: usize| u32::from_le_bytes(zip[i..i + 4].try_into().unwrap());
        // The end record points at the directory; the directory's second record at the entry.
        let end = zip.len() - 22;
        assert_eq!((le32(end + 16), u16::from_le_bytes([zip[end + 10], zip[end + 11]])), (dir_at, 3));
        let second = dir_at as usize + 46 + "first".len();
        assert_eq!(le32(second + 42), start);
        assert_eq!((le32(second + 16), le32(second + 20)), (crc32fast::hash(b"hello"), 5));
        // Its descriptor follows its data.
        let data = start as usize + 30 + "later".len();
        assert_eq!(&zip[data..data + 5], b"hello");
        assert_eq!(le32(data + 5), 0x0807_4b50);
        // The entry after it starts after the descriptor.
        assert_eq!(le32(data + 5 + 16), LOCAL);
    }
}
