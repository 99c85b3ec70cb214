//! Opening the queue and the store a flow runs on: the one place that turns "where"
//! ([`Connect`]: target, lane, home, stack outputs, overrides) into a [`Backend`]. The
//! client, the worker, the Lambda functions and the web front end all call [`open`]; the
//! flags that fill a [`Connect`] are defined once too ([`ConnectArgs`], feature `cli`).
//! [`Target`] (the embedded default or AWS) and [`Lane`] (the Lambda's queue or the EC2
//! workers' heavy queue) are parsed here alike for every binary, from the same flags
//! (`--target`, `--lane`) and variables (`PIXQ_TARGET`, `PIXQ_LANE`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::queue::QueueConfig;
use crate::queue::{Queue, QueueError};
use crate::store::ObjectStore;

/// The backends a flow runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// SQLite queue and filesystem store under a home folder.
    #[default]
    Local,
    /// SQS and S3, named by stack outputs or flags; credentials from the standard chain.
    Aws,
}

/// Which of the stack's two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// The jobs queue the Lambda function consumes (bursty, light jobs).
    #[default]
    Light,
    /// The heavy queue the EC2 workers consume.
    Heavy,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Target::Local),
            "aws" => Ok(Target::Aws),
            other => Err(format!("unknown target '{other}' (expected local or aws)")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Local => "local",
            Target::Aws => "aws",
        })
    }
}

impl FromStr for Lane {
    type Err = String;
    fn from_str(s: &str) -> Result<Lane, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "light" | "lambda" => Ok(Lane::Light),
            "heavy" | "ec2" => Ok(Lane::Heavy),
            other => Err(format!("unknown lane '{other}' (expected light or heavy)")),
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Light => "light",
            Lane::Heavy => "heavy",
        })
    }
}

/// Where a flow runs, fully decided (flags and environment already read).
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// The embedded default or AWS.
    pub target: Target,
    /// Which of the stack's queues (AWS).
    pub lane: Lane,
    /// Home of the embedded default (queue file and store folder).
    pub home: PathBuf,
    /// The embedded queue's settings (name, receives before dead-lettering).
    pub local_queue: QueueConfig,
    /// The stack's outputs (AWS), read with [`StackOutputs::read`].
    pub stack: StackOutputs,
    /// Bucket; overrides the stack's `BucketName`.
    pub bucket: Option<String>,
    /// Queue URL; overrides the stack's queue of `lane`.
    pub queue_url: Option<String>,
    /// Dead-letter queue URL; overrides the stack's (and the queue's redrive policy).
    pub dlq_url: Option<String>,
}

/// The flags (and environment variables) that fill a [`Connect`]: defined here once and
/// flattened into every binary's arguments, so `pixq`, `pixq-worker` and `pixq serve` name
/// the same choice the same way. Only the lane's default differs: `light` for the client,
/// `heavy` for the worker.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Where the flow runs: `local` (the embedded default under --home) or `aws` (S3 + SQS,
    /// named by --stack-outputs or --bucket/--queue-url; credentials from the standard chain).
    #[arg(long, global = true, env = "PIXQ_TARGET", default_value = "local")]
    pub target: Target,
    /// Home of the embedded default: queue file and store folder.
    #[arg(long, global = true, env = "PIXQ_HOME", default_value = ".pixq")]
    pub home: PathBuf,
    /// JSON from `sam list stack-outputs --output json` (or `aws cloudformation
    /// describe-stacks`): bucket and queue URLs of a deployed stack.
    #[arg(long, global = true, env = "PIXQ_STACK_OUTPUTS")]
    pub stack_outputs: Option<PathBuf>,
    /// S3 bucket (overrides the stack's BucketName): inputs, outputs, records.
    #[arg(long, global = true, env = "PIXQ_BUCKET", alias = "output-bucket")]
    pub bucket: Option<String>,
    /// SQS queue URL (overrides the stack's queue of --lane).
    #[arg(long, global = true, env = "PIXQ_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Dead-letter queue URL (default: the stack's, or the queue's redrive policy).
    #[arg(long, global = true, env = "PIXQ_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// Which of the stack's queues: `light` (the Lambda's, JobsQueueUrl; pixq's default) or
    /// `heavy` (the EC2 workers', HeavyQueueUrl; pixq-worker's default).
    #[arg(long, global = true, env = "PIXQ_LANE")]
    pub lane: Option<Lane>,
}

#[cfg(feature = "cli")]
impl ConnectArgs {
    /// The decided settings: the stack outputs file read, `default_lane` where no lane was
    /// given, `local_queue` for the embedded queue.
    pub fn connect(&self, default_lane: Lane, local_queue: QueueConfig) -> Result<Connect, BackendError> {
        Ok(Connect {
            target: self.target,
            lane: self.lane.unwrap_or(default_lane),
            home: self.home.clone(),
            local_queue,
            stack: StackOutputs::read(self.stack_outputs.as_deref())?,
            bucket: self.bucket.clone(),
            queue_url: self.queue_url.clone(),
            dlq_url: self.dlq_url.clone(),
        })
    }
}

/// An opened queue and store, with what messages and defaults need to know about them.
#[derive(Clone)]
pub struct Backend {
    /// The queue jobs go to (and workers receive from).
    pub queue: Arc<dyn Queue>,
    /// Inputs, outputs, records and manifests.
    pub store: Arc<dyn ObjectStore>,
    /// Which target this is.
    pub target: Target,
    /// The bucket, when one is known (always on the embedded default).
    pub bucket: Option<String>,
    /// Queue URL (AWS) or the home folder (local), for messages.
    pub location: String,
    /// The command that runs a separate worker on this backend, for messages.
    pub worker_hint: String,
    /// The stack outputs it was opened from (empty when none were given).
    pub stack: StackOutputs,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("target", &self.target).field("location", &self.location).finish()
    }
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No queue named for an AWS target.
    #[error(
        "--target aws needs a queue: pass --stack-outputs FILE (from `sam list stack-outputs --stack-name pixq --output json`) or --queue-url"
    )]
    NoQueue,
    /// The stack outputs file is missing or unreadable.
    #[error("stack outputs {path}: {reason}")]
    StackOutputs {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue could not be opened.
    #[error("opening the queue {location}: {source}")]
    Queue {
        /// Queue file or URL.
        location: String,
        /// The queue's error.
        source: QueueError,
    },
    /// This binary was built without the AWS backends.
    #[error(
        "--target aws: this binary was built without AWS support (cargo feature `aws`); build it with its default features, e.g. `cargo run --release -p pixq-cli -- ...`"
    )]
    NoAws,
    /// This binary was built without the embedded default (the Lambda functions).
    #[error("--target local: this binary was built without the embedded queue and store (cargo feature `local`)")]
    NoLocal,
}

/// Opens the queue and store `c` names.
pub async fn open(c: &Connect) -> Result<Backend, BackendError> {
    match c.target {
        Target::Local => open_local(c),
        Target::Aws => open_aws(c).await,
    }
}

#[cfg(feature = "local")]
fn open_local(c: &Connect) -> Result<Backend, BackendError> {
    use crate::local::{LOCAL_BUCKET, LocalHome};
    let home = LocalHome::new(&c.home);
    // On a fresh home the queue file and the store's pack are made on threads of their own,
    // side by side, while the command goes on: listing its inputs, linking and reading the
    // first ones. Their fsyncs are no longer in the path of that work; the first send waits
    // for the queue, the first write for the pack. A pack that cannot be made fails the
    // first write that needs it, with its own error.
    let store = home.store();
    let creating = {
        let store = store.clone();
        std::thread::Builder::new().name("pixq-open".into()).spawn(move || {
            let r = store.create_pack();
            if let Err(e) = r {
                tracing::debug!(error = %e, "the object pack was not created ahead of its first write");
            }
        })
    };
    if let Err(e) = creating {
        tracing::debug!(error = %e, "no thread to create the object pack ahead of its first write");
    }
    let queue = home
        .queue_in_background(c.local_queue.clone())
        .map_err(|source| BackendError::Queue { location: home.queue_path().display().to_string(), source })?;
    Ok(Backend {
        queue: Arc::new(queue),
        store: Arc::new(store),
        target: Target::Local,
        bucket: Some(LOCAL_BUCKET.into()),
        location: home.root().display().to_string(),
        worker_hint: format!("pixq-worker --home {}", home.root().display()),
        stack: c.stack.clone(),
    })
}

#[cfg(not(feature = "local"))]
fn open_local(_: &Connect) -> Result<Backend, BackendError> {
    Err(BackendError::NoLocal)
}

#[cfg(feature = "aws")]
async fn open_aws(c: &Connect) -> Result<Backend, BackendError> {
    let (stack_queue, stack_dlq) = c.stack.queue(c.lane);
    let url = c.queue_url.clone().or(stack_queue).ok_or(BackendError::NoQueue)?;
    let dlq = c.dlq_url.clone().or(stack_dlq);
    let sdk = crate::aws::sdk_config().await;
    let queue = crate::queue::sqs::SqsQueue::open(crate::aws::sqs_client(&sdk), &url, dlq)
        .await
        .map_err(|source| BackendError::Queue { location: url.clone(), source })?;
    let bucket = c.bucket.clone().or(c.stack.bucket.clone());
    Ok(Backend {
        queue: Arc::new(queue),
        store: Arc::new(crate::aws::s3_store(&sdk)),
        target: Target::Aws,
        location: match &bucket {
            Some(b) => format!("s3://{b} and {url}"),
            None => url.clone(),
        },
        worker_hint: format!("pixq-worker --target aws --queue-url {url}"),
        bucket,
        stack: c.stack.clone(),
    })
}

#[cfg(not(feature = "aws"))]
async fn open_aws(_: &Connect) -> Result<Backend, BackendError> {
    Err(BackendError::NoAws)
}

/// The outputs of the SAM stack that pixq reads, by the names template.yaml gives them: the
/// one place those names are spelled in Rust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutputs {
    /// `BucketName`: inputs, outputs, results, manifests, worker releases.
    pub bucket: Option<String>,
    /// `JobsQueueUrl` / `JobsDlqUrl`: the Lambda's queue and its dead-letter queue.
    pub jobs_queue_url: Option<String>,
    /// See `jobs_queue_url`.
    pub jobs_dlq_url: Option<String>,
    /// `HeavyQueueUrl` / `HeavyDlqUrl`: the EC2 workers' queue and its dead-letter queue.
    pub heavy_queue_url: Option<String>,
    /// See `heavy_queue_url`.
    pub heavy_dlq_url: Option<String>,
    /// `WorkerInstanceProfileName`: the role EC2 workers run with.
    pub worker_instance_profile: Option<String>,
    /// `Region`: where the stack lives.
    pub region: Option<String>,
    /// `WorkerGroupName`: the Auto Scaling group of the heavy queue's workers.
    pub worker_group: Option<String>,
    /// `ProcessorMemorySize` (MB) and `ProcessorTimeout` (s): what a job on the Lambda's
    /// queue may use; routing sends the rest to the heavy queue.
    pub processor_memory_mb: Option<u64>,
    /// See `processor_memory_mb`.
    pub processor_timeout_secs: Option<u64>,
}

impl StackOutputs {
    /// Reads a file of [`StackOutputs::from_json`]; `None` gives empty outputs.
    pub fn read(path: Option<&Path>) -> Result<StackOutputs, BackendError> {
        let Some(path) = path else { return Ok(StackOutputs::default()) };
        let bad = |reason: String| BackendError::StackOutputs { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        StackOutputs::from_json(&text).map_err(bad)
    }

    /// Reads the JSON of `sam list stack-outputs --output json` or `aws cloudformation
    /// describe-stacks`.
    pub fn from_json(json: &str) -> Result<StackOutputs, String> {
        let mut m = read_stack_outputs(json)?;
        Ok(StackOutputs {
            bucket: m.remove("BucketName"),
            jobs_queue_url: m.remove("JobsQueueUrl"),
            jobs_dlq_url: m.remove("JobsDlqUrl"),
            heavy_queue_url: m.remove("HeavyQueueUrl"),
            heavy_dlq_url: m.remove("HeavyDlqUrl"),
            worker_instance_profile: m.remove("WorkerInstanceProfileName"),
            region: m.remove("Region"),
            worker_group: m.remove("WorkerGroupName"),
            processor_memory_mb: number(&mut m, "ProcessorMemorySize")?,
            processor_timeout_secs: number(&mut m, "ProcessorTimeout")?,
        })
    }

    /// The queue of `lane` and its dead-letter queue.
    pub fn queue(&self, lane: Lane) -> (Option<String>, Option<String>) {
        match lane {
            Lane::Light => (self.jobs_queue_url.clone(), self.jobs_dlq_url.clone()),
            Lane::Heavy => (self.heavy_queue_url.clone(), self.heavy_dlq_url.clone()),
        }
    }
}

/// A numeric output, when present.
fn number(m: &mut HashMap<String, String>, key: &str) -> Result<Option<u64>, String> {
    m.remove(key)
        .map(|v| v.trim().parse::<u64>().map_err(|_| format!("stack output {key} is not a whole number: {v:?}")))
        .transpose()
}

/// CloudFormation stack outputs (`OutputKey` -> `OutputValue`), read from the JSON that
/// `sam list stack-outputs --output json` or `aws cloudformation describe-stacks` prints, so
/// nobody copies queue URLs by hand.
fn read_stack_outputs(json: &str) -> Result<HashMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("stack outputs are not JSON: {e}"))?;
    // describe-stacks: {"Stacks":[{"Outputs":[...]}]}; sam / --query: [...]
    let list = v
        .pointer("/Stacks/0/Outputs")
        .or_else(|| v.get("Outputs"))
        .unwrap_or(&v)
        .as_array()
        .ok_or("stack outputs: expected a list of {OutputKey, OutputValue}")?;
    let mut out = HashMap::new();
    for o in list {
        if let (Some(k), Some(val)) =
            (o.get("OutputKey").and_then(|k| k.as_str()), o.get("OutputValue").and_then(|k| k.as_str()))
        {
            out.insert(k.to_string(), val.to_string());
        }
    }
    if out.is_empty() {
        return Err("stack outputs: no OutputKey/OutputValue pairs found".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [Target::Local, Target::Aws] {
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        for l in [Lane::Light, Lane::Heavy] {
            assert_eq!(l.to_string().parse::<Lane>().unwrap(), l);
        }
        assert_eq!("EC2".parse::<Lane>().unwrap(), Lane::Heavy);
        assert!("cloud".parse::<Target>().unwrap_err().contains("local or aws"));
    }

    #[test]
    fn stack_outputs_in_both_shapes() {
        let sam = r#"[{"OutputKey":"BucketName","OutputValue":"b","Description":"x"}]"#;
        assert_eq!(read_stack_outputs(sam).unwrap()["BucketName"], "b");
        let cfn =
            r#"{"Stacks":[{"StackName":"pixq","Outputs":[{"OutputKey":"JobsQueueUrl","OutputValue":"http://q"}]}]}"#;
        assert_eq!(read_stack_outputs(cfn).unwrap()["JobsQueueUrl"], "http://q");
        assert!(read_stack_outputs("[]").is_err());
        let typed = StackOutputs::from_json(
            r#"[{"OutputKey":"BucketName","OutputValue":"b"},{"OutputKey":"HeavyQueueUrl","OutputValue":"h"},{"OutputKey":"HeavyDlqUrl","OutputValue":"hd"}]"#,
        )
        .unwrap();
        assert_eq!(typed.bucket.as_deref(), Some("b"));
        assert_eq!(typed.queue(Lane::Heavy), (Some("h".into()), Some("hd".into())));
        assert_eq!(typed.queue(Lane::Light), (None, None));
        assert_eq!((typed.processor_memory_mb, typed.processor_timeout_secs), (None, None));
        let limits = StackOutputs::from_json(
            r#"[{"OutputKey":"ProcessorMemorySize","OutputValue":"2048"},{"OutputKey":"ProcessorTimeout","OutputValue":"60"},{"OutputKey":"WorkerGroupName","OutputValue":"g"}]"#,
        )
        .unwrap();
        assert_eq!((limits.processor_memory_mb, limits.processor_timeout_secs), (Some(2048), Some(60)));
        assert_eq!(limits.worker_group.as_deref(), Some("g"));
        let e = StackOutputs::from_json(r#"[{"OutputKey":"ProcessorTimeout","OutputValue":"1 min"}]"#).unwrap_err();
        assert!(e.contains("ProcessorTimeout is not a whole number"), "{e}");
    }

    #[test]
    fn stack_output_files_name_the_file() {
        assert_eq!(StackOutputs::read(None).unwrap(), StackOutputs::default());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let e = StackOutputs::read(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.json"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let e = StackOutputs::read(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("not JSON"), "{e}");
    }

    #[tokio::test]
    async fn opens_the_embedded_default_and_refuses_aws_without_a_queue() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connect { home: dir.path().join("home"), ..Connect::default() };
        let b = open(&c).await.unwrap();
        assert_eq!(b.bucket.as_deref(), Some(crate::local::LOCAL_BUCKET));
        assert!(dir.path().join("home").join("queue.db").exists() || b.location.ends_with("home"));
        let aws = Connect { target: Target::Aws, ..Connect::default() };
        let e = open(&aws).await.unwrap_err();
        assert!(matches!(e, BackendError::NoQueue | BackendError::NoAws), "{e}");
    }

    /// A fresh home gets its queue file and the store's pack, made in the background, whole:
    /// both work at once (a message sent, an object written and read back), and once the
    /// threads that make them are done no temporary file is left.
    #[cfg(feature = "local")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fresh_home_gets_its_queue_and_pack_together() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let b = open(&Connect { home: home.clone(), ..Connect::default() }).await.unwrap();
        b.queue.send("{}", &Default::default()).await.unwrap();
        assert_eq!(b.queue.counts().await.unwrap().visible, 1);
        b.store.put("pixq", "k", b"v".to_vec(), "text/plain").await.unwrap();
        assert_eq!(b.store.get("pixq", "k").await.unwrap(), b"v");
        let names = |d: &std::path::Path| -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        let all = || names(&home).into_iter().chain(names(&home.join("store"))).collect::<Vec<_>>();
        let t = std::time::Instant::now();
        while all().iter().any(|n| n.contains(".new-")) {
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "temporary files stayed: {:?}", all());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(names(&home).contains(&"queue.db".to_string()), "{:?}", names(&home));
        assert!(names(&home.join("store")).contains(&crate::store::pack::PACK_FILE.to_string()));
        // A second opener of the same home uses the same files.
        let again = open(&Connect { home, ..Connect::default() }).await.unwrap();
        assert_eq!(again.queue.counts().await.unwrap().visible, 1);
        assert_eq!(again.store.get("pixq", "k").await.unwrap(), b"v");
    }
}
