//! HTTP/1.1 invocation (sans-IO): find the next request in a connection's
//! receive buffer and decide what to do with it, and build responses.
//!
//! `POST /fn/<name>` with a `Content-Length` body invokes `<name>`. The
//! server calls [`next_request`] in a loop (pipelining: several requests
//! may sit in the buffer), acts on the [`Step`], drains `consumed` bytes and
//! continues; responses go out in request order.

use super::outcome::Status;
use crate::config::functions::valid_name;

/// Headers parsed per request; more is `431`.
pub const MAX_HEADERS: usize = 32;
pub const ROUTE_PREFIX: &str = "/fn/";

/// Bounds applied before a request is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line + headers), bytes.
    pub max_header_bytes: usize,
    /// Largest body accepted for requests answered without invoking (404,
    /// 405): such a body is skipped to keep the connection; larger closes.
    pub max_skip_body: usize,
}

/// What to do with the front of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    /// Read more bytes. `expects_continue`: the head is complete and the
    /// client waits for `100 Continue` before sending the body.
    NeedMore { expects_continue: bool },
    /// Invoke `name` with `body`; answer with `keep_alive`; then drop
    /// `consumed` bytes from the buffer.
    Invoke {
        name: &'a str,
        body: &'a [u8],
        consumed: usize,
        keep_alive: bool,
    },
    /// Answer with `code` and a text body without invoking. When
    /// `keep_alive` is false close after the response (the rest of the
    /// buffer cannot be trusted).
    Respond {
        code: u16,
        text: &'static str,
        consumed: usize,
        keep_alive: bool,
    },
}

fn close(code: u16, text: &'static str) -> Step<'static> {
    Step::Respond {
        code,
        text,
        consumed: 0,
        keep_alive: false,
    }
}

/// Where a request is routed: a valid function name, or why not.
fn route(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(ROUTE_PREFIX)?;
    let name = rest.split_once('?').map_or(rest, |(n, _)| n);
    valid_name(name).then_some(name)
}

/// Decide on the request at the front of `buf`. `max_input(name)` is the
/// named function's `max_input_bytes`, `None` for an unknown function.
/// Never panics on any input.
pub fn next_request<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
    max_input: impl Fn(&str) -> Option<usize>,
) -> Step<'a> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return close(431, "request head too large");
            }
            return Step::NeedMore {
                expects_continue: false,
            };
        }
        Err(httparse::Error::TooManyHeaders) => return close(431, "too many request headers"),
        Err(_) => return close(400, "malformed HTTP request"),
    };
    if head_len > limits.max_header_bytes {
        return close(431, "request head too large");
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return close(400, "malformed HTTP request");
    };
    let mut content_length: Option<usize> = None;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expects_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok());
            match (parsed, content_length) {
                (None, _) => return close(400, "invalid Content-Length"),
                (Some(v), Some(prev)) if v != prev => {
                    return close(400, "conflicting Content-Length headers")
                }
                (Some(v), _) => content_length = Some(v),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return close(
                411,
                "Transfer-Encoding is not supported: send the body with a Content-Length",
            );
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                connection_close |= t.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expects_continue = true;
            } else {
                return close(417, "only Expect: 100-continue is supported");
            }
        }
    }
    let keep_alive = match version {
        1 => !connection_close,
        _ => connection_keep_alive && !connection_close,
    };
    let body_len = content_length.unwrap_or(0);
    let whole = head_len.checked_add(body_len);

    // Answers that do not invoke: skip a bounded body, or close.
    let respond = |code: u16, text: &'static str| -> Step<'a> {
        if body_len > limits.max_skip_body {
            return close(code, text);
        }
        match whole {
            Some(w) if buf.len() >= w => Step::Respond {
                code,
                text,
                consumed: w,
                keep_alive,
            },
            _ => Step::NeedMore { expects_continue },
        }
    };

    let Some(name) = route(path) else {
        return respond(404, "no such function: invoke with POST /fn/<name>");
    };
    let Some(max) = max_input(name) else {
        return respond(404, "no such function on this node");
    };
    if method != "POST" {
        return respond(405, "invoke functions with POST");
    }
    let Some(len) = content_length else {
        return close(411, "send the input with a Content-Length header");
    };
    if len > max {
        return close(413, "input exceeds the function's max_input_bytes");
    }
    match whole {
        Some(w) if buf.len() >= w => Step::Invoke {
            name,
            body: &buf[head_len..w],
            consumed: w,
            keep_alive,
        },
        _ => Step::NeedMore { expects_continue },
    }
}

/// The interim response sent when a client expects `100 Continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Header naming the invocation outcome ([`Status::as_str`]) on every
/// response, so clients can tell a trap from a bad output behind one 500.
pub const STATUS_HEADER: &str = "X-Shardgate-Status";

/// Append a response to `out`. `status` is the invocation outcome (for
/// [`STATUS_HEADER`]); text bodies are `text/plain`, outputs
/// `application/octet-stream`.
pub fn write_response(out: &mut Vec<u8>, code: u16, status: Status, body: &[u8], keep_alive: bool) {
    write_response_from(out, code, status, body, keep_alive, None)
}

/// Header naming the shard that answered (for checking flow steering).
pub const SHARD_HEADER: &str = "X-Shardgate-Shard";

/// [`write_response`] plus [`SHARD_HEADER`] when `shard` is given.
pub fn write_response_from(
    out: &mut Vec<u8>,
    code: u16,
    status: Status,
    body: &[u8],
    keep_alive: bool,
    shard: Option<usize>,
) {
    let ctype = if code == 200 {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    crate::http::head(out, code)
        .header("Content-Type", ctype)
        .header("Content-Length", body.len() + usize::from(code != 200))
        .header(STATUS_HEADER, status.as_str())
        .header_if(SHARD_HEADER, shard)
        .header_if("Allow", (code == 405).then_some("POST"))
        .header_if("Connection", (!keep_alive).then_some("close"))
        .end();
    out.extend_from_slice(body);
    if code != 200 {
        out.push(b'\n');
    }
}

/// The [`Status`] a non-invoking HTTP answer stands for.
pub fn status_of_code(code: u16) -> Status {
    match code {
        200 => Status::Ok,
        404 => Status::NotFound,
        413 => Status::InputTooLarge,
        504 => Status::Deadline,
        503 => Status::Unavailable,
        500 => Status::Trap,
        _ => Status::BadRequest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HttpLimits = HttpLimits {
        max_header_bytes: 1024,
        max_skip_body: 4096,
    };

    fn known(name: &str) -> Option<usize> {
        (name == "echo").then_some(100)
    }

    fn step(buf: &[u8]) -> Step<'_> {
        next_request(buf, &LIMITS, known)
    }

    #[test]
    fn post_invokes_with_body() {
        let req = b"POST /fn/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            step(req),
            Step::Invoke {
                name: "echo",
                body: b"hello",
                consumed: req.len(),
                keep_alive: true
            }
        );
        // A query string is ignored; HTTP/1.0 closes unless asked not to.
        let req = b"POST /fn/echo?x=1 HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            step(req),
            Step::Invoke {
                name: "echo",
                keep_alive: false,
                ..
            }
        ));
        let req = b"POST /fn/echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            step(req),
            Step::Invoke {
                keep_alive: true,
                ..
            }
        ));
        let req = b"POST /fn/echo HTTP/1.1\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            step(req),
            Step::Invoke {
                keep_alive: false,
                ..
            }
        ));
    }

    #[test]
    fn pipelined_requests_one_at_a_time() {
        let one = b"POST /fn/echo HTTP/1.1\r\nContent-Length: 1\r\n\r\na".to_vec();
        let mut buf = one.clone();
        buf.extend_from_slice(b"POST /fn/echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nb");
        let Step::Invoke { body, consumed, .. } = step(&buf) else {
            panic!()
        };
        assert_eq!((body, consumed), (&b"a"[..], one.len()));
        let Step::Invoke { body, .. } = step(&buf[consumed..]) else {
            panic!()
        };
        assert_eq!(body, b"b");
    }

    #[test]
    fn partial_requests_wait() {
        let req = b"POST /fn/echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..req.len() {
            assert!(
                matches!(step(&req[..cut]), Step::NeedMore { .. }),
                "cut at {cut}"
            );
        }
        let req = b"POST /fn/echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            step(req),
            Step::NeedMore {
                expects_continue: true
            }
        );
    }

    fn code(s: Step<'_>) -> (u16, bool) {
        match s {
            Step::Respond {
                code, keep_alive, ..
            } => (code, keep_alive),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_answers() {
        assert_eq!(
            code(step(b"POST /fn/nope HTTP/1.1\r\nContent-Length: 0\r\n\r\n")),
            (404, true)
        );
        assert_eq!(
            code(step(b"POST /other HTTP/1.1\r\nContent-Length: 0\r\n\r\n")),
            (404, true)
        );
        assert_eq!(
            code(step(
                b"POST /fn/a%2fb HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
            )),
            (404, true)
        );
        assert_eq!(code(step(b"GET /fn/echo HTTP/1.1\r\n\r\n")), (405, true));
        assert_eq!(code(step(b"POST /fn/echo HTTP/1.1\r\n\r\n")), (411, false));
        assert_eq!(
            code(step(
                b"POST /fn/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )),
            (411, false)
        );
        assert_eq!(
            code(step(
                b"POST /fn/echo HTTP/1.1\r\nContent-Length: 101\r\n\r\n"
            )),
            (413, false)
        );
        assert_eq!(
            code(step(
                b"POST /fn/echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
            )),
            (400, false)
        );
        assert_eq!(
            code(step(
                b"POST /fn/echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            )),
            (400, false)
        );
        assert_eq!(
            code(step(
                b"POST /fn/echo HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
            )),
            (400, false)
        );
        assert_eq!(code(step(b"\x00\x01garbage\r\n\r\n")), (400, false));
        // A 404 with a body skips the body and keeps the connection.
        let req = b"POST /fn/nope HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST";
        let want = req.len() - b"POST".len();
        assert!(
            matches!(step(req), Step::Respond { code: 404, consumed, keep_alive: true, .. } if consumed == want)
        );
        // ... unless the body is too large to skip.
        let req = b"POST /fn/nope HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
        assert_eq!(code(step(req)), (404, false));
    }

    #[test]
    fn head_bounds() {
        let mut big = b"POST /fn/echo HTTP/1.1\r\n".to_vec();
        while big.len() <= LIMITS.max_header_bytes {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // Still incomplete, but already over the bound.
        assert_eq!(code(step(&big)), (431, false));
        let mut many = b"POST /fn/echo HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(code(step(&many)), (431, false));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(&mut out, 200, Status::Ok, b"abc", true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nX-Shardgate-Status: ok\r\n\r\nabc"
        );
        out.clear();
        write_response(&mut out, 405, Status::BadRequest, b"use POST", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: POST\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Length: 9\r\n") && text.ends_with("\r\n\r\nuse POST\n"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = step(&buf);
        }

        #[test]
        fn prefix_of_valid_request_never_panics(cut in 0usize..80, cl in 0usize..200) {
            let req = format!("POST /fn/echo HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n{}", "x".repeat(cl));
            let b = req.as_bytes();
            let _ = step(&b[..cut.min(b.len())]);
        }
    }
}
