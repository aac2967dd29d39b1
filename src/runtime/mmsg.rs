//! The unsafe details of batched UDP, in one place: `recvmmsg`/`sendmmsg`
//! (retried on EINTR), the `UDP_SEGMENT` control message of a GSO send,
//! reading a control message (drop count, receive timestamp) of a received
//! datagram, and kernel socket addresses. The shard's loops
//! ([`super::udp`], which the benchmark reflector runs too) and the load
//! generator build their batches on these.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `n` all-zero C structs (`mmsghdr`, `iovec`, `sockaddr_storage`, ...).
///
/// # Safety
/// All-zero must be a valid value of `T` (true of these plain C structs).
pub unsafe fn zeroed_vec<T>(n: usize) -> Vec<T> {
    // SAFETY: the caller vouches that all-zero is a valid T.
    (0..n).map(|_| unsafe { zeroed() }).collect()
}

/// One `recvmmsg` into `hdrs` with `flags`: how many datagrams arrived, or
/// the error (`WouldBlock` when the socket is empty or its receive
/// timeout passed).
///
/// # Safety
/// Every header must point at names, iovecs and control buffers that stay
/// valid (and are as long as the header says) for the call.
#[inline]
pub unsafe fn recv_messages(
    fd: i32,
    hdrs: &mut [libc::mmsghdr],
    flags: libc::c_int,
) -> io::Result<usize> {
    loop {
        // SAFETY: the caller vouches for the headers' pointers.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                hdrs.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `sendmmsg` of `hdrs` with `flags`: how many messages went out, or
/// the error of the first one.
///
/// # Safety
/// As [`recv_messages`].
#[inline]
pub unsafe fn send_messages(
    fd: i32,
    hdrs: &mut [libc::mmsghdr],
    flags: libc::c_int,
) -> io::Result<usize> {
    loop {
        // SAFETY: the caller vouches for the headers' pointers.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, flags) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The control buffer of one GSO send: room for `CMSG_SPACE(2)` (24
/// bytes), aligned for `cmsghdr`.
pub type GsoCmsg = [u64; 4];

/// Make `h` a GSO send (`UDP_SEGMENT`): its iovecs are cut into datagrams
/// of `segment` bytes (the last may be shorter). The control message lives
/// in `ctrl`, which must stay alive and unmoved until the send (as every
/// buffer a header points at).
#[inline]
pub fn set_gso_segment(h: &mut libc::msghdr, ctrl: &mut GsoCmsg, segment: u16) {
    *ctrl = [0; 4];
    h.msg_control = ctrl.as_mut_ptr().cast();
    // SAFETY: msg_control points at a zeroed 32-byte, 8-aligned buffer,
    // enough for CMSG_SPACE(2); CMSG_FIRSTHDR is non-null because
    // msg_controllen covers one header.
    unsafe {
        h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
        let cm = libc::CMSG_FIRSTHDR(h);
        (*cm).cmsg_level = libc::SOL_UDP;
        (*cm).cmsg_type = libc::UDP_SEGMENT;
        (*cm).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), segment);
    }
}

/// No control message on `h` (a plain send).
#[inline]
pub fn clear_control(h: &mut libc::msghdr) {
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
}

/// The data of `h`'s control message `level`/`ty`, if the kernel put one.
///
/// # Safety
/// `h` must be a header the kernel filled on receive: `msg_control` holds
/// `msg_controllen` bytes of well-formed control messages.
#[inline]
pub unsafe fn control_data(
    h: &libc::msghdr,
    level: libc::c_int,
    ty: libc::c_int,
) -> Option<*const u8> {
    if h.msg_controllen == 0 {
        return None;
    }
    // SAFETY: CMSG_* walk only within msg_controllen (caller's promise).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == level && (*c).cmsg_type == ty {
                return Some(libc::CMSG_DATA(c).cast_const());
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// The kernel's receive time of a datagram (`SO_TIMESTAMPNS`), ns since
/// the epoch, if stamped.
///
/// # Safety
/// As [`control_data`].
#[inline]
pub unsafe fn rx_timestamp_ns(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: the caller's promise; SCM_TIMESTAMPNS's data is a timespec.
    unsafe {
        control_data(h, libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS).map(|data| {
            let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        })
    }
}

/// The socket's drop count stamped on a datagram (`SO_RXQ_OVFL`), if any.
///
/// # Safety
/// As [`control_data`].
#[inline]
pub unsafe fn rx_drop_count(h: &libc::msghdr) -> Option<u32> {
    // SAFETY: the caller's promise; SO_RXQ_OVFL's data is one u32.
    unsafe {
        control_data(h, libc::SOL_SOCKET, libc::SO_RXQ_OVFL)
            .map(|data| std::ptr::read_unaligned(data.cast::<u32>()))
    }
}

/// Convert a kernel-filled sockaddr into a `SocketAddr` (IPv4/IPv6 only).
pub fn sockaddr_to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: family says it is a sockaddr_in and it is long enough.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above for sockaddr_in6.
            let a = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
