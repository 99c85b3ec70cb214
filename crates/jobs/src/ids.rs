//! Identifiers: random (from the OS's CSPRNG), sortable by time where it helps (batch ids).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 random bits from the operating system's CSPRNG (batch ids and the signing key are
/// secrets of a kind: reading a batch needs its id); should that fail, SipHash keyed by the
/// OS's random seed over a counter, the pid and the time.
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| mixed_u64())
}

fn mixed_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_i64(crate::clock::now_ms());
    h.finish()
}

/// `n` random 64-bit words as hex.
pub fn random_hex(words: usize) -> String {
    (0..words).map(|_| format!("{:016x}", random_u64())).collect()
}

/// A new batch id: UTC time then randomness, so `ls` sorts batches by age.
pub fn new_batch_id() -> String {
    let secs = crate::clock::now_ms() / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("b{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{}", rem / 3600, rem % 3600 / 60, rem % 60, &random_hex(1)[..8])
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn ids_differ() {
        let a: Vec<String> = (0..1000).map(|_| random_hex(2)).collect();
        let set: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), 1000);
        let b = new_batch_id();
        assert!(b.starts_with('b') && b.len() == 25, "{b}");
        crate::keys::validate_id("batch id", &b).unwrap();
    }
}
