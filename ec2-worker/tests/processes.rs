//! The worker as a process: chaos (workers killed with SIGKILL and restarted while they run)
//! loses nothing, and SIGTERM during a long job ends with the job done or released, exit 0.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pixq_jobs::batch;
use pixq_jobs::kernel::{Channels, Format, OutputSpec, Pipeline, Raster};
use pixq_jobs::keys;
use pixq_jobs::local::{LOCAL_BUCKET, LocalHome};
use pixq_jobs::queue::Queue;
use pixq_jobs::queue::sqlite::QueueConfig;
use pixq_jobs::schema::{ObjectRef, OutputLocation, Status};
use pixq_jobs::store::ObjectStore;

fn worker(home: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pixq-worker"))
        .arg("--home")
        .arg(home)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pixq-worker")
}

fn sigterm(c: &Child) {
    let ok = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
}

fn wait_exit(c: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < within, "worker did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn submit(home: &LocalHome, batch_id: &str, images: Vec<Vec<u8>>, ops: &str) -> Vec<pixq_jobs::schema::Job> {
    let store = home.store();
    let out = OutputLocation { bucket: LOCAL_BUCKET.into(), prefix: "outputs/".into() };
    let mut jobs = Vec::new();
    for (i, bytes) in images.into_iter().enumerate() {
        let key = format!("inputs/{batch_id}/{i}.png");
        let digest = keys::content_digest(&bytes);
        store.put(LOCAL_BUCKET, &key, bytes, "image/png").await.unwrap();
        jobs.push(batch::new_job(
            batch_id,
            i,
            ObjectRef { bucket: LOCAL_BUCKET.into(), key },
            Some(digest),
            &Pipeline::parse(ops).unwrap(),
            &out,
        ));
    }
    jobs
}

fn png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let r = Raster::from_fn(w, h, Channels::Rgb, |x, y, p| {
        p.copy_from_slice(&[(x + seed) as u8, (y * 3 + seed / 256) as u8, (x ^ y ^ seed) as u8])
    });
    pixq_jobs::kernel::encode(&r, Format::Png, &OutputSpec { compression: Some(1), ..Default::default() }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_workers_one_killed_repeatedly_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = LocalHome::new(dir.path());
    let queue = home.queue(QueueConfig { max_receives: 50, ..QueueConfig::default() }).unwrap();
    let jobs = submit(
        &home,
        "chaos",
        (0..300).map(|i| png(480, 320, i)).collect(),
        "blur:3,thumbnail:48,grayscale,format:png",
    )
    .await;
    batch::enqueue(&queue, &jobs, false).await.unwrap();

    let args = ["--visibility-secs", "1", "--concurrency", "2", "--backoff-ms", "50", "--grace-secs", "5"];
    let mut workers: Vec<Child> = (0..3).map(|_| worker(dir.path(), &args)).collect();
    let store = home.store();
    let t = Instant::now();
    let mut kills = 0;
    loop {
        let n = store.list(LOCAL_BUCKET, &keys::results_prefix("chaos")).await.unwrap().len();
        if n == 300 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(150), "only {n} of 300 jobs finished");
        tokio::time::sleep(Duration::from_millis(100 + (kills % 3) * 50)).await;
        workers[0].kill().unwrap(); // SIGKILL
        workers[0].wait().unwrap();
        kills += 1;
        workers[0] = worker(dir.path(), &args);
    }
    // Give the last restarted worker time to install its signal handlers (a process killed
    // by SIGTERM before that point dies of it, as any process would).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for w in &workers {
        sigterm(w);
    }
    for w in &mut workers {
        let s = wait_exit(w, Duration::from_secs(20));
        assert!(s.success(), "worker exit status after SIGTERM: {s:?}");
    }

    let status = batch::batch_status(&store, LOCAL_BUCKET, "chaos").await.unwrap();
    assert_eq!((status.results.len(), status.ok()), (300, 300), "unreadable: {:?}", status.unreadable);
    let outputs = store.list(LOCAL_BUCKET, "outputs/").await.unwrap();
    assert_eq!(outputs.len(), 300, "exactly one output per job");
    for r in &status.results {
        let o = &r.outputs[0];
        let bytes = store.get(&o.object.bucket, &o.object.key).await.unwrap();
        let img = pixq_jobs::kernel::decode(&bytes, &Default::default()).unwrap();
        assert_eq!((img.width(), img.height(), img.channels()), (48, 32, Channels::Gray), "{}", r.job_id);
    }
    let c = queue.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight, c.delayed, c.dead), (0, 0, 0, 0));
    assert!(kills >= 5, "only {kills} kills happened: the run was too short to test much");
    let redelivered = status.results.iter().filter(|r| r.attempts > 1).count();
    let extra: u32 = status.results.iter().map(|r| r.attempts - 1).sum();
    println!("chaos: {kills} SIGKILLs, {redelivered} jobs finished on a redelivery ({extra} extra deliveries)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_job_finishes_it_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let home = LocalHome::new(dir.path());
    let queue = home.queue(QueueConfig::default()).unwrap();
    let jobs = submit(&home, "term", vec![png(2000, 1500, 1)], "blur:25,format:jpeg").await;
    batch::enqueue(&queue, &jobs, false).await.unwrap();
    let mut w = worker(dir.path(), &["--concurrency", "1", "--grace-secs", "60"]);
    let t = Instant::now();
    while queue.counts().await.unwrap().in_flight == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "the worker never picked the job up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&w);
    let status = wait_exit(&mut w, Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}");
    let st = batch::batch_status(&home.store(), LOCAL_BUCKET, "term").await.unwrap();
    let c = queue.counts().await.unwrap();
    assert_eq!(c.in_flight, 0);
    assert_eq!(st.ok() + c.visible as usize, 1, "the job must be done or back in the queue");
    assert_eq!(st.ok(), 1, "with a 60 s grace the job in hand should have completed");
    assert_eq!(st.results[0].status, Status::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_short_grace_releases_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let home = LocalHome::new(dir.path());
    let queue = home.queue(QueueConfig::default()).unwrap();
    // Minutes of kernel work on any machine: the worker can only exit in time if the
    // released job's kernel stops.
    let heavy = format!("{},format:jpeg", vec!["blur:80"; 24].join(","));
    let jobs = submit(&home, "rel", vec![png(3000, 2000, 2)], &heavy).await;
    batch::enqueue(&queue, &jobs, false).await.unwrap();
    let mut w = worker(dir.path(), &["--concurrency", "1", "--grace-secs", "0"]);
    let t = Instant::now();
    while queue.counts().await.unwrap().in_flight == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "the worker never picked the job up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&w);
    let status = wait_exit(&mut w, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let c = queue.counts().await.unwrap();
    let st = batch::batch_status(&home.store(), LOCAL_BUCKET, "rel").await.unwrap();
    assert_eq!((c.in_flight, c.visible, st.results.len()), (0, 1, 0), "released, not lost nor failed: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_on_sqs_and_s3_processes_jobs_and_s3_notifications() {
    let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") else {
        assert!(std::env::var_os("CI").is_none(), "CI must run the AWS tests: AWS_ENDPOINT_URL is not set");
        eprintln!("skipped: no AWS-protocol server (scripts/test.sh starts moto)");
        return;
    };
    assert!(ep.starts_with("http://127.0.0.1:") || ep.starts_with("http://localhost:"), "only loopback, not {ep}");
    use pixq_jobs::queue::sqs::SqsQueue;
    use pixq_jobs::store::s3::S3Store;
    let cfg = pixq_jobs::aws::sdk_config().await;
    let tag = &pixq_jobs::ids::random_hex(1)[..10];
    let bucket = format!("pixq-ec2-{tag}");
    let s3 = pixq_jobs::aws::s3_client(&cfg, true);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let sqs = pixq_jobs::aws::sqs_client(&cfg);
    let url =
        sqs.create_queue().queue_name(format!("heavy-{tag}")).send().await.unwrap().queue_url().unwrap().to_string();
    let store = S3Store::new(s3);
    let queue = SqsQueue::open(sqs, &url, None).await.unwrap();

    // One pixq job ...
    let out = OutputLocation { bucket: bucket.clone(), prefix: "outputs/".into() };
    let bytes = png(640, 480, 9);
    store.put(&bucket, "inputs/e/a.png", bytes.clone(), "image/png").await.unwrap();
    let job = batch::new_job(
        "e",
        0,
        ObjectRef { bucket: bucket.clone(), key: "inputs/e/a.png".into() },
        Some(keys::content_digest(&bytes)),
        &Pipeline::parse("thumbnail:64").unwrap(),
        &out,
    );
    batch::enqueue(&queue, std::slice::from_ref(&job), false).await.unwrap();
    // ... and an S3 ObjectCreated notification for a dropped file (URL-encoded key).
    store.put(&bucket, "uploads/my pic.png", png(300, 200, 10), "image/png").await.unwrap();
    let event = format!(
        r#"{{"Records":[{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","eventTime":"2026-11-30T00:00:00.000Z","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"uploads/my+pic.png","size":1}}}}}}]}}"#
    );
    queue.send(&event, &Default::default()).await.unwrap();

    let mut w = Command::new(env!("CARGO_BIN_EXE_pixq-worker"))
        .args([
            "--target",
            "aws",
            "--queue-url",
            &url,
            "--wait-secs",
            "1",
            "--s3-events-pipeline",
            "thumbnail:32,format:png",
            "--bucket",
            &bucket,
            "--emf",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let n = store.list(&bucket, "results/").await.unwrap().len();
        if n == 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "only {n} of 2 results");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(30)).success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(w.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let emf: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(emf.len(), 2, "one EMF record per job: {stdout}");
    assert!(emf.iter().all(|v| v["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "pixq" && v["Runtime"] == "ec2"));
    let st = batch::batch_status(&store, &bucket, "e").await.unwrap();
    assert_eq!(st.results[0].outputs[0].width, Some(64));
    let s3_results = store.list(&bucket, "results/s3-20261130/").await.unwrap();
    assert_eq!(s3_results.len(), 1);
    let r: pixq_jobs::schema::JobResult =
        serde_json::from_slice(&store.get(&bucket, &s3_results[0].key).await.unwrap()).unwrap();
    assert_eq!((r.input.key.as_str(), r.outputs[0].width), ("uploads/my pic.png", Some(32)));
    let c = pixq_jobs::queue::Queue::counts(&queue).await.unwrap();
    assert_eq!((c.visible, c.in_flight), (0, 0));
}

/// GET over plain HTTP/1.1 on loopback: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn sample(metrics: &str, series: &str) -> f64 {
    let line = metrics.lines().find(|l| l.rsplit_once(' ').map(|(n, _)| n) == Some(series));
    line.unwrap_or_else(|| panic!("no {series} in:\n{metrics}")).rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_during_a_run_show_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let home = LocalHome::new(dir.path());
    let queue = home.queue(QueueConfig::default()).unwrap();
    let mut images: Vec<Vec<u8>> = (0..3).map(|i| png(300, 200, i)).collect();
    images.push(b"\x89PNG\r\n\x1a\n not really".to_vec());
    let jobs = submit(&home, "met", images, "thumbnail:64").await;
    let mut w = Command::new(env!("CARGO_BIN_EXE_pixq-worker"))
        .arg("--home")
        .arg(dir.path())
        .args(["--concurrency", "2", "--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bound address is in the log; the rest of the log is drained so the worker never blocks.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = w.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("metrics on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the worker logged no metrics address");
    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // The server is up before the worker loop has set its lanes (a few milliseconds later).
    let t = Instant::now();
    let before = loop {
        let m = http_get(&addr, "/metrics").1;
        if sample(&m, "pixq_lanes") > 0.0 || t.elapsed() > Duration::from_secs(10) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sample(&before, "pixq_jobs_total{outcome=\"done\"}"), 0.0);
    assert_eq!(sample(&before, "pixq_lanes"), 2.0);

    batch::enqueue(&queue, &jobs, false).await.unwrap();
    let t = Instant::now();
    loop {
        let c = queue.counts().await.unwrap();
        if c.visible + c.in_flight == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "jobs not finished: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = http_get(&addr, "/metrics").1;
    assert_eq!(sample(&m, "pixq_jobs_total{outcome=\"done\"}"), 3.0, "{m}");
    assert_eq!(sample(&m, "pixq_jobs_total{outcome=\"failed\"}"), 1.0, "{m}");
    assert_eq!(sample(&m, "pixq_jobs_total{outcome=\"retried\"}"), 0.0, "{m}");
    assert_eq!(sample(&m, "pixq_messages_received_total"), 4.0, "{m}");
    assert_eq!(sample(&m, "pixq_stage_seconds_count{stage=\"decode\"}"), 3.0, "{m}");
    assert_eq!(sample(&m, "pixq_admission_wait_seconds_count"), 3.0, "{m}");
    assert_eq!(sample(&m, "pixq_lanes_busy"), 0.0, "{m}");
    assert_eq!(sample(&m, "pixq_memory_admitted_bytes"), 0.0, "{m}");
    assert_eq!(sample(&m, "pixq_receive_errors_total"), 0.0, "{m}");
    assert!(sample(&m, "pixq_stage_seconds_sum{stage=\"decode\"}") > 0.0, "{m}");
    assert_eq!(http_get(&addr, "/nope").0, 404);
    sigterm(&w);
    assert!(wait_exit(&mut w, Duration::from_secs(20)).success());
}
