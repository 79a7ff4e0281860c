//! Batched UDP I/O for the packet path: many datagrams per receive syscall
//! (`recvmmsg`, with GRO on client-facing sockets, via `quinn-udp`), and runs of
//! equal-sized datagrams to one destination sent as a single UDP GSO `sendmsg`.
//!
//! The GSO send is hand-written rather than `quinn-udp`'s: its `Transmit` wants one
//! contiguous buffer, but our segments are scattered — each is a slice of its own
//! receive slot (a client's ChannelData payload, or a peer's datagram with the header
//! written in front of it in place). An `iovec` per segment lets the kernel gather them,
//! so nothing is copied on the way through the relay.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

use crate::proto::server::{PEER_HEADROOM, PEER_TAILROOM};

/// Datagrams per receive syscall.
pub(crate) const BATCH: usize = quinn_udp::BATCH_SIZE;
/// The largest UDP payload, and the largest GRO-coalesced receive.
pub(crate) const MAX_DATAGRAM: usize = 65535;
/// One receive slot: room for framing in front, the datagram, padding behind.
pub(crate) const SLOT: usize = PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM;
/// The kernel's cap on segments in one GSO send (`UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;
/// `UDP_SEGMENT` socket option / control message (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;

/// A worker's receive slots, allocated once. Datagrams land at `PEER_HEADROOM` in their
/// slot so the core can frame a peer's datagram for the client in place.
pub(crate) struct RecvBatch {
    slots: Box<[u8]>,
    pub(crate) meta: [RecvMeta; BATCH],
}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            slots: vec![0; SLOT * BATCH].into_boxed_slice(),
            meta: [RecvMeta::default(); BATCH],
        }
    }

    /// Receive up to [`BATCH`] datagrams from `sock`; returns how many arrived.
    pub(crate) fn recv(
        &mut self,
        state: &UdpSocketState,
        sock: &mio::net::UdpSocket,
    ) -> io::Result<usize> {
        let mut chunks = self.slots.chunks_exact_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
            // `slots` holds exactly BATCH slots of SLOT bytes, so there is one per index.
            let slot = chunks.next().expect("one slot per batch index");
            IoSliceMut::new(&mut slot[PEER_HEADROOM..PEER_HEADROOM + MAX_DATAGRAM])
        });
        state.recv(UdpSockRef::from(sock), &mut iovs, &mut self.meta)
    }

    /// Slot `i` whole (headroom, datagram, tailroom).
    pub(crate) fn slot(&self, i: usize) -> &[u8] {
        self.slots.get(i * SLOT..(i + 1) * SLOT).unwrap_or_default()
    }

    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        self.slots
            .get_mut(i * SLOT..(i + 1) * SLOT)
            .unwrap_or_default()
    }

    /// Where the datagrams received in slot `i` lie in it. With GRO the kernel may have
    /// coalesced several datagrams of one sender into one receive, `stride` bytes apart
    /// (the last may be shorter); each is one range. An empty receive yields none.
    pub(crate) fn segments(&self, i: usize) -> impl Iterator<Item = Range<usize>> {
        let (len, stride) = self
            .meta
            .get(i)
            .map_or((0, 1), |m| (m.len, m.stride.max(1)));
        let end = PEER_HEADROOM + len;
        (PEER_HEADROOM..end)
            .step_by(stride)
            .map(move |at| at..end.min(at + stride))
    }
}

/// A peer-bound or client-bound datagram whose bytes lie in the batch: `slot(slot)[range]`.
#[derive(Debug, Clone)]
pub(crate) struct Pending<K> {
    /// Whom it goes to, via which socket (compared to form GSO runs).
    pub(crate) key: K,
    pub(crate) dst: SocketAddr,
    pub(crate) slot: usize,
    pub(crate) range: Range<usize>,
}

/// Send the `pending` datagrams, whose bytes live in `batch`, grouping consecutive
/// ones with the same key and destination into GSO runs: every segment but the last
/// must have the run's size (the last may be shorter). `send` is called once per run
/// with the segments and the segment size (`None`: a single datagram).
pub(crate) fn for_each_run<K: PartialEq + Copy>(
    pending: &[Pending<K>],
    batch: &RecvBatch,
    gso: bool,
    mut send: impl FnMut(K, SocketAddr, &[IoSlice<'_>], Option<u16>),
) {
    let mut i = 0;
    while let Some(first) = pending.get(i) {
        let size = first.range.len();
        let mut end = i + 1;
        if gso && size > 0 {
            while let Some(next) = pending.get(end) {
                let same_flow = next.key == first.key && next.dst == first.dst;
                let len = next.range.len();
                // A shorter datagram may close a run; a longer one cannot join it.
                if !same_flow || len > size || end - i >= MAX_GSO_SEGMENTS {
                    break;
                }
                end += 1;
                if len < size {
                    break;
                }
            }
        }
        let mut iovs: [IoSlice<'_>; MAX_GSO_SEGMENTS] = [IoSlice::new(&[]); MAX_GSO_SEGMENTS];
        let mut total = 0usize;
        let mut count = 0;
        for p in pending.get(i..end).unwrap_or_default() {
            let bytes = batch.slot(p.slot).get(p.range.clone()).unwrap_or_default();
            // GSO runs are capped at 64 KiB of payload too.
            if count > 0 && total + bytes.len() > MAX_DATAGRAM {
                end = i + count;
                break;
            }
            iovs[count] = IoSlice::new(bytes);
            total += bytes.len();
            count += 1;
        }
        let segment = (count > 1).then_some(size as u16);
        send(first.key, first.dst, &iovs[..count], segment);
        i = end;
    }
}

/// `sendmsg` of `iovs` to `dst`, as one datagram, or — with `segment` — as UDP GSO
/// segments of that size (the kernel splits them; the last may be shorter).
pub(crate) fn send_segments(
    sock: &impl AsRawFd,
    dst: SocketAddr,
    iovs: &[IoSlice<'_>],
    segment: Option<u16>,
) -> io::Result<usize> {
    let addr = socket2::SockAddr::from(dst);
    // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
    hdr.msg_namelen = addr.len();
    hdr.msg_iov = iovs.as_ptr() as *mut libc::iovec; // IoSlice is ABI-compatible with iovec
    hdr.msg_iovlen = iovs.len();
    let mut control = [0u64; 4];
    if let Some(size) = segment {
        set_gso_control(&mut hdr, &mut control, size);
    }
    loop {
        // SAFETY: `hdr` describes valid memory for the duration of the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Points `hdr`'s control data at `control` and writes the UDP_SEGMENT message (the
/// GSO segment size) there. `control` (room for one cmsg carrying a u16, aligned as
/// cmsghdr requires) must outlive every use of `hdr`.
pub(crate) fn set_gso_control(hdr: &mut libc::msghdr, control: &mut [u64; 4], size: u16) {
    // SAFETY: `control` is large and aligned enough for CMSG_SPACE(2) bytes, and
    // CMSG_FIRSTHDR of a header with that much control space is non-null.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
}

/// `setsockopt` with an integer value.
pub(crate) fn set_int_option(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to a c_int of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// quinn-udp sets "probe" path-MTU mode (DF on, local MTU only) for QUIC's sake; a TURN
/// relay forwards whatever its clients send, so restore the kernel default ("want").
pub(crate) fn restore_pmtu_default(sock: &impl AsRawFd, ipv6: bool) {
    let result = if ipv6 {
        set_int_option(
            sock,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        )
    } else {
        set_int_option(
            sock,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_WANT,
        )
    };
    if let Err(e) = result {
        tracing::debug!("cannot restore path-MTU discovery default: {e}");
    }
}

/// A receive state for sockets we do not configure through quinn-udp (relay sockets):
/// its recv works on any UDP socket. Made once per worker from a throwaway socket, so
/// relay sockets keep GRO off — each peer datagram needs its own headroom for in-place
/// framing — and opening one costs no extra syscalls.
pub(crate) fn plain_state() -> io::Result<UdpSocketState> {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0")?;
    UdpSocketState::new(UdpSockRef::from(&probe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_runs_group_equal_sizes_to_one_destination() {
        let batch = RecvBatch::new();
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let p = |key: u8, dst, len| Pending {
            key,
            dst,
            slot: 0,
            range: PEER_HEADROOM..PEER_HEADROOM + len,
        };
        let pending = [
            p(1, a, 100),
            p(1, a, 100),
            p(1, a, 60), // a shorter last segment closes the run
            p(1, a, 100),
            p(1, b, 100), // another destination
            p(2, b, 100), // another socket
            p(2, b, 120), // longer: cannot join
        ];
        let mut runs = Vec::new();
        for_each_run(&pending, &batch, true, |key, dst, iovs, seg| {
            runs.push((key, dst, iovs.len(), seg));
        });
        assert_eq!(
            runs,
            vec![
                (1, a, 3, Some(100)),
                (1, a, 1, None),
                (1, b, 1, None),
                (2, b, 1, None),
                (2, b, 1, None),
            ]
        );
        let mut singles = 0;
        for_each_run(&pending, &batch, false, |_, _, iovs, seg| {
            assert_eq!((iovs.len(), seg), (1, None));
            singles += 1;
        });
        assert_eq!(singles, pending.len());
    }

    #[test]
    fn gso_send_arrives_as_separate_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let segs = [[1u8; 50], [2u8; 50], [3u8; 50]];
        let tail = [4u8; 20];
        let iovs = [
            IoSlice::new(&segs[0]),
            IoSlice::new(&segs[1]),
            IoSlice::new(&segs[2]),
            IoSlice::new(&tail),
        ];
        let sent = send_segments(&tx, rx.local_addr().unwrap(), &iovs, Some(50)).unwrap();
        assert_eq!(sent, 170);
        let mut buf = [0u8; 200];
        for expect in [&segs[0][..], &segs[1], &segs[2], &tail] {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], expect);
        }
    }
}
