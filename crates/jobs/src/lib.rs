//! pixq-jobs: everything between a queue message and the kernel.
//!
//! # Layout
//! - [`schema`]: the job message and the result record (versioned JSON).
//! - [`keys`]: object-key layout, content-addressed output keys, key validation.
//! - [`store`]: the [`store::ObjectStore`] port; [`store::fs`] keeps objects in folders.
//! - [`queue`]: the [`queue::Queue`] port with SQS semantics; [`queue::sqlite`] is the
//!   embedded queue (visibility, receive count, DLQ, FIFO, de-duplication).
//! - [`process`]: the one step every runtime shares: input -> kernel -> output + record.
//! - [`worker`]: the loop around it: concurrency, heartbeat, retries, graceful shutdown.
//! - [`batch`]: client helpers: build and enqueue jobs, read a batch's results.
//! - [`local`]: the embedded default's paths (`.pixq/queue.db`, `.pixq/store`).
//! - [`clock`], [`ids`]: time and identifiers.

pub mod batch;
pub mod clock;
pub mod ids;
pub mod keys;
pub mod local;
pub mod process;
pub mod queue;
pub mod schema;
pub mod store;
pub mod worker;

pub use pixq_kernel as kernel;
