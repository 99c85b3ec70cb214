//! Which requests `pixq serve` answers at all, by where they say they are going and where
//! they come from: the defence of a server on this machine against web pages the user's
//! browser runs.
//!
//! - **Host** (DNS rebinding). A page on `http://evil.example:8080/` can have its name
//!   resolve to 127.0.0.1 (or to this machine's LAN address) a moment later; the browser
//!   then treats this server as that page's own origin, and the page can call the whole API
//!   and read its answers. Such a request still says `Host: evil.example:8080`. The server
//!   answers only this machine's names (`localhost`, `*.localhost`), addresses (a page that
//!   names an address is on it: an address cannot be rebound) and the names it is told
//!   (`--allow-host`, `*` for any); any other gets 421, as does a request naming no host.
//! - **Origin** (cross-site requests). A page elsewhere can still make the browser send a
//!   form or a `fetch` to `http://127.0.0.1:8080/` with no way to read the answer. A request
//!   that changes something (any method but GET, HEAD and OPTIONS) is refused with 403 when
//!   its `Origin` is `null` or another origin than the host it names, unless the browser
//!   says `Sec-Fetch-Site: same-origin` or the Origin's name is one given with
//!   `--allow-host` (behind a reverse proxy that sends its own Host); with no `Origin`, when
//!   `Sec-Fetch-Site` says `cross-site`. Tools that send neither (curl, the CLI, SDKs) are
//!   not affected; nor are GETs, so image URLs can be embedded in any site.
//!
//! Behind API Gateway the router runs in a function and the gateway's own name is the
//! host: [`layer`] is for `pixq serve` only.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// Which hosts a server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// `None`: any host. `Some`: names of this machine, addresses, and these names
    /// (lowercase, without port or brackets).
    allowed: Option<Vec<String>>,
}

impl HostPolicy {
    /// Answers this machine's names (`localhost`, `*.localhost`), any address (an address
    /// cannot be rebound: a page that names one is on it), and the names in `extra`
    /// (`*`: any host; a port given with a name is ignored, empty entries are skipped). An
    /// entry that is no host name is an error naming it.
    pub fn allowing(extra: &[String]) -> Result<HostPolicy, String> {
        let mut allowed = Vec::new();
        for h in extra.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
            if h == "*" {
                return Ok(HostPolicy { allowed: None });
            }
            if h.contains('*') {
                return Err(format!("--allow-host {h:?}: patterns are not taken; give each name, or * alone for any"));
            }
            let (name, _) = split_host(h).ok_or_else(|| format!("--allow-host {h:?} is not a host name"))?;
            allowed.push(name);
        }
        Ok(HostPolicy { allowed: Some(allowed) })
    }

    /// Whether a request naming `host` (a Host header's value: name or address, maybe a
    /// port; `None` when the request names none) is answered.
    pub fn answers(&self, host: Option<&str>) -> bool {
        let Some(allowed) = &self.allowed else { return true };
        let Some((name, _)) = host.and_then(split_host) else { return false };
        this_machine(&name) || name.parse::<IpAddr>().is_ok() || allowed.contains(&name)
    }

    /// Whether `name` is a public name the server was told it has (`--allow-host`, not `*`,
    /// nor a name of this machine or an address: other servers on this machine have those
    /// too, on other ports).
    fn named(&self, name: &str) -> bool {
        !this_machine(name)
            && name.parse::<IpAddr>().is_err()
            && self.allowed.as_ref().is_some_and(|a| a.iter().any(|n| n == name))
    }
}

/// `name` lowercased, without a trailing dot or IPv6 brackets.
fn normal_host(name: &str) -> String {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n.strip_prefix('[').and_then(|n| n.strip_suffix(']')).map(str::to_string).unwrap_or(n)
}

/// A Host value (`name`, `name:port`, `[v6]`, `[v6]:port`) as its normal name and port;
/// `None` when it is not one.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@') {
        return None;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else if host.matches(':').count() > 1 {
        // An IPv6 address without its brackets.
        return None;
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let name = normal_host(name);
    (!name.is_empty()).then_some((name, port))
}

/// Names that only ever mean this machine: `localhost` and `*.localhost` (RFC 6761; browsers
/// resolve them to loopback themselves) and loopback addresses.
fn this_machine(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host a request names: the authority of an absolute-form target, else `Host`.
fn request_host(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string)
}

/// Why a request with these headers, to `host`, comes from a page of another site; `None`
/// when it does not (or is no browser's).
fn cross_site(headers: &HeaderMap, host: Option<&str>, policy: &HostPolicy) -> Option<&'static str> {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let Some(origin) = headers.get(header::ORIGIN) else {
        return (fetch_site.as_deref() == Some("cross-site")).then_some("the browser says it comes from another site");
    };
    let Ok(origin) = origin.to_str() else { return Some("its Origin is not text") };
    if origin.trim() == "null" {
        return Some("it comes from an opaque origin (Origin: null)");
    }
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        return Some("its Origin is not scheme://host");
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Some("its Origin is not http or https"),
    };
    let Some((o_name, o_port)) = split_host(authority) else { return Some("its Origin does not parse") };
    let same = host.and_then(split_host).is_some_and(|(h_name, h_port)| {
        // A Host without a port names the scheme's default port.
        o_name == h_name && o_port.unwrap_or(default_port) == h_port.unwrap_or(default_port)
    });
    // Behind a reverse proxy that sends its own Host: the browser's own word that the page
    // is this server's (pages cannot set it), or a name the server was told it has.
    if same || fetch_site.as_deref() == Some("same-origin") || policy.named(&o_name) {
        return None;
    }
    Some("its Origin is another site")
}

async fn check(State(policy): State<Arc<HostPolicy>>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    if !policy.answers(host.as_deref()) {
        let shown: String = host.as_deref().unwrap_or("").chars().take(100).collect();
        tracing::info!(host = %shown, "refused a request for a host this server does not answer");
        let msg = match host {
            None => "the request names no host".to_string(),
            Some(_) => format!(
                "this server does not answer for host '{shown}' (start pixq serve with --allow-host NAME to allow a name)"
            ),
        };
        return ApiError::new(StatusCode::MISDIRECTED_REQUEST, msg).into_response();
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && let Some(why) = cross_site(req.headers(), host.as_deref(), &policy) {
        tracing::info!(path = %req.uri().path(), why, "refused a cross-site request");
        return ApiError::new(StatusCode::FORBIDDEN, format!("refused: {why}")).into_response();
    }
    next.run(req).await
}

/// `router` answering only requests `policy` allows, and no cross-site request that changes
/// something.
pub fn layer(router: Router, policy: HostPolicy) -> Router {
    router.layer(axum::middleware::from_fn_with_state(Arc::new(policy), check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_name_and_port_or_not_at_all() {
        let ok = |h: &str, name: &str, port: Option<u16>| assert_eq!(split_host(h), Some((name.into(), port)), "{h}");
        ok("localhost", "localhost", None);
        ok("LocalHost.:8080", "localhost", Some(8080));
        ok("127.0.0.1:80", "127.0.0.1", Some(80));
        ok("[::1]:8080", "::1", Some(8080));
        ok("[::1]", "::1", None);
        ok("example.com", "example.com", None);
        for bad in ["", " ", "a b", "host:", "host:port", "host:123456", "[::1", "[nope]:80", "u@host", "a/b", "::1"] {
            assert_eq!(split_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_server_answers_this_machine_addresses_and_named_hosts_only() {
        let p = HostPolicy::allowing(&[]).unwrap();
        for h in ["localhost", "localhost:8080", "127.0.0.1:8080", "127.1.2.3", "[::1]:8080", "app.localhost:1"] {
            assert!(p.answers(Some(h)), "{h}");
        }
        // An address cannot be rebound to this server: a page that names one is on it.
        assert!(p.answers(Some("192.168.1.5:8080")) && p.answers(Some("[fe80::1]")));
        for h in ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "", "a b"] {
            assert!(!p.answers(Some(h)), "{h}");
        }
        assert!(!p.answers(None));
        let p = HostPolicy::allowing(&["Images.Example.COM.:443".into(), " ".into(), String::new()]).unwrap();
        assert!(p.answers(Some("images.example.com:443")) && p.answers(Some("[::1]:9")));
        assert!(!p.answers(Some("other.example.com")));
        let any = HostPolicy::allowing(&["*".into()]).unwrap();
        assert!(any.answers(Some("anything")) && any.answers(None));
        // Empty entries (an empty PIXQ_ALLOW_HOSTS) change nothing; a bad one is an error.
        assert_eq!(HostPolicy::allowing(&[String::new()]).unwrap(), HostPolicy::allowing(&[]).unwrap());
        for bad in ["a/b", "host:port", "[nope]", "*.example.com"] {
            let e = HostPolicy::allowing(&[bad.into()]).unwrap_err();
            assert!(e.contains("--allow-host"), "{e}");
        }
    }

    #[test]
    fn only_requests_from_another_site_are_cross_site() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        let p = HostPolicy::allowing(&["pixq.example.com".into()]).unwrap();
        let host = Some("127.0.0.1:8080");
        let cross = |headers: &HeaderMap, host: Option<&str>| cross_site(headers, host, &p);
        assert_eq!(cross(&h(&[]), host), None);
        assert_eq!(cross(&h(&[("origin", "http://127.0.0.1:8080")]), host), None);
        assert_eq!(cross(&h(&[("origin", "https://example.com")]), Some("example.com")), None);
        assert_eq!(cross(&h(&[("origin", "http://localhost")]), Some("localhost:80")), None);
        assert_eq!(cross(&h(&[("sec-fetch-site", "same-origin")]), host), None);
        // Behind a proxy that sends its own Host: the browser's word, or a name given.
        assert_eq!(cross(&h(&[("origin", "https://pixq.example.com"), ("sec-fetch-site", "same-origin")]), host), None);
        assert_eq!(cross(&h(&[("origin", "https://pixq.example.com")]), host), None);
        // A name of this machine given with --allow-host is no licence for its other ports.
        let local = HostPolicy::allowing(&["localhost".into()]).unwrap();
        assert!(cross_site(&h(&[("origin", "http://localhost:3000")]), host, &local).is_some());
        for bad in [
            h(&[("origin", "http://evil.example")]),
            h(&[("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")]),
            h(&[("origin", "http://127.0.0.1:9999")]),
            h(&[("origin", "http://127.0.0.1")]),
            h(&[("origin", "http://localhost:3000")]),
            h(&[("origin", "null")]),
            h(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            h(&[("origin", "file://")]),
            h(&[("origin", "127.0.0.1:8080")]),
            h(&[("sec-fetch-site", "cross-site")]),
        ] {
            let host =
                if bad.get("origin").is_some_and(|o| o == "http://localhost:3000") { Some("localhost") } else { host };
            assert!(cross(&bad, host).is_some(), "{bad:?}");
        }
    }
}
