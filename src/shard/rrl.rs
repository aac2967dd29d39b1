//! The DNS UDP answer path's response rate limiting: one
//! [`crate::dns::rrl::Rrl`] table per UDP path of a shard (the executor's,
//! or the shard's DNS worker thread's), never shared, rebuilt when a new
//! configuration generation changes `[dns.rrl]`.
//!
//! Off (the default), a UDP answer pays one branch on an `Option`; a
//! receive batch pays one integer compare for the generation.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::RrlConfig;
use crate::dns::rrl::{self, Rrl, Verdict};
use crate::dns::Outcome;

use super::stats::ShardStats;
use crate::runtime::udp::DropKind;

/// One UDP path's limiter and its clock.
#[derive(Debug)]
pub struct RrlGate {
    rrl: Option<Rrl>,
    /// Generation whose settings `rrl` was built from.
    version: u64,
    epoch: Instant,
    /// Milliseconds since `epoch` at the start of the current batch.
    now_ms: u64,
}

impl RrlGate {
    /// A gate for generation `version` with settings `config`.
    pub fn new(version: u64, config: &RrlConfig) -> RrlGate {
        RrlGate {
            rrl: config.enabled.then(|| Rrl::new(config)),
            version,
            epoch: Instant::now(),
            now_ms: 0,
        }
    }

    /// Once per receive batch: follow a new generation's settings (the
    /// table is kept when they did not change) and read the clock.
    #[inline]
    pub fn begin_batch(&mut self, version: u64, config: &RrlConfig) {
        if version != self.version {
            self.follow(version, config);
        }
        if self.rrl.is_some() {
            self.now_ms = self.epoch.elapsed().as_millis() as u64;
        }
    }

    #[cold]
    fn follow(&mut self, version: u64, config: &RrlConfig) {
        self.version = version;
        let same = match &self.rrl {
            Some(r) => config.enabled && r.config() == config,
            None => !config.enabled,
        };
        if !same {
            self.rrl = config.enabled.then(|| Rrl::new(config));
        }
    }

    /// Apply the limit to an answer in `out` for `client`. `Some(outcome)`:
    /// send `out` (truncated when it slipped); `None`: dropped (counted in
    /// `stats`).
    #[inline]
    pub fn filter(
        &mut self,
        client: IpAddr,
        outcome: Outcome,
        out: &mut Vec<u8>,
        stats: &ShardStats,
    ) -> Option<Outcome> {
        let Some(r) = &mut self.rrl else {
            return Some(outcome);
        };
        let Outcome::Answered { rcode, .. } = outcome else {
            return Some(outcome);
        };
        match r.decide(client, self.now_ms) {
            Verdict::Send => Some(outcome),
            Verdict::Slip => {
                rrl::truncate(out);
                stats.rrl_limited(true);
                Some(Outcome::Answered {
                    rcode,
                    truncated: true,
                })
            }
            Verdict::Drop => {
                stats.rrl_limited(false);
                stats.dropped(DropKind::RateLimited);
                None
            }
        }
    }
}
