//! `pixq-process`: the SQS-triggered Lambda function. Configuration comes from the
//! environment the template sets, read once here; clients are built once per container.

use std::sync::Arc;

use lambda_runtime::{service_fn, tracing::Level};
use pixq_functions::{Processor, handle};
use pixq_jobs::events::S3EventDefaults;
use pixq_jobs::kernel::{Limits, Pipeline};
use pixq_jobs::process::ProcessConfig;
use pixq_jobs::queue::sqs::SqsQueue;
use pixq_jobs::records::BatchConfig;
use pixq_jobs::schema::OutputLocation;
use pixq_jobs::store::s3::S3Store;

fn env(name: &str) -> Result<String, lambda_runtime::Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_max_level(if env_or("PIXQ_DEBUG", "0") == "1" { Level::DEBUG } else { Level::INFO })
        .with_current_span(true)
        .without_time()
        .init();
    let queue_url = env("PIXQ_QUEUE_URL")?;
    let dlq_url = std::env::var("PIXQ_DLQ_URL").ok().filter(|s| !s.is_empty());
    let output =
        OutputLocation { bucket: env("PIXQ_OUTPUT_BUCKET")?, prefix: env_or("PIXQ_OUTPUT_PREFIX", "outputs/") };
    // The stack's bucket, plus any the template lists: a queued message cannot name others.
    let mut allowed_buckets = vec![output.bucket.clone()];
    allowed_buckets.extend(env_or("PIXQ_ALLOWED_BUCKETS", "").split(',').filter(|b| !b.is_empty()).map(String::from));
    let pipeline = Pipeline::parse(&env_or("PIXQ_DEFAULT_PIPELINE", "thumbnail:1024"))?;
    let mut limits = Limits::default();
    if let Ok(mp) = std::env::var("PIXQ_MAX_MEGAPIXELS") {
        limits = limits.max_pixels((mp.parse::<f64>()? * 1e6) as u64);
    }
    // The function's memory size (set by Lambda) sizes the kernels' budget; the function's
    // timeout (set by the template) less the batch margin is each job's time limit.
    let memory_mb = match std::env::var("PIXQ_MEMORY_MB") {
        Ok(v) => v.parse()?,
        Err(_) => pixq_jobs::process::lambda_memory_mb(env_or("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024").parse()?),
    };
    // The template passes the timeout; `cargo lambda watch` sets AWS_LAMBDA_FUNCTION_TIMEOUT.
    let timeout_secs: u64 = env_or("PIXQ_FUNCTION_TIMEOUT", &env_or("AWS_LAMBDA_FUNCTION_TIMEOUT", "60")).parse()?;
    let defaults = BatchConfig::default();
    let config = BatchConfig {
        concurrency: env_or("PIXQ_CONCURRENCY", "2").parse()?,
        memory_mb,
        process: ProcessConfig {
            limits,
            worker_id: format!("lambda-{}", env_or("AWS_LAMBDA_LOG_STREAM_NAME", "local")),
            runtime: "lambda".into(),
            emf: true,
            job_timeout: std::time::Duration::from_secs(timeout_secs).saturating_sub(defaults.margin),
            allowed_buckets,
        },
        s3_events: Some(S3EventDefaults { pipeline, output }),
        ..defaults
    };
    let sdk = pixq_jobs::aws::sdk_config().await;
    let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let processor = Processor {
        queue: Arc::new(SqsQueue::open(pixq_jobs::aws::sqs_client(&sdk), &queue_url, dlq_url).await?),
        store: Arc::new(S3Store::new(pixq_jobs::aws::s3_client(&sdk, path_style))),
        config: Arc::new(config),
        fallback_budget: std::time::Duration::from_secs(timeout_secs),
    };
    lambda_runtime::run(service_fn(|event| handle(&processor, event))).await
}
