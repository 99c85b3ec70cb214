//! `pixq-api`: the web front end on Lambda (behind an HTTP API): the same axum router as
//! `pixq serve`, under `lambda_http`, with presigned S3 URLs so image bytes never pass
//! through the function. Configuration is read once (`ApiConfig::from_env`).

use std::sync::Arc;

use pixq_functions::ApiConfig;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let started = std::time::Instant::now();
    let config = ApiConfig::from_env()?;
    tracing_subscriber::fmt().json().with_max_level(tracing::Level::INFO).with_current_span(true).without_time().init();
    let opened = pixq_jobs::backend::open(&config.connect()).await?;
    let sdk = pixq_jobs::aws::sdk_config().await;
    let presign = Arc::new(pixq_jobs::aws::s3_store(&sdk));
    let app = pixq_web::App::new(&opened, config.web(presign))?;
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1000.0, "initialised");
    lambda_http::run(pixq_web::router(app)).await
}
