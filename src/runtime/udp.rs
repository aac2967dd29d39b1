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
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::UdpSocket;

use super::coalesce::Coalescer;
use super::mmsg::{self, send_messages};
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

/// Receive control messages of one datagram: room for `SCM_TIMESTAMPNS`
/// (CMSG_SPACE(16) = 32 bytes) and `SO_RXQ_OVFL` (CMSG_SPACE(4) = 24).
type RxCmsgBuf = [u64; 8];

/// Reusable buffers and headers for one batched socket.
struct MmsgBatch {
    n: usize,
    rx: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    out: Vec<Vec<u8>>,
    tx_iov: Vec<libc::iovec>,
    tx_hdr: Vec<libc::mmsghdr>,
    /// `tx_from[k]`: index of the received datagram (name) reply `k` goes to.
    tx_from: Vec<usize>,
    /// `tx_to[k]`: the address reply `k` goes to (the sender of `tx_from[k]`).
    tx_to: Vec<SocketAddr>,
    /// Outgoing messages of the batch: a group of replies to one address
    /// with one length (GSO), or a single reply.
    msg_hdr: Vec<libc::mmsghdr>,
    /// The replies' iovecs in message order (each message's contiguous).
    msg_iov: Vec<libc::iovec>,
    msg_ctrl: Vec<CmsgBuf>,
    /// `msg_order[msg_start[m]..msg_start[m + 1]]`: the replies of message `m`.
    msg_order: Vec<usize>,
    /// Sort keys of the plan, one per reply (see [`plan_key`]).
    plan_keys: Vec<(u128, u64)>,
    msg_start: Vec<usize>,
    /// Group replies with UDP GSO (cleared when the kernel refuses it).
    gso: bool,
    /// Messages sent with more than one segment (for tests and debugging).
    gso_messages: u64,
    /// Receive control messages (drop count, timestamps when enabled).
    rx_ctrl: Vec<RxCmsgBuf>,
    timestamps: bool,
    /// The kernel stamps its drop count on each datagram (`SO_RXQ_OVFL`).
    drop_count: bool,
}

impl MmsgBatch {
    fn new(n: usize) -> Box<MmsgBatch> {
        let n = n.max(1);
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_name: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
        let mut b = Box::new(MmsgBatch {
            n,
            rx: vec![0u8; n * RX_SLOT],
            names: vec![zero_name; n],
            rx_iov: vec![zero_iov; n],
            rx_hdr: vec![zero_hdr; n],
            out: (0..n).map(|_| Vec::with_capacity(1232)).collect(),
            tx_iov: vec![zero_iov; n],
            tx_hdr: vec![zero_hdr; n],
            tx_from: vec![0; n],
            tx_to: vec![SocketAddr::from(([0, 0, 0, 0], 0)); n],
            msg_hdr: vec![zero_hdr; n],
            msg_iov: vec![zero_iov; n],
            msg_ctrl: vec![[0u64; 4]; n],
            msg_order: vec![0; n],
            plan_keys: Vec::with_capacity(n),
            msg_start: vec![0; n + 1],
            gso: true,
            gso_messages: 0,
            rx_ctrl: vec![[0u64; 8]; n],
            timestamps: false,
            drop_count: false,
        });
        // The vectors above are never resized, so these pointers stay valid
        // for the life of the batch.
        for i in 0..n {
            let MmsgBatch {
                rx,
                names,
                rx_iov,
                rx_hdr,
                rx_ctrl,
                ..
            } = &mut *b;
            rx_iov[i].iov_base = rx[i * RX_SLOT..].as_mut_ptr().cast();
            rx_iov[i].iov_len = RX_SLOT;
            let h = &mut rx_hdr[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = rx_ctrl[i].as_mut_ptr().cast();
        }
        b
    }

    /// Ask the kernel for the drop count on `fd`; a refusal is logged and
    /// leaves the count unseen.
    fn enable_drop_count(&mut self, fd: i32) {
        match enable_drop_count(fd) {
            Ok(()) => self.drop_count = true,
            Err(e) => tracing::warn!(
                "SO_RXQ_OVFL refused ({e}): this socket's kernel drops are not counted"
            ),
        }
    }

    /// The drop count stamped on datagram `i`, if the kernel gave one.
    fn drop_count_of(&self, i: usize) -> Option<u32> {
        if !self.drop_count {
            return None;
        }
        // SAFETY: the kernel filled rx_hdr[i] on receive.
        unsafe { mmsg::rx_drop_count(&self.rx_hdr[i].msg_hdr) }
    }

    /// Ask the kernel for receive timestamps on `fd` and make room for
    /// them; false (and no timestamps) when it refuses.
    fn enable_timestamps(&mut self, fd: i32) -> bool {
        if set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).is_err() {
            return false;
        }
        self.timestamps = true;
        true
    }

    /// The receive time of datagram `i` (ns since the epoch), 0 if none.
    fn rx_time_ns(&self, i: usize) -> u64 {
        if !self.timestamps {
            return 0;
        }
        // SAFETY: the kernel filled rx_hdr[i] on receive.
        unsafe { mmsg::rx_timestamp_ns(&self.rx_hdr[i].msg_hdr) }.unwrap_or(0)
    }

    /// One `recvmmsg` with `flags` (`MSG_DONTWAIT`: never block; on a
    /// blocking socket, `MSG_WAITFORONE`: block for the first datagram
    /// only): number of datagrams, or the error (`WouldBlock` when the
    /// socket is empty or its receive timeout passed).
    fn recv(&mut self, fd: i32, flags: libc::c_int) -> io::Result<usize> {
        let ctrl_len = if self.timestamps || self.drop_count {
            size_of::<RxCmsgBuf>()
        } else {
            0
        };
        for h in &mut self.rx_hdr {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_controllen = ctrl_len as _;
            h.msg_len = 0;
        }
        // SAFETY: rx_hdr holds n initialised headers pointing into
        // buffers owned by self, alive for the duration of the call.
        unsafe { mmsg::recv_messages(fd, &mut self.rx_hdr[..self.n], flags) }
    }

    /// Point tx header `k` at `out[k]` and the sender of datagram `i`,
    /// whose address is `to`.
    fn queue_reply(&mut self, k: usize, i: usize, to: SocketAddr) {
        self.tx_iov[k].iov_base = self.out[k].as_mut_ptr().cast();
        self.tx_iov[k].iov_len = self.out[k].len();
        self.tx_from[k] = i;
        self.tx_to[k] = to;
        let h = &mut self.tx_hdr[k].msg_hdr;
        h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = self.rx_hdr[i].msg_hdr.msg_namelen;
        h.msg_iov = &mut self.tx_iov[k];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    /// Lay the replies `msg_order[start..k]` out as one message each, in
    /// contiguous headers for `sendmmsg` (`msg_hdr[p]` sends reply
    /// `msg_order[start + p]`); returns how many.
    fn lay_out_singles(&mut self, start: usize, k: usize) -> usize {
        let total = k - start;
        for p in 0..total {
            self.msg_hdr[p] = self.tx_hdr[self.msg_order[start + p]];
        }
        total
    }

    /// Lay replies `0..k` out as messages. Replies are ordered by
    /// destination, longest first (arrival order among equals), then cut
    /// into GSO messages: a run of replies to one address with one length
    /// (at most [`GSO_MAX_SEGMENT`] bytes), closed by at most one shorter
    /// reply, since GSO lets only the last segment be short. Anything else
    /// is a message of its own. Returns the message count.
    fn plan_messages(&mut self, k: usize) -> usize {
        // Order by destination, longest first: replies to one client
        // become adjacent in O(k log k), however many clients the batch has.
        // Without GSO every reply is a message of its own: arrival order
        // will do.
        if self.gso {
            self.plan_keys.clear();
            for j in 0..k {
                self.plan_keys
                    .push(plan_key(&self.tx_to[j], self.out[j].len(), j));
            }
            self.plan_keys.sort_unstable();
            for (slot, key) in self.msg_order.iter_mut().zip(&self.plan_keys) {
                *slot = (key.1 & 0xFFFF) as usize;
            }
        } else {
            for (p, slot) in self.msg_order[..k].iter_mut().enumerate() {
                *slot = p;
            }
        }
        let mut msgs = 0;
        let mut p = 0;
        while p < k {
            let lead = self.msg_order[p];
            let seg = self.out[lead].len();
            let mut end = p + 1;
            if self.gso && seg > 0 && seg <= GSO_MAX_SEGMENT {
                let mut bytes = seg;
                while end < k && end - p < GSO_MAX_SEGMENTS {
                    let j = self.msg_order[end];
                    let len = self.out[j].len();
                    // Same destination means len <= seg (sorted longest first).
                    if self.tx_to[j] != self.tx_to[lead] || len == 0 || bytes + len > GSO_MAX_BYTES
                    {
                        break;
                    }
                    bytes += len;
                    end += 1;
                    if len < seg {
                        break;
                    }
                }
            }
            self.msg_start[msgs] = p;
            msgs += 1;
            p = end;
        }
        self.msg_start[msgs] = k;
        for p in 0..k {
            self.msg_iov[p] = self.tx_iov[self.msg_order[p]];
        }
        for m in 0..msgs {
            let start = self.msg_start[m];
            let n = self.msg_start[m + 1] - start;
            let lead = self.msg_order[start];
            let i = self.tx_from[lead];
            let namelen = self.rx_hdr[i].msg_hdr.msg_namelen;
            let h = &mut self.msg_hdr[m].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.msg_iov[start];
            h.msg_iovlen = n as _;
            h.msg_flags = 0;
            if n > 1 {
                let seg = self.out[lead].len() as u16;
                mmsg::set_gso_segment(h, &mut self.msg_ctrl[m], seg);
            } else {
                mmsg::clear_control(h);
            }
        }
        msgs
    }
}

/// The plan's sort key of reply `j` (of `len` bytes, to `to`): integers
/// that order replies by destination (address, port, family), then longest
/// first, then arrival, and compare in a few instructions (ordering by
/// `SocketAddr` itself cost more than the DNS answer path). Destinations
/// that differ only in an IPv6 flow label or scope share a key; that only
/// places them side by side, since a GSO run also checks its destinations
/// are equal.
#[inline]
fn plan_key(to: &SocketAddr, len: usize, j: usize) -> (u128, u64) {
    let (addr, port, family) = match to {
        SocketAddr::V4(a) => (u128::from(u32::from(*a.ip())), a.port(), 0u64),
        SocketAddr::V6(a) => (u128::from(*a.ip()), a.port(), 1u64),
    };
    let shorter = 0xFFFF - len.min(0xFFFF) as u64;
    (
        addr,
        u64::from(port) << 48 | family << 47 | shorter << 16 | (j as u64 & 0xFFFF),
    )
}

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

/// Baseline: one glommio `recv_from` and one `send_to` per datagram. Kept for
/// the batching benchmark; the shards serve with [`serve_batched`].
pub async fn serve_plain<H: DatagramHandler>(sock: &UdpSocket, handler: &mut H, stop: &StopSignal) {
    let mut buf = vec![0u8; RX_SLOT];
    let mut out = Vec::with_capacity(1232);
    loop {
        let recv = async { Some(sock.recv_from(&mut buf).await) };
        let got = future::or(recv, async {
            stop.stopped().await;
            None
        })
        .await;
        let (len, from) = match got {
            None => break,
            Some(Ok(x)) => x,
            Some(Err(e)) => {
                tracing::debug!("recv_from: {e}");
                continue;
            }
        };
        handler.begin_batch();
        if handler.handle(&buf[..len], from, &mut out) && sock.send_to(&out, from).await.is_err() {
            handler.dropped(DropKind::SendFailed);
        }
        handler.end_batch();
        glommio::yield_if_needed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdUdp;
    use std::rc::Rc;

    /// Echo handler that flips the first byte, counts batches, and refuses
    /// to answer datagrams starting with 0xFF.
    struct Echo {
        batches: Rc<std::cell::Cell<usize>>,
        drops: Rc<std::cell::Cell<usize>>,
    }
    impl DatagramHandler for Echo {
        fn begin_batch(&mut self) {
            self.batches.set(self.batches.get() + 1);
        }
        fn handle(&mut self, d: &[u8], _from: SocketAddr, out: &mut Vec<u8>) -> bool {
            out.clear();
            if d.first() == Some(&0xFF) {
                return false;
            }
            out.extend_from_slice(d);
            if let Some(b) = out.first_mut() {
                *b ^= 0x80;
            }
            true
        }
        fn dropped(&mut self, _why: DropKind) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    fn run_loop(batched: Option<LoopSettings>, v6: bool) {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async move {
            let addr: SocketAddr = if v6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
            let sock = super::super::sockets::bind_udp(addr, None).unwrap();
            let server = sock.local_addr().unwrap();
            let stop = StopSignal::new();
            let batches = Rc::new(std::cell::Cell::new(0));
            let drops = Rc::new(std::cell::Cell::new(0));
            let mut h = Echo {
                batches: batches.clone(),
                drops: drops.clone(),
            };
            // A blocking client on another thread sends everything first
            // (100 datagrams, every tenth unanswered, one oversized), then
            // expects exactly the 90 echoes.
            let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sent2 = sent.clone();
            let client = std::thread::spawn(move || {
                let c = StdUdp::bind(if v6 { "[::1]:0" } else { "127.0.0.1:0" }).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                for i in 0..100u8 {
                    let first = if i % 10 == 9 { 0xFF } else { i };
                    c.send_to(&[first, i, 1, 2, 3], server).unwrap();
                }
                c.send_to(&vec![7u8; RX_SLOT + 10], server).unwrap();
                sent2.store(true, std::sync::atomic::Ordering::Release);
                let mut seen = Vec::new();
                let mut buf = [0u8; 64];
                while seen.len() < 90 {
                    let (n, _) = c.recv_from(&mut buf).unwrap();
                    assert_eq!(n, 5);
                    assert_eq!(buf[0], buf[1] ^ 0x80);
                    seen.push(buf[1]);
                }
                seen.sort();
                let want: Vec<u8> = (0..100).filter(|i| i % 10 != 9).collect();
                assert_eq!(seen, want);
            });
            while !sent.load(std::sync::atomic::Ordering::Acquire) {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let stop2 = stop.clone();
            let server_task = glommio::spawn_local(async move {
                if let Some(settings) = batched {
                    let mut drops = KernelDrops::unexported();
                    serve_batched(&sock, &mut h, &stop2, settings, &mut drops).await;
                    assert_eq!(drops.total(), 0, "nothing overflowed");
                } else {
                    serve_plain(&sock, &mut h, &stop2).await;
                }
            });
            while !client.is_finished() {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            client.join().unwrap();
            stop.stop();
            server_task.await;
            assert!(batches.get() >= 1);
            if batched.is_some() {
                // 101 queued datagrams in batches of 8: 13 calls.
                assert_eq!(
                    batches.get(),
                    13,
                    "batched loop made {} batches",
                    batches.get()
                );
                assert_eq!(drops.get(), 1, "the oversized datagram is counted");
            }
        });
    }

    #[test]
    fn batched_loop_answers_every_datagram_v4() {
        run_loop(Some(LoopSettings::batch_only(8)), false);
    }

    #[test]
    fn a_coalescing_loop_answers_every_datagram_and_stops() {
        // Every partial batch of 2 or more is followed by a 2 ms wait.
        let settings = LoopSettings {
            batch: 8,
            coalesce: Duration::from_millis(2),
            coalesce_min_batch: 2,
        };
        run_loop(Some(settings), false);
        assert!(settings.coalescer().enabled());
        assert!(!LoopSettings::batch_only(8).coalescer().enabled());
    }

    #[test]
    fn batched_loop_answers_every_datagram_v6() {
        run_loop(Some(LoopSettings::batch_only(8)), true);
    }

    #[test]
    fn plain_loop_answers_every_datagram() {
        run_loop(None, false);
    }

    /// Handler for the blocking loop: echoes like [`Echo`] and counts
    /// batches, drops and receive timeouts.
    #[derive(Default)]
    struct BlockingEcho {
        batches: usize,
        drops: usize,
        idles: usize,
    }
    impl DatagramHandler for BlockingEcho {
        fn begin_batch(&mut self) {
            self.batches += 1;
        }
        fn handle(&mut self, d: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
            Echo {
                batches: Rc::default(),
                drops: Rc::default(),
            }
            .handle(d, from, out)
        }
        fn dropped(&mut self, _why: DropKind) {
            self.drops += 1;
        }
        fn idle(&mut self) {
            self.idles += 1;
        }
    }

    fn run_blocking_loop(settings: LoopSettings) {
        let sock =
            super::super::sockets::bind_udp_std("127.0.0.1:0".parse().unwrap(), None).unwrap();
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        sock.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let server = sock.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (sent_tx, sent_rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        // Everything is queued before the loop starts (100 datagrams, every
        // tenth unanswered, one oversized); the client expects exactly the
        // 90 echoes, stays quiet for a few receive timeouts, then stops
        // the loop.
        let client = std::thread::spawn(move || {
            let c = StdUdp::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for i in 0..100u8 {
                let first = if i % 10 == 9 { 0xFF } else { i };
                c.send_to(&[first, i, 1, 2, 3], server).unwrap();
            }
            c.send_to(&vec![7u8; RX_SLOT + 10], server).unwrap();
            sent_tx.send(()).unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            while seen.len() < 90 {
                let (n, _) = c.recv_from(&mut buf).unwrap();
                assert_eq!(n, 5);
                assert_eq!(buf[0], buf[1] ^ 0x80);
                seen.push(buf[1]);
            }
            seen.sort();
            let want: Vec<u8> = (0..100).filter(|i| i % 10 != 9).collect();
            assert_eq!(seen, want);
            std::thread::sleep(Duration::from_millis(100));
            stop2.store(true, Ordering::Relaxed);
            std::time::Instant::now()
        });
        sent_rx.recv().unwrap();
        let mut h = BlockingEcho::default();
        serve_blocking(
            sock.as_raw_fd(),
            &mut h,
            &stop,
            settings,
            &mut KernelDrops::unexported(),
        );
        let returned = std::time::Instant::now();
        let stopped_at = client.join().unwrap();
        assert!(
            returned.duration_since(stopped_at) < Duration::from_secs(2),
            "the loop returns within a receive timeout of stop"
        );
        // 101 queued datagrams in batches of 8: 13 calls.
        assert_eq!(h.batches, 13, "blocking loop made {} batches", h.batches);
        assert_eq!(h.drops, 1, "the oversized datagram is counted");
        assert!(h.idles >= 1, "receive timeouts call idle");
    }

    /// Datagrams the receive buffer had no room for are counted from the
    /// kernel's own count, as the socket reports it (`SO_MEMINFO`).
    #[test]
    fn kernel_drops_at_a_full_receive_buffer_are_counted() {
        let sock =
            super::super::sockets::bind_udp_std("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let fd = sock.as_raw_fd();
        // The smallest buffer the kernel allows (it doubles and floors it).
        set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 1).unwrap();
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let server = sock.local_addr().unwrap();
        let client = StdUdp::bind("127.0.0.1:0").unwrap();
        // Flood while nobody receives, then one more after the first drain.
        for i in 0..200u8 {
            client.send_to(&[i; 1000], server).unwrap();
        }
        let dropped_before = drop_count_now(fd).unwrap();
        assert!(dropped_before > 0, "a 2 KB buffer took 200 KB");
        let mut drops = KernelDrops::unexported();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let trailer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            client.send_to(&[0xFF; 10], server).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            stop2.store(true, Ordering::Relaxed);
        });
        let mut h = BlockingEcho::default();
        serve_blocking(fd, &mut h, &stop, LoopSettings::batch_only(8), &mut drops);
        trailer.join().unwrap();
        assert_eq!(drops.total(), u64::from(drop_count_now(fd).unwrap()));
        assert_eq!(drops.total(), u64::from(dropped_before));
    }

    #[test]
    fn a_drop_count_that_wraps_keeps_counting() {
        let mut d = KernelDrops::unexported();
        d.observe(u32::MAX - 1);
        d.observe(u32::MAX - 1);
        d.observe(3);
        assert_eq!(d.total(), u64::from(u32::MAX) + 4);
    }

    #[test]
    fn blocking_loop_answers_every_datagram_and_stops() {
        run_blocking_loop(LoopSettings::batch_only(8));
    }

    #[test]
    fn blocking_coalescing_loop_answers_every_datagram_and_stops() {
        run_blocking_loop(LoopSettings {
            batch: 8,
            coalesce: Duration::from_millis(2),
            coalesce_min_batch: 2,
        });
    }

    /// Write `addr` into `ss` as the kernel would; returns the name length.
    fn put_name(ss: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large enough for a sockaddr_in.
                let sin = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_storage is large enough for a sockaddr_in6.
                let sin6 = unsafe { &mut *(ss as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    #[test]
    fn a_refused_reply_is_counted_and_the_rest_of_the_batch_still_goes_out() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let sock =
                super::super::sockets::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
            let client = StdUdp::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let client_addr = client.local_addr().unwrap();
            let mut b = MmsgBatch::new(4);
            // Reply 1 goes to port 0, which the kernel refuses (EINVAL);
            // replies 0, 2 and 3 go to the client.
            for i in 0..4 {
                let to = if i == 1 {
                    "127.0.0.1:0".parse().unwrap()
                } else {
                    client_addr
                };
                let len = put_name(&mut b.names[i], to);
                b.rx_hdr[i].msg_hdr.msg_namelen = len;
                b.out[i] = vec![i as u8; 3];
                b.queue_reply(i, i, to);
            }
            let drops = Rc::new(std::cell::Cell::new(0));
            let mut h = Echo {
                batches: Rc::default(),
                drops: drops.clone(),
            };
            send_all(&sock, &mut b, 4, &mut h).await;
            assert_eq!(drops.get(), 1);
            // Replies 0, 2 and 3 (same client, same length) left as one GSO
            // message; the refused one alone.
            assert_eq!(b.gso_messages, 1);
            let mut got = Vec::new();
            let mut buf = [0u8; 8];
            for _ in 0..3 {
                let (n, _) = client.recv_from(&mut buf).unwrap();
                assert_eq!(n, 3);
                got.push(buf[0]);
            }
            assert_eq!(got, vec![0, 2, 3]);
        });
    }

    #[test]
    fn replies_to_several_clients_with_mixed_lengths_each_reach_their_own_client() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let sock =
                super::super::sockets::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
            let clients: Vec<StdUdp> = (0..3)
                .map(|_| {
                    let c = StdUdp::bind("127.0.0.1:0").unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    c
                })
                .collect();
            let n = 30;
            let mut b = MmsgBatch::new(n);
            let mut want: Vec<Vec<Vec<u8>>> = vec![Vec::new(); clients.len()];
            for i in 0..n {
                // Client i % 3; lengths 3, 3, 7 in turn, plus one 2000-byte
                // reply that must not be grouped.
                let c = i % 3;
                let len = if i == 17 {
                    2000
                } else if (i / 3) % 3 == 2 {
                    7
                } else {
                    3
                };
                let addr = clients[c].local_addr().unwrap();
                let name_len = put_name(&mut b.names[i], addr);
                b.rx_hdr[i].msg_hdr.msg_namelen = name_len;
                let mut reply = vec![i as u8; len];
                reply[0] = c as u8;
                b.out[i] = reply.clone();
                b.queue_reply(i, i, addr);
                want[c].push(reply);
            }
            let drops = Rc::new(std::cell::Cell::new(0));
            let mut h = Echo {
                batches: Rc::default(),
                drops: drops.clone(),
            };
            send_all(&sock, &mut b, n, &mut h).await;
            assert_eq!(drops.get(), 0);
            assert!(b.gso_messages >= 3, "{} GSO messages", b.gso_messages);
            for (c, client) in clients.iter().enumerate() {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for _ in 0..want[c].len() {
                    let (len, from) = client.recv_from(&mut buf).unwrap();
                    assert_eq!(from, sock.local_addr().unwrap());
                    got.push(buf[..len].to_vec());
                }
                got.sort();
                want[c].sort();
                assert_eq!(got, want[c], "client {c}");
                client.set_nonblocking(true).unwrap();
                assert!(
                    client.recv_from(&mut buf).is_err(),
                    "client {c} got extra datagrams"
                );
            }
        });
    }

    /// Fill reply `i` of `b`: `len` bytes to `to`.
    fn put_reply(b: &mut MmsgBatch, i: usize, to: SocketAddr, len: usize) {
        let name_len = put_name(&mut b.names[i], to);
        b.rx_hdr[i].msg_hdr.msg_namelen = name_len;
        b.out[i] = vec![i as u8; len];
        b.queue_reply(i, i, to);
    }

    /// The messages planned for the batch, as lists of reply indices.
    fn planned(b: &mut MmsgBatch, k: usize) -> Vec<Vec<usize>> {
        let msgs = b.plan_messages(k);
        (0..msgs)
            .map(|m| b.msg_order[b.msg_start[m]..b.msg_start[m + 1]].to_vec())
            .collect()
    }

    #[test]
    fn replies_group_by_destination_longest_first_with_one_shorter_tail() {
        let a: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let c: SocketAddr = "127.0.0.2:5001".parse().unwrap();
        let lens = [
            (a, 50),
            (a, 30),
            (c, 50),
            (a, 50),
            (a, 40),
            (a, 2000),
            (a, 50),
            (c, 50),
            (a, 30),
        ];
        let mut b = MmsgBatch::new(lens.len());
        for (i, &(to, len)) in lens.iter().enumerate() {
            put_reply(&mut b, i, to, len);
        }
        // a: 50 50 50 closed by 40; then 30 30; the 2000-byte reply alone
        // (too large to group); c: 50 50.
        assert_eq!(
            planned(&mut b, lens.len()),
            vec![vec![5], vec![0, 3, 6, 4], vec![1, 8], vec![2, 7]]
        );
        // The iovecs follow the plan and GSO messages carry the segment size.
        let m = &b.msg_hdr[1].msg_hdr;
        assert_eq!(m.msg_iovlen, 4);
        assert!(m.msg_controllen > 0);
        assert_eq!(b.msg_iov[4].iov_len, 40);
        assert_eq!(b.msg_hdr[0].msg_hdr.msg_controllen, 0);

        // Without GSO every reply is a message of its own, in arrival
        // order (no sort).
        b.gso = false;
        let plan = planned(&mut b, lens.len());
        assert_eq!(plan, (0..lens.len()).map(|i| vec![i]).collect::<Vec<_>>());
    }

    #[test]
    fn replies_to_many_clients_pair_up_per_client() {
        // 32 clients, two replies each, interleaved: 32 messages of 2.
        let clients: Vec<SocketAddr> = (0..32)
            .map(|c| SocketAddr::from(([127, 0, (c % 3) as u8, 1 + c as u8], 6000 - c as u16)))
            .collect();
        let mut b = MmsgBatch::new(64);
        for i in 0..64 {
            put_reply(&mut b, i, clients[i % 32], 40);
        }
        let plan = planned(&mut b, 64);
        assert_eq!(plan.len(), 32);
        for m in &plan {
            assert_eq!(m.len(), 2);
            assert_eq!(m[0] % 32, m[1] % 32, "one client per message: {m:?}");
        }
    }

    #[test]
    fn ipv6_replies_group_per_client_and_apart_from_ipv4() {
        let v6a: SocketAddr = "[::1]:53".parse().unwrap();
        let v6b: SocketAddr = "[::1]:54".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let to = [v6a, v4, v6b, v6a, v4, v6b, v6a];
        let mut b = MmsgBatch::new(to.len());
        for (i, &a) in to.iter().enumerate() {
            put_reply(&mut b, i, a, 30);
        }
        // One message per destination (in no particular order).
        let mut plan = planned(&mut b, to.len());
        plan.sort();
        assert_eq!(plan, vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
    }

    #[test]
    fn plan_keys_order_by_destination_then_longest_then_arrival() {
        let a: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:54".parse().unwrap();
        let c: SocketAddr = "[::a00:1]:53".parse().unwrap(); // same bits as `a`
        assert!(plan_key(&a, 100, 5) < plan_key(&a, 40, 0), "longest first");
        assert!(plan_key(&a, 40, 1) < plan_key(&a, 40, 2), "then arrival");
        assert!(plan_key(&a, 10, 9) < plan_key(&b, 1000, 0), "by port");
        assert_ne!(
            plan_key(&a, 40, 1).1 & !0xFFFF,
            plan_key(&c, 40, 1).1 & !0xFFFF,
            "IPv4 and IPv6 never share a destination key"
        );
        assert_eq!(
            plan_key(&a, 40, 7).1 & 0xFFFF,
            7,
            "the reply index comes back"
        );
    }

    #[test]
    fn a_gso_message_holds_at_most_64_segments() {
        let a: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let mut b = MmsgBatch::new(150);
        for i in 0..150 {
            put_reply(&mut b, i, a, 100);
        }
        let sizes: Vec<usize> = planned(&mut b, 150).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![64, 64, 22]);
    }

    #[test]
    fn sockaddr_conversion_rejects_short_and_unknown() {
        let ss: libc::sockaddr_storage = unsafe { zeroed() };
        assert_eq!(sockaddr_to_std(&ss, 128), None);
        let mut ss4 = ss;
        ss4.ss_family = libc::AF_INET as libc::sa_family_t;
        assert_eq!(sockaddr_to_std(&ss4, 4), None);
        assert!(sockaddr_to_std(&ss4, 16).is_some());
    }
}
