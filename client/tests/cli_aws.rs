//! `pixq --target aws` end to end against moto's server on 127.0.0.1 through the real SDK:
//! upload, enqueue on SQS, in-process workers, follow results in S3, download; dead letters.

use std::path::Path;
use std::process::{Command, Output};

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
