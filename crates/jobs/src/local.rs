//! The embedded default: a queue file and a store folder under one home folder (`.pixq/`).

use std::path::{Path, PathBuf};

use crate::queue::QueueError;
use crate::queue::sqlite::{QueueConfig, SqliteQueue};
use crate::store::fs::FsStore;

/// Bucket the local client and workers use inside the store folder.
pub const LOCAL_BUCKET: &str = "pixq";

/// Paths of the embedded default under a home folder.
#[derive(Debug, Clone)]
pub struct LocalHome {
    root: PathBuf,
}

impl LocalHome {
    /// A home at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> LocalHome {
        LocalHome { root: root.into() }
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The queue file.
    pub fn queue_path(&self) -> PathBuf {
        self.root.join("queue.db")
    }

    /// Opens the queue.
    pub fn queue(&self, cfg: QueueConfig) -> Result<SqliteQueue, QueueError> {
        SqliteQueue::open(&self.queue_path(), cfg)
    }

    /// Opens the queue, a new one made in the background (`SqliteQueue::open_in_background`).
    pub fn queue_in_background(&self, cfg: QueueConfig) -> Result<SqliteQueue, QueueError> {
        SqliteQueue::open_in_background(&self.queue_path(), cfg)
    }

    /// The object store.
    pub fn store(&self) -> FsStore {
        FsStore::new(self.root.join("store"))
    }
}
