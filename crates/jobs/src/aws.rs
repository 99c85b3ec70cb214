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
}

impl StackOutputs {
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
        })
    }

    /// The queue of `lane` and its dead-letter queue.
    pub fn queue(&self, lane: crate::target::Lane) -> (Option<String>, Option<String>) {
        match lane {
            crate::target::Lane::Light => (self.jobs_queue_url.clone(), self.jobs_dlq_url.clone()),
            crate::target::Lane::Heavy => (self.heavy_queue_url.clone(), self.heavy_dlq_url.clone()),
        }
    }
}

/// CloudFormation stack outputs (`OutputKey` -> `OutputValue`), read from the JSON that
/// `sam list stack-outputs --output json` or `aws cloudformation describe-stacks` prints, so
/// nobody copies queue URLs by hand.
fn read_stack_outputs(json: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("stack outputs are not JSON: {e}"))?;
    // describe-stacks: {"Stacks":[{"Outputs":[...]}]}; sam / --query: [...]
    let list = v
        .pointer("/Stacks/0/Outputs")
        .or_else(|| v.get("Outputs"))
        .unwrap_or(&v)
        .as_array()
        .ok_or("stack outputs: expected a list of {OutputKey, OutputValue}")?;
    let mut out = std::collections::HashMap::new();
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
    #[test]
    fn stack_outputs_in_both_shapes() {
        let sam = r#"[{"OutputKey":"BucketName","OutputValue":"b","Description":"x"}]"#;
        assert_eq!(super::read_stack_outputs(sam).unwrap()["BucketName"], "b");
        let cfn =
            r#"{"Stacks":[{"StackName":"pixq","Outputs":[{"OutputKey":"JobsQueueUrl","OutputValue":"http://q"}]}]}"#;
        assert_eq!(super::read_stack_outputs(cfn).unwrap()["JobsQueueUrl"], "http://q");
        assert!(super::read_stack_outputs("[]").is_err());
        let typed = super::StackOutputs::from_json(
            r#"[{"OutputKey":"BucketName","OutputValue":"b"},{"OutputKey":"HeavyQueueUrl","OutputValue":"h"},{"OutputKey":"HeavyDlqUrl","OutputValue":"hd"}]"#,
        )
        .unwrap();
        assert_eq!(typed.bucket.as_deref(), Some("b"));
        assert_eq!(typed.queue(crate::target::Lane::Heavy), (Some("h".into()), Some("hd".into())));
        assert_eq!(typed.queue(crate::target::Lane::Light), (None, None));
    }
}
