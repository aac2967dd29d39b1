//! The datagram load loop of one thread (modes `dns` and `fn-udp`): one
//! nonblocking UDP socket per source address, each connected to the target;
//! requests go out in `sendmmsg` batches and replies come in with
//! `recvmmsg`, each stamped by the kernel on arrival (SO_TIMESTAMPNS) so
//! latency does not depend on when the loop gets to read. Closed loop keeps
//! a fixed number of requests outstanding; open loop follows a
//! [`Schedule`] and measures from the intended send time. Every loop is
//! bounded: the thread ends at `send_end + timeout` at the latest.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

use super::codec::{Outcome, UdpCodec};
use super::inflight::{Finished, Inflight};
use super::schedule::Schedule;
use super::stats::Stats;
use super::sys::{tighten_timer_slack, wait_readable, Clock, Progress, ProgressSnapshot};

use shardgate::runtime::mmsg;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
pub const BATCH: usize = 64;
/// Receive buffer per datagram; longer replies are judged on their first
/// bytes (the header is all the codecs need).
const RECV_LEN: usize = 16 * 1024;
/// Control buffer per datagram (one SCM_TIMESTAMPNS).
const CTRL_LEN: usize = 64;
/// Calls per socket per loop turn, so sends and receives take turns.
const MAX_ROUNDS: usize = 16;
/// Longest single wait, so a stop request is seen promptly.
const MAX_WAIT_NS: u64 = 20_000_000;

/// Event kinds (not tied to one request).
pub const EV_LATE: &str = "late or duplicate replies (ignored)";
pub const EV_UNKNOWN: &str = "datagrams that are not replies (ignored)";
pub const EV_REFUSED: &str = "ICMP port unreachable (target not listening)";
pub const EV_SEND_ERR: &str = "send errors";
pub const EV_RECV_ERR: &str = "receive errors";
pub const EV_NO_ID: &str = "sends delayed: all request ids in flight";
pub const EV_NO_GSO: &str = "UDP GSO refused: sent one datagram per call instead";

/// Most segments in one GSO message (the kernel's limit is 64 or more).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message.
const GSO_MAX_BYTES: usize = 60_000;

/// Group the requests of a batch for GSO: `order` lists request indices
/// with equal lengths adjacent (send order kept within a length), and each
/// group is `(start in order, count)`: one message, all segments the same
/// length, at most `max_segs` segments and `max_bytes` bytes. Without GSO
/// every request is its own group.
pub fn gso_groups(
    lens: &[usize],
    gso: bool,
    max_segs: usize,
    max_bytes: usize,
    order: &mut Vec<usize>,
    groups: &mut Vec<(usize, usize)>,
) {
    order.clear();
    groups.clear();
    order.extend(0..lens.len());
    if !gso {
        groups.extend((0..lens.len()).map(|i| (i, 1)));
        return;
    }
    order.sort_by_key(|&i| lens[i]);
    let mut start = 0;
    while start < order.len() {
        let len = lens[order[start]];
        let mut n = 1;
        while start + n < order.len()
            && lens[order[start + n]] == len
            && n < max_segs
            && (n + 1) * len <= max_bytes
        {
            n += 1;
        }
        groups.push((start, n));
        start += n;
    }
}

/// How load is offered by one thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Keep this many requests outstanding.
    Closed { outstanding: usize },
    /// Send at this rate (per second), first request at `offset_ns`.
    Open { rate: f64, offset_ns: u64 },
}

/// Everything one UDP load thread needs.
#[derive(Debug, Clone)]
pub struct UdpPlan {
    pub target: SocketAddr,
    /// One socket per source; empty means one socket on the wildcard address.
    pub sources: Vec<IpAddr>,
    pub load: Load,
    /// First request item of this thread (threads start at different lines).
    pub first_item: usize,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    pub timeout_ns: u64,
    /// Open loop: at most one wake-up per tick; each wake-up sends the
    /// requests intended up to one tick ahead in one batch. 0 = a wake-up
    /// for every request.
    pub tick_ns: u64,
    pub clock: Clock,
    pub recv_buffer: usize,
    /// Send runs of equal-length requests as one UDP GSO message
    /// (UDP_SEGMENT); falls back to one message per request when the
    /// kernel or route refuses.
    pub gso: bool,
}

/// The event under which a run reports replies dropped by the load tool's
/// own receive buffers (they count as lost: the server did answer).
pub const OWN_SOCKET_DROPS: &str = "replies dropped by the load tool's own socket buffers";

/// Open the sockets of a plan: bound to each source, connected to the target.
pub fn open_sockets(plan: &UdpPlan) -> Result<Vec<Socket>, String> {
    let unspecified: IpAddr = match plan.target {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let sources = if plan.sources.is_empty() {
        vec![unspecified]
    } else {
        plan.sources.clone()
    };
    let mut out = Vec::with_capacity(sources.len());
    for src in sources {
        let s = Socket::new(
            Domain::for_address(plan.target),
            Type::DGRAM,
            Some(Protocol::UDP),
        )
        .map_err(|e| format!("cannot create a UDP socket: {e}"))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("cannot make the socket nonblocking: {e}"))?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = s.set_recv_buffer_size(plan.recv_buffer);
        let _ = s.set_send_buffer_size(plan.recv_buffer);
        s.bind(&SocketAddr::new(src, 0).into()).map_err(|e| {
            format!(
                "cannot bind source address {src}: {e}; a source must be an address of this \
                 host (on Linux every 127.0.0.0/8 address is)"
            )
        })?;
        s.connect(&plan.target.into())
            .map_err(|e| format!("cannot connect from {src} to {}: {e}", plan.target))?;
        enable_rx_timestamps(s.as_raw_fd());
        out.push(s);
    }
    Ok(out)
}

fn enable_rx_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: valid fd and option value; failure only loses kernel stamps.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Scratch space for one batch of datagrams.
struct DatagramBatch {
    bufs: Vec<u8>,
    buf_len: usize,
    ctrl: Vec<u8>,
    /// Control messages of GSO sends, one per header.
    gso_ctrl: Vec<mmsg::GsoCmsg>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl DatagramBatch {
    fn new(buf_len: usize) -> DatagramBatch {
        DatagramBatch {
            bufs: vec![0u8; buf_len * BATCH],
            buf_len,
            ctrl: vec![0u8; CTRL_LEN * BATCH],
            gso_ctrl: vec![[0; 4]; BATCH],
            // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid.
            iovs: unsafe { mmsg::zeroed_vec(BATCH) },
            hdrs: unsafe { mmsg::zeroed_vec(BATCH) },
        }
    }

    fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * self.buf_len..(i + 1) * self.buf_len]
    }

    fn buf(&self, i: usize, len: usize) -> &[u8] {
        &self.bufs[i * self.buf_len..i * self.buf_len + len.min(self.buf_len)]
    }

    /// Point header `i` at buffer `i` (`len` bytes) and, for receives, at
    /// its control buffer.
    fn prepare(&mut self, i: usize, len: usize, with_ctrl: bool) {
        let base = self.bufs.as_mut_ptr();
        let ctrl = self.ctrl.as_mut_ptr();
        self.iovs[i] = libc::iovec {
            // SAFETY: i < BATCH, so the offset is inside `bufs`.
            iov_base: unsafe { base.add(i * self.buf_len) } as *mut libc::c_void,
            iov_len: len,
        };
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = std::ptr::null_mut();
        h.msg_namelen = 0;
        h.msg_iov = &mut self.iovs[i];
        h.msg_iovlen = 1;
        if with_ctrl {
            // SAFETY: i < BATCH, so the offset is inside `ctrl`.
            h.msg_control = unsafe { ctrl.add(i * CTRL_LEN) } as *mut libc::c_void;
            h.msg_controllen = CTRL_LEN as _;
        } else {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
        h.msg_flags = 0;
        self.hdrs[i].msg_len = 0;
    }

    /// Point headers at the requests in `bufs` (lengths `lens`), one header
    /// per group of `order` (see [`gso_groups`]); a group of more than one
    /// request carries a UDP_SEGMENT control message with its length.
    fn prepare_groups(&mut self, order: &[usize], lens: &[usize], groups: &[(usize, usize)]) {
        let base = self.bufs.as_mut_ptr();
        for (p, &j) in order.iter().enumerate() {
            self.iovs[p] = libc::iovec {
                // SAFETY: j < BATCH, so the offset is inside `bufs`.
                iov_base: unsafe { base.add(j * self.buf_len) } as *mut libc::c_void,
                iov_len: lens[j],
            };
        }
        let iovs = self.iovs.as_mut_ptr();
        for (g, &(start, count)) in groups.iter().enumerate() {
            self.hdrs[g].msg_len = 0;
            let h = &mut self.hdrs[g].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            // SAFETY: start + count <= order.len() <= BATCH iovecs.
            h.msg_iov = unsafe { iovs.add(start) };
            h.msg_iovlen = count as _;
            h.msg_flags = 0;
            if count > 1 {
                let seg = lens[order[start]] as u16;
                mmsg::set_gso_segment(h, &mut self.gso_ctrl[g], seg);
            } else {
                mmsg::clear_control(h);
            }
        }
    }

    /// Kernel receive time of datagram `i`, realtime ns, if stamped.
    fn rx_stamp(&self, i: usize) -> Option<u64> {
        // SAFETY: hdrs[i] was filled by the kernel's recvmmsg.
        unsafe { mmsg::rx_timestamp_ns(&self.hdrs[i].msg_hdr) }
    }
}

/// Up to this many sockets are simply all read every turn; with more, an
/// epoll set says which hold replies.
const DIRECT_SOCKETS: usize = 4;

/// A level-triggered epoll set over the sockets (event data = index).
struct Readiness {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Readiness {
    fn new(fds: &[RawFd]) -> Result<Readiness, String> {
        // SAFETY: plain syscall; the result is checked before use.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(format!(
                "cannot create an epoll set: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: epfd is a new descriptor we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        for (i, &fd) in fds.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: valid epoll fd, socket fd and event.
            if unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(format!(
                    "cannot watch a socket: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        Ok(Readiness {
            epfd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; fds.len().min(1024)],
        })
    }

    /// Indices of the sockets with something to read, now (no waiting).
    fn ready(&mut self, out: &mut Vec<usize>) {
        out.clear();
        // SAFETY: events has room for events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                0,
            )
        };
        for ev in self.events.iter().take(n.max(0) as usize) {
            out.push(ev.u64 as usize);
        }
    }
}

/// One thread's state while the run lasts.
struct Run<'a, C: UdpCodec> {
    codec: &'a C,
    plan: &'a UdpPlan,
    socks: Vec<Socket>,
    fds: Vec<RawFd>,
    /// With many sockets: which are readable.
    readiness: Option<Readiness>,
    /// Sockets to read this turn.
    to_read: Vec<usize>,
    inflight: Vec<Inflight>,
    stats: Stats,
    raw: ProgressSnapshot,
    next_item: usize,
    next_sock: usize,
    gso: bool,
    send: DatagramBatch,
    recv: DatagramBatch,
}

impl<C: UdpCodec> Run<'_, C> {
    fn in_flight(&self) -> usize {
        self.inflight.iter().map(Inflight::len).sum()
    }

    /// Drain every socket (bounded); returns datagrams read and whether a
    /// socket may still hold more.
    fn receive(&mut self) -> (usize, bool) {
        let mut total = 0;
        let mut more = false;
        let mut to_read = std::mem::take(&mut self.to_read);
        match &mut self.readiness {
            Some(r) => r.ready(&mut to_read),
            None => {
                to_read.clear();
                to_read.extend(0..self.socks.len());
            }
        }
        for &s in &to_read {
            let mut rounds = 0;
            loop {
                if rounds == MAX_ROUNDS {
                    more = true;
                    break;
                }
                rounds += 1;
                for i in 0..BATCH {
                    self.recv.prepare(i, RECV_LEN, true);
                }
                // SAFETY: hdrs holds BATCH headers pointing into live buffers.
                let got = unsafe {
                    mmsg::recv_messages(self.fds[s], &mut self.recv.hdrs, libc::MSG_DONTWAIT)
                };
                let n = match got {
                    Ok(n) => n,
                    Err(e) => {
                        match e.raw_os_error().unwrap_or(0) {
                            libc::EAGAIN => {}
                            libc::ECONNREFUSED => {
                                self.stats.event(EV_REFUSED);
                                continue;
                            }
                            _ => self.stats.event(EV_RECV_ERR),
                        }
                        break;
                    }
                };
                let fallback = self.plan.clock.now();
                for i in 0..n {
                    let len = self.recv.hdrs[i].msg_len as usize;
                    let at = self
                        .recv
                        .rx_stamp(i)
                        .map(|t| self.plan.clock.from_realtime(t))
                        .unwrap_or(fallback);
                    self.on_reply(s, i, len, at);
                }
                total += n;
                if n < BATCH {
                    break;
                }
            }
        }
        self.to_read = to_read;
        (total, more)
    }

    fn on_reply(&mut self, s: usize, i: usize, len: usize, at: u64) {
        let reply = self.recv.buf(i, len);
        let Some(id) = self.codec.reply_id(reply) else {
            self.stats.event(EV_UNKNOWN);
            return;
        };
        let Some(f) = self.inflight[s].finish(id) else {
            self.stats.event(EV_LATE);
            return;
        };
        let outcome = self.codec.classify(f.item, reply);
        let latency = at.saturating_sub(f.intended_ns);
        match outcome {
            Outcome::Ok => {
                self.raw.ok += 1;
                if f.measured {
                    self.stats.record_ok(latency);
                }
            }
            Outcome::Error(kind) => {
                self.raw.errors += 1;
                if f.measured {
                    self.stats.record_error(kind, latency);
                }
            }
        }
    }

    fn expire(&mut self, now: u64) {
        let Some(before) = now.checked_sub(self.plan.timeout_ns) else {
            return;
        };
        for t in &mut self.inflight {
            let stats = &mut self.stats;
            let raw = &mut self.raw;
            t.expire(before, |f: Finished| {
                raw.lost += 1;
                if f.measured {
                    stats.lost += 1;
                }
            });
        }
    }

    /// Send up to `want` requests; `intended(j)` gives the intended time of
    /// the j-th of them (closed loop: the send time). Returns how many left.
    fn send(&mut self, want: usize, intended: impl Fn(usize) -> u64) -> usize {
        let mut sent = 0;
        let nsocks = self.socks.len();
        let mut rounds = 0;
        let mut exhausted = 0;
        let mut order = Vec::with_capacity(BATCH);
        let mut groups = Vec::with_capacity(BATCH);
        while sent < want && rounds < MAX_ROUNDS * nsocks && exhausted < nsocks {
            rounds += 1;
            let s = self.next_sock;
            self.next_sock = (self.next_sock + 1) % nsocks;
            let chunk = (want - sent).min(BATCH);
            let now = self.plan.clock.now();
            let mut ids = [0u32; BATCH];
            let mut lens = [0usize; BATCH];
            let mut measured = [false; BATCH];
            let mut m = 0;
            while m < chunk {
                let item = self.next_item;
                let due = intended(sent + m);
                // Latency counts from the intended time, or from the actual
                // send when the request leaves early (batched a tick ahead).
                let when = due.min(now);
                // In the measured window by its intended time.
                measured[m] = due >= self.plan.warmup_ns;
                let Some(id) = self.inflight[s].start(item, when, now, measured[m]) else {
                    break;
                };
                ids[m] = id;
                lens[m] = self.codec.encode(item, id, self.send.buf_mut(m));
                self.next_item = (item + 1) % self.codec.items();
                m += 1;
            }
            if m == 0 {
                exhausted += 1;
                self.stats.event(EV_NO_ID);
                continue;
            }
            gso_groups(
                &lens[..m],
                self.gso,
                GSO_MAX_SEGMENTS,
                GSO_MAX_BYTES,
                &mut order,
                &mut groups,
            );
            self.send.prepare_groups(&order, &lens[..m], &groups);
            // SAFETY: the first groups.len() headers point into live buffers.
            let result =
                unsafe { mmsg::send_messages(self.fds[s], &mut self.send.hdrs[..groups.len()], 0) };
            let groups_done = match result {
                Ok(n) => n,
                Err(e) => {
                    match e.raw_os_error().unwrap_or(0) {
                        libc::EAGAIN | libc::ENOBUFS => {}
                        libc::ECONNREFUSED => self.stats.event(EV_REFUSED),
                        libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP
                            if self.gso =>
                        {
                            self.gso = false;
                            self.stats.event(EV_NO_GSO);
                        }
                        _ => self.stats.event(EV_SEND_ERR),
                    }
                    0
                }
            };
            // Requests of the groups sent count; the others give their ids
            // back (to be sent in a later round or turn).
            let split = groups
                .get(groups_done)
                .map_or(order.len(), |&(start, _)| start);
            let mut done = 0;
            for (p, &j) in order.iter().enumerate() {
                if p < split {
                    done += 1;
                    if measured[j] {
                        self.stats.sent += 1;
                    }
                } else {
                    self.inflight[s].cancel(ids[j]);
                }
            }
            self.raw.sent += done as u64;
            sent += done;
            if done < m {
                break;
            }
        }
        sent
    }
}

/// Run one UDP load thread until its plan ends or `stop` is set.
pub fn run_thread<C: UdpCodec>(
    codec: &C,
    plan: &UdpPlan,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Stats, String> {
    if codec.items() == 0 {
        return Err("nothing to send: no requests".into());
    }
    let socks = open_sockets(plan)?;
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let inflight = socks
        .iter()
        .map(|_| Inflight::new(codec.id_space()))
        .collect();
    let readiness = if fds.len() > DIRECT_SOCKETS {
        Some(Readiness::new(&fds)?)
    } else {
        None
    };
    let mut run = Run {
        codec,
        plan,
        readiness,
        to_read: Vec::with_capacity(fds.len()),
        fds,
        socks,
        inflight,
        stats: Stats::default(),
        raw: ProgressSnapshot::default(),
        next_item: plan.first_item % codec.items(),
        next_sock: 0,
        gso: plan.gso,
        send: DatagramBatch::new(codec.max_request_len().max(1)),
        recv: DatagramBatch::new(RECV_LEN),
    };
    tighten_timer_slack();
    let send_end = plan.warmup_ns + plan.duration_ns;
    let hard_end = send_end + plan.timeout_ns;
    let schedule = match plan.load {
        Load::Open { rate, offset_ns } => Some(Schedule::new(offset_ns, send_end, rate)),
        Load::Closed { .. } => None,
    };
    let mut k: u64 = 0; // open loop: requests of the schedule sent so far
    let mut last_wake = 0u64;
    let end_grace = (2 * plan.tick_ns).max(10_000_000);
    plan.clock.wait_for_start();
    loop {
        let now = plan.clock.now();
        let stopping = stop.load(Ordering::Relaxed);
        if now >= hard_end || (stopping && run.in_flight() == 0) {
            break;
        }
        let (_, more) = run.receive();
        run.expire(plan.clock.now());
        let now = plan.clock.now();
        // Open loop: the last batch may leave a little after the end;
        // requests still unsent after the grace count as unsent.
        let sending = !stopping
            && match &schedule {
                Some(sched) => k < sched.total() && now < send_end + end_grace,
                None => now < send_end,
            };
        if sending {
            match (plan.load, &schedule) {
                (Load::Open { .. }, Some(sched)) => {
                    // Everything intended up to one tick ahead goes out
                    // now, in one batch; early sends are measured from
                    // when they left, late ones from their intended time.
                    let due = sched.due(now + plan.tick_ns);
                    if due > k {
                        let want = (due - k).min((BATCH * MAX_ROUNDS) as u64) as usize;
                        let base = k;
                        let n = run.send(want, |j| sched.intended(base + j as u64));
                        k += n as u64;
                    }
                }
                (Load::Closed { outstanding }, _) => {
                    let inflight = run.in_flight();
                    if inflight < outstanding {
                        let t = plan.clock.now();
                        run.send(outstanding - inflight, |_| t);
                    }
                }
                _ => {}
            }
        } else if run.in_flight() == 0 {
            break;
        }
        run.progress_publish(progress);
        if more {
            continue;
        }
        // Wait for the next thing to do.
        let now = plan.clock.now();
        let mut wake = hard_end;
        if let Some(oldest) = run
            .inflight
            .iter_mut()
            .filter_map(|t| t.oldest_sent_ns())
            .min()
        {
            wake = wake.min(oldest + plan.timeout_ns);
        }
        let mut want_replies = true;
        if sending {
            if now < send_end {
                wake = wake.min(send_end);
            }
            if let (Load::Open { .. }, Some(sched)) = (plan.load, &schedule) {
                if k < sched.total() {
                    let next = sched.intended(k).max(last_wake + plan.tick_ns);
                    wake = wake.min(next);
                    // Replies carry kernel stamps: no need to wake for them
                    // between sends.
                    want_replies = false;
                }
            }
        }
        if wake > now {
            let ep;
            let fds: &[RawFd] = match (&run.readiness, want_replies) {
                (_, false) => &[],
                (Some(r), true) => {
                    ep = [r.epfd.as_raw_fd()];
                    &ep
                }
                (None, true) => &run.fds,
            };
            wait_readable(fds, (wake - now).min(MAX_WAIT_NS));
        }
        last_wake = plan.clock.now();
    }
    // Whatever is still waiting after the timeout is lost.
    let end = plan.clock.now().max(hard_end);
    run.expire(end);
    // Replies our own receive buffers had no room for (the kernel's count
    // per socket, whole run): lost here, not at the server.
    let own_drops: u64 = run
        .fds
        .iter()
        .filter_map(|&fd| shardgate::runtime::udp::drop_count_now(fd).ok())
        .map(u64::from)
        .sum();
    if own_drops > 0 {
        run.stats.events_n(OWN_SOCKET_DROPS, own_drops);
    }
    if let Some(sched) = &schedule {
        run.stats.unsent += unsent_in_window(sched, k, plan.warmup_ns);
    }
    run.progress_publish(progress);
    Ok(run.stats)
}

impl<C: UdpCodec> Run<'_, C> {
    fn progress_publish(&self, p: &Progress) {
        p.publish(self.raw);
    }
}

/// Requests of the schedule from index `k` on whose intended time falls in
/// the measured window (at or after `warmup_ns`).
pub fn unsent_in_window(sched: &Schedule, k: u64, warmup_ns: u64) -> u64 {
    let total = sched.total();
    if k >= total {
        return 0;
    }
    // First index at or after the warm-up, found by bisection (bounded).
    let (mut lo, mut hi) = (0u64, total);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if sched.intended(mid) < warmup_ns {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    total - k.max(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_groups_join_equal_lengths_within_limits() {
        let (mut order, mut groups) = (Vec::new(), Vec::new());
        let lens = [40, 50, 40, 40, 50, 60];
        gso_groups(&lens, true, 64, 60_000, &mut order, &mut groups);
        assert_eq!(order, vec![0, 2, 3, 1, 4, 5]);
        assert_eq!(groups, vec![(0, 3), (3, 2), (5, 1)]);
        // Segment and byte limits split a run.
        gso_groups(&[10; 7], true, 3, 60_000, &mut order, &mut groups);
        assert_eq!(groups, vec![(0, 3), (3, 3), (6, 1)]);
        gso_groups(&[100; 5], true, 64, 250, &mut order, &mut groups);
        assert_eq!(groups, vec![(0, 2), (2, 2), (4, 1)]);
        // Without GSO: one request per message, in send order.
        gso_groups(&lens, false, 64, 60_000, &mut order, &mut groups);
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(groups.len(), 6);
        assert!(groups.iter().all(|&(_, n)| n == 1));
    }

    #[test]
    fn unsent_counts_only_the_measured_window() {
        let s = Schedule::new(0, 1_000_000_000, 100.0); // 100 requests, 10 ms apart
        assert_eq!(unsent_in_window(&s, 100, 0), 0);
        assert_eq!(unsent_in_window(&s, 90, 0), 10);
        // Warm-up is the first 500 ms: requests 0..50 never count.
        assert_eq!(unsent_in_window(&s, 10, 500_000_000), 50);
        assert_eq!(unsent_in_window(&s, 60, 500_000_000), 40);
    }
}
