//! What a shard serves, in two steps: [`bind_services`] opens every socket
//! the shard will own (before the shard reports ready, so a bind error stops
//! start-up cleanly), then [`spawn_services`] starts one task per socket.
//!
//! Adding a per-shard service means
//! adding its sockets to [`ShardSockets`], binding them in `bind_services`
//! and spawning its tasks in `spawn_services`; the tasks get the shard's
//! [`ShardCtx`] and must return once `ctx.stop` fires.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use glommio::net::{TcpListener, UdpSocket};
use glommio::Task;

use crate::dns::{self, Transport};

use super::context::ShardCtx;
use super::dns_worker::DnsWorker;
use super::tcp;
use crate::runtime::sockets;
use crate::runtime::udp::DropKind;
use crate::runtime::udp::{DatagramHandler, KernelDrops};

/// Sockets one shard owns.
#[derive(Default)]
pub struct ShardSockets {
    /// One worker thread per `dns.listen` address serves its UDP socket
    /// (`super::dns_worker`), hand-off gate included.
    pub dns_udp_workers: Vec<DnsWorker>,
    pub dns_tcp: Vec<TcpListener>,
    /// One per `functions.listen` address, when functions are served.
    pub fn_udp: Vec<UdpSocket>,
    pub fn_tcp: Vec<TcpListener>,
    /// The hand-off port (`handoff.listen`), when hand-off is configured.
    pub handoff: Option<UdpSocket>,
}

/// Bind every socket of this shard (SO_REUSEPORT, steered to its CPU) and
/// start its DNS UDP worker threads (a thread that cannot start stops
/// start-up, as a bind error does).
pub fn bind_services(ctx: &ShardCtx) -> anyhow::Result<ShardSockets> {
    let mut s = ShardSockets::default();
    let startup = &ctx.shared.startup;
    let dns_handoff = ctx.handoff.clone().filter(|h| h.config().dns);
    let dns_buffers = sockets::UdpBuffers {
        rcvbuf: startup.dns.udp_rcvbuf,
        sndbuf: startup.dns.udp_sndbuf,
        rcvbuf_key: "dns.udp_rcvbuf",
        sndbuf_key: "dns.udp_sndbuf",
    };
    for &addr in &startup.dns.listen {
        let sock = sockets::bind_udp_std(addr, ctx.cpu)?;
        sockets::set_udp_buffers(sock.as_raw_fd(), &dns_buffers)
            .map_err(|e| anyhow::anyhow!("DNS UDP socket {addr}: {e}"))?;
        let screen: Option<Box<dyn crate::runtime::screen::Screen>> = match &dns_handoff {
            Some(h) => Some(Box::new(h.worker_gate(addr).map_err(|e| {
                anyhow::anyhow!(
                    "shard {}: cannot open the DNS worker's hand-off socket on {}: {e}",
                    ctx.index,
                    h.config().listen.ip()
                )
            })?)),
            None => None,
        };
        let worker = DnsWorker::spawn(ctx, sock, screen).map_err(|(e, _)| {
            anyhow::anyhow!(
                "shard {}: cannot start the DNS UDP worker thread for {addr}: {e}; \
                 raise the process's thread limit (ulimit -u, TasksMax=) and start again",
                ctx.index
            )
        })?;
        ctx.metrics.udp_latency_published_by_worker();
        ctx.udp_workers.borrow_mut().push(worker.link());
        s.dns_udp_workers.push(worker);
        s.dns_tcp.push(sockets::bind_tcp(addr, ctx.cpu)?);
    }
    if ctx.functions.is_some() {
        let fns = &ctx.shared.startup.functions;
        let fn_buffers = sockets::UdpBuffers {
            rcvbuf: fns.udp_rcvbuf,
            sndbuf: fns.udp_sndbuf,
            rcvbuf_key: "functions.udp_rcvbuf",
            sndbuf_key: "functions.udp_sndbuf",
        };
        for &addr in &fns.listen {
            let sock = sockets::bind_udp(addr, ctx.cpu)?;
            sockets::set_udp_buffers(sock.as_raw_fd(), &fn_buffers)
                .map_err(|e| anyhow::anyhow!("function UDP socket {addr}: {e}"))?;
            s.fn_udp.push(sock);
            s.fn_tcp.push(sockets::bind_tcp(addr, ctx.cpu)?);
        }
    }
    if let Some(cfg) = &ctx.shared.startup.handoff {
        if ctx.handoff.is_none() {
            anyhow::bail!(
                "[handoff] is configured but its key cannot be used (see the error above); \
                 fix handoff.key_file or remove [handoff]"
            );
        }
        let sock = sockets::bind_udp(cfg.listen, ctx.cpu)?;
        // The port takes every request the peer hands over in a burst: the
        // default 1 MiB receive buffer, as an unset dns.udp_rcvbuf gets.
        let handoff_buffers = sockets::UdpBuffers {
            rcvbuf: None,
            sndbuf: 0,
            rcvbuf_key: "handoff.listen",
            sndbuf_key: "handoff.listen",
        };
        sockets::set_udp_buffers(sock.as_raw_fd(), &handoff_buffers)
            .map_err(|e| anyhow::anyhow!("hand-off socket {}: {e}", cfg.listen))?;
        s.handoff = Some(sock);
    }
    Ok(s)
}

/// Start the shard's service tasks. Each returns after `ctx.stop` fires;
/// the caller awaits them during shutdown.
pub fn spawn_services(ctx: &Rc<ShardCtx>, sockets: ShardSockets) -> Vec<Task<()>> {
    let mut tasks = Vec::new();
    if let (Some(h), Some(port)) = (&ctx.handoff, &sockets.handoff) {
        let _ = port;
        let attached = h.open_tx().and_then(|()| {
            for sock in &sockets.fn_udp {
                h.attach_service(sock.local_addr()?, sock)?;
            }
            for worker in &sockets.dns_udp_workers {
                h.attach_service(worker.local_addr(), worker.socket())?;
            }
            Ok(())
        });
        if let Err(e) = attached {
            tracing::error!(
                shard = ctx.index,
                "hand-off cannot share the service sockets: {e}"
            );
        }
    }
    if let Some(port) = sockets.handoff {
        if let Some(h) = &ctx.handoff {
            tasks.push(glommio::spawn_local(super::handoff_port::serve_port(
                ctx.clone(),
                h.clone(),
                port,
            )));
            match glommio::spawn_local_into(
                crate::handoff::gate::heartbeat(h.clone(), ctx.stop.clone()),
                ctx.background,
            ) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::error!(
                    shard = ctx.index,
                    "cannot spawn the hand-off heartbeat: {e}"
                ),
            }
        }
    }
    for worker in sockets.dns_udp_workers {
        tasks.push(glommio::spawn_local(worker.supervise(ctx.stop.clone())));
    }
    for listener in sockets.dns_tcp {
        tasks.push(glommio::spawn_local(tcp::serve_listener(
            ctx.clone(),
            listener,
        )));
    }
    if let Some(fs) = &ctx.functions {
        use crate::functions::server;
        for sock in sockets.fn_udp {
            let drops = match sock.local_addr() {
                Ok(local) => KernelDrops::new(crate::metrics::udp_socket_drops(
                    ctx.index,
                    crate::metrics::Surface::FnUdp.label(),
                    local,
                )),
                Err(_) => KernelDrops::unexported(),
            };
            if let Some(h) = &ctx.handoff {
                tasks.push(glommio::spawn_local(
                    crate::functions::handoff::serve_fn_udp(
                        fs.clone(),
                        h.clone(),
                        sock,
                        ctx.stop.clone(),
                        drops,
                    ),
                ));
                continue;
            }
            tasks.push(glommio::spawn_local(server::serve_udp(
                fs.clone(),
                sock,
                ctx.stop.clone(),
                drops,
            )));
        }
        for listener in sockets.fn_tcp {
            let (stop, gate) = (ctx.stop.clone(), ctx.gate.clone());
            tasks.push(glommio::spawn_local(server::serve_http(
                fs.clone(),
                listener,
                stop,
                gate,
            )));
        }
        match fs.spawn_upkeep(ctx.background, ctx.stop.clone()) {
            Ok(task) => tasks.push(task),
            Err(e) => tracing::error!(shard = ctx.index, "{e}"),
        }
    }
    tasks
}

/// The DNS answer path behind a UDP loop.
pub struct DnsUdp {
    pub ctx: Rc<ShardCtx>,
}

impl DatagramHandler for DnsUdp {
    #[inline]
    fn begin_batch(&mut self) {
        self.ctx.refresh();
        self.ctx.metrics.begin_batch();
        self.ctx.stats.udp_batch();
        let version = self.ctx.served_version();
        self.ctx
            .with_served(|s| self.ctx.rrl.borrow_mut().begin_batch(version, &s.dns.rrl));
    }

    #[inline]
    fn handle(&mut self, datagram: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
        let metrics = &self.ctx.metrics;
        let outcome = self.ctx.with_served(|s| {
            let (outcome, seen) =
                dns::answer_with_client_view(&s.map, datagram, from.ip(), Transport::Udp, out);
            metrics.answered_in_batch();
            metrics.count_view(&s.map, from.ip(), outcome, seen);
            outcome
        });
        let Some(outcome) =
            self.ctx
                .rrl
                .borrow_mut()
                .filter(from.ip(), outcome, out, &self.ctx.stats)
        else {
            return false;
        };
        self.ctx.stats.record(Transport::Udp, outcome);
        matches!(outcome, dns::Outcome::Answered { .. })
    }

    fn dropped(&mut self, why: DropKind) {
        self.ctx.stats.dropped(why);
    }

    fn coalescing(&mut self) {
        self.ctx.stats.udp_coalescing_wait();
    }

    #[inline]
    fn end_batch(&mut self) {
        self.ctx.metrics.end_batch();
    }
}
