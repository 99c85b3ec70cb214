//! Test support for pixq's AWS-protocol tests: the local server (moto, started by
//! scripts/test.sh on 127.0.0.1), and buckets and queues made on it for one test.
//!
//! Nothing here ever talks to a non-loopback endpoint: [`sdk`] refuses one.

use aws_sdk_sqs::types::QueueAttributeName;
use pixq_jobs::store::s3::S3Store;

/// The SDK config for the local AWS-protocol server, or `None` (test skipped) when none is
/// configured. Under CI a missing server is an error, so CI never skips silently.
pub async fn sdk() -> Option<aws_config::SdkConfig> {
    let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the AWS tests: AWS_ENDPOINT_URL is not set");
        eprintln!("skipped: no AWS-protocol server (scripts/test.sh starts moto)");
        return None;
    };
    assert!(
        ep.starts_with("http://127.0.0.1:") || ep.starts_with("http://localhost:"),
        "tests only talk to loopback, not {ep}"
    );
    Some(pixq_jobs::aws::sdk_config().await)
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &pixq_jobs::ids::random_hex(1)[..10])
}

/// A fresh bucket and a store on it.
pub async fn bucket(cfg: &aws_config::SdkConfig) -> (S3Store, String) {
    let s3 = pixq_jobs::aws::s3_client(cfg, true);
    let name = unique("pixq");
    s3.create_bucket().bucket(&name).send().await.expect("create bucket");
    (S3Store::new(s3), name)
}

/// The ARN of a queue.
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue ARN")
}

/// A queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueuePair {
    /// The queue.
    pub url: String,
    /// Its DLQ.
    pub dlq_url: String,
}

/// A fresh queue whose RedrivePolicy sends to a fresh DLQ after `max_receives`.
pub async fn queue_with_dlq(cfg: &aws_config::SdkConfig, fifo: bool, max_receives: u32) -> QueuePair {
    let sqs = pixq_jobs::aws::sqs_client(cfg);
    let sfx = if fifo { ".fifo" } else { "" };
    let create = |name: String| {
        let mut req = sqs.create_queue().queue_name(name);
        if fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        req
    };
    let dlq_url = create(format!("{}{sfx}", unique("dlq")))
        .send()
        .await
        .expect("create DLQ")
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let arn = queue_arn(&sqs, &dlq_url).await;
    let policy = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receives}"}}"#);
    let url = create(format!("{}{sfx}", unique("jobs")))
        .attributes(QueueAttributeName::RedrivePolicy, policy)
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .unwrap_or_default()
        .to_string();
    QueuePair { url, dlq_url }
}

/// A binary of the workspace that `cargo test --workspace` built beside this test's own
/// (`target/<profile>/NAME`; tests run from `target/<profile>/deps/`). Panics with what to
/// build when it is missing.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let p = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(p.is_file(), "{} is missing: build it first (cargo build --workspace)", p.display());
    p
}
