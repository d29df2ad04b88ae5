//! References, parsed the way docker does, and which registries speak plain HTTP.

use std::net::IpAddr;

use oci_client::Reference;

use crate::Error;

/// Parses `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` with docker's defaults: registry `docker.io`,
/// `library/` for single names, tag `latest`.
pub fn parse_reference(text: &str) -> Result<Reference, Error> {
    text.parse::<Reference>()
        .map_err(|e| Error::InvalidReference {
            reference: text.to_owned(),
            reason: e.to_string(),
        })
}

/// Whether `registry` (`host[:port]`) is on this machine, where docker and oras speak plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        // `[::1]:5000`
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                registry
            }
        }),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_defaults_apply() {
        let r = parse_reference("hello").unwrap();
        assert_eq!(r.whole(), "docker.io/library/hello:latest");
        let r = parse_reference("localhost:5000/hello:v1").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "hello", Some("v1"))
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = parse_reference(&format!("127.0.0.1:5000/a/b@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d));
    }

    #[test]
    fn bad_references_say_what_is_expected() {
        for bad in [
            "",
            "Hello/World",
            "localhost:5000/hello:",
            "a b",
            "x@sha256:zz",
        ] {
            let err = parse_reference(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected [REGISTRY/]REPOSITORY"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for yes in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "ghcr.io:443",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
