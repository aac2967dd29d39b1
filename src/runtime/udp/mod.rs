//! UDP serving loops: batched (`recvmmsg`/`sendmmsg` on the socket's fd,
//! woken by glommio) and a plain one-datagram-at-a-time glommio loop kept as
//! the baseline for `benches/udp_batch.rs`.
//!
//! The replies of a batch are ordered by client and length; each run of
//! equal-length replies to one client (closed by at most one shorter one)
//! leaves as one UDP GSO message (`UDP_SEGMENT`: one pass through the IP
//! stack for the group, split into datagrams below it), the rest one by one
//! in the same `sendmmsg`; if the kernel refuses GSO on the socket (EIO, no
//! checksum offload, EINVAL, a segment above the path MTU) the batch goes
//! out datagram by datagram and GSO stays off for that socket. A loop near
//! saturation may wait briefly before receiving so batches grow
//! ([`LoopSettings`], `super::coalesce`).
//!
//! Every loop asks the kernel for its drop count (`SO_RXQ_OVFL`: datagrams
//! the socket's receive buffer had no room for) and exports it as a counter
//! ([`KernelDrops`]); the loop stores into that counter only when the count
//! changed, so a socket that drops nothing never touches it.
//!
//! Both loops are generic over a [`DatagramHandler`], the per-service part
//! (the DNS answer path, function invocation datagrams, the hand-off gate
//! in front of either), so the I/O machinery exists once.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;

use self::batch::MmsgBatch;
use super::coalesce::Coalescer;
use super::mmsg::send_messages;
use super::stop::StopSignal;

/// Why a query got no answer (besides the answer path's own reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    /// Shorter than a DNS header.
    TooShort = 0,
    /// A response (QR set), never answered.
    NotAQuery = 1,
    /// A UDP datagram larger than the receive slot (cut by the kernel).
    Oversized = 2,
    /// The answer could not be sent (socket error or send buffer stuck).
    SendFailed = 3,
    /// A sender address family we do not serve.
    BadSource = 4,
    /// Response rate limiting dropped the answer (`[dns.rrl]`).
    RateLimited = 5,
}

pub const DROP_KINDS: usize = 6;

/// Datagrams per `recvmmsg`/`sendmmsg` call of the loops that are not
/// configured (function and hand-off surfaces).
pub const DEFAULT_BATCH: usize = 32;

/// Receive slot per datagram; larger datagrams are cut by the kernel and dropped.
pub const RX_SLOT: usize = 4096;
/// How long one reply may wait for room in a full send buffer before it is dropped.
const SEND_WAIT: Duration = Duration::from_millis(200);
/// Replies longer than this are never grouped (a larger segment could
/// exceed a path MTU, which GSO refuses instead of fragmenting).
const GSO_MAX_SEGMENT: usize = 1400;
/// Payload bytes of one GSO message at most (an IP datagram's limit).
const GSO_MAX_BYTES: usize = 60_000;
/// Segments of one GSO message at most (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Room for one `cmsghdr` carrying a `u16` (CMSG_SPACE(2) = 24 on 64-bit).
type CmsgBuf = [u64; 4];

/// How a batched loop receives: datagrams per call, and receive coalescing.
///
/// Coalescing: when the loop nears saturation (see `super::coalesce` for
/// the load measure and why it is stable), after a receive batch of at
/// least `coalesce_min_batch` datagrams that did not fill the batch, the
/// loop waits up to `coalesce` (the ceiling, growing with the load) before
/// the next `recvmmsg` instead of waking for each new datagram. The next
/// batch then carries more datagrams for the same system calls and wakeups,
/// and its replies group into fewer GSO messages. The batch after a wait is
/// followed by an immediate receive, and only what arrived while it was
/// served (not the wait's own harvest) decides whether to wait again. It
/// adds at most `coalesce` to a busy shard's latency and nothing to one
/// with headroom, and a full batch is followed by the next receive at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSettings {
    pub batch: usize,
    pub coalesce: Duration,
    pub coalesce_min_batch: usize,
}

impl LoopSettings {
    /// `batch` datagrams per call, never waiting to coalesce.
    pub const fn batch_only(batch: usize) -> LoopSettings {
        LoopSettings {
            batch,
            coalesce: Duration::ZERO,
            coalesce_min_batch: usize::MAX,
        }
    }

    /// The DNS service's loop, from `[dns] udp_batch`, `udp_coalesce_us`
    /// and `udp_coalesce_min_batch`.
    pub fn for_dns(dns: &crate::config::DnsConfig) -> LoopSettings {
        LoopSettings {
            batch: dns.udp_batch.max(1),
            coalesce: Duration::from_micros(dns.udp_coalesce_us),
            coalesce_min_batch: dns.udp_coalesce_min_batch.max(1),
        }
    }

    /// The coalescing policy of a loop with these settings.
    fn coalescer(&self) -> Coalescer {
        Coalescer::new(self.coalesce, self.coalesce_min_batch, self.batch)
    }
}

/// The kernel's count of datagrams it dropped at one socket because the
/// receive buffer was full (`SO_RXQ_OVFL`), exported as a counter
/// (`shardgate_udp_socket_drops_total`). The kernel stamps its running
/// count on every datagram it queues, so drops show with the next datagram
/// received after them.
pub struct KernelDrops {
    counter: metrics::Counter,
    last: u32,
    total: u64,
}

impl KernelDrops {
    /// Drops exported into `counter` (set to 0 now, so the series exists
    /// before the first drop).
    pub fn new(counter: metrics::Counter) -> KernelDrops {
        counter.absolute(0);
        KernelDrops {
            counter,
            last: 0,
            total: 0,
        }
    }

    /// Drops counted but not exported (tests, benchmarks).
    pub fn unexported() -> KernelDrops {
        KernelDrops::new(metrics::Counter::noop())
    }

    /// The kernel's running count (32 bits, wrapping) is now `count`.
    pub fn observe(&mut self, count: u32) {
        if count != self.last {
            self.total += u64::from(count.wrapping_sub(self.last));
            self.last = count;
            self.counter.absolute(self.total);
        }
    }

    /// Datagrams dropped so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Turn on `SO_RXQ_OVFL` on `fd`: every datagram then carries the socket's
/// drop count.
pub fn enable_drop_count(fd: i32) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// The socket's drop count right now (`SO_MEMINFO`), for a socket whose
/// loop receives without control messages (the hand-off port).
pub fn drop_count_now(fd: i32) -> io::Result<u32> {
    // SK_MEMINFO_VARS (9) values; libc names only the indices.
    let mut info = [0u32; 9];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

fn set_int_option(
    fd: i32,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads an int from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The service-specific part of a UDP loop.
pub trait DatagramHandler {
    /// Called once before the datagrams of each received batch are handled
    /// (e.g. to pick up a new address map: one check per batch).
    fn begin_batch(&mut self) {}
    /// Handle one datagram from `from`; write the reply into `out` (cleared
    /// by the callee) and return true to send it, false to send nothing.
    fn handle(&mut self, datagram: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool;
    /// A datagram was dropped by the I/O layer (oversized, unsendable reply).
    fn dropped(&mut self, _why: DropKind) {}
    /// The loop is about to wait to coalesce the next receive (it is busy).
    fn coalescing(&mut self) {}
    /// Called once the replies of the batch were sent (or dropped).
    fn end_batch(&mut self) {}
    /// A blocking loop's receive timed out with nothing to do
    /// ([`serve_blocking`] only): a chance for periodic upkeep.
    fn idle(&mut self) {}
    /// Whether the loop should ask the kernel for each datagram's receive
    /// time (`SO_TIMESTAMPNS`, one control message per datagram) and pass
    /// it to [`DatagramHandler::received_at`] before `handle`.
    fn wants_timestamps(&self) -> bool {
        false
    }
    /// The next datagram reached the socket at `realtime_ns`
    /// (CLOCK_REALTIME, ns since the epoch); 0 when the kernel gave none.
    fn received_at(&mut self, _realtime_ns: u64) {}
}

/// Current CLOCK_REALTIME in ns (the clock of `SO_TIMESTAMPNS`).
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

mod batch;

pub use super::mmsg::sockaddr_to_std;

/// Wait until the socket has a datagram, or stop. Returns false on stop.
async fn wait_readable(sock: &UdpSocket, stop: &StopSignal) -> bool {
    let mut probe = [0u8; 1];
    let readable = async {
        // An error here (e.g. a queued ICMP error) also means "try recvmmsg";
        // a short pause keeps a persistent error from becoming a busy loop.
        if let Err(e) = sock.peek_from(&mut probe).await {
            tracing::debug!("UDP wakeup: {e}");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        true
    };
    future::or(readable, async {
        stop.stopped().await;
        false
    })
    .await
}

/// Serve `sock` with batched system calls until `stop`.
///
/// Each round: `recvmmsg` up to `settings.batch` datagrams without
/// blocking, call the handler on each, send the replies with `sendmmsg` (a partial send
/// continues where it stopped; a full send buffer is waited for once per
/// batch through glommio, at most 200 ms, and if it is still full the rest
/// of the batch is dropped and counted; a reply the kernel refuses is
/// counted and skipped). When the socket is empty the task awaits glommio's
/// `peek_from`, or, near saturation, sleeps for the coalescing wait (see
/// [`LoopSettings`]). The socket's kernel drops go to `drops`.
pub async fn serve_batched<H: DatagramHandler>(
    sock: &UdpSocket,
    handler: &mut H,
    stop: &StopSignal,
    settings: LoopSettings,
    drops: &mut KernelDrops,
) {
    let fd = sock.as_raw_fd();
    let mut b = MmsgBatch::new(settings.batch);
    b.enable_drop_count(fd);
    if handler.wants_timestamps() && !b.enable_timestamps(fd) {
        tracing::warn!("SO_TIMESTAMPNS refused: socket waiting time is not seen by the hand-off");
    }
    let mut policy = settings.coalescer();
    let mut clock = RoundClock::start();
    // What to do before the next recvmmsg. After a partial batch the socket
    // is almost surely empty: go straight to the wakeup (whose first,
    // nonblocking peek still sees a datagram that arrived meanwhile) instead
    // of a recvmmsg bound to fail.
    let mut next = Next::Receive;
    while !stop.is_stopped() {
        let after_coalescing = matches!(next, Next::Coalesce(_));
        match next {
            Next::Receive => {}
            Next::WaitReadable => {
                if !wait_readable(sock, stop).await {
                    break;
                }
                clock.woke();
            }
            Next::Coalesce(wait) => {
                glommio::timer::sleep(wait).await;
                clock.woke();
            }
        }
        let got = match b.recv(fd, libc::MSG_DONTWAIT) {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                next = Next::WaitReadable;
                continue;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!("recvmmsg: {e}");
                }
                next = Next::WaitReadable;
                continue;
            }
        };
        let k = begin_round(&mut b, got, handler, drops);
        send_all(sock, &mut b, k, handler).await;
        handler.end_batch();
        next = end_round(
            &mut b,
            got,
            after_coalescing,
            &mut clock,
            &mut policy,
            handler,
        );
        glommio::yield_if_needed().await;
    }
}

/// What [`serve_batched`] does before its next `recvmmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Receive at once (the last batch was full, or it followed a
    /// coalescing wait).
    Receive,
    /// Wait until the socket is readable (glommio `peek_from`; in
    /// [`serve_blocking`], a blocking receive).
    WaitReadable,
    /// Near saturation: sleep this long, then receive.
    Coalesce(Duration),
}

/// Times a loop's rounds for the coalescing policy: idle from the end of
/// one round until the loop woke for the next (a wait for datagrams or a
/// coalescing sleep), busy from then until the round's replies were sent.
/// A round that follows another at once has no idle part.
struct RoundClock {
    ended: Instant,
    woke: Instant,
}

impl RoundClock {
    fn start() -> RoundClock {
        let now = Instant::now();
        RoundClock {
            ended: now,
            woke: now,
        }
    }

    /// The loop woke from a wait.
    fn woke(&mut self) {
        self.woke = Instant::now();
    }

    /// The round ended: (idle, busy) ns, and the next round starts here.
    fn end(&mut self) -> (u64, u64) {
        let now = Instant::now();
        let woke = self.woke.max(self.ended);
        let idle = woke.duration_since(self.ended).as_nanos() as u64;
        let busy = now.duration_since(woke).as_nanos() as u64;
        self.ended = now;
        self.woke = now;
        (idle, busy)
    }
}

/// Once `recvmmsg` brought `got` datagrams: note the kernel's drop count,
/// hand the datagrams to the handler and queue its replies. Returns the
/// number of replies queued.
fn begin_round<H: DatagramHandler>(
    b: &mut MmsgBatch,
    got: usize,
    handler: &mut H,
    drops: &mut KernelDrops,
) -> usize {
    if let Some(count) = b.drop_count_of(got - 1) {
        drops.observe(count);
    }
    handler.begin_batch();
    handle_received(b, got, handler)
}

/// After a round's replies went out: what comes before the next receive.
/// A full batch means more is waiting. After a coalescing wait the batch
/// size says nothing about the load (the wait made it); what arrives while
/// it is served does, so receive again at once and let that batch decide.
/// Otherwise the policy decides between a coalescing wait and waiting for
/// the next datagram.
fn end_round<H: DatagramHandler>(
    b: &mut MmsgBatch,
    got: usize,
    after_coalescing: bool,
    clock: &mut RoundClock,
    policy: &mut Coalescer,
    handler: &mut H,
) -> Next {
    let (idle, busy) = clock.end();
    let wait = policy.after_round(idle, busy, got, after_coalescing);
    if got == b.n || after_coalescing {
        Next::Receive
    } else if !wait.is_zero() {
        handler.coalescing();
        Next::Coalesce(wait)
    } else {
        Next::WaitReadable
    }
}

/// Hand received datagrams `0..got` to the handler and queue its replies;
/// returns how many replies were queued. Oversized datagrams (cut by the
/// kernel) and unknown address families are counted and dropped.
fn handle_received<H: DatagramHandler>(b: &mut MmsgBatch, got: usize, handler: &mut H) -> usize {
    let mut k = 0;
    for i in 0..got {
        let h = &b.rx_hdr[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            handler.dropped(DropKind::Oversized);
            continue;
        }
        let Some(from) = sockaddr_to_std(&b.names[i], h.msg_hdr.msg_namelen) else {
            handler.dropped(DropKind::BadSource);
            continue;
        };
        let len = (h.msg_len as usize).min(RX_SLOT);
        if b.timestamps {
            handler.received_at(b.rx_time_ns(i));
        }
        let (rx, out) = (&b.rx, &mut b.out[k]);
        if handler.handle(&rx[i * RX_SLOT..i * RX_SLOT + len], from, out) {
            b.queue_reply(k, i, from);
            k += 1;
        }
    }
    k
}

/// Serve a blocking socket `fd` on the calling thread until `stop` is set
/// (the loop of a shard's DNS worker, see `super::dns_worker`).
///
/// The same rounds as [`serve_batched`], but the thread blocks in
/// `recvmmsg` (`MSG_WAITFORONE`) instead of awaiting a wakeup, and sleeps
/// for a coalescing wait. The socket must be in blocking mode with a
/// receive timeout (`SO_RCVTIMEO`): each timeout calls
/// [`DatagramHandler::idle`] and checks `stop`, so the loop returns within
/// one timeout of it. Its send timeout (`SO_SNDTIMEO`) bounds how long a
/// reply waits for room in a full send buffer before the rest of the
/// batch is dropped and counted. The socket's kernel drops go to `drops`.
pub fn serve_blocking<H: DatagramHandler>(
    fd: i32,
    handler: &mut H,
    stop: &AtomicBool,
    settings: LoopSettings,
    drops: &mut KernelDrops,
) {
    let mut b = MmsgBatch::new(settings.batch);
    b.enable_drop_count(fd);
    if handler.wants_timestamps() && !b.enable_timestamps(fd) {
        tracing::warn!("SO_TIMESTAMPNS refused: socket waiting time is not seen by the hand-off");
    }
    let mut policy = settings.coalescer();
    let mut clock = RoundClock::start();
    let mut next = Next::WaitReadable;
    while !stop.load(Ordering::Relaxed) {
        let after_coalescing = matches!(next, Next::Coalesce(_));
        let flags = match next {
            Next::Receive => libc::MSG_DONTWAIT,
            Next::WaitReadable => libc::MSG_WAITFORONE,
            Next::Coalesce(wait) => {
                std::thread::sleep(wait);
                clock.woke();
                libc::MSG_DONTWAIT
            }
        };
        let got = b.recv(fd, flags);
        if flags == libc::MSG_WAITFORONE {
            // The blocking receive is the wait (its copy of the first
            // datagrams counts as idle: small beside the wait).
            clock.woke();
        }
        let got = match got {
            Ok(n) if n > 0 => n,
            Ok(_) => {
                next = Next::WaitReadable;
                continue;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    // Not a timeout: pause so a persistent error cannot spin.
                    tracing::debug!("recvmmsg: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                if flags == libc::MSG_WAITFORONE {
                    handler.idle();
                }
                next = Next::WaitReadable;
                continue;
            }
        };
        let k = begin_round(&mut b, got, handler, drops);
        if k > 0 {
            if let Some(start) = send_planned(fd, &mut b, k, handler) {
                send_singles_blocking(fd, &mut b, start, k, handler);
            }
        }
        handler.end_batch();
        next = end_round(
            &mut b,
            got,
            after_coalescing,
            &mut clock,
            &mut policy,
            handler,
        );
    }
}

/// Send replies `0..k` of the batch; never loses one silently, never blocks
/// the executor. First as planned messages (GSO groups and singles) in
/// `sendmmsg` calls, where a refused single reply is counted and skipped;
/// whatever that does not send (a full send buffer, a refused GSO message)
/// goes through [`send_singles`].
async fn send_all<H: DatagramHandler>(
    sock: &UdpSocket,
    b: &mut MmsgBatch,
    k: usize,
    handler: &mut H,
) {
    if k == 0 {
        return;
    }
    if let Some(start) = send_planned(sock.as_raw_fd(), b, k, handler) {
        send_singles(sock, b, start, k, handler).await;
    }
}

/// Send replies `0..k` as planned messages (GSO groups and singles) in
/// nonblocking `sendmmsg` calls; a refused single reply is counted and
/// skipped. Returns the position in `msg_order` from which the replies
/// must go one by one (a full send buffer, a refused GSO message), or
/// `None` when everything went out.
fn send_planned<H: DatagramHandler>(
    fd: i32,
    b: &mut MmsgBatch,
    k: usize,
    handler: &mut H,
) -> Option<usize> {
    let msgs = b.plan_messages(k);
    let mut sent = 0;
    while sent < msgs {
        // SAFETY: msg_hdr[sent..msgs] were filled by plan_messages and point
        // into buffers owned by `b`, which outlives the call.
        let e = match unsafe { send_messages(fd, &mut b.msg_hdr[sent..msgs], libc::MSG_DONTWAIT) } {
            Ok(n) => {
                for m in sent..sent + n {
                    if b.msg_start[m + 1] - b.msg_start[m] > 1 {
                        b.gso_messages += 1;
                    }
                }
                sent += n;
                continue;
            }
            Err(e) => e,
        };
        let grouped = b.msg_start[sent + 1] - b.msg_start[sent] > 1;
        let full = matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS));
        if !grouped && !full {
            // This one reply was refused (e.g. EPERM from a firewall,
            // EINVAL for a bad destination): skip just that one.
            tracing::debug!("sendmmsg: {e}");
            handler.dropped(DropKind::SendFailed);
            sent += 1;
            continue;
        }
        let gso_refused = matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
        );
        if grouped && gso_refused {
            tracing::info!(
                "UDP GSO refused on this socket ({e}); replies go out one datagram each from now on"
            );
            b.gso = false;
        }
        break;
    }
    (sent < msgs).then(|| b.msg_start[sent])
}

/// Send the replies `msg_order[start..k]` one datagram each.
async fn send_singles<H: DatagramHandler>(
    sock: &UdpSocket,
    b: &mut MmsgBatch,
    start: usize,
    k: usize,
    handler: &mut H,
) {
    let fd = sock.as_raw_fd();
    let total = b.lay_out_singles(start, k);
    let mut sent = 0;
    let mut waited = false;
    while sent < total {
        // SAFETY: msg_hdr[sent..total] are copies of headers filled by
        // queue_reply, pointing into buffers owned by `b`.
        let e = match unsafe { send_messages(fd, &mut b.msg_hdr[sent..total], libc::MSG_DONTWAIT) }
        {
            Ok(n) => {
                sent += n;
                continue;
            }
            Err(e) => e,
        };
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) if waited => {
                // Still full after one wait: shed the rest of this batch
                // rather than stall the shard reply by reply.
                for _ in sent..total {
                    handler.dropped(DropKind::SendFailed);
                }
                return;
            }
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                // Send buffer full: let glommio's ring wait for room for this
                // one reply, bounded, then go back to sendmmsg for the rest.
                waited = true;
                let j = b.msg_order[start + sent];
                let send = async { sock.send_to(&b.out[j], b.tx_to[j]).await.is_ok() };
                let ok = future::or(send, async {
                    glommio::timer::sleep(SEND_WAIT).await;
                    false
                })
                .await;
                if !ok {
                    handler.dropped(DropKind::SendFailed);
                }
            }
            _ => {
                // The first remaining reply was refused (e.g. EPERM from a
                // firewall, EINVAL for a bad destination): skip just that one.
                tracing::debug!("sendmmsg: {e}");
                handler.dropped(DropKind::SendFailed);
            }
        }
        sent += 1;
    }
}

/// Send the replies `msg_order[start..k]` one datagram each on a blocking
/// socket: each `sendmmsg` may wait up to the socket's send timeout for
/// room; if that passes, the rest of the batch is dropped and counted.
fn send_singles_blocking<H: DatagramHandler>(
    fd: i32,
    b: &mut MmsgBatch,
    start: usize,
    k: usize,
    handler: &mut H,
) {
    let total = b.lay_out_singles(start, k);
    let mut sent = 0;
    while sent < total {
        // SAFETY: msg_hdr[sent..total] are copies of headers filled by
        // queue_reply, pointing into buffers owned by `b`.
        match unsafe { send_messages(fd, &mut b.msg_hdr[sent..total], 0) } {
            Ok(n) => sent += n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => {
                // Still full after the send timeout: shed the rest.
                for _ in sent..total {
                    handler.dropped(DropKind::SendFailed);
                }
                return;
            }
            Err(e) => {
                tracing::debug!("sendmmsg: {e}");
                handler.dropped(DropKind::SendFailed);
                sent += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
