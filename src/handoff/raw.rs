//! `reply = "direct"`: answer a handed-off client from the first node's
//! service address. [`build_udp4`] and [`build_udp6`] (pure) lay out an
//! IPv4 or IPv6 + UDP packet with a chosen source; [`RawSender`] sends it on
//! a send-only `IPPROTO_RAW` socket of the family (header included is
//! implied for both families on Linux; a raw UDP socket would also receive a
//! copy of every UDP datagram on the host). Needs CAP_NET_RAW. A client and
//! a service address of different families (an IPv4-mapped client of an
//! IPv6 socket) are relayed.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// IPv4 header (no options) + UDP header.
pub const HEADERS: usize = 20 + 8;

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn add_bytes(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Write an IPv4/UDP packet from `src` to `dst` carrying `payload` into
/// `out` (cleared), with both checksums. `None` when it cannot fit.
pub fn build_udp4(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    ident: u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let total = u16::try_from(HEADERS + payload.len()).ok()?;
    out.clear();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&ident.to_be_bytes());
    out.extend_from_slice(&[0x40, 0]); // don't fragment
    out.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    let ip_sum = fold(add_bytes(0, &out[..20]));
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // Pseudo-header + UDP header + payload.
    let mut sum = add_bytes(0, &src.ip().octets());
    sum = add_bytes(sum, &dst.ip().octets());
    sum += 17 + u32::from(udp_len);
    sum = add_bytes(sum, &out[20..]);
    let mut udp_sum = fold(sum);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    out[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    Some(())
}

/// IPv6 header + UDP header.
pub const HEADERS6: usize = 40 + 8;

/// Write an IPv6/UDP packet from `src` to `dst` carrying `payload` into
/// `out` (cleared), with the UDP checksum (mandatory over IPv6). `None`
/// when it cannot fit one packet without a jumbogram.
pub fn build_udp6(
    src: &SocketAddrV6,
    dst: &SocketAddrV6,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    out.clear();
    out.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no class or flow label
    out.extend_from_slice(&udp_len.to_be_bytes()); // payload length
    out.extend_from_slice(&[17, 64]); // next header UDP, hop limit
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // Pseudo-header (addresses, UDP length, next header) + UDP.
    let mut sum = add_bytes(0, &out[8..40]);
    sum += 17 + u32::from(udp_len);
    sum = add_bytes(sum, &out[40..]);
    let mut udp_sum = fold(sum);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    out[46..48].copy_from_slice(&udp_sum.to_be_bytes());
    Some(())
}

fn raw_socket(family: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send-only raw sockets, IPv4 and (when the host has IPv6) IPv6.
pub struct RawSender {
    fd: OwnedFd,
    fd6: Option<OwnedFd>,
    ident: u16,
    buf: Vec<u8>,
}

impl RawSender {
    /// Open the sockets; fails without CAP_NET_RAW (EPERM). A host without
    /// IPv6 gets an IPv4-only sender (IPv6 clients are relayed).
    pub fn open() -> std::io::Result<RawSender> {
        let fd = raw_socket(libc::AF_INET)?;
        let fd6 = raw_socket(libc::AF_INET6).ok();
        Ok(RawSender {
            fd,
            fd6,
            ident: 1,
            buf: Vec::with_capacity(1500),
        })
    }

    /// Whether a reply from `src` to `dst` can be sent directly.
    pub fn can_send(&self, src: &SocketAddr, dst: &SocketAddr) -> bool {
        match (src, dst) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) => true,
            (SocketAddr::V6(_), SocketAddr::V6(_)) => self.fd6.is_some(),
            _ => false,
        }
    }

    /// Send `payload` from `src` to `dst` (one family). Errors: the
    /// kernel's (EPERM from a firewall, EAGAIN when full), or InvalidInput
    /// for mixed families, IPv6 without an IPv6 socket, or a payload too
    /// large for one packet.
    pub fn send(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let (src, dst) = match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => (s, d),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => return self.send6(&s, &d, payload),
            _ => return Err(std::io::ErrorKind::InvalidInput.into()),
        };
        self.ident = self.ident.wrapping_add(1);
        if build_udp4(src, dst, payload, self.ident, &mut self.buf).is_none() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: buf and sin are valid for the duration of the call.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                self.buf.as_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn send6(
        &mut self,
        src: &SocketAddrV6,
        dst: &SocketAddrV6,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let Some(fd6) = &self.fd6 else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        if build_udp6(src, dst, payload, &mut self.buf).is_none() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        // The port must be 0 for a raw socket (EINVAL otherwise); the
        // scope picks the interface of a link-local client.
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: dst.ip().octets(),
            },
            sin6_scope_id: dst.scope_id(),
        };
        // SAFETY: buf and sin6 are valid for the duration of the call.
        let r = unsafe {
            libc::sendto(
                fd6.as_raw_fd(),
                self.buf.as_ptr().cast(),
                self.buf.len(),
                libc::MSG_DONTWAIT,
                (&sin6 as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_layout_and_checksums() {
        let src: SocketAddrV4 = "127.0.0.2:8054".parse().unwrap();
        let dst: SocketAddrV4 = "127.0.0.1:40000".parse().unwrap();
        let mut out = Vec::new();
        build_udp4(src, dst, b"hello", 7, &mut out).unwrap();
        assert_eq!(out.len(), HEADERS + 5);
        assert_eq!(out[0], 0x45);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, out.len());
        assert_eq!(&out[12..16], &[127, 0, 0, 2]);
        assert_eq!(&out[16..20], &[127, 0, 0, 1]);
        assert_eq!(u16::from_be_bytes([out[20], out[21]]), 8054);
        assert_eq!(u16::from_be_bytes([out[22], out[23]]), 40000);
        // A correct checksum sums to zero (all ones before the final not).
        assert_eq!(fold(add_bytes(0, &out[..20])), 0);
        let mut sum = add_bytes(0, &out[12..20]);
        sum += 17 + (8 + 5);
        assert_eq!(fold(add_bytes(sum, &out[20..])), 0);
        assert!(build_udp4(src, dst, &vec![0; 70_000], 1, &mut out).is_none());
    }

    #[test]
    fn ipv6_packet_layout_and_checksum() {
        let src: SocketAddrV6 = "[2001:db8::2]:8054".parse().unwrap();
        let dst: SocketAddrV6 = "[2001:db8::1]:40000".parse().unwrap();
        let mut out = Vec::new();
        build_udp6(&src, &dst, b"hello", &mut out).unwrap();
        assert_eq!(out.len(), HEADERS6 + 5);
        assert_eq!(out[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), 8 + 5);
        assert_eq!(out[6], 17);
        assert_eq!(&out[8..24], &src.ip().octets());
        assert_eq!(&out[24..40], &dst.ip().octets());
        assert_eq!(u16::from_be_bytes([out[40], out[41]]), 8054);
        assert_eq!(u16::from_be_bytes([out[42], out[43]]), 40000);
        // A correct checksum sums to zero over pseudo-header + UDP.
        let mut sum = add_bytes(0, &out[8..40]);
        sum += 17 + (8 + 5);
        assert_eq!(fold(add_bytes(sum, &out[40..])), 0);
        assert!(build_udp6(&src, &dst, &vec![0; 70_000], &mut out).is_none());
    }

    /// A real IPv6 raw send on loopback, when this process may (root or
    /// CAP_NET_RAW): the receiver sees the chosen source port.
    #[test]
    fn ipv6_direct_reply_arrives_from_the_chosen_source() {
        let Ok(mut raw) = RawSender::open() else {
            eprintln!("skipped: no raw sockets here (needs CAP_NET_RAW)");
            return;
        };
        let Ok(rx) = std::net::UdpSocket::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        // A source port nobody listens on: only the raw socket can send from it.
        let holder = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let src = holder.local_addr().unwrap();
        drop(holder);
        let dst = rx.local_addr().unwrap();
        assert!(raw.can_send(&src, &dst));
        raw.send(src, dst, b"direct6").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"direct6");
        assert_eq!(from, src);
    }
}
