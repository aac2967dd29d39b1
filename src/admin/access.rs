//! Browser defence of the admin listener (pure): which parsed requests are
//! refused before routing because a web browser, not an operator's tool,
//! sent them.
//!
//! A page open in a browser on the host can reach `127.0.0.1:9353`: a
//! "simple" cross-site request (a form POST with `text/plain`) needs no
//! CORS preflight, and DNS rebinding lets a page on `evil.example` read
//! responses under a name that resolves to 127.0.0.1. Operators' tools
//! (curl, Prometheus, kubelet probes, scripts) send none of a browser's
//! marks, so the policy is:
//!
//! - a request with an `Origin` header, or a `Sec-Fetch-Site` other than
//!   `none` (a user typing the URL), is refused with 403;
//! - the `Host` header, when present, must be an IP literal, `localhost`
//!   (or a name under `.localhost`), or one of `server.admin_hosts`:
//!   a rebinding page's requests carry its own name, which is refused;
//! - `POST` and `PUT` (and any request with a body) need
//!   `Content-Type: application/json`, which a browser cannot send
//!   cross-site without a preflight that this listener never grants.
//!   `DELETE` without a body is never a simple request, so it needs none.

use std::net::IpAddr;

use super::http::{Request, Response};

/// Why a request was refused (the metrics `route` label is `refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An `Origin` header: a browser's cross-origin or same-origin fetch.
    Origin(String),
    /// `Sec-Fetch-Site` other than `none`.
    FetchSite(String),
    /// A `Host` that is not an IP literal, `localhost` or a configured name.
    Host(String),
    /// A state-changing request without `Content-Type: application/json`.
    ContentType(Option<String>),
}

impl Refusal {
    /// The response to send (then close the connection).
    pub fn response(&self) -> Response {
        match self {
            Refusal::Origin(o) => Response::error(
                403,
                &format!(
                    "browser-originated request refused (Origin: {o}): the admin API is for \
                     tools such as curl, which send no Origin header"
                ),
            ),
            Refusal::FetchSite(s) => Response::error(
                403,
                &format!(
                    "browser-originated request refused (Sec-Fetch-Site: {s}): the admin API \
                     is for tools such as curl"
                ),
            ),
            Refusal::Host(h) => Response::error(
                403,
                &format!(
                    "Host {h:?} is not an IP address, localhost or a name in server.admin_hosts; \
                     use the address, or add the name to server.admin_hosts"
                ),
            ),
            Refusal::ContentType(ct) => Response::error(
                415,
                &format!(
                    "Content-Type {} refused: changes need Content-Type: application/json \
                     (curl: -H 'Content-Type: application/json')",
                    ct.as_deref().unwrap_or("(none)")
                ),
            ),
        }
    }
}

/// Check one request; `Err` = refuse it. `hosts`: the configured extra
/// names (`server.admin_hosts`), compared case-insensitively.
pub fn check(req: &Request, hosts: &[String]) -> Result<(), Refusal> {
    if let Some(o) = &req.origin {
        return Err(Refusal::Origin(o.clone()));
    }
    if let Some(s) = &req.sec_fetch_site {
        if !s.eq_ignore_ascii_case("none") {
            return Err(Refusal::FetchSite(s.clone()));
        }
    }
    if let Some(h) = &req.host {
        if !host_allowed(h, hosts) {
            return Err(Refusal::Host(h.clone()));
        }
    }
    let changes = matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") || !req.body.is_empty();
    if changes && !is_json(req.content_type.as_deref()) {
        return Err(Refusal::ContentType(req.content_type.clone()));
    }
    Ok(())
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn is_json(ct: Option<&str>) -> bool {
    ct.and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a `Host` header value (name or address, optional port) is one
/// the listener answers to.
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let host = host.trim();
    // [v6]:port or [v6]
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((addr, tail)) => {
                addr.parse::<std::net::Ipv6Addr>().is_ok() && (tail.is_empty() || port(tail))
            }
            None => false,
        };
    }
    let name = match host.rsplit_once(':') {
        Some((n, p)) if port(&format!(":{p}")) => n,
        Some(_) => return false,
        None => host,
    };
    if name.is_empty() {
        return false;
    }
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || names.iter().any(|n| {
            let n = n.strip_suffix('.').unwrap_or(n);
            n.eq_ignore_ascii_case(&name)
        })
}

/// `:digits` (a port suffix).
fn port(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let mut text = format!("{method} /v1/changes HTTP/1.1\r\n");
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        match super::super::http::parse(text.as_bytes()) {
            super::super::http::Parsed::Complete { request, .. } => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_browser_marks() {
        let json = ("Content-Type", "application/json");
        let r = req("POST", &[("Host", "127.0.0.1:9353"), json], "[]");
        assert_eq!(check(&r, &[]), Ok(()));
        let r = req("GET", &[("Origin", "https://evil.example")], "");
        assert!(matches!(check(&r, &[]), Err(Refusal::Origin(_))));
        let r = req("GET", &[("Origin", "null")], "");
        assert!(matches!(check(&r, &[]), Err(Refusal::Origin(_))));
        let r = req("GET", &[("Sec-Fetch-Site", "cross-site")], "");
        assert!(matches!(check(&r, &[]), Err(Refusal::FetchSite(_))));
        let r = req("GET", &[("Sec-Fetch-Site", "same-origin")], "");
        assert!(matches!(check(&r, &[]), Err(Refusal::FetchSite(_))));
        let r = req("GET", &[("Sec-Fetch-Site", "none")], "");
        assert_eq!(check(&r, &[]), Ok(()));
        assert_eq!(
            Refusal::Origin("x".into()).response().status,
            403,
            "browser marks are refused with 403"
        );
    }

    #[test]
    fn state_changes_need_json() {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let r = req("POST", &[("Content-Type", ct)], "[]");
            assert!(
                matches!(check(&r, &[]), Err(Refusal::ContentType(_))),
                "{ct}"
            );
        }
        let r = req("POST", &[], "");
        assert_eq!(check(&r, &[]), Err(Refusal::ContentType(None)));
        let r = req(
            "PUT",
            &[("Content-Type", "Application/JSON; charset=utf-8")],
            "{}",
        );
        assert_eq!(check(&r, &[]), Ok(()));
        // DELETE without a body is never a simple (preflight-free) request
        let r = req("DELETE", &[], "");
        assert_eq!(check(&r, &[]), Ok(()));
        let r = req("DELETE", &[("Content-Type", "text/plain")], "x");
        assert!(check(&r, &[]).is_err());
        let r = req("GET", &[], "");
        assert_eq!(check(&r, &[]), Ok(()));
        assert_eq!(Refusal::ContentType(None).response().status, 415);
    }

    #[test]
    fn host_must_be_an_address_localhost_or_configured() {
        let names = vec!["admin.node7.example".to_string()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9353",
            "[::1]:9353",
            "[::1]",
            "10.0.0.5",
            "localhost",
            "LOCALHOST:9353",
            "localhost.",
            "a.localhost",
            "admin.node7.example:9353",
            "Admin.Node7.Example.",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9353",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "[evil]:80",
            "127.0.0.1:http",
            "",
            ":9353",
            "node7.example",
        ] {
            assert!(!host_allowed(bad, &names), "{bad}");
        }
        let r = req("GET", &[("Host", "rebind.evil.example")], "");
        assert!(matches!(check(&r, &names), Err(Refusal::Host(_))));
        // HTTP/1.0 tools may send no Host at all
        let r = req("GET", &[], "");
        assert_eq!(check(&r, &names), Ok(()));
    }
}
