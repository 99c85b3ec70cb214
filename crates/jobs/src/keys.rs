//! Object-key layout and validation.
//!
//! ```text
//! inputs/<batch>/<name>             uploaded originals
//! outputs/<dd>/<digest>.<ext>       results, content-addressed (<dd>: first two hex digits,
//!                                   so no folder or listing grows with the whole history)
//! results/<batch>/<job id>.json     one record per finished job
//! ```
//! The output digest is SHA-256 over the input's content digest, the canonical pipeline and
//! the kernel version: a duplicate delivery or an identical re-submission lands on the same
//! key, so it can be skipped or rewritten with identical bytes.

use sha2::{Digest, Sha256};

/// Why a key or an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} '{value}': {reason}")]
pub struct KeyError {
    /// What was being validated (key, bucket, id).
    pub what: &'static str,
    /// The offending value (truncated).
    pub value: String,
    /// Why.
    pub reason: &'static str,
}

fn key_err(what: &'static str, value: &str, reason: &'static str) -> KeyError {
    KeyError { what, value: value.chars().take(120).collect(), reason }
}

/// Longest accepted key, as on S3.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks an object key: relative, no `..` or `.` segments, no empty segments, no NUL or
/// control characters, at most 1024 bytes. Nothing that passes can escape a store's root.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(key_err("key", key, "empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(key_err("key", key, "longer than 1024 bytes"));
    }
    if key.starts_with('/') || key.starts_with('\\') {
        return Err(key_err("key", key, "absolute paths are not keys"));
    }
    if key.chars().any(|c| c == '\0' || c.is_control() || c == '\\') {
        return Err(key_err("key", key, "contains NUL, a control character or a backslash"));
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err(key_err("key", key, "empty path segment")),
            "." | ".." => return Err(key_err("key", key, "'.' and '..' segments are not allowed")),
            s if s.len() > 255 => return Err(key_err("key", key, "a path segment is longer than 255 bytes")),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a bucket (or local container) name: 1-63 of `a-z 0-9 . -`, as S3 allows.
pub fn validate_bucket(bucket: &str) -> Result<(), KeyError> {
    let ok_chars = bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if bucket.is_empty() || bucket.len() > 63 || !ok_chars || bucket.starts_with('.') || bucket.contains("..") {
        return Err(key_err("bucket", bucket, "must be 1-63 characters of a-z, 0-9, '.', '-'"));
    }
    Ok(())
}

/// Checks a job or batch id: 1-128 of `A-Z a-z 0-9 . _ -`.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), KeyError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && id != "."
        && id != "..";
    if ok { Ok(()) } else { Err(key_err(what, id, "must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'")) }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The content address of an input: BLAKE3 of its bytes, as `blake3:<hex>`. BLAKE3 hashes
/// several times faster than SHA-256 on one core (its vector code hashes many blocks at
/// once), and the worker hashes every input it reads that came without a digest. Digests
/// named `sha256:<hex>` (an older client, another submitter) are still checked.
pub fn content_digest(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// SHA-256 of bytes, hex (release files checked by `sha256sum` on the machines).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Digest naming an output: input digest + canonical pipeline + kernel version.
pub fn output_digest(input_digest: &str, canonical_pipeline: &str, kernel_version: &str) -> String {
    let mut h = Sha256::new();
    for part in [input_digest, canonical_pipeline, kernel_version] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex(&h.finalize()[..16])
}

/// Key prefix of every output with this digest (`<prefix><dd>/<digest>.`): the extension
/// follows.
pub fn output_key_stem(prefix: &str, digest: &str) -> String {
    format!("{prefix}{}/{digest}.", &digest[..2.min(digest.len())])
}

/// Key of the result record for a job.
pub fn result_key(batch: &str, job_id: &str) -> String {
    format!("results/{batch}/{job_id}.json")
}

/// Prefix under which a batch's result records live.
pub fn results_prefix(batch: &str) -> String {
    format!("results/{batch}/")
}

/// Prefix under which a batch's inputs are uploaded.
pub fn inputs_prefix(batch: &str) -> String {
    format!("inputs/{batch}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a/",
            "nul\0",
            "tab\there",
            "a\\b",
            &"x".repeat(1025),
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "inputs/b-1/photo 1.jpg", "x/y/z.png", "über/ファイル.jpg", "..a/b..", ".hidden"] {
            assert!(validate_key(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn buckets_and_ids() {
        assert!(validate_bucket("pixq-local").is_ok());
        assert!(validate_bucket("Bad_Bucket").is_err());
        assert!(validate_bucket("").is_err());
        assert!(validate_id("job id", "b-20261130.x_1").is_ok());
        assert!(validate_id("job id", "a/b").is_err());
        assert!(validate_id("job id", "..").is_err());
    }

    #[test]
    fn output_digest_depends_on_every_part() {
        let a = output_digest("sha256:aa", "thumbnail:10", "k1");
        assert_eq!(a.len(), 32);
        assert_eq!(a, output_digest("sha256:aa", "thumbnail:10", "k1"));
        assert_ne!(a, output_digest("sha256:ab", "thumbnail:10", "k1"));
        assert_ne!(a, output_digest("sha256:aa", "thumbnail:11", "k1"));
        assert_ne!(a, output_digest("sha256:aa", "thumbnail:10", "k2"));
        // The published test values of each algorithm for "abc".
        assert_eq!(content_digest(b"abc"), "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
