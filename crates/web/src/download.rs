//! Bytes this server sends from the store (outputs, inputs, on-the-fly images, ZIP entries)
//! are read whole before they are sent, so they are read within a memory budget shared by
//! all responses ([`crate::WebConfig::download_memory_mb`]): a download waits for room for
//! its object's size before reading it, at most `download_wait` (then 503 with
//! `Retry-After`), and holds the room until the client has taken all but the last piece of
//! it. So a thousand clients asking for a large output at once, or reading it slowly, hold
//! the budget, not a copy of the output each.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::StatusCode;
use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use pixq_jobs::store::StoreError;
use tokio::sync::OwnedSemaphorePermit;

use crate::{ApiError, App};

/// Pieces a held body is sent in: hyper asks for the next only when it has room for it.
const PIECE: usize = 256 << 10;

/// A response body of bytes read whole, holding their room in the download budget until the
/// last piece is handed to the connection.
#[derive(Debug)]
pub struct Held {
    data: Bytes,
    room: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// The body, as a response body.
    pub fn into_body(self) -> Body {
        Body::new(self)
    }

    /// The bytes read (to sniff their type).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            self.room = None;
            return Poll::Ready(None);
        }
        let n = self.data.len().min(PIECE);
        let piece = self.data.split_to(n);
        if self.data.is_empty() {
            self.room = None;
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
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
        _ => Err(busy()),
    }
}

fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too many downloads at once; try again shortly")
}

/// Reads `key` of the app's bucket whole, within the download budget.
pub(crate) async fn read(app: &App, key: &str) -> Result<Held, NotRead> {
    let meta = match app.store.head(&app.bucket, key).await {
        Ok(Some(m)) => m,
        Ok(None) | Err(StoreError::NotFound { .. }) => return Err(NotRead::Missing),
        Err(e) => return Err(NotRead::Failed(ApiError::store(e))),
    };
    let room = room(app, meta.size).await.map_err(NotRead::Failed)?;
    // Never more than the room held: an object that grew since its size was read is refused.
    match app.store.get_at_most(&app.bucket, key, meta.size).await {
        Ok(b) => Ok(Held { data: Bytes::from(b), room: Some(room) }),
        Err(StoreError::NotFound { .. }) => Err(NotRead::Missing),
        Err(StoreError::TooLarge { .. }) => Err(NotRead::Failed(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the file changed while it was read; try again",
        ))),
        Err(e) => Err(NotRead::Failed(ApiError::store(e))),
    }
}
