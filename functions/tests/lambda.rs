//! The Lambda handler called directly with SQS events built from records received from a
//! real queue (moto on 127.0.0.1, through the real aws-sdk clients): partial batch
//! failures, the time budget, S3 notifications, and byte-identical output with the worker.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_s3::types::{Event as S3Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use lambda_runtime::{Context, LambdaEvent};
use pixq_functions::{Processor, handle};
use pixq_jobs::batch;
use pixq_jobs::events::S3EventDefaults;
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::keys;
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqs::SqsQueue;
use pixq_jobs::records::BatchConfig;
use pixq_jobs::schema::{ObjectRef, OutputLocation, Status};
use pixq_jobs::store::ObjectStore;
use pixq_jobs::store::s3::S3Store;

use pixq_testkit::{queue_arn, sdk as local_aws};

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let r =
        Raster::from_fn(w, h, Channels::Rgb, |x, y, p| p.copy_from_slice(&[(x + seed) as u8, y as u8, (x ^ y) as u8]));
    pixq_jobs::kernel::encode(&r, Format::Jpeg, &OutputSpec::default()).unwrap()
}

struct Stack {
    sqs: aws_sdk_sqs::Client,
    queue: Arc<SqsQueue>,
    store: Arc<S3Store>,
    bucket: String,
}

async fn stack(cfg: &aws_config::SdkConfig) -> Stack {
    let sqs = pixq_jobs::aws::sqs_client(cfg);
    let (store, bucket) = pixq_testkit::bucket(cfg).await;
    let pair = pixq_testkit::queue_with_dlq(cfg, false, 3).await;
    let queue = Arc::new(SqsQueue::open(sqs.clone(), &pair.url, None).await.unwrap());
    Stack { sqs, queue, store: Arc::new(store), bucket }
}

/// S3 notifies the stack's queue of every object created in its bucket.
async fn notify_uploads(cfg: &aws_config::SdkConfig, s: &Stack) {
    let s3 = pixq_jobs::aws::s3_client(cfg, true);
    let arn = queue_arn(&s.sqs, s.queue.url()).await;
    let qc = QueueConfiguration::builder().queue_arn(arn).events(S3Event::S3ObjectCreated).build().unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&s.bucket)
        .notification_configuration(NotificationConfiguration::builder().queue_configurations(qc).build())
        .send()
        .await
        .unwrap();
}

/// Receives up to `n` messages from the real queue and turns them into the SQS event Lambda
/// would deliver (same JSON shape).
async fn event_from_queue(s: &Stack, n: usize) -> SqsEvent {
    let mut records = Vec::new();
    for _ in 0..10 {
        let out = s
            .sqs
            .receive_message()
            .queue_url(s.queue.url())
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            let attrs: serde_json::Map<String, serde_json::Value> =
                m.attributes().unwrap().iter().map(|(k, v)| (k.as_str().to_string(), v.clone().into())).collect();
            records.push(serde_json::json!({
                "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                "attributes": attrs, "messageAttributes": {}, "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1"
            }));
        }
        if records.len() >= n {
            break;
        }
    }
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

fn context(ms_left: u64) -> Context {
    let mut c = Context::default();
    c.deadline = (pixq_jobs::clock::now_ms() as u64) + ms_left;
    c
}

fn processor(s: &Stack, pipeline: &str) -> Processor {
    let output = OutputLocation { bucket: s.bucket.clone(), prefix: "outputs/".into() };
    let mut config = BatchConfig { concurrency: 2, ..BatchConfig::default() };
    config.process.runtime = "lambda".into();
    config.s3_events = Some(S3EventDefaults { recipe: pixq_jobs::kernel::Recipe::parse(pipeline).unwrap(), output });
    Processor {
        queue: s.queue.clone(),
        store: s.store.clone(),
        config: Arc::new(config),
        fallback_budget: Duration::from_secs(60),
    }
}

async fn upload_jobs(
    s: &Stack,
    batch_id: &str,
    inputs: Vec<(&str, Vec<u8>)>,
    ops: &str,
) -> Vec<pixq_jobs::schema::Job> {
    let out = OutputLocation { bucket: s.bucket.clone(), prefix: "outputs/".into() };
    let mut jobs = Vec::new();
    for (i, (name, bytes)) in inputs.into_iter().enumerate() {
        let key = format!("inputs/{batch_id}/{name}");
        let digest = keys::content_digest(&bytes);
        s.store.put(&s.bucket, &key, bytes, "image/jpeg").await.unwrap();
        jobs.push(batch::new_job(
            batch_id,
            i,
            ObjectRef { bucket: s.bucket.clone(), key },
            Some(digest),
            &Pipeline::parse(ops).unwrap(),
            &out,
        ));
    }
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_fails_alone_in_its_batch() {
    let Some(cfg) = local_aws().await else { return };
    let s = stack(&cfg).await;
    let mut truncated = jpeg(300, 200, 1);
    truncated.truncate(truncated.len() / 3);
    let jobs = upload_jobs(
        &s,
        "lb",
        vec![("a.jpg", jpeg(300, 200, 2)), ("broken.jpg", truncated), ("b.jpg", jpeg(200, 300, 3))],
        "thumbnail:100,format:png",
    )
    .await;
    batch::enqueue(s.queue.as_ref(), &jobs, false).await.unwrap();
    s.queue.send("{definitely not a job", &Default::default()).await.unwrap();

    let event = event_from_queue(&s, 4).await;
    assert_eq!(event.records.len(), 4);
    let resp = handle(&processor(&s, "thumbnail:64"), LambdaEvent::new(event, context(60_000))).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "poison must not be retried: {:?}", resp.batch_item_failures);

    let st = batch::batch_status(s.store.as_ref(), &s.bucket, "lb").await.unwrap();
    assert_eq!((st.ok(), st.failed()), (2, 1));
    for r in st.results.iter().filter(|r| r.status == Status::Ok) {
        let o = &r.outputs[0];
        let img = pixq_jobs::kernel::decode(
            &s.store.get(&o.object.bucket, &o.object.key).await.unwrap(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(img.width().max(img.height()), 100);
    }
    let dead = s.queue.dead_letters(10).await.unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dead.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("truncated")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("malformed job JSON")), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_cannot_finish_in_time_are_reported_failed() {
    let Some(cfg) = local_aws().await else { return };
    let s = stack(&cfg).await;
    let jobs = upload_jobs(&s, "late", vec![("a.jpg", jpeg(64, 64, 4)), ("b.jpg", jpeg(64, 64, 5))], "invert").await;
    batch::enqueue(s.queue.as_ref(), &jobs, false).await.unwrap();
    let event = event_from_queue(&s, 2).await;
    let ids: Vec<String> = event.records.iter().map(|r| r.message_id.clone().unwrap()).collect();
    // 1 s left, 2 s safety margin: nothing may start.
    let resp = handle(&processor(&s, "invert"), LambdaEvent::new(event, context(1_000))).await.unwrap();
    let mut failed: Vec<String> = resp.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    failed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(failed, want);
    assert!(
        batch::batch_status(s.store.as_ref(), &s.bucket, "late").await.unwrap().results.is_empty(),
        "half-done work was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_upload_notification_becomes_a_processed_output() {
    let Some(cfg) = local_aws().await else { return };
    let s = stack(&cfg).await;
    notify_uploads(&cfg, &s).await;
    s.store.put(&s.bucket, "inputs/my photo+1.jpg", jpeg(320, 240, 6), "image/jpeg").await.unwrap();
    let p = processor(&s, "thumbnail:80,format:png");
    // The queue may also hold S3's s3:TestEvent; both are handled and acknowledged.
    let event = event_from_queue(&s, 1).await;
    assert!(!event.records.is_empty());
    let resp = handle(&p, LambdaEvent::new(event, context(60_000))).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let results = s.store.list(&s.bucket, "results/s3-").await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let r: pixq_jobs::schema::JobResult =
        serde_json::from_slice(&s.store.get(&s.bucket, &results[0].key).await.unwrap()).unwrap();
    assert_eq!((r.status, r.input.key.as_str()), (Status::Ok, "inputs/my photo+1.jpg"));
    let o = &r.outputs[0];
    assert_eq!((o.width, o.height, o.format), (Some(80), Some(60), Format::Png));
    assert!(s.store.head(&s.bucket, &o.object.key).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_and_local_worker_write_byte_identical_outputs() {
    let Some(cfg) = local_aws().await else { return };
    let s = stack(&cfg).await;
    let input = jpeg(640, 480, 7);
    let ops = "thumbnail:200,sharpen:1,format:jpeg,quality:80";
    let jobs = upload_jobs(&s, "same", vec![("x.jpg", input.clone())], ops).await;
    batch::enqueue(s.queue.as_ref(), &jobs, false).await.unwrap();
    let resp =
        handle(&processor(&s, ops), LambdaEvent::new(event_from_queue(&s, 1).await, context(60_000))).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
    let lambda_result = &batch::batch_status(s.store.as_ref(), &s.bucket, "same").await.unwrap().results[0];
    let lambda_out = &lambda_result.outputs[0].object;
    let lambda_bytes = s.store.get(&lambda_out.bucket, &lambda_out.key).await.unwrap();

    // The same job on the embedded default, through the worker loop.
    let dir = tempfile::tempdir().unwrap();
    let home = pixq_jobs::local::LocalHome::new(dir.path());
    let store = Arc::new(home.store());
    let queue = Arc::new(home.queue(Default::default()).unwrap());
    let mut job = jobs[0].clone();
    job.input.bucket = pixq_jobs::local::LOCAL_BUCKET.into();
    job.output.bucket = pixq_jobs::local::LOCAL_BUCKET.into();
    store.put(&job.input.bucket, &job.input.key, input, "image/jpeg").await.unwrap();
    batch::enqueue(queue.as_ref(), std::slice::from_ref(&job), false).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let w = tokio::spawn(pixq_jobs::worker::run(queue.clone(), store.clone(), Default::default(), stop.clone()));
    let local_result = loop {
        let st = batch::batch_status(store.as_ref(), &job.output.bucket, "same").await.unwrap();
        if let Some(r) = st.results.into_iter().next() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    w.await.unwrap();
    let local_out = &local_result.outputs[0].object;
    assert_eq!(local_out.key, lambda_out.key, "same content-addressed key");
    assert!(
        store.get(&local_out.bucket, &local_out.key).await.unwrap() == lambda_bytes,
        "outputs differ between runtimes"
    );
}

/// A drop-in upload too large for the function: the function plans it from the header,
/// forwards the job to the heavy queue instead of decoding it (the message is done), and the
/// `pixq-worker` binary there processes it; the
/// record says where it ran and why it was forwarded. A small upload in the same batch of
/// records runs in the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_in_too_large_for_the_function_is_forwarded_and_done_on_the_heavy_queue() {
    let Some(cfg) = local_aws().await else { return };
    let s = stack(&cfg).await;
    let heavy_pair = pixq_testkit::queue_with_dlq(&cfg, false, 3).await;
    let heavy = Arc::new(SqsQueue::open(s.sqs.clone(), &heavy_pair.url, None).await.unwrap());
    notify_uploads(&cfg, &s).await;
    // 24 MP, full-size rotate: about 285 MB at its peak, over a 256 MB function's budget.
    s.store.put(&s.bucket, "uploads/big.jpg", jpeg(6000, 4000, 1), "image/jpeg").await.unwrap();
    s.store.put(&s.bucket, "uploads/small.jpg", jpeg(300, 200, 2), "image/jpeg").await.unwrap();
    let mut p = processor(&s, "rotate:90,format:jpeg");
    let fit = pixq_jobs::route::FunctionFit { memory_mb: 256, timeout: Duration::from_secs(60) };
    let mut config = (*p.config).clone();
    config.process.forward = Some(fit);
    config.forward_queue = Some(heavy.clone());
    p.config = Arc::new(config);
    // Both uploads' records (and S3's test event), as Lambda would deliver them; none is
    // reported failed, so the event source deletes them all.
    let event = event_from_queue(&s, 3).await;
    let resp = handle(&p, LambdaEvent::new(event, context(60_000))).await.unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{:?}", resp.batch_item_failures);

    // The small one ran in the function; the big one waits on the heavy queue, marked.
    let results = s.store.list(&s.bucket, "results/s3-").await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    let r: pixq_jobs::schema::JobResult =
        serde_json::from_slice(&s.store.get(&s.bucket, &results[0].key).await.unwrap()).unwrap();
    assert_eq!(
        (r.input.key.as_str(), r.runtime.as_deref(), r.forwarded.as_deref()),
        ("uploads/small.jpg", Some("lambda"), None)
    );
    let c = heavy.counts().await.unwrap();
    assert_eq!(c.visible, 1, "{c:?}");

    // The heavy queue's worker: the `pixq-worker` binary as EC2 runs it (no forwarding
    // there, a budget of its own), until the queue has stayed empty.
    let mut worker = std::process::Command::new(pixq_testkit::workspace_binary("pixq-worker"))
        .env("PIXQ_TARGET", "aws")
        .env("PIXQ_QUEUE_URL", &heavy_pair.url)
        .env("PIXQ_DLQ_URL", &heavy_pair.dlq_url)
        .env("PIXQ_BUCKET", &s.bucket)
        .env("PIXQ_MEMORY_MB", "2048")
        .env("PIXQ_WAIT_SECS", "1")
        .env("PIXQ_IDLE_STOP_SECS", "3")
        .env("PIXQ_EMF", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = worker.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = worker.kill();
            panic!("pixq-worker did not stop idle");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut logs = String::new();
    std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "pixq-worker: {status}: {logs}");
    let c = heavy.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight), (0, 0), "the heavy queue is drained: {c:?} {logs}");
    let results = s.store.list(&s.bucket, "results/s3-").await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    let mut big = None;
    for m in &results {
        let r: pixq_jobs::schema::JobResult =
            serde_json::from_slice(&s.store.get(&s.bucket, &m.key).await.unwrap()).unwrap();
        if r.input.key == "uploads/big.jpg" {
            big = Some(r);
        }
    }
    let big = big.expect("a record for the big upload");
    assert_eq!((big.status, big.runtime.as_deref()), (Status::Ok, Some("ec2")));
    let why = big.forwarded.as_deref().unwrap_or_default();
    assert!(why.starts_with("lambda: estimated peak") && why.contains("over the function's 160 MB budget"), "{why}");
    assert_eq!((big.outputs[0].width, big.outputs[0].height), (Some(4000), Some(6000)));
}
