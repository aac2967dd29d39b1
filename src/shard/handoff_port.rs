//! The hand-off port of a shard: frames from the alternate, verified as
//! they arrive; handed-off requests served here by the shard's own DNS and
//! function answer paths (never handed on) and answered in the configured
//! reply mode; relayed answers forwarded to their clients; pings answered.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::UdpSocket;

use super::context::ShardCtx;
use super::services::DnsUdp;
use crate::functions::server::FunctionUdp;
use crate::handoff::frame::{self, FrameType, ServiceKind};
use crate::handoff::HandoffShard;
use crate::runtime::udp::{self, DatagramHandler};

/// Largest hand-off datagram received.
const RX_BUF: usize = 65_536;

/// Rounds of a busy hand-off port between two reads of its drop count.
const DROPS_POLL_ROUNDS: u32 = 256;

/// Verified handed-off requests waiting to be served, at most (the rest
/// wait in the kernel's socket buffer).
const PENDING_CAP: usize = 1024;

/// The hand-off port of this shard: verify every frame as soon as it is
/// queued (so time spent waiting behind our own work does not make it
/// stale, and pings are answered at once); serve handed-off requests here,
/// one at a time (never handing them on), and answer them in the configured
/// reply mode; forward relayed answers to their clients.
pub async fn serve_port(ctx: Rc<ShardCtx>, h: Rc<HandoffShard>, sock: UdpSocket) {
    let rx = match crate::handoff::per_shard::dup_udp(&sock).and_then(|s| {
        s.set_nonblocking(true)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                shard = h.index(),
                "hand-off port: cannot duplicate the socket: {e}"
            );
            return;
        }
    };
    let mut buf = vec![0u8; RX_BUF];
    let mut out = Vec::with_capacity(2048);
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    // Buffers of served requests, reused for the next queued ones (at most
    // PENDING_CAP exist): no allocation per handed-off request.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let mut fn_handler = ctx.functions.clone().map(|shard| FunctionUdp { shard });
    let mut dns_handler = DnsUdp { ctx: ctx.clone() };
    // Verify a datagram: answer a ping, forward a relayed answer, queue a
    // request.
    let admit =
        |d: &[u8], from: SocketAddr, pending: &mut VecDeque<Vec<u8>>, spare: &mut Vec<Vec<u8>>| {
            let Some(f) = h.open(d, from) else {
                return;
            };
            match f.ty {
                FrameType::Request => {
                    let mut copy = spare.pop().unwrap_or_default();
                    copy.clear();
                    copy.extend_from_slice(d);
                    pending.push_back(copy);
                }
                FrameType::Reply => {
                    h.forward(&f);
                }
                FrameType::Ping => h.pong(&f, from),
                // Pongs go to the heartbeat socket; one here is stray.
                FrameType::Pong => {}
            }
        };
    // The port's kernel drops, read with SO_MEMINFO (glommio's receive
    // gives no control messages) whenever the port goes idle, and every
    // DROPS_POLL_ROUNDS rounds while it is busy.
    let mut drops = match sock.local_addr() {
        Ok(local) => udp::KernelDrops::new(crate::metrics::udp_socket_drops(
            h.index(),
            "handoff",
            local,
        )),
        Err(_) => udp::KernelDrops::unexported(),
    };
    let mut rounds = 0u32;
    while !ctx.stop.is_stopped() {
        rounds = rounds.wrapping_add(1);
        if pending.is_empty() || rounds.is_multiple_of(DROPS_POLL_ROUNDS) {
            if let Ok(count) = udp::drop_count_now(rx.as_raw_fd()) {
                drops.observe(count);
            }
        }
        if pending.is_empty() {
            let got = future::or(async { Some(sock.recv_from(&mut buf).await) }, async {
                ctx.stop.stopped().await;
                None
            })
            .await;
            match got {
                None => break,
                Some(Ok((n, from))) => admit(&buf[..n], from, &mut pending, &mut spare),
                Some(Err(e)) => {
                    tracing::debug!(shard = h.index(), "hand-off recv: {e}");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
        }
        // Whatever else is queued, without waiting.
        while pending.len() < PENDING_CAP {
            match rx.recv_from(&mut buf) {
                Ok((n, from)) => admit(&buf[..n], from, &mut pending, &mut spare),
                Err(_) => break,
            }
        }
        if let Some(d) = pending.pop_front() {
            let started = h.now_ns();
            if let Ok(f) = frame::parse(&d) {
                out.clear();
                // Served here whatever our load or warmth: it was handed off
                // once already (policy: local, already handed off).
                let answered = match f.service {
                    ServiceKind::Function => match &mut fn_handler {
                        Some(fh) => fh.handle(f.payload, f.client, &mut out),
                        None => false,
                    },
                    ServiceKind::Dns => {
                        dns_handler.begin_batch();
                        let a = dns_handler.handle(f.payload, f.client, &mut out);
                        dns_handler.end_batch();
                        a
                    }
                    ServiceKind::None => false,
                };
                if answered {
                    h.send_reply(&f, &out);
                }
            }
            // Work done for the alternate: foreign to this shard's own
            // admission, and part of the load our pongs report.
            h.charge(h.now_ns().saturating_sub(started));
            spare.push(d);
        }
        glommio::yield_if_needed().await;
    }
    h.detach();
}
