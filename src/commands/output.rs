//! What every verb's output says the same way: key fingerprints, times, verified signatures.

/// A key's fingerprint as every output shows it: `sha256:HEX`, as `key generate` prints it.
pub(super) fn fingerprint(hex: &str) -> String {
    format!("sha256:{hex}")
}

/// A time in seconds since the Unix epoch as JSON shows every time: RFC 3339, in UTC.
pub(super) fn rfc3339(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
    )
    .to_string()
}

/// A signature a policy verified, as the JSON of every verb shows it.
#[derive(Debug, serde::Serialize)]
pub(super) struct Verified {
    key_fingerprint: String,
    identity: String,
    verified_at: String,
}

impl From<&wasm_oci_cache::Verdict> for Verified {
    fn from(v: &wasm_oci_cache::Verdict) -> Self {
        Verified {
            key_fingerprint: fingerprint(&v.key_fingerprint),
            identity: v.identity.clone(),
            verified_at: rfc3339(v.verified_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_and_fingerprints_say_their_hash() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_780_000_000), "2026-05-28T20:26:40Z");
        assert_eq!(fingerprint("ab"), "sha256:ab");
    }
}
