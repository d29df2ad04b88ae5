//! References, parsed the way docker does; the one canonical form of a registry's name that
//! every comparison sees; the one `host[:port]` splitter; and which registries are this node's.

use std::net::IpAddr;

use oci_client::Reference;

use crate::Error;
use crate::address::{canonical_ip, embedded_ipv4};

/// Parses `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]` with docker's defaults: registry `docker.io`,
/// `library/` for single names, tag `latest`.
///
/// This follows the grammar of distribution's `reference` package, as `oci_client::Reference`'s
/// own parser does, without its regular expression: compiling that costs about 28 ms, ten times
/// a whole warm run of a module. It also accepts bracketed IPv6 hosts (`[::1]:5000/hello`).
pub fn parse_reference(text: &str) -> Result<Reference, Error> {
    let invalid = |reason: &str| Error::InvalidReference {
        reference: text.to_owned(),
        reason: reason.to_owned(),
    };
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    // skopeo's and containers-transports(5)'s spellings, and URLs, which docker does not take.
    for (prefix, hint) in [
        (
            "docker://",
            "drop the docker:// prefix (skopeo's transport name)",
        ),
        ("http://", "a reference has no scheme; drop http://"),
        ("https://", "a reference has no scheme; drop https://"),
        (
            "oci://",
            "an OCI layout is named oci:DIR[:TAG], with one colon and no slashes after it",
        ),
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let whole = if prefix == "oci://" {
                format!("oci:{rest}")
            } else {
                rest.to_owned()
            };
            return Err(invalid(&format!(
                "{hint}: {}",
                crate::text::printable(&whole)
            )));
        }
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (text, None),
    };
    if let Some(digest) = digest {
        check_digest(digest).map_err(invalid)?;
    }
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&rest[..colon], Some(&rest[colon + 1..]))
        }
        _ => (rest, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(invalid(
            "the tag must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ));
    }
    let valid = match name.split_once('/') {
        Some((domain, path)) if is_domain(domain) && is_path(path) => true,
        _ => is_path(name),
    };
    if !valid {
        return Err(invalid(if name.bytes().any(|b| b.is_ascii_uppercase()) {
            "the repository name must be lowercase"
        } else {
            "the repository name must be lowercase letters, digits and separators (. _ __ -) between slashes"
        }));
    }
    let (registry, repository) = split_domain(name).map_err(invalid)?;
    if repository.len() > NAME_MAX {
        return Err(invalid("the repository name is longer than 255 characters"));
    }
    let tag = tag
        .map(str::to_owned)
        .or_else(|| digest.is_none().then(|| "latest".to_owned()));
    Ok(match (tag, digest) {
        (Some(tag), None) => Reference::with_tag(registry, repository, tag),
        (None, Some(d)) => Reference::with_digest(registry, repository, d.to_owned()),
        (Some(tag), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, tag, d.to_owned())
        }
        (None, None) => unreachable!("a missing tag defaults to latest"),
    })
}

const NAME_MAX: usize = 255;

/// Docker's normalisation: the first component is a registry only if it looks like a host:
/// it has a dot, a port or brackets, is `localhost`, or has capitals (which no repository
/// name may have; oci-spec misses this last rule and prints names it cannot parse back).
/// The registry is then put in its one canonical form ([`canonical_registry`]).
fn split_domain(name: &str) -> Result<(String, String), &'static str> {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.starts_with('[')
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let domain = canonical_registry(&domain)?;
    if !(domain.contains(['.', ':', '[']) || domain == "localhost") {
        return Err(concat!(
            "the registry name must be lowercase (a host without a dot or a port, ",
            "written in capitals, would read as a Docker Hub namespace)"
        ));
    }
    if domain == "docker.io" && !remainder.contains('/') {
        return Ok((domain, format!("library/{remainder}")));
    }
    Ok((domain, remainder))
}

/// The names Docker Hub answers to besides `docker.io`.
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];

/// The one spelling of a registry name (`host[:port]`) that every comparison sees (policy
/// scopes, the cache's keys, the shim's allow list, credentials): the host in lowercase
/// (host names are case-insensitive), the port without leading zeros (`05000` connects to
/// `5000`), Docker Hub's other names as `docker.io`. A port that is empty or above 65535 is
/// refused. `host:443` stays as written (plain HTTP on 443 exists); comparisons that must
/// treat it as `host` use [`registry_key`].
pub fn canonical_registry(registry: &str) -> Result<String, &'static str> {
    let (host, port) = split_host_port(registry);
    let host = match host.strip_prefix('[') {
        Some(rest) => {
            let ip = rest.strip_suffix(']').ok_or(if rest.contains(']') {
                "the registry's IPv6 address must be followed by :PORT or '/'"
            } else {
                "the registry's IPv6 address has no closing ']'"
            })?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| "the registry's IPv6 address is not valid")?;
            // An IPv4-mapped address (`[::ffff:127.0.0.1]`, `[::ffff:7f00:1]`), and the other
            // spellings that connect to one IPv4 address (`canonical_ip`), is that address,
            // or a scope or allow list written for `127.0.0.1` would be escaped by another.
            match canonical_ip(IpAddr::V6(ip)) {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            }
        }
        None => {
            // As the connection will read it (reqwest parses URLs with the `url` crate):
            // a name in lowercase, an IPv4 address in any of its spellings as a.b.c.d.
            match url::Host::parse(host)
                .map_err(|_| "the registry's host is not a valid host name or address")?
            {
                url::Host::Domain(name) => name,
                url::Host::Ipv4(ip) => ip.to_string(),
                url::Host::Ipv6(ip) => format!("[{ip}]"),
            }
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the registry's port must be digits");
            }
            let trimmed = p.trim_start_matches('0');
            if trimmed.len() > 5 {
                return Err("the registry's port must be at most 65535");
            }
            let n: u32 = if trimmed.is_empty() {
                0
            } else {
                trimmed
                    .parse()
                    .map_err(|_| "the registry's port must be digits")?
            };
            if n > 65535 {
                return Err("the registry's port must be at most 65535");
            }
            Some(n)
        }
    };
    // Docker Hub speaks only HTTPS: its names with the port `https` implies are docker.io
    // too (whose API host the client knows; `docker.io:443` is no registry's).
    if matches!(port, None | Some(443))
        && (host == "docker.io" || DOCKER_HUB_ALIASES.contains(&host.as_str()))
    {
        return Ok("docker.io".to_owned());
    }
    Ok(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// The name under which a canonical registry is compared with policy scopes and allow lists:
/// `host:443` is `host`, the port `https` implies (a scope or allow entry for `host` must not
/// be escaped by writing the port out).
pub fn registry_key(registry: &str) -> &str {
    registry.strip_suffix(":443").unwrap_or(registry)
}

/// `host[:port]`: dot-separated labels of letters, digits and inner dashes, or `[ipv6]`.
fn is_domain(domain: &str) -> bool {
    let (host, port) = split_host_port(domain);
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    let host_ok = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.split('.').all(label),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

/// Slash-separated components of `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn is_path(path: &str) -> bool {
    path.split('/').all(|component| {
        let b = component.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(&b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(&b[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
                return false;
            }
        }
        true
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn is_tag(tag: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `algorithm:hex`, with the lengths of the algorithms registries use.
pub fn check_digest(digest: &str) -> Result<(), &'static str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("the digest must be ALGORITHM:HEX, e.g. sha256:<64 hex digits>");
    };
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("the digest algorithm must be sha256, sha384 or sha512"),
    };
    if hex.len() != expected || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("the digest has the wrong length or is not hex");
    }
    Ok(())
}

/// Whether `registry` (`host[:port]`) is on this machine, where docker and oras speak plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry_host(registry);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `registry` names a host of this node's own networks by address: loopback,
/// link-local (169.254.0.0/16, fe80::/10, where cloud metadata services answer) or
/// unspecified. A name that resolves to one is not caught here.
pub fn is_node_local(registry: &str) -> bool {
    let host = registry_host(registry);
    let local = |ip: IpAddr| {
        ip.is_loopback()
            || ip.is_unspecified()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            }
    };
    is_loopback(registry)
        || host.parse::<IpAddr>().is_ok_and(|ip| {
            local(canonical_ip(ip))
                || match ip {
                    IpAddr::V4(_) => false,
                    IpAddr::V6(v6) => embedded_ipv4(v6).into_iter().any(|v4| local(v4.into())),
                }
        })
}

/// The host of `registry` (`host[:port]` or `[v6]:port`), without the port (and without the
/// brackets of an IPv6 address).
pub fn registry_host(registry: &str) -> &str {
    let (host, port) = split_host_port(registry);
    if let Some(ip) = host.strip_prefix('[') {
        return ip.split(']').next().unwrap_or(ip);
    }
    match port {
        Some(port) if !port.bytes().all(|b| b.is_ascii_digit()) => registry,
        _ => host,
    }
}

/// The one `host[:port]` splitter: `registry.example:5000` is `("registry.example",
/// Some("5000"))`, `[::1]:5000` is `("[::1]", Some("5000"))` (brackets kept), a name without a
/// colon has no port. Nothing is validated here; [`canonical_registry`] does that.
pub fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if text.starts_with('[') {
        return match text.find(']') {
            Some(end) => match text[end + 1..].strip_prefix(':') {
                Some(port) => (&text[..=end], Some(port)),
                None => (text, None),
            },
            None => (text, None),
        };
    }
    match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
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

    /// The hand-written parser agrees with `oci_client::Reference`'s regular expression.
    #[test]
    fn agrees_with_the_oci_spec_parser() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let corpus = [
            "busybox",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "lowercase:Uppercase",
            "Uppercase:tag",
            "localhost/hello",
            "localhost:5000/hello:v1",
            "127.0.0.1:5000/a/b/c:1.0",
            "index.docker.io/hello",
            "docker.io/library/hello",
            "a_b.com/repo",
            "a._b",
            "a__b",
            "a___b",
            "a--b",
            "a-_b",
            "-a",
            "a-",
            "a/",
            "/a",
            "a//b",
            ":tag",
            "repo:",
            "repo:.tag",
            "repo:-tag",
            "repo:_t",
            "foo_bar.com:8080",
            "foo.com:/repo",
            "foo.com:x/repo",
            "host-.com/r",
            "-host.com/r",
            "sub.do-main.io:443/team/app:2",
            "a:b:c",
            "repo@sha256:abc",
            "repo@md5:0123",
            "UPPER/repo",
            "Upper.com/repo",
            "x/y:z@bad",
            "a:1:2/b",
        ];
        let mut cases: Vec<String> = corpus.iter().map(|s| s.to_string()).collect();
        cases.push(format!("repo@{d}"));
        cases.push(format!("localhost:5000/repo:v1@{d}"));
        cases.push(format!("r:{}", "t".repeat(128)));
        cases.push(format!("r:{}", "t".repeat(129)));
        cases.push(format!("ns/{}", "a".repeat(260)));
        for case in &cases {
            let ours = parse_reference(case).map(|r| r.whole()).ok();
            let theirs = case.parse::<Reference>().map(|r| r.whole()).ok();
            // Where the first component has capitals, docker takes it as a registry and
            // oci-spec does not (printing a name it then rejects): we follow docker.
            if case
                .split('/')
                .next()
                .is_some_and(|f| f.bytes().any(|b| b.is_ascii_uppercase()))
                && case.contains('/')
            {
                continue;
            }
            assert_eq!(ours, theirs, "{case}");
        }
    }

    /// Found by `cargo fuzz run reference`: every accepted reference prints back to itself.
    #[test]
    fn a_capitalised_first_component_is_a_registry_as_in_docker() {
        for text in ["Upper.com/repo", "LOCALHOST/repo", "Host:5000/repo"] {
            let r = parse_reference(text).unwrap();
            assert_eq!(
                r.registry(),
                text.split('/').next().unwrap().to_ascii_lowercase()
            );
            let again = parse_reference(&r.whole()).unwrap();
            assert_eq!(again.whole(), r.whole());
        }
        // A host that is one only by its capitals would, in its canonical lowercase form,
        // read back as a Docker Hub namespace: refused rather than made ambiguous.
        for text in ["R/i", "UPPER/repo"] {
            let e = parse_reference(text).unwrap_err().to_string();
            assert!(e.contains("lowercase"), "{text}: {e}");
        }
    }

    /// Every spelling of one registry parses to the same name, so that no comparison
    /// (policy scope, cache key, allow list, credentials) can be escaped by respelling it.
    #[test]
    fn a_registry_has_one_canonical_name() {
        for (text, registry) in [
            ("LOCALHOST:5000/hello", "localhost:5000"),
            ("LocalHost:05000/hello", "localhost:5000"),
            ("127.0.0.1:0005000/hello", "127.0.0.1:5000"),
            ("Registry.Example/a/b", "registry.example"),
            ("registry.example:0443/a", "registry.example:443"),
            ("registry.example:443/a", "registry.example:443"),
            ("[::1]:05000/hello", "[::1]:5000"),
            ("[0:0::0001]:5000/hello", "[::1]:5000"),
            ("[FE80::1]/hello", "[fe80::1]"),
            // IPv4-mapped IPv6 connects to the IPv4 address: it is that address.
            ("[::ffff:127.0.0.1]:5000/hello", "127.0.0.1:5000"),
            ("[::ffff:7f00:1]:5000/hello", "127.0.0.1:5000"),
            ("[0:0:0:0:0:FFFF:7F00:0001]:05000/hello", "127.0.0.1:5000"),
            ("[::ffff:169.254.169.254]/hello", "169.254.169.254"),
            ("127.1:5000/hello", "127.0.0.1:5000"),
            ("0x7f.0.0.1:5000/hello", "127.0.0.1:5000"),
            ("0177.0.0.01:5000/hello", "127.0.0.1:5000"),
            ("2130706433:5000/hello", "127.0.0.1:5000"),
            ("index.docker.io/hello", "docker.io"),
            ("REGISTRY-1.docker.io/hello", "docker.io"),
            ("registry-1.docker.io/library/hello", "docker.io"),
            ("docker.io/hello", "docker.io"),
            (
                "registry-1.docker.io:5000/hello",
                "registry-1.docker.io:5000",
            ),
            ("registry-1.docker.io:443/hello", "docker.io"),
            ("Docker.IO:0443/library/hello", "docker.io"),
        ] {
            let r = parse_reference(text).unwrap();
            assert_eq!(r.registry(), registry, "{text}");
            // Canonical means stable: it parses back to itself.
            assert_eq!(parse_reference(&r.whole()).unwrap().whole(), r.whole());
        }
        assert_eq!(
            parse_reference("registry-1.docker.io/hello:v1")
                .unwrap()
                .whole(),
            "docker.io/library/hello:v1"
        );
        // Not an address, not a name: the connection would refuse it too.
        assert!(parse_reference("1.2.3.256:5000/a").is_err());
        for bad in ["localhost:65536/a", "localhost:99999999999999999999/a"] {
            let e = parse_reference(bad).unwrap_err().to_string();
            assert!(e.contains("at most 65535"), "{bad}: {e}");
        }
        assert!(parse_reference("localhost:/a").is_err());
        assert_eq!(canonical_registry("HOST:0"), Ok("host:0".to_owned()));
        assert_eq!(registry_key("host:443"), "host");
        assert_eq!(registry_key("host:4430"), "host:4430");
        assert_eq!(registry_key("host"), "host");
    }

    /// What the fuzz target checks, over the spellings canonicalisation rewrites: whatever
    /// is accepted prints to a reference that parses back to itself.
    #[test]
    fn canonical_names_are_stable() {
        let hosts = [
            "LOCALHOST",
            "localhost",
            "Reg.Example",
            "127.1",
            "0x7F.1",
            "2130706433",
            "1.2.3",
            "[::1]",
            "[0::1]",
            "[FE80::A]",
            "index.docker.io",
            "Docker.io",
            "registry-1.docker.io",
            "R",
            "a-b.C-d",
            "xn--bcher-kva.example",
            "0",
        ];
        let ports = [
            "", ":0", ":00", ":443", ":0443", ":5000", ":65535", ":65536", ":",
        ];
        let paths = [
            "/x",
            "/a/b:v1",
            "/Upper",
            "/library/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ];
        for host in hosts {
            for port in ports {
                for path in paths {
                    let text = format!("{host}{port}{path}");
                    if let Ok(r) = parse_reference(&text) {
                        let whole = r.whole();
                        let again = parse_reference(&whole)
                            .unwrap_or_else(|e| panic!("{text} -> {whole}: {e}"));
                        assert_eq!(again.whole(), whole, "{text}");
                        assert_eq!(
                            canonical_registry(r.registry()).as_deref(),
                            Ok(r.registry())
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transport_prefixes_and_urls_get_a_hint() {
        let e = parse_reference("docker://localhost:5000/hello:v1").unwrap_err();
        assert!(
            e.to_string().contains(
                "drop the docker:// prefix (skopeo's transport name): localhost:5000/hello:v1"
            ),
            "{e}"
        );
        let e = parse_reference("https://ghcr.io/a/b").unwrap_err();
        assert!(e.to_string().contains("drop https://"), "{e}");
    }

    #[test]
    fn host_and_port_split_once_for_every_spelling() {
        for (text, host, port) in [
            ("registry.example", "registry.example", None),
            ("registry.example:5000", "registry.example", Some("5000")),
            ("[::1]:5000", "[::1]", Some("5000")),
            ("[::1]", "[::1]", None),
            ("[::1]x", "[::1]x", None),
            ("host:", "host", Some("")),
        ] {
            assert_eq!(split_host_port(text), (host, port), "{text}");
        }
        assert_eq!(registry_host("[::1]:5000"), "::1");
        assert_eq!(registry_host("localhost:5000"), "localhost");
        assert_eq!(registry_host("a:b"), "a:b");
        assert!(is_node_local(
            parse_reference("[::ffff:127.0.0.1]:5000/a")
                .unwrap()
                .registry()
        ));
        assert!(is_node_local(
            parse_reference("[::ffff:a9fe:a9fe]/a").unwrap().registry()
        ));
    }

    #[test]
    fn ipv6_loopback_registries_parse() {
        let r = parse_reference("[::1]:5000/hello:v1").unwrap();
        assert_eq!((r.registry(), r.repository()), ("[::1]:5000", "hello"));
        assert!(parse_reference("[::g]:5000/hello").is_err());
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
