//! The hosts of a registry as a pull asks them: the mirrors its hosts.toml lists, then the
//! origin, each with its capabilities, and [`in_order`], the one rule for which of them are
//! asked, in what order: each usable mirror once, then the last host, always.

use std::sync::Arc;

use oci_client::Reference;

use super::failure::Failure;
use super::registry::Registry;
use crate::error::Error;

/// One host a registry's content may be asked of.
pub(crate) struct Endpoint {
    /// How to speak to it.
    pub(crate) remote: Arc<Registry>,
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// `host[:port]`, as logs and `inspect` name it.
    pub(crate) host: String,
    /// May be asked for manifests and blobs by digest.
    pub(crate) pull: bool,
    /// May be asked what a tag points to.
    pub(crate) resolve: bool,
    /// A mirror, not the registry itself: one attempt, then the next host.
    pub(crate) mirror: bool,
    /// A mirror that could not be connected to, or timed out: not asked again by this
    /// process, so a fleet pulling a catalogue pays for a dead or stalled mirror once, not
    /// once per blob.
    down: std::sync::atomic::AtomicBool,
}

impl Endpoint {
    /// A host reached through `remote`, as a hosts.toml (or its absence) describes it.
    pub(crate) fn new(
        remote: Arc<Registry>,
        scheme: &'static str,
        host: String,
        (pull, resolve, mirror): (bool, bool, bool),
    ) -> Self {
        Endpoint {
            remote,
            scheme,
            host,
            pull,
            resolve,
            mirror,
            down: Default::default(),
        }
    }

    /// Whether this host may be asked now: a mirror found unreachable is not.
    pub(crate) fn usable(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes note of a failed request to this host: a mirror that cannot be connected to, or
    /// that timed out, is passed over from now on.
    pub(crate) fn failed(&self, failure: &Failure) {
        if failure.is_unreachable() {
            self.give_up(&failure.to_string());
        }
    }

    /// A mirror that is too slow (`why`) is passed over from now on; the origin never is.
    pub(crate) fn give_up(&self, why: &str) {
        if self.mirror && !self.down.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(host = %self.host, reason = why, "mirror {} is unreachable or too slow; this process asks the next host instead", self.host);
        }
    }
}

/// What a host may be asked for, as a hosts.toml's `capabilities` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    /// Manifests and blobs by digest.
    Pull,
    /// What a tag points to (and signatures, which are tags).
    Resolve,
}

impl Capability {
    fn of(self, host: &Endpoint) -> bool {
        match self {
            Capability::Pull => host.pull,
            Capability::Resolve => host.resolve,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Capability::Pull => "pull",
            Capability::Resolve => "resolve",
        }
    }
}

/// The hosts of `hosts` that may do `capability` for `reference`, in the order to ask them:
/// each mirror not given up on (looked at when its turn comes, so one given up meanwhile
/// is passed over), then the last of them, which is always asked and says whether it is
/// the last. None may: [`Error::NoCapableHost`].
pub(crate) fn in_order<'h>(
    hosts: &'h [Endpoint],
    reference: &Reference,
    capability: Capability,
) -> Result<impl Iterator<Item = (&'h Endpoint, bool)> + 'h, Error> {
    let Some(last) = hosts.iter().rposition(|h| capability.of(h)) else {
        return Err(Error::NoCapableHost {
            reference: reference.whole(),
            registry: reference.registry().to_owned(),
            operation: capability.name(),
        });
    };
    let mirrors = hosts[..last]
        .iter()
        .filter(move |h| capability.of(h) && h.usable())
        .map(|h| (h, false));
    Ok(mirrors.chain([(&hosts[last], true)]))
}

/// Asks the hosts of `hosts` that may do `capability` for `reference`, in [`in_order`]'s
/// order, with `ask`, and returns the first answer: `Ok(Some(..))`. A mirror gets one
/// attempt within [`super::client::MIRROR_DOCUMENT_TIMEOUT`]; one that fails, is slow or has
/// nothing (`Ok(None)`) passes to the next host. The last host is retried with backoff, and
/// its answer, `None` included, is the answer. The one rule for every read that a mirror may
/// serve: pull's manifests, copy's manifests and blobs, `manifest`, `tags`, `discover`.
pub(crate) async fn ask_in_order<'h, T, F, Fut>(
    hosts: &'h [Endpoint],
    reference: &Reference,
    capability: Capability,
    what: &'static str,
    mut ask: F,
) -> Result<Option<T>, Error>
where
    F: FnMut(&'h Endpoint) -> Fut,
    Fut: Future<Output = Result<Option<T>, Failure>>,
{
    let name = reference.whole();
    for (host, last) in in_order(hosts, reference, capability)? {
        if last {
            return super::retry::with_retries(what, || ask(host))
                .await
                .map_err(|f| f.into_error(reference, host.scheme));
        }
        match tokio::time::timeout(super::client::MIRROR_DOCUMENT_TIMEOUT, ask(host)).await {
            Ok(Ok(Some(answer))) => {
                tracing::debug!(reference = %name, host = %host.host, what, "served by a mirror");
                return Ok(Some(answer));
            }
            Ok(Ok(None)) => skipped(host, &name, what, &"it has none"),
            Ok(Err(e)) => {
                skipped(host, &name, what, &e);
                host.failed(&e);
            }
            Err(_) => {
                let why = format!(
                    "no answer within {}s",
                    super::client::MIRROR_DOCUMENT_TIMEOUT.as_secs()
                );
                skipped(host, &name, what, &why);
                host.give_up(&why);
            }
        }
    }
    unreachable!("the last host answers")
}

/// Says that `mirror` failed to serve `what` of `reference` and the next host is asked.
pub(crate) fn skipped(
    mirror: &Endpoint,
    reference: &str,
    what: &str,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(
        reference,
        host = %mirror.host,
        error = %error,
        "mirror {} failed to serve the {what}; trying the next host",
        mirror.host
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::auth::Login;

    fn host(name: &str, (pull, resolve, mirror): (bool, bool, bool)) -> Endpoint {
        // As `Fetcher::new` does: reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let remote = Registry::new(
            reqwest::Client::new(),
            Login::Auth(oci_client::secrets::RegistryAuth::Anonymous),
            "http",
            name,
            "/v2",
            Default::default(),
            None,
            false,
        )
        .unwrap();
        Endpoint::new(
            Arc::new(remote),
            "http",
            name.into(),
            (pull, resolve, mirror),
        )
    }

    fn asked(hosts: &[Endpoint], capability: Capability) -> Vec<(String, bool)> {
        let reference: Reference = "r.example/x:v1".parse().unwrap();
        in_order(hosts, &reference, capability)
            .unwrap()
            .map(|(h, last)| (h.host.clone(), last))
            .collect()
    }

    #[test]
    fn mirrors_that_may_are_asked_in_order_then_the_last_always() {
        let hosts = [
            host("pull.mirror", (true, false, true)),
            host("resolve.mirror", (false, true, true)),
            host("both.mirror", (true, true, true)),
            host("origin", (true, true, false)),
        ];
        let pair = |h: &str, last| (h.to_owned(), last);
        assert_eq!(
            asked(&hosts, Capability::Pull),
            [
                pair("pull.mirror", false),
                pair("both.mirror", false),
                pair("origin", true)
            ]
        );
        // A mirror given up on is passed over; the origin never is.
        hosts[2].give_up("too slow");
        hosts[3].give_up("too slow");
        assert_eq!(
            asked(&hosts, Capability::Resolve),
            [pair("resolve.mirror", false), pair("origin", true)]
        );
        // The last host that may is asked even when it is a mirror given up on.
        let mirrors_only = [host("a.mirror", (true, true, true))];
        mirrors_only[0].give_up("down");
        assert_eq!(
            asked(&mirrors_only, Capability::Pull),
            [pair("a.mirror", true)]
        );
    }

    #[test]
    fn no_host_that_may_is_an_error_naming_the_capability() {
        let hosts = [host("pull.only", (true, false, false))];
        let reference: Reference = "r.example/x:v1".parse().unwrap();
        let Err(e) = in_order(&hosts, &reference, Capability::Resolve) else {
            panic!("a host was found");
        };
        assert!(e.to_string().contains("may resolve"), "{e}");
    }
}
