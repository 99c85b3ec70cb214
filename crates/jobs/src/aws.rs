//! Connecting to AWS (or an AWS-protocol server): one SDK config from the standard chain
//! (environment, profiles, SSO, instance or Lambda role, `AWS_ENDPOINT_URL`), with a rustls
//! (ring) HTTP client and the SDK's standard retry mode.

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// Loads the SDK configuration once; build every client from it.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4))
        .load()
        .await
}

/// An S3 client. `path_style` is needed by local servers (moto, MinIO); real S3 takes
/// virtual-hosted addressing.
pub fn s3_client(cfg: &aws_config::SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(cfg).force_path_style(path_style).build())
}

/// The S3 store every binary uses, on `cfg`: path-style addressing exactly when a custom
/// endpoint is configured (`AWS_ENDPOINT_URL` or a profile's `endpoint_url`: a local
/// AWS-protocol server such as moto or MinIO), virtual-hosted for real S3. The one place
/// this is decided.
pub fn s3_store(cfg: &aws_config::SdkConfig) -> crate::store::s3::S3Store {
    crate::store::s3::S3Store::new(s3_client(cfg, cfg.endpoint_url().is_some()))
}

/// An SQS client.
pub fn sqs_client(cfg: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(cfg)
}

/// Whether an SDK error may pass on retry: timeouts, connection failures, throttling, 5xx.
pub(crate) fn is_transient<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> bool
where
    R: HttpStatus,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            let status = s.raw().status_code();
            status == 429 || status >= 500
        }
        _ => false,
    }
}

/// The HTTP status of a raw response (abstracts the SDK's response type).
pub(crate) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// One-line description of an SDK error, with the service's code and message when there is one.
pub fn describe<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => err.to_string(),
            }
        }
        other => format!("{other}: {}", std::error::Error::source(other).map(|s| s.to_string()).unwrap_or_default()),
    }
}
