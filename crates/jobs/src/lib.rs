//! pixq-jobs: everything between a queue message and the kernel.
//!
//! # Layout
//! - [`schema`]: the job message and the result record (versioned JSON).
//! - [`events`]: what arrives on a queue: jobs, S3 `ObjectCreated` notifications, test events.
//! - [`keys`]: object-key layout, content-addressed output keys, key validation.
//! - [`store`]: the [`store::ObjectStore`] port; [`store::fs`] keeps objects in folders.
//! - [`queue`]: the [`queue::Queue`] port with SQS semantics; [`queue::sqlite`] is the
//!   embedded queue (visibility, receive count, DLQ, FIFO, de-duplication).
//! - [`process`]: the one step every runtime shares: input -> kernel -> output + record.
//! - [`settle`]: what becomes of a message (ack, dead-letter with a record, retry after the
//!   [`settle::RetryPolicy`]'s backoff), shared by the worker and the Lambda.
//! - [`backend`]: where a flow runs ([`backend::Target`], [`backend::Lane`]) and opening
//!   the queue and store there, from one set of settings (and, feature `cli`, the flags
//!   every binary takes for them); the stack outputs.
//! - [`worker`]: the loop around it: concurrency, heartbeat, graceful shutdown.
//! - [`records`]: event-source batches (an SQS-triggered function): partial batch failures.
//! - [`batch`]: client helpers: build and enqueue jobs, read a batch's results.
//! - [`metrics`]: one CloudWatch Embedded Metric Format line per job.
//! - [`local`]: the embedded default's paths (`.pixq/queue.db`, `.pixq/store`).
//! - `aws` (feature `aws`): SDK configuration for the S3 and SQS backends.
//! - [`isolation`]: HEIF and AVIF files read in child processes ([`isolation::init`], first
//!   thing in every binary's `main`).
//! - [`clock`], [`ids`]: time and identifiers.

#[cfg(feature = "aws")]
pub mod aws;
pub mod backend;
pub mod batch;
pub mod buffers;
pub mod clock;
pub mod events;
pub mod ids;
pub mod isolation;
pub mod keys;
pub mod lanes;
#[cfg(feature = "local")]
pub mod local;
pub mod metrics;
pub mod process;
pub mod prom;
pub mod queue;
pub mod records;
pub mod route;
pub mod schema;
pub mod settle;
#[cfg(feature = "local")]
mod sqlite_file;
pub mod store;
pub mod worker;

pub use pixq_kernel as kernel;

/// The cores this process may run on (its affinity and cgroup quota; 2 when unknown),
/// read once: the standard library reads the cgroup files on every call, and workers,
/// the Lambda handler and the CLI all size themselves by it.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
}
