//! The Lambda handler on the embedded backends (SQLite queue, filesystem store), no server
//! needed: a batch holding crafted files among good records. The good records finish, each
//! crafted one is a recorded failure, and the process survives (an abort would end this
//! test binary).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use pixq_functions::{Processor, handle};
use pixq_jobs::batch;
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::keys;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqlite::{QueueConfig, SqliteQueue};
use pixq_jobs::records::BatchConfig;
use pixq_jobs::schema::{ObjectRef, OutputLocation, Status};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::store::fs::FsStore;

const BUCKET: &str = "pixq";

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let r = Raster::from_fn(w, h, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, (x ^ y) as u8]));
    pixq_jobs::kernel::encode(&r, Format::Jpeg, &OutputSpec::default()).unwrap()
}

/// SOI, a standalone RST0, an APP1 of length 0xFFFF holding a fake 64x64 frame header,
/// then the real frame header declaring 65500 x 65500 (issue 8's file).
fn crafted_jpeg() -> Vec<u8> {
    let mut j = jpeg(64, 48);
    let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    j[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    let mut app1 = vec![0xFF, 0xD0, 0xFF, 0xE1, 0xFF, 0xFF, 0xFF, 0xC0, 0, 17, 8, 0, 64, 0, 64, 3];
    app1.resize(4 + 0xFFFF, 0);
    j.splice(2..2, app1);
    j
}

/// A PNG header declaring 10000 x 10000 whose body is an 8x8 image's.
fn png_claiming_huge() -> Vec<u8> {
    let r = Raster::from_fn(8, 8, Channels::Rgb, |_, _, p| p.copy_from_slice(&[1, 2, 3]));
    let mut p = pixq_jobs::kernel::encode(&r, Format::Png, &OutputSpec::default()).unwrap();
    p[16..20].copy_from_slice(&10_000u32.to_be_bytes());
    p[20..24].copy_from_slice(&10_000u32.to_be_bytes());
    let mut c = 0xFFFF_FFFFu32;
    for &b in &p[12..29] {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    p[29..33].copy_from_slice(&(!c).to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_files_in_a_lambda_batch_fail_alone_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::new(dir.path().join("store")));
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap());
    let out = OutputLocation { bucket: BUCKET.into(), prefix: "outputs/".into() };
    let inputs = [
        ("a.jpg", jpeg(300, 200), "thumbnail:100"),
        ("crafted.jpg", crafted_jpeg(), "thumbnail:100"),
        ("huge.png", png_claiming_huge(), "blur:5"),
        ("b.jpg", jpeg(200, 300), "thumbnail:100"),
    ];
    let mut jobs = Vec::new();
    for (i, (name, bytes, ops)) in inputs.into_iter().enumerate() {
        let key = format!("inputs/lb/{name}");
        let digest = keys::content_digest(&bytes);
        store.put(BUCKET, &key, bytes, "application/octet-stream").await.unwrap();
        let input = ObjectRef { bucket: BUCKET.into(), key };
        jobs.push(batch::new_job("lb", i, input, Some(digest), &Pipeline::parse(ops).unwrap(), &out));
    }
    batch::enqueue(queue.as_ref(), &jobs, false).await.unwrap();

    // The event Lambda would deliver for these messages.
    let event = sqs_event(&queue).await;
    assert_eq!(event.records.len(), 4);
    // A 512 MB function: the huge PNG's blur (3 x 300 MB) can never fit its budget.
    let config =
        BatchConfig { concurrency: 2, memory_mb: pixq_jobs::process::lambda_memory_mb(512), ..Default::default() };
    let p = Processor {
        queue: queue.clone(),
        store: store.clone(),
        config: Arc::new(config),
        fallback_budget: Duration::from_secs(60),
    };
    let mut ctx = Context::default();
    ctx.deadline = pixq_jobs::clock::now_ms() as u64 + 60_000;
    let resp = handle(&p, LambdaEvent::new(event, ctx)).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "poison is dead-lettered, not retried: {resp:?}");

    let st = batch::batch_status(store.as_ref(), BUCKET, "lb").await.unwrap();
    let by_id = |i: usize| st.results.iter().find(|r| r.job_id == jobs[i].id).unwrap();
    assert_eq!((by_id(0).status, by_id(3).status), (Status::Ok, Status::Ok));
    let crafted = by_id(1).reason.as_deref().unwrap();
    assert!(crafted.contains("65500x65500"), "{crafted}");
    let huge = by_id(2).reason.as_deref().unwrap();
    assert!(huge.contains("over the budget of 416 MB"), "{huge}");
    assert_eq!(queue.dead_letters(10).await.unwrap().len(), 2);
}

/// The SQS records as Lambda delivers them, for messages already on `queue`.
async fn sqs_event(queue: &SqliteQueue) -> SqsEvent {
    let msgs = queue.receive(10, Duration::from_secs(60), Duration::ZERO).await.unwrap();
    let records: Vec<serde_json::Value> = msgs
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.id, "receiptHandle": m.receipt, "body": m.body,
                "attributes": {"ApproximateReceiveCount": m.receive_count.to_string(), "SentTimestamp": m.sent_at_ms.to_string()},
                "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

/// S3 notifications and S3's test event through the handler, configured the way the
/// template configures the function (`Config::from_lookup` over its variables).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_notifications_and_the_test_event_on_the_embedded_backends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::new(dir.path().join("store")));
    let queue = Arc::new(SqliteQueue::open(&dir.path().join("q.db"), QueueConfig::default()).unwrap());
    store.put(BUCKET, "uploads/my pic.jpg", jpeg(400, 300), "image/jpeg").await.unwrap();
    let notification = |key: &str| {
        format!(
            r#"{{"Records":[{{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2026-12-02T10:00:00.000Z","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{BUCKET}"}},"object":{{"key":"{key}","size":1}}}}}}]}}"#
        )
    };
    queue.send(&notification("uploads/my+pic.jpg"), &Default::default()).await.unwrap();
    // A key S3 allows but the layout refuses: recorded, not silently dropped.
    queue.send(&notification("uploads/a%2F%2Fb.jpg"), &Default::default()).await.unwrap();
    let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-02T10:00:00Z","Bucket":"pixq"}"#;
    queue.send(test_event, &Default::default()).await.unwrap();

    let vars =
        [("PIXQ_QUEUE_URL", "unused"), ("PIXQ_BUCKET", BUCKET), ("PIXQ_S3_EVENTS_PIPELINE", "thumbnail:64,format:png")];
    let config =
        pixq_functions::Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
            .unwrap();
    let p = Processor {
        queue: queue.clone(),
        store: store.clone(),
        config: Arc::new(config.batch),
        fallback_budget: config.timeout,
    };
    let mut ctx = Context::default();
    ctx.deadline = pixq_jobs::clock::now_ms() as u64 + 60_000;
    let resp = handle(&p, LambdaEvent::new(sqs_event(&queue).await, ctx)).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");

    let st = batch::batch_status(store.as_ref(), BUCKET, "s3-20261202").await.unwrap();
    assert_eq!(st.results.len(), 2, "{:?}", st.results);
    let ok = st.results.iter().find(|r| r.status == Status::Ok).unwrap();
    assert_eq!((ok.input.key.as_str(), ok.outputs[0].width), ("uploads/my pic.jpg", Some(64)));
    let refused = st.results.iter().find(|r| r.status == Status::Failed).unwrap();
    assert!(refused.reason.as_deref().unwrap().contains("empty path segment"), "{:?}", refused.reason);
    // Successes (the photo, the test event) are deleted by the event source, not the
    // handler: they stay in flight here; the refused key went to the dead-letter queue.
    let c = queue.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight, c.dead), (0, 2, 1));
}
