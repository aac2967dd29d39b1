//! Function invocation datagrams for the load generator: request templates
//! built once with the function service's own frame encoder
//! ([`shardgate::functions::frame`]), the request id patched per send, replies
//! decoded with its decoder and judged by their status byte.

use super::codec::{Outcome, UdpCodec};
use shardgate::functions::frame;
use shardgate::functions::Status;

/// Where the 8-byte request id sits in a frame.
const ID_AT: usize = frame::HEADER_LEN - 8;

/// Error kind for a reply status this client does not know.
pub const UNKNOWN_STATUS: &str = "unknown status";

/// The fn-udp codec: one template per payload.
#[derive(Debug, Clone)]
pub struct FnUdpCodec {
    templates: Vec<Vec<u8>>,
    max_len: usize,
}

impl FnUdpCodec {
    /// Requests invoking `name`, cycling through `payloads`.
    pub fn new(name: &str, payloads: &[Vec<u8>]) -> Result<FnUdpCodec, String> {
        let mut templates = Vec::with_capacity(payloads.len());
        for p in payloads {
            let mut t = Vec::new();
            frame::encode_request(&mut t, 0, name, p)?;
            templates.push(t);
        }
        if templates.is_empty() {
            return Err("no payload to send".into());
        }
        let max_len = templates.iter().map(Vec::len).max().unwrap_or(0);
        if max_len > 65_507 {
            return Err(format!(
                "a request frame of {max_len} bytes does not fit in a UDP datagram; \
                 use a smaller payload or fn-http"
            ));
        }
        Ok(FnUdpCodec { templates, max_len })
    }
}

/// Error kind of a status, as the summary prints it.
pub fn status_kind(s: Status) -> &'static str {
    s.as_str()
}

impl UdpCodec for FnUdpCodec {
    fn id_space(&self) -> u32 {
        1 << 16
    }

    fn items(&self) -> usize {
        self.templates.len()
    }

    fn max_request_len(&self) -> usize {
        self.max_len
    }

    fn encode(&self, item: usize, id: u32, buf: &mut [u8]) -> usize {
        let t = &self.templates[item];
        buf[..t.len()].copy_from_slice(t);
        buf[ID_AT..ID_AT + 8].copy_from_slice(&u64::from(id).to_be_bytes());
        t.len()
    }

    fn reply_id(&self, reply: &[u8]) -> Option<u32> {
        let r = frame::decode_reply(reply)?;
        u32::try_from(r.id).ok().filter(|&id| id < self.id_space())
    }

    fn classify(&self, _item: usize, reply: &[u8]) -> Outcome {
        match frame::decode_reply(reply).map(|r| r.status) {
            Some(Ok(Status::Ok)) => Outcome::Ok,
            Some(Ok(s)) => Outcome::Error(status_kind(s)),
            Some(Err(_)) | None => Outcome::Error(UNKNOWN_STATUS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_on_the_server_side_with_the_patched_id() {
        let c = FnUdpCodec::new("echo", &[b"one".to_vec(), b"three".to_vec()]).unwrap();
        let mut buf = vec![0u8; c.max_request_len()];
        let n = c.encode(1, 0xabcd, &mut buf);
        match frame::decode_request(&buf[..n]) {
            frame::Decoded::Request(r) => {
                assert_eq!(r.id, 0xabcd);
                assert_eq!(r.name, b"echo");
                assert_eq!(r.payload, b"three");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn replies_are_judged_by_status() {
        let c = FnUdpCodec::new("f", &[vec![]]).unwrap();
        let mut r = Vec::new();
        frame::begin_reply(&mut r, 77, Status::Ok);
        assert_eq!(c.reply_id(&r), Some(77));
        assert_eq!(c.classify(0, &r), Outcome::Ok);
        frame::encode_error(&mut r, 78, Status::Trap, "unreachable");
        assert_eq!(c.classify(0, &r), Outcome::Error("trap"));
        frame::encode_error(&mut r, 1 << 40, Status::Deadline, "late");
        assert_eq!(c.reply_id(&r), None, "id outside our space");
        let mut req = Vec::new();
        frame::encode_request(&mut req, 1, "f", b"").unwrap();
        assert_eq!(c.reply_id(&req), None, "a request is not a reply");
        r[frame::HEADER_LEN] = 200;
        assert_eq!(c.classify(0, &r), Outcome::Error(UNKNOWN_STATUS));
    }

    #[test]
    fn bad_names_and_sizes_are_refused() {
        assert!(FnUdpCodec::new("a/b", &[vec![]]).is_err());
        assert!(FnUdpCodec::new("f", &[]).is_err());
        assert!(FnUdpCodec::new("f", &[vec![0; 70_000]]).is_err());
    }
}
