//! Raw command-line flags (step one of configuration; `run` builds objects from them).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// pixq: image processing on a queue of jobs, here or on AWS.
#[derive(Debug, Parser)]
#[command(name = "pixq", version, about)]
pub struct Cli {
    /// Home of the embedded default: queue file and store folder.
    #[arg(long, global = true, env = "PIXQ_HOME", default_value = ".pixq")]
    pub home: PathBuf,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload, enqueue, process with in-process workers, and download: the one-command job.
    Process {
        /// Image files or folders (folders: the images directly inside them).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Pipeline, e.g. 'thumbnail:1024,sharpen:1,format:webp' (see `pixq ops`).
        #[arg(long, short)]
        ops: String,
        /// Folder for the results, written as <stem>.<ext>.
        #[arg(long)]
        out: PathBuf,
        /// Worker tasks (default: number of cores).
        #[arg(long, short)]
        workers: Option<usize>,
    },
    /// Upload and enqueue only; prints the batch id. Run `pixq-worker` to process.
    Submit {
        /// Image files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Pipeline.
        #[arg(long, short)]
        ops: String,
    },
    /// Progress and failures of a batch.
    Status {
        /// Batch id (printed by submit/process).
        batch: String,
    },
    /// Download the outputs of a batch.
    Fetch {
        /// Batch id.
        batch: String,
        /// Folder for the results.
        #[arg(long)]
        out: PathBuf,
    },
    /// Inspect or redrive the dead-letter queue.
    Dlq {
        /// list or redrive.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// List every pipeline step with its arguments and an example.
    Ops,
}

/// Dead-letter queue actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Show dead letters with their reasons.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Move dead letters back to the queue for another try.
    Redrive {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}
