//! The program's maps as Rust types (layouts shared with `channel_tc.bpf.c`), and the
//! aya calls that load, attach and update them.

use std::net::SocketAddrV4;

use aya::maps::{HashMap, MapData, PerCpuArray};
#[cfg(turnpike_bpf)]
use aya::programs::{tc, SchedClassifier, TcAttachType};
use aya::{Ebpf, Pod};

use super::{FastPathCounters, FastPathError};

// Addresses and ports in network byte order (as the program reads them off the wire),
// channel numbers in host order; every struct is padded explicitly to match C.

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct C2pKey {
    client_ip: u32,
    server_ip: u32,
    client_port: u16,
    server_port: u16,
    channel: u16,
    pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct C2pVal {
    expires_ns: u64,
    relay_ip: u32,
    peer_ip: u32,
    relay_port: u16,
    peer_port: u16,
    flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct P2cKey {
    peer_ip: u32,
    relay_ip: u32,
    peer_port: u16,
    relay_port: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct P2cVal {
    expires_ns: u64,
    client_ip: u32,
    server_ip: u32,
    client_port: u16,
    server_port: u16,
    channel: u16,
    flags: u16,
}

/// `flags`: the destination is an address of this host (the program then delivers
/// through loopback instead of looking up a route).
const DEST_LOCAL: u16 = 1;
/// `flags`: the source is an address of this host, so its packets must come in on
/// loopback (from anywhere else they are spoofed).
const SRC_LOCAL: u16 = 2;

// SAFETY: plain `repr(C)` integers with explicit padding fields: every bit pattern is
// valid and no byte is uninitialised.
unsafe impl Pod for C2pKey {}
unsafe impl Pod for C2pVal {}
unsafe impl Pod for P2cKey {}
unsafe impl Pod for P2cVal {}

/// An IPv4 address as the wire has it, read as a native u32 (what the program compares).
fn wire_ip(addr: &SocketAddrV4) -> u32 {
    u32::from_ne_bytes(addr.ip().octets())
}

fn wire_port(addr: &SocketAddrV4) -> u16 {
    addr.port().to_be()
}

/// Both directions' entries for one channel: client (`remote` → our `local`
/// listener) ↔ peer via the relay address `relay`; `*_is_local`: that side is an
/// address of this host.
pub(super) fn entries(
    (remote, client_is_local): (SocketAddrV4, bool),
    local: SocketAddrV4,
    channel: u16,
    relay: SocketAddrV4,
    (peer, peer_is_local): (SocketAddrV4, bool),
    expires_ns: u64,
) -> (C2pKey, C2pVal, P2cKey, P2cVal) {
    let flags = |dest_local: bool, src_local: bool| {
        (if dest_local { DEST_LOCAL } else { 0 }) | (if src_local { SRC_LOCAL } else { 0 })
    };
    let c2p = C2pKey {
        client_ip: wire_ip(&remote),
        server_ip: wire_ip(&local),
        client_port: wire_port(&remote),
        server_port: wire_port(&local),
        channel,
        pad: 0,
    };
    let c2p_val = C2pVal {
        expires_ns,
        relay_ip: wire_ip(&relay),
        peer_ip: wire_ip(&peer),
        relay_port: wire_port(&relay),
        peer_port: wire_port(&peer),
        flags: u32::from(flags(peer_is_local, client_is_local)),
    };
    let p2c = P2cKey {
        peer_ip: wire_ip(&peer),
        relay_ip: wire_ip(&relay),
        peer_port: wire_port(&peer),
        relay_port: wire_port(&relay),
    };
    let p2c_val = P2cVal {
        expires_ns,
        client_ip: wire_ip(&remote),
        server_ip: wire_ip(&local),
        client_port: wire_port(&remote),
        server_port: wire_port(&local),
        channel,
        flags: flags(client_is_local, peer_is_local),
    };
    (c2p, c2p_val, p2c, p2c_val)
}

/// Counter slots of the STATS map, as the program's enum numbers them.
const STAT_C2P_PACKETS: u32 = 0;
const STAT_C2P_BYTES: u32 = 1;
const STAT_P2C_PACKETS: u32 = 2;
const STAT_P2C_BYTES: u32 = 3;
const STAT_EXPIRED: u32 = 4;

/// The program's name in the object (its function name).
#[cfg(turnpike_bpf)]
const PROGRAM: &str = "turnpike_channel_tc";

/// The program parses Ethernet framing: refuse interfaces without it (tun, WireGuard,
/// PPP), where it would read the wrong bytes. Loopback has Ethernet-shaped headers.
#[cfg(turnpike_bpf)]
fn check_link_type(interface: &str) -> Result<(), FastPathError> {
    const ARPHRD_ETHER: u16 = 1;
    const ARPHRD_LOOPBACK: u16 = 772;
    let fail = |reason: String| FastPathError::Attach {
        interface: interface.to_string(),
        reason,
    };
    match link_type(interface) {
        Ok(ARPHRD_ETHER | ARPHRD_LOOPBACK) => Ok(()),
        Ok(other) => Err(fail(format!(
            "link type {other} is not Ethernet or loopback"
        ))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The interface's ARPHRD_* type, from SIOCGIFHWADDR on a socket of the calling
/// thread's network namespace (sysfs shows the mount's namespace, which may differ).
#[cfg(turnpike_bpf)]
fn link_type(interface: &str) -> std::io::Result<u16> {
    use std::os::fd::AsRawFd;
    /// `struct ifreq`: the name, then a union whose `ifru_hwaddr.sa_family` comes first.
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        family: u16,
        rest: [u8; 22],
    }
    let bytes = interface.as_bytes();
    if bytes.len() >= 16 {
        return Err(std::io::Error::other("interface name too long"));
    }
    let mut req = IfReq {
        name: [0; 16],
        family: 0,
        rest: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    // SAFETY: SIOCGIFHWADDR reads the name from and writes a sockaddr into `req`, a
    // struct ifreq-sized buffer we own.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(req.family)
}

#[cfg(turnpike_bpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/channel_tc.bpf.o"));

pub(super) struct Maps {
    c2p: HashMap<MapData, C2pKey, C2pVal>,
    p2c: HashMap<MapData, P2cKey, P2cVal>,
    stats: PerCpuArray<MapData, u64>,
    /// Owns the program and its attachments: dropping it detaches them.
    _ebpf: Ebpf,
}

impl Maps {
    #[cfg(not(turnpike_bpf))]
    pub(super) fn load(_interfaces: &[String]) -> Result<Maps, FastPathError> {
        Err(FastPathError::NotBuilt)
    }

    #[cfg(turnpike_bpf)]
    pub(super) fn load(interfaces: &[String]) -> Result<Maps, FastPathError> {
        let load = |e: &dyn std::fmt::Display| FastPathError::Load(e.to_string());
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| load(&e))?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| load(&format!("program {PROGRAM} missing from the object")))?
            .try_into()
            .map_err(|e| load(&e))?;
        program.load().map_err(|e| load(&e))?;
        for interface in interfaces {
            check_link_type(interface)?;
            // Kernels before 6.6 attach through a clsact qdisc; with tcx (6.6+) this is
            // unneeded, and "exists" is fine either way.
            let _ = tc::qdisc_add_clsact(interface);
            // A clsact filter (before 6.6) outlives a relay that was killed: remove one
            // left behind, so it cannot forward by routes nobody maintains. (A tcx link
            // dies with its process.) "None there" is the usual answer.
            let _ = tc::qdisc_detach_program(interface, TcAttachType::Ingress, PROGRAM);
            program
                .attach(interface, TcAttachType::Ingress)
                .map_err(|e| FastPathError::Attach {
                    interface: interface.clone(),
                    reason: e.to_string(),
                })?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| load(&format!("map {name} missing from the object")))
        };
        let c2p = HashMap::try_from(take("C2P")?).map_err(|e| load(&e))?;
        let p2c = HashMap::try_from(take("P2C")?).map_err(|e| load(&e))?;
        let stats = PerCpuArray::try_from(take("STATS")?).map_err(|e| load(&e))?;
        Ok(Maps {
            c2p,
            p2c,
            stats,
            _ebpf: ebpf,
        })
    }

    /// Installs both directions, or neither (false when the kernel refuses, e.g. full).
    pub(super) fn insert(
        &mut self,
        c2p: &C2pKey,
        c2p_val: &C2pVal,
        p2c: &P2cKey,
        p2c_val: &P2cVal,
    ) -> bool {
        if let Err(e) = self.c2p.insert(c2p, c2p_val, 0) {
            tracing::warn!("fast path: cannot install a client route: {e}");
            // A replaced entry may have gone with the failure: drop both halves.
            self.remove_c2p(c2p);
            self.remove_p2c(p2c);
            return false;
        }
        if let Err(e) = self.p2c.insert(p2c, p2c_val, 0) {
            tracing::warn!("fast path: cannot install a peer route: {e}");
            // Neither half stays: an entry nobody tracks would never be removed.
            self.remove_c2p(c2p);
            self.remove_p2c(p2c);
            return false;
        }
        true
    }

    /// Removing an entry that is not there is not an error (it was never installed).
    pub(super) fn remove_c2p(&mut self, key: &C2pKey) {
        let _ = self.c2p.remove(key);
    }

    pub(super) fn remove_p2c(&mut self, key: &P2cKey) {
        let _ = self.p2c.remove(key);
    }

    pub(super) fn counters(&self) -> FastPathCounters {
        let sum = |slot: u32| -> u64 {
            self.stats
                .get(&slot, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        FastPathCounters {
            client_to_peer_packets: sum(STAT_C2P_PACKETS),
            client_to_peer_bytes: sum(STAT_C2P_BYTES),
            peer_to_client_packets: sum(STAT_P2C_PACKETS),
            peer_to_client_bytes: sum(STAT_P2C_BYTES),
            expired: sum(STAT_EXPIRED),
        }
    }
}
