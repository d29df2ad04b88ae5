//! Where a fetcher that pulls on someone else's behalf (the containerd shim, for a pod) may
//! connect: one address policy, decided in one function (`Guard::admit`) for every
//! connection its HTTP clients make, the first request, each redirect hop, token realm,
//! mirror and upload location alike, on the addresses actually connected to.
//!
//! The pull runs in the node's network namespace, so without a rule a pod could have the
//! shim reach what the pod itself cannot: the node's loopback services, its cloud metadata
//! service (link-local), its own interface addresses. The rule holds in the clients'
//! connector (a tower layer reqwest runs for each new connection): an IP-literal host is
//! judged as written (IPv4-mapped IPv6 is IPv4), a name is resolved there and judged on every
//! address it resolves to, and the connector then connects to exactly those addresses (the
//! client's resolver hands them over; it never asks the DNS a second time). A refused
//! connection is never opened, so what a node service would answer never reaches anyone, and
//! a refusal reads the same whether something listens on the port or not.

use std::fmt::Debug;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use wasm_oci_artifact::text::printable;

/// What a connector's error is made of (reqwest's `BoxError`).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The operator's rule for the connections made on someone else's behalf: `references.allow`
/// (the registries a pod may name), and never the node's own addresses unless the operator
/// named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `None`: anywhere but the node's own addresses.
    allow: Option<Vec<Pattern>>,
    /// Where the rule comes from, for messages (the shim config's path).
    source: String,
}

/// One `references.allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*.domain`: any name under it (not the domain itself).
    Domain(String),
    /// `host[:port]`, in [`host_key`]'s form; no port means every port.
    Host { host: String, port: Option<u16> },
}

/// An `allow` entry that is not `host[:port]` nor `*.domain`.
#[derive(Debug, thiserror::Error)]
#[error("{entry:?} is not host[:port] nor *.domain: {reason}")]
pub struct BadEntry {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why a connection was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The destination is not among the registries the operator allows.
    #[error(
        "{destination} is not among the registries the operator allows ({config}; references.allow: {allowed}); every connection of a pull (redirects, token services, upload locations) must go to one of them"
    )]
    NotAllowed {
        /// `host:port` as the connection would be made (escaped).
        destination: String,
        /// The allow list.
        allowed: String,
        /// Where the rule comes from.
        config: String,
    },
    /// The destination is the node itself.
    #[error(
        "{destination} is an address of the node itself (loopback, link-local, unspecified, or one of its interfaces), which is not connected to on a pod's behalf; an operator may name it in references.allow ({config})"
    )]
    NodeLocal {
        /// `host:port` as the connection would be made (escaped).
        destination: String,
        /// Where the rule comes from.
        config: String,
    },
    /// The node's own addresses could not be listed, so no address can be told apart from
    /// them.
    #[error(
        "the node's own addresses cannot be listed ({reason}), so no connection is made on a pod's behalf"
    )]
    NoAddressList {
        /// Why.
        reason: String,
    },
    /// The HTTP client did not say where a connection goes.
    #[error("a connection whose destination cannot be told is not made on a pod's behalf")]
    UnknownDestination,
}

impl Policy {
    /// The rule without an allow list: any host but the node's own addresses.
    pub fn node_external(source: impl Into<String>) -> Policy {
        Policy {
            allow: None,
            source: source.into(),
        }
    }

    /// The rule of `references.allow` (`host[:port]`, `*.domain`; `None`: no list), read
    /// from `source`.
    pub fn new(allow: Option<&[String]>, source: impl Into<String>) -> Result<Policy, BadEntry> {
        let allow = allow
            .map(|entries| entries.iter().map(|e| Pattern::parse(e)).collect())
            .transpose()?;
        Ok(Policy {
            allow,
            source: source.into(),
        })
    }

    /// Whether a reference may name `registry` (`host[:port]`, as references write it): on
    /// the allow list, or, without one, not the node by name (an address of it, `localhost`).
    /// Names that resolve to the node are refused when connected to.
    pub fn check_registry(&self, registry: &str) -> Result<(), Refusal> {
        let (host, port) = split(registry);
        let destination = printable(registry);
        match &self.allow {
            Some(allow) if allow.iter().any(|p| p.covers(&host, port)) => Ok(()),
            Some(_) => Err(self.not_allowed(destination)),
            None => {
                let node = match host.parse::<IpAddr>() {
                    Ok(ip) => is_node_address(ip)?,
                    Err(_) => is_local_name(&host),
                };
                if node {
                    return Err(self.node_local(destination));
                }
                Ok(())
            }
        }
    }

    /// Whether an allow-list entry names `registry` itself (not by a `*.domain`): the
    /// operator's consent to reach it even on the node, where it may be asked what it speaks.
    pub(crate) fn names_registry(&self, registry: &str) -> bool {
        let (host, port) = split(registry);
        self.names(&host, port)
    }

    /// An exact entry (not `*.domain`) covers `host` at `port` (`None`: the scheme's).
    fn names(&self, host: &str, port: Option<u16>) -> bool {
        self.allow.iter().flatten().any(|p| match p {
            Pattern::Host { .. } => p.covers(host, port),
            Pattern::Domain(_) => false,
        })
    }

    fn not_allowed(&self, destination: String) -> Refusal {
        let allowed = self
            .allow
            .iter()
            .flatten()
            .map(Pattern::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Refusal::NotAllowed {
            destination,
            allowed,
            config: self.source.clone(),
        }
    }

    fn node_local(&self, destination: String) -> Refusal {
        Refusal::NodeLocal {
            destination,
            config: self.source.clone(),
        }
    }
}

impl Pattern {
    fn parse(entry: &str) -> Result<Pattern, BadEntry> {
        let bad = |reason| BadEntry {
            entry: entry.to_owned(),
            reason,
        };
        if let Some(domain) = entry.strip_prefix("*.") {
            let name = match url::Host::parse(domain).map_err(|_| bad("not a domain name"))? {
                url::Host::Domain(name) => name,
                _ => return Err(bad("*. is followed by a domain name, not an address")),
            };
            return Ok(Pattern::Domain(host_key(&name)));
        }
        if entry.contains(['/', '@']) || entry.is_empty() {
            return Err(bad("not host[:port]"));
        }
        let (host, port) = split(entry);
        if host.is_empty() {
            return Err(bad("not host[:port]"));
        }
        let has_port = match entry.strip_prefix('[') {
            Some(rest) => rest.contains("]:"),
            None => entry.contains(':'),
        };
        if has_port && port.is_none() {
            return Err(bad("the port must be a number up to 65535"));
        }
        Ok(Pattern::Host { host, port })
    }

    /// Whether this entry covers `host` (in [`host_key`]'s form) at `port` (`None`: the
    /// port the scheme implies, which an entry with a port covers only when it is 443).
    fn covers(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Pattern::Domain(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            Pattern::Host { host: h, port: p } => {
                h == host && (p.is_none() || *p == port || (*p == Some(443) && port.is_none()))
            }
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Domain(d) => write!(f, "*.{d}"),
            Pattern::Host { host, port } => {
                let host = match host.parse::<Ipv6Addr>() {
                    Ok(_) => format!("[{host}]"),
                    Err(_) => host.clone(),
                };
                match port {
                    Some(p) => write!(f, "{host}:{p}"),
                    None => write!(f, "{host}"),
                }
            }
        }
    }
}

/// `host[:port]` (`[v6]:port`) as ([`host_key`], port), the host read as a URL's host is
/// (127.1 is 127.0.0.1, names in lowercase), the port without leading zeros; a host that is
/// no host reads as empty, and a port that is no port as none (which matches only entries
/// without one). The same reading as the crate's `canonical_registry`, kept here so that
/// the rule depends on nothing of the crate.
fn split(registry: &str) -> (String, Option<u16>) {
    let (host, port) = match registry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, after)) => (format!("[{ip}]"), after.strip_prefix(':')),
            None => (registry.to_owned(), None),
        },
        None => match registry.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (registry.to_owned(), None),
        },
    };
    let port = port.and_then(|p| p.parse::<u16>().ok());
    let host = match url::Host::parse(&host) {
        Ok(url::Host::Domain(d)) => host_key(&d),
        Ok(url::Host::Ipv4(ip)) => canonical_ip(IpAddr::V4(ip)).to_string(),
        Ok(url::Host::Ipv6(ip)) => canonical_ip(IpAddr::V6(ip)).to_string(),
        Err(_) => String::new(),
    };
    (host, port)
}

/// The one form hosts are compared in: an address as its canonical IP (IPv4-mapped and
/// IPv4-compatible IPv6 as IPv4, IPv6 without brackets, as Rust prints it), a name in
/// lowercase without a trailing dot.
fn host_key(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => canonical_ip(ip).to_string(),
        Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// An address in the family it is reached in (IPv4-mapped, IPv4-compatible and NAT64's
/// well-known prefix are IPv4): the one form, written once in the artifact crate.
pub use wasm_oci_artifact::canonical_ip;

/// Cloud metadata services outside link-local, which answer the node as 169.254.169.254
/// does: Alibaba Cloud's, and AWS's over IPv6.
const METADATA_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Whether `ip` is the node itself: loopback, link-local (169.254.0.0/16, fe80::/10, where
/// cloud metadata services answer), unspecified (`0.0.0.0/8` and `::`, which Linux connects
/// to itself), broadcast, a cloud metadata service's fixed address, or an address the
/// kernel takes as its own (its interfaces', its local routes'); judged in its canonical
/// form, and an IPv6 address also as every IPv4 address it carries (NAT64, 6to4, Teredo:
/// see `embedded_ipv4`), since a packet sent to it may reach that one.
pub fn is_node_address(ip: IpAddr) -> Result<bool, Refusal> {
    if let IpAddr::V6(v6) = ip {
        for v4 in wasm_oci_artifact::embedded_ipv4(v6) {
            if is_node_address_as_is(IpAddr::V4(v4))? {
                return Ok(true);
            }
        }
    }
    is_node_address_as_is(canonical_ip(ip))
}

/// [`is_node_address`] for `ip` in the family it is written in.
fn is_node_address_as_is(ip: IpAddr) -> Result<bool, Refusal> {
    let fixed = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.octets()[0] == 0
                || v4.is_broadcast()
                || v4 == METADATA_V4
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6 == METADATA_V6
        }
    };
    if fixed {
        return Ok(true);
    }
    interfaces::local(ip).map_err(|e| Refusal::NoAddressList {
        reason: e.to_string(),
    })
}

/// `localhost` and names under it, which resolve to loopback (RFC 6761).
fn is_local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// The node's own interface addresses, as the kernel of this network namespace lists them.
mod interfaces {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The procfs files are small; more is not read.
    const CAP: u64 = 4 << 20;

    fn read(path: &str) -> std::io::Result<String> {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(CAP)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    /// Whether `ip` (canonical) is an address this namespace's kernel takes as its own:
    /// IPv4 from the routes of type LOCAL in `/proc/net/fib_trie` (interface addresses and
    /// `ip route add local PREFIX` alike), IPv6 from the interfaces' addresses
    /// (`/proc/net/if_inet6`), their anycast addresses (`/proc/net/anycast6`) and the
    /// routes of type local of every table (`/proc/net/ipv6_route`: AnyIP prefixes too).
    /// Read afresh each time: addresses come and go.
    pub(super) fn local(ip: IpAddr) -> std::io::Result<bool> {
        match ip {
            IpAddr::V4(v4) => Ok(local_v4(&read("/proc/net/fib_trie")?, v4)),
            IpAddr::V6(v6) => Ok(local_v6(&read("/proc/net/if_inet6")?, v6)
                || anycast_v6(&read("/proc/net/anycast6")?, v6)
                || local_route_v6(&read("/proc/net/ipv6_route")?, v6)),
        }
    }

    /// `2 eth0 fd000000000000000000000000000000 1`: the third column is an address.
    pub(super) fn anycast_v6(anycast6: &str, ip: Ipv6Addr) -> bool {
        anycast6.lines().any(|line| {
            line.split_whitespace()
                .nth(2)
                .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                .is_some_and(|n| Ipv6Addr::from(n) == ip)
        })
    }

    /// The kernel's flag of a route of type local (`RTF_LOCAL`).
    const RTF_LOCAL: u32 = 0x8000_0000;

    /// `DEST PLEN SRC SPLEN NEXTHOP METRIC REFCNT USE FLAGS DEV`, hexadecimal: a route whose
    /// flags have `RTF_LOCAL` delivers its whole prefix to the node.
    pub(super) fn local_route_v6(ipv6_route: &str, ip: Ipv6Addr) -> bool {
        ipv6_route.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (Some(dest), Some(len), Some(flags)) = (words.first(), words.get(1), words.get(8))
            else {
                return false;
            };
            let (Ok(dest), Ok(len), Ok(flags)) = (
                u128::from_str_radix(dest, 16),
                u32::from_str_radix(len, 16),
                u32::from_str_radix(flags, 16),
            ) else {
                return false;
            };
            if flags & RTF_LOCAL == 0 || len > 128 {
                return false;
            }
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(ip) & mask == dest & mask
        })
    }

    /// `|-- 192.0.2.2` followed by `/32 host LOCAL`: that prefix is the node's.
    pub(super) fn local_v4(fib_trie: &str, ip: Ipv4Addr) -> bool {
        let mut last: Option<Ipv4Addr> = None;
        for line in fib_trie.lines() {
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("|-- ") {
                last = addr.trim().parse().ok();
            } else if let (Some(prefix), Some(base)) = (line.strip_prefix('/'), last) {
                let mut words = prefix.split_whitespace();
                let len: Option<u32> = words.next().and_then(|l| l.parse().ok());
                if words.any(|w| w == "LOCAL")
                    && let Some(len) = len.filter(|l| *l <= 32)
                {
                    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                    if u32::from(ip) & mask == u32::from(base) & mask {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// `fd000000000000000000000000000002 04 40 00 82 eth0`: the first column is an address.
    pub(super) fn local_v6(if_inet6: &str, ip: Ipv6Addr) -> bool {
        if_inet6.lines().any(|line| {
            line.split_whitespace()
                .next()
                .and_then(|hex| u128::from_str_radix(hex, 16).ok())
                .is_some_and(|n| Ipv6Addr::from(n) == ip)
        })
    }
}

/// What one HTTP client (one registry host's) may connect to: the policy, and the host it
/// was made for, which the operator may have named itself (a hosts.toml host).
#[derive(Debug)]
pub(crate) struct Guard {
    policy: Arc<Policy>,
    /// The client's own host, in [`host_key`]'s form, and port.
    origin: (String, u16),
    /// The operator named the origin (a hosts.toml mirror or `server`): reached even on the
    /// node. Otherwise it came from a reference, checked by name, and is judged by address.
    origin_named: bool,
}

/// The addresses a connection was admitted to, handed from the connector layer to the
/// client's resolver so that what is connected to is what was judged.
#[derive(Debug, Clone)]
struct Admitted {
    /// The name as the connector asked for it.
    name: String,
    /// Its addresses, or the lookup's error.
    answer: Result<Vec<SocketAddr>, String>,
}

tokio::task_local! {
    static ADMITTED: Admitted;
}

impl Guard {
    /// The guard of the client for `scheme://host` (`host[:port]`), named by the operator
    /// or not.
    pub(crate) fn new(policy: Arc<Policy>, scheme: &str, host: &str, named: bool) -> Guard {
        let url = url::Url::parse(&format!("{scheme}://{host}/")).ok();
        let origin = url
            .as_ref()
            .and_then(|u| Some((host_key(u.host_str()?), u.port_or_known_default()?)))
            .unwrap_or_default();
        Guard {
            policy,
            origin,
            origin_named: named,
        }
    }

    /// Installs this guard in `builder`: the connector layer that judges every new
    /// connection, and the resolver that hands it what was judged. A guarded client never
    /// goes through the environment's proxy (`HTTPS_PROXY` and the like): a proxy resolves
    /// the name again and connects wherever its own answer points, so the address judged
    /// here would not be the one connected to.
    pub(crate) fn install(self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let guard = Arc::new(self);
        builder
            .no_proxy()
            .dns_resolver(Arc::new(Resolver))
            .connector_layer(Layer { guard })
    }

    /// Judges a connection to `host` (as the URL has it) at `port`; for a name, resolves it
    /// and judges every address. The one place the rule is decided.
    async fn admit(&self, host: &str, port: u16) -> Result<Option<Admitted>, Refusal> {
        let key = host_key(host);
        let destination = printable(&match key.parse::<Ipv6Addr>() {
            Ok(_) => format!("[{key}]:{port}"),
            Err(_) => format!("{key}:{port}"),
        });
        let own = (key.as_str(), port) == (self.origin.0.as_str(), self.origin.1);
        let named = (own && self.origin_named) || self.policy.names(&key, Some(port));
        if !named
            && !own
            && let Some(allow) = &self.policy.allow
            && !allow.iter().any(|p| p.covers(&key, Some(port)))
        {
            return Err(self.policy.not_allowed(destination));
        }
        let name = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = name.parse::<IpAddr>() {
            // Connected to as written: the resolver is not asked.
            if !named && is_node_address(ip)? {
                return Err(self.policy.node_local(destination));
            }
            return Ok(None);
        }
        if !named && is_local_name(&key) {
            return Err(self.policy.node_local(destination));
        }
        let answer = match tokio::net::lookup_host((name, port)).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if !named {
                    for addr in &addrs {
                        if is_node_address(addr.ip())? {
                            return Err(self.policy.node_local(destination));
                        }
                    }
                }
                Ok(addrs)
            }
            // The resolver hands this error on: no proxy resolves it in our place.
            Err(e) => Err(e.to_string()),
        };
        Ok(Some(Admitted {
            name: name.to_owned(),
            answer,
        }))
    }
}

/// Where a connector request goes. reqwest hands its connector layers the destination
/// inside a sealed type whose `Debug` is `Unnameable(URI)`; that is the only view of it,
/// so it is read from there, and anything else is refused (the rule fails closed).
fn destination(request: &impl Debug) -> Option<(String, u16)> {
    let text = format!("{request:?}");
    let uri = text.strip_prefix("Unnameable(")?.strip_suffix(')')?;
    let url = url::Url::parse(uri).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => format!("[{ip}]"),
    };
    Some((host, url.port_or_known_default()?))
}

/// The connector layer: judges each new connection before the inner connector opens it.
#[derive(Clone)]
struct Layer {
    guard: Arc<Guard>,
}

impl<S> tower_layer::Layer<S> for Layer {
    type Service = Connector<S>;
    fn layer(&self, inner: S) -> Connector<S> {
        Connector {
            inner,
            guard: self.guard.clone(),
        }
    }
}

#[derive(Clone)]
struct Connector<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S, R> tower_service::Service<R> for Connector<S>
where
    S: tower_service::Service<R, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    R: Debug + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let guard = self.guard.clone();
        // The service that was made ready is the one called; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let to = destination(&request);
        Box::pin(async move {
            let (host, port) = to.ok_or(Refusal::UnknownDestination)?;
            match guard.admit(&host, port).await {
                Err(refusal) => {
                    tracing::warn!(destination = %printable(&host), port, reason = %refusal, "connection refused by the egress rule");
                    Err(refusal.into())
                }
                Ok(None) => inner.call(request).await,
                Ok(Some(admitted)) => ADMITTED.scope(admitted, inner.call(request)).await,
            }
        })
    }
}

/// The clients' resolver: hands over the addresses the connector layer judged, for the name
/// it judged; refuses anything else.
struct Resolver;

/// The lookup of an admitted name failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to lookup address information: {0}")]
struct LookupFailed(String);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        let admitted = ADMITTED
            .try_with(|a| (a.name == name).then(|| a.answer.clone()))
            .ok()
            .flatten();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match admitted {
                Some(Ok(addrs)) => addrs,
                Some(Err(e)) => return Err(LookupFailed(e).into()),
                None => return Err(Refusal::UnknownDestination.into()),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal somewhere in `e`'s sources, when a connection was refused by the rule.
pub(crate) fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(refusal) = err.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        cur = err.source();
    }
    None
}

/// Whether `e` is a host name that does not resolve (not a DNS server that failed to answer,
/// which may pass): asking again will not change it.
pub(crate) fn is_unknown_name(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("failed to lookup address information") {
            // getaddrinfo's EAI_AGAIN: the DNS did not answer, which may pass.
            return !text.contains("Temporary failure");
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: Option<&[&str]>) -> Policy {
        let allow: Option<Vec<String>> = allow.map(|a| a.iter().map(|s| s.to_string()).collect());
        Policy::new(allow.as_deref(), "shim.toml").unwrap()
    }

    #[test]
    fn every_spelling_of_a_node_address_is_one() {
        for ip in [
            "127.0.0.1",
            "127.3.2.1",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::127.0.0.1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:0.0.0.0",
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_node_address(ip).unwrap(), "{ip}");
        }
        // IPv4 carried in IPv6 by NAT64, 6to4 and Teredo is judged as that IPv4.
        for ip in [
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:7f00:0:100::",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:7f00:1::",
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_node_address(ip).unwrap(), "{ip}");
        }
        for ip in [
            "192.0.2.200",
            "10.1.2.3",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_node_address(ip).unwrap(), "{ip}");
        }
    }

    #[test]
    fn the_kernels_lists_of_local_addresses_are_read() {
        let trie = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.0.0\n        /24 link UNICAST\n     |-- 10.0.0.5\n        /32 host LOCAL\n     |-- 10.0.0.255\n        /32 link BROADCAST\n";
        assert!(interfaces::local_v4(trie, "10.0.0.5".parse().unwrap()));
        assert!(!interfaces::local_v4(trie, "10.0.0.6".parse().unwrap()));
        assert!(!interfaces::local_v4(trie, "10.0.0.255".parse().unwrap()));
        let inet6 = "fd000000000000000000000000000002 04 40 00 82     eth0\n";
        assert!(interfaces::local_v6(inet6, "fd00::2".parse().unwrap()));
        assert!(!interfaces::local_v6(inet6, "fd00::3".parse().unwrap()));
        // `ip -6 route add local 2001:db8:a::/48 dev lo` (AnyIP), beside an ordinary route.
        let routes = "20010db8000a00000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001       lo\n\
                      20010db8000b00000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001     eth0\n";
        assert!(interfaces::local_route_v6(
            routes,
            "2001:db8:a:ffff::9".parse().unwrap()
        ));
        assert!(!interfaces::local_route_v6(
            routes,
            "2001:db8:b::9".parse().unwrap()
        ));
        let anycast = "2    eth0            fd000000000000000000000000000000     1\n";
        assert!(interfaces::anycast_v6(anycast, "fd00::".parse().unwrap()));
        assert!(!interfaces::anycast_v6(anycast, "fd00::1".parse().unwrap()));
    }

    #[test]
    fn references_by_name_are_judged_in_one_canonical_form() {
        let open = policy(None);
        for node in [
            "127.0.0.1:5000",
            "[::ffff:127.0.0.1]:5000",
            "[::ffff:7f00:1]",
            "[::1]",
            "localhost:5000",
            "LOCALHOST",
            "a.localhost",
            "169.254.169.254",
            "[fe80::1]:80",
            "127.1:80",
            "0.0.0.0",
        ] {
            let e = open.check_registry(node).unwrap_err();
            assert!(matches!(e, Refusal::NodeLocal { .. }), "{node}: {e}");
        }
        assert!(open.check_registry("registry.example:5000").is_ok());
        let listed = policy(Some(&["127.0.0.1:5000", "ghcr.io", "*.corp.example"]));
        for ok in [
            "127.0.0.1:5000",
            "[::ffff:127.0.0.1]:5000",
            "ghcr.io:8443",
            "a.corp.example",
        ] {
            assert!(listed.check_registry(ok).is_ok(), "{ok}");
        }
        for refused in [
            "127.0.0.1:5001",
            "corp.example",
            "evilcorp.example",
            "[::1]:5000",
        ] {
            assert!(listed.check_registry(refused).is_err(), "{refused}");
        }
        assert!(listed.names_registry("[::ffff:7f00:1]:5000"));
        assert!(!listed.names_registry("x.corp.example"));
        assert!(Policy::new(Some(&["*.127.0.0.1".into()]), "x").is_err());
        assert!(Policy::new(Some(&["host:70000".into()]), "x").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_connection_is_judged_by_where_it_goes() {
        let open = Arc::new(policy(None));
        let guard = Guard::new(open.clone(), "http", "registry.example:5000", false);
        for (host, port) in [
            ("127.0.0.1", 80),
            ("[::ffff:7f00:1]", 80),
            ("[::1]", 5000),
            ("localhost", 9),
            ("169.254.169.254", 80),
        ] {
            let e = guard.admit(host, port).await.unwrap_err();
            assert!(matches!(e, Refusal::NodeLocal { .. }), "{host}: {e}");
        }
        assert!(guard.admit("192.0.2.200", 443).await.unwrap().is_none());
        // A mirror the operator named on loopback is reached, and only at its own port.
        let mirror = Guard::new(open, "http", "127.0.0.1:30020", true);
        assert!(mirror.admit("127.0.0.1", 30020).await.is_ok());
        assert!(mirror.admit("127.0.0.1", 30021).await.is_err());
        // With an allow list, every hop goes to a host on it; the client's own registry is
        // on it by name already (docker.io's API host too).
        let listed = Arc::new(policy(Some(&["docker.io", "*.cdn.example"])));
        let hub = Guard::new(listed, "https", "registry-1.docker.io", false);
        assert!(hub.admit("registry-1.docker.io", 443).await.is_ok());
        assert!(hub.admit("192.0.2.200", 443).await.is_err());
        let e = hub.admit("auth.example", 443).await.unwrap_err();
        assert!(matches!(e, Refusal::NotAllowed { .. }), "{e}");
    }

    #[test]
    fn the_connectors_view_of_a_destination_is_read() {
        #[derive(Debug)]
        struct Unnameable(#[allow(dead_code)] String);
        // As reqwest's sealed request type prints the http::Uri it holds.
        struct Shown(&'static str);
        impl Debug for Shown {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "Unnameable({})", self.0)
            }
        }
        assert_eq!(
            destination(&Shown("http://[::ffff:7f00:1]:5000/")),
            Some(("[::ffff:127.0.0.1]".into(), 5000))
        );
        assert_eq!(
            destination(&Shown("https://registry.example/")),
            Some(("registry.example".into(), 443))
        );
        assert_eq!(destination(&Unnameable("x".into())), None);
    }
}
