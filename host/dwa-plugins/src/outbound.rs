//! Outbound HTTP for plugins: a capability check on the host name (the
//! manifest asked for it and the operator allows it), then a check of every
//! resolved IP (no loopback, private, link-local or metadata addresses unless
//! `DWA_HTTP_ALLOW` lists them), again on every redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::manifest::host_matches;

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
    pub fn parse(spec: &str) -> Result<NetPolicy, String> {
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
                return Err(format!(
                    "DWA_HTTP_ALLOW entry {item:?} is not a host, IP or CIDR"
                ));
            }
        }
        Ok(p)
    }

    /// Refuses `ip` (reached through `host`) unless it is public or allowed.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let Some(kind) = special(ip) else {
            return Ok(());
        };
        let host_ok = self.hosts.iter().any(|h| h == &host.to_ascii_lowercase());
        let net_ok = self.nets.iter().any(|n| n.contains(&canonical(ip)));
        if host_ok || net_ok {
            Ok(())
        } else {
            Err(format!(
                "HTTP to {host} ({ip}) refused: {kind} address; the operator can allow it with DWA_HTTP_ALLOW"
            ))
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
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
                let msg = refusal.unwrap_or_else(|| format!("{host} resolved to no address"));
                return Err(msg.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP capability of one plugin.
#[derive(Clone)]
pub struct Outbound {
    plugin: String,
    asked: Vec<String>,
    operator: Option<Vec<String>>,
    net: Arc<NetPolicy>,
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
    /// The capability for `plugin`: hosts it `asked` for, narrowed by the
    /// `operator`'s list (None: the operator allows what was asked).
    pub fn new(
        plugin: &str,
        asked: Vec<String>,
        operator: Option<Vec<String>>,
        net: Arc<NetPolicy>,
    ) -> Result<Outbound, String> {
        let grant = Grant {
            plugin: plugin.to_owned(),
            asked: asked.clone(),
            operator: operator.clone(),
            net: net.clone(),
        };
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { net: net.clone() }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match grant.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => {
                        let msg = format!("redirect to {} {e}", attempt.url());
                        attempt.error(msg)
                    }
                }
            }))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Outbound {
            plugin: plugin.to_owned(),
            asked,
            operator,
            net,
            client,
        })
    }

    /// The host patterns finally granted (for `GET /api/plugins`).
    pub fn granted(&self) -> Vec<String> {
        match &self.operator {
            None => self.asked.clone(),
            Some(op) => self
                .asked
                .iter()
                .filter(|a| {
                    op.iter()
                        .any(|o| o == "*" || host_matches(o, a.trim_start_matches("*.")))
                })
                .cloned()
                .collect(),
        }
    }

    fn grant(&self) -> Grant {
        Grant {
            plugin: self.plugin.clone(),
            asked: self.asked.clone(),
            operator: self.operator.clone(),
            net: self.net.clone(),
        }
    }

    /// Sends the request if every check passes, before `deadline`.
    pub async fn fetch(&self, req: Request, deadline: Instant) -> Result<Response, String> {
        let url =
            reqwest::Url::parse(&req.url).map_err(|e| format!("bad URL {:?}: {e}", req.url))?;
        self.grant().check_url(&url)?;
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("bad HTTP method {:?}", req.method))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = req.timeout.map_or(left, |t| t.min(left));
        if timeout.is_zero() {
            return Err("no time left before the call's deadline".into());
        }
        let mut builder = self.client.request(method, url).timeout(timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(b) = req.body {
            builder = builder.body(b);
        }
        let resp = builder.send().await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
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
struct Grant {
    plugin: String,
    asked: Vec<String>,
    operator: Option<Vec<String>>,
    net: Arc<NetPolicy>,
}

impl Grant {
    fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "refused: scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("refused: URL has no host".into()),
        };
        if !self.asked.iter().any(|p| host_matches(p, &host)) {
            return Err(format!(
                "refused: capability http:{host} is not granted to plugin {} (its manifest asks for: {})",
                self.plugin,
                if self.asked.is_empty() {
                    "nothing".to_owned()
                } else {
                    self.asked.join(", ")
                }
            ));
        }
        if let Some(op) = &self.operator
            && !op.iter().any(|p| host_matches(p, &host))
        {
            return Err(format!(
                "refused: capability http:{host} is not granted to plugin {} (the operator's policy allows: {})",
                self.plugin,
                if op.is_empty() {
                    "nothing".to_owned()
                } else {
                    op.join(", ")
                }
            ));
        }
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
        ] {
            assert_eq!(special(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        assert_eq!(special("93.184.216.34".parse().unwrap()), None);
        assert_eq!(special("2606:4700::1111".parse().unwrap()), None);
    }

    #[test]
    fn allow_list_by_host_and_cidr() {
        let p = NetPolicy::parse("localhost, 10.0.0.0/8,192.168.1.7").unwrap();
        assert!(p.check("localhost", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check("x", "10.9.9.9".parse().unwrap()).is_ok());
        assert!(p.check("x", "192.168.1.7".parse().unwrap()).is_ok());
        let e = p.check("x", "127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(e.contains("loopback address"), "{e}");
        assert!(NetPolicy::parse("bad/entry/x").is_err());
    }

    #[tokio::test]
    async fn grants_are_checked_before_any_request() {
        let net = Arc::new(NetPolicy::default());
        let o = Outbound::new("p", vec!["*.example.com".into()], None, net.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let req = |url: &str| Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: None,
            timeout: None,
        };
        let e = o
            .fetch(req("https://evil.test/x"), deadline)
            .await
            .err()
            .unwrap();
        assert!(
            e.contains("capability http:evil.test is not granted to plugin p"),
            "{e}"
        );
        let e = o
            .fetch(req("file:///etc/passwd"), deadline)
            .await
            .err()
            .unwrap();
        assert!(e.contains("scheme"), "{e}");
        let all = Outbound::new(
            "p",
            vec!["*".into()],
            Some(vec!["api.example.com".into()]),
            net,
        )
        .unwrap();
        let e = all
            .fetch(req("https://other.example.com/"), deadline)
            .await
            .err()
            .unwrap();
        assert!(
            e.contains("the operator's policy allows: api.example.com"),
            "{e}"
        );
        let e = all
            .fetch(req("http://127.0.0.1:9/"), deadline)
            .await
            .err()
            .unwrap();
        assert!(e.contains("operator's policy"), "{e}");
        let open =
            Outbound::new("p", vec!["*".into()], None, Arc::new(NetPolicy::default())).unwrap();
        let e = open
            .fetch(req("http://169.254.169.254/latest/meta-data"), deadline)
            .await
            .err()
            .unwrap();
        assert!(e.contains("cloud metadata address"), "{e}");
        let e = open
            .fetch(req("http://localhost:9/"), deadline)
            .await
            .err()
            .unwrap();
        assert!(e.contains("loopback address"), "{e}");
    }
}
