//! What a guest may reach on the network: outbound HTTP for proxy components
//! (`wasi:http/outgoing-handler`) and `wasi:sockets` for commands. Everything is denied unless
//! a rule allows it, and every connect, bind and request is checked against the rules.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;

use super::OptionError;

/// Which `wasi:sockets` uses a guest may make; nothing by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketPolicy {
    /// Where TCP connects and UDP sends may go (`--allow-connect`).
    pub connect: Vec<ConnectRule>,
    /// Local addresses a socket may be bound to and listen on (`--allow-bind`).
    pub bind: Vec<SocketAddr>,
    /// Whether the guest may resolve names (`--allow-dns`).
    pub dns: bool,
}

/// One `--allow-connect` rule: an address or a network, on one port or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRule {
    /// The network's address.
    pub addr: IpAddr,
    /// Its prefix length in bits (32 or 128 for one address).
    pub prefix: u8,
    /// The port, or any port when `None`.
    pub port: Option<u16>,
}

impl SocketPolicy {
    /// Whether the guest may use `addr` for `use_`, as `wasi:sockets` asks on every bind,
    /// listen, accept, connect and send.
    pub fn allows(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        match use_ {
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => {
                self.connect.iter().any(|r| r.matches(addr))
            }
            // A socket that is not bound yet asks to bind the wildcard address on an ephemeral
            // port before it connects or sends; that bind gives nothing beyond the connect,
            // which is checked next.
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind
                if addr.ip().is_unspecified() && addr.port() == 0 && !self.connect.is_empty() =>
            {
                true
            }
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind | SocketAddrUse::TcpListen => {
                self.bind.iter().any(|b| bind_matches(*b, addr))
            }
            // Clients of a listener the policy let the guest open.
            SocketAddrUse::TcpAccept => !self.bind.is_empty(),
            // Datagrams from peers the guest may send to.
            SocketAddrUse::UdpReceive => self.connect.iter().any(|r| r.matches(addr)),
        }
    }

    /// Whether anything at all is allowed.
    pub fn is_empty(&self) -> bool {
        self.connect.is_empty() && self.bind.is_empty() && !self.dns
    }
}

/// A bind rule with port 0 allows any port on its address.
fn bind_matches(rule: SocketAddr, addr: SocketAddr) -> bool {
    rule.ip() == addr.ip() && (rule.port() == 0 || rule.port() == addr.port())
}

impl ConnectRule {
    /// Whether `addr` is in this rule's network and on its port.
    pub fn matches(&self, addr: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != addr.port()) {
            return false;
        }
        // An IPv4 peer reached through an IPv6 socket is still that IPv4 peer.
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let prefix = usize::from(prefix);
    let (whole, rest) = (prefix / 8, prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[whole] & mask == b[whole] & mask
}

impl std::str::FromStr for ConnectRule {
    type Err = OptionError;

    /// `IP:PORT`, `[IPV6]:PORT`, `CIDR` (any port) or `CIDR:PORT` (`[CIDR]:PORT` for IPv6).
    /// Names are resolved by the caller, see [`ConnectRule::resolve`].
    fn from_str(spec: &str) -> Result<Self, OptionError> {
        let bad = || OptionError::ConnectRule {
            spec: spec.to_owned(),
        };
        if let Ok(addr) = spec.parse::<SocketAddr>() {
            return Ok(Self::host(addr.ip(), Some(addr.port())));
        }
        // A bare network, or a bracketed IPv6 one with a port.
        let (net, port) = if let Some(rest) = spec.strip_prefix('[') {
            let (net, port) = rest.split_once("]:").ok_or_else(bad)?;
            (net, Some(port.parse::<u16>().map_err(|_| bad())?))
        } else if spec.contains('/') && spec.matches(':').count() <= 1 {
            match spec.split_once('/').and_then(|(_, p)| p.split_once(':')) {
                Some((_, port)) => (
                    &spec[..spec.len() - port.len() - 1],
                    Some(port.parse::<u16>().map_err(|_| bad())?),
                ),
                None => (spec, None),
            }
        } else {
            (spec, None)
        };
        let (ip, prefix) = match net.split_once('/') {
            Some((ip, prefix)) => (
                ip.parse::<IpAddr>().map_err(|_| bad())?,
                Some(prefix.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (net.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self {
            addr: ip,
            prefix,
            port,
        })
    }
}

impl ConnectRule {
    fn host(ip: IpAddr, port: Option<u16>) -> Self {
        Self {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
            port,
        }
    }

    /// Parses a rule, resolving `HOST:PORT` with a name to a rule for each of its addresses
    /// now, once: the guest then reaches those addresses and no others.
    pub fn resolve(spec: &str) -> Result<Vec<Self>, OptionError> {
        match spec.parse::<Self>() {
            Ok(rule) => Ok(vec![rule]),
            Err(e) => {
                let Some((host, port)) = spec.rsplit_once(':') else {
                    return Err(e);
                };
                let Ok(port) = port.parse::<u16>() else {
                    return Err(e);
                };
                use std::net::ToSocketAddrs as _;
                let addrs =
                    (host, port)
                        .to_socket_addrs()
                        .map_err(|err| OptionError::ConnectHost {
                            spec: spec.to_owned(),
                            host: host.to_owned(),
                            reason: err.to_string(),
                        })?;
                Ok(addrs.map(|a| Self::host(a.ip(), Some(port))).collect())
            }
        }
    }
}

impl fmt::Display for ConnectRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        match (self.addr, self.prefix == full, self.port) {
            (IpAddr::V6(ip), true, Some(port)) => write!(f, "[{ip}]:{port}"),
            (ip, true, Some(port)) => write!(f, "{ip}:{port}"),
            (ip, true, None) => write!(f, "{ip}/{full}"),
            (IpAddr::V6(ip), false, Some(port)) => write!(f, "[{ip}/{}]:{port}", self.prefix),
            (ip, false, Some(port)) => write!(f, "{ip}/{}:{port}", self.prefix),
            (ip, false, None) => write!(f, "{ip}/{}", self.prefix),
        }
    }
}

/// Which hosts a proxy component may send HTTP requests to; none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// The `--allow-http` rules.
    pub hosts: Vec<HttpRule>,
}

/// One `--allow-http` rule: a host name or address, and a port (the scheme's default port
/// when none is given, any port for `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    /// The host as the guest writes it in the request's authority, lower case.
    pub host: String,
    /// The port.
    pub port: HttpPort,
}

/// The port of an [`HttpRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpPort {
    /// The scheme's default port (80 for http, 443 for https).
    Default,
    /// This port.
    Port(u16),
    /// Any port (`HOST:*`).
    Any,
}

impl HttpPolicy {
    /// Whether a request to `host` on `port` (the scheme's default when the authority names
    /// none) may be sent.
    pub fn allows(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = port.unwrap_or(default_port);
        self.hosts.iter().any(|rule| {
            rule.host == host
                && match rule.port {
                    HttpPort::Default => port == default_port,
                    HttpPort::Port(p) => p == port,
                    HttpPort::Any => true,
                }
        })
    }

    /// Whether any host is allowed.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The rules, shared by every request's hooks.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

impl std::str::FromStr for HttpRule {
    type Err = OptionError;

    /// `HOST`, `HOST:PORT`, `HOST:*`, `[IPV6]:PORT`.
    fn from_str(spec: &str) -> Result<Self, OptionError> {
        let bad = || OptionError::HttpRule {
            spec: spec.to_owned(),
        };
        let spec = spec
            .strip_prefix("http://")
            .or_else(|| spec.strip_prefix("https://"))
            .unwrap_or(spec)
            .trim_end_matches('/');
        let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
            match rest.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => (host, Some(port.strip_prefix(':').ok_or_else(bad)?)),
                None => return Err(bad()),
            }
        } else if spec.matches(':').count() > 1 {
            // A bare IPv6 address.
            (spec, None)
        } else {
            match spec.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (spec, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        let port = match port {
            None => HttpPort::Default,
            Some("*") => HttpPort::Any,
            Some(p) => HttpPort::Port(p.parse().map_err(|_| bad())?),
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connect_rules_parse_and_match() {
        let rule = |s: &str| s.parse::<ConnectRule>().unwrap();
        assert!(rule("127.0.0.2:80").matches(addr("127.0.0.2:80")));
        assert!(!rule("127.0.0.2:80").matches(addr("127.0.0.2:81")));
        assert!(!rule("127.0.0.2:80").matches(addr("127.0.0.3:80")));
        assert!(rule("10.0.0.0/8").matches(addr("10.1.2.3:5")));
        assert!(!rule("10.0.0.0/8").matches(addr("11.1.2.3:5")));
        assert!(rule("10.0.0.0/8:443").matches(addr("10.1.2.3:443")));
        assert!(!rule("10.0.0.0/8:443").matches(addr("10.1.2.3:80")));
        assert!(rule("172.16.0.0/12").matches(addr("172.31.255.255:1")));
        assert!(!rule("172.16.0.0/12").matches(addr("172.32.0.0:1")));
        assert!(rule("[::1]:80").matches(addr("[::1]:80")));
        assert!(rule("[fd00::/8]:443").matches(addr("[fd12::1]:443")));
        assert!(rule("fd00::/8").matches(addr("[fd12::1]:1")));
        assert!(rule("127.0.0.2:80").matches(addr("[::ffff:127.0.0.2]:80")));
        assert!(rule("0.0.0.0/0").matches(addr("8.8.8.8:53")));
        for bad in ["", "10.0.0.0/33", "host", "1.2.3.4:x", "[::1]"] {
            assert!(bad.parse::<ConnectRule>().is_err(), "{bad}");
        }
        assert_eq!(rule("10.0.0.0/8:443").to_string(), "10.0.0.0/8:443");
        assert_eq!(rule("[::1]:80").to_string(), "[::1]:80");
    }

    #[test]
    fn socket_policy_denies_by_default() {
        let none = SocketPolicy::default();
        for use_ in [
            SocketAddrUse::TcpConnect,
            SocketAddrUse::TcpBind,
            SocketAddrUse::TcpListen,
            SocketAddrUse::UdpBind,
            SocketAddrUse::UdpSend,
        ] {
            assert!(!none.allows(addr("0.0.0.0:0"), use_));
            assert!(!none.allows(addr("127.0.0.1:80"), use_));
        }
        let policy = SocketPolicy {
            connect: vec!["127.0.0.2:80".parse().unwrap()],
            bind: vec![addr("127.0.0.1:8080")],
            dns: false,
        };
        assert!(policy.allows(addr("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(policy.allows(addr("127.0.0.2:80"), SocketAddrUse::TcpConnect));
        assert!(!policy.allows(addr("127.0.0.3:80"), SocketAddrUse::TcpConnect));
        assert!(policy.allows(addr("127.0.0.1:8080"), SocketAddrUse::TcpBind));
        assert!(policy.allows(addr("127.0.0.1:8080"), SocketAddrUse::TcpListen));
        assert!(!policy.allows(addr("127.0.0.1:8081"), SocketAddrUse::TcpBind));
        assert!(!policy.allows(addr("0.0.0.0:8080"), SocketAddrUse::TcpListen));
    }

    #[test]
    fn http_rules_parse_and_match() {
        let policy = |specs: &[&str]| HttpPolicy {
            hosts: specs.iter().map(|s| s.parse().unwrap()).collect(),
        };
        let p = policy(&[
            "api.example.com",
            "127.0.0.1:8081",
            "Any.Example:*",
            "[::1]:9",
        ]);
        assert!(p.allows("api.example.com", None, 443));
        assert!(p.allows("API.example.com", Some(80), 80));
        assert!(!p.allows("api.example.com", Some(8443), 443));
        assert!(p.allows("127.0.0.1", Some(8081), 80));
        assert!(!p.allows("127.0.0.1", Some(8082), 80));
        assert!(!p.allows("127.0.0.1", None, 80));
        assert!(p.allows("any.example", Some(1), 80));
        assert!(p.allows("[::1]", Some(9), 80));
        assert!(!p.allows("evil.example", None, 80));
        assert!(!HttpPolicy::default().allows("127.0.0.1", Some(8081), 80));
        for bad in ["", ":80", "a:b", "a/b", "u@host"] {
            assert!(bad.parse::<HttpRule>().is_err(), "{bad}");
        }
    }
}
