//! Load-testing toolkit behind the `shardgate-load` binary.
//!
//! Sans-IO pieces (pure, tested on bytes and numbers): [`queryfile`]
//! (dnsperf's query-file format), [`dnsmsg`] (DNS query templates, reply
//! matching), [`codec`] (what a datagram protocol provides), [`schedule`]
//! (open-loop send times), [`inflight`] (request ids, timeouts),
//! [`stats`] (aggregation, summary, distribution, JSON result).
//!
//! I/O: [`udp`] (the datagram load loop), [`sys`] (clock, waits, progress).
//!
//! Output: [`plot`] (latency-percentile PNG), [`xyplot`] (line plots of
//! (x, y) series, e.g. the DNS bench's latency against rate).

pub mod args;
pub mod cli;
pub mod codec;
pub mod dnsmsg;
pub mod fncodec;
pub mod http;
pub mod httploop;
pub mod inflight;
pub mod plot;
pub mod queryfile;
pub mod schedule;
pub mod stats;
pub mod sys;
pub mod udp;
pub mod xyplot;
