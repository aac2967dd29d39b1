//! Small system helpers shared by the load loops: the run clock (CLOCK_REALTIME
//! in ns, the clock the kernel stamps received datagrams with, relative to a
//! common start), precise waits with `ppoll`, per-thread timer slack, and the
//! per-thread progress counters the main thread reads once a second.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Realtime clock in ns since the Unix epoch (vDSO, no syscall).
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The run's clock: ns since the common start (negative before it, as 0).
/// Realtime rather than monotonic so kernel receive timestamps compare with
/// it directly; an NTP step during a run would show as a latency glitch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub base_ns: u64,
}

impl Clock {
    pub fn starting_in(delay_ns: u64) -> Clock {
        Clock {
            base_ns: realtime_ns() + delay_ns,
        }
    }

    pub fn now(&self) -> u64 {
        realtime_ns().saturating_sub(self.base_ns)
    }

    /// Convert an absolute realtime stamp to run time.
    pub fn from_realtime(&self, ns: u64) -> u64 {
        ns.saturating_sub(self.base_ns)
    }

    /// Sleep until the run starts.
    pub fn wait_for_start(&self) {
        let now = realtime_ns();
        if now < self.base_ns {
            std::thread::sleep(std::time::Duration::from_nanos(self.base_ns - now));
        }
    }
}

/// Let this thread's sleeps end within 1 us of their deadline (the default
/// slack is 50 us, which would make open-loop sends late).
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long, affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

/// Wait up to `timeout_ns` for any of `fds` to become readable (none: plain
/// sleep). Returns true when something is readable.
pub fn wait_readable(fds: &[RawFd], timeout_ns: u64) -> bool {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
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
    n > 0
}

/// Counters one load thread publishes for the progress line; only that
/// thread writes them (plain relaxed stores once per loop turn).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Progress {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub lost: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub lost: u64,
}

impl Progress {
    pub fn publish(&self, s: ProgressSnapshot) {
        self.sent.store(s.sent, Ordering::Relaxed);
        self.ok.store(s.ok, Ordering::Relaxed);
        self.errors.store(s.errors, Ordering::Relaxed);
        self.lost.store(s.lost, Ordering::Relaxed);
    }

    pub fn read(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// Sum of all threads' counters.
pub fn total(progress: &[Progress]) -> ProgressSnapshot {
    progress.iter().fold(ProgressSnapshot::default(), |a, p| {
        let s = p.read();
        ProgressSnapshot {
            sent: a.sent + s.sent,
            ok: a.ok + s.ok,
            errors: a.errors + s.errors,
            lost: a.lost + s.lost,
        }
    })
}
