//! One CloudWatch Embedded Metric Format (EMF) record per job, as a JSON line on stdout:
//! CloudWatch Logs turns it into metrics with no agent or API call. Lambda and the worker
//! emit the same names; the `Runtime` dimension tells them apart.

use serde_json::json;

use crate::schema::{Job, JobResult, Status};

/// Metric namespace.
pub const NAMESPACE: &str = "pixq";

fn envelope(runtime: &str, outcome: &str, fields: serde_json::Value, metrics: &[(&str, &str)]) -> String {
    let mut v = json!({
        "_aws": {
            "Timestamp": crate::clock::now_ms(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Runtime", "Outcome"]],
                "Metrics": metrics.iter().map(|(n, u)| json!({"Name": n, "Unit": u})).collect::<Vec<_>>(),
            }]
        },
        "Runtime": runtime,
        "Outcome": outcome,
    });
    if let (Some(o), serde_json::Value::Object(f)) = (v.as_object_mut(), fields) {
        o.extend(f);
    }
    v.to_string()
}

/// The EMF line of a finished job.
pub fn emf_record(r: &JobResult, runtime: &str) -> String {
    let t = &r.timings;
    let (w, h) = r.source_size.unwrap_or((0, 0));
    let out_bytes: u64 = r.outputs.iter().map(|o| o.bytes).sum();
    let outcome = match (r.status, r.reused) {
        (Status::Ok, true) => "reused",
        (Status::Ok, false) => "ok",
        (Status::Failed, _) => "failed",
    };
    envelope(
        runtime,
        outcome,
        json!({
            "JobId": r.job_id, "Batch": r.batch, "Attempt": r.attempts,
            "Jobs": 1, "QueueWaitMs": t.queue_wait_ms, "DownloadMs": t.download_ms, "DecodeMs": t.decode_ms,
            "OpsMs": t.ops_ms, "EncodeMs": t.encode_ms, "UploadMs": t.upload_ms,
            "DecodedMegapixels": f64::from(w) * f64::from(h) / 1e6,
            "BytesIn": r.input_bytes.unwrap_or(0), "BytesOut": out_bytes,
        }),
        &[
            ("Jobs", "Count"),
            ("QueueWaitMs", "Milliseconds"),
            ("DownloadMs", "Milliseconds"),
            ("DecodeMs", "Milliseconds"),
            ("OpsMs", "Milliseconds"),
            ("EncodeMs", "Milliseconds"),
            ("UploadMs", "Milliseconds"),
            ("DecodedMegapixels", "None"),
            ("BytesIn", "Bytes"),
            ("BytesOut", "Bytes"),
        ],
    )
}

/// The EMF line of a job that failed permanently.
pub fn emf_failure(job: &Job, attempt: u32, runtime: &str) -> String {
    envelope(
        runtime,
        "failed",
        json!({ "JobId": job.id, "Batch": job.batch, "Attempt": attempt, "Jobs": 1 }),
        &[("Jobs", "Count")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_has_the_envelope_and_the_values() {
        let r = JobResult {
            schema: 1,
            job_id: "j".into(),
            batch: "b".into(),
            status: Status::Ok,
            reason: None,
            input: crate::schema::ObjectRef { bucket: "x".into(), key: "k".into() },
            input_bytes: Some(1000),
            source_size: Some((2000, 1000)),
            outputs: vec![],
            reused: false,
            pipeline: "invert".into(),
            kernel_version: "k".into(),
            timings: Default::default(),
            attempts: 1,
            worker: "w".into(),
            finished_at_ms: 0,
            provisional: false,
            runtime: None,
            forwarded: None,
        };
        let v: serde_json::Value = serde_json::from_str(&emf_record(&r, "lambda")).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "pixq");
        assert_eq!(v["Runtime"], "lambda");
        assert_eq!(v["Outcome"], "ok");
        assert_eq!(v["DecodedMegapixels"], 2.0);
        assert_eq!(v["BytesIn"], 1000);
        let names: Vec<&str> = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for n in &names {
            assert!(v.get(*n).is_some(), "metric {n} has no value");
        }
    }
}
