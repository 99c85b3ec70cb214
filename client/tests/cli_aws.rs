//! `pixq --target aws` end to end against moto's server on 127.0.0.1 through the real SDK:
//! upload, enqueue on SQS, in-process workers, follow results in S3, download; dead letters.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A bucket and a queue with a DLQ, described the way `sam list stack-outputs` does.
async fn stack(cfg: &aws_config::SdkConfig, dir: &Path) -> std::path::PathBuf {
    let (_, bucket) = pixq_testkit::bucket(cfg).await;
    let pair = pixq_testkit::queue_with_dlq(cfg, false, 3).await;
    let (q, dlq) = (pair.url, pair.dlq_url);
    let outputs = serde_json::json!([
        {"OutputKey": "BucketName", "OutputValue": bucket},
        {"OutputKey": "JobsQueueUrl", "OutputValue": q},
        {"OutputKey": "JobsDlqUrl", "OutputValue": dlq},
    ]);
    let path = dir.join("stack.json");
    std::fs::write(&path, outputs.to_string()).unwrap();
    path
}

fn pixq(stack: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixq"))
        .args(["--target", "aws", "--stack-outputs", stack.to_str().unwrap()])
        .args(args)
        .output()
        .expect("run pixq")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_on_s3_and_sqs_with_a_failure_in_the_dlq() {
    let Some(cfg) = pixq_testkit::sdk().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(&cfg, dir.path()).await;
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    for f in ["coffee.jpg", "rocket.jpg", "astronaut.png"] {
        std::fs::copy(samples.join(f), input.join(f)).unwrap();
    }
    std::fs::write(input.join("fake.jpg"), "text, not a photo").unwrap();
    let out = dir.path().join("out");
    let o = pixq(
        &stack,
        &[
            "process",
            input.to_str().unwrap(),
            "--ops",
            "thumbnail:100,format:png",
            "--out",
            out.to_str().unwrap(),
            "--workers",
            "2",
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("3 ok") && t.contains("1 failed") && t.contains("fake.jpg: not a supported image"), "{t}");
    for f in ["coffee.png", "rocket.png", "astronaut.png"] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        let probe = pixq_jobs::kernel::codec::probe(&bytes, &Default::default()).unwrap();
        assert_eq!(probe.width.max(probe.height), 100, "{f}");
    }
    let batch = t.lines().find_map(|l| l.strip_prefix("batch ")).unwrap().to_string();
    let o = pixq(&stack, &["status", &batch]);
    assert!(text(&o).contains("4 jobs, 3 ok") && text(&o).contains("1 failed, 0 pending"), "{}", text(&o));
    let o = pixq(&stack, &["dlq", "list"]);
    assert!(text(&o).contains("fake.jpg") && text(&o).contains("not a supported image"), "{}", text(&o));
    let o = pixq(&stack, &["dlq", "redrive"]);
    assert!(text(&o).contains("moved 1 messages"), "{}", text(&o));
    // Same inputs again (into the same folder, so replacing is asked for): nothing is
    // recomputed.
    let o = pixq(
        &stack,
        &[
            "process",
            input.to_str().unwrap(),
            "--ops",
            "thumbnail:100,format:png",
            "--out",
            out.to_str().unwrap(),
            "--workers",
            "2",
            "--overwrite",
        ],
    );
    assert!(text(&o).contains("3 ok (3 reused"), "{}", text(&o));
}

#[test]
fn aws_target_without_a_stack_says_what_is_missing() {
    let o = Command::new(env!("CARGO_BIN_EXE_pixq"))
        .args(["--target", "aws", "status", "b-x"])
        .env_remove("PIXQ_STACK_OUTPUTS")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--stack-outputs"), "{}", text(&o));
}

/// `--route auto`: a folder with one 60 MP photo and small images, a full-size pipeline and
/// a 512 MB function: the photo goes to the heavy queue (its plan is over the function's
/// budget), the rest to the Lambda's. A worker on the heavy queue does the photo, and
/// `status` says where each job ran. `--route ec2` sends everything to the heavy queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_routing_sends_what_the_function_cannot_take_to_the_heavy_queue() {
    use pixq_jobs::queue::Queue;
    let Some(cfg) = pixq_testkit::sdk().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, bucket) = pixq_testkit::bucket(&cfg).await;
    let light = pixq_testkit::queue_with_dlq(&cfg, false, 3).await;
    let heavy = pixq_testkit::queue_with_dlq(&cfg, false, 3).await;
    let stack = dir.path().join("stack.json");
    let outputs = serde_json::json!([
        {"OutputKey": "BucketName", "OutputValue": bucket},
        {"OutputKey": "JobsQueueUrl", "OutputValue": light.url},
        {"OutputKey": "JobsDlqUrl", "OutputValue": light.dlq_url},
        {"OutputKey": "HeavyQueueUrl", "OutputValue": heavy.url},
        {"OutputKey": "HeavyDlqUrl", "OutputValue": heavy.dlq_url},
        {"OutputKey": "ProcessorMemorySize", "OutputValue": "512"},
        {"OutputKey": "ProcessorTimeout", "OutputValue": "60"},
    ]);
    std::fs::write(&stack, outputs.to_string()).unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    for f in ["coffee.jpg", "rocket.jpg", "astronaut.png"] {
        std::fs::copy(samples.join(f), input.join(f)).unwrap();
    }
    use pixq_jobs::kernel::{Channels, Format, OutputSpec, Raster};
    let big = Raster::from_fn(8000, 7500, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, 9]));
    let big = pixq_jobs::kernel::encode(&big, Format::Jpeg, &OutputSpec { quality: Some(70), ..Default::default() });
    std::fs::write(input.join("big-60mp.jpg"), big.unwrap()).unwrap();

    let o = pixq(&stack, &["submit", input.to_str().unwrap(), "--ops", "rotate:90"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let batch = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(t.contains("routed: 3 jobs to the Lambda function, 1 to the EC2 workers' heavy queue"), "{t}");
    assert!(t.contains("big-60mp.jpg: estimated peak") && t.contains("over the function's 416 MB budget"), "{t}");
    assert!(t.contains("the worker group's size is unknown (the stack outputs name no WorkerGroupName)"), "{t}");
    let sqs = pixq_jobs::aws::sqs_client(&cfg);
    let lq = pixq_jobs::queue::sqs::SqsQueue::open(sqs.clone(), &light.url, None).await.unwrap();
    let hq = std::sync::Arc::new(pixq_jobs::queue::sqs::SqsQueue::open(sqs, &heavy.url, None).await.unwrap());
    assert_eq!(lq.counts().await.unwrap().visible, 3);
    assert_eq!(hq.counts().await.unwrap().visible, 1);

    // The heavy queue's worker (the shared loop, as pixq-worker runs it on EC2).
    let worker_cfg = pixq_jobs::worker::WorkerConfig {
        concurrency: 1,
        wait: Duration::from_millis(200),
        idle_stop: Some(Duration::from_secs(2)),
        process: pixq_jobs::process::ProcessConfig { runtime: "ec2".into(), ..Default::default() },
        ..Default::default()
    };
    let store = std::sync::Arc::new(store);
    let stats = pixq_jobs::worker::run(hq.clone(), store, worker_cfg, Default::default()).await;
    assert_eq!(stats.snapshot()[1], 1, "{:?}", stats.snapshot());
    let o = pixq(&stack, &["status", &batch]);
    let t = text(&o);
    let line = t.lines().find(|l| l.contains("big-60mp.jpg")).unwrap_or_default();
    assert!(line.trim_start().starts_with("ok") && line.ends_with("(on ec2)"), "{t}");
    assert_eq!(t.lines().filter(|l| l.trim_start().starts_with("pending")).count(), 3, "{t}");

    // Forced routes.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    std::fs::copy(samples.join("coffee.jpg"), small.join("coffee.jpg")).unwrap();
    let o = pixq(&stack, &["submit", small.to_str().unwrap(), "--ops", "rotate:90", "--route", "ec2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(hq.counts().await.unwrap().visible, 1);
    let o = pixq(&stack, &["submit", small.to_str().unwrap(), "--ops", "rotate:90", "--route", "gpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("expected auto, lambda or ec2"), "{}", text(&o));
}
