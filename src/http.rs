//! HTTP/1.1 response heads, written once for every HTTP surface: the
//! admin listener, function invocation over HTTP and the hand-off's
//! redirects. Sans-IO: bytes appended to a buffer. (Each surface parses
//! its own requests: they accept different things.)

use std::fmt::Display;
use std::io::Write as _;

/// Reason phrase of every status code shardgate sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A response head being appended to a buffer: the status line from
/// [`head`], then [`Head::header`]s in order, then [`Head::end`].
pub struct Head<'a> {
    out: &'a mut Vec<u8>,
}

/// Start a response with status `code` in `out`.
pub fn head(out: &mut Vec<u8>, code: u16) -> Head<'_> {
    let _ = write!(out, "HTTP/1.1 {code} {}\r\n", reason(code));
    Head { out }
}

impl Head<'_> {
    /// One header line. CR and LF are left out of the value, so no value
    /// can split the head.
    pub fn header(self, name: &str, value: impl Display) -> Self {
        let start = self.out.len();
        let _ = write!(self.out, "{name}: {value}");
        let mut i = start + name.len() + 2;
        while i < self.out.len() {
            if matches!(self.out[i], b'\r' | b'\n') {
                self.out.remove(i);
            } else {
                i += 1;
            }
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// [`header`](Self::header) when `value` is given.
    pub fn header_if(self, name: &str, value: Option<impl Display>) -> Self {
        match value {
            Some(v) => self.header(name, v),
            None => self,
        }
    }

    /// The blank line that ends the head; the body follows.
    pub fn end(self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_a_status_line_then_headers_then_a_blank_line() {
        let mut out = Vec::new();
        head(&mut out, 503)
            .header("Retry-After", 1)
            .header_if("X-Shard", Some(3))
            .header_if("X-None", None::<u8>)
            .end();
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nX-Shard: 3\r\n\r\n"
        );
    }

    #[test]
    fn a_value_cannot_split_the_head() {
        let mut out = Vec::new();
        head(&mut out, 307)
            .header("Location", "http://a/\r\nSet-Cookie: x")
            .end();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://a/Set-Cookie: x\r\n\r\n"
        );
        assert_eq!(reason(299), "Unknown");
    }
}
