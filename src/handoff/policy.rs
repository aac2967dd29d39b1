//! The hand-off decision (sans-IO): given what a shard knows locally about
//! one request and its own load, serve it here, hand it to the paired
//! alternate, or refuse it at once. Time comes in as a parameter (ns of a
//! monotonic clock); nothing here reads a clock or touches a socket.
//!
//! # Work-conserving admission
//!
//! A shard keeps every request it can serve within its latency budget and
//! hands off only the excess. [`Admission`] is a *virtual queue* of the
//! shard's committed work, in nanoseconds of CPU:
//!
//! - it drains at `target_busy` (e.g. 0.97) nanoseconds per nanosecond of
//!   wall time: the share of the core the shard may spend on work;
//! - a request is admitted locally when the queue plus the request's
//!   estimated service time fits in `budget` (the latency budget,
//!   `handoff.max_wait_us`); the estimate is then added to the queue;
//! - every measured cost is charged: the difference between a local
//!   request's measured and estimated service time, the CPU a hand-off took
//!   (sealing and sending the frame), what the receive/send loop spent
//!   around the requests, and *foreign* work on the same core (serving
//!   requests the alternate handed to us, another service's loop). The
//!   estimate is an exponentially weighted mean of measured local costs.
//!
//! Why it converges: the queue is a leaky bucket. Its level stays within
//! `[0, budget + one request]`, so over any long interval the local work
//! admitted equals what drained plus at most one budget; while requests
//! are being handed off the level is at the budget, so it drains at the
//! full `target_busy` rate. Hence at offered load `f` × capacity the local
//! work settles at `target_busy` of the core and the handed-off share at
//! `1 - target_busy / f` (plus the hand-off's own cost), i.e. within a few
//! points of the ideal `1 - 1/f`. The decision is per request at a level
//! boundary, with no mode to flip, so the share cannot oscillate between
//! all-local and all-handed-off; a burst fills the budget within one
//! budget's worth of work and everything past it is handed off at once;
//! when the burst ends the queue empties within `budget / target_busy` and
//! the share returns to 0. Measuring real costs (not assuming them) is what
//! keeps the shard from idling while its alternate drowns: nothing is
//! handed off while the core has headroom.
//!
//! # The alternate protects itself
//!
//! The alternate's heartbeat replies carry its own busy share. While it
//! reports saturation, [`Admission`] stops growing the handed-off share:
//! overloaded requests are handed off only while this shard's share of
//! hand-offs in the current window stays under the share it had when the
//! saturation was first reported, and the rest are refused at once
//! ([`Decision::RejectOverloaded`]: DNS SERVFAIL, function `unavailable`,
//! HTTP 503 with Retry-After), so the pair degrades like one node.
//! A cold function is served here (built inline) rather than handed to a
//! saturated alternate.

use super::frame::Key;

/// Settings of the admission (from `[handoff]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Latency budget: local work queued ahead of a request, at most, µs.
    pub max_wait_us: u64,
    /// Share of the core the shard keeps busy before handing off, percent.
    pub target_busy_percent: u8,
    /// The alternate's reported busy share at which it counts as
    /// saturated, percent.
    pub alternate_saturated_percent: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        use crate::config::handoff as defaults;
        Thresholds {
            max_wait_us: defaults::DEFAULT_MAX_WAIT_US,
            target_busy_percent: defaults::DEFAULT_TARGET_BUSY_PERCENT,
            alternate_saturated_percent: defaults::DEFAULT_ALTERNATE_SATURATED_PERCENT,
        }
    }
}

/// What the shard knows about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// It arrived in a hand-off frame (hop flag set): never hand it on.
    pub handed_off: bool,
    /// It names a function that is configured but not warm on this shard.
    pub cold: bool,
    /// How long it already waited before this decision (from the kernel's
    /// receive timestamp), ns; 0 when unknown.
    pub waited_ns: u64,
}

/// Why a request is handed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandoffReason {
    Cold,
    Overloaded,
}

/// Why a request is served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalReason {
    /// Nothing wrong: warm and within the latency budget.
    Normal,
    /// It was handed to us; it is served here whatever our state.
    AlreadyHandedOff,
    /// It is cold here and would have gone to the alternate, which is
    /// down or saturated: served here (an instance is built inline). An
    /// overloaded request then is [`Decision::RejectOverloaded`].
    AlternateDown,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Local(LocalReason),
    Handoff(HandoffReason),
    /// Overloaded and the alternate is down or saturated: answer with an
    /// overload error at once (DNS SERVFAIL, function `Unavailable`, HTTP
    /// 503) instead of queueing without bound.
    RejectOverloaded,
}

/// The heartbeat's view of the alternate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternate {
    Down,
    /// Up; `busy_percent` as it last reported (`None`: it reports nothing).
    Up {
        busy_percent: Option<u8>,
    },
}

/// Decide for one request from its facts alone: `overloaded` is the
/// admission's verdict, `alternate_takes_more` whether a saturated
/// alternate still has room within the frozen share. Overload wins over
/// coldness as the hand-off reason.
pub fn decide(
    req: &Request,
    overloaded: bool,
    alt: Alternate,
    alternate_takes_more: bool,
) -> Decision {
    if req.handed_off {
        return Decision::Local(LocalReason::AlreadyHandedOff);
    }
    let up = matches!(alt, Alternate::Up { .. });
    match (overloaded, req.cold, up && alternate_takes_more) {
        (false, false, _) => Decision::Local(LocalReason::Normal),
        (true, _, true) => Decision::Handoff(HandoffReason::Overloaded),
        (false, true, true) => Decision::Handoff(HandoffReason::Cold),
        (true, _, false) => Decision::RejectOverloaded,
        (false, true, false) => Decision::Local(LocalReason::AlternateDown),
    }
}

/// Length of the window over which the handed-off share is measured.
pub const SHARE_WINDOW_NS: u64 = 100_000_000;

/// A request that waited `STALE_FACTOR` latency budgets in the socket
/// before the loop reached it is handed off at once.
pub const STALE_FACTOR: u64 = 2;

/// A service-time estimate before anything was measured, ns.
const INITIAL_ESTIMATE_NS: u64 = 2_000;

/// One shard's work-conserving admission (see the module docs).
#[derive(Debug, Clone)]
pub struct Admission {
    budget_ns: u64,
    /// A request that already waited this long in the socket is handed off
    /// whatever the queue (a burst outran the loop), ns.
    stale_ns: u64,
    /// Drain rate, parts per 1024 of wall time.
    drain_per_1024: u64,
    saturated_percent: u8,
    /// Committed work not yet drained, ns.
    level_ns: u64,
    last_ns: u64,
    /// Estimated service time of a local request (EWMA, 1/8 weight), ns.
    estimate_ns: u64,
    /// Current share window: requests offered (not already handed off)
    /// and handed off for overload, since `window_start_ns`.
    window_start_ns: u64,
    window_offered: u64,
    window_handed: u64,
    /// Handed-off share of the last complete window, parts per million.
    share_ppm: u32,
    /// Requests offered and handed off for overload since the start (to
    /// combine the shares of several admissions of one shard).
    totals: (u64, u64),
    /// While the alternate reports saturation: the most this shard may
    /// hand off, parts per million of offered requests.
    cap_ppm: Option<u32>,
    /// Error-diffusion credit under the cap: each offered request adds the
    /// cap, each hand-off takes one whole request (1,000,000).
    credit_ppm: u64,
}

/// Hand-offs a saturated alternate may take in a row after a lull.
const MAX_CREDIT_PPM: u64 = 4_000_000;

impl Admission {
    pub fn new(t: &Thresholds) -> Admission {
        Admission {
            budget_ns: t.max_wait_us.saturating_mul(1000),
            stale_ns: t.max_wait_us.saturating_mul(STALE_FACTOR * 1000),
            drain_per_1024: u64::from(t.target_busy_percent.clamp(1, 100)) * 1024 / 100,
            saturated_percent: t.alternate_saturated_percent,
            level_ns: 0,
            last_ns: 0,
            estimate_ns: INITIAL_ESTIMATE_NS,
            window_start_ns: 0,
            window_offered: 0,
            window_handed: 0,
            share_ppm: 0,
            totals: (0, 0),
            cap_ppm: None,
            credit_ppm: 0,
        }
    }

    /// Let the queue drain up to `now_ns` and roll the share window.
    fn advance(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.level_ns = self
            .level_ns
            .saturating_sub(dt.saturating_mul(self.drain_per_1024) / 1024);
        if now_ns.saturating_sub(self.window_start_ns) >= SHARE_WINDOW_NS {
            self.share_ppm = self.window_share_ppm();
            self.window_start_ns = now_ns;
            self.window_offered = 0;
            self.window_handed = 0;
        }
    }

    /// Handed-off share of the current window so far, ppm.
    fn window_share_ppm(&self) -> u32 {
        (self.window_handed * 1_000_000)
            .checked_div(self.window_offered)
            .unwrap_or(0) as u32
    }

    /// The heartbeat's latest report of the alternate: freezes the share
    /// while it is saturated, lifts the cap when it is not.
    pub fn alternate_report(&mut self, alt: Alternate) {
        let saturated =
            matches!(alt, Alternate::Up { busy_percent: Some(b) } if b >= self.saturated_percent);
        match (saturated, self.cap_ppm) {
            (true, None) => {
                self.cap_ppm = Some(self.share_ppm.max(self.window_share_ppm()));
                self.credit_ppm = 0;
            }
            (false, Some(_)) => self.cap_ppm = None,
            _ => {}
        }
    }

    /// Whether the alternate is saturated (the share is frozen).
    pub fn alternate_saturated(&self) -> bool {
        self.cap_ppm.is_some()
    }

    /// Decide for one request at `now_ns`. A local decision commits the
    /// service-time estimate; correct it with [`Admission::charge`] once
    /// the real cost is known.
    pub fn decide(&mut self, now_ns: u64, req: &Request, alt: Alternate) -> Decision {
        self.advance(now_ns);
        if req.handed_off {
            self.level_ns += self.estimate_ns;
            return Decision::Local(LocalReason::AlreadyHandedOff);
        }
        self.window_offered += 1;
        self.totals.0 += 1;
        // An empty queue always admits (a request heavier than the whole
        // budget is still served when the shard is idle).
        let overloaded = (self.level_ns > 0 && self.level_ns + self.estimate_ns > self.budget_ns)
            || req.waited_ns > self.stale_ns;
        let takes_more = match self.cap_ppm {
            None => true,
            Some(cap) => {
                self.credit_ppm = (self.credit_ppm + u64::from(cap)).min(MAX_CREDIT_PPM);
                self.credit_ppm >= 1_000_000
            }
        };
        let d = decide(req, overloaded, alt, takes_more);
        match d {
            Decision::Local(_) => self.level_ns += self.estimate_ns,
            Decision::Handoff(HandoffReason::Overloaded) => {
                self.window_handed += 1;
                self.totals.1 += 1;
                self.credit_ppm = self.credit_ppm.saturating_sub(1_000_000);
            }
            Decision::Handoff(HandoffReason::Cold) | Decision::RejectOverloaded => {}
        }
        d
    }

    /// A local request took `measured_ns` (the estimate was committed by
    /// [`Admission::decide`]): correct the queue and learn the estimate.
    pub fn served(&mut self, measured_ns: u64) {
        let est = self.estimate_ns;
        self.level_ns = (self.level_ns + measured_ns).saturating_sub(est);
        self.estimate_ns = (est * 7 + measured_ns) / 8;
        self.estimate_ns = self.estimate_ns.max(1);
    }

    /// Work that is not a local request's service: a hand-off's cost,
    /// the loop's own receive/send time, foreign work on this core.
    pub fn charge(&mut self, ns: u64) {
        self.level_ns = self.level_ns.saturating_add(ns);
    }

    /// Handed-off share (for overload) of the last complete window, in
    /// parts per million.
    pub fn share_ppm(&self) -> u32 {
        self.share_ppm
    }

    /// Requests offered and handed off for overload since the start.
    pub fn totals(&self) -> (u64, u64) {
        self.totals
    }

    /// Committed work not yet drained, ns.
    pub fn level_ns(&self) -> u64 {
        self.level_ns
    }

    /// Current local service-time estimate, ns.
    pub fn estimate_ns(&self) -> u64 {
        self.estimate_ns
    }
}

// ----- HTTP: the verdict of one request and the hop marker of redirects -----

/// What the HTTP surface does with one `POST /fn/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpVerdict {
    Serve,
    /// 307 to this URL.
    Redirect(String),
    /// 503 with Retry-After.
    Overloaded,
}

/// The value of the hop marker (`handoff=<token>` in the query string of
/// the request line at the front of `head`) that our redirects add; the
/// token is checked by [`hop_token_is_valid`].
pub fn hop_marker(head: &[u8]) -> Option<&[u8]> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let q = line.iter().position(|&b| b == b'?')?;
    let query_end = line[q..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(line.len(), |p| q + p);
    line[q + 1..query_end]
        .split(|&b| b == b'&')
        .find_map(|kv| kv.strip_prefix(b"handoff="))
}

/// How long a redirect's hop token is honoured, seconds (the client
/// follows a 307 at once; the margin covers clock skew between the pair).
pub const HOP_TOKEN_TTL_S: u64 = 30;

fn hop_token_data(name: &str, ts_s: u64) -> Vec<u8> {
    let mut d = b"shardgate http hop ".to_vec();
    d.extend_from_slice(&ts_s.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    d
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The hop token a node sealing with `key` puts on a redirect for function
/// `name` at `now_s` (Unix seconds): `<seconds>.<32 hex digits of MAC>`.
pub fn hop_token(key: &Key, name: &str, now_s: u64) -> String {
    let tag = key.tag(&hop_token_data(name, now_s));
    let mut t = format!("{now_s}.");
    for b in &tag[..16] {
        t.push_str(&format!("{b:02x}"));
    }
    t
}

/// Whether `token` was made by [`hop_token`] with `key` (the peer's sending
/// key) for `name`, at most [`HOP_TOKEN_TTL_S`] from `now_s`. Any client
/// can type `?handoff=1`; only the paired node can mint a valid token.
pub fn hop_token_is_valid(key: &Key, name: &str, token: &[u8], now_s: u64) -> bool {
    let Some(dot) = token.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (ts, mac) = (&token[..dot], &token[dot + 1..]);
    let Some(ts_s) = std::str::from_utf8(ts)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return false;
    };
    if ts_s.abs_diff(now_s) > HOP_TOKEN_TTL_S || mac.len() != 32 {
        return false;
    }
    let mut tag = [0u8; 16];
    for (i, pair) in mac.chunks(2).enumerate() {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(h), Some(l)) => tag[i] = (h << 4) | l,
            _ => return false,
        }
    }
    key.verify(&hop_token_data(name, ts_s), &tag)
}

#[cfg(test)]
mod tests;
