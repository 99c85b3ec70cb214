//! The `pixq` binary end to end on the embedded default, in temporary folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

fn pixq(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixq")).arg("--home").arg(home).args(args).output().expect("run pixq")
}

/// `pixq --json process INPUT --ops thumbnail:32 --out OUT`.
fn process_json(home: &Path, input: &Path, out: &Path) -> Output {
    pixq(home, &["--json", "process", input.to_str().unwrap(), "--ops", "thumbnail:32", "--out", out.to_str().unwrap()])
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn image_dims(p: &Path) -> (u32, u32, pixq_jobs::kernel::Format) {
    let bytes = std::fs::read(p).unwrap();
    let probe = pixq_jobs::kernel::codec::probe(&bytes, &Default::default()).unwrap();
    let (w, h) = probe.oriented_dims();
    (w, h, probe.format)
}

/// Keys of the input copies in a home's store.
fn uploaded_inputs(home: &Path) -> Vec<String> {
    let store = pixq_jobs::local::LocalHome::new(home).store();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let list = rt.block_on(pixq_jobs::store::ObjectStore::list(&store, "pixq", "inputs/")).unwrap();
    list.into_iter().map(|m| m.key).collect()
}

#[test]
fn process_the_samples_then_again_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let o = pixq(
        &home,
        &[
            "process",
            samples().to_str().unwrap(),
            "--ops",
            "thumbnail:200,format:png",
            "--out",
            out.to_str().unwrap(),
            "--workers",
            "2",
        ],
    );
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("8 ok (0 reused"), "{stdout}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "astronaut.png",
            "chelsea-av1.png",
            "chelsea-hevc.png",
            "chelsea-orient6.png",
            "chelsea-pan.png",
            "chelsea.png",
            "coffee.png",
            "rocket.png"
        ]
    );
    for n in &names {
        let (w, h, f) = image_dims(&out.join(n));
        // The animation's first frame is 160x120: thumbnails do not enlarge.
        let want = if n == "chelsea-pan.png" { 160 } else { 200 };
        assert_eq!((w.max(h), f), (want, pixq_jobs::kernel::Format::Png), "{n}");
    }
    // EXIF orientation applied: the rotated sample comes out landscape like its twin.
    assert_eq!(image_dims(&out.join("chelsea-orient6.png")).0, 200);
    assert!(uploaded_inputs(&home).is_empty(), "inputs left in the store: {:?}", uploaded_inputs(&home));

    let out2 = dir.path().join("out2");
    let o = pixq(
        &home,
        &["process", samples().to_str().unwrap(), "--ops", "thumbnail:200,format:png", "--out", out2.to_str().unwrap()],
    );
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("8 ok (8 reused"), "second run recomputed something: {stdout}");
    for n in &names {
        assert_eq!(std::fs::read(out.join(n)).unwrap(), std::fs::read(out2.join(n)).unwrap(), "{n}");
    }
}

#[test]
fn a_bad_image_fails_alone_and_the_exit_code_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(samples().join("coffee.jpg"), input.join("coffee.jpg")).unwrap();
    std::fs::write(input.join("notes.jpg"), "just text pretending to be a photo").unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", "grayscale", "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 ok") && stdout.contains("1 failed"), "{stdout}");
    assert!(stdout.contains("notes.jpg: not a supported image"), "{stdout}");
    assert!(out.join("coffee.jpg").exists());
    let batch = stdout.lines().find_map(|l| l.strip_prefix("batch ")).unwrap().to_string();
    // The good input's copy is gone from the store (its result is out), the failed one stays
    // for a redrive.
    assert_eq!(uploaded_inputs(&home), [format!("inputs/{batch}/00001-notes.jpg")]);

    let o = pixq(&home, &["status", &batch]);
    let (stdout, _) = text(&o);
    assert!(stdout.contains("2 jobs, 1 ok") && stdout.contains("1 failed, 0 pending"), "{stdout}");
    assert!(stdout.contains("1 dead-lettered"), "{stdout}");
    let o = pixq(&home, &["dlq", "list"]);
    let (stdout, _) = text(&o);
    assert!(stdout.contains("notes.jpg") && stdout.contains("not a supported image"), "{stdout}");
    let fetched = dir.path().join("fetched");
    let o = pixq(&home, &["fetch", &batch, "--out", fetched.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "fetch of a batch with failures exits 1");
    assert!(fetched.join("coffee.jpg").exists());
    let o = pixq(&home, &["dlq", "redrive"]);
    assert!(text(&o).0.contains("moved 1 messages"), "{:?}", text(&o));
}

#[test]
fn clear_errors_for_bad_invocations() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let missing = dir.path().join("nope");
    let o = pixq(&home, &["process", missing.to_str().unwrap(), "--ops", "invert", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no such file or folder"), "{:?}", text(&o));

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = pixq(&home, &["process", empty.to_str().unwrap(), "--ops", "invert", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no images found"), "{:?}", text(&o));

    let o = pixq(
        &home,
        &[
            "process",
            samples().to_str().unwrap(),
            "--ops",
            "thumbnail:10,grayscale,blur:-1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("step 3 'blur:-1': sigma must be > 0"), "{:?}", text(&o));

    let o = pixq(&home, &["status", "b-unknown"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("unknown batch"), "{:?}", text(&o));
}

#[test]
fn submit_then_status_shows_pending_and_ops_lists_steps() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = pixq(&home, &["submit", samples().join("coffee.jpg").to_str().unwrap(), "--ops", "thumbnail:100"]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let batch = stdout.trim();
    let o = pixq(&home, &["status", batch]);
    let (stdout, _) = text(&o);
    assert!(
        stdout.contains("1 jobs, 0 ok") && stdout.contains("1 pending") && stdout.contains("1 visible"),
        "{stdout}"
    );
    let o = pixq(&home, &["ops"]);
    let (stdout, _) = text(&o);
    for step in ["resize:W:H", "thumbnail:N", "smartcrop:W:H", "sobel", "format:F"] {
        assert!(stdout.contains(step), "{step} missing from `pixq ops`");
    }
    assert!(stdout.contains("Animated GIF/WebP stay animated") && stdout.contains("1000 frames"), "{stdout}");
}

/// Jobs are queued largest input first (file size standing for work), so the last jobs a
/// batch starts are its shortest and the lanes finish together.
#[test]
fn a_batch_is_queued_largest_input_first() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let o = pixq(&home, &["submit", samples().to_str().unwrap(), "--ops", "thumbnail:100"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let queue = pixq_jobs::local::LocalHome::new(&home).queue(Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut sizes = Vec::new();
    loop {
        let got = rt
            .block_on(pixq_jobs::queue::Queue::receive(
                &queue,
                10,
                std::time::Duration::from_secs(60),
                std::time::Duration::ZERO,
            ))
            .unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            let job: pixq_jobs::schema::Job = serde_json::from_str(&m.body).unwrap();
            // inputs/<batch>/<index>-<file name>
            let name = job.input.key.rsplit('/').next().unwrap().split_once('-').unwrap().1.to_string();
            sizes.push((std::fs::metadata(samples().join(&name)).unwrap().len(), name));
        }
    }
    assert_eq!(sizes.len(), 8, "{sizes:?}");
    assert!(sizes.windows(2).all(|w| w[0].0 >= w[1].0), "not largest first: {sizes:?}");
}

/// Runs pixq with a small tmpfs mounted on `mount` (a private mount in a user namespace, so
/// no privileges are needed); the last line of stdout lists what was left on that disk.
/// `None` when this machine does not allow that.
fn pixq_on_small_disk(mount: &Path, size: &str, args: &[&str]) -> Option<Output> {
    std::fs::create_dir_all(mount).unwrap();
    let unshare = |inner: &[&str]| {
        Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" || exit 99; m=\"$2\"; shift 2; \"$@\"; rc=$?; \
                 echo; echo \"left: $(cd \"$m\" && ls -A | tr '\\n' ' ')\"; exit $rc",
            )
            .arg("sh")
            .arg(size)
            .arg(mount)
            .args(inner)
            .output()
    };
    match unshare(&["true"]) {
        Ok(o) if o.status.success() => {}
        other => {
            eprintln!("skipped: no private tmpfs mounts here ({other:?})");
            return None;
        }
    }
    let mut all = vec![env!("CARGO_BIN_EXE_pixq")];
    all.extend_from_slice(args);
    Some(unshare(&all).expect("run pixq under unshare"))
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let samples = samples.to_str().unwrap();
    // 1. The home (queue + store) on a 200 KiB disk: uploading the samples (1 MB) fails.
    let small = dir.path().join("small");
    let home = small.join("home");
    let out = dir.path().join("out");
    let args = ["--home", home.to_str().unwrap(), "process", samples, "--ops", "thumbnail:100", "--out"];
    let Some(o) = pixq_on_small_disk(&small, "200k", &[&args[..], &[out.to_str().unwrap()]].concat()) else {
        return;
    };
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("no space left on the device while writing inputs/"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // 2. The home on a roomy disk, `--out` on a 40 KiB one: the jobs finish, writing the
    // results fails with the batch id to fetch later, and no truncated image is left.
    let home = dir.path().join("home");
    let small_out = dir.path().join("small-out");
    let args = ["--home", home.to_str().unwrap(), "process", samples, "--ops", "thumbnail:300,format:png", "--out"];
    let o = pixq_on_small_disk(&small_out, "40k", &[&args[..], &[small_out.to_str().unwrap()]].concat()).unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let left = stdout.lines().last().unwrap_or_default();
    assert!(!left.contains(".png") && left.starts_with("left:"), "a partial image was left behind: {left}");
    let batch = stderr
        .split("collect it with `pixq fetch ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no batch id to fetch later in: {stderr}"));
    // Nothing was lost: the batch is complete in the store and fetches to a roomy folder.
    let out = dir.path().join("later");
    let o = pixq(&home, &["fetch", batch, "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 8, "{stdout}");
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        // Thumbnails do not enlarge: the 160x120 animation stays that size.
        let want = if p.ends_with("chelsea-pan.png") { 160 } else { 300 };
        assert_eq!(image_dims(&p).0.max(image_dims(&p).1), want, "{}", p.display());
    }
}

/// Issue 8, item 5: the user's own files. `--out` being the photos' own folder replaces
/// nothing without `--overwrite`; names are assigned from the whole input list (a failed
/// `d1/a.jpg` keeps `a.jpg`, a good `d2/a.jpg` gets `a-2.jpg`) and `status` shows them; a
/// name too long for the file system is shortened; a symlink planted where a temporary
/// file might go is never followed.
#[test]
fn the_users_files_are_never_replaced_and_names_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let original = std::fs::read(samples().join("coffee.jpg")).unwrap();
    std::fs::write(photos.join("coffee.jpg"), &original).unwrap();
    let o =
        pixq(&home, &["process", photos.to_str().unwrap(), "--ops", "thumbnail:50", "--out", photos.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("already exist") && stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::read(photos.join("coffee.jpg")).unwrap(), original, "the original was touched");
    // With --overwrite the user asked for it.
    let o = pixq(
        &home,
        &[
            "process",
            photos.to_str().unwrap(),
            "--ops",
            "thumbnail:50",
            "--out",
            photos.to_str().unwrap(),
            "--overwrite",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(image_dims(&photos.join("coffee.jpg")).0, 50);

    // d1/a.jpg is broken, d2/a.jpg is good, plus a name of 246 bytes.
    let (d1, d2) = (dir.path().join("d1"), dir.path().join("d2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::write(d1.join("a.jpg"), b"not an image at all").unwrap();
    std::fs::write(d2.join("a.jpg"), &original).unwrap();
    let long = format!("{}.jpg", "x".repeat(242));
    std::fs::write(d2.join(&long), &original).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Symlinks where a careless temporary file would go point at a file that must survive.
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    for n in ["a-2.png", "a.png"] {
        std::os::unix::fs::symlink(&victim, out.join(format!(".{n}.pixq-partial"))).unwrap();
    }
    let o = pixq(
        &home,
        &[
            "process",
            d1.to_str().unwrap(),
            d2.to_str().unwrap(),
            "--ops",
            "thumbnail:40,format:png",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("d1/a.jpg: not a supported image"), "{stdout}");
    assert!(!out.join("a.png").exists(), "the failed d1/a.jpg owns a.png; nothing may be written there");
    assert_eq!(image_dims(&out.join("a-2.png")).0, 40, "d2/a.jpg is a-2.png");
    let long_out: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("xxxx"))
        .collect();
    assert_eq!(long_out.len(), 1, "the long name was written once: {long_out:?}");
    assert!(long_out[0].len() <= 200 && long_out[0].ends_with(".png"), "{long_out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    // `status` lists every input with its output name.
    let batch = stdout.lines().find_map(|l| l.strip_prefix("batch ")).unwrap();
    let (stdout, _) = text(&pixq(&home, &["status", batch]));
    assert!(stdout.contains("d1/a.jpg -> a.png") && stdout.contains("d2/a.jpg -> a-2.png"), "{stdout}");
    // Fetching again into the same folder: its files are this batch's outputs already, so
    // nothing is replaced and nothing refused; the victim is still not touched.
    let o = pixq(&home, &["fetch", batch, "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "one job failed: {:?}", text(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let o = pixq(&home, &["fetch", batch, "--out", out.to_str().unwrap(), "--overwrite"]);
    assert_eq!(o.status.code(), Some(1), "one job failed: {:?}", text(&o));
}

/// CLI conventions: `--json` for status, dlq list and the summary of process; shell
/// completions; a timeout exits 124 (the jobs stay queued), not 130 (interrupted).
#[test]
fn json_output_completions_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(samples().join("coffee.jpg"), input.join("coffee.jpg")).unwrap();
    std::fs::write(input.join("notes.jpg"), "not an image").unwrap();
    let out = dir.path().join("out");
    let o = process_json(&home, &input, &out);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert_eq!((v["images"].as_u64(), v["ok"].as_u64(), v["failed"].as_u64()), (Some(2), Some(1), Some(1)), "{v}");
    assert!(v["failures"][0]["reason"].as_str().unwrap().contains("not a supported image"), "{v}");
    let batch = v["batch"].as_str().unwrap().to_string();

    let o = pixq(&home, &["status", &batch, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((s["ok"].as_u64(), s["failed"].as_u64(), s["pending"].as_u64()), (Some(1), Some(1), Some(0)), "{s}");
    let coffee = s["files"].as_array().unwrap().iter().find(|f| f["output"] == "coffee.jpg").unwrap();
    assert_eq!((coffee["state"].as_str(), coffee["width"].as_u64()), (Some("ok"), Some(32)), "{s}");
    assert_eq!(s["queue"]["dead"].as_u64(), Some(1));
    // The timeline: each stage ends after the one before.
    let t = &v["timeline"];
    let order = ["planned", "submitted", "outputs_placed", "records_read", "fetched", "inputs_removed"];
    let at: Vec<f64> = order.iter().map(|k| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"))).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{t}");
    assert!(at[5] <= v["seconds"].as_f64().unwrap(), "{v}");

    // Fetching again into the same folder: the files there are this batch's own outputs,
    // so nothing is refused; a file that differs is.
    let o = pixq(&home, &["fetch", &batch, "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "the batch has a failed job: {:?}", text(&o));
    assert!(text(&o).0.contains("fetched 1 outputs"), "{:?}", text(&o));
    std::fs::write(out.join("coffee.jpg"), "mine").unwrap();
    let o = pixq(&home, &["fetch", &batch, "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("already exist"), "{:?}", text(&o));
    assert_eq!(std::fs::read(out.join("coffee.jpg")).unwrap(), b"mine");

    let o = pixq(&home, &["dlq", "list", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert!(d[0]["reason"].as_str().unwrap().contains("not a supported image"), "{d}");

    let o = pixq(&home, &["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(script.contains("_pixq") && script.contains("--overwrite"), "{script}");

    // No workers and no patience: the jobs stay queued and the exit code says "timed out".
    let o = pixq(
        &home,
        &[
            "process",
            input.to_str().unwrap(),
            "--ops",
            "thumbnail:16",
            "--out",
            dir.path().join("o2").to_str().unwrap(),
            "--workers",
            "0",
            "--timeout-secs",
            "0",
        ],
    );
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(stderr.contains("timed out") && stderr.contains("pixq fetch"), "{stderr}");
}

/// Variants: one job per image, every variant's file as `<stem>.<variant>.<ext>` (stems
/// kept apart when two inputs share one), a second run reuses them all, `pixq fetch`
/// writes the same files, and bad variant lists are refused before anything is queued.
#[test]
fn variants_come_out_as_named_files_from_one_job_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let (home, input, out) = (dir.path().join("home"), dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(samples().join("coffee.jpg"), input.join("a.jpg")).unwrap();
    std::fs::copy(samples().join("astronaut.png"), input.join("a.png")).unwrap();
    let ops = "small=thumbnail:120;large=thumbnail:400,format:webp;grey=grayscale,thumbnail:64,format:png";
    let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", ops, "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 images") && stdout.contains("2 x 3 variants written"), "{stdout}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a-2.grey.png", "a-2.large.webp", "a-2.small.png", "a.grey.png", "a.large.webp", "a.small.jpg"]);
    use pixq_jobs::kernel::Format;
    assert_eq!(image_dims(&out.join("a.small.jpg")).2, Format::Jpeg);
    assert_eq!(image_dims(&out.join("a.large.webp")).0.max(image_dims(&out.join("a.large.webp")).1), 400);
    assert_eq!(image_dims(&out.join("a-2.grey.png")).0.max(image_dims(&out.join("a-2.grey.png")).1), 64);
    let batch = stdout.lines().find_map(|l| l.strip_prefix("batch ")).unwrap().to_string();

    // Status lists every file of a job.
    let o = pixq(&home, &["status", &batch]);
    let (stdout, _) = text(&o);
    assert!(stdout.contains("a.small.jpg, a.large.webp, a.grey.png"), "{stdout}");

    // Again: all reused; fetch writes the same bytes.
    let out2 = dir.path().join("out2");
    let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", ops, "--out", out2.to_str().unwrap()]);
    assert!(text(&o).0.contains("2 ok (2 reused"), "{:?}", text(&o));
    let out3 = dir.path().join("out3");
    let o = pixq(&home, &["fetch", &batch, "--out", out3.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    for n in &names {
        let first = std::fs::read(out.join(n)).unwrap();
        assert_eq!(first, std::fs::read(out2.join(n)).unwrap(), "{n}");
        assert_eq!(first, std::fs::read(out3.join(n)).unwrap(), "{n}");
    }
    // A file in the way of one variant: refused, nothing replaced.
    let out4 = dir.path().join("out4");
    std::fs::create_dir(&out4).unwrap();
    std::fs::write(out4.join("a.large.webp"), b"mine").unwrap();
    let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", ops, "--out", out4.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(std::fs::read(out4.join("a.large.webp")).unwrap(), b"mine");

    for (bad, why) in [
        ("small=thumbnail:120;small=thumbnail:400", "given twice"),
        ("../up=thumbnail:120", "variant name"),
        ("small=thumbnail:120;thumbnail:400", "name=steps"),
        ("a=thumbnail:0", "in variant 'a'"),
    ] {
        let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", bad, "--out", out4.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {:?}", text(&o));
        assert!(text(&o).1.contains(why), "{bad}: {:?}", text(&o));
    }
}

/// An animated GIF through the whole command: animated GIF and animated WebP out (frames,
/// loop kept), a still where the format holds no animation, and a missing frame as a
/// recorded failure.
#[test]
fn animations_stay_animated_through_the_whole_command() {
    use pixq_jobs::kernel::{Format, anim::scan};
    let dir = tempfile::tempdir().unwrap();
    let (home, input, out) = (dir.path().join("home"), dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(samples().join("chelsea-pan.gif"), input.join("pan.gif")).unwrap();
    let ops = "gif=thumbnail:80;webp=thumbnail:80,format:webp;still=thumbnail:80,format:png";
    let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", ops, "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    for (name, format) in [("pan.gif.gif", Format::Gif), ("pan.webp.webp", Format::Webp)] {
        let bytes = std::fs::read(out.join(name)).unwrap();
        let a = scan(&bytes, format).unwrap_or_else(|| panic!("{name} is not animated"));
        assert_eq!((a.frames, a.plays), (4, 0), "{name}");
        assert_eq!(image_dims(&out.join(name)), (80, 60, format), "{name}");
    }
    assert_eq!(image_dims(&out.join("pan.still.png")), (80, 60, Format::Png));
    // A frame the file does not have: a recorded failure naming what it has.
    let out2 = dir.path().join("out2");
    let o = pixq(&home, &["process", input.to_str().unwrap(), "--ops", "frame:5", "--out", out2.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{stdout}");
    assert!(format!("{stdout}{stderr}").contains("only 4 frames"), "{stdout}\n{stderr}");
    // The frame limit, set lower than the file: a recorded failure naming the limit; the
    // same file as a still is within it.
    let out3 = dir.path().join("out3");
    let args = ["process", input.to_str().unwrap(), "--max-frames", "3", "--out", out3.to_str().unwrap()];
    let o = pixq(&home, &[&args[..], &["--ops", "thumbnail:40"]].concat());
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(format!("{stdout}{stderr}").contains("over the limit of 3 frames"), "{stdout}\n{stderr}");
    let o = pixq(&home, &[&args[..], &["--ops", "thumbnail:40,format:png"]].concat());
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

/// HEIC and AVIF photos (as phones and cameras write them) through the whole command: a
/// HEIC comes out as JPEG by default, an AVIF as AVIF.
#[test]
fn heic_and_avif_photos_come_out_with_their_default_formats() {
    use pixq_jobs::kernel::Format;
    let dir = tempfile::tempdir().unwrap();
    let (home, input, out) = (dir.path().join("home"), dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(samples().join("chelsea-hevc.heic"), input.join("IMG_0001.HEIC")).unwrap();
    std::fs::copy(samples().join("chelsea-av1.avif"), input.join("b.avif")).unwrap();
    let o =
        pixq(&home, &["process", input.to_str().unwrap(), "--ops", "thumbnail:100", "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(image_dims(&out.join("IMG_0001.jpg")), (100, 67, Format::Jpeg));
    assert_eq!(image_dims(&out.join("b.avif")).2, Format::Avif);
}

/// `pixq watermark add|list` and a pipeline that uses the mark; bad marks are refused when
/// they are added.
#[test]
fn watermarks_are_added_listed_and_laid_on_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    use pixq_jobs::kernel::{Channels, Format, OutputSpec, Raster};
    let mark = Raster::from_fn(30, 10, Channels::Rgba, |_, _, p| p.copy_from_slice(&[0, 255, 0, 255]));
    let mark_path = dir.path().join("mark.png");
    std::fs::write(&mark_path, pixq_jobs::kernel::encode(&mark, Format::Png, &OutputSpec::default()).unwrap()).unwrap();
    let o = pixq(&home, &["watermark", "add", "logo", mark_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.contains("watermark logo: 30x10 png"), "{:?}", text(&o));
    let o = pixq(&home, &["watermark", "list"]);
    assert!(text(&o).0.starts_with("logo "), "{:?}", text(&o));

    let o = pixq(
        &home,
        &[
            "process",
            samples().join("coffee.jpg").to_str().unwrap(),
            "--ops",
            "thumbnail:200,watermark:logo:northwest,format:png",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let img = pixq_jobs::kernel::decode(&std::fs::read(out.join("coffee.png")).unwrap(), &Default::default()).unwrap();
    assert_eq!(img.pixel(3, 3), &[0, 255, 0]);

    // A job naming a mark that was never added: a recorded failure that says where to put it.
    let o = pixq(
        &home,
        &[
            "process",
            samples().join("coffee.jpg").to_str().unwrap(),
            "--ops",
            "watermark:nope",
            "--out",
            dir.path().join("out2").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).0.contains("watermark 'nope' not found"), "{:?}", text(&o));

    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    for (args, why) in [
        (vec!["watermark", "add", "Logo", mark_path.to_str().unwrap()], "must be 1 to 64"),
        (vec!["watermark", "add", "../x", mark_path.to_str().unwrap()], "must be 1 to 64"),
        (vec!["watermark", "add", "junk", junk.to_str().unwrap()], "cannot be a watermark"),
    ] {
        let o = pixq(&home, &args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(text(&o).1.contains(why), "{args:?}: {:?}", text(&o));
    }
}

/// A manifest and records in a shared store are the store writer's words: `pixq fetch` and
/// `pixq status` refuse a manifest whose output names leave `--out` (a path, `..`, an
/// absolute name, a hidden or control-character name) and write nothing; a record naming
/// an output in another bucket is refused; sources that name devices are never opened.
#[test]
fn a_tampered_manifest_cannot_choose_where_fetch_writes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(samples().join("coffee.jpg"), input.join("coffee.jpg")).unwrap();
    let out = dir.path().join("out");
    let o = process_json(&home, &input, &out);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let batch = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["batch"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt
        .block_on(pixq_jobs::backend::open(&pixq_jobs::backend::Connect { home: home.clone(), ..Default::default() }))
        .unwrap();
    let bucket = backend.bucket.clone().unwrap();
    let original =
        rt.block_on(pixq_jobs::batch::read_manifest(backend.store.as_ref(), &bucket, &batch)).unwrap().unwrap();
    let evil = dir.path().join("evil.jpg");
    let out2 = dir.path().join("out2");
    for name in [
        evil.to_str().unwrap().to_string(),
        "../evil.jpg".into(),
        "./../evil.jpg".into(),
        "sub/evil.jpg".into(),
        ".bashrc".into(),
        "..".into(),
        "a\nb.jpg".into(),
    ] {
        let mut m = original.clone();
        m.jobs[0].output_name = Some(name.clone());
        rt.block_on(pixq_jobs::batch::write_manifest(backend.store.as_ref(), &bucket, &m)).unwrap();
        for args in [vec!["fetch", &batch, "--out", out2.to_str().unwrap(), "--overwrite"], vec!["status", &batch]] {
            let o = pixq(&home, &args);
            assert_eq!(o.status.code(), Some(2), "{name:?} {args:?}: {:?}", text(&o));
            assert!(text(&o).1.contains("not a plain file name"), "{name:?}: {:?}", text(&o));
        }
        assert!(!evil.exists() && !out2.exists(), "{name:?}: something was written");
    }
    // The same in a variant's file name.
    let mut m = original.clone();
    m.jobs[0].variant_files = vec!["../evil.small.jpg".into()];
    rt.block_on(pixq_jobs::batch::write_manifest(backend.store.as_ref(), &bucket, &m)).unwrap();
    assert_eq!(pixq(&home, &["fetch", &batch, "--out", out2.to_str().unwrap()]).status.code(), Some(2));
    // A record naming its output in another bucket: refused, nothing written.
    let mut r =
        rt.block_on(pixq_jobs::batch::batch_status(backend.store.as_ref(), &bucket, &batch)).unwrap().results.remove(0);
    let record_key = pixq_jobs::keys::result_key(&batch, &r.job_id);
    let record = rt.block_on(backend.store.get(&bucket, &record_key)).unwrap();
    r.outputs[0].object.bucket = "elsewhere".into();
    rt.block_on(pixq_jobs::batch::write_manifest(backend.store.as_ref(), &bucket, &original)).unwrap();
    rt.block_on(backend.store.put(&bucket, &record_key, serde_json::to_vec(&r).unwrap(), "application/json")).unwrap();
    let o = pixq(&home, &["fetch", &batch, "--out", out2.to_str().unwrap(), "--overwrite"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("names an output in bucket"), "{:?}", text(&o));
    assert!(std::fs::read_dir(&out2).map_or(true, |d| d.count() == 0), "something was written");
    rt.block_on(backend.store.put(&bucket, &record_key, record, "application/json")).unwrap();
    // An old manifest without names, whose source is a FIFO: fetched by name, never opened.
    let fifo = dir.path().join("pipe.jpg");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut m = original.clone();
    m.jobs[0].output_name = None;
    m.jobs[0].source = fifo.to_str().unwrap().to_string();
    rt.block_on(pixq_jobs::batch::write_manifest(backend.store.as_ref(), &bucket, &m)).unwrap();
    let o = pixq(&home, &["fetch", &batch, "--out", out2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(out2.join("pipe.jpg").is_file());
}

/// Inputs that are not image files of a sane size: a device or a FIFO named on the command
/// line is refused at once (it would be read forever, or block); a sparse terabyte in the
/// folder fails alone, for its size, without being read whole.
#[test]
fn devices_fifos_and_huge_sparse_files_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let fifo = dir.path().join("pipe.jpg");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for named in ["/dev/zero", fifo.to_str().unwrap()] {
        let o = pixq(&home, &["process", named, "--ops", "thumbnail:32", "--out", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{named}: {:?}", text(&o));
        assert!(text(&o).1.contains("not a regular file"), "{named}: {:?}", text(&o));
    }
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(samples().join("coffee.jpg"), input.join("coffee.jpg")).unwrap();
    std::fs::File::create(input.join("huge.jpg")).unwrap().set_len(1 << 40).unwrap();
    let o = process_json(&home, &input, &out);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["ok"].as_u64(), v["failed"].as_u64()), (Some(1), Some(1)), "{v}");
    assert!(v["failures"][0]["reason"].as_str().unwrap().contains("over the limit"), "{v}");
}

/// A folder's links are followed only to files inside it: one to a file elsewhere is
/// skipped (and said), one inside is taken, and a file named directly is taken wherever it is.
#[test]
fn links_out_of_a_folder_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(samples().join("coffee.jpg"), input.join("sub/coffee.jpg")).unwrap();
    let secret = dir.path().join("secret.jpg");
    std::fs::copy(samples().join("chelsea.jpg"), &secret).unwrap();
    std::os::unix::fs::symlink(&secret, input.join("cat.jpg")).unwrap();
    std::os::unix::fs::symlink(input.join("sub/coffee.jpg"), input.join("coffee.jpg")).unwrap();
    let out = dir.path().join("out");
    let o = process_json(&home, &input, &out);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"].as_u64(), Some(1), "{v}");
    assert!(out.join("coffee.jpg").is_file() && !out.join("cat.jpg").exists());
    assert!(text(&o).1.contains("skipped 1 link"), "{:?}", text(&o));
    let named = input.join("cat.jpg");
    let o = pixq(&home, &["process", named.to_str().unwrap(), "--ops", "thumbnail:32", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(out.join("cat.jpg").is_file());
}

#[test]
fn serve_facing_other_machines_needs_a_real_api_key_or_says_open() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // Refused before anything listens (nothing is bound in this test).
    for (args, says) in [
        (vec!["serve", "--bind", "0.0.0.0", "--port", "0"], "--open-writes"),
        (vec!["serve", "--bind", "::", "--port", "0", "--api-key", ""], "--open-writes"),
        (vec!["serve", "--bind", "0.0.0.0", "--port", "0", "--api-key", "short"], "at least 16"),
    ] {
        let o = pixq(&home, &args);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout}\n{stderr}");
        assert!(stderr.contains(says) && stderr.contains("--api-key"), "{args:?}: {stderr}");
        assert!(!stdout.contains("http://"), "{args:?} listened: {stdout}");
    }
}
