//! Raw command-line flags (step one of configuration; `run` builds objects from them).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pixq_jobs::backend::ConnectArgs;

/// pixq: image processing on a queue of jobs, here or on AWS.
#[derive(Debug, Parser)]
#[command(name = "pixq", version, about)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes: where the flow runs and how to talk.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Where the flow runs: the same flags and variables in every pixq binary.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Machine-readable JSON on stdout (status, dlq list, ec2 list, the summary of process).
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The commands that work on a queue and a store (`run`).
    #[command(flatten)]
    Jobs(JobsCommand),
    /// List every pipeline step with its arguments and an example.
    Ops,
    /// Serve the web front end (API, page, signed on-the-fly image URLs) with in-process
    /// workers: one command, nothing else to start.
    Serve(ServeArgs),
    /// Print the signed path of an on-the-fly image (`/img/{signature}/{pipeline}/{key}`),
    /// with the key `pixq serve` on the same --home uses.
    Sign {
        /// The image's key under the served prefix (`images/` in the bucket).
        key: String,
        /// Pipeline, or `preset:NAME`.
        #[arg(long)]
        ops: String,
        /// Seconds from now until the URL expires (default: never).
        #[arg(long)]
        expires: Option<u64>,
        /// Signing key (default: the home's signing.key, made on first use).
        #[arg(long, env = "PIXQ_SIGNING_KEY", hide_env_values = true)]
        signing_key: Option<String>,
    },
    /// Print a shell completion script (e.g. `pixq completions bash > ~/.local/share/bash-completion/completions/pixq`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// EC2 workers on the stack's heavy queue: the Auto Scaling group (up, down, status) and
    /// one-off instances (launch, list, terminate).
    #[cfg(feature = "ec2")]
    Ec2 {
        /// What to do.
        #[command(subcommand)]
        action: Ec2Action,
    },
}

/// Commands on a queue and a store, local or on AWS.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Upload, enqueue, process with in-process workers, and download: the one-command job.
    Process {
        /// Image files or folders (folders: the images directly inside them).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Pipeline, e.g. 'thumbnail:1024,sharpen:1,format:webp' (see `pixq ops`).
        #[arg(long, short)]
        ops: String,
        /// Folder for the results, written as <stem>.<ext> (names collide: <stem>-2.<ext>, in
        /// input order). Existing files are never replaced without --overwrite.
        #[arg(long)]
        out: PathBuf,
        /// Replace files that already exist in --out.
        #[arg(long)]
        overwrite: bool,
        /// In-process worker tasks (local default: number of cores; aws default: 0, the
        /// deployed Lambda or EC2 workers do the work).
        #[arg(long, short)]
        workers: Option<usize>,
        /// Give up waiting after this many seconds (jobs stay queued; `pixq fetch` later).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Memory budget of the in-process workers' kernels, MB (default: 3/4 of this
        /// machine's memory); a job that can never fit fails with the figures.
        #[arg(long, env = "PIXQ_MEMORY_MB")]
        memory_mb: Option<u64>,
        /// Largest accepted source image, in megapixels.
        #[arg(long, env = "PIXQ_MAX_MEGAPIXELS", default_value_t = 120.0)]
        max_megapixels: f64,
        /// Most frames of an animation written as one (animated GIF/WebP output).
        #[arg(long, env = "PIXQ_MAX_FRAMES", default_value_t = 1_000)]
        max_frames: u32,
        /// Most megapixels over all the frames of an animation (frames x canvas).
        #[arg(long, env = "PIXQ_MAX_ANIMATION_MEGAPIXELS", default_value_t = 500.0)]
        max_animation_megapixels: f64,
        /// Longest one job's kernel may run, in seconds; an overrun is a recorded failure.
        #[arg(long, env = "PIXQ_JOB_TIMEOUT_SECS", default_value_t = 600)]
        job_timeout_secs: u64,
        /// Where jobs run on AWS: auto (each image by its header and the pipeline: the Lambda
        /// function when it fits its memory and timeout, else the EC2 workers' heavy queue),
        /// lambda, or ec2. The embedded default has one queue and ignores it.
        #[arg(long, default_value = "auto")]
        route: pixq_jobs::route::RouteChoice,
        /// Keep the uploaded copies of inputs whose jobs succeeded in the local store (by
        /// default they are removed once the results are written to --out; inputs of failed
        /// jobs are always kept for `pixq dlq redrive`).
        #[arg(long)]
        keep_inputs: bool,
    },
    /// Upload and enqueue only; prints the batch id. Run `pixq-worker` to process.
    Submit {
        /// Image files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Pipeline.
        #[arg(long, short)]
        ops: String,
        /// Where jobs run on AWS: auto (each image by its header and the pipeline: the Lambda
        /// function when it fits its memory and timeout, else the EC2 workers' heavy queue),
        /// lambda, or ec2. The embedded default has one queue and ignores it.
        #[arg(long, default_value = "auto")]
        route: pixq_jobs::route::RouteChoice,
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
        /// Replace files that already exist in --out.
        #[arg(long)]
        overwrite: bool,
    },
    /// Inspect or redrive the dead-letter queue.
    Dlq {
        /// list or redrive.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The marks `watermark:NAME` steps lay on pictures (stored at `watermarks/NAME`).
    Watermark {
        /// add or list.
        #[command(subcommand)]
        action: WatermarkAction,
    },
}

/// Watermark actions.
#[derive(Debug, Subcommand)]
pub enum WatermarkAction {
    /// Store an image (PNG with alpha works best; at most 2 MP and 8 MB) as the mark NAME;
    /// replaces an earlier one (outputs made with it keep their own keys).
    Add {
        /// Name used in `watermark:NAME` (a-z, 0-9, '-', '_').
        name: String,
        /// The image file.
        file: PathBuf,
    },
    /// List the stored marks.
    List,
}

/// EC2 worker actions.
#[cfg(feature = "ec2")]
#[derive(Debug, Subcommand)]
pub enum Ec2Action {
    /// Release the worker to the stack's Auto Scaling group (binary and bootstrap, content-
    /// addressed, and the pointer its instances read at boot) and set the group's size.
    /// Without sizes the group is left to its scaling policies (backlog per instance, out of
    /// and back to zero).
    Up(UpArgs),
    /// Scale the group to zero now (each worker releases what it holds first).
    Down {
        /// The group (default: the stack's WorkerGroupName).
        #[arg(long)]
        group: Option<String>,
    },
    /// The group's size and instances, the heavy queue's backlog, recent scaling activity.
    Status {
        /// The group (default: the stack's WorkerGroupName).
        #[arg(long)]
        group: Option<String>,
    },
    /// Start workers: instances that fetch pixq-worker from the stack's bucket and long-poll
    /// the heavy queue with their instance role.
    Launch(LaunchArgs),
    /// Launch as many workers as the heavy queue's backlog needs (one per --per-worker
    /// messages, at most --max, counting the fleet's live instances); run it from cron or
    /// after a submit. Idle workers stop and terminate themselves, so this only scales up.
    Scale {
        /// Messages (visible + in flight) one worker is expected to handle.
        #[arg(long, default_value_t = 500)]
        per_worker: u64,
        /// Most instances in the fleet.
        #[arg(long, default_value_t = 10)]
        max: u64,
        /// How to launch (--count is computed).
        #[command(flatten)]
        launch: LaunchArgs,
    },
    /// Instances of a fleet that are not terminated.
    List {
        /// Fleet name (the `pixq:fleet` tag).
        #[arg(long, default_value = "pixq")]
        fleet: String,
    },
    /// Terminate a fleet's instances (each worker gets SIGTERM and releases what it holds).
    Terminate {
        /// Fleet name.
        #[arg(long, default_value = "pixq")]
        fleet: String,
        /// Only these instance ids (default: the whole fleet).
        ids: Vec<String>,
    },
}

/// Flags of `pixq ec2 up`.
#[cfg(feature = "ec2")]
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// A new worker binary to release (Linux, arm64 or x86_64); instances started from now
    /// on run it. Needed once, before the group's first instance.
    #[arg(long, env = "PIXQ_WORKER_BINARY")]
    pub worker_binary: Option<PathBuf>,
    /// The group (default: the stack's WorkerGroupName).
    #[arg(long)]
    pub group: Option<String>,
    /// Fewest instances (0 lets the group scale in to nothing).
    #[arg(long)]
    pub min: Option<i32>,
    /// Most instances.
    #[arg(long)]
    pub max: Option<i32>,
    /// Instances wanted now (the scaling policies change it afterwards).
    #[arg(long)]
    pub desired: Option<i32>,
}

/// Flags of `pixq ec2 launch`.
#[cfg(feature = "ec2")]
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// The pixq-worker binary for the instances (Linux, arm64 or x86_64, e.g. from
    /// `cargo lambda build --release --arm64 --bin pixq-worker`); uploaded once to
    /// s3://<bucket>/releases/.
    #[arg(long, env = "PIXQ_WORKER_BINARY")]
    pub worker_binary: PathBuf,
    /// Number of instances.
    #[arg(long, default_value_t = 1)]
    pub count: i32,
    /// Instance type (default: c7g.xlarge for an arm64 binary, c7i.xlarge for x86_64).
    #[arg(long)]
    pub instance_type: Option<String>,
    /// AMI (default: the newest Amazon Linux 2023 image for the binary's architecture).
    #[arg(long)]
    pub ami: Option<String>,
    /// Instance profile name or ARN (default: the stack's WorkerInstanceProfileName).
    #[arg(long)]
    pub instance_profile: Option<String>,
    /// Subnet (default: the default VPC's).
    #[arg(long)]
    pub subnet_id: Option<String>,
    /// Security groups (default: the VPC's default group; workers need no inbound traffic).
    #[arg(long)]
    pub security_group_id: Vec<String>,
    /// Spot instances (one-time; an interrupted worker's jobs return to the queue).
    #[arg(long)]
    pub spot: bool,
    /// Fleet name, tagged `pixq:fleet` (several fleets can share an account).
    #[arg(long, default_value = "pixq")]
    pub fleet: String,
    /// Workers exit after this long with an empty queue and their instances terminate
    /// themselves (0: run until terminated).
    #[arg(long, default_value_t = 600)]
    pub idle_stop_secs: u64,
    /// Kernels per worker (default: the instance's cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Print the user-data instead of launching.
    #[arg(long)]
    pub dry_run: bool,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every environment variable of every subcommand, with the flag it stands for.
    fn variables(cmd: &clap::Command, out: &mut Vec<(String, String)>) {
        for a in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (a.get_env(), a.get_long()) {
                out.push((env.to_string_lossy().into_owned(), long.to_string()));
            }
        }
        for sub in cmd.get_subcommands() {
            variables(sub, out);
        }
    }

    #[test]
    fn the_readme_table_lists_every_flag_and_variable() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let start = readme.find("## Configuration: every flag and variable").expect("the README's configuration table");
        let table = &readme[start..];
        let mut vars = Vec::new();
        variables(&super::Cli::command(), &mut vars);
        assert!(vars.len() >= 10, "{vars:?}");
        for (env, long) in vars {
            assert!(table.contains(&format!("`{env}`")), "README's table lacks {env}");
            let row = table.lines().find(|l| l.contains(&format!("`{env}`"))).unwrap();
            assert!(row.contains(&format!("--{long}")), "README's row of {env} does not name --{long}: {row}");
        }
    }
}

/// Flags of `pixq serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, env = "PIXQ_BIND", default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Port (0: any free port; the URL printed says which).
    #[arg(long, env = "PIXQ_PORT", default_value_t = 8080)]
    pub port: u16,
    /// In-process workers (default: the number of cores; 0: none, e.g. when pixq-worker
    /// processes or the deployed stack do the work).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Require `Authorization: Bearer KEY` on the write endpoints (needed when --bind is
    /// not a loopback address, unless --open-writes).
    #[arg(long, env = "PIXQ_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serve the write endpoints without an API key on an address other machines reach.
    #[arg(long, env = "PIXQ_OPEN_WRITES")]
    pub open_writes: bool,
    /// Also answer requests for this host name (repeat, or separate with commas; `*`: any).
    /// Otherwise only `localhost`, `*.localhost` and addresses are answered (against DNS
    /// rebinding).
    #[arg(long = "allow-host", env = "PIXQ_ALLOW_HOSTS", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
    /// Open connections from one address (an IPv6 /64) at most, loopback not counted; 0:
    /// none. Behind a proxy on another address (a container's gateway), raise it or give 0.
    #[arg(long, env = "PIXQ_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    pub max_connections_per_address: usize,
    /// Signing key of upload and image URLs (default: the home's signing.key, made on
    /// first use; required with --target aws).
    #[arg(long, env = "PIXQ_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Named pipelines, one `name = "pipeline"` per line (default: presets.toml in --home
    /// when it exists).
    #[arg(long, env = "PIXQ_PRESETS")]
    pub presets: Option<PathBuf>,
    /// On-the-fly URLs take presets only.
    #[arg(long, env = "PIXQ_PRESETS_ONLY")]
    pub presets_only: bool,
    /// Most files per batch.
    #[arg(long, env = "PIXQ_MAX_FILES", default_value_t = 500)]
    pub max_files: usize,
    /// Largest upload, MB.
    #[arg(long, env = "PIXQ_MAX_FILE_MB", default_value_t = 50)]
    pub max_file_mb: u64,
}
