//! The job message and the result record: versioned JSON.
//!
//! A job carries references and parameters, never image bytes (an SQS message holds at most
//! 256 KiB). Unknown fields are ignored (newer producers may add some); an unknown schema
//! version or a missing field is refused with a reason.

use pixq_kernel::{Format, Pipeline, Recipe, Variant};
use serde::{Deserialize, Serialize};

use crate::keys::{self, KeyError};

/// Schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Schema version of a job with variants: a worker that knows only version 1 refuses it
/// (a recorded failure) instead of making the first variant alone.
pub const VARIANTS_SCHEMA_VERSION: u32 = 2;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Bucket (S3) or container folder (local store).
    pub bucket: String,
    /// Object key.
    pub key: String,
}

/// Where outputs go: a bucket and a key prefix (the key itself is content-addressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLocation {
    /// Bucket for outputs and result records.
    pub bucket: String,
    /// Prefix for output objects, e.g. `outputs/`.
    pub prefix: String,
}

/// One unit of work: one input image through one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// Unique job id (also the FIFO de-duplication id).
    pub id: String,
    /// Batch the job belongs to (also the FIFO message group).
    pub batch: String,
    /// The input object.
    pub input: ObjectRef,
    /// Content digest of the input (`blake3:<hex>`, or `sha256:<hex>`), when the submitter
    /// knows it: lets a worker find an existing output without downloading the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// Operations and output settings (with variants: the first variant's).
    pub pipeline: Pipeline,
    /// Named outputs from one decode (schema [`VARIANTS_SCHEMA_VERSION`]); empty for a job
    /// with one output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Output bucket and prefix.
    pub output: OutputLocation,
    /// When the job was submitted, ms since the Unix epoch.
    pub submitted_at_ms: i64,
    /// Set when the Lambda function passed the job on to the heavy queue: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<String>,
}

/// Why a job message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed job JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A version this code does not know.
    #[error("unsupported job schema version {found} (this worker reads version {SCHEMA_VERSION})")]
    Version {
        /// Version in the message.
        found: u64,
    },
    /// A field with an invalid value.
    #[error("invalid job: {0}")]
    Invalid(#[from] KeyError),
}

impl Job {
    /// Parses and validates a job message.
    pub fn from_json(body: &str) -> Result<Job, SchemaError> {
        // Read the version first so a future schema gets a version error, not a shape error.
        let v: serde_json::Value = serde_json::from_str(body)?;
        match v.get("schema").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(SCHEMA_VERSION) || n == u64::from(VARIANTS_SCHEMA_VERSION) => {}
            Some(found) => return Err(SchemaError::Version { found }),
            None => {
                return Err(SchemaError::Json(serde::de::Error::custom("missing field `schema` (the schema version)")));
            }
        }
        let job: Job = serde_json::from_value(v)?;
        job.validate()?;
        job.check_variants().map_err(|e| SchemaError::Json(serde::de::Error::custom(e)))?;
        Ok(job)
    }

    /// Variants need schema 2 and schema 2 needs variants; their names and shared settings
    /// follow the kernel's rules, and `pipeline` is the first variant's.
    fn check_variants(&self) -> Result<(), String> {
        let v2 = self.schema == VARIANTS_SCHEMA_VERSION;
        if self.variants.is_empty() {
            return if v2 { Err("a schema 2 job lists its variants".into()) } else { Ok(()) };
        }
        if !v2 {
            return Err(format!("a job with variants is schema {VARIANTS_SCHEMA_VERSION}"));
        }
        pixq_kernel::op::variants::check(&self.variants).map_err(|e| e.to_string())?;
        if self.pipeline != self.variants[0].pipeline {
            return Err("`pipeline` must be the first variant's".into());
        }
        Ok(())
    }

    /// What the job makes.
    pub fn recipe(&self) -> Recipe {
        if self.variants.is_empty() {
            Recipe::One(self.pipeline.clone())
        } else {
            Recipe::Variants(self.variants.clone())
        }
    }

    /// Each output's pipeline, in order.
    pub fn pipelines(&self) -> Vec<&Pipeline> {
        if self.variants.is_empty() {
            vec![&self.pipeline]
        } else {
            self.variants.iter().map(|v| &v.pipeline).collect()
        }
    }

    /// The canonical string of what the job makes (its pipeline's, or `name=...;name=...`).
    pub fn canonical(&self) -> String {
        if self.variants.is_empty() {
            self.pipeline.canonical()
        } else {
            pixq_kernel::op::variants::canonical(&self.variants)
        }
    }

    /// Serialises the job.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serialises")
    }

    /// Checks ids, buckets and keys.
    pub fn validate(&self) -> Result<(), KeyError> {
        keys::validate_id("job id", &self.id)?;
        keys::validate_id("batch id", &self.batch)?;
        keys::validate_bucket(&self.input.bucket)?;
        keys::validate_key(&self.input.key)?;
        keys::validate_bucket(&self.output.bucket)?;
        if !self.output.prefix.is_empty() {
            keys::validate_key(&format!("{}x", self.output.prefix))?;
        }
        Ok(())
    }
}

/// Outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Output written.
    Ok,
    /// Permanently failed; `reason` says why.
    Failed,
}

/// One output object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputInfo {
    /// Where it is.
    pub object: ObjectRef,
    /// Format.
    pub format: Format,
    /// Width in pixels (absent when the output was reused and not re-read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Size in bytes.
    pub bytes: u64,
    /// The variant it is, for a job with variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimings {
    /// From submission to this attempt's start.
    pub queue_wait_ms: f64,
    /// Fetching the input.
    pub download_ms: f64,
    /// Header probe + decode.
    pub decode_ms: f64,
    /// Operations.
    pub ops_ms: f64,
    /// Encode.
    pub encode_ms: f64,
    /// Writing the outputs. In the stored record, those written before it: small outputs
    /// committed together with the record are timed in what the worker reports (logs,
    /// metrics), not in the record itself.
    pub upload_ms: f64,
}

/// The record every finished job leaves under `results/<batch>/<job>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Schema version.
    pub schema: u32,
    /// Job id.
    pub job_id: String,
    /// Batch id.
    pub batch: String,
    /// Ok or failed.
    pub status: Status,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The input.
    pub input: ObjectRef,
    /// Input size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_bytes: Option<u64>,
    /// Source dimensions, when decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_size: Option<(u32, u32)>,
    /// Outputs written (empty on failure).
    pub outputs: Vec<OutputInfo>,
    /// True when an identical earlier job's output was found and nothing was recomputed.
    pub reused: bool,
    /// Canonical pipeline.
    pub pipeline: String,
    /// Kernel version that produced the output.
    pub kernel_version: String,
    /// Per-stage time.
    pub timings: StageTimings,
    /// Delivery attempt that finished the job (1 = first).
    pub attempts: u32,
    /// Which worker finished it.
    pub worker: String,
    /// When, ms since the Unix epoch.
    pub finished_at_ms: i64,
    /// Written when the job's last allowed attempt started: the failure stands only if that
    /// attempt never finishes (the message is then in the dead-letter queue). A client
    /// following a batch counts it as failed once nothing is left in flight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provisional: bool,
    /// Where it ran: `lambda`, `ec2` or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Why the Lambda function passed it on to the heavy queue, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn job() -> Job {
        Job {
            schema: SCHEMA_VERSION,
            id: "j1".into(),
            batch: "b1".into(),
            input: ObjectRef { bucket: "pixq".into(), key: "inputs/b1/a.jpg".into() },
            input_digest: Some("sha256:00".into()),
            pipeline: Pipeline::parse("thumbnail:64,format:png").unwrap(),
            variants: Vec::new(),
            output: OutputLocation { bucket: "pixq".into(), prefix: "outputs/".into() },
            submitted_at_ms: 1,
            forwarded: None,
        }
    }

    #[test]
    fn round_trips() {
        let j = job();
        assert_eq!(Job::from_json(&j.to_json()).unwrap(), j);
    }

    #[test]
    fn refusals_say_why() {
        let e = Job::from_json("{not json").unwrap_err();
        assert!(e.to_string().starts_with("malformed job JSON"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&job().to_json()).unwrap();
        v["schema"] = 7.into();
        let e = Job::from_json(&v.to_string()).unwrap_err();
        assert!(matches!(e, SchemaError::Version { found: 7 }), "{e}");
        v["schema"] = 1.into();
        v["pipeline"]["ops"][0] = serde_json::json!({"op": "wobble"});
        let e = Job::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("wobble"), "{e}");
        let mut j = job();
        j.input.key = "../../etc/passwd".into();
        let e = Job::from_json(&j.to_json()).unwrap_err();
        assert!(e.to_string().contains("'..'"), "{e}");
        let e = Job::from_json(r#"{"id": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("schema"), "{e}");
    }

    #[test]
    fn variants_round_trip_as_schema_2_and_inconsistent_ones_are_refused() {
        let vs = pixq_kernel::op::variants::parse("s=thumbnail:64;l=thumbnail:512,format:webp").unwrap();
        let j = Job { schema: VARIANTS_SCHEMA_VERSION, pipeline: vs[0].pipeline.clone(), variants: vs, ..job() };
        let back = Job::from_json(&j.to_json()).unwrap();
        assert_eq!(back, j);
        assert_eq!(back.pipelines().len(), 2);
        assert_eq!(back.canonical(), "s=thumbnail:64;l=thumbnail:512,format:webp");
        let v: serde_json::Value = serde_json::from_str(&j.to_json()).unwrap();
        let refused = |f: &dyn Fn(&mut serde_json::Value), want: &str| {
            let mut w = v.clone();
            f(&mut w);
            let e = Job::from_json(&w.to_string()).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        refused(&|w| w["schema"] = 1.into(), "is schema 2");
        refused(&|w| w["variants"] = serde_json::json!([]), "lists its variants");
        refused(&|w| w["variants"][1]["name"] = "s".into(), "given twice");
        refused(&|w| w["variants"][1]["name"] = "../x".into(), "variant name");
        refused(&|w| w["variants"][1]["name"] = "".into(), "1 to 32");
        refused(&|w| w["pipeline"] = serde_json::json!({"ops": []}), "first variant's");
        refused(&|w| w["variants"][1]["pipeline"]["output"]["keep_icc"] = true.into(), "keep-icc");
        refused(&|w| w["variants"][1]["pipeline"]["ops"][0] = serde_json::json!({"op": "wobble"}), "wobble");
        let many: Vec<serde_json::Value> =
            (0..17).map(|i| serde_json::json!({"name": format!("v{i}"), "pipeline": v["pipeline"]})).collect();
        refused(&|w| w["variants"] = serde_json::Value::Array(many.clone()), "1 to 16 variants");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v: serde_json::Value = serde_json::from_str(&job().to_json()).unwrap();
        v["priority"] = 3.into();
        assert!(Job::from_json(&v.to_string()).is_ok());
    }
}
