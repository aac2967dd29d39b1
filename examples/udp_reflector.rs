//! Measurement tool for `scripts/bench-dns.sh --reflector`: the cost of the
//! kernel's UDP path alone, as a ceiling for any DNS server on this machine.
//!
//! It answers every datagram by sending it back with the DNS QR bit set and
//! does no other work: no parsing, no lookup, no metrics. It uses the same
//! kernel techniques as a shardgate shard at their best (blocking
//! `recvmmsg` of up to 64, replies grouped per client into UDP GSO messages
//! by length, a 200 µs receive-coalescing sleep after each partial batch of
//! 8 or more), so its queries per core-second is what the loopback path
//! allows a server that spends nothing in user space. Not a DNS server:
//! never run it anywhere but a benchmark.
//!
//!     cargo run --release --example udp_reflector -- 127.0.0.1:15353 [coalesce_us]

use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

const BATCH: usize = 64;
const SLOT: usize = 2048;
const MIN_BATCH_TO_COALESCE: usize = 8;
const GSO_MAX_SEGMENTS: usize = 64;

/// A reply's destination, for grouping.
fn dest(name: &libc::sockaddr_in) -> (u32, u16) {
    (name.sin_addr.s_addr, name.sin_port)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: udp_reflector IPV4:PORT [coalesce_us]");
    let coalesce = Duration::from_micros(args.next().and_then(|a| a.parse().ok()).unwrap_or(200));
    assert!(addr.is_ipv4(), "IPv4 only");
    let sock = UdpSocket::bind(addr).expect("bind");
    let fd = sock.as_raw_fd();
    let mut rx = vec![0u8; BATCH * SLOT];
    // SAFETY (all blocks below): plain C structs, zero is a valid value;
    // every pointer handed to the kernel points into the vectors above,
    // which are never resized.
    let mut names: Vec<libc::sockaddr_in> = vec![unsafe { zeroed() }; BATCH];
    let mut rx_iov: Vec<libc::iovec> = vec![unsafe { zeroed() }; BATCH];
    let mut rx_hdr: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut tx_iov: Vec<libc::iovec> = vec![unsafe { zeroed() }; BATCH];
    let mut tx_hdr: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    let mut ctrl: Vec<[u64; 4]> = vec![[0; 4]; BATCH];
    let mut order: Vec<usize> = vec![0; BATCH];
    loop {
        for i in 0..BATCH {
            rx_iov[i].iov_base = rx[i * SLOT..].as_mut_ptr().cast();
            rx_iov[i].iov_len = SLOT;
            let h = &mut rx_hdr[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut rx_iov[i];
            h.msg_iovlen = 1;
        }
        let got = unsafe {
            libc::recvmmsg(
                fd,
                rx_hdr.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got <= 0 {
            continue;
        }
        let got = got as usize;
        for (i, slot) in order.iter_mut().enumerate().take(got) {
            if rx_hdr[i].msg_len >= 3 {
                rx[i * SLOT + 2] |= 0x80;
            }
            *slot = i;
        }
        order[..got]
            .sort_unstable_by_key(|&i| (dest(&names[i]), std::cmp::Reverse(rx_hdr[i].msg_len)));
        let (mut msgs, mut p) = (0, 0);
        while p < got {
            let lead = order[p];
            let seg = rx_hdr[lead].msg_len as usize;
            let mut end = p + 1;
            while end < got
                && end - p < GSO_MAX_SEGMENTS
                && dest(&names[order[end]]) == dest(&names[lead])
            {
                let len = rx_hdr[order[end]].msg_len as usize;
                end += 1;
                if len < seg {
                    break;
                }
            }
            for q in p..end {
                let j = order[q];
                tx_iov[q].iov_base = rx[j * SLOT..].as_mut_ptr().cast();
                tx_iov[q].iov_len = rx_hdr[j].msg_len as usize;
            }
            let h = &mut tx_hdr[msgs].msg_hdr;
            h.msg_name = (&mut names[lead] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut tx_iov[p];
            h.msg_iovlen = end - p;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            if end - p > 1 && seg > 0 {
                ctrl[msgs] = [0; 4];
                h.msg_control = ctrl[msgs].as_mut_ptr().cast();
                unsafe {
                    h.msg_controllen = libc::CMSG_SPACE(2) as usize;
                    let cm = libc::CMSG_FIRSTHDR(h);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg as u16);
                }
            }
            msgs += 1;
            p = end;
        }
        let mut sent = 0;
        while sent < msgs {
            let r = unsafe {
                libc::sendmmsg(fd, tx_hdr.as_mut_ptr().add(sent), (msgs - sent) as u32, 0)
            };
            if r <= 0 {
                // A refused message is skipped; the load generator counts it as lost.
                sent += 1;
                continue;
            }
            sent += r as usize;
        }
        if !coalesce.is_zero() && (MIN_BATCH_TO_COALESCE..BATCH).contains(&got) {
            std::thread::sleep(coalesce);
        }
    }
}
