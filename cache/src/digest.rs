//! Content digests (`sha256:<64 hex>`), validated before they become paths.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A validated `sha256` content digest.
///
/// Only lowercase hex of the right length is accepted, so a digest taken from a
/// registry can be turned into a file name without any risk of path traversal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The algorithm prefix this cache stores.
    pub const ALGORITHM: &'static str = "sha256";

    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Digest and length of everything `reader` yields, read in 1 MiB pieces.
    pub fn of_reader(reader: impl std::io::Read) -> std::io::Result<(Self, u64)> {
        Self::of_reader_with(reader, &mut vec![0; 1 << 20])
    }

    /// [`Digest::of_reader`] reading through `buf`, which the caller reuses from one file to
    /// the next: a fresh megabyte zeroed per file cost more than hashing a small blob.
    pub(crate) fn of_reader_with(
        mut reader: impl std::io::Read,
        buf: &mut [u8],
    ) -> std::io::Result<(Self, u64)> {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            let n = match reader.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok((Self::from_hasher(hasher), total));
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 lowercase hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl Digest {
    /// `s` as a digest, when it is one (`sha256:` and 64 lowercase hex characters); its
    /// `FromStr` (in `error`, which names the refusal) is built on this.
    pub(crate) fn parse(s: &str) -> Option<Digest> {
        let (algorithm, hex) = s.split_once(':')?;
        if algorithm != Self::ALGORITHM
            || hex.len() != 64
            || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        Some(Self {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Self::ALGORITHM, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rejects_anything_that_could_escape_a_directory() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn round_trips_through_its_string_form() {
        let d = Digest::of(b"wasm");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }
}
