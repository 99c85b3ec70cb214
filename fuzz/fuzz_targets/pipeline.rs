//! Arbitrary text through the pipeline parser and the pipeline's serde form.
//! - parse(s) = Ok(p)  =>  parse(p.canonical()) == Ok(p), and p survives a JSON round trip;
//! - serde_json::from_str::<Pipeline>(s) = Ok(q)  =>  q's canonical form parses back to q
//!   (deserialising applies the parser's checks).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pixq_kernel::Pipeline;

/// `PIXQ_FUZZ_TRACE=1` prints what each input did (for checking seeds and triaging).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("PIXQ_FUZZ_TRACE").is_some());

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if *TRACE {
        eprintln!("trace: parse: {:?}", Pipeline::parse(s).map(|p| p.canonical()));
        eprintln!("trace: serde: {:?}", serde_json::from_str::<Pipeline>(s).map(|p| p.canonical()));
    }

    if let Ok(p) = Pipeline::parse(s) {
        let canonical = p.canonical();
        assert_eq!(Pipeline::parse(&canonical), Ok(p.clone()), "canonical form {canonical:?} of {s:?}");
        let json = serde_json::to_string(&p).unwrap();
        let back: Pipeline = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
        assert_eq!(back, p, "JSON round trip through {json}");
    }

    if let Ok(q) = serde_json::from_str::<Pipeline>(s) {
        let canonical = q.canonical();
        assert_eq!(Pipeline::parse(&canonical), Ok(q), "canonical form {canonical:?} of deserialised {s:?}");
    }
});
