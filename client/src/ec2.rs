//! `pixq ec2`: EC2 workers for the stack's heavy queue.
//!
//! `launch` uploads the pixq-worker binary once to the stack's bucket (content-addressed under
//! `releases/`), then starts instances whose user-data (`ec2-worker/user-data.sh`, with the
//! queue, region and binary location above it) fetches the binary with the instance role,
//! checks its SHA-256 and runs it under systemd. No credentials leave this machine: the
//! instances get theirs from the instance profile through IMDSv2 (required). A worker that
//! finds the queue empty for `--idle-stop-secs` exits, and its instance powers off and
//! terminates itself. `list` and `terminate` find a fleet by its `pixq:fleet` tag.

use anyhow::{Context, anyhow, bail};
use aws_sdk_ec2::types::InstanceStateName;
use aws_sdk_ec2::types::{
    ArchitectureValues, Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceInterruptionBehavior,
    InstanceMarketOptionsRequest, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType,
    MarketType, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use base64::Engine;
use pixq_jobs::aws::describe;
use pixq_jobs::backend::StackOutputs;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqs::SqsQueue;
use pixq_jobs::store::ObjectStore;

use crate::args::{Ec2Action, LaunchArgs};

/// The bootstrap the worker crate owns and ships; the launcher puts the settings above it,
/// the Auto Scaling group's loader sets them before running it.
pub const BOOTSTRAP: &str = pixq_worker::USER_DATA;

/// Tag naming the fleet an instance belongs to.
pub const FLEET_TAG: &str = "pixq:fleet";

/// CPU architecture of a Linux executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// aarch64 (Graviton).
    Arm64,
    /// x86_64.
    X86_64,
}

impl Arch {
    /// Reads the ELF header: a 64-bit little-endian Linux executable for arm64 or x86_64.
    pub fn of_elf(bytes: &[u8]) -> Result<Arch, String> {
        if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
            return Err("not a Linux executable (no ELF header)".into());
        }
        if bytes[4] != 2 || bytes[5] != 1 {
            return Err("not a 64-bit little-endian ELF executable".into());
        }
        match u16::from_le_bytes([bytes[18], bytes[19]]) {
            0xB7 => Ok(Arch::Arm64),
            0x3E => Ok(Arch::X86_64),
            m => Err(format!("ELF machine {m:#x} is neither arm64 nor x86_64")),
        }
    }

    /// `arm64` or `x86_64`, as AWS spells them.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// A compute-optimised default with 4 vCPUs.
    fn default_instance_type(self) -> &'static str {
        match self {
            Arch::Arm64 => "c7g.xlarge",
            Arch::X86_64 => "c7i.xlarge",
        }
    }
}

/// A pixq-worker executable to release: its bytes, architecture and digest.
pub struct WorkerBinary {
    /// Where it was read.
    pub path: std::path::PathBuf,
    /// The executable.
    pub bytes: Vec<u8>,
    /// Its architecture (from the ELF header).
    pub arch: Arch,
    /// SHA-256, hex.
    pub sha256: String,
}

impl WorkerBinary {
    /// Reads a Linux executable; refuses anything else.
    pub fn read(path: &std::path::Path) -> anyhow::Result<WorkerBinary> {
        let bytes = std::fs::read(path).with_context(|| format!("reading the worker binary {}", path.display()))?;
        let arch = Arch::of_elf(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let sha256 = pixq_jobs::keys::sha256_hex(&bytes);
        Ok(WorkerBinary { path: path.to_path_buf(), bytes, arch, sha256 })
    }

    /// Its content-addressed key under `releases/`.
    pub fn key(&self) -> String {
        format!("releases/pixq-worker-{}-{}", self.arch.name(), &self.sha256[..16])
    }

    /// Uploads it unless the bucket already holds it.
    pub async fn upload(&self, store: &dyn ObjectStore, bucket: &str) -> anyhow::Result<()> {
        let key = self.key();
        if store.head(bucket, &key).await?.is_none() {
            eprintln!("uploading {} ({} MB) to s3://{bucket}/{key}", self.path.display(), self.bytes.len() >> 20);
            store.put(bucket, &key, self.bytes.clone(), "application/octet-stream").await?;
        }
        Ok(())
    }
}

/// What the user-data needs to know.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The heavy queue.
    pub queue_url: String,
    /// Region of the queue and bucket.
    pub region: String,
    /// `s3://bucket/releases/...` of the worker binary.
    pub worker_s3: String,
    /// Its SHA-256 (hex).
    pub worker_sha256: String,
    /// Bucket for outputs of S3-notification jobs.
    pub output_bucket: String,
    /// Idle stop in seconds (None: run until terminated).
    pub idle_stop_secs: Option<u64>,
    /// Kernels per worker (None: the instance's cores).
    pub concurrency: Option<usize>,
}

/// Quotes a value for a POSIX shell: single quotes, with embedded ones closed and escaped.
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

impl Bootstrap {
    /// The whole user-data script: settings, then the bootstrap body. Refuses a setting that
    /// holds a control character (a newline above all).
    pub fn user_data(&self) -> anyhow::Result<String> {
        let idle_stop_secs = self.idle_stop_secs.map(|n| n.to_string()).unwrap_or_default();
        let concurrency = self.concurrency.map(|n| n.to_string()).unwrap_or_default();
        let settings = [
            ("PIXQ_QUEUE_URL", self.queue_url.as_str()),
            ("PIXQ_REGION", &self.region),
            ("PIXQ_WORKER_S3", &self.worker_s3),
            ("PIXQ_WORKER_SHA256", &self.worker_sha256),
            ("PIXQ_BUCKET", &self.output_bucket),
            ("PIXQ_IDLE_STOP_SECS", &idle_stop_secs),
            ("PIXQ_CONCURRENCY", &concurrency),
        ];
        let mut s = String::from("#!/bin/bash\n# generated by `pixq ec2 launch`\n");
        for (k, v) in settings {
            // The bootstrap writes each setting as one line of the worker's systemd
            // EnvironmentFile, where a newline would add variables of its own; it refuses
            // such a value too, but only on the instance, after it has been paid for and
            // with the reason in its console log. Said here, before anything starts.
            if let Some(c) = v.chars().find(|c| c.is_control()) {
                bail!(
                    "{k} holds the control character {c:?} (in {v:?}): refusing to launch, a worker's settings \
                     must be single lines of printable text"
                );
            }
            s.push_str(&format!("{k}={}\n", sh_quote(v)));
        }
        s.push_str(BOOTSTRAP);
        Ok(s)
    }
}

/// Runs an `ec2` action on the stack `outputs` describes (the bucket and heavy queue
/// already overridden by flags), `json` for machine-readable output; returns the exit code.
pub async fn run(outputs: &StackOutputs, json: bool, action: &Ec2Action) -> anyhow::Result<i32> {
    let sdk = pixq_jobs::aws::sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    match action {
        Ec2Action::Up(a) => crate::group::up(a, outputs, &sdk, json).await,
        Ec2Action::Down { group } => crate::group::down(group.as_deref(), outputs, &sdk).await,
        Ec2Action::Status { group } => crate::group::status(group.as_deref(), outputs, &sdk, json).await,
        Ec2Action::Launch(a) => launch(a, outputs, &sdk, &ec2).await,
        Ec2Action::Scale { per_worker, max, launch: a } => {
            let Some(queue_url) = outputs.heavy_queue_url.clone() else {
                bail!("pixq ec2 scale needs the stack: pass --stack-outputs FILE (or --queue-url)");
            };
            let queue = SqsQueue::open(pixq_jobs::aws::sqs_client(&sdk), &queue_url, None)
                .await
                .with_context(|| format!("opening the queue {queue_url}"))?;
            let c = queue.counts().await?;
            let live = fleet_instances(&ec2, &a.fleet)
                .await?
                .iter()
                .filter(|i| {
                    matches!(
                        i.state().and_then(|s| s.name()),
                        Some(InstanceStateName::Pending | InstanceStateName::Running)
                    )
                })
                .count() as u64;
            let plan = scale_plan(c.visible + c.in_flight, *per_worker, *max, live);
            println!(
                "queue: {} visible, {} in flight; fleet {}: {live} live; wanted {} -> launching {}",
                c.visible, c.in_flight, a.fleet, plan.wanted, plan.launch
            );
            if plan.launch == 0 {
                return Ok(0);
            }
            let a = LaunchArgs { count: plan.launch as i32, ..a.clone() };
            launch(&a, outputs, &sdk, &ec2).await
        }
        Ec2Action::List { fleet } => {
            let found = fleet_instances(&ec2, fleet).await?;
            if json {
                let v: Vec<serde_json::Value> = found
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "id": i.instance_id(),
                            "state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                            "type": i.instance_type().map(|t| t.as_str()),
                            "lifecycle": i.instance_lifecycle().map(|l| l.as_str()).unwrap_or("on-demand"),
                            "launched": i.launch_time().map(|t| t.to_string()),
                            "private_ip": i.private_ip_address(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(0);
            }
            if found.is_empty() {
                println!("no instances in fleet {fleet}");
            }
            for i in &found {
                println!(
                    "{}  {:<13} {:<11} {:<9} {}  {}",
                    i.instance_id().unwrap_or("?"),
                    i.state().and_then(|s| s.name()).map(|n| n.as_str()).unwrap_or("?"),
                    i.instance_type().map(|t| t.as_str()).unwrap_or("?"),
                    i.instance_lifecycle().map(|l| l.as_str()).unwrap_or("on-demand"),
                    i.launch_time().map(|t| t.to_string()).unwrap_or_default(),
                    i.private_ip_address().unwrap_or("-"),
                );
            }
            Ok(0)
        }
        Ec2Action::Terminate { fleet, ids } => {
            let ids = if ids.is_empty() {
                fleet_instances(&ec2, fleet).await?.iter().filter_map(|i| i.instance_id().map(String::from)).collect()
            } else {
                ids.clone()
            };
            if ids.is_empty() {
                println!("nothing to terminate in fleet {fleet}");
                return Ok(0);
            }
            ec2.terminate_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
                .map_err(|e| anyhow!("TerminateInstances: {}", describe(&e)))?;
            println!(
                "terminating {} instances: {} (each worker gets SIGTERM and releases what it holds)",
                ids.len(),
                ids.join(" ")
            );
            Ok(0)
        }
    }
}

/// What `scale` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePlan {
    /// Workers the backlog needs (capped).
    pub wanted: u64,
    /// Instances to start now.
    pub launch: u64,
}

/// One worker per `per_worker` messages of backlog (rounded up), at most `max`, minus the
/// instances already live.
pub fn scale_plan(backlog: u64, per_worker: u64, max: u64, live: u64) -> ScalePlan {
    let wanted = backlog.div_ceil(per_worker.max(1)).min(max);
    ScalePlan { wanted, launch: wanted.saturating_sub(live) }
}

/// Instances of a fleet that are not terminated.
async fn fleet_instances(ec2: &aws_sdk_ec2::Client, fleet: &str) -> anyhow::Result<Vec<aws_sdk_ec2::types::Instance>> {
    let states = ["pending", "running", "stopping", "stopped", "shutting-down"].map(String::from);
    let mut out = Vec::new();
    let mut pages = ec2
        .describe_instances()
        .filters(Filter::builder().name(format!("tag:{FLEET_TAG}")).values(fleet).build())
        .filters(Filter::builder().name("instance-state-name").set_values(Some(states.to_vec())).build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| anyhow!("DescribeInstances: {}", describe(&e)))?;
        for r in page.reservations() {
            out.extend(r.instances().iter().cloned());
        }
    }
    out.sort_by(|a, b| a.instance_id().cmp(&b.instance_id()));
    Ok(out)
}

/// The newest Amazon Linux 2023 AMI for an architecture.
async fn latest_al2023(ec2: &aws_sdk_ec2::Client, arch: Arch) -> anyhow::Result<String> {
    let images = ec2
        .describe_images()
        .owners("amazon")
        .filters(Filter::builder().name("name").values(format!("al2023-ami-2023.*-kernel-*-{}", arch.name())).build())
        .filters(Filter::builder().name("architecture").values(arch.name()).build())
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(|e| anyhow!("DescribeImages: {}", describe(&e)))?;
    images
        .images()
        .iter()
        .filter(|i| i.architecture() == Some(&ArchitectureValues::from(arch.name())))
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
        .and_then(|i| i.image_id().map(String::from))
        .ok_or_else(|| anyhow!("no Amazon Linux 2023 image for {} found; pass --ami", arch.name()))
}

async fn launch(
    a: &LaunchArgs,
    outputs: &StackOutputs,
    sdk: &aws_config::SdkConfig,
    ec2: &aws_sdk_ec2::Client,
) -> anyhow::Result<i32> {
    let (Some(bucket), Some(queue_url)) = (outputs.bucket.clone(), outputs.heavy_queue_url.clone()) else {
        bail!("pixq ec2 launch needs the stack: pass --stack-outputs FILE (or --bucket and --queue-url)");
    };
    let Some(profile) = a.instance_profile.clone().or(outputs.worker_instance_profile.clone()) else {
        bail!("no instance profile: pass --instance-profile (the stack's output WorkerInstanceProfileName)");
    };
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .or(outputs.region.clone())
        .ok_or_else(|| anyhow!("no AWS region configured (AWS_REGION or a profile)"))?;
    if a.count < 1 {
        bail!("--count must be at least 1");
    }

    // 1. The binary, once per content, where the instance role may read it.
    let worker = WorkerBinary::read(&a.worker_binary)?;
    let (arch, key) = (worker.arch, worker.key());
    let bootstrap = Bootstrap {
        queue_url: queue_url.clone(),
        region: region.clone(),
        worker_s3: format!("s3://{bucket}/{key}"),
        worker_sha256: worker.sha256.clone(),
        output_bucket: bucket.clone(),
        idle_stop_secs: (a.idle_stop_secs > 0).then_some(a.idle_stop_secs),
        concurrency: a.concurrency,
    };
    let user_data = bootstrap.user_data()?;
    let instance_type = a.instance_type.clone().unwrap_or_else(|| arch.default_instance_type().to_string());
    if a.dry_run {
        eprintln!("# {} x {instance_type} ({}), fleet {}, profile {profile}", a.count, arch.name(), a.fleet);
        print!("{user_data}");
        return Ok(0);
    }
    let store = pixq_jobs::aws::s3_store(sdk);
    worker.upload(&store, &bucket).await?;

    // 2. The instances.
    let ami = match &a.ami {
        Some(ami) => ami.clone(),
        None => latest_al2023(ec2, arch).await?,
    };
    let tags = |rt: ResourceType| {
        TagSpecification::builder()
            .resource_type(rt)
            .tags(Tag::builder().key("Name").value(format!("pixq-worker-{}", a.fleet)).build())
            .tags(Tag::builder().key(FLEET_TAG).value(&a.fleet).build())
            .tags(Tag::builder().key("pixq:queue").value(&queue_url).build())
            .build()
    };
    let profile_spec = if profile.starts_with("arn:") {
        IamInstanceProfileSpecification::builder().arn(&profile).build()
    } else {
        IamInstanceProfileSpecification::builder().name(&profile).build()
    };
    let mut req = ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(InstanceType::from(instance_type.as_str()))
        .min_count(a.count)
        .max_count(a.count)
        .user_data(base64::engine::general_purpose::STANDARD.encode(&user_data))
        .iam_instance_profile(profile_spec)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_put_response_hop_limit(1)
                .build(),
        )
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
        .tag_specifications(tags(ResourceType::Instance))
        .tag_specifications(tags(ResourceType::Volume));
    if let Some(subnet) = &a.subnet_id {
        req = req.subnet_id(subnet);
    }
    for sg in &a.security_group_id {
        req = req.security_group_ids(sg);
    }
    if a.spot {
        req = req.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .spot_options(
                    SpotMarketOptions::builder()
                        .spot_instance_type(SpotInstanceType::OneTime)
                        .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                        .build(),
                )
                .build(),
        );
    }
    let out = req.send().await.map_err(|e| anyhow!("RunInstances: {}", describe(&e)))?;
    let ids: Vec<&str> = out.instances().iter().filter_map(|i| i.instance_id()).collect();
    println!(
        "launched {} x {instance_type} ({ami}) in fleet {} on {queue_url}:\n  {}",
        ids.len(),
        a.fleet,
        ids.join("\n  ")
    );
    println!("follow: pixq ec2 list --fleet {}   stop: pixq ec2 terminate --fleet {}", a.fleet, a.fleet);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_architectures() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 0xB7;
        assert_eq!(Arch::of_elf(&h), Ok(Arch::Arm64));
        h[18] = 0x3E;
        assert_eq!(Arch::of_elf(&h), Ok(Arch::X86_64));
        h[18] = 0x28;
        assert!(Arch::of_elf(&h).is_err());
        assert!(Arch::of_elf(b"#!/bin/sh\necho hi\n").unwrap_err().contains("no ELF header"));
        assert!(Arch::of_elf(&std::fs::read(std::env::current_exe().unwrap()).unwrap()).is_ok());
    }

    #[test]
    fn scale_plans() {
        assert_eq!(scale_plan(0, 500, 10, 0), ScalePlan { wanted: 0, launch: 0 });
        assert_eq!(scale_plan(1, 500, 10, 0), ScalePlan { wanted: 1, launch: 1 });
        assert_eq!(scale_plan(1001, 500, 10, 1), ScalePlan { wanted: 3, launch: 2 });
        assert_eq!(scale_plan(100_000, 500, 10, 4), ScalePlan { wanted: 10, launch: 6 });
        assert_eq!(scale_plan(600, 500, 10, 5), ScalePlan { wanted: 2, launch: 0 });
        assert_eq!(scale_plan(5, 0, 10, 0), ScalePlan { wanted: 5, launch: 5 }, "per_worker 0 counts as 1");
    }

    #[test]
    fn user_data_quotes_settings_and_carries_no_credentials() {
        let b = Bootstrap {
            queue_url: "https://sqs.eu-west-1.amazonaws.com/1/q'uote".into(),
            region: "eu-west-1".into(),
            worker_s3: "s3://b/releases/pixq-worker-arm64-0123".into(),
            worker_sha256: "ab".repeat(32),
            output_bucket: "b".into(),
            idle_stop_secs: Some(600),
            concurrency: None,
        };
        let ud = b.user_data().unwrap();
        assert!(ud.starts_with("#!/bin/bash\n"));
        assert!(ud.contains(r"PIXQ_QUEUE_URL='https://sqs.eu-west-1.amazonaws.com/1/q'\''uote'"), "{ud}");
        assert!(ud.contains("PIXQ_IDLE_STOP_SECS='600'\nPIXQ_CONCURRENCY=''\n"), "{ud}");
        assert!(!ud.contains("AWS_ACCESS_KEY_ID") && !ud.contains("AWS_SECRET_ACCESS_KEY"));
        assert!(ud.len() < 16 * 1024, "user-data is limited to 16 KB");
        for bad in ["b\nPIXQ_EVIL=1", "b\r", "b\tc", "b\u{7f}"] {
            let e = Bootstrap { output_bucket: bad.into(), ..b.clone() }.user_data().unwrap_err().to_string();
            assert!(e.contains("PIXQ_BUCKET holds the control character"), "{e}");
        }
    }
}
