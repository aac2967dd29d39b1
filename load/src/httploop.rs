//! The `fn-http` load loop of one thread: keep-alive HTTP/1.1 connections
//! (nonblocking, bound to the source addresses in turn), requests pipelined
//! on them, responses matched in order. Closed loop keeps a fixed number of
//! requests outstanding over the connections; open loop follows a
//! [`Schedule`] and measures from the intended send time. A connection that
//! fails is reconnected after a pause; requests caught on it count as
//! errors, requests without a response within the timeout as lost. Every
//! loop is bounded: the thread ends at `send_end + timeout` at the latest.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

use super::codec::Outcome;
use super::http::{parse_response, Parsed};
use super::schedule::{split_count, Schedule};
use super::stats::Stats;
use super::sys::{tighten_timer_slack, Clock, Progress, ProgressSnapshot};
use super::udp::Load;

pub const EV_CONNECT_REFUSED: &str = "connects refused (target not listening)";
pub const EV_CONNECT_FAILED: &str = "connects failed (other)";
pub const EV_CONNECTS: &str = "connections opened";
pub const ERR_CLOSED: &str = "connection closed before the reply";
pub const EV_UNSOLICITED: &str = "responses without a request (connection dropped)";

/// Pause before reconnecting a failed connection.
const RECONNECT_PAUSE_NS: u64 = 50_000_000;
/// Most requests pipelined on one connection in open loop.
const MAX_PIPELINE: usize = 1024;
/// Reads per connection per loop turn.
const MAX_READS: usize = 8;
const READ_CHUNK: usize = 64 * 1024;
/// Longest single wait, so a stop request is seen promptly.
const MAX_WAIT_NS: u64 = 20_000_000;

/// Everything one HTTP load thread needs.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub target: SocketAddr,
    pub sources: Vec<IpAddr>,
    /// Connections of this thread.
    pub connections: usize,
    /// Closed: outstanding over all this thread's connections.
    pub load: Load,
    /// The request bytes (sent as is for every invocation).
    pub request: Vec<u8>,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    pub timeout_ns: u64,
    pub tick_ns: u64,
    pub clock: Clock,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    intended_ns: u64,
    sent_ns: u64,
    measured: bool,
}

enum State {
    /// Waiting to (re)connect at this time.
    Down {
        retry_at: u64,
    },
    Connecting(TcpStream),
    Open(TcpStream),
}

struct Conn {
    source: Option<IpAddr>,
    state: State,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    pending: VecDeque<Pending>,
    /// Closed loop: requests this connection keeps outstanding.
    depth: usize,
}

fn start_connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    if let Some(src) = source {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

struct Run<'a> {
    plan: &'a HttpPlan,
    conns: Vec<Conn>,
    stats: Stats,
    raw: ProgressSnapshot,
    next_conn: usize,
}

impl Run<'_> {
    fn outstanding(&self) -> usize {
        self.conns.iter().map(|c| c.pending.len()).sum()
    }

    /// Fail every request on connection `i` with `kind` (error) or as lost
    /// (`None`), and take the connection down.
    fn fail(&mut self, i: usize, kind: Option<&'static str>, now: u64) {
        let c = &mut self.conns[i];
        for p in c.pending.drain(..) {
            match kind {
                Some(k) => {
                    self.raw.errors += 1;
                    if p.measured {
                        self.stats
                            .record_error(k, now.saturating_sub(p.intended_ns));
                    }
                }
                None => {
                    self.raw.lost += 1;
                    if p.measured {
                        self.stats.lost += 1;
                    }
                }
            }
        }
        c.rbuf.clear();
        c.wbuf.clear();
        c.state = State::Down {
            retry_at: now + RECONNECT_PAUSE_NS,
        };
    }

    fn connect_due(&mut self, now: u64) {
        for c in &mut self.conns {
            if let State::Down { retry_at } = c.state {
                if now >= retry_at {
                    match start_connect(self.plan.target, c.source) {
                        Ok(s) => c.state = State::Connecting(s),
                        Err(_) => {
                            self.stats.event(EV_CONNECT_FAILED);
                            c.state = State::Down {
                                retry_at: now + RECONNECT_PAUSE_NS,
                            };
                        }
                    }
                }
            }
        }
    }

    /// Queue one request on connection `i`: intended at `intended_ns`
    /// (measured from the earlier of that and `now`).
    fn enqueue(&mut self, i: usize, intended_ns: u64, now: u64) {
        let measured = intended_ns >= self.plan.warmup_ns;
        let intended_ns = intended_ns.min(now);
        let c = &mut self.conns[i];
        c.wbuf.extend_from_slice(&self.plan.request);
        c.pending.push_back(Pending {
            intended_ns,
            sent_ns: now,
            measured,
        });
        self.raw.sent += 1;
        if measured {
            self.stats.sent += 1;
        }
    }

    fn flush(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        let State::Open(s) = &mut c.state else {
            return;
        };
        let mut written = 0;
        let mut failed = false;
        let mut attempts = 0;
        while written < c.wbuf.len() && attempts < 64 {
            attempts += 1;
            match s.write(&c.wbuf[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        c.wbuf.drain(..written);
        if failed {
            self.fail(i, Some(ERR_CLOSED), now);
        }
    }

    /// Read and match responses on connection `i`.
    fn read(&mut self, i: usize) {
        let mut chunk = vec![0u8; READ_CHUNK];
        for _ in 0..MAX_READS {
            let State::Open(s) = &mut self.conns[i].state else {
                return;
            };
            let n = match s.read(&mut chunk) {
                Ok(0) => {
                    let now = self.plan.clock.now();
                    self.fail(i, Some(ERR_CLOSED), now);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    let now = self.plan.clock.now();
                    self.fail(i, Some(ERR_CLOSED), now);
                    return;
                }
            };
            let now = self.plan.clock.now();
            self.conns[i].rbuf.extend_from_slice(&chunk[..n]);
            if !self.take_responses(i, now) || n < READ_CHUNK {
                return;
            }
        }
    }

    /// Match complete responses in the buffer; false when the connection
    /// went down.
    fn take_responses(&mut self, i: usize, now: u64) -> bool {
        let mut used = 0;
        // Bounded by the buffer: every turn consumes bytes or stops.
        loop {
            match parse_response(&self.conns[i].rbuf[used..]) {
                Ok(Parsed::NeedMore) => break,
                Ok(Parsed::Interim(n)) => used += n,
                Ok(Parsed::Response(r)) => {
                    used += r.consumed;
                    let Some(p) = self.conns[i].pending.pop_front() else {
                        self.stats.event(EV_UNSOLICITED);
                        self.fail(i, None, now);
                        return false;
                    };
                    let latency = now.saturating_sub(p.intended_ns);
                    match r.outcome {
                        Outcome::Ok => {
                            self.raw.ok += 1;
                            if p.measured {
                                self.stats.record_ok(latency);
                            }
                        }
                        Outcome::Error(k) => {
                            self.raw.errors += 1;
                            if p.measured {
                                self.stats.record_error(k, latency);
                            }
                        }
                    }
                    if r.close {
                        self.fail(i, Some(ERR_CLOSED), now);
                        return false;
                    }
                }
                Err(e) => {
                    self.fail(i, Some(e.kind()), now);
                    return false;
                }
            }
        }
        self.conns[i].rbuf.drain(..used);
        true
    }

    fn expire(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            let stuck = self.conns[i]
                .pending
                .front()
                .is_some_and(|p| p.sent_ns + self.plan.timeout_ns <= now);
            if stuck {
                // No reply in time: everything on this connection is lost.
                self.fail(i, None, now);
            }
        }
    }

    /// Poll all connections for up to `timeout_ns`; handle connects, reads
    /// and writes.
    fn poll(&mut self, timeout_ns: u64) {
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(self.conns.len());
        let mut who: Vec<usize> = Vec::with_capacity(self.conns.len());
        for (i, c) in self.conns.iter().enumerate() {
            let (fd, events) = match &c.state {
                State::Connecting(s) => (s.as_raw_fd(), libc::POLLOUT),
                State::Open(s) if !c.wbuf.is_empty() => {
                    (s.as_raw_fd(), libc::POLLIN | libc::POLLOUT)
                }
                State::Open(s) => (s.as_raw_fd(), libc::POLLIN),
                State::Down { .. } => continue,
            };
            pfds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            who.push(i);
        }
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: pfds is a valid array of pfds.len() pollfds; ts is valid.
        let n = unsafe {
            libc::ppoll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n <= 0 {
            return;
        }
        for (p, &i) in pfds.iter().zip(&who) {
            if p.revents == 0 {
                continue;
            }
            let now = self.plan.clock.now();
            if matches!(self.conns[i].state, State::Connecting(_)) {
                self.finish_connect(i, p.revents, now);
                continue;
            }
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                self.read(i);
            }
            if p.revents & libc::POLLOUT != 0 {
                self.flush(i, now);
            }
        }
    }

    fn finish_connect(&mut self, i: usize, revents: libc::c_short, now: u64) {
        let state = std::mem::replace(&mut self.conns[i].state, State::Down { retry_at: 0 });
        let State::Connecting(s) = state else {
            self.conns[i].state = state;
            return;
        };
        match s.take_error() {
            Ok(None) if revents & (libc::POLLERR | libc::POLLHUP) == 0 => {
                self.conns[i].state = State::Open(s);
                self.stats.event(EV_CONNECTS);
            }
            Ok(Some(e)) | Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.stats.event(EV_CONNECT_REFUSED);
                self.fail(i, Some(ERR_CLOSED), now);
            }
            _ => {
                self.stats.event(EV_CONNECT_FAILED);
                self.fail(i, Some(ERR_CLOSED), now);
            }
        }
    }

    fn open_conns(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.state, State::Open(_)))
            .count()
    }

    /// Open loop: queue the requests due up to `due`, round robin over open
    /// connections with room. Bounded by the requests due and one miss per
    /// connection. Returns the new count of requests queued.
    fn queue_due(&mut self, sched: &Schedule, mut k: u64, due: u64, now: u64) -> u64 {
        let n = self.conns.len();
        let mut misses = 0;
        while k < due && misses < n {
            let i = self.next_conn;
            self.next_conn = (i + 1) % n;
            let c = &self.conns[i];
            if matches!(c.state, State::Open(_)) && c.pending.len() < MAX_PIPELINE {
                self.enqueue(i, sched.intended(k), now);
                k += 1;
                misses = 0;
            } else {
                misses += 1;
            }
        }
        k
    }

    /// Closed loop: top every open connection up to its depth.
    fn top_up(&mut self, now: u64) {
        for i in 0..self.conns.len() {
            if matches!(self.conns[i].state, State::Open(_)) {
                let missing =
                    self.conns[i].depth - self.conns[i].pending.len().min(self.conns[i].depth);
                for _ in 0..missing {
                    self.enqueue(i, now, now);
                }
            }
        }
    }
}

/// Run one HTTP load thread until its plan ends or `stop` is set.
pub fn run_thread(
    plan: &HttpPlan,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Stats, String> {
    let n = plan.connections.max(1);
    let outstanding = match plan.load {
        Load::Closed { outstanding } => outstanding,
        Load::Open { .. } => 0,
    };
    let conns = (0..n)
        .map(|i| Conn {
            source: (!plan.sources.is_empty()).then(|| plan.sources[i % plan.sources.len()]),
            state: State::Down { retry_at: 0 },
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            pending: VecDeque::new(),
            depth: split_count(outstanding, n, i),
        })
        .collect();
    let mut run = Run {
        plan,
        conns,
        stats: Stats::default(),
        raw: ProgressSnapshot::default(),
        next_conn: 0,
    };
    tighten_timer_slack();
    let send_end = plan.warmup_ns + plan.duration_ns;
    let hard_end = send_end + plan.timeout_ns;
    let schedule = match plan.load {
        Load::Open { rate, offset_ns } => Some(Schedule::new(offset_ns, send_end, rate)),
        Load::Closed { .. } => None,
    };
    let mut k = 0u64;
    let mut last_wake = 0u64;
    let end_grace = (2 * plan.tick_ns).max(10_000_000);
    plan.clock.wait_for_start();
    loop {
        let now = plan.clock.now();
        let stopping = stop.load(Ordering::Relaxed);
        if now >= hard_end || (stopping && run.outstanding() == 0) {
            break;
        }
        // Open loop: the last batch may leave a little after the end;
        // requests still unsent after the grace count as unsent.
        let sending = !stopping
            && match &schedule {
                Some(sched) => k < sched.total() && now < send_end + end_grace,
                None => now < send_end,
            };
        if sending {
            run.connect_due(now);
        }
        run.expire(now);
        if sending {
            match &schedule {
                Some(sched) => k = run.queue_due(sched, k, sched.due(now + plan.tick_ns), now),
                None => run.top_up(plan.clock.now()),
            }
            for i in 0..run.conns.len() {
                if !run.conns[i].wbuf.is_empty() {
                    run.flush(i, now);
                }
            }
        } else if run.outstanding() == 0 {
            break;
        }
        progress.publish(run.raw);
        // Wait for replies, connects, the next due request or a deadline.
        let now = plan.clock.now();
        let mut wake = hard_end;
        for c in &run.conns {
            if let Some(p) = c.pending.front() {
                wake = wake.min(p.sent_ns + plan.timeout_ns);
            }
            if let State::Down { retry_at } = c.state {
                if sending {
                    wake = wake.min(retry_at.max(now));
                }
            }
        }
        if sending {
            if now < send_end {
                wake = wake.min(send_end);
            }
            if let Some(sched) = &schedule {
                if k < sched.total() && run.open_conns() > 0 {
                    wake = wake.min(sched.intended(k).max(last_wake + plan.tick_ns));
                }
            }
        }
        run.poll(wake.saturating_sub(now).min(MAX_WAIT_NS));
        last_wake = plan.clock.now();
    }
    // Whatever is still waiting after the timeout is lost.
    let end = plan.clock.now().max(hard_end);
    for i in 0..run.conns.len() {
        if !run.conns[i].pending.is_empty() {
            run.fail(i, None, end);
        }
    }
    if let Some(sched) = &schedule {
        run.stats.unsent += super::udp::unsent_in_window(sched, k, plan.warmup_ns);
    }
    progress.publish(run.raw);
    Ok(run.stats)
}
