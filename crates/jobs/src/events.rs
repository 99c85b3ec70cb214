//! What can arrive on the queue: a pixq job, or an S3 `ObjectCreated` notification (each
//! created object becomes a job with the configured default pipeline), or S3's
//! `s3:TestEvent` (acknowledged and ignored).
//!
//! S3 event records are parsed with a tolerant struct of our own: local servers omit
//! `userIdentity`, `requestParameters` and `sequencer`. Object keys in events are
//! form-URL-encoded (`+` is a space, `%2F` a slash), on AWS too.

use pixq_kernel::{Pipeline, Recipe};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::keys;
use crate::schema::{Job, ObjectRef, OutputLocation, SCHEMA_VERSION, SchemaError, VARIANTS_SCHEMA_VERSION};

/// How S3 notifications become jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct S3EventDefaults {
    /// What every created object makes: one pipeline or variants (`PIXQ_S3_EVENTS_PIPELINE`).
    pub recipe: Recipe,
    /// Where outputs and records go.
    pub output: OutputLocation,
}

/// A parsed queue message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Work to do (one job, or one per created object), and the jobs refused with a reason
    /// (each gets a failed record; the message goes to the dead-letter queue).
    Jobs(Vec<Job>, Vec<Refused>),
    /// Nothing to do; acknowledge. The string says why.
    Ignore(String),
}

/// A job that names where its record goes but cannot run: an object key the store layout
/// refuses, a pipeline out of range. It is recorded as failed, not silently dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The job as far as it could be read (its input key may be invalid for the store).
    pub job: Job,
    /// Why it cannot run.
    pub reason: String,
}

/// For a pixq job message that fails validation: the job id, batch and output location, if
/// those are valid, so its failure can be recorded where the submitter looks.
fn salvage(v: &serde_json::Value, reason: String) -> Option<Refused> {
    let s = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str).map(str::to_string);
    let (id, batch, bucket) = (s("/id")?, s("/batch")?, s("/output/bucket")?);
    keys::validate_id("job id", &id).ok()?;
    keys::validate_id("batch id", &batch).ok()?;
    keys::validate_bucket(&bucket).ok()?;
    let job = Job {
        schema: SCHEMA_VERSION,
        id,
        batch,
        input: ObjectRef { bucket: s("/input/bucket").unwrap_or_default(), key: s("/input/key").unwrap_or_default() },
        input_digest: None,
        pipeline: Pipeline::default(),
        variants: Vec::new(),
        output: OutputLocation { bucket, prefix: s("/output/prefix").unwrap_or_default() },
        submitted_at_ms: v.pointer("/submitted_at_ms").and_then(serde_json::Value::as_i64).unwrap_or(0),
        forwarded: None,
    };
    Some(Refused { job, reason })
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Option<Vec<EventRecord>>,
    #[serde(rename = "Event", default)]
    event: Option<String>,
}

#[derive(Deserialize)]
struct EventRecord {
    #[serde(rename = "eventSource", default)]
    source: String,
    #[serde(rename = "eventName", default)]
    name: String,
    #[serde(rename = "eventTime", default)]
    time: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
struct ObjectEntity {
    key: String,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte).
pub fn form_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("truncated escape in '{s}'"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape %{hex} in '{s}'"))?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}

/// Parses a queue message body.
pub fn parse_message(body: &str, s3: Option<&S3EventDefaults>) -> Result<Incoming, SchemaError> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    if v.get("schema").is_some() {
        return match Job::from_json(body) {
            Ok(job) => Ok(Incoming::Jobs(vec![job], Vec::new())),
            Err(e @ SchemaError::Version { .. }) => Err(e),
            Err(e) => match salvage(&v, e.to_string()) {
                Some(r) => Ok(Incoming::Jobs(Vec::new(), vec![r])),
                None => Err(e),
            },
        };
    }
    let n: Notification = match serde_json::from_value(v) {
        Ok(n) => n,
        Err(e) => return Err(SchemaError::Json(e)),
    };
    if n.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Incoming::Ignore("s3:TestEvent".into()));
    }
    let Some(records) = n.records else {
        return Err(SchemaError::Json(serde::de::Error::custom(
            "neither a pixq job (no `schema`) nor an S3 event notification (no `Records`)",
        )));
    };
    let Some(defaults) = s3 else {
        return Err(SchemaError::Json(serde::de::Error::custom(
            "an S3 event notification arrived but no default pipeline is configured for S3 events",
        )));
    };
    let mut jobs = Vec::new();
    let mut refused = Vec::new();
    for r in records {
        if r.source != "aws:s3" || !r.name.starts_with("ObjectCreated") {
            continue;
        }
        let key = form_decode(&r.s3.object.key).map_err(|e| SchemaError::Json(serde::de::Error::custom(e)))?;
        // Never process our own outputs and records (a notification on the whole bucket
        // would otherwise loop forever).
        let own = [defaults.output.prefix.as_str(), "results/", "batches/"];
        if r.s3.bucket.name == defaults.output.bucket && own.iter().any(|p| !p.is_empty() && key.starts_with(p)) {
            continue;
        }
        let etag = r.s3.object.etag.as_deref().map(|t| t.trim_matches('"').to_string());
        let id_src = format!("{}\0{}\0{}", r.s3.bucket.name, key, etag.as_deref().unwrap_or(""));
        let id = format!("s3-{}", &keys::hex(&Sha256::digest(id_src.as_bytes()))[..24]);
        let day: String = r.time.chars().filter(char::is_ascii_digit).take(8).collect();
        let batch = if day.len() == 8 { format!("s3-{day}") } else { "s3-events".to_string() };
        let job = Job {
            id,
            batch,
            input: ObjectRef { bucket: r.s3.bucket.name, key },
            input_digest: etag.map(|e| format!("etag:{e}")),
            schema: if defaults.recipe.variants().is_empty() { SCHEMA_VERSION } else { VARIANTS_SCHEMA_VERSION },
            pipeline: defaults.recipe.first().clone(),
            variants: defaults.recipe.variants().to_vec(),
            output: defaults.output.clone(),
            submitted_at_ms: crate::clock::now_ms(),
            forwarded: None,
        };
        // A key legal on S3 but outside pixq's key rules (`a//b`, a backslash, a segment
        // over 255 bytes) fails alone, with a record; its neighbours in the event run.
        match job.validate() {
            Ok(()) => jobs.push(job),
            Err(e) => refused.push(Refused { job, reason: format!("cannot process this object: {e}") }),
        }
    }
    if jobs.is_empty() && refused.is_empty() {
        return Ok(Incoming::Ignore("no ObjectCreated record for an input".into()));
    }
    Ok(Incoming::Jobs(jobs, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> S3EventDefaults {
        S3EventDefaults {
            recipe: Recipe::parse("thumbnail:256").unwrap(),
            output: OutputLocation { bucket: "out".into(), prefix: "outputs/".into() },
        }
    }

    fn event(key: &str) -> String {
        format!(
            r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-11-30T01:02:03.000Z","eventName":"ObjectCreated:Put","s3":{{"s3SchemaVersion":"1.0","bucket":{{"name":"in","arn":"arn:aws:s3:::in"}},"object":{{"key":"{key}","size":10,"eTag":"\"abc\""}}}}}}]}}"#
        )
    }

    #[test]
    fn keys_are_form_decoded() {
        assert_eq!(form_decode("photo+1.jpg").unwrap(), "photo 1.jpg");
        assert_eq!(form_decode("a%2Fb.jpg").unwrap(), "a/b.jpg");
        assert_eq!(form_decode("%C3%BCber.jpg").unwrap(), "über.jpg");
        assert!(form_decode("bad%2").is_err());
        let Incoming::Jobs(j, _) = parse_message(&event("inputs/photo+1.jpg"), Some(&defaults())).unwrap() else {
            panic!()
        };
        assert_eq!((j[0].input.bucket.as_str(), j[0].input.key.as_str()), ("in", "inputs/photo 1.jpg"));
        assert_eq!(j[0].batch, "s3-20261130");
        assert_eq!(j[0].input_digest.as_deref(), Some("etag:abc"));
        let Incoming::Jobs(k, _) = parse_message(&event("a%2Fb.jpg"), Some(&defaults())).unwrap() else { panic!() };
        assert_eq!(k[0].input.key, "a/b.jpg");
        assert_ne!(j[0].id, k[0].id);
    }

    #[test]
    fn uploads_become_variant_jobs_when_the_default_has_variants() {
        let d = S3EventDefaults { recipe: Recipe::parse("s=thumbnail:320;l=thumbnail:1600").unwrap(), ..defaults() };
        let Incoming::Jobs(j, _) = parse_message(&event("uploads/a.jpg"), Some(&d)).unwrap() else { panic!() };
        assert_eq!((j[0].schema, j[0].variants.len()), (2, 2));
        assert_eq!(j[0].canonical(), "s=thumbnail:320;l=thumbnail:1600");
        // What the worker reads back is the same, valid job.
        assert_eq!(Job::from_json(&j[0].to_json()).unwrap(), j[0]);
    }

    #[test]
    fn test_events_and_own_outputs_are_ignored() {
        let t = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-30T00:00:00Z","Bucket":"in"}"#;
        assert!(matches!(parse_message(t, Some(&defaults())).unwrap(), Incoming::Ignore(_)));
        let own = event("outputs/ab/x.jpg").replace(r#""name":"in""#, r#""name":"out""#);
        assert!(matches!(parse_message(&own, Some(&defaults())).unwrap(), Incoming::Ignore(_)));
    }

    #[test]
    fn refusals() {
        assert!(parse_message(&event("x.jpg"), None).unwrap_err().to_string().contains("no default pipeline"));
        assert!(parse_message(r#"{"hello": 1}"#, None).unwrap_err().to_string().contains("neither a pixq job"));
        assert!(parse_message("nope", None).is_err());
    }

    /// Keys S3 allows but the key layout refuses fail one by one, each with a reason and a
    /// job id to record it under; the other records of the same event still run.
    #[test]
    fn keys_legal_on_s3_but_not_here_are_refused_one_by_one() {
        let long = "x".repeat(300);
        for bad in ["..%2F..%2Fetc%2Fpasswd", "a%2F%2Fb.jpg", "photo%5C1.jpg", &format!("d%2F{long}.jpg"), "%2Fabs.jpg"]
        {
            let two = event(bad).replace("]}", &format!(",{}]}}", &event("fine.jpg")[12..event("fine.jpg").len() - 2]));
            let Incoming::Jobs(jobs, refused) = parse_message(&two, Some(&defaults())).unwrap() else { panic!() };
            assert_eq!(jobs.len(), 1, "{bad}");
            assert_eq!(jobs[0].input.key, "fine.jpg");
            assert_eq!(refused.len(), 1, "{bad}");
            assert!(refused[0].reason.contains("cannot process this object"), "{}", refused[0].reason);
            assert!(keys::validate_id("job id", &refused[0].job.id).is_ok());
        }
    }

    #[test]
    fn a_job_with_a_bad_pipeline_is_refused_under_its_own_id() {
        let mut v: serde_json::Value = serde_json::from_str(&crate::schema::tests::job().to_json()).unwrap();
        v["pipeline"]["ops"][0] = serde_json::json!({"op": "blur", "sigma": 1e10});
        let Incoming::Jobs(jobs, refused) = parse_message(&v.to_string(), None).unwrap() else { panic!() };
        assert!(jobs.is_empty());
        assert_eq!((refused[0].job.id.as_str(), refused[0].job.batch.as_str()), ("j1", "b1"));
        assert!(refused[0].reason.contains("sigma must be <= 100"), "{}", refused[0].reason);
        // Without a usable id there is nowhere to record it: a bad message.
        v["id"] = "../x".into();
        assert!(parse_message(&v.to_string(), None).is_err());
    }
}
