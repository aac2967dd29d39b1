//! The UDP invocation frame (sans-IO): decode a request datagram, encode the
//! reply, and the client side of both.
//!
//! Request (all integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SGFN` |
//! | 4 | 1 | version (1) |
//! | 5 | 1 | kind: 0 = request |
//! | 6 | 8 | request id (echoed in the reply) |
//! | 14 | 1 | name length N (1..=64) |
//! | 15 | N | function name (`A-Z a-z 0-9 _ - .`) |
//! | 15+N | rest | payload (the function's input) |
//!
//! Reply: the same 14-byte header with kind 1, then a status byte
//! ([`Status`]) and the output (status 0) or a UTF-8 error text.
//!
//! Datagrams without the magic, shorter than a header, or of kind reply get
//! no answer (no reflection of stray traffic); a request of another version
//! gets a version-1 reply with status `UnsupportedVersion`.

use super::outcome::Status;
use crate::config::functions::valid_name;

pub const MAGIC: [u8; 4] = *b"SGFN";
pub const VERSION: u8 = 1;
pub const KIND_REQUEST: u8 = 0;
pub const KIND_REPLY: u8 = 1;
/// Magic, version, kind, request id.
pub const HEADER_LEN: usize = 14;
/// Reply header: [`HEADER_LEN`] + status byte.
pub const REPLY_HEADER_LEN: usize = HEADER_LEN + 1;

/// A decoded request, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: u64,
    pub name: &'a [u8],
    pub payload: &'a [u8],
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Request(Request<'a>),
    /// Answer with an error reply (status and text) to this request id.
    Reject {
        id: u64,
        status: Status,
        why: &'static str,
    },
    /// Send nothing.
    Drop,
}

/// Decode a request datagram. Never panics.
pub fn decode_request(d: &[u8]) -> Decoded<'_> {
    if d.len() < HEADER_LEN || d[..4] != MAGIC || d[5] != KIND_REQUEST {
        return Decoded::Drop;
    }
    let id = u64::from_be_bytes(d[6..14].try_into().unwrap_or_default());
    if d[4] != VERSION {
        return Decoded::Reject {
            id,
            status: Status::UnsupportedVersion,
            why: "unsupported frame version: this node speaks version 1",
        };
    }
    let Some(&n) = d.get(HEADER_LEN) else {
        return Decoded::Reject {
            id,
            status: Status::BadRequest,
            why: "frame ends before the function name length",
        };
    };
    let n = usize::from(n);
    let Some(name) = d.get(HEADER_LEN + 1..HEADER_LEN + 1 + n) else {
        return Decoded::Reject {
            id,
            status: Status::BadRequest,
            why: "frame ends inside the function name",
        };
    };
    if !std::str::from_utf8(name).is_ok_and(valid_name) {
        return Decoded::Reject {
            id,
            status: Status::BadRequest,
            why: "bad function name: use 1-64 characters of A-Z a-z 0-9 _ - .",
        };
    }
    Decoded::Request(Request {
        id,
        name,
        payload: &d[HEADER_LEN + 1 + n..],
    })
}

fn header(out: &mut Vec<u8>, kind: u8, id: u64) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Start a reply in `out` (cleared): header and status; append the body
/// after it (the function output, or use [`encode_error`]).
pub fn begin_reply(out: &mut Vec<u8>, id: u64, status: Status) {
    out.clear();
    header(out, KIND_REPLY, id);
    out.push(status as u8);
}

/// A whole error reply: header, status, text.
pub fn encode_error(out: &mut Vec<u8>, id: u64, status: Status, text: &str) {
    begin_reply(out, id, status);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
/// Set the status byte of a reply started with [`begin_reply`].
pub fn set_status(out: &mut [u8], status: Status) {
    if let Some(b) = out.get_mut(HEADER_LEN) {
        *b = status as u8;
    }
}

/// Client side: encode a request. `name` must be a valid function name.
pub fn encode_request(
    out: &mut Vec<u8>,
    id: u64,
    name: &str,
    payload: &[u8],
) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!(
            "{name:?} is not a valid function name: use 1-64 characters of A-Z a-z 0-9 _ - ."
        ));
    }
    out.clear();
    header(out, KIND_REQUEST, id);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A decoded reply, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    pub id: u64,
    /// `Err(code)` for a status byte this client does not know.
    pub status: Result<Status, u8>,
    pub body: &'a [u8],
}

/// Client side: decode a reply datagram; `None` if it is not one.
pub fn decode_reply(d: &[u8]) -> Option<Reply<'_>> {
    if d.len() < REPLY_HEADER_LEN || d[..4] != MAGIC || d[4] != VERSION || d[5] != KIND_REPLY {
        return None;
    }
    let id = u64::from_be_bytes(d[6..14].try_into().ok()?);
    let code = d[HEADER_LEN];
    Some(Reply {
        id,
        status: Status::from_u8(code).ok_or(code),
        body: &d[REPLY_HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            0xdead_beef_0102_0304,
            "classify",
            b"\x45\x00payload",
        )
        .unwrap();
        match decode_request(&buf) {
            Decoded::Request(r) => {
                assert_eq!(r.id, 0xdead_beef_0102_0304);
                assert_eq!(r.name, b"classify");
                assert_eq!(r.payload, b"\x45\x00payload");
            }
            other => panic!("{other:?}"),
        }
        // Empty payload is a valid request.
        encode_request(&mut buf, 7, "f", b"").unwrap();
        assert!(matches!(
            decode_request(&buf),
            Decoded::Request(Request {
                id: 7,
                payload: b"",
                ..
            })
        ));
    }

    #[test]
    fn reply_round_trip() {
        let mut buf = Vec::new();
        begin_reply(&mut buf, 42, Status::Ok);
        buf.extend_from_slice(b"out");
        let r = decode_reply(&buf).unwrap();
        assert_eq!((r.id, r.status, r.body), (42, Ok(Status::Ok), &b"out"[..]));
        set_status(&mut buf, Status::OutputTooLarge);
        assert_eq!(
            decode_reply(&buf).unwrap().status,
            Ok(Status::OutputTooLarge)
        );
        encode_error(&mut buf, 9, Status::Deadline, "late");
        let r = decode_reply(&buf).unwrap();
        assert_eq!(
            (r.id, r.status, r.body),
            (9, Ok(Status::Deadline), &b"late"[..])
        );
        // A request is not a reply and vice versa.
        encode_request(&mut buf, 1, "f", b"x").unwrap();
        assert!(decode_reply(&buf).is_none());
        begin_reply(&mut buf, 1, Status::Ok);
        assert_eq!(decode_request(&buf), Decoded::Drop);
    }

    #[test]
    fn bad_frames() {
        assert_eq!(decode_request(b""), Decoded::Drop);
        assert_eq!(decode_request(b"GET / HTTP/1.1\r\n\r\n"), Decoded::Drop);
        let mut buf = Vec::new();
        encode_request(&mut buf, 5, "abc", b"").unwrap();
        buf[4] = 2;
        assert!(matches!(
            decode_request(&buf),
            Decoded::Reject {
                id: 5,
                status: Status::UnsupportedVersion,
                ..
            }
        ));
        buf[4] = VERSION;
        // Name length runs past the end.
        buf[HEADER_LEN] = 10;
        assert!(matches!(
            decode_request(&buf),
            Decoded::Reject {
                status: Status::BadRequest,
                ..
            }
        ));
        // No name length byte at all.
        assert!(matches!(
            decode_request(&buf[..HEADER_LEN]),
            Decoded::Reject {
                status: Status::BadRequest,
                ..
            }
        ));
        // Zero-length and invalid names.
        buf[HEADER_LEN] = 0;
        assert!(matches!(
            decode_request(&buf),
            Decoded::Reject {
                status: Status::BadRequest,
                ..
            }
        ));
        buf[HEADER_LEN] = 3;
        buf[HEADER_LEN + 1] = b'/';
        assert!(matches!(
            decode_request(&buf),
            Decoded::Reject {
                status: Status::BadRequest,
                ..
            }
        ));
        assert!(encode_request(&mut buf, 1, "a/b", b"").is_err());
        assert!(encode_request(&mut buf, 1, &"x".repeat(65), b"").is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode_request(&d);
            let _ = decode_reply(&d);
        }

        #[test]
        fn requests_round_trip(
            id in proptest::prelude::any::<u64>(),
            name in "[A-Za-z0-9_.-]{1,64}",
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut buf = Vec::new();
            encode_request(&mut buf, id, &name, &payload).unwrap();
            let want = Decoded::Request(Request { id, name: name.as_bytes(), payload: &payload });
            proptest::prop_assert_eq!(decode_request(&buf), want);
        }
    }

    #[test]
    fn decoding_never_panics() {
        // Every prefix of a valid frame, and every single-byte corruption.
        let mut buf = Vec::new();
        encode_request(&mut buf, 3, "name", b"data").unwrap();
        for len in 0..=buf.len() {
            let _ = decode_request(&buf[..len]);
            let _ = decode_reply(&buf[..len]);
        }
        for i in 0..buf.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = buf.clone();
                b[i] = v;
                let _ = decode_request(&b);
                let _ = decode_reply(&b);
            }
        }
    }
}
