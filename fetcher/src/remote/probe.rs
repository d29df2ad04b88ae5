//! What a loopback registry speaks, asked once in plain HTTP before anything secret is sent:
//! docker tries TLS on a loopback registry and falls back to plain HTTP; so does this.

use std::time::Duration;

/// What a loopback registry answered when asked, in plain HTTP, what it speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// Its `/v2/` answered 200 with no challenge: it wants nothing of an anonymous client,
    /// and the handshake need not ask again.
    pub(crate) open: bool,
}

impl Probe {
    /// An HTTP answer means plain HTTP; anything else (a TLS alert, a closed connection)
    /// means TLS. Nothing secret is sent.
    pub(crate) async fn new(registry: &str) -> Probe {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const WAIT: Duration = Duration::from_secs(2);
        let addr = match wasm_oci_artifact::reference::split_host_port(registry) {
            (_, Some(port)) if port.bytes().all(|b| b.is_ascii_digit()) => registry.to_owned(),
            (host, _) => format!("{host}:443"),
        };
        let answer = async {
            let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(&addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").await?;
            let mut answer = Vec::new();
            // A TLS server closes or sends an alert; Go's even answers in HTTP that it wants
            // HTTPS. One that says nothing is given two seconds, and what came is kept.
            let _ =
                tokio::time::timeout(WAIT, (&mut stream).take(1024).read_to_end(&mut answer)).await;
            Ok::<_, std::io::Error>(answer)
        }
        .await;
        let probe = match answer {
            Ok(a) if a.starts_with(b"HTTP/") && !String::from_utf8_lossy(&a).contains("HTTPS") => {
                Probe {
                    scheme: "http",
                    open: answers_openly(&a),
                }
            }
            Ok(_) => Probe {
                scheme: "https",
                open: false,
            },
            // Unreachable: say http, so the error names the registry as docker would.
            Err(_) => Probe {
                scheme: "http",
                open: false,
            },
        };
        tracing::debug!(%registry, scheme = probe.scheme, open = probe.open, "probed a loopback registry");
        probe
    }
}

/// Whether an HTTP answer, headers whole, is a 200 without `WWW-Authenticate`.
fn answers_openly(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, _)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let mut lines = head.lines();
    let ok = lines
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    ok && !lines.any(|l| {
        l.split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("www-authenticate"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_unchallenged_200_is_open() {
        let open = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\r\n{}";
        assert!(answers_openly(open));
        let challenged =
            b"HTTP/1.0 401 Unauthorized\r\nWww-Authenticate: Basic realm=\"r\"\r\n\r\n";
        assert!(!answers_openly(challenged));
        let odd = b"HTTP/1.0 200 OK\r\nwww-authenticate : Bearer realm=\"r\"\r\n\r\n";
        assert!(!answers_openly(odd));
        // Cut off before the headers end: nothing can be concluded.
        assert!(!answers_openly(b"HTTP/1.0 200 OK\r\nContent-Le"));
    }
}
