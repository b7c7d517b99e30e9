//! Outbound HTTP for plugins: a capability check on the host name (the
//! manifest asked for it and the operator allows it), then a check of every
//! resolved IP (no loopback, private, link-local or metadata addresses unless
//! `DWA_HTTP_ALLOW` lists them), again on every redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::granter::{Denied, Granter};

/// Why a request was refused before it was sent, or a redirect before it
/// was followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Only http and https are reachable.
    #[error("refused: scheme {0:?} is not http or https")]
    Scheme(String),
    /// The URL names no host.
    #[error("refused: URL has no host")]
    NoHost,
    /// The plugin may not reach this host (docs/plugins.md, permissions).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The host is, or resolves to, a non-public address the operator has
    /// not allowed with `DWA_HTTP_ALLOW`.
    #[error(
        "HTTP to {host} ({ip}) refused: {kind} address; the operator can allow it with DWA_HTTP_ALLOW"
    )]
    SpecialAddress {
        /// The host asked for.
        host: String,
        /// The address it is or resolved to.
        ip: IpAddr,
        /// Which kind of non-public address (`loopback`, `private`, ...).
        kind: &'static str,
    },
}

/// Why a plugin's HTTP request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A check refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The URL does not parse.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: url::ParseError,
    },
    /// The method is not an HTTP method.
    #[error("bad HTTP method {0:?}")]
    Method(String),
    /// The plugin's call has no time left for it.
    #[error("no time left before the call's deadline")]
    NoTimeLeft,
    /// The answer is larger than a plugin may receive.
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// Connecting, sending or reading failed (the whole chain of causes).
    #[error("{0}")]
    Transport(String),
}

/// A `DWA_HTTP_ALLOW` entry that is neither a host, an IP nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DWA_HTTP_ALLOW entry {0:?} is not a host, IP or CIDR")]
pub struct AllowListError(pub String);

/// Largest response body a plugin receives.
pub const MAX_RESPONSE_BYTES: usize = 10 << 20;
/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// The operator's exceptions to the private-address rule (`DWA_HTTP_ALLOW`).
#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl NetPolicy {
    /// Parses `DWA_HTTP_ALLOW`: comma-separated host names, IPs and CIDRs.
    pub fn parse(spec: &str) -> Result<NetPolicy, AllowListError> {
        let mut p = NetPolicy::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(net) = item.parse::<IpNet>() {
                p.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                p.nets.push(IpNet::from(ip));
            } else if item
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                p.hosts.push(item.to_ascii_lowercase());
            } else {
                return Err(AllowListError(item.to_owned()));
            }
        }
        Ok(p)
    }

    /// Refuses `ip` (reached through `host`) unless it is public or allowed.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let Some(kind) = special(ip) else {
            return Ok(());
        };
        let host_ok = self.hosts.iter().any(|h| h == &host.to_ascii_lowercase());
        let net_ok = self.nets.iter().any(|n| n.contains(&canonical(ip)));
        if host_ok || net_ok {
            Ok(())
        } else {
            Err(Refusal::SpecialAddress {
                host: host.to_owned(),
                ip,
                kind,
            })
        }
    }
}

/// The IPv4 address an IPv6 one carries, where it carries one that a
/// router or translator would reach: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d` and the
/// local-use `64:ff9b:1::/48`) and 6to4 (`2002:aabb:ccdd::`). The address
/// rule is applied to the IPv4 inside, so that `[64:ff9b::7f00:1]` is
/// loopback as `127.0.0.1` is.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let low = |a: u16, b: u16| {
        IpAddr::V4(std::net::Ipv4Addr::from(
            (u32::from(a) << 16) | u32::from(b),
        ))
    };
    match s {
        // IPv4-compatible; `::` and `::1` are themselves.
        [0, 0, 0, 0, 0, 0, a, b] if a != 0 || b > 1 => low(a, b),
        [0x64, 0xff9b, 0, 0, 0, 0, a, b] => low(a, b),
        [0x64, 0xff9b, 1, ..] => low(s[6], s[7]),
        [0x2002, a, b, ..] => low(a, b),
        _ => ip,
    }
}

/// What kind of non-public address `ip` is, if it is one.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if o == [169, 254, 169, 254] || o == [100, 100, 100, 200] {
                Some("cloud metadata")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_private() {
                Some("private")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared (CGNAT)")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if o[0] == 198 && (o[1] == 18 || o[1] == 19) {
                Some("benchmarking")
            } else if o[..3] == [192, 0, 0]
                || o[..3] == [192, 0, 2]
                || o[..3] == [198, 51, 100]
                || o[..3] == [203, 0, 113]
            {
                Some("documentation or protocol assignments")
            } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
                Some("broadcast, multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                Some("cloud metadata")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if s[0] == 0x2001 && s[1] == 0xdb8 {
                Some("documentation or protocol assignments")
            } else if s[..4] == [0x100, 0, 0, 0] {
                Some("discard-only")
            } else if s[0] == 0x2001 && s[1] == 0 {
                // Teredo tunnels to an IPv4 address of its choosing.
                Some("Teredo tunnel")
            } else if v6.is_multicast() {
                Some("broadcast, multicast or reserved")
            } else {
                None
            }
        }
    }
}

/// Resolves names and keeps only the addresses the policy allows, so the
/// check is made on the IP actually connected to.
struct GuardedResolver {
    net: Arc<NetPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let net = self.net.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> {
                    format!("cannot resolve {host}: {e}").into()
                })?
                .collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match net.check(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(match refusal {
                    Some(r) => r.into(),
                    None => format!("{host} resolved to no address").into(),
                });
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP capability of one plugin.
#[derive(Clone)]
pub struct Outbound {
    checks: Checks,
    client: reqwest::Client,
}

/// A request from a plugin.
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Absolute http(s) URL.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// The plugin's own timeout.
    pub timeout: Option<Duration>,
}

/// The answer given back.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Vec<u8>,
}

impl Outbound {
    /// The capability of a plugin whose grants `granter` decides, under the
    /// operator's address rule `net`.
    pub fn new(granter: Arc<Granter>, net: Arc<NetPolicy>) -> Result<Outbound, reqwest::Error> {
        let checks = Checks { granter, net };
        let on_redirect = checks.clone();
        let client = reqwest::Client::builder()
            // HTTP(S)_PROXY would send the request to the proxy, whose
            // address, not the target's, the resolver would check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                net: checks.net.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match on_redirect.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => {
                        let msg = format!("redirect to {} {e}", attempt.url());
                        attempt.error(msg)
                    }
                }
            }))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Outbound { checks, client })
    }

    /// Sends the request if every check passes, before `deadline`.
    pub async fn fetch(&self, req: Request, deadline: Instant) -> Result<Response, FetchError> {
        let url = reqwest::Url::parse(&req.url).map_err(|reason| FetchError::BadUrl {
            url: req.url.clone(),
            reason,
        })?;
        self.checks.check_url(&url)?;
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| FetchError::Method(req.method.clone()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = req.timeout.map_or(left, |t| t.min(left));
        if timeout.is_zero() {
            return Err(FetchError::NoTimeLeft);
        }
        let mut builder = self.client.request(method, url).timeout(timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(b) = req.body {
            builder = builder.body(b);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| FetchError::Transport(describe(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::Transport(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The checks made before a request and on every redirect.
#[derive(Clone)]
struct Checks {
    granter: Arc<Granter>,
    net: Arc<NetPolicy>,
}

impl Checks {
    fn check_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(Refusal::NoHost),
        };
        self.granter.http(&host)?;
        // IP literals never reach the resolver: check them here.
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.net.check(&host, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.net.check(&host, IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if e.is_timeout() {
        s.push_str(" (timed out)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::granter::Grants;

    /// What `o` answers a GET of `url` that must not be sent.
    async fn refusal(o: &Outbound, url: &str) -> FetchError {
        let req = Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: None,
            timeout: None,
        };
        match o.fetch(req, Instant::now() + Duration::from_secs(5)).await {
            Ok(r) => panic!("{url} was fetched (status {})", r.status),
            Err(e) => e,
        }
    }

    fn outbound(asked: &[&str], operator: Option<&[&str]>, net: Arc<NetPolicy>) -> Outbound {
        let granter = Granter::new(
            "p",
            asked.iter().map(|s| s.to_string()).collect(),
            false,
            operator.map(|o| Grants {
                http: o.iter().map(|s| s.to_string()).collect(),
                workdir: false,
            }),
        );
        Outbound::new(Arc::new(granter), net).unwrap()
    }

    #[test]
    fn special_addresses() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.0.1", "private"),
            ("172.16.5.5", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd12::1", "private (unique local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("fd00:ec2::254", "cloud metadata"),
            // IPv4 inside IPv6: compatible, NAT64 (well-known and local), 6to4.
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("::0.0.0.5", "unspecified"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("64:ff9b:1::c0a8:1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a00:1::1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.1", "benchmarking"),
            ("192.0.2.1", "documentation or protocol assignments"),
            ("2001:db8::1", "documentation or protocol assignments"),
            ("2001:0:4136:e378::1", "Teredo tunnel"),
            ("100::1", "discard-only"),
        ] {
            assert_eq!(special(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        assert_eq!(special("93.184.216.34".parse().unwrap()), None);
        assert_eq!(special("2606:4700::1111".parse().unwrap()), None);
        // A public IPv4 address behind NAT64 or 6to4 stays public.
        assert_eq!(special("64:ff9b::5db8:d822".parse().unwrap()), None);
        assert_eq!(special("2002:5db8:d822::1".parse().unwrap()), None);
    }

    #[test]
    fn allow_list_by_host_and_cidr() {
        let p = NetPolicy::parse("localhost, 10.0.0.0/8,192.168.1.7").unwrap();
        assert!(p.check("localhost", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("x", "10.9.9.9".parse().unwrap()).is_ok());
        assert!(p.check("x", "192.168.1.7".parse().unwrap()).is_ok());
        let e = p.check("x", "127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(
            matches!(
                e,
                Refusal::SpecialAddress {
                    kind: "loopback",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("loopback address"), "{e}");
        assert_eq!(
            NetPolicy::parse("bad/entry/x").unwrap_err(),
            AllowListError("bad/entry/x".into())
        );
    }

    #[tokio::test]
    async fn grants_are_checked_before_any_request() {
        let net = Arc::new(NetPolicy::default());
        let o = outbound(&["*.example.com"], None, net.clone());
        let e = refusal(&o, "https://evil.test/x").await;
        assert!(
            matches!(&e, FetchError::Refused(Refusal::Denied(Denied::HttpNotAsked { host, .. })) if host == "evil.test"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("capability http:evil.test is not granted to plugin p"),
            "{e}"
        );
        let e = refusal(&o, "file:///etc/passwd").await;
        assert!(
            matches!(&e, FetchError::Refused(Refusal::Scheme(s)) if s == "file"),
            "{e}"
        );
        assert!(e.to_string().contains("scheme"), "{e}");
        let all = outbound(&["*"], Some(&["api.example.com"]), net);
        let e = refusal(&all, "https://other.example.com/").await;
        assert!(
            matches!(
                &e,
                FetchError::Refused(Refusal::Denied(Denied::HttpNotGranted { .. }))
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("the operator's policy allows: api.example.com"),
            "{e}"
        );
        let e = refusal(&all, "http://127.0.0.1:9/").await;
        assert!(e.to_string().contains("operator's policy"), "{e}");
        let open = outbound(&["*"], None, Arc::new(NetPolicy::default()));
        let e = refusal(&open, "http://169.254.169.254/latest/meta-data").await;
        assert!(
            matches!(
                &e,
                FetchError::Refused(Refusal::SpecialAddress {
                    kind: "cloud metadata",
                    ..
                })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("cloud metadata address"), "{e}");
        let e = refusal(&open, "http://localhost:9/").await;
        assert!(e.to_string().contains("loopback address"), "{e}");
    }
}
