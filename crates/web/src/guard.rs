//! Which requests `pixq serve` answers at all, by where they say they are going and where
//! they come from: the defence of a server on this machine against web pages the user's
//! browser runs.
//!
//! - **Host** (DNS rebinding). A page on `http://evil.example:8080/` can have its name
//!   resolve to 127.0.0.1 a moment later; the browser then treats this server as that
//!   page's own origin, and the page can call the whole API and read its answers. Such a
//!   request still says `Host: evil.example:8080`. A server on a loopback address answers
//!   only names of this machine (`localhost`, `*.localhost`, loopback addresses) and the
//!   names it is told (`--allow-host`); any other gets 421.
//! - **Origin** (cross-site requests). A page elsewhere can still make the browser send a
//!   form or a `fetch` to `http://127.0.0.1:8080/` with no way to read the answer. A request
//!   that changes something (any method but GET, HEAD and OPTIONS) is refused with 403 when
//!   its `Origin` is not this server's own (or is `null`), or, with no `Origin`, when
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
    /// `None`: any host (a server facing other machines by names it does not know).
    /// `Some`: names of this machine, and these (lowercase, without port or brackets).
    allowed: Option<Vec<String>>,
}

impl HostPolicy {
    /// The policy of a server bound to `bind`, also answering `extra` (`*` among them: any
    /// host). On a loopback address only this machine's names are answered (and `extra`);
    /// on another address any host is, unless `extra` names some (then only those, this
    /// machine's names and the bound address itself).
    pub fn for_bind(bind: IpAddr, extra: &[String]) -> HostPolicy {
        if extra.iter().any(|h| h.trim() == "*") || (!bind.is_loopback() && extra.is_empty()) {
            return HostPolicy { allowed: None };
        }
        let mut allowed: Vec<String> = extra.iter().map(|h| normal_host(h.trim())).filter(|h| !h.is_empty()).collect();
        if !bind.is_unspecified() && !bind.is_loopback() {
            allowed.push(bind.to_string());
        }
        HostPolicy { allowed: Some(allowed) }
    }

    /// Any host.
    pub fn any() -> HostPolicy {
        HostPolicy { allowed: None }
    }

    /// Whether a request naming `host` (a Host header's value: name or address, maybe a
    /// port) is answered.
    pub fn answers(&self, host: &str) -> bool {
        let Some(allowed) = &self.allowed else { return true };
        let Some((name, _)) = split_host(host) else { return false };
        this_machine(&name) || allowed.contains(&name)
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

/// Whether a request with these headers, to `host`, comes from a page of another site.
fn cross_site(headers: &HeaderMap, host: Option<&str>) -> Option<&'static str> {
    if let Some(origin) = headers.get(header::ORIGIN) {
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
        let (Some((o_name, o_port)), Some((h_name, h_port))) = (split_host(authority), host.and_then(split_host))
        else {
            return Some("its Origin or Host does not parse");
        };
        let same_port = match h_port {
            Some(p) => o_port.unwrap_or(default_port) == p,
            None => true,
        };
        return (o_name != h_name || !same_port).then_some("its Origin is another site");
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(s) if s.eq_ignore_ascii_case("cross-site") => Some("the browser says it comes from another site"),
        _ => None,
    }
}

async fn check(State(policy): State<Arc<HostPolicy>>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    if !host.as_deref().is_some_and(|h| policy.answers(h)) {
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
    if changes && let Some(why) = cross_site(req.headers(), host.as_deref()) {
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
    fn a_loopback_server_answers_this_machine_and_named_hosts_only() {
        let p = HostPolicy::for_bind("127.0.0.1".parse().unwrap(), &[]);
        for h in ["localhost", "localhost:8080", "127.0.0.1:8080", "127.1.2.3", "[::1]:8080", "app.localhost:1"] {
            assert!(p.answers(h), "{h}");
        }
        for h in ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "10.0.0.1", ""] {
            assert!(!p.answers(h), "{h}");
        }
        let p = HostPolicy::for_bind("::1".parse().unwrap(), &["Images.Example.COM.".into()]);
        assert!(p.answers("images.example.com:443") && p.answers("[::1]:9") && !p.answers("other.example.com"));
        assert!(HostPolicy::for_bind("127.0.0.1".parse().unwrap(), &["*".into()]).answers("anything"));
        // Facing other machines: any name, unless names are given.
        assert!(HostPolicy::for_bind("0.0.0.0".parse().unwrap(), &[]).answers("whatever.example"));
        let p = HostPolicy::for_bind("192.168.1.5".parse().unwrap(), &["pixq.lan".into()]);
        assert!(p.answers("pixq.lan:8080") && p.answers("192.168.1.5:8080") && p.answers("localhost"));
        assert!(!p.answers("evil.example"));
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
        let host = Some("127.0.0.1:8080");
        assert_eq!(cross_site(&h(&[]), host), None);
        assert_eq!(cross_site(&h(&[("origin", "http://127.0.0.1:8080")]), host), None);
        assert_eq!(cross_site(&h(&[("origin", "https://example.com")]), Some("example.com")), None);
        assert_eq!(cross_site(&h(&[("sec-fetch-site", "same-origin")]), host), None);
        for bad in [
            h(&[("origin", "http://evil.example")]),
            h(&[("origin", "http://127.0.0.1:9999")]),
            h(&[("origin", "http://127.0.0.1")]),
            h(&[("origin", "null")]),
            h(&[("origin", "file://")]),
            h(&[("origin", "127.0.0.1:8080")]),
            h(&[("sec-fetch-site", "cross-site")]),
        ] {
            assert!(cross_site(&bad, host).is_some(), "{bad:?}");
        }
    }
}
