//! Keeping a QUIC connection on the worker that owns it when the client's address
//! changes.
//!
//! Every worker binds the QUIC port with `SO_REUSEPORT`, and the kernel spreads
//! datagrams over the group by a hash of the 4-tuple. Path migration (RFC 9000 §9)
//! changes the 4-tuple, so the hash would send a migrated connection's packets to a
//! worker that does not know it (and would answer with a stateless reset). So:
//!
//! - every connection ID a worker issues starts with the worker's index
//!   ([`WorkerCids`]), and a client addresses every packet after the handshake to one
//!   of those IDs (short header: flags byte, then the destination connection ID);
//! - a classic BPF program on the reuseport group ([`attach_steering`]) reads that byte
//!   and returns it as the index of the socket to deliver to — the workers bind in
//!   order, so socket `i` of the group is worker `i`'s. Long-header packets (the
//!   handshake, whose first destination ID the client picked at random) get an index
//!   past the end, and the kernel falls back to the 4-tuple hash, which is stable
//!   while the handshake runs.
//!
//! Classic BPF suffices (five instructions, no maps, no eBPF loader) and needs no
//! privilege beyond owning the socket.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Connection ID length: the worker byte and 7 random bytes (56 bits against guessing).
pub const CID_LEN: usize = 8;

/// Issues connection IDs whose first byte is this worker's index.
pub struct WorkerCids {
    worker: u8,
    rng: StdRng,
}

impl WorkerCids {
    /// IDs for worker `worker` (the relay has at most 256 workers with QUIC).
    pub fn new(worker: u8) -> WorkerCids {
        WorkerCids {
            worker,
            rng: StdRng::from_entropy(),
        }
    }
}

impl ConnectionIdGenerator for WorkerCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.worker;
        self.rng.fill_bytes(&mut bytes[1..]);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Attaches the steering program to the reuseport group of `sock` (any member).
pub fn attach_steering(sock: &impl AsRawFd) -> io::Result<()> {
    // The program sees the UDP payload (the kernel pulls the UDP header first).
    let code = |c: u32| c as u16;
    let mut filter = [
        // A = payload[0], the QUIC flags byte.
        libc::sock_filter {
            code: code(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS),
            jt: 0,
            jf: 0,
            k: 0,
        },
        // Long header (0x80 set): jump to the fallback.
        libc::sock_filter {
            code: code(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K),
            jt: 2,
            jf: 0,
            k: 0x80,
        },
        // A = payload[1], the first byte of the destination connection ID.
        libc::sock_filter {
            code: code(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS),
            jt: 0,
            jf: 0,
            k: 1,
        },
        libc::sock_filter {
            code: code(libc::BPF_RET | libc::BPF_A),
            jt: 0,
            jf: 0,
            k: 0,
        },
        // Out of range: the kernel uses the 4-tuple hash.
        libc::sock_filter {
            code: code(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `program` points at `filter`, both alive for the call; the kernel copies
    // the program. The option takes a `sock_fprog` of exactly this size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&program as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};

    fn reuseport_socket(addr: SocketAddr) -> UdpSocket {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.into()
    }

    #[test]
    fn short_headers_go_to_the_worker_named_in_the_connection_id() {
        let first = reuseport_socket("127.0.0.1:0".parse().unwrap());
        let addr = first.local_addr().unwrap();
        let group = [first, reuseport_socket(addr), reuseport_socket(addr)];
        attach_steering(&group[0]).unwrap();
        let mut buf = [0u8; 64];
        // From many source ports (many 4-tuple hashes), each packet lands on the
        // socket its second byte names.
        for round in 0..20u8 {
            let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
            let worker = round % 3;
            sender.send_to(&[0x40, worker, 0xAA, round], addr).unwrap();
            let (n, _) = group[usize::from(worker)].recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[0x40, worker, 0xAA, round]);
        }
        // Long headers are spread by hash: each arrives on some socket of the group.
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&[0xC0, 7, 7], addr).unwrap();
        let got = group
            .iter()
            .filter(|s| s.recv_from(&mut buf).is_ok())
            .count();
        assert_eq!(got, 1);
    }

    #[test]
    fn connection_ids_carry_the_worker() {
        let mut cids = WorkerCids::new(5);
        let a = cids.generate_cid();
        let b = cids.generate_cid();
        assert_eq!((a.len(), a[0], b[0]), (CID_LEN, 5, 5));
        assert_ne!(a, b);
    }
}
