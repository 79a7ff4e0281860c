//! Sends of one batch across many sockets in one syscall, through io_uring.
//!
//! A batch from a client-facing listener fans out over many relay sockets (one per
//! allocation), so `sendmmsg`, which takes one socket, cannot batch it: the direct path
//! makes one `sendmsg` per run. Here every run of the batch becomes an
//! `IORING_OP_SENDMSG` entry, and one `io_uring_enter` submits them all and collects
//! their results.
//!
//! Each entry carries `MSG_DONTWAIT`, so a full socket buffer completes at once with
//! `EAGAIN` (a drop, as with a direct send) instead of being parked inside the kernel:
//! every entry has completed when `flush` returns, so the receive slots its iovecs point
//! into can be reused. Everything an entry points to lives in `ops`, allocated once; a
//! flush allocates nothing.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

use super::batch::{set_gso_control, MAX_GSO_SEGMENTS};

/// Runs queued before a flush is forced (a batch rarely has more).
const CAPACITY: usize = 64;

/// One queued `sendmsg`: its header and everything the header points to.
struct Op {
    hdr: libc::msghdr,
    addr: libc::sockaddr_storage,
    control: [u64; 4],
    iovs: [libc::iovec; MAX_GSO_SEGMENTS],
    fd: RawFd,
    dst: SocketAddr,
    segment: Option<u16>,
}

impl Op {
    fn new() -> Op {
        Op {
            // SAFETY: all-zero is a valid value of these plain C structs; `push` fills
            // them in before any is handed to the kernel.
            hdr: unsafe { std::mem::zeroed() },
            addr: unsafe { std::mem::zeroed() },
            control: [0; 4],
            iovs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_GSO_SEGMENTS],
            fd: -1,
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            segment: None,
        }
    }
}

/// What a flush reports for each run: where it went, its segment size (`None`: one
/// datagram), its number of segments, and the result (bytes sent).
pub(crate) struct Sent {
    pub(crate) fd: RawFd,
    pub(crate) dst: SocketAddr,
    pub(crate) segment: Option<u16>,
    pub(crate) segments: usize,
    pub(crate) result: io::Result<usize>,
}

pub(crate) struct UringSends {
    ring: IoUring,
    ops: Box<[Op]>,
    len: usize,
}

impl UringSends {
    /// A ring for one worker; Err where io_uring is unavailable (old kernel, disabled
    /// by `kernel.io_uring_disabled`, refused by a container's seccomp profile).
    pub(crate) fn new() -> io::Result<UringSends> {
        let ring = IoUring::builder()
            // Only this worker's thread submits; completions need no interrupt.
            .setup_single_issuer()
            .setup_coop_taskrun()
            // An entry that fails does not stop the ones behind it.
            .setup_submit_all()
            .build(CAPACITY as u32)?;
        let ops = (0..CAPACITY).map(|_| Op::new()).collect();
        Ok(UringSends { ring, ops, len: 0 })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == CAPACITY
    }

    /// Queues one run (`segment`: UDP GSO segment size). The iovecs' memory must stay
    /// valid until the next [`flush`](Self::flush); the caller flushes when full.
    pub(crate) fn push(
        &mut self,
        fd: RawFd,
        dst: SocketAddr,
        iovs: &[IoSlice<'_>],
        segment: Option<u16>,
    ) {
        let Some(op) = self.ops.get_mut(self.len) else {
            return;
        };
        let addr = socket2::SockAddr::from(dst);
        // SAFETY: SockAddr holds at most a sockaddr_storage; we copy its `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.as_ptr().cast::<u8>(),
                (&mut op.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                addr.len() as usize,
            );
        }
        let count = iovs.len().min(MAX_GSO_SEGMENTS);
        for (slot, iov) in op.iovs.iter_mut().zip(iovs) {
            // IoSlice is ABI-compatible with iovec.
            *slot = libc::iovec {
                iov_base: iov.as_ptr() as *mut libc::c_void,
                iov_len: iov.len(),
            };
        }
        // SAFETY: all-zero is a valid msghdr.
        op.hdr = unsafe { std::mem::zeroed() };
        op.hdr.msg_name = (&mut op.addr as *mut libc::sockaddr_storage).cast();
        op.hdr.msg_namelen = addr.len();
        op.hdr.msg_iov = op.iovs.as_mut_ptr();
        op.hdr.msg_iovlen = count;
        if let Some(size) = segment {
            set_gso_control(&mut op.hdr, &mut op.control, size);
        }
        op.fd = fd;
        op.dst = dst;
        op.segment = segment;
        self.len += 1;
    }

    /// Submits every queued run with one `io_uring_enter`, waits for all of them, and
    /// reports each outcome (in no particular order).
    pub(crate) fn flush(&mut self, mut report: impl FnMut(&[IoSlice<'_>], Sent)) {
        let queued = self.len;
        if queued == 0 {
            return;
        }
        self.len = 0;
        let mut submitted = 0;
        {
            let mut sq = self.ring.submission();
            for (i, op) in self.ops.iter().take(queued).enumerate() {
                let entry = if op.segment.is_none() && op.hdr.msg_iovlen == 1 {
                    // One datagram from one buffer: IORING_OP_SEND with an address
                    // skips the msghdr copy.
                    opcode::Send::new(
                        types::Fd(op.fd),
                        op.iovs[0].iov_base as *const u8,
                        op.iovs[0].iov_len as u32,
                    )
                    .dest_addr(op.hdr.msg_name as *const libc::sockaddr)
                    .dest_addr_len(op.hdr.msg_namelen)
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .user_data(i as u64)
                } else {
                    opcode::SendMsg::new(types::Fd(op.fd), &op.hdr)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build()
                        .user_data(i as u64)
                };
                // SAFETY: the entry points into `self.ops`, which is neither moved nor
                // touched until every entry has completed below.
                if unsafe { sq.push(&entry) }.is_err() {
                    break; // cannot happen: the ring has CAPACITY entries
                }
                submitted += 1;
            }
        }
        let mut reaped = 0;
        while reaped < submitted {
            if let Err(e) = self.ring.submit_and_wait(submitted - reaped) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The kernel refused the ring itself; entries already submitted still
                // complete, so wait for them with a plain wait before giving up.
                tracing::warn!("io_uring submit failed: {e}");
                if self.ring.submitter().submit_and_wait(1).is_err() {
                    break;
                }
            }
            for cqe in self.ring.completion() {
                reaped += 1;
                let Some(op) = self.ops.get(cqe.user_data() as usize) else {
                    continue;
                };
                let res = cqe.result();
                let result = if res >= 0 {
                    Ok(res as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                let count = op.hdr.msg_iovlen;
                let iovs: &[libc::iovec] = op.iovs.get(..count).unwrap_or_default();
                // SAFETY: IoSlice is ABI-compatible with iovec, and these point into
                // memory the caller keeps valid until this flush returns.
                let slices = unsafe {
                    std::slice::from_raw_parts(iovs.as_ptr().cast::<IoSlice<'_>>(), iovs.len())
                };
                report(
                    slices,
                    Sent {
                        fd: op.fd,
                        dst: op.dst,
                        segment: op.segment,
                        segments: count,
                        result,
                    },
                );
            }
        }
    }
}
