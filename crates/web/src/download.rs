//! Bytes this server sends from the store (outputs, inputs, on-the-fly images, ZIP
//! entries), within a memory budget shared by all responses
//! ([`crate::WebConfig::download_memory_mb`]):
//!
//! - An object over [`WINDOW`] (1 MiB) that the store keeps as a file of its own (the
//!   filesystem store, outside its pack) is sent in 256 KiB pieces read as the connection
//!   takes them, holding a window of the budget, waited for before the file is opened: a
//!   slow reader holds that, never the object, and open files stay within the budget's
//!   count of windows.
//! - Anything else (up to a window, a small object in the pack, an S3 object without
//!   presigned URLs) is read whole after waiting for room for its size, and sent in pieces
//!   copied out of it; the object and its room go with the last piece (or when the client
//!   goes).
//!
//! A download waits at most `download_wait` for room, then gets 503 with `Retry-After`.
//! Pieces handed to hyper are independent copies: what its write queue holds (about
//! 400 KB a connection) keeps nothing else alive.

use std::fs::File;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::StatusCode;
use futures::Stream;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use pixq_jobs::store::StoreError;
use tokio::sync::OwnedSemaphorePermit;

use crate::{ApiError, App};

/// Pieces a body is sent in: hyper asks for the next only when it has room for it.
pub const PIECE: usize = 256 << 10;

/// Room a file being sent holds in the budget (pieces read ahead and in flight).
pub const WINDOW: u64 = 1 << 20;

type Pieces = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A response body of `len` bytes sent piece by piece, holding its room in the download
/// budget until the last piece is out (or it is dropped).
pub struct Held {
    pieces: Pieces,
    /// Bytes not yet handed out.
    left: u64,
    /// The first bytes (to sniff the type).
    head: Bytes,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("left", &self.left).finish_non_exhaustive()
    }
}

impl Held {
    /// The body, as a response body (its first bytes, kept to sniff, are let go).
    pub fn into_body(mut self) -> Body {
        self.head = Bytes::new();
        Body::new(self)
    }

    /// The first bytes (up to a piece), to sniff their type.
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.pieces.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                let n = piece.len() as u64;
                if n == 0 || n > self.left {
                    self.left = 0;
                    return Poll::Ready(Some(Err(std::io::Error::other("the object changed while it was sent"))));
                }
                self.left -= n;
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.left = 0;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.left = 0;
                Poll::Ready(Some(Err(std::io::Error::other("the object ended early"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Why a download was not read.
#[derive(Debug)]
pub enum NotRead {
    /// No such object.
    Missing,
    /// The budget had no room in time, or the store failed.
    Failed(ApiError),
}

impl NotRead {
    /// As an answer, with `missing` for a missing object.
    pub fn answer(self, missing: &str) -> ApiError {
        match self {
            NotRead::Missing => ApiError::new(StatusCode::NOT_FOUND, missing),
            NotRead::Failed(e) => e,
        }
    }
}

/// Room in the download budget for `bytes`, waited for at most `download_wait`.
pub(crate) async fn room(app: &App, bytes: u64) -> Result<OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(app.config.download_wait, app.download_budget.hold(bytes)).await {
        Ok(Some(p)) => Ok(p),
        _ => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many downloads at once; try again shortly")),
    }
}

fn store_error(e: StoreError) -> NotRead {
    match e {
        StoreError::NotFound { .. } => NotRead::Missing,
        StoreError::TooLarge { .. } => NotRead::Failed(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the file changed while it was read; try again",
        )),
        e => NotRead::Failed(ApiError::store(e)),
    }
}

/// `key` of the app's bucket, to send.
pub(crate) async fn read(app: &App, key: &str) -> Result<Held, NotRead> {
    match source(app, key).await? {
        Source::File(file, len, room) => {
            let mut pieces = file_pieces(file, len, room);
            let head = match len {
                0 => Bytes::new(),
                _ => match futures::StreamExt::next(&mut pieces).await {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        return Err(NotRead::Failed(ApiError::store(StoreError::Transient(format!(
                            "read {key}: {e}"
                        )))));
                    }
                    None => return Err(NotRead::Missing),
                },
            };
            let first = futures::stream::iter([Ok(head.clone())]);
            Ok(Held { pieces: Box::pin(futures::StreamExt::chain(first, pieces)), left: len, head })
        }
        Source::Whole(data, room) => {
            let head = Bytes::copy_from_slice(&data[..data.len().min(PIECE)]);
            let left = data.len() as u64;
            Ok(Held { pieces: whole_pieces(data, room), left, head })
        }
    }
}

/// Where a download's bytes come from.
pub(crate) enum Source {
    /// The object's own file, its length, and [`WINDOW`] of room (read in pieces).
    File(Arc<File>, u64, OwnedSemaphorePermit),
    /// The object read whole, with its room.
    Whole(Vec<u8>, OwnedSemaphorePermit),
}

/// Opens `key` of the app's bucket to be sent. An object over [`WINDOW`] that the store
/// keeps as its own file is sent from it, within a window of room waited for before the file
/// is opened (a download waiting for room holds no descriptor, so open files stay within
/// the budget's count of windows). Anything else is read whole after waiting for room for
/// its size (at most a window's, for the files of the local store).
pub(crate) async fn source(app: &App, key: &str) -> Result<Source, NotRead> {
    let size = match app.store.head(&app.bucket, key).await {
        Ok(Some(m)) => m.size,
        Ok(None) => return Err(NotRead::Missing),
        Err(e) => return Err(store_error(e)),
    };
    if size > WINDOW {
        let window = room(app, WINDOW).await.map_err(NotRead::Failed)?;
        if let Some(f) = app.store.open_file(&app.bucket, key).await.map_err(store_error)? {
            let len = f.metadata().map_err(|e| store_error(StoreError::Transient(format!("read {key}: {e}"))))?.len();
            return Ok(Source::File(Arc::new(f), len, window));
        }
    }
    let room = room(app, size).await.map_err(NotRead::Failed)?;
    // Never more than the room held: an object that grew since its size was read is refused.
    let data = app.store.get_at_most(&app.bucket, key, size).await.map_err(store_error)?;
    Ok(Source::Whole(data, room))
}

/// Copies of `data` piece by piece; `data` and `room` go with the last.
pub(crate) fn whole_pieces(data: Vec<u8>, room: OwnedSemaphorePermit) -> Pieces {
    let s = futures::stream::unfold((Some((data, room)), 0usize), |(held, at)| async move {
        let (data, room) = held?;
        let end = (at + PIECE).min(data.len());
        let piece = Bytes::copy_from_slice(&data[at..end]);
        if end >= data.len() {
            drop((data, room));
            return (!piece.is_empty()).then_some((Ok(piece), (None, end)));
        }
        Some((Ok(piece), (Some((data, room)), end)))
    });
    Box::pin(s)
}

/// `len` bytes of `file` piece by piece, each read on a blocking thread when the
/// connection asks for it; `room` goes with the last. A file that ends early is an error.
pub(crate) fn file_pieces(file: Arc<File>, len: u64, room: OwnedSemaphorePermit) -> Pieces {
    let s = futures::stream::unfold((Some((file, room)), 0u64), move |(held, at)| async move {
        let (file, room) = held?;
        if at >= len {
            return None;
        }
        let n = (len - at).min(PIECE as u64) as usize;
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || read_at(&f, at, n)).await;
        match read.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(piece) => {
                let at = at + piece.len() as u64;
                let next = (at < len).then_some((file, room));
                Some((Ok(Bytes::from(piece)), (next, at)))
            }
            Err(e) => Some((Err(e), (None, at))),
        }
    });
    Box::pin(s)
}

/// `n` bytes of `file` from `at` (fewer only where it ends).
fn read_at(file: &File, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        #[cfg(unix)]
        let r = std::os::unix::fs::FileExt::read_at(file, &mut buf[got..], at + got as u64);
        #[cfg(windows)]
        let r = std::os::windows::fs::FileExt::seek_read(file, &mut buf[got..], at + got as u64);
        match r {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    if got == 0 {
        return Err(std::io::Error::other("the file ended early"));
    }
    Ok(buf)
}
