//! DNS over TCP (RFC 7766): 2-byte length framing, several queries per
//! connection, pipelined queries answered in order, an idle timeout, a
//! per-shard connection cap, a per-client cap within it
//! ([`crate::runtime::client_cap`]) and a bound on the length field.
//!
//! Each connection is its own task under the shard's gate, so a slow or
//! stalled client only holds its own connection: every read and write has a
//! deadline, and a connection that does not complete a query within
//! `dns.tcp_idle_timeout_ms` of the previous answer (or of opening) is closed.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};

use crate::dns::{self, Outcome, Transport};

use super::context::ShardCtx;
use crate::runtime::tcp::{read_bounded, write_bounded, Read};

/// Bytes read from a connection per read call.
const READ_CHUNK: usize = 4096;

/// What the front of a TCP receive buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: `buf[2..2 + len]`.
    Complete { len: usize },
    /// Not all of it yet.
    Incomplete,
    /// The length prefix exceeds the bound (or is zero): close the connection.
    Invalid { len: usize },
}

/// Decode the frame at the start of `buf` (sans-IO).
pub fn next_frame(buf: &[u8], max_len: usize) -> Frame {
    if buf.len() < 2 {
        return Frame::Incomplete;
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if len == 0 || len > max_len {
        return Frame::Invalid { len };
    }
    if buf.len() < 2 + len {
        Frame::Incomplete
    } else {
        Frame::Complete { len }
    }
}

/// Bytes still missing from the frame that starts `buf` (whose complete
/// frames were taken already), when its length prefix is in and valid;
/// 0 otherwise. A large query is then read in one call instead of
/// [`READ_CHUNK`]-sized pieces, each of which costs a read and a timer.
pub fn missing_frame_bytes(buf: &[u8], max_len: usize) -> usize {
    match next_frame(buf, max_len) {
        Frame::Incomplete if buf.len() >= 2 => {
            2 + usize::from(u16::from_be_bytes([buf[0], buf[1]])) - buf.len()
        }
        _ => 0,
    }
}

/// Accept loop for one listener, until the shard stops.
pub async fn serve_listener(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            ctx.stop.stopped().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(shard = ctx.index, "TCP accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (cap, per_client) = ctx.with_served(|s| {
            (
                s.dns.tcp_max_connections_per_shard,
                s.dns.tcp_max_connections_per_client,
            )
        });
        if ctx.stats.tcp_open() as usize >= cap {
            ctx.stats.tcp_refused();
            drop(stream); // closed at once
            continue;
        }
        // No peer address (already gone): nothing to serve.
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let client = peer.ip();
        if !ctx.stats.tcp_clients.try_open(client, per_client) {
            ctx.stats.tcp_client_refused();
            drop(stream);
            continue;
        }
        ctx.stats.tcp_opened();
        let conn_ctx = ctx.clone();
        match ctx.gate.spawn(async move {
            serve_connection(&conn_ctx, stream).await;
            conn_ctx.stats.tcp_closed();
            conn_ctx.stats.tcp_clients.close(client);
        }) {
            Ok(task) => {
                task.detach();
            }
            Err(_) => {
                // Gate closed: the shard is shutting down.
                ctx.stats.tcp_closed();
                ctx.stats.tcp_clients.close(client);
                break;
            }
        }
    }
    // Dropping the listener closes it: no new connections on this shard.
}

/// Serve one connection until the peer closes it, it idles out, sends an
/// invalid frame, or the shard stops (after answering what was in flight).
async fn serve_connection(ctx: &ShardCtx, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer: IpAddr = match stream.peer_addr() {
        Ok(a) => a.ip(),
        Err(_) => return,
    };
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut wbuf: Vec<u8> = Vec::new();
    let mut answer = Vec::new();
    let mut chunk = [0u8; READ_CHUNK];
    let mut deadline = Instant::now() + idle_timeout(ctx);
    loop {
        // Answer every complete query in the buffer, in order.
        ctx.refresh();
        let (max_len, idle) = ctx.with_served(|s| {
            (
                usize::from(s.dns.tcp_max_query_bytes),
                Duration::from_millis(s.dns.tcp_idle_timeout_ms),
            )
        });
        let mut pos = 0;
        let mut close = false;
        loop {
            match next_frame(&rbuf[pos..], max_len) {
                Frame::Incomplete => break,
                Frame::Invalid { len } => {
                    tracing::debug!(shard = ctx.index, %peer, len, "TCP length prefix out of bounds; closing");
                    ctx.stats.tcp_oversize_closed();
                    close = true;
                    break;
                }
                Frame::Complete { len } => {
                    let query = &rbuf[pos + 2..pos + 2 + len];
                    let t0 = ctx.metrics.start();
                    let outcome = ctx.with_served(|s| {
                        let (outcome, seen) = dns::answer_with_client_view(
                            &s.map,
                            query,
                            peer,
                            Transport::Tcp,
                            &mut answer,
                        );
                        ctx.metrics.finish(Transport::Tcp, t0);
                        ctx.metrics.count_view(&s.map, peer, outcome, seen);
                        outcome
                    });
                    ctx.stats.record(Transport::Tcp, outcome);
                    pos += 2 + len;
                    match outcome {
                        Outcome::Answered { .. } if answer.len() <= usize::from(u16::MAX) => {
                            wbuf.extend_from_slice(&(answer.len() as u16).to_be_bytes());
                            wbuf.extend_from_slice(&answer);
                            deadline = Instant::now() + idle;
                        }
                        // Nothing to answer with (no header, or a response):
                        // this peer is not speaking DNS to us.
                        _ => {
                            close = true;
                            break;
                        }
                    }
                }
            }
        }
        rbuf.drain(..pos);
        if !wbuf.is_empty() {
            let written = write_bounded(&mut stream, &wbuf, idle).await;
            wbuf.clear();
            if !written {
                return;
            }
        }
        if close {
            return;
        }
        // Shutting down: finish a partially received query, otherwise close.
        let stopping = ctx.stop.is_stopped();
        if stopping && rbuf.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            ctx.stats.tcp_idle_closed();
            return;
        }
        let wait = deadline - now;
        let finishing = stopping || !rbuf.is_empty();
        let missing = missing_frame_bytes(&rbuf, max_len);
        let got = if missing > READ_CHUNK {
            // A large query is on its way: read the rest straight into
            // the buffer, in as few reads as the peer allows.
            let have = rbuf.len();
            rbuf.resize(have + missing, 0);
            let got =
                read_bounded(&mut stream, &mut rbuf[have..], wait, &ctx.stop, finishing).await;
            let n = if let Read::Data(n) = got { n } else { 0 };
            rbuf.truncate(have + n);
            got
        } else {
            let got = read_bounded(&mut stream, &mut chunk, wait, &ctx.stop, finishing).await;
            if let Read::Data(n) = got {
                rbuf.extend_from_slice(&chunk[..n]);
            }
            got
        };
        match got {
            Read::Data(_) => {}
            Read::Closed | Read::Stop => return,
            Read::Deadline => {
                ctx.stats.tcp_idle_closed();
                return;
            }
        }
    }
}

fn idle_timeout(ctx: &ShardCtx) -> Duration {
    ctx.with_served(|s| Duration::from_millis(s.dns.tcp_idle_timeout_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_and_bounded() {
        assert_eq!(next_frame(&[], 512), Frame::Incomplete);
        assert_eq!(next_frame(&[0], 512), Frame::Incomplete);
        assert_eq!(next_frame(&[0, 3, 1, 2], 512), Frame::Incomplete);
        assert_eq!(
            next_frame(&[0, 3, 1, 2, 3, 9], 512),
            Frame::Complete { len: 3 }
        );
        assert_eq!(next_frame(&[0, 0], 512), Frame::Invalid { len: 0 });
        assert_eq!(
            next_frame(&[0xFF, 0xFF], 512),
            Frame::Invalid { len: 65535 }
        );
        assert_eq!(next_frame(&[2, 1, 0], 513), Frame::Incomplete);
        assert_eq!(next_frame(&[2, 1, 0], 512), Frame::Invalid { len: 513 });
    }

    #[test]
    fn the_rest_of_a_large_frame_is_known_from_its_prefix() {
        assert_eq!(missing_frame_bytes(&[], 65535), 0);
        assert_eq!(missing_frame_bytes(&[0xFF], 65535), 0);
        assert_eq!(missing_frame_bytes(&[0xFF, 0xFF], 65535), 65535);
        assert_eq!(missing_frame_bytes(&[0x10, 0x00, 1, 2, 3], 65535), 4093);
        assert_eq!(missing_frame_bytes(&[0, 3, 1, 2, 3], 512), 0, "complete");
        assert_eq!(
            missing_frame_bytes(&[0xFF, 0xFF], 4096),
            0,
            "over the limit"
        );
    }

    proptest::proptest! {
        #[test]
        fn framing_never_panics_and_respects_bounds(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..64), max in 1usize..70) {
            match next_frame(&buf, max) {
                Frame::Complete { len } => proptest::prop_assert!(len <= max && buf.len() >= 2 + len),
                Frame::Invalid { len } => proptest::prop_assert!(len == 0 || len > max),
                Frame::Incomplete => {}
            }
        }
    }
}
