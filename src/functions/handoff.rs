//! The function surfaces under the hand-off: the gated UDP handler (the
//! admission decides per invocation; a cold function is handed off while
//! it warms), and the HTTP verdict (serve, 307 to the alternate, 503) with
//! its answer bytes.

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::UdpSocket;

use super::frame::{self as fnframe, Decoded};
use super::http;
use super::outcome::Status;
use super::per_shard::{Lookup, Warmth};
use super::server::FunctionUdp;
use super::FunctionShard;
use crate::handoff::frame::ServiceKind;
use crate::handoff::gate::{self, consult, GateCtx, Gated, Verdict};
use crate::handoff::per_shard::unix_us;
use crate::handoff::policy::{
    self, hop_marker, hop_token, hop_token_is_valid, Decision, HttpVerdict,
};
use crate::handoff::reject;
use crate::handoff::HandoffShard;
use crate::runtime::stop::StopSignal;
use crate::runtime::udp;

impl Gated for FunctionUdp {
    fn screen(
        &mut self,
        d: &[u8],
        from: SocketAddr,
        now_ns: u64,
        waited_ns: u64,
        gate: &GateCtx,
        out: &mut Vec<u8>,
    ) -> Option<bool> {
        let Decoded::Request(r) = fnframe::decode_request(d) else {
            return None;
        };
        let fs = &self.shard;
        let (index, cold) = match fs.lookup(r.name) {
            Lookup::Found(i, _) => (Some(i), fs.warmth(i) != Warmth::Warm),
            _ => (None, false),
        };
        let req = policy::Request {
            handed_off: false,
            cold,
            waited_ns,
        };
        let kind = ServiceKind::Function;
        match consult(&gate.h, kind, &req, now_ns, from, gate.service, d) {
            Verdict::Local => None,
            Verdict::HandedOff => {
                if let (Some(i), true) = (index, cold) {
                    fs.start_warmup(i);
                }
                Some(false)
            }
            Verdict::Reject => {
                fs.surface
                    .udp_status
                    .record(Status::Unavailable.http_code());
                fnframe::encode_error(out, r.id, Status::Unavailable, reject::FUNCTION_OVERLOADED);
                Some(true)
            }
        }
    }
}

/// Serve function invocation datagrams on `sock` with the hand-off policy.
pub async fn serve_fn_udp(
    shard: Rc<FunctionShard>,
    h: Rc<HandoffShard>,
    sock: UdpSocket,
    stop: StopSignal,
    mut drops: udp::KernelDrops,
) {
    let batch = super::server::UDP_BATCH;
    gate::serve_gated(FunctionUdp { shard }, h, sock, &stop, batch, &mut drops).await;
}

/// The policy for an HTTP request naming `name` (request head at the
/// front of `head`): the shard's admission decides as for datagrams (a
/// local decision commits the function's estimated service time); a
/// cold function is redirected. Redirects need `alternate_http`;
/// without it requests are served here.
pub fn http_verdict(h: &HandoffShard, fs: &FunctionShard, name: &str, head: &[u8]) -> HttpVerdict {
    let (index, cold) = match fs.lookup(name.as_bytes()) {
        Lookup::Found(i, _) => (Some(i), fs.warmth(i) != Warmth::Warm),
        _ => (None, false),
    };
    let req = policy::Request {
        handed_off: hop_marker(head).is_some_and(|t| {
            let ok = hop_token_is_valid(h.peer_key(), name, t, unix_us() / 1_000_000);
            if !ok {
                h.count_bad_hop_token();
            }
            ok
        }),
        cold,
        waited_ns: 0,
    };
    match h.decide(h.now_ns(), &req) {
        Decision::Handoff(reason) => match &h.config().alternate_http {
            Some(base) => {
                h.count_handoff(reason);
                if let (Some(i), true) = (index, cold) {
                    fs.start_warmup(i);
                }
                HttpVerdict::Redirect(format!(
                    "{}/fn/{name}?handoff={}",
                    base.trim_end_matches('/'),
                    hop_token(h.sending_key(), name, unix_us() / 1_000_000)
                ))
            }
            None => HttpVerdict::Serve,
        },
        Decision::RejectOverloaded => {
            h.count_reject();
            HttpVerdict::Overloaded
        }
        Decision::Local(_) => HttpVerdict::Serve,
    }
}

/// Write the HTTP answer for a non-`Serve` verdict into `out`.
pub fn write_http_verdict(
    out: &mut Vec<u8>,
    verdict: &HttpVerdict,
    keep_alive: bool,
    shard: Option<usize>,
) {
    let (code, body) = match verdict {
        HttpVerdict::Serve => return,
        HttpVerdict::Redirect(_) => (307, "handed off to the alternate node\n"),
        HttpVerdict::Overloaded => (
            503,
            "overloaded and the hand-off alternate is down: retry in a moment\n",
        ),
    };
    let status = match verdict {
        HttpVerdict::Overloaded => Status::Unavailable.as_str(),
        _ => "handoff",
    };
    let location = match verdict {
        HttpVerdict::Redirect(url) => Some(url.as_str()),
        _ => None,
    };
    let retry_after = (code == 503).then_some(reject::RETRY_AFTER_S);
    crate::http::head(out, code)
        .header_if("Location", location)
        .header_if("Retry-After", retry_after)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Length", body.len())
        .header(http::STATUS_HEADER, status)
        .header_if(http::SHARD_HEADER, shard)
        .header_if("Connection", (!keep_alive).then_some("close"))
        .end();
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_and_overload_answers() {
        let mut out = Vec::new();
        write_http_verdict(
            &mut out,
            &HttpVerdict::Redirect("http://127.0.0.3:8054/fn/echo?handoff=1.ab".into()),
            true,
            Some(0),
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 307 "), "{text}");
        assert!(text.contains("\r\nLocation: http://127.0.0.3:8054/fn/echo?handoff=1.ab\r\n"));
        let body_at = text.find("\r\n\r\n").unwrap() + 4;
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(text.len() - body_at, len);
        out.clear();
        write_http_verdict(&mut out, &HttpVerdict::Overloaded, false, None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: 1\r\n") && text.contains("Connection: close"));
    }
}
