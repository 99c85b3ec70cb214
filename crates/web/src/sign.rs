//! HMAC-SHA256 signatures for the URLs the server hands out or accepts: on-the-fly image
//! paths (`/img/{signature}/{pipeline}/{key}`, imgproxy-style) and the local upload URLs
//! that stand in for presigned S3 PUTs. A signature covers every part that decides what is
//! served or written, each part length-prefixed so no two inputs sign alike.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Smallest accepted key, bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// A signing key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// A key that cannot sign.
#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(String);

impl Signer {
    /// A signer with `key` (at least [`MIN_KEY_BYTES`]).
    pub fn new(key: &[u8]) -> Result<Signer, KeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError(format!("needs at least {MIN_KEY_BYTES} bytes, got {}", key.len())));
        }
        Ok(Signer { key: key.to_vec() })
    }

    /// A random key, hex (for a key file).
    pub fn random_key_hex() -> String {
        pixq_jobs::ids::random_hex(4)
    }

    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m
    }

    /// The URL-safe signature of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(parts).finalize().into_bytes())
    }

    /// Whether `signature` is the signature of `parts` (constant-time comparison).
    pub fn verify(&self, parts: &[&[u8]], signature: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(signature.as_bytes()) else { return false };
        self.mac(parts).verify_slice(&raw).is_ok()
    }

    /// The path of an on-the-fly image: `/img/{sig}/{pipeline}/{key}[?expires=T]`. The
    /// pipeline (or `preset:NAME`) and the key are written as given (the key's `/` kept).
    pub fn img_path(&self, pipeline: &str, key: &str, expires: Option<i64>) -> String {
        let exp = expires.map(|e| e.to_string()).unwrap_or_default();
        let sig = self.sign(&[b"img", pipeline.as_bytes(), key.as_bytes(), exp.as_bytes()]);
        let pipe = encode_segment(pipeline);
        let key_path: Vec<String> = key.split('/').map(encode_segment).collect();
        match expires {
            Some(e) => format!("/img/{sig}/{pipe}/{}?expires={e}", key_path.join("/")),
            None => format!("/img/{sig}/{pipe}/{}", key_path.join("/")),
        }
    }

    /// Whether `sig` signs an image request.
    pub fn verify_img(&self, pipeline: &str, key: &str, expires: Option<i64>, sig: &str) -> bool {
        let exp = expires.map(|e| e.to_string()).unwrap_or_default();
        self.verify(&[b"img", pipeline.as_bytes(), key.as_bytes(), exp.as_bytes()], sig)
    }
}

/// Percent-encodes what a path segment cannot hold as is (RFC 3986 unreserved and a few
/// sub-delimiters pass; `,` and `:` pass because pipelines are made of them).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,:=;@!$&'()*+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_every_part_and_resist_tampering() {
        let s = Signer::new(b"0123456789abcdef0123").unwrap();
        let sig = s.sign(&[b"a", b"bc"]);
        assert!(s.verify(&[b"a", b"bc"], &sig));
        assert!(!s.verify(&[b"ab", b"c"], &sig), "parts are length-prefixed");
        assert!(!s.verify(&[b"a", b"bd"], &sig));
        assert!(!s.verify(&[b"a", b"bc"], "not base64 !"));
        let mut flipped = sig.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        assert!(!s.verify(&[b"a", b"bc"], std::str::from_utf8(&flipped).unwrap()));
        let other = Signer::new(b"another key of 16+ bytes").unwrap();
        assert!(!other.verify(&[b"a", b"bc"], &sig));
        assert!(Signer::new(b"short").is_err());
    }

    #[test]
    fn image_paths_encode_and_verify() {
        let s = Signer::new(b"0123456789abcdef").unwrap();
        let p = s.img_path("thumbnail:200,format:webp", "photos/a b.jpg", None);
        assert!(p.starts_with("/img/") && p.ends_with("/thumbnail:200,format:webp/photos/a%20b.jpg"), "{p}");
        let sig = p.split('/').nth(2).unwrap();
        assert!(s.verify_img("thumbnail:200,format:webp", "photos/a b.jpg", None, sig));
        assert!(!s.verify_img("thumbnail:201,format:webp", "photos/a b.jpg", None, sig));
        assert!(!s.verify_img("thumbnail:200,format:webp", "photos/a b.jpg", Some(1), sig));
        let e = s.img_path("preset:thumb", "k.png", Some(2_000_000_000));
        assert!(e.ends_with("?expires=2000000000"), "{e}");
    }
}
