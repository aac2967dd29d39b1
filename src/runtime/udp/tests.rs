//! Tests of the UDP loops on real loopback sockets, and of the batch plan.

use super::batch::plan_key;
use super::*;
use std::mem::zeroed;
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

fn run_loop(settings: LoopSettings, v6: bool) {
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
            let mut drops = KernelDrops::unexported();
            serve_batched(&sock, &mut h, &stop2, settings, &mut drops).await;
            assert_eq!(drops.total(), 0, "nothing overflowed");
        });
        while !client.is_finished() {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        client.join().unwrap();
        stop.stop();
        server_task.await;
        assert!(batches.get() >= 1);
        // 101 queued datagrams in batches of 8: 13 calls.
        assert_eq!(
            batches.get(),
            13,
            "batched loop made {} batches",
            batches.get()
        );
        assert_eq!(drops.get(), 1, "the oversized datagram is counted");
    });
}

#[test]
fn batched_loop_answers_every_datagram_v4() {
    run_loop(LoopSettings::batch_only(8), false);
}

#[test]
fn a_coalescing_loop_answers_every_datagram_and_stops() {
    // Every partial batch of 2 or more is followed by a 2 ms wait.
    let settings = LoopSettings {
        batch: 8,
        coalesce: Duration::from_millis(2),
        coalesce_min_batch: 2,
    };
    run_loop(settings, false);
    assert!(settings.coalescer().enabled());
    assert!(!LoopSettings::batch_only(8).coalescer().enabled());
}

#[test]
fn batched_loop_answers_every_datagram_v6() {
    run_loop(LoopSettings::batch_only(8), true);
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
    let sock = super::super::sockets::bind_udp_std("127.0.0.1:0".parse().unwrap(), None).unwrap();
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
    let sock = super::super::sockets::bind_udp_std("127.0.0.1:0".parse().unwrap(), None).unwrap();
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
        let sock = super::super::sockets::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
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
        let sock = super::super::sockets::bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
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
