//! `pixq ec2` against moto's EC2 on 127.0.0.1 through the real SDK, and the bootstrap the
//! instances run, executed here in a scratch root with the AWS CLI and systemd stood in for,
//! ending with the installed worker processing a job from the heavy queue and stopping idle.
#![cfg(feature = "ec2")]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use base64::Engine;
use pixq_jobs::queue::Queue;
use pixq_jobs::store::ObjectStore;

/// Creates an instance profile on the local server (no IAM SDK here: a plain query call).
fn create_instance_profile(name: &str) {
    let ep = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let hostport = ep.trim_start_matches("http://").trim_end_matches('/').to_string();
    let body = format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08");
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(&hostport).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "CreateInstanceProfile: {resp}");
}

struct Stack {
    dir: tempfile::TempDir,
    outputs: PathBuf,
    bucket: String,
    queue_url: String,
    profile: String,
}

async fn stack(cfg: &aws_config::SdkConfig) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let (_, bucket) = pixq_testkit::bucket(cfg).await;
    let pair = pixq_testkit::queue_with_dlq(cfg, false, 3).await;
    let profile = pixq_testkit::unique("pixq-worker-profile");
    create_instance_profile(&profile);
    let outputs = serde_json::json!([
        {"OutputKey": "BucketName", "OutputValue": bucket},
        {"OutputKey": "HeavyQueueUrl", "OutputValue": pair.url},
        {"OutputKey": "HeavyDlqUrl", "OutputValue": pair.dlq_url},
        {"OutputKey": "WorkerInstanceProfileName", "OutputValue": profile},
    ]);
    let path = dir.path().join("stack.json");
    std::fs::write(&path, outputs.to_string()).unwrap();
    Stack { dir, outputs: path, bucket, queue_url: pair.url, profile }
}

/// The pixq-worker binary `cargo test --workspace` built next to pixq.
fn worker_binary() -> PathBuf {
    pixq_testkit::workspace_binary("pixq-worker")
}

/// Credentials pixq runs with here (the local server checks none): distinctive, so the test
/// can tell they never reach an instance.
const KEY_ID: &str = "AKIAPIXQTESTONLY0001";
const SECRET: &str = "pixq-test-secret-d41d8cd98f00b204";

fn pixq(stack: &Stack, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixq"))
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .args(["--target", "aws", "--stack-outputs", stack.outputs.to_str().unwrap(), "ec2"])
        .args(args)
        .output()
        .expect("run pixq")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn launched_ids(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("i-"))
        .map(String::from)
        .collect()
}

async fn user_data(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let a = ec2.describe_instance_attribute().instance_id(id).attribute(InstanceAttributeName::UserData).send();
    let v = a.await.unwrap().user_data().and_then(|u| u.value()).unwrap().to_string();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_list_and_terminate_a_fleet() {
    let Some(cfg) = pixq_testkit::sdk().await else { return };
    let st = stack(&cfg).await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let fleet = pixq_testkit::unique("fleet");
    let bin = worker_binary();
    let o =
        pixq(&st, &["launch", "--worker-binary", bin.to_str().unwrap(), "--count", "2", "--fleet", &fleet, "--spot"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("uploading"), "{t}");
    let ids = launched_ids(&o);
    assert_eq!(ids.len(), 2, "{t}");

    // The binary is in the bucket, content-addressed, byte for byte.
    let s3 = pixq_jobs::store::s3::S3Store::new(pixq_jobs::aws::s3_client(&cfg, true));
    let releases = s3.list(&st.bucket, "releases/").await.unwrap();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(s3.get(&st.bucket, &releases[0].key).await.unwrap(), std::fs::read(&bin).unwrap());

    // What the instances were started with.
    let d = ec2.describe_instances().set_instance_ids(Some(ids.clone())).send().await.unwrap();
    let instances: Vec<_> = d.reservations().iter().flat_map(|r| r.instances()).collect();
    assert_eq!(instances.len(), 2);
    let host_arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "x86_64" };
    for i in &instances {
        let id = i.instance_id().unwrap();
        let tags: Vec<(&str, &str)> = i.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
        assert!(tags.contains(&("pixq:fleet", fleet.as_str())), "{tags:?}");
        assert!(tags.contains(&("pixq:queue", st.queue_url.as_str())), "{tags:?}");
        let want_type = if host_arch == "arm64" { "c7g.xlarge" } else { "c7i.xlarge" };
        assert_eq!(i.instance_type().unwrap().as_str(), want_type);
        assert_eq!(i.architecture().map(|a| a.as_str()), Some(host_arch), "AMI of the binary's architecture");
        let md = i.metadata_options().unwrap();
        assert_eq!(md.http_tokens().unwrap().as_str(), "required", "IMDSv2 only");
        // moto reports the profile association on some instances of a launch only.
        if let Some(p) = i.iam_instance_profile() {
            assert!(p.arn().unwrap().ends_with(&st.profile), "{p:?}");
        }
        let sd = ec2
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .unwrap();
        assert_eq!(sd.instance_initiated_shutdown_behavior().and_then(|v| v.value()), Some("terminate"));
        let ud = user_data(&ec2, id).await;
        assert!(ud.contains(&format!("PIXQ_QUEUE_URL='{}'", st.queue_url)), "{ud}");
        assert!(ud.contains(&format!("PIXQ_WORKER_S3='s3://{}/{}'", st.bucket, releases[0].key)), "{ud}");
        assert!(ud.contains("PIXQ_IDLE_STOP_SECS='600'"), "{ud}");
        assert!(!ud.contains(SECRET) && !ud.contains(KEY_ID), "credentials in the user-data");
    }

    assert!(instances.iter().any(|i| i.iam_instance_profile().is_some()), "no instance profile attached");
    assert!(instances.iter().all(|i| i.instance_lifecycle().map(|l| l.as_str()) == Some("spot")), "not spot");

    // A second launch reuses the uploaded binary.
    let o = pixq(&st, &["launch", "--worker-binary", bin.to_str().unwrap(), "--fleet", &fleet]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("uploading"), "{}", text(&o));
    let all = [ids.clone(), launched_ids(&o)].concat();

    let o = pixq(&st, &["list", "--fleet", &fleet]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for id in &all {
        assert!(t.contains(id.as_str()), "{id} not listed: {t}");
    }
    // The same list as JSON, for scripts.
    let o = pixq(&st, &["list", "--fleet", &fleet, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let mut listed: Vec<&str> = v.as_array().unwrap().iter().filter_map(|i| i["id"].as_str()).collect();
    let mut want: Vec<&str> = all.iter().map(String::as_str).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want, "{v}");
    assert!(v.as_array().unwrap().iter().all(|i| i["state"].is_string() && i["lifecycle"].is_string()), "{v}");
    let o = pixq(&st, &["terminate", "--fleet", &fleet]);
    assert!(text(&o).contains("terminating 3 instances"), "{}", text(&o));
    let d = ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:pixq:fleet").values(&fleet).build())
        .send()
        .await
        .unwrap();
    for i in d.reservations().iter().flat_map(|r| r.instances()) {
        let state = i.state().and_then(|s| s.name()).unwrap().as_str().to_string();
        assert!(state == "shutting-down" || state == "terminated", "{state}");
    }
    let o = pixq(&st, &["list", "--fleet", &fleet]);
    assert!(text(&o).contains("no instances"), "{}", text(&o));
    // A binary that is not a Linux executable is refused before anything starts.
    let fake = st.dir.path().join("not-elf");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    let o = pixq(&st, &["launch", "--worker-binary", fake.to_str().unwrap(), "--fleet", &fleet]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no ELF header"), "{}", text(&o));
    // So is a setting with a newline in it (it would add variables to the worker's
    // environment file), naming the setting.
    let evil_url = format!("{}\nPIXQ_EVIL=1", st.queue_url);
    let o =
        pixq(&st, &["launch", "--worker-binary", bin.to_str().unwrap(), "--fleet", &fleet, "--queue-url", &evil_url]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("PIXQ_QUEUE_URL holds the control character '\\n'"), "{}", text(&o));
    let o = pixq(&st, &["list", "--fleet", &fleet]);
    assert!(text(&o).contains("no instances"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_launches_what_the_backlog_needs_and_no_more() {
    let Some(cfg) = pixq_testkit::sdk().await else { return };
    let st = stack(&cfg).await;
    let fleet = pixq_testkit::unique("scale");
    let q = pixq_jobs::queue::sqs::SqsQueue::open(pixq_jobs::aws::sqs_client(&cfg), &st.queue_url, None).await.unwrap();
    let entries: Vec<_> = (0..5).map(|i| (format!("job {i}"), Default::default())).collect();
    q.send_batch(&entries).await.unwrap();
    let bin = worker_binary();
    let scale = |max: &str| {
        pixq(
            &st,
            &["scale", "--worker-binary", bin.to_str().unwrap(), "--per-worker", "2", "--max", max, "--fleet", &fleet],
        )
    };
    let o = scale("10");
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("5 visible") && t.contains("wanted 3 -> launching 3"), "{t}");
    assert_eq!(launched_ids(&o).len(), 3, "{t}");
    // The fleet already covers the backlog.
    let o = scale("10");
    assert!(text(&o).contains("3 live; wanted 3 -> launching 0"), "{}", text(&o));
    assert!(launched_ids(&o).is_empty());
    let _ = pixq(&st, &["terminate", "--fleet", &fleet]);
    // The cap holds, and terminated instances do not count.
    let o = scale("2");
    assert!(text(&o).contains("0 live; wanted 2 -> launching 2"), "{}", text(&o));
    let _ = pixq(&st, &["terminate", "--fleet", &fleet]);
}

/// Stand-ins for what Amazon Linux has and this machine does not: the AWS CLI (copies the
/// object the bootstrap asks for out of a folder), systemctl, id and useradd (logged).
fn fake_tools(dir: &Path, objects: &Path, log: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = |name: &str, body: String| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    };
    let log = log.display();
    script(
        "aws",
        format!(
            "echo \"aws $*\" >> {log}\nsrc=''; dst=''\nfor a in \"$@\"; do case \"$a\" in s3://*) src=\"$a\";; -*|s3|cp|[a-z][a-z]-*-[0-9]) ;; *) dst=\"$a\";; esac; done\n\
             key=\"${{src#s3://*/}}\"\ncp \"{}/$key\" \"$dst\"",
            objects.display()
        ),
    );
    script("systemctl", format!("echo \"systemctl $*\" >> {log}"));
    script("useradd", format!("echo \"useradd $*\" >> {log}"));
    script("id", "exit 1".into());
    bin
}

/// The variables of a worker.env as systemd reads an EnvironmentFile (systemd.exec(5);
/// src/basic/env-file.c), for the one form the bootstrap writes: every value double-quoted on
/// its own line. Inside the quotes a backslash before `"`, `\`, `` ` `` or `$` stands for that
/// character and any other backslash stays. Any other form fails the test: an unquoted value,
/// text after the closing quote (systemd would append it), an unterminated quote.
fn read_env_file(text: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with(['#', ';'])) {
        let (key, rest) = line.split_once('=').unwrap_or_else(|| panic!("no '=' in {line:?}"));
        let mut chars = rest.strip_prefix('"').unwrap_or_else(|| panic!("unquoted value: {line:?}")).chars();
        let mut value = String::new();
        loop {
            match chars.next().unwrap_or_else(|| panic!("unterminated value: {line:?}")) {
                '"' => break,
                '\\' => match chars.next().unwrap_or_else(|| panic!("unterminated value: {line:?}")) {
                    c @ ('"' | '\\' | '`' | '$') => value.push(c),
                    c => value.extend(['\\', c]),
                },
                c => value.push(c),
            }
        }
        assert_eq!(chars.as_str(), "", "text after the closing quote: {line:?}");
        vars.push((key.to_string(), value));
    }
    vars
}

fn env_var<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
    vars.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_installs_the_worker_which_works_the_heavy_queue_then_stops_idle() {
    let Some(cfg) = pixq_testkit::sdk().await else { return };
    let st = stack(&cfg).await;
    let ec2 = aws_sdk_ec2::Client::new(&cfg);
    let fleet = pixq_testkit::unique("boot");
    let o = pixq(&st, &["launch", "--worker-binary", worker_binary().to_str().unwrap(), "--fleet", &fleet]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let id = launched_ids(&o).remove(0);
    // Exactly what the instance would receive.
    let script = user_data(&ec2, &id).await;
    let _ = pixq(&st, &["terminate", "--fleet", &fleet]);

    // The bucket's release objects, where the stand-in `aws s3 cp` finds them.
    let dir = st.dir.path();
    let s3 = pixq_jobs::store::s3::S3Store::new(pixq_jobs::aws::s3_client(&cfg, true));
    let objects = dir.join("objects");
    for m in s3.list(&st.bucket, "releases/").await.unwrap() {
        let p = objects.join(&m.key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, s3.get(&st.bucket, &m.key).await.unwrap()).unwrap();
    }
    let log = dir.join("calls.log");
    let fakebin = fake_tools(dir, &objects, &log);
    let root = dir.join("root");
    let user_data = dir.join("user-data");
    std::fs::write(&user_data, &script).unwrap();
    let path = format!("{}:{}", fakebin.display(), std::env::var("PATH").unwrap_or_default());
    let boot = Command::new("bash").arg(&user_data).env("PIXQ_BOOT_ROOT", &root).env("PATH", &path).output().unwrap();
    assert!(boot.status.success(), "bootstrap failed: {}", text(&boot));
    let installed = root.join("usr/local/bin/pixq-worker");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(worker_binary()).unwrap());
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains("useradd --system"), "{calls}");
    assert!(calls.contains("systemctl enable --now pixq-worker.service"), "{calls}");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/pixq-worker.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/pixq-worker") && unit.contains("User=pixq"), "{unit}");
    assert!(unit.contains("SuccessExitStatus=75") && unit.contains(r#"if [ "$EXIT_STATUS" = 75 ]; then"#), "{unit}");
    // A worker that cannot start is restarted a few times, then the machine powers off:
    // start limits (read from [Unit] only) and the oneshot that OnFailure= starts.
    let unit_section = unit.split("[Service]").next().unwrap();
    for want in ["Restart=on-failure", "RestartSec=5"] {
        assert!(unit.contains(want), "{want}: {unit}");
    }
    for want in ["StartLimitIntervalSec=300", "StartLimitBurst=5", "OnFailure=pixq-worker-poweroff.service"] {
        assert!(unit_section.contains(want), "{want} not in [Unit]: {unit}");
    }
    let poweroff = std::fs::read_to_string(root.join("etc/systemd/system/pixq-worker-poweroff.service")).unwrap();
    assert!(poweroff.contains("Type=oneshot"), "{poweroff}");
    assert!(poweroff.contains("\nExecStart=/usr/bin/systemctl --no-block poweroff\n"), "{poweroff}");
    assert!(!poweroff.contains("[Install]"), "started by OnFailure= only: {poweroff}");
    let env_file = std::fs::read_to_string(root.join("etc/pixq/worker.env")).unwrap();
    let env = read_env_file(&env_file);
    assert_eq!(env_var(&env, "PIXQ_QUEUE_URL"), Some(st.queue_url.as_str()), "{env_file}");
    assert_eq!(env_var(&env, "PIXQ_BUCKET"), Some(st.bucket.as_str()), "{env_file}");
    assert_eq!(env_var(&env, "PIXQ_IDLE_EXIT_CODE"), Some("75"), "{env_file}");

    // A tampered binary is refused.
    let release = std::fs::read_dir(objects.join("releases")).unwrap().next().unwrap().unwrap().path();
    let good = std::fs::read(&release).unwrap();
    std::fs::write(&release, b"\x7fELF tampered").unwrap();
    let bad = Command::new("bash").arg(&user_data).env("PIXQ_BOOT_ROOT", dir.join("root2")).env("PATH", &path).output();
    let bad = bad.unwrap();
    assert!(!bad.status.success() && text(&bad).contains("does not match its SHA-256"), "{}", text(&bad));
    // ... and a machine whose bootstrap failed powers itself off.
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.lines().last() == Some("systemctl --no-block poweroff"), "{calls}");
    std::fs::write(&release, good).unwrap();

    // A setting holding quotes, backslashes, `$` and backquotes arrives byte for byte and
    // adds no variable: the launcher quotes it for the shell, the bootstrap for systemd.
    const ODD: &str = r#"https://q/"x" \"PIXQ_EVIL=1\" C:\dir\ $HOME `id` 'single'"#;
    let bin = worker_binary();
    let o = pixq(&st, &["launch", "--dry-run", "--worker-binary", bin.to_str().unwrap(), "--queue-url", ODD]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let odd_script = dir.join("user-data-odd");
    std::fs::write(&odd_script, &o.stdout).unwrap();
    let root3 = dir.join("root3");
    let boot = Command::new("bash").arg(&odd_script).env("PIXQ_BOOT_ROOT", &root3).env("PATH", &path).output().unwrap();
    assert!(boot.status.success(), "bootstrap failed: {}", text(&boot));
    let odd_file = std::fs::read_to_string(root3.join("etc/pixq/worker.env")).unwrap();
    let escaped = r#"PIXQ_QUEUE_URL="https://q/\"x\" \\\"PIXQ_EVIL=1\\\" C:\\dir\\ \$HOME \`id\` 'single'""#;
    assert!(odd_file.lines().any(|l| l == escaped), "{odd_file}");
    let odd = read_env_file(&odd_file);
    assert_eq!(env_var(&odd, "PIXQ_QUEUE_URL"), Some(ODD), "{odd_file}");
    let keys = |vars: &[(String, String)]| vars.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&odd), keys(&env), "{odd_file}");

    // A newline, carriage return or tab in a setting (user-data not written by the launcher,
    // which refuses them) stops the bootstrap before it fetches or writes anything.
    for (i, bad) in ["\n", "\r", "\t"].into_iter().enumerate() {
        let line = format!("PIXQ_BUCKET='{}'", st.bucket);
        assert!(script.contains(&line), "{script}");
        let evil = script.replace(&line, &format!("PIXQ_BUCKET='{}{bad}PIXQ_EVIL=1'", st.bucket));
        let evil_script = dir.join(format!("user-data-evil{i}"));
        std::fs::write(&evil_script, evil).unwrap();
        let evil_root = dir.join(format!("root-evil{i}"));
        let o = Command::new("bash").arg(&evil_script).env("PIXQ_BOOT_ROOT", &evil_root).env("PATH", &path).output();
        let o = o.unwrap();
        assert!(!o.status.success(), "{bad:?} accepted: {}", text(&o));
        assert!(text(&o).contains("PIXQ_BUCKET contains a newline, carriage return or other control"), "{}", text(&o));
        assert!(!evil_root.join("etc/pixq/worker.env").exists(), "{bad:?}: an env file was written");
        assert!(!evil_root.join("usr/local/bin/pixq-worker").exists(), "{bad:?}: the binary was installed");
    }

    // "Boot": a job waits on the heavy queue; the installed worker, configured only by the
    // env file (the test's endpoint and keys stand in for the instance role), does it and
    // exits 75 once the queue has stayed empty.
    let img = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/coffee.jpg")).unwrap();
    s3.put(&st.bucket, "inputs/boot/coffee.jpg", img.clone(), "image/jpeg").await.unwrap();
    let out = pixq_jobs::schema::OutputLocation { bucket: st.bucket.clone(), prefix: "outputs/".into() };
    let input = pixq_jobs::schema::ObjectRef { bucket: st.bucket.clone(), key: "inputs/boot/coffee.jpg".into() };
    let pipeline = pixq_jobs::kernel::Pipeline::parse("thumbnail:64").unwrap();
    let job = pixq_jobs::batch::new_job("boot", 0, input, Some(pixq_jobs::keys::content_digest(&img)), &pipeline, &out);
    let q = pixq_jobs::queue::sqs::SqsQueue::open(pixq_jobs::aws::sqs_client(&cfg), &st.queue_url, None).await.unwrap();
    pixq_jobs::batch::enqueue(&q, std::slice::from_ref(&job), false).await.unwrap();
    let mut worker = Command::new(&installed);
    for (k, v) in &env {
        worker.env(k, v);
    }
    worker.env("PIXQ_WAIT_SECS", "1").env("PIXQ_IDLE_STOP_SECS", "3").env("PIXQ_EMF", "false");
    let started = std::time::Instant::now();
    let mut child = worker.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the worker never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut logs = String::new();
    child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert_eq!(status.code(), Some(75), "idle stop is exit 75: {logs}");
    let st_batch = pixq_jobs::batch::batch_status(&s3, &st.bucket, "boot").await.unwrap();
    assert_eq!(st_batch.ok(), 1, "{logs}");
    let c = q.counts().await.unwrap();
    assert_eq!((c.visible, c.in_flight), (0, 0), "{c:?}");
}

/// The group template.yaml defines, as moto can hold it: a launch template and a group of
/// minimum 0 on it. Returns the stack outputs with the group's name added.
async fn group_stack(cfg: &aws_config::SdkConfig, st: &Stack) -> (String, PathBuf) {
    use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
    use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
    let ec2 = aws_sdk_ec2::Client::new(cfg);
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    let ami = images.images().iter().find_map(|i| i.image_id()).unwrap().to_string();
    let lt = pixq_testkit::unique("pixq-worker-lt");
    ec2.create_launch_template()
        .launch_template_name(&lt)
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id(ami).instance_type(InstanceType::C7gXlarge).build(),
        )
        .send()
        .await
        .unwrap();
    let group = pixq_testkit::unique("pixq-workers");
    aws_sdk_autoscaling::Client::new(cfg)
        .create_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(0)
        .max_size(4)
        .availability_zones("us-east-1a")
        .launch_template(LaunchTemplateSpecification::builder().launch_template_name(&lt).version("$Latest").build())
        .tags(Tag::builder().key("pixq:fleet").value(&group).propagate_at_launch(true).build())
        .send()
        .await
        .unwrap();
    let mut outputs: serde_json::Value = serde_json::from_slice(&std::fs::read(&st.outputs).unwrap()).unwrap();
    let light = pixq_testkit::queue_with_dlq(cfg, false, 3).await;
    let more = outputs.as_array_mut().unwrap();
    more.push(serde_json::json!({"OutputKey": "WorkerGroupName", "OutputValue": group}));
    more.push(serde_json::json!({"OutputKey": "JobsQueueUrl", "OutputValue": light.url}));
    let path = st.dir.path().join("stack-group.json");
    std::fs::write(&path, outputs.to_string()).unwrap();
    (group, path)
}

fn pixq_with(outputs: &Path, args: &[&str]) -> Output {
    let mut all = vec!["ec2"];
    all.extend_from_slice(args);
    pixq_jobs_with(outputs, &all)
}

fn pixq_jobs_with(outputs: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixq"))
        .args(["--target", "aws", "--stack-outputs", outputs.to_str().unwrap()])
        .args(args)
        .output()
        .expect("run pixq")
}

/// `pixq submit --route ec2` of one sample: what it says of the worker group.
fn submit_heavy(outputs: &Path) -> String {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/coffee.jpg");
    let o = pixq_jobs_with(outputs, &["submit", sample.to_str().unwrap(), "--ops", "rotate:90", "--route", "ec2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("0 jobs to the Lambda function, 1 to the EC2 workers' heavy queue"), "{t}");
    t
}

async fn describe_group(cfg: &aws_config::SdkConfig, group: &str) -> aws_sdk_autoscaling::types::AutoScalingGroup {
    let d = aws_sdk_autoscaling::Client::new(cfg).describe_auto_scaling_groups().auto_scaling_group_names(group);
    d.send().await.unwrap().auto_scaling_groups()[0].clone()
}

/// The loader template.yaml gives the group's instances as user-data, with CloudFormation's
/// `!Sub` done for the given values.
fn template_loader(subs: &[(&str, &str)]) -> String {
    let t = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")).unwrap();
    let start = t.find("# pixq-loader begin").expect("loader begin marker");
    let line_start = t[..start].rfind('\n').unwrap() + 1;
    let indent = start - line_start;
    let end = t.find("# pixq-loader end").expect("loader end marker");
    let mut s = String::from("#!/bin/bash\n");
    for line in t[line_start..end].lines() {
        s.push_str(line.get(indent..).unwrap_or(""));
        s.push('\n');
    }
    for (k, v) in subs {
        s = s.replace(&format!("${{{k}}}"), v);
    }
    assert!(!s.contains("${"), "a !Sub variable is left: {s}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_goes_up_and_down_and_its_instances_boot_the_released_worker() {
    let Some(cfg) = pixq_testkit::sdk().await else { return };
    let st = stack(&cfg).await;
    let (group, outputs) = group_stack(&cfg, &st).await;
    let bin = worker_binary();

    // Nothing released yet: an instance would find nothing to run, so `up` refuses.
    let o = pixq_with(&outputs, &["up", "--desired", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no worker released"), "{}", text(&o));
    assert_eq!(describe_group(&cfg, &group).await.desired_capacity(), Some(0));
    let o = pixq_with(&outputs, &["up", "--worker-binary", bin.to_str().unwrap(), "--min", "3", "--max", "2"]);
    assert!(text(&o).contains("--min 3 is over --max 2"), "{}", text(&o));

    // Jobs wait; `up` releases the worker and sets the size.
    let q = pixq_jobs::queue::sqs::SqsQueue::open(pixq_jobs::aws::sqs_client(&cfg), &st.queue_url, None).await.unwrap();
    let entries: Vec<_> = (0..3).map(|i| (format!("job {i}"), Default::default())).collect();
    q.send_batch(&entries).await.unwrap();
    let o = pixq_with(&outputs, &["up", "--worker-binary", bin.to_str().unwrap(), "--max", "3", "--desired", "2"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("released releases/pixq-worker-") && t.contains(&format!("group {group}: desired 2 (min 0, max 3)")),
        "{t}"
    );
    assert!(t.contains("heavy queue: 3 waiting, 0 running"), "{t}");
    let g = describe_group(&cfg, &group).await;
    assert_eq!((g.min_size(), g.max_size(), g.desired_capacity()), (Some(0), Some(3), Some(2)));
    assert_eq!(g.instances().len(), 2, "{g:?}");

    let s3 = pixq_jobs::store::s3::S3Store::new(pixq_jobs::aws::s3_client(&cfg, true));
    let keys: Vec<String> = s3.list(&st.bucket, "releases/").await.unwrap().into_iter().map(|m| m.key).collect();
    let host_arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "x86_64" };
    assert_eq!(keys.len(), 3, "binary, bootstrap, pointer: {keys:?}");
    assert!(keys.contains(&format!("releases/current-{host_arch}.env")), "{keys:?}");
    let boot_key = keys.iter().find(|k| k.starts_with("releases/bootstrap-")).unwrap();
    assert_eq!(s3.get(&st.bucket, boot_key).await.unwrap(), pixq_worker::USER_DATA.as_bytes());

    // Status, for people and for scripts.
    let o = pixq_with(&outputs, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["desired"], 2, "{v}");
    assert_eq!(v["instances"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["queue"]["visible"], 3, "{v}");
    let ids: Vec<&str> = v["instances"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    let o = pixq_with(&outputs, &["status"]);
    for id in &ids {
        assert!(text(&o).contains(id), "{id}: {}", text(&o));
    }
    // Their instances carry the group's tag (propagated at launch).
    let d = aws_sdk_ec2::Client::new(&cfg)
        .describe_instances()
        .set_instance_ids(Some(ids.iter().map(|s| s.to_string()).collect()));
    let d = d.send().await.unwrap();
    for i in d.reservations().iter().flat_map(|r| r.instances()) {
        assert!(i.tags().iter().any(|t| t.key() == Some("pixq:fleet") && t.value() == Some(group.as_str())), "{i:?}");
    }

    // Heavy jobs queued while the group runs: the client says so.
    let t = submit_heavy(&outputs);
    assert!(t.contains(&format!("the worker group {group} has 2 worker(s) in service (desired 2)")), "{t}");

    // Down: to zero.
    let o = pixq_with(&outputs, &["down"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("scaling to zero"), "{}", text(&o));
    let g = describe_group(&cfg, &group).await;
    assert_eq!((g.min_size(), g.desired_capacity()), (Some(0), Some(0)));
    assert!(g.instances().is_empty(), "{g:?}");
    let o = pixq_with(&outputs, &["status"]);
    assert!(text(&o).contains("desired 0 (min 0, max 3), 0 instances"), "{}", text(&o));
    assert!(text(&o).contains("jobs wait and no worker runs"), "{}", text(&o));
    // Heavy jobs queued at zero: the client says the group is at zero and how long it takes.
    let t = submit_heavy(&outputs);
    assert!(t.contains(&format!("the worker group {group} is at zero: it scales out about 2 to 4 minutes")), "{t}");
    assert!(t.contains("`pixq ec2 up --desired N` starts workers at once"), "{t}");
    let o = pixq_with(&outputs, &["status", "--group", "no-such-group"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no Auto Scaling group named no-such-group"), "{}", text(&o));

    // An instance of the group boots: template.yaml's loader reads the pointer, checks and
    // runs the released bootstrap, which installs the released worker and, in a group, the
    // lifecycle watcher.
    let dir = st.dir.path();
    let objects = dir.join("objects");
    for k in &keys {
        let p = objects.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, s3.get(&st.bucket, k).await.unwrap()).unwrap();
    }
    let log = dir.join("calls.log");
    let fakebin = fake_tools(dir, &objects, &log);
    let path = format!("{}:{}", fakebin.display(), std::env::var("PATH").unwrap_or_default());
    let loader = template_loader(&[
        ("HeavyQueue", &st.queue_url),
        ("AWS::Region", "us-east-1"),
        ("ImagesBucket", &st.bucket),
        ("AWS::StackName", "pixq"),
        ("WorkerDrainSeconds", "300"),
        ("WorkerIdleStopSeconds", "0"),
    ]);
    let loader_path = dir.join("loader.sh");
    std::fs::write(&loader_path, &loader).unwrap();
    let boot = |root: &Path| {
        Command::new("bash").arg(&loader_path).env("PIXQ_BOOT_ROOT", root).env("PATH", &path).output().unwrap()
    };
    let root = dir.join("asg-root");
    let o = boot(&root);
    assert!(o.status.success(), "loader failed: {}", text(&o));
    assert_eq!(std::fs::read(root.join("usr/local/bin/pixq-worker")).unwrap(), std::fs::read(&bin).unwrap());
    let env = read_env_file(&std::fs::read_to_string(root.join("etc/pixq/worker.env")).unwrap());
    assert_eq!(env_var(&env, "PIXQ_QUEUE_URL"), Some(st.queue_url.as_str()));
    assert_eq!(env_var(&env, "PIXQ_ASG_NAME"), Some("pixq-workers"));
    assert_eq!(env_var(&env, "PIXQ_IDLE_STOP_SECS"), None, "idle stop 0 is off: the group scales in");
    let watcher = std::fs::read_to_string(root.join("etc/systemd/system/pixq-lifecycle.service")).unwrap();
    assert!(watcher.contains("ExecStart=/usr/local/lib/pixq/lifecycle-watch"), "{watcher}");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains(&format!("s3://{}/releases/current-{host_arch}.env", st.bucket)), "{calls}");
    assert!(calls.contains("systemctl enable --now pixq-lifecycle.service"), "{calls}");

    // A tampered bootstrap, and a pointer with a value of another form, are refused, and the
    // machine powers off instead of running anything.
    let boot_file = objects.join(boot_key);
    let good = std::fs::read(&boot_file).unwrap();
    std::fs::write(&boot_file, b"#!/bin/bash\ntouch /tmp/pwned\n").unwrap();
    let o = boot(&dir.join("asg-root2"));
    assert!(!o.status.success() && text(&o).contains("bootstrap does not match its SHA-256"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().last(), Some("systemctl --no-block poweroff"));
    std::fs::write(&boot_file, good).unwrap();
    let pointer = objects.join(format!("releases/current-{host_arch}.env"));
    let good = std::fs::read_to_string(&pointer).unwrap();
    let evil = good
        .lines()
        .map(
            |l| if l.starts_with("PIXQ_BOOTSTRAP_S3=") { format!("{l}$(touch /tmp/pixq-evil)") } else { l.to_string() },
        )
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&pointer, evil).unwrap();
    let o = boot(&dir.join("asg-root3"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!dir.join("asg-root3/usr/local/bin/pixq-worker").exists());
    std::fs::write(&pointer, good).unwrap();

    // The lifecycle watcher: nothing while the instance is in service; when the group
    // terminates it, the worker is stopped (SIGTERM) before the lifecycle action completes.
    let state = dir.join("lifecycle-state");
    std::fs::write(&state, "InService").unwrap();
    let imds = dir.join("imdsbin");
    std::fs::create_dir_all(&imds).unwrap();
    let curl = imds.join("curl");
    std::fs::write(
        &curl,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do url=\"$a\"; done\ncase \"$url\" in\n  */api/token) echo tok ;;\n  \
             */meta-data/instance-id) echo i-0pixq ;;\n  */meta-data/autoscaling/target-lifecycle-state) cat {} ;;\n  \
             *) exit 22 ;;\nesac\n",
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&curl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let helper_path = format!("{}:{path}", imds.display());
    let lib = root.join("usr/local/lib/pixq");
    std::fs::write(&log, "").unwrap();
    let mut watch = Command::new(lib.join("lifecycle-watch"))
        .env("PATH", &helper_path)
        .env("PIXQ_WATCH_SECS", "0.1")
        .env("PIXQ_ASG_NAME", "pixq-workers")
        .env("AWS_REGION", "us-east-1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(watch.try_wait().unwrap().is_none(), "the watcher left an instance in service");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "", "acted on an instance in service");
    std::fs::write(&state, "Terminated").unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the watcher did not act on Terminated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let calls: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    assert_eq!(calls[0], "systemctl stop pixq-worker.service", "{calls:?}");
    assert!(
        calls[1].starts_with("aws autoscaling complete-lifecycle-action")
            && calls[1].contains(
                "--auto-scaling-group-name pixq-workers --lifecycle-hook-name pixq-drain --instance-id i-0pixq"
            )
            && calls[1].contains("--lifecycle-action-result CONTINUE"),
        "{calls:?}"
    );

    // An idle stop: a group member leaves the group (decremented, so not replaced); at the
    // group's minimum (the call refused) the worker starts again; a lone instance powers off.
    let idle = |asg: &str, aws_rc: &str| {
        std::fs::write(&log, "").unwrap();
        let aws = imds.join("aws");
        std::fs::write(&aws, format!("#!/bin/sh\necho \"aws $*\" >> {}\nexit {aws_rc}\n", log.display())).unwrap();
        std::fs::set_permissions(&aws, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let o = Command::new(lib.join("on-idle"))
            .env("PATH", &helper_path)
            .env("PIXQ_ASG_NAME", asg)
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read_to_string(&log).unwrap()
    };
    let calls = idle("pixq-workers", "0");
    assert!(calls.contains("terminate-instance-in-auto-scaling-group --region us-east-1 --instance-id i-0pixq --should-decrement-desired-capacity"), "{calls}");
    assert!(!calls.contains("poweroff") && !calls.contains("systemctl"), "{calls}");
    let calls = idle("pixq-workers", "1");
    assert!(calls.ends_with("systemctl --no-block start pixq-worker.service\n"), "{calls}");
    let calls = idle("", "0");
    assert_eq!(calls, "systemctl --no-block poweroff\n");
}
