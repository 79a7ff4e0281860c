//! UDP segmentation offload for the generator's video mix: send a frame's packets as
//! one `UDP_SEGMENT` message and take the relay's coalesced (`UDP_GRO`) buffers apart.
//!
//! Why: with one `sendmmsg` entry and one `recvmmsg` entry per packet, the generator's
//! single core tops out near 300 kpps of 1200-byte packets, below what a relay that
//! itself uses GSO/GRO can forward. A video frame is 5–10 equal-size packets of one
//! stream to one destination, exactly the shape GSO carries in one skb: the kernel
//! walks the socket, route and UDP send path once per frame instead of once per packet.
//!
//! On loopback the GSO skb reaches the destination socket whole. A socket with
//! `UDP_GRO` on (Turnpike's listener and relay sockets) receives it as one coalesced
//! buffer, as it would after NIC/stack GRO on a real interface; a socket without it
//! (coturn, the bare forwarder) gets it segmented back into datagrams by the kernel
//! (`udp_unexpected_gso`), so every relay still sees ordinary datagrams' worth of data.

use std::io;
use std::os::fd::RawFd;

use crate::sys::BATCH;

/// At most this many segments per message: the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels (128 on newer ones). A video frame is at most 10.
const MAX_SEGMENTS: usize = 64;
/// At most this many payload bytes per message: one UDP datagram's worth
/// (65 535 − 8 − 20) with room to spare.
const MAX_BYTES: usize = 60_000;

/// Turns `UDP_GRO` on or off on a receiving socket. With it on, the kernel delivers a
/// GSO skb (or a GRO-merged run) as one buffer and says its segment size in a
/// `UDP_GRO` control message (see [`crate::sys::MmsgReceiver::gro_size`]).
pub fn set_gro(fd: RawFd, on: bool) -> io::Result<()> {
    crate::sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, on.into())
}

/// Whether a send error means "this kernel/socket refuses UDP GSO" (the caller then
/// falls back to one datagram per `sendmmsg` entry): `EIO` (no checksum offload on
/// the route's device) or `EINVAL` (segment size or count not accepted).
pub fn refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
}

/// Room for one `cmsghdr` carrying a u16, 8-byte aligned (`CMSG_SPACE(2)` = 24).
type Ctrl = [u64; 4];

/// Reusable `sendmmsg` state where each entry is a run of equal-size datagrams for
/// one destination, sent as one `UDP_SEGMENT` message. The datagrams' parts (framing
/// prefix, SRTP packet, padding) are gathered by the kernel from an iovec per part:
/// GSO cuts the concatenated payload every `gso_size` bytes, so no copy is needed.
pub struct GsoSender {
    msgs: Vec<libc::mmsghdr>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<Ctrl>,
    /// Datagrams in each message, to turn `sendmmsg`'s message count into packets.
    segments: Vec<usize>,
}

impl GsoSender {
    pub fn new() -> GsoSender {
        let iov0 = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        GsoSender {
            // SAFETY: mmsghdr and sockaddr_in are plain data; zero is valid for both.
            msgs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iov: vec![iov0; BATCH * 3],
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            ctrl: vec![[0; 4]; BATCH],
            segments: vec![0; BATCH],
        }
    }

    /// Sends `n` (≤ [`BATCH`]) datagrams on `fd`; `item(i)` gives datagram i's run key,
    /// destination and parts. Consecutive datagrams with the same key (one stream: same
    /// destination, same framing, same size) form one message, up to [`MAX_SEGMENTS`]
    /// and [`MAX_BYTES`]; a datagram shorter than its run's first ends the run (only the
    /// last segment may be shorter). Returns how many *datagrams* the kernel took, in
    /// order: whole messages only, so the count is a prefix of the `n`.
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        n: usize,
        mut item: impl FnMut(usize) -> (u32, libc::sockaddr_in, [&'a [u8]; 3]),
    ) -> io::Result<usize> {
        let n = n.min(BATCH);
        let mut m = 0; // messages built
                       // The open run: (key, segment size, bytes so far, last datagram's length).
        let mut run: Option<(u32, usize, usize, usize)> = None;
        for i in 0..n {
            let (key, dest, parts) = item(i);
            let len: usize = parts.iter().map(|p| p.len()).sum();
            let joins = match run {
                Some((k, seg, bytes, prev)) => {
                    k == key
                        && len <= seg
                        // A shorter datagram may only be the last of its run.
                        && prev == seg
                        && self.segments[m - 1] < MAX_SEGMENTS
                        && bytes + len <= MAX_BYTES
                }
                None => false,
            };
            if joins {
                if let Some((_, _, bytes, prev)) = run.as_mut() {
                    *bytes += len;
                    *prev = len;
                }
                self.segments[m - 1] += 1;
            } else {
                self.names[m] = dest;
                self.segments[m] = 1;
                run = Some((key, len, len, len));
                m += 1;
            }
            for (j, part) in parts.iter().enumerate() {
                // The kernel only reads through iov_base for a send.
                self.iov[i * 3 + j] = libc::iovec {
                    iov_base: part.as_ptr() as *mut libc::c_void,
                    iov_len: part.len(),
                };
            }
        }
        // Second pass: point each message at its contiguous iovec range and segment size.
        let mut first = 0;
        for k in 0..m {
            let segs = self.segments[k];
            let seg: usize = self.iov[first * 3..first * 3 + 3]
                .iter()
                .map(|v| v.iov_len)
                .sum();
            let ctrl = (&mut self.ctrl[k] as *mut Ctrl).cast::<libc::c_void>();
            let hdr = &mut self.msgs[k].msg_hdr;
            hdr.msg_name = (&mut self.names[k] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = self.iov[first * 3..].as_mut_ptr();
            hdr.msg_iovlen = segs * 3;
            hdr.msg_control = ctrl;
            // SAFETY: CMSG_SPACE is pure arithmetic.
            hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
            hdr.msg_flags = 0;
            // SAFETY: msg_control points at our 32-byte ctrl entry, which holds
            // CMSG_SPACE(2) = 24 bytes; CMSG_FIRSTHDR/CMSG_DATA stay inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                // Segments are ≤ 1300 B here, far below u16::MAX.
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
            }
            first += segs;
        }
        // SAFETY: entries 0..m point at live names, iovecs, control buffers and caller
        // slices (lifetime 'a outlives this call).
        let done = unsafe { crate::sys::send_all(fd, &mut self.msgs[..m])? };
        Ok(self.segments[..done].iter().sum())
    }
}
