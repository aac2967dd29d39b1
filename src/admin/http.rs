//! Sans-IO HTTP/1.1 for the admin listener: bytes in, a parsed [`Request`]
//! (or "need more bytes", or an error [`Response`]) out; a [`Response`] out
//! as bytes. No sockets here; the listener moves the bytes.
//!
//! Deliberately small: `Content-Length` bodies only (chunked uploads get
//! 411), bounded head and body, keep-alive when the client asks for it.
//! Never panics on peer input.

/// Largest request head (request line and headers), bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body, bytes (a batch of map changes).
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 48;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query string, still percent-encoded.
    pub path: String,
    /// The query string after `?`, if any.
    pub query: Option<String>,
    /// The `Authorization` header value.
    pub authorization: Option<String>,
    /// `Host`, `Origin`, `Sec-Fetch-Site` and `Content-Type` (for the
    /// browser defence in [`super::access`]).
    pub host: Option<String>,
    pub origin: Option<String>,
    pub sec_fetch_site: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// The value of query parameter `key` (percent-decoded), if present.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == key)
                .then(|| percent_decode(v))
                .flatten()
        })
    }
}

/// What [`parse`] found in the bytes so far.
#[derive(Debug)]
pub enum Parsed {
    /// A whole request; `consumed` bytes of the buffer belong to it.
    Complete { request: Request, consumed: usize },
    /// Not enough bytes yet.
    Partial,
    /// A request that cannot be served; send this and close.
    Invalid(Response),
}

/// Parse one request from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Parsed::Invalid(Response::text(431, "request head too large\n"));
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid(Response::text(431, "too many request headers\n"))
        }
        Err(e) => return Parsed::Invalid(Response::text(400, &format!("bad request: {e}\n"))),
    };
    if head_len > MAX_HEAD {
        return Parsed::Invalid(Response::text(431, "request head too large\n"));
    }
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);

    let mut content_length: Option<usize> = None;
    let mut authorization = None;
    let (mut host, mut origin, mut sec_fetch_site, mut content_type) = (None, None, None, None);
    let mut connection_close = http10;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if content_length.is_none_or(|m| m == n) => content_length = Some(n),
                _ => return Parsed::Invalid(Response::text(400, "bad Content-Length\n")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Invalid(Response::text(
                411,
                "chunked bodies are not accepted: send Content-Length\n",
            ));
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("host") {
            // Two different Host headers: refuse rather than pick one.
            if host.as_deref().is_some_and(|h: &str| h != value) {
                return Parsed::Invalid(Response::text(400, "more than one Host header\n"));
            }
            host = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("origin") {
            origin = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("sec-fetch-site") {
            sec_fetch_site = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                connection_close = true;
            } else if v.contains("keep-alive") {
                connection_close = false;
            }
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY {
        return Parsed::Invalid(Response::text(
            413,
            &format!("request body larger than {MAX_BODY} bytes: split the change\n"),
        ));
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Parsed::Partial;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    Parsed::Complete {
        request: Request {
            method,
            path,
            query,
            authorization,
            host,
            origin,
            sec_fetch_site,
            content_type,
            body: buf[head_len..total].to_vec(),
            keep_alive: !connection_close,
        },
        consumed: total,
    }
}

/// Whether `buf` starts with a whole request head (its body may still be
/// on the way).
pub fn head_complete(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    matches!(req.parse(buf), Ok(httparse::Status::Complete(_)))
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers, e.g. `("Allow", "GET")`.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// A JSON error body `{"error": message}` (plus `problems` when given).
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Serialize with `Connection: keep-alive` or `close`. A `HEAD` request
    /// gets the headers only.
    pub fn to_bytes(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        let mut head = crate::http::head(&mut out, self.status)
            .header("Content-Type", self.content_type)
            .header("Content-Length", self.body.len())
            .header("Cache-Control", "no-store")
            .header(
                "Connection",
                if keep_alive { "keep-alive" } else { "close" },
            );
        for (name, value) in &self.headers {
            head = head.header(name, value);
        }
        head.end();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Decode `%XX` escapes (and nothing else: `+` stays `+`). `None` when an
/// escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Compare two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse(buf) {
            Parsed::Complete { request, consumed } => (request, consumed),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_get_with_query_and_auth() {
        let raw = b"GET /v1/views/a%2Fb?data=10.0.0.1&x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\nGET /next";
        let (r, n) = complete(raw);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v1/views/a%2Fb");
        assert_eq!(r.query_param("data").as_deref(), Some("10.0.0.1"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("y"), None);
        assert_eq!(r.authorization.as_deref(), Some("Bearer s3cret"));
        assert!(r.keep_alive);
        assert_eq!(&raw[n..], b"GET /next");
    }

    #[test]
    fn waits_for_the_whole_body_and_keeps_pipelined_bytes() {
        let raw = b"POST /v1/reload HTTP/1.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab";
        assert!(matches!(parse(raw), Parsed::Partial));
        let mut full = raw.to_vec();
        full.extend_from_slice(b"cdEXTRA");
        let (r, n) = complete(&full);
        assert_eq!(r.body, b"abcd");
        assert!(!r.keep_alive);
        assert_eq!(&full[n..], b"EXTRA");
    }

    #[test]
    fn http10_closes_by_default() {
        let (r, _) = complete(b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
    }

    #[test]
    fn rejects_bad_input_with_a_status() {
        let status = |raw: &[u8]| match parse(raw) {
            Parsed::Invalid(resp) => resp.status,
            other => panic!("expected an error for {raw:?}, got {other:?}"),
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
        assert_eq!(status(b"G\x00T / HTTP/1.1\r\n\r\n"), 400);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many), 431);
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert_eq!(status(&huge), 431);
    }

    #[test]
    fn never_panics_on_prefixes_of_requests() {
        let raw =
            b"PUT /v1/views/x HTTP/1.1\r\nContent-Length: 2\r\nAuthorization: Bearer t\r\n\r\n{}";
        for n in 0..raw.len() {
            assert!(matches!(parse(&raw[..n]), Parsed::Partial), "at {n}");
        }
        assert!(matches!(parse(raw), Parsed::Complete { .. }));
        // Arbitrary bytes: whatever the result, no panic.
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 0xff) as u8
                })
                .collect();
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn serializes_responses() {
        let r = Response::text(405, "no\n").with_header("Allow", "GET\r\nX: y");
        let bytes = String::from_utf8(r.to_bytes(false, false)).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(bytes.contains("Content-Length: 3\r\n"));
        assert!(bytes.contains("Connection: close\r\n"));
        assert!(bytes.contains("Allow: GETX: y\r\n"));
        assert!(bytes.ends_with("\r\n\r\nno\n"));
        let head = String::from_utf8(r.to_bytes(true, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 3"));
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(
            percent_decode("10.1.0.7%2F32").as_deref(),
            Some("10.1.0.7/32")
        );
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
