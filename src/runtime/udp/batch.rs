//! The buffers and headers of one batched socket ([`MmsgBatch`]): receive
//! slots, the replies of a round, and the plan that groups replies to one
//! client into GSO messages.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;

use super::{
    enable_drop_count, set_int_option, CmsgBuf, GSO_MAX_BYTES, GSO_MAX_SEGMENT, GSO_MAX_SEGMENTS,
    RX_SLOT,
};
use crate::runtime::mmsg;

/// Receive control messages of one datagram: room for `SCM_TIMESTAMPNS`
/// (CMSG_SPACE(16) = 32 bytes) and `SO_RXQ_OVFL` (CMSG_SPACE(4) = 24).
type RxCmsgBuf = [u64; 8];

/// Reusable buffers and headers for one batched socket.
pub(super) struct MmsgBatch {
    pub(super) n: usize,
    pub(super) rx: Vec<u8>,
    pub(super) names: Vec<libc::sockaddr_storage>,
    pub(super) rx_iov: Vec<libc::iovec>,
    pub(super) rx_hdr: Vec<libc::mmsghdr>,
    pub(super) out: Vec<Vec<u8>>,
    pub(super) tx_iov: Vec<libc::iovec>,
    pub(super) tx_hdr: Vec<libc::mmsghdr>,
    /// `tx_from[k]`: index of the received datagram (name) reply `k` goes to.
    pub(super) tx_from: Vec<usize>,
    /// `tx_to[k]`: the address reply `k` goes to (the sender of `tx_from[k]`).
    pub(super) tx_to: Vec<SocketAddr>,
    /// Outgoing messages of the batch: a group of replies to one address
    /// with one length (GSO), or a single reply.
    pub(super) msg_hdr: Vec<libc::mmsghdr>,
    /// The replies' iovecs in message order (each message's contiguous).
    pub(super) msg_iov: Vec<libc::iovec>,
    pub(super) msg_ctrl: Vec<CmsgBuf>,
    /// `msg_order[msg_start[m]..msg_start[m + 1]]`: the replies of message `m`.
    pub(super) msg_order: Vec<usize>,
    /// Sort keys of the plan, one per reply (see [`plan_key`]).
    pub(super) plan_keys: Vec<(u128, u64)>,
    pub(super) msg_start: Vec<usize>,
    /// Group replies with UDP GSO (cleared when the kernel refuses it).
    pub(super) gso: bool,
    /// Messages sent with more than one segment (for tests and debugging).
    pub(super) gso_messages: u64,
    /// Receive control messages (drop count, timestamps when enabled).
    pub(super) rx_ctrl: Vec<RxCmsgBuf>,
    pub(super) timestamps: bool,
    /// The kernel stamps its drop count on each datagram (`SO_RXQ_OVFL`).
    pub(super) drop_count: bool,
}

impl MmsgBatch {
    pub(super) fn new(n: usize) -> Box<MmsgBatch> {
        let n = n.max(1);
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_name: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
        let mut b = Box::new(MmsgBatch {
            n,
            rx: vec![0u8; n * RX_SLOT],
            names: vec![zero_name; n],
            rx_iov: vec![zero_iov; n],
            rx_hdr: vec![zero_hdr; n],
            out: (0..n).map(|_| Vec::with_capacity(1232)).collect(),
            tx_iov: vec![zero_iov; n],
            tx_hdr: vec![zero_hdr; n],
            tx_from: vec![0; n],
            tx_to: vec![SocketAddr::from(([0, 0, 0, 0], 0)); n],
            msg_hdr: vec![zero_hdr; n],
            msg_iov: vec![zero_iov; n],
            msg_ctrl: vec![[0u64; 4]; n],
            msg_order: vec![0; n],
            plan_keys: Vec::with_capacity(n),
            msg_start: vec![0; n + 1],
            gso: true,
            gso_messages: 0,
            rx_ctrl: vec![[0u64; 8]; n],
            timestamps: false,
            drop_count: false,
        });
        // The vectors above are never resized, so these pointers stay valid
        // for the life of the batch.
        for i in 0..n {
            let MmsgBatch {
                rx,
                names,
                rx_iov,
                rx_hdr,
                rx_ctrl,
                ..
            } = &mut *b;
            rx_iov[i].iov_base = rx[i * RX_SLOT..].as_mut_ptr().cast();
            rx_iov[i].iov_len = RX_SLOT;
            let h = &mut rx_hdr[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = rx_ctrl[i].as_mut_ptr().cast();
        }
        b
    }

    /// Ask the kernel for the drop count on `fd`; a refusal is logged and
    /// leaves the count unseen.
    pub(super) fn enable_drop_count(&mut self, fd: i32) {
        match enable_drop_count(fd) {
            Ok(()) => self.drop_count = true,
            Err(e) => tracing::warn!(
                "SO_RXQ_OVFL refused ({e}): this socket's kernel drops are not counted"
            ),
        }
    }

    /// The drop count stamped on datagram `i`, if the kernel gave one.
    pub(super) fn drop_count_of(&self, i: usize) -> Option<u32> {
        if !self.drop_count {
            return None;
        }
        // SAFETY: the kernel filled rx_hdr[i] on receive.
        unsafe { mmsg::rx_drop_count(&self.rx_hdr[i].msg_hdr) }
    }

    /// Ask the kernel for receive timestamps on `fd` and make room for
    /// them; false (and no timestamps) when it refuses.
    pub(super) fn enable_timestamps(&mut self, fd: i32) -> bool {
        if set_int_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).is_err() {
            return false;
        }
        self.timestamps = true;
        true
    }

    /// The receive time of datagram `i` (ns since the epoch), 0 if none.
    pub(super) fn rx_time_ns(&self, i: usize) -> u64 {
        if !self.timestamps {
            return 0;
        }
        // SAFETY: the kernel filled rx_hdr[i] on receive.
        unsafe { mmsg::rx_timestamp_ns(&self.rx_hdr[i].msg_hdr) }.unwrap_or(0)
    }

    /// One `recvmmsg` with `flags` (`MSG_DONTWAIT`: never block; on a
    /// blocking socket, `MSG_WAITFORONE`: block for the first datagram
    /// only): number of datagrams, or the error (`WouldBlock` when the
    /// socket is empty or its receive timeout passed).
    pub(super) fn recv(&mut self, fd: i32, flags: libc::c_int) -> io::Result<usize> {
        let ctrl_len = if self.timestamps || self.drop_count {
            size_of::<RxCmsgBuf>()
        } else {
            0
        };
        for h in &mut self.rx_hdr {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_hdr.msg_controllen = ctrl_len as _;
            h.msg_len = 0;
        }
        // SAFETY: rx_hdr holds n initialised headers pointing into
        // buffers owned by self, alive for the duration of the call.
        unsafe { mmsg::recv_messages(fd, &mut self.rx_hdr[..self.n], flags) }
    }

    /// Point tx header `k` at `out[k]` and the sender of datagram `i`,
    /// whose address is `to`.
    pub(super) fn queue_reply(&mut self, k: usize, i: usize, to: SocketAddr) {
        self.tx_iov[k].iov_base = self.out[k].as_mut_ptr().cast();
        self.tx_iov[k].iov_len = self.out[k].len();
        self.tx_from[k] = i;
        self.tx_to[k] = to;
        let h = &mut self.tx_hdr[k].msg_hdr;
        h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = self.rx_hdr[i].msg_hdr.msg_namelen;
        h.msg_iov = &mut self.tx_iov[k];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    /// Lay the replies `msg_order[start..k]` out as one message each, in
    /// contiguous headers for `sendmmsg` (`msg_hdr[p]` sends reply
    /// `msg_order[start + p]`); returns how many.
    pub(super) fn lay_out_singles(&mut self, start: usize, k: usize) -> usize {
        let total = k - start;
        for p in 0..total {
            self.msg_hdr[p] = self.tx_hdr[self.msg_order[start + p]];
        }
        total
    }

    /// Lay replies `0..k` out as messages. Replies are ordered by
    /// destination, longest first (arrival order among equals), then cut
    /// into GSO messages: a run of replies to one address with one length
    /// (at most [`GSO_MAX_SEGMENT`] bytes), closed by at most one shorter
    /// reply, since GSO lets only the last segment be short. Anything else
    /// is a message of its own. Returns the message count.
    pub(super) fn plan_messages(&mut self, k: usize) -> usize {
        // Order by destination, longest first: replies to one client
        // become adjacent in O(k log k), however many clients the batch has.
        // Without GSO every reply is a message of its own: arrival order
        // will do.
        if self.gso {
            self.plan_keys.clear();
            for j in 0..k {
                self.plan_keys
                    .push(plan_key(&self.tx_to[j], self.out[j].len(), j));
            }
            self.plan_keys.sort_unstable();
            for (slot, key) in self.msg_order.iter_mut().zip(&self.plan_keys) {
                *slot = (key.1 & 0xFFFF) as usize;
            }
        } else {
            for (p, slot) in self.msg_order[..k].iter_mut().enumerate() {
                *slot = p;
            }
        }
        let mut msgs = 0;
        let mut p = 0;
        while p < k {
            let lead = self.msg_order[p];
            let seg = self.out[lead].len();
            let mut end = p + 1;
            if self.gso && seg > 0 && seg <= GSO_MAX_SEGMENT {
                let mut bytes = seg;
                while end < k && end - p < GSO_MAX_SEGMENTS {
                    let j = self.msg_order[end];
                    let len = self.out[j].len();
                    // Same destination means len <= seg (sorted longest first).
                    if self.tx_to[j] != self.tx_to[lead] || len == 0 || bytes + len > GSO_MAX_BYTES
                    {
                        break;
                    }
                    bytes += len;
                    end += 1;
                    if len < seg {
                        break;
                    }
                }
            }
            self.msg_start[msgs] = p;
            msgs += 1;
            p = end;
        }
        self.msg_start[msgs] = k;
        for p in 0..k {
            self.msg_iov[p] = self.tx_iov[self.msg_order[p]];
        }
        for m in 0..msgs {
            let start = self.msg_start[m];
            let n = self.msg_start[m + 1] - start;
            let lead = self.msg_order[start];
            let i = self.tx_from[lead];
            let namelen = self.rx_hdr[i].msg_hdr.msg_namelen;
            let h = &mut self.msg_hdr[m].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.msg_iov[start];
            h.msg_iovlen = n as _;
            h.msg_flags = 0;
            if n > 1 {
                let seg = self.out[lead].len() as u16;
                mmsg::set_gso_segment(h, &mut self.msg_ctrl[m], seg);
            } else {
                mmsg::clear_control(h);
            }
        }
        msgs
    }
}

/// The plan's sort key of reply `j` (of `len` bytes, to `to`): integers
/// that order replies by destination (address, port, family), then longest
/// first, then arrival, and compare in a few instructions (ordering by
/// `SocketAddr` itself cost more than the DNS answer path). Destinations
/// that differ only in an IPv6 flow label or scope share a key; that only
/// places them side by side, since a GSO run also checks its destinations
/// are equal.
#[inline]
pub(super) fn plan_key(to: &SocketAddr, len: usize, j: usize) -> (u128, u64) {
    let (addr, port, family) = match to {
        SocketAddr::V4(a) => (u128::from(u32::from(*a.ip())), a.port(), 0u64),
        SocketAddr::V6(a) => (u128::from(*a.ip()), a.port(), 1u64),
    };
    let shorter = 0xFFFF - len.min(0xFFFF) as u64;
    (
        addr,
        u64::from(port) << 48 | family << 47 | shorter << 16 | (j as u64 & 0xFFFF),
    )
}
