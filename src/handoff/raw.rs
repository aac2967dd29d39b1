//! `reply = "direct"`: answer a handed-off client from the first node's
//! service address. [`build_udp4`] (pure) lays out an IPv4 + UDP packet with
//! a chosen source; [`RawSender`] sends it on a send-only `IPPROTO_RAW`
//! socket (IP_HDRINCL implied; a raw UDP socket would also receive a copy of
//! every UDP datagram on the host). Needs CAP_NET_RAW; IPv4 only.

use std::net::{SocketAddr, SocketAddrV4};
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

/// A send-only raw IPv4 socket.
pub struct RawSender {
    fd: OwnedFd,
    ident: u16,
    buf: Vec<u8>,
}

impl RawSender {
    /// Open the socket; fails without CAP_NET_RAW (EPERM).
    pub fn open() -> std::io::Result<RawSender> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RawSender {
            fd,
            ident: 1,
            buf: Vec::with_capacity(1500),
        })
    }

    /// Send `payload` from `src` to `dst` (both IPv4). Errors: the kernel's
    /// (EPERM from a firewall, EAGAIN when full), or InvalidInput for IPv6
    /// or a payload too large for one packet.
    pub fn send(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
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
}

/// Whether `a` can be a direct reply's source or destination.
pub fn is_v4(a: &SocketAddr) -> bool {
    matches!(a, SocketAddr::V4(_))
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
}
