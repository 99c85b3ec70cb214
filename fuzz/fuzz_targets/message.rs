//! Arbitrary text as a queue message: a pixq job, an S3 notification, or junk.
//! - parse_message never panics; every job it returns passes `Job::validate`, and every
//!   refused job carries an id valid as a record key;
//! - Job::from_json never panics; a job it accepts validates and survives a JSON round trip.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pixq_jobs::events::{Incoming, S3EventDefaults, parse_message};
use pixq_jobs::keys::validate_id;
use pixq_jobs::schema::{Job, OutputLocation};
use pixq_kernel::Pipeline;

/// `PIXQ_FUZZ_TRACE=1` prints what each input did (for checking seeds and triaging).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("PIXQ_FUZZ_TRACE").is_some());

static DEFAULTS: LazyLock<S3EventDefaults> = LazyLock::new(|| S3EventDefaults {
    recipe: pixq_kernel::Recipe::parse("thumbnail:256").unwrap(),
    output: OutputLocation { bucket: "out".into(), prefix: "outputs/".into() },
});

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if *TRACE {
        eprintln!("trace: parse_message: {:?}", parse_message(s, Some(&DEFAULTS)));
        eprintln!("trace: Job::from_json: {:?}", Job::from_json(s).map(|j| j.id));
    }

    if let Ok(Incoming::Jobs(jobs, refused)) = parse_message(s, Some(&DEFAULTS)) {
        for job in &jobs {
            if let Err(e) = job.validate() {
                panic!("parse_message returned a job that fails validate(): {e}: {job:?}");
            }
        }
        for r in &refused {
            if let Err(e) = validate_id("job id", &r.job.id) {
                panic!("refused job has an invalid id: {e}: {r:?}");
            }
        }
    }

    if let Ok(job) = Job::from_json(s) {
        if let Err(e) = job.validate() {
            panic!("Job::from_json accepted a job that fails validate(): {e}: {job:?}");
        }
        let json = job.to_json();
        match Job::from_json(&json) {
            Ok(back) => assert_eq!(back, job, "job JSON round trip through {json}"),
            Err(e) => panic!("{json} does not read back: {e}"),
        }
    }
});
