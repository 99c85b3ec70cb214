//! `pixq ec2 up|down|status`: the heavy queue's workers as the stack's Auto Scaling group.
//!
//! The group, its launch template and its scaling policies are template.yaml's; AWS scales
//! it on the queue's backlog. This module does what is left to a person: release a worker
//! (the binary and the bootstrap, content-addressed under `releases/`, and the pointer
//! `releases/current-ARCH.env` the template's loader reads at boot), set the group's
//! bounds, and show what the group and the queue are doing.

use anyhow::{Context, anyhow, bail};
use aws_sdk_autoscaling::Client as AutoScaling;
use pixq_jobs::aws::describe;
use pixq_jobs::backend::StackOutputs;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqs::SqsQueue;
use pixq_jobs::store::ObjectStore;

use crate::args::UpArgs;
use crate::ec2::{Arch, BOOTSTRAP, WorkerBinary};

/// The key of the release pointer for an architecture.
pub fn pointer_key(arch: Arch) -> String {
    format!("releases/current-{}.env", arch.name())
}

/// The pointer's text: where the worker binary and the bootstrap are, with their digests.
/// Every value is of the form the loader accepts (`[A-Za-z0-9:/._-]`).
pub fn pointer_text(bucket: &str, worker: &WorkerBinary, bootstrap_key: &str, bootstrap_sha: &str) -> String {
    format!(
        "# written by `pixq ec2 up`\nPIXQ_WORKER_S3=s3://{bucket}/{}\nPIXQ_WORKER_SHA256={}\n\
         PIXQ_BOOTSTRAP_S3=s3://{bucket}/{bootstrap_key}\nPIXQ_BOOTSTRAP_SHA256={bootstrap_sha}\n",
        worker.key(),
        worker.sha256
    )
}

fn group_name(flag: Option<&str>, outputs: &StackOutputs) -> anyhow::Result<String> {
    flag.map(String::from)
        .or(outputs.worker_group.clone())
        .ok_or_else(|| anyhow!("no worker group: pass --stack-outputs FILE (its WorkerGroupName) or --group NAME"))
}

/// Uploads the binary and the bootstrap (each once per content), then points the group's
/// instances of that architecture at them.
async fn release(worker: &WorkerBinary, store: &dyn ObjectStore, bucket: &str) -> anyhow::Result<String> {
    if bucket.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-')) {
        bail!("bucket name {bucket:?} is not a plain S3 bucket name");
    }
    worker.upload(store, bucket).await?;
    let boot_sha = pixq_jobs::keys::sha256_hex(BOOTSTRAP.as_bytes());
    let boot_key = format!("releases/bootstrap-{}.sh", &boot_sha[..16]);
    if store.head(bucket, &boot_key).await?.is_none() {
        store.put(bucket, &boot_key, BOOTSTRAP.as_bytes().to_vec(), "text/x-shellscript").await?;
    }
    let key = pointer_key(worker.arch);
    let text = pointer_text(bucket, worker, &boot_key, &boot_sha);
    store.put(bucket, &key, text.into_bytes(), "text/plain").await?;
    Ok(key)
}

/// `pixq ec2 up`.
pub async fn up(a: &UpArgs, outputs: &StackOutputs, sdk: &aws_config::SdkConfig, json: bool) -> anyhow::Result<i32> {
    let group = group_name(a.group.as_deref(), outputs)?;
    let Some(bucket) = outputs.bucket.clone() else {
        bail!("pixq ec2 up needs the stack's bucket: pass --stack-outputs FILE (or --bucket)");
    };
    for (name, v) in [("--min", a.min), ("--max", a.max), ("--desired", a.desired)] {
        if v.is_some_and(|v| v < 0) {
            bail!("{name} cannot be negative");
        }
    }
    if let (Some(min), Some(max)) = (a.min, a.max)
        && min > max
    {
        bail!("--min {min} is over --max {max}");
    }
    let store = pixq_jobs::aws::s3_store(sdk);
    match &a.worker_binary {
        Some(path) => {
            let worker = WorkerBinary::read(path)?;
            let key = release(&worker, &store, &bucket).await?;
            eprintln!(
                "released {} ({}) for {} instances: s3://{bucket}/{key}",
                worker.key(),
                &worker.sha256[..16],
                worker.arch.name()
            );
        }
        None => {
            let released = store.list(&bucket, "releases/current-").await?;
            if released.is_empty() {
                bail!(
                    "no worker released to s3://{bucket}/releases/ yet: pass --worker-binary (e.g. from \
                     `cargo lambda build --release --arm64 --bin pixq-worker`); instances would find nothing to run"
                );
            }
        }
    }
    let asg = AutoScaling::new(sdk);
    let mut req = asg.update_auto_scaling_group().auto_scaling_group_name(&group);
    if let Some(v) = a.min {
        req = req.min_size(v);
    }
    if let Some(v) = a.max {
        req = req.max_size(v);
    }
    if let Some(v) = a.desired {
        req = req.desired_capacity(v);
    }
    if a.min.is_some() || a.max.is_some() || a.desired.is_some() {
        req.send().await.map_err(|e| anyhow!("UpdateAutoScalingGroup {group}: {}", describe(&e)))?;
    }
    show(&asg, &group, outputs, sdk, json).await
}

/// `pixq ec2 down`: minimum and desired capacity to zero.
pub async fn down(group: Option<&str>, outputs: &StackOutputs, sdk: &aws_config::SdkConfig) -> anyhow::Result<i32> {
    let group = group_name(group, outputs)?;
    let asg = AutoScaling::new(sdk);
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(0)
        .desired_capacity(0)
        .send()
        .await
        .map_err(|e| anyhow!("UpdateAutoScalingGroup {group}: {}", describe(&e)))?;
    println!(
        "group {group}: scaling to zero (each worker gets SIGTERM through the pixq-drain lifecycle hook and \
         releases what it holds; its jobs wait on the queue)"
    );
    Ok(0)
}

/// The group's desired capacity and its in-service instances now: what `pixq process` and
/// `pixq submit` say about the heavy jobs they queued.
pub async fn capacity(group: &str) -> anyhow::Result<(i32, usize)> {
    let sdk = pixq_jobs::aws::sdk_config().await;
    let d = AutoScaling::new(&sdk)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(|e| anyhow!("DescribeAutoScalingGroups {group}: {}", describe(&e)))?;
    let g = d.auto_scaling_groups().first().ok_or_else(|| anyhow!("no Auto Scaling group named {group}"))?;
    let in_service =
        g.instances().iter().filter(|i| i.lifecycle_state().is_some_and(|s| s.as_str() == "InService")).count();
    Ok((g.desired_capacity().unwrap_or(0), in_service))
}

/// `pixq ec2 status`.
pub async fn status(
    group: Option<&str>,
    outputs: &StackOutputs,
    sdk: &aws_config::SdkConfig,
    json: bool,
) -> anyhow::Result<i32> {
    let group = group_name(group, outputs)?;
    show(&AutoScaling::new(sdk), &group, outputs, sdk, json).await
}

/// One instance of the group, as status shows it.
#[derive(Debug)]
struct Member {
    id: String,
    state: String,
    health: String,
    instance_type: String,
    zone: String,
    protected: bool,
}

async fn show(
    asg: &AutoScaling,
    group: &str,
    outputs: &StackOutputs,
    sdk: &aws_config::SdkConfig,
    json: bool,
) -> anyhow::Result<i32> {
    let d = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .map_err(|e| anyhow!("DescribeAutoScalingGroups {group}: {}", describe(&e)))?;
    let Some(g) = d.auto_scaling_groups().first() else {
        bail!("no Auto Scaling group named {group} (is the stack deployed in this region?)");
    };
    let members: Vec<Member> = g
        .instances()
        .iter()
        .map(|i| Member {
            id: i.instance_id().unwrap_or("?").to_string(),
            state: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
            health: i.health_status().unwrap_or("?").to_string(),
            instance_type: i.instance_type().unwrap_or("?").to_string(),
            zone: i.availability_zone().unwrap_or("?").to_string(),
            protected: i.protected_from_scale_in().unwrap_or(false),
        })
        .collect();
    let backlog = match &outputs.heavy_queue_url {
        Some(url) => {
            let q = SqsQueue::open(pixq_jobs::aws::sqs_client(sdk), url, outputs.heavy_dlq_url.clone())
                .await
                .with_context(|| format!("opening the heavy queue {url}"))?;
            Some(q.counts().await?)
        }
        None => None,
    };
    let activities = asg
        .describe_scaling_activities()
        .auto_scaling_group_name(group)
        .max_records(5)
        .send()
        .await
        .map(|a| {
            a.activities()
                .iter()
                .map(|x| {
                    format!(
                        "{} {}: {}",
                        x.start_time().map(|t| t.to_string()).unwrap_or_default(),
                        x.status_code().map(|s| s.as_str()).unwrap_or("?"),
                        x.description().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let (min, max, desired) = (g.min_size().unwrap_or(0), g.max_size().unwrap_or(0), g.desired_capacity().unwrap_or(0));
    if json {
        let v = serde_json::json!({
            "group": group,
            "min": min, "max": max, "desired": desired,
            "instances": members.iter().map(|m| serde_json::json!({
                "id": m.id, "state": m.state, "health": m.health, "type": m.instance_type,
                "zone": m.zone, "protected": m.protected,
            })).collect::<Vec<_>>(),
            "queue": backlog.map(|c| serde_json::json!({
                "visible": c.visible, "in_flight": c.in_flight, "delayed": c.delayed, "dead": c.dead,
            })),
            "activities": activities,
        });
        println!("{v}");
        return Ok(0);
    }
    println!("group {group}: desired {desired} (min {min}, max {max}), {} instances", members.len());
    for m in &members {
        let protected = if m.protected { "  scale-in protected" } else { "" };
        println!("  {}  {:<20} {:<10} {:<12} {}{protected}", m.id, m.state, m.health, m.instance_type, m.zone);
    }
    match backlog {
        Some(c) => {
            println!(
                "heavy queue: {} waiting, {} running, {} delayed, {} dead",
                c.visible, c.in_flight, c.delayed, c.dead
            );
            if c.visible > 0 && members.is_empty() {
                println!(
                    "  jobs wait and no worker runs: the group scales out from zero within about 2 minutes of the \
                     alarm (plus about 1 minute to boot), or now with `pixq ec2 up --desired N`"
                );
            }
        }
        None => println!("heavy queue: unknown (pass --stack-outputs or --queue-url)"),
    }
    if !activities.is_empty() {
        println!("recent scaling activity:");
        for a in &activities {
            println!("  {a}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pointer_holds_only_what_the_loader_accepts() {
        let worker = WorkerBinary { path: "w".into(), bytes: vec![], arch: Arch::Arm64, sha256: "ab".repeat(32) };
        let text = pointer_text("my-bucket.1", &worker, "releases/bootstrap-0123.sh", &"cd".repeat(32));
        let allowed = |c: char| c.is_ascii_alphanumeric() || ":/._-".contains(c);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (k, v) = line.split_once('=').unwrap();
            assert!(k.starts_with("PIXQ_") && v.chars().all(allowed), "{line}");
        }
        assert!(
            text.contains("PIXQ_WORKER_S3=s3://my-bucket.1/releases/pixq-worker-arm64-abababababababab\n"),
            "{text}"
        );
        assert_eq!(pointer_key(Arch::X86_64), "releases/current-x86_64.env");
    }
}
