//! What a shard serves, in two steps: [`bind_services`] opens every socket
//! the shard will own (before the shard reports ready, so a bind error stops
//! start-up cleanly), then [`spawn_services`] starts one task per socket.
//!
//! Adding a per-shard service (e.g. function invocation datagrams) means
//! adding its sockets to [`ShardSockets`], binding them in `bind_services`
//! and spawning its tasks in `spawn_services`; the tasks get the shard's
//! [`ShardCtx`] and must return once `ctx.stop` fires.

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::{TcpListener, UdpSocket};
use glommio::Task;

use crate::config::{Config, UdpIo};
use crate::dns::{self, Transport};

use super::context::ShardCtx;
use super::dns_worker::DnsWorker;
use super::sockets;
use super::stats::{DropKind, Proto};
use super::tcp;
use super::udp::{self, DatagramHandler};

/// Sockets one shard owns.
#[derive(Default)]
pub struct ShardSockets {
    /// One per `dns.listen` address, served by the executor...
    pub dns_udp: Vec<UdpSocket>,
    /// ... or, with `dns.udp_io = "thread"` (and no `[handoff]`), by the
    /// shard's DNS worker threads (`super::dns_worker`).
    pub dns_udp_threads: Vec<std::net::UdpSocket>,
    pub dns_tcp: Vec<TcpListener>,
    /// One per `functions.listen` address, when functions are served.
    pub fn_udp: Vec<UdpSocket>,
    pub fn_tcp: Vec<TcpListener>,
    /// The hand-off port (`handoff.listen`), when hand-off is configured.
    pub handoff: Option<UdpSocket>,
}

/// Bind every socket of this shard (SO_REUSEPORT, steered to its CPU).
pub fn bind_services(ctx: &ShardCtx) -> anyhow::Result<ShardSockets> {
    let mut s = ShardSockets::default();
    let startup = &ctx.shared.startup;
    let threads = dns_udp_on_threads(startup);
    for &addr in &startup.dns.listen {
        if threads {
            s.dns_udp_threads
                .push(sockets::bind_udp_std(addr, ctx.cpu)?);
        } else {
            s.dns_udp.push(sockets::bind_udp(addr, ctx.cpu)?);
        }
        s.dns_tcp.push(sockets::bind_tcp(addr, ctx.cpu)?);
    }
    if ctx.functions.is_some() {
        for &addr in &ctx.shared.startup.functions.listen {
            s.fn_udp.push(sockets::bind_udp(addr, ctx.cpu)?);
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
        s.handoff = Some(sockets::bind_udp(cfg.listen, ctx.cpu)?);
    }
    Ok(s)
}

/// Whether the DNS UDP sockets are served by worker threads: `dns.udp_io =
/// "thread"` and no `[handoff]` (whose gate runs on the executor).
pub fn dns_udp_on_threads(config: &Config) -> bool {
    config.dns.udp_io == UdpIo::Thread && config.handoff.is_none()
}

/// How DNS UDP is served, for the start-up line.
pub fn dns_udp_served_by(config: &Config) -> &'static str {
    if dns_udp_on_threads(config) {
        "DNS UDP on worker threads"
    } else if config.dns.udp_io == UdpIo::Thread {
        "DNS UDP on the executors, as [handoff] needs"
    } else {
        "DNS UDP on the executors"
    }
}

/// Start the shard's service tasks. Each returns after `ctx.stop` fires;
/// the caller awaits them during shutdown.
pub fn spawn_services(ctx: &Rc<ShardCtx>, sockets: ShardSockets) -> Vec<Task<()>> {
    let mut tasks = Vec::new();
    if let (Some(h), Some(port)) = (&ctx.handoff, &sockets.handoff) {
        let attached = h.attach_tx(port).and_then(|()| {
            for sock in sockets.dns_udp.iter().chain(&sockets.fn_udp) {
                h.attach_service(sock.local_addr()?, sock)?;
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
            use crate::handoff::io;
            tasks.push(glommio::spawn_local(io::serve_port(
                ctx.clone(),
                h.clone(),
                port,
            )));
            match glommio::spawn_local_into(
                io::heartbeat(h.clone(), ctx.stop.clone()),
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
    let mut dns_udp = sockets.dns_udp;
    for sock in sockets.dns_udp_threads {
        match DnsWorker::spawn(ctx, sock) {
            Ok(worker) => {
                ctx.metrics.udp_latency_published_by_worker();
                ctx.udp_workers.borrow_mut().push(worker.link());
                tasks.push(glommio::spawn_local(worker.supervise(ctx.stop.clone())));
            }
            Err((e, sock)) => {
                tracing::error!(
                    shard = ctx.index,
                    "cannot start a DNS UDP worker thread ({e}); this shard's executor serves the socket"
                );
                dns_udp.push(sockets::into_glommio_udp(sock));
            }
        }
    }
    let dns_handoff = ctx.handoff.clone().filter(|h| h.config().dns);
    for sock in dns_udp {
        if let Some(h) = &dns_handoff {
            tasks.push(glommio::spawn_local(crate::handoff::io::serve_dns_udp(
                ctx.clone(),
                h.clone(),
                sock,
            )));
            continue;
        }
        let ctx = ctx.clone();
        tasks.push(glommio::spawn_local(async move {
            let mut handler = DnsUdp { ctx: ctx.clone() };
            let settings = udp::LoopSettings::for_dns(&ctx.shared.startup.dns);
            udp::serve_batched(&sock, &mut handler, &ctx.stop, settings).await;
        }));
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
            if let Some(h) = &ctx.handoff {
                tasks.push(glommio::spawn_local(crate::handoff::io::serve_fn_udp(
                    fs.clone(),
                    h.clone(),
                    sock,
                    ctx.stop.clone(),
                )));
                continue;
            }
            tasks.push(glommio::spawn_local(server::serve_udp(
                fs.clone(),
                sock,
                ctx.stop.clone(),
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
            let outcome = dns::answer(&s.map, datagram, from.ip(), Transport::Udp, out);
            metrics.answered_in_batch();
            metrics.count_view(&s.map, from.ip(), outcome);
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
        self.ctx.stats.record(Proto::Udp, outcome);
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
