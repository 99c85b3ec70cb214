//! The function's configuration, read once from the environment the template sets (and the
//! variables Lambda itself sets), typed, with errors that name the variable.

use std::time::Duration;

use pixq_jobs::events::S3EventDefaults;
use pixq_jobs::kernel::{Limits, Recipe};
use pixq_jobs::process::ProcessConfig;
use pixq_jobs::records::BatchConfig;
use pixq_jobs::route::FunctionFit;
use pixq_jobs::schema::OutputLocation;
use pixq_jobs::settle::RetryPolicy;

/// Why the environment does not make a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is absent or empty.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable's value is not what it should be.
    #[error("environment variable {name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything `pixq-process` needs besides its AWS clients.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQS queue the records come from (`PIXQ_QUEUE_URL`).
    pub queue_url: String,
    /// Its dead-letter queue (`PIXQ_DLQ_URL`), for dead-lettering at once.
    pub dlq_url: Option<String>,
    /// The heavy queue (`PIXQ_HEAVY_QUEUE_URL`): jobs that would not fit the function
    /// (`batch.process.forward`) go there, before they are decoded.
    pub heavy_queue_url: Option<String>,
    /// Batch handling: lanes, memory budget, retry policy, process settings, S3 events.
    pub batch: BatchConfig,
    /// The function's timeout: the budget when the runtime sends no deadline.
    pub timeout: Duration,
    /// Debug logs (`PIXQ_DEBUG=1`).
    pub debug: bool,
}

/// Parses variable `name`'s value, or says which variable is wrong and why.
pub(crate) fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, value, reason: e.to_string() })
}

impl Config {
    /// Where the function's queue and store are, for [`pixq_jobs::backend::open`].
    pub fn connect(&self) -> pixq_jobs::backend::Connect {
        pixq_jobs::backend::Connect {
            target: pixq_jobs::backend::Target::Aws,
            queue_url: Some(self.queue_url.clone()),
            dlq_url: self.dlq_url.clone(),
            bucket: self.batch.s3_events.as_ref().map(|d| d.output.bucket.clone()),
            ..Default::default()
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let need = |k: &'static str| var(k).ok_or(ConfigError::Missing(k));
        let or = |k: &str, d: &str| var(k).unwrap_or_else(|| d.to_string());

        let output = OutputLocation { bucket: need("PIXQ_BUCKET")?, prefix: or("PIXQ_OUTPUT_PREFIX", "outputs/") };
        // The stack's bucket, plus any the template lists: a queued message cannot name others.
        let mut allowed_buckets = vec![output.bucket.clone()];
        allowed_buckets.extend(or("PIXQ_ALLOWED_BUCKETS", "").split(',').filter(|b| !b.is_empty()).map(String::from));
        let pipeline_text = or("PIXQ_S3_EVENTS_PIPELINE", "thumbnail:1024");
        let pipeline = Recipe::parse(&pipeline_text).map_err(|e| ConfigError::Invalid {
            name: "PIXQ_S3_EVENTS_PIPELINE",
            value: pipeline_text.clone(),
            reason: e.to_string(),
        })?;
        let mut limits = Limits::default();
        if let Some(mp) = var("PIXQ_MAX_MEGAPIXELS") {
            let mp: f64 = parse("PIXQ_MAX_MEGAPIXELS", mp)?;
            limits = limits.max_pixels((mp * 1e6) as u64);
        }
        if let Some(n) = var("PIXQ_MAX_FRAMES") {
            limits = limits.max_frames(parse("PIXQ_MAX_FRAMES", n)?);
        }
        if let Some(mp) = var("PIXQ_MAX_ANIMATION_MEGAPIXELS") {
            let mp: f64 = parse("PIXQ_MAX_ANIMATION_MEGAPIXELS", mp)?;
            limits = limits.max_animation_pixels((mp * 1e6) as u64);
        }
        // The function's memory size (set by Lambda) sizes the kernels' budget; its timeout
        // (passed by the template; `cargo lambda watch` sets AWS_LAMBDA_FUNCTION_TIMEOUT),
        // less the batch margin, is each job's time limit.
        let memory_mb = match var("PIXQ_MEMORY_MB") {
            Some(v) => parse("PIXQ_MEMORY_MB", v)?,
            None => pixq_jobs::process::lambda_memory_mb(parse(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                or("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
            )?),
        };
        let timeout_secs: u64 = match var("PIXQ_FUNCTION_TIMEOUT") {
            Some(v) => parse("PIXQ_FUNCTION_TIMEOUT", v)?,
            None => parse("AWS_LAMBDA_FUNCTION_TIMEOUT", or("AWS_LAMBDA_FUNCTION_TIMEOUT", "60"))?,
        };
        let timeout = Duration::from_secs(timeout_secs.max(1));
        let heavy_queue_url = var("PIXQ_HEAVY_QUEUE_URL");
        let function_mb: u64 = parse("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", or("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"))?;
        let forward = heavy_queue_url.as_ref().map(|_| FunctionFit { memory_mb: function_mb, timeout });
        let retry = RetryPolicy {
            base: Duration::from_millis(parse("PIXQ_BACKOFF_MS", or("PIXQ_BACKOFF_MS", "2000"))?),
            max: Duration::from_millis(parse("PIXQ_BACKOFF_MAX_MS", or("PIXQ_BACKOFF_MAX_MS", "300000"))?),
        };
        let defaults = BatchConfig::default();
        let batch = BatchConfig {
            concurrency: parse::<usize>("PIXQ_CONCURRENCY", or("PIXQ_CONCURRENCY", "2"))?.max(1),
            retry,
            memory_mb,
            process: ProcessConfig {
                limits,
                worker_id: format!("lambda-{}", or("AWS_LAMBDA_LOG_STREAM_NAME", "local")),
                runtime: "lambda".into(),
                emf: true,
                job_timeout: timeout.saturating_sub(defaults.margin).max(Duration::from_secs(1)),
                allowed_buckets,
                forward,
            },
            s3_events: Some(S3EventDefaults { recipe: pipeline, output }),
            ..defaults
        };
        Ok(Config {
            queue_url: need("PIXQ_QUEUE_URL")?,
            dlq_url: var("PIXQ_DLQ_URL"),
            heavy_queue_url,
            batch,
            timeout,
            debug: or("PIXQ_DEBUG", "0") == "1",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [("PIXQ_QUEUE_URL", "http://q"), ("PIXQ_BUCKET", "b")];

    #[test]
    fn defaults_come_from_what_lambda_sets() {
        let c = from(&[BASE[0], BASE[1], ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"), ("PIXQ_FUNCTION_TIMEOUT", "90")])
            .unwrap();
        assert_eq!(c.batch.memory_mb, 2048 - 96);
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.batch.process.job_timeout, Duration::from_secs(88));
        assert_eq!(c.batch.process.allowed_buckets, ["b"]);
        assert_eq!(c.batch.retry, RetryPolicy::default());
        let to = c.connect();
        assert_eq!(
            (to.target, to.queue_url.as_deref(), to.bucket.as_deref()),
            (pixq_jobs::backend::Target::Aws, Some("http://q"), Some("b"))
        );
        assert_eq!(c.batch.s3_events.unwrap().recipe.canonical(), "thumbnail:1024");
        assert_eq!(c.dlq_url, None);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = from(&[BASE[1]]).unwrap_err().to_string();
        assert_eq!(e, "environment variable PIXQ_QUEUE_URL is not set");
        let e = from(&[BASE[0], BASE[1], ("PIXQ_MEMORY_MB", "lots")]).unwrap_err().to_string();
        assert!(e.starts_with("environment variable PIXQ_MEMORY_MB=\"lots\""), "{e}");
        let e = from(&[BASE[0], BASE[1], ("PIXQ_S3_EVENTS_PIPELINE", "blur:1e10")]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_S3_EVENTS_PIPELINE") && e.contains("sigma"), "{e}");
        let e = from(&[BASE[0], BASE[1], ("PIXQ_MAX_MEGAPIXELS", "many")]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_MAX_MEGAPIXELS"), "{e}");
        let ok = from(&[BASE[0], BASE[1], ("PIXQ_MAX_MEGAPIXELS", "61.5"), ("PIXQ_ALLOWED_BUCKETS", "x,y")]).unwrap();
        assert_eq!(ok.batch.process.limits.max_pixels, 61_500_000);
        let e = from(&[BASE[0], BASE[1], ("PIXQ_MAX_FRAMES", "-3")]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_MAX_FRAMES"), "{e}");
        assert_eq!(ok.batch.process.allowed_buckets, ["b", "x", "y"]);
        let anim =
            from(&[BASE[0], BASE[1], ("PIXQ_MAX_FRAMES", "50"), ("PIXQ_MAX_ANIMATION_MEGAPIXELS", "2.5")]).unwrap();
        let limits = anim.batch.process.limits;
        assert_eq!((limits.max_frames, limits.max_animation_pixels), (50, 2_500_000));
    }
}
