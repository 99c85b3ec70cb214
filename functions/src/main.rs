//! `pixq-process`: the SQS-triggered Lambda function. Configuration is read once from the
//! environment (`Config::from_env`); clients are built once per container.

use std::sync::Arc;

use lambda_runtime::{service_fn, tracing::Level};
use pixq_functions::{Config, Processor, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = std::time::Instant::now();
    let config = Config::from_env()?;
    tracing_subscriber::fmt()
        .json()
        .with_max_level(if config.debug { Level::DEBUG } else { Level::INFO })
        .with_current_span(true)
        .without_time()
        .init();
    let opened = pixq_jobs::backend::open(&config.connect()).await?;
    let mut batch = config.batch.clone();
    if let Some(url) = &config.heavy_queue_url {
        let heavy = pixq_jobs::backend::Connect { queue_url: Some(url.clone()), dlq_url: None, ..config.connect() };
        batch.forward_queue = Some(pixq_jobs::backend::open(&heavy).await?.queue);
    }
    let processor = Processor {
        queue: opened.queue,
        store: opened.store,
        config: Arc::new(batch),
        fallback_budget: config.timeout,
    };
    // The function's own part of a cold start (Lambda's REPORT line adds the process start).
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1000.0, "initialised");
    lambda_runtime::run(service_fn(|event| handle(&processor, event))).await
}
