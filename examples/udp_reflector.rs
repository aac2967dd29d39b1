//! Measurement tool for `scripts/bench-dns.sh --reflector`: the ceiling of
//! shardgate's own UDP loop, for comparison with any DNS server on this
//! machine.
//!
//! It runs the loop of a shard's DNS worker thread
//! (`shardgate::runtime::udp::serve_blocking`: blocking `recvmmsg` of up to
//! 64, replies grouped per client into UDP GSO messages, the adaptive
//! receive-coalescing wait, kernel drop counting) with a handler that does
//! no work: each datagram goes back with the DNS QR bit set, no parsing,
//! no lookup, no metrics. Its queries per core-second is what our loop
//! allows a server that spends nothing in its answer path. Not a DNS
//! server: never run it anywhere but a benchmark.
//!
//!     cargo run --release --example udp_reflector -- 127.0.0.1:15353 [coalesce_us]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use shardgate::runtime::udp::{serve_blocking, DatagramHandler, KernelDrops, LoopSettings};

/// Datagrams per `recvmmsg`, as a shard's DNS worker by default.
const BATCH: usize = 64;
/// Shortest partial batch that waits to coalesce, as a shard's default.
const MIN_BATCH_TO_COALESCE: usize = 8;

/// Echo with QR set.
struct Reflect;

impl DatagramHandler for Reflect {
    fn handle(&mut self, datagram: &[u8], _from: SocketAddr, out: &mut Vec<u8>) -> bool {
        if datagram.len() < 3 {
            return false;
        }
        // `out` holds the previous reply of this slot: replace it.
        out.clear();
        out.extend_from_slice(datagram);
        out[2] |= 0x80;
        true
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: udp_reflector IP:PORT [coalesce_us]");
    let coalesce = Duration::from_micros(args.next().and_then(|a| a.parse().ok()).unwrap_or(200));
    let sock = UdpSocket::bind(addr).expect("bind");
    // The loop checks its stop flag at every receive timeout.
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("SO_RCVTIMEO");
    sock.set_write_timeout(Some(Duration::from_millis(100)))
        .expect("SO_SNDTIMEO");
    let settings = LoopSettings {
        batch: BATCH,
        coalesce,
        coalesce_min_batch: MIN_BATCH_TO_COALESCE,
    };
    let stop = AtomicBool::new(false);
    serve_blocking(
        sock.as_raw_fd(),
        &mut Reflect,
        &stop,
        settings,
        &mut KernelDrops::unexported(),
    );
}
