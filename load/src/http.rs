//! HTTP/1.1 client side for `fn-http` load (sans-IO): the keep-alive
//! `POST /fn/<name>` request built once, and responses cut out of a
//! connection's receive buffer one at a time (pipelined responses arrive in
//! request order), judged by status code and the function service's
//! `X-Shardgate-Status` header.

use super::codec::Outcome;
use shardgate::functions::http::STATUS_HEADER;
use shardgate::functions::Status;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Build the request sent for every invocation (keep-alive is HTTP/1.1's
/// default, so no `Connection` header).
pub fn build_request(host: &str, function: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /fn/{function} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// One response cut from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Bytes of the buffer it took (head and body).
    pub consumed: usize,
    pub code: u16,
    pub outcome: Outcome,
    /// The server will close the connection after it.
    pub close: bool,
}

/// What the front of the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    NeedMore,
    /// An interim `1xx` response of this many bytes: drop it and go on.
    Interim(usize),
    Response(Response),
}

/// Why a connection's byte stream cannot be read as HTTP responses; the
/// connection is closed and its requests counted under this kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    Malformed,
    HeadTooLarge,
    BodyTooLarge,
    /// Neither `Content-Length` nor an empty-body status.
    NoLength,
}

impl HttpError {
    pub fn kind(self) -> &'static str {
        match self {
            HttpError::Malformed => "malformed HTTP response",
            HttpError::HeadTooLarge => "HTTP response head too large",
            HttpError::BodyTooLarge => "HTTP response body too large",
            HttpError::NoLength => "HTTP response without Content-Length",
        }
    }
}

/// Error kind for a status code without an `X-Shardgate-Status` header.
pub fn code_kind(code: u16) -> &'static str {
    match code {
        301 | 302 | 303 | 307 | 308 => "http-3xx redirect",
        400 => "http-400",
        404 => "http-404",
        405 => "http-405",
        411 => "http-411",
        413 => "http-413",
        429 => "http-429",
        431 => "http-431",
        500 => "http-500",
        502 => "http-502",
        503 => "http-503",
        504 => "http-504",
        c if (400..500).contains(&c) => "http-4xx other",
        c if (500..600).contains(&c) => "http-5xx other",
        _ => "http-other",
    }
}

fn status_named(v: &[u8]) -> Option<Status> {
    let v = std::str::from_utf8(v).ok()?.trim();
    (0..=u8::MAX)
        .filter_map(Status::from_u8)
        .find(|s| s.as_str() == v)
}

/// Cut the next response from `buf`. Never panics on any input.
pub fn parse_response(buf: &[u8]) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(Parsed::NeedMore)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    let code = resp.code.ok_or(HttpError::Malformed)?;
    if (100..200).contains(&code) {
        return Ok(Parsed::Interim(head));
    }
    let mut len: Option<usize> = None;
    let mut close = resp.version == Some(0);
    let mut status = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or(HttpError::Malformed)?;
            if len.is_some_and(|l| l != v) {
                return Err(HttpError::Malformed);
            }
            len = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::NoLength);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                close = true;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case(STATUS_HEADER) {
            status = status_named(h.value);
        }
    }
    let len = match (len, code) {
        (Some(l), _) => l,
        (None, 204 | 304) => 0,
        (None, _) => return Err(HttpError::NoLength),
    };
    if len > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    if buf.len() - head < len {
        return Ok(Parsed::NeedMore);
    }
    let outcome = match (code, status) {
        (200, None | Some(Status::Ok)) => Outcome::Ok,
        (_, Some(s)) if s != Status::Ok => Outcome::Error(s.as_str()),
        _ => Outcome::Error(code_kind(code)),
    };
    Ok(Parsed::Response(Response {
        consumed: head + len,
        code,
        outcome,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate::functions::http as server;

    fn respond(code: u16, status: Status, body: &[u8], keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::new();
        server::write_response(&mut out, code, status, body, keep_alive);
        out
    }

    #[test]
    fn request_is_what_the_server_routes() {
        let req = build_request("127.0.0.1:8054", "echo", b"hello");
        let limits = server::HttpLimits {
            max_header_bytes: 4096,
            max_skip_body: 0,
        };
        match server::next_request(&req, &limits, |_| Some(100)) {
            server::Step::Invoke {
                name,
                body,
                consumed,
                keep_alive,
            } => {
                assert_eq!((name, body, consumed), ("echo", &b"hello"[..], req.len()));
                assert!(keep_alive);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_responses_parse_pipelined_and_in_pieces() {
        let mut stream = respond(200, Status::Ok, b"out", true);
        stream.extend(respond(500, Status::Trap, b"unreachable", true));
        stream.extend(respond(504, Status::Deadline, b"late", false));
        let mut at = 0;
        let mut got = vec![];
        for _ in 0..3 {
            // Every strict prefix of the next response needs more bytes.
            let Parsed::Response(r) = parse_response(&stream[at..]).unwrap() else {
                panic!("expected a response");
            };
            for cut in 0..r.consumed {
                assert_eq!(
                    parse_response(&stream[at..at + cut]).unwrap(),
                    Parsed::NeedMore
                );
            }
            got.push((r.code, r.outcome, r.close));
            at += r.consumed;
        }
        assert_eq!(at, stream.len());
        assert_eq!(
            got,
            vec![
                (200, Outcome::Ok, false),
                (500, Outcome::Error("trap"), false),
                (504, Outcome::Error("deadline"), true),
            ]
        );
    }

    #[test]
    fn other_servers_and_bad_streams() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(plain).unwrap(),
            Parsed::Response(Response {
                outcome: Outcome::Error("http-404"),
                ..
            })
        ));
        let cont = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(parse_response(cont).unwrap(), Parsed::Interim(25));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(old).unwrap(),
            Parsed::Response(Response { close: true, .. })
        ));
        assert_eq!(
            parse_response(b"garbage\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::NoLength)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(HttpError::BodyTooLarge)
        );
        let long = [b'a'; MAX_HEAD + 1];
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.extend_from_slice(&long);
        assert_eq!(parse_response(&big), Err(HttpError::HeadTooLarge));
        for len in 0..60 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let _ = parse_response(&junk);
        }
    }
}
