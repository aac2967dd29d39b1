//! Does batching UDP I/O pay? The shard's batched loop (`recvmmsg` +
//! `sendmmsg`, woken by glommio) against the plain glommio loop (one
//! `recv_from` + one `send_to` per datagram), interleaved in the same run.
//!
//! Server: one glommio executor pinned to the last CPU. Client: a thread
//! pinned to CPU 0 keeping a window of queries in flight (`recvmmsg` /
//! `sendmmsg`). Reported per mode: answered queries per second and per
//! second of server-thread CPU time (queries per server core-second); the
//! verdict is the median ratio batched/plain of the latter.
//!
//! Two handlers: `echo` (flip QR, the I/O cost alone) and `dns` (the real
//! answer path on a small address map).
//!
//! `cargo bench --bench udp_batch` (env: UDP_BATCH_SECS=1.5,
//! UDP_BATCH_ROUNDS=5, UDP_BATCH_WINDOW=64).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shardgate::addrmap;
use shardgate::addrmap::AddressMap;
use shardgate::dns::{self, Transport};
use shardgate::runtime::sockets;
use shardgate::runtime::stop::StopSignal;
use shardgate::runtime::udp::{self, DatagramHandler};

const BENCH_CONFIG: &str = r#"
[dns]
listen = ["127.0.0.1:8053"] # not bound by this bench

[[zone]]
name = "svc.example."
[zone.soa]
mname = "ns1.svc.example."
rname = "hostmaster.svc.example."

[[view]]
name = "local"
prefixes = ["127.0.0.0/8"]
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.1.5"

[[view]]
name = "default"
[[view.record]]
name = "upf.svc.example."
type = "A"
data = "10.0.0.5"
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Batched,
    Plain,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Echo,
    Dns,
}

struct Handler {
    kind: Kind,
    map: Rc<AddressMap>,
    answered: u64,
}

impl DatagramHandler for Handler {
    fn handle(&mut self, d: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> bool {
        let ok = match self.kind {
            Kind::Echo => {
                out.clear();
                out.extend_from_slice(d);
                if out.len() > 2 {
                    out[2] |= 0x80;
                }
                true
            }
            Kind::Dns => matches!(
                dns::answer(&self.map, d, from.ip(), Transport::Udp, out),
                dns::Outcome::Answered { .. }
            ),
        };
        self.answered += u64::from(ok);
        ok
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pin_to(cpu: usize) {
    // SAFETY: plain affinity call on a zeroed cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in ["upf", "svc", "example"] {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    q
}

/// Keep `window` queries in flight for `dur`; returns answers received.
fn client(server: SocketAddr, dur: Duration, window: usize, cpu: usize) -> u64 {
    pin_to(cpu);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let fd = sock.as_raw_fd();
    let q = query();
    let n = window;
    let mut rx = vec![0u8; n * 2048];
    // SAFETY: zeroed C structs, filled below; buffers outlive the calls.
    let mut rx_iov: Vec<libc::iovec> = (0..n)
        .map(|i| libc::iovec {
            iov_base: rx[i * 2048..].as_mut_ptr().cast(),
            iov_len: 2048,
        })
        .collect();
    let mut rx_hdr: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in rx_hdr.iter_mut().zip(rx_iov.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut tx_iov: Vec<libc::iovec> = (0..n)
        .map(|_| libc::iovec {
            iov_base: q.as_ptr() as *mut _,
            iov_len: q.len(),
        })
        .collect();
    let mut tx_hdr: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in tx_hdr.iter_mut().zip(tx_iov.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let send = |k: usize, tx_hdr: &mut Vec<libc::mmsghdr>| {
        let mut sent = 0;
        while sent < k {
            // SAFETY: headers point at `q`, alive for the call.
            let r =
                unsafe { libc::sendmmsg(fd, tx_hdr.as_mut_ptr().add(sent), (k - sent) as u32, 0) };
            if r <= 0 {
                break;
            }
            sent += r as usize;
        }
    };
    send(n, &mut tx_hdr);
    let end = Instant::now() + dur;
    let mut answers = 0u64;
    while Instant::now() < end {
        // SAFETY: rx headers point into `rx`, alive for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                rx_hdr.as_mut_ptr(),
                n as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            // Timeout: something was lost; refill the window.
            send(n, &mut tx_hdr);
            continue;
        }
        answers += r as u64;
        send(r as usize, &mut tx_hdr);
    }
    answers
}

struct Sample {
    qps: f64,
    per_core_s: f64,
    busy: f64,
}

fn run_once(mode: Mode, kind: Kind, secs: f64, window: usize, server_cpu: usize) -> Sample {
    let (addr_tx, addr_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let placement = if server_cpu > 0 {
        Placement::Fixed(server_cpu)
    } else {
        Placement::Unbound
    };
    let server = LocalExecutorBuilder::new(placement)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let loaded =
                addrmap::load(BENCH_CONFIG, std::path::Path::new(".")).expect("bench config");
            let map = Rc::new(loaded.map);
            let sock = sockets::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
            addr_tx.send(sock.local_addr().unwrap()).unwrap();
            let stop = StopSignal::new();
            let stop2 = stop.clone();
            glommio::spawn_local(async move {
                while !done2.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                stop2.stop();
            })
            .detach();
            let mut h = Handler {
                kind,
                map,
                answered: 0,
            };
            let cpu0 = thread_cpu();
            let t0 = Instant::now();
            match mode {
                Mode::Batched => {
                    udp::serve_batched(
                        &sock,
                        &mut h,
                        &stop,
                        udp::LoopSettings::batch_only(udp::DEFAULT_BATCH),
                        &mut udp::KernelDrops::unexported(),
                    )
                    .await
                }
                Mode::Plain => serve_plain(&sock, &mut h, &stop).await,
            }
            (thread_cpu() - cpu0, t0.elapsed(), h.answered)
        })
        .unwrap();
    let addr = addr_rx.recv().unwrap();
    let client_cpu = 0;
    let dur = Duration::from_secs_f64(secs);
    let answers = std::thread::spawn(move || client(addr, dur, window, client_cpu))
        .join()
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let (cpu, wall, answered) = server.join().unwrap();
    assert!(
        answered >= answers,
        "server answered {answered} < client saw {answers}"
    );
    Sample {
        qps: answers as f64 / secs,
        per_core_s: answered as f64 / cpu.as_secs_f64(),
        busy: cpu.as_secs_f64() / wall.as_secs_f64(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either way: a short smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = if smoke {
        0.2
    } else {
        env("UDP_BATCH_SECS", 1.5)
    };
    let rounds: usize = if smoke { 1 } else { env("UDP_BATCH_ROUNDS", 5) };
    let window: usize = env("UDP_BATCH_WINDOW", 64);
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let server_cpu = cpus - 1;
    println!(
        "udp_batch: server on CPU {server_cpu}, client on CPU 0, window {window}, {secs} s per run, {rounds} round(s), batch {}",
        udp::DEFAULT_BATCH
    );
    for kind in [Kind::Echo, Kind::Dns] {
        let mut ratios = Vec::new();
        let mut qps_ratios = Vec::new();
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [Mode::Batched, Mode::Plain]
            } else {
                [Mode::Plain, Mode::Batched]
            };
            let mut got = [None, None];
            for mode in order {
                let s = run_once(mode, kind, secs, window, server_cpu);
                println!(
                    "  {kind:?} {mode:?} round {round}: {:>9.0} qps, server busy {:>5.1}%, {:>9.0} queries/server-core-s",
                    s.qps,
                    s.busy * 100.0,
                    s.per_core_s
                );
                got[mode as usize] = Some(s);
            }
            let (b, p) = (got[0].take().unwrap(), got[1].take().unwrap());
            ratios.push(b.per_core_s / p.per_core_s);
            qps_ratios.push(b.qps / p.qps);
        }
        let all = ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "udp_batch {kind:?}: batched/plain queries per server core-second: median {:.2}x (rounds: {all}); qps ratio median {:.2}x",
            median(&mut ratios),
            median(&mut qps_ratios)
        );
    }
}

/// The baseline: one glommio `recv_from` and one `send_to` per datagram,
/// through the same handler the shard's batched loop calls.
async fn serve_plain<H: DatagramHandler>(
    sock: &glommio::net::UdpSocket,
    handler: &mut H,
    stop: &StopSignal,
) {
    let mut buf = vec![0u8; udp::RX_SLOT];
    let mut out = Vec::with_capacity(1232);
    loop {
        let recv = async { Some(sock.recv_from(&mut buf).await) };
        let got = futures_lite::future::or(recv, async {
            stop.stopped().await;
            None
        })
        .await;
        let (len, from) = match got {
            None => break,
            Some(Ok(x)) => x,
            Some(Err(_)) => continue,
        };
        handler.begin_batch();
        if handler.handle(&buf[..len], from, &mut out) && sock.send_to(&out, from).await.is_err() {
            handler.dropped(udp::DropKind::SendFailed);
        }
        handler.end_batch();
        glommio::yield_if_needed().await;
    }
}
