//! The in-kernel ChannelData fast path (opt-in: `server.fast_path_interfaces`).
//!
//! `channel_tc.bpf.c`, a tc ingress program, forwards UDP ChannelData between a client
//! and a channel-bound peer inside the kernel, so such a packet never wakes a worker,
//! never crosses into user space, and is never sent again through a socket (the part
//! of a relayed packet's cost that `benches/send_floor.rs` shows no syscall shape
//! avoids). This module loads that program with aya, attaches it to the configured
//! interfaces, and keeps its two maps equal to what the cores allow: each worker turns
//! its core's [`FastPathUpdate`]s into map entries (`apply`), so user space stays the
//! authority and everything the program does not match reaches the sockets, exactly as
//! without a fast path.
//!
//! Needs CAP_BPF and CAP_NET_ADMIN (root), a kernel with tcx or clsact, and a build
//! that found clang (build.rs). The attachment lives as long as the [`FastPath`]: when
//! the relay exits, the kernel detaches the program and frees its maps.

mod maps;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proto::{ClientId, FastPathUpdate};
use maps::{C2pKey, C2pVal, P2cKey, P2cVal};

/// Why the fast path could not start: the relay refuses to start with it configured
/// rather than run silently without it.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("this turnpike was built without the eBPF fast path (clang and libbpf-dev were not installed at build time)")]
    NotBuilt,
    #[error("cannot load the eBPF fast path (needs root, or CAP_BPF and CAP_NET_ADMIN): {0}")]
    Load(String),
    #[error("cannot attach the eBPF fast path to interface {interface:?}: {reason}")]
    Attach { interface: String, reason: String },
}

/// Totals of what the kernel forwarded, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathCounters {
    pub client_to_peer_packets: u64,
    pub client_to_peer_bytes: u64,
    pub peer_to_client_packets: u64,
    pub peer_to_client_bytes: u64,
    /// Packets that matched an entry past its expiry and went up to the sockets.
    pub expired: u64,
}

/// The loaded, attached program and its maps, shared by all workers.
pub struct FastPath {
    maps: Mutex<maps::Maps>,
    /// Maps `Instant`s to the kernel's CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    clock: (Instant, u64),
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath").finish_non_exhaustive()
    }
}

/// One worker's view of the fast path: the keys it installed per allocation, so that
/// an update can remove what its allocation no longer allows. Owned by the worker (no
/// lock of its own); dropping it — the worker stopping, or unwinding from a panic —
/// removes every entry it installed.
pub struct Routes {
    fast: Arc<FastPath>,
    by_client: HashMap<ClientId, Vec<(C2pKey, P2cKey)>>,
    /// This host's IPv4 addresses and when they were read.
    host: Option<(Instant, Vec<Ipv4Addr>)>,
}

/// How long the list of this host's addresses is trusted before it is read again.
const HOST_ADDRESSES_TTL: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("allocations", &self.by_client.len())
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// Allocations with at least one route in the kernel.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn fast_path(&self) -> &FastPath {
        &self.fast
    }

    fn host_addresses(&mut self) -> &[Ipv4Addr] {
        let fresh = self
            .host
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < HOST_ADDRESSES_TTL);
        if !fresh {
            self.host = Some((Instant::now(), host_addresses()));
        }
        self.host.as_ref().map_or(&[], |(_, list)| &list[..])
    }

    /// Makes the kernel's entries for `update.client` exactly `update.routes`.
    ///
    /// Only what the program can forward is installed: IPv4 on both sides, with a
    /// specific listener address (a wildcard gives the kernel no source address to
    /// write). Anything else stays on the socket path.
    pub fn apply(&mut self, update: &FastPathUpdate) {
        let mut wanted: Vec<(C2pKey, C2pVal, P2cKey, P2cVal)> = Vec::new();
        let client = update.client;
        if let (SocketAddr::V4(remote), SocketAddr::V4(local)) = (client.remote, client.local) {
            if !local.ip().is_unspecified() && !update.routes.is_empty() {
                let host = self.host_addresses().to_vec();
                let is_local = |ip: &Ipv4Addr| ip.is_loopback() || host.contains(ip);
                for route in &update.routes {
                    let (SocketAddr::V4(peer), SocketAddr::V4(relay)) = (route.peer, route.relay)
                    else {
                        continue;
                    };
                    let expires_ns = self.fast.kernel_ns(route.expires);
                    wanted.push(maps::entries(
                        (remote, is_local(remote.ip())),
                        local,
                        route.channel.0,
                        relay,
                        (peer, is_local(peer.ip())),
                        expires_ns,
                    ));
                }
            }
        }
        let mut maps = self.fast.lock();
        let old = self.by_client.remove(&client).unwrap_or_default();
        for (c2p, p2c) in &old {
            if !wanted.iter().any(|w| w.0 == *c2p) {
                maps.remove_c2p(c2p);
            }
            if !wanted.iter().any(|w| w.2 == *p2c) {
                maps.remove_p2c(p2c);
            }
        }
        let mut now_installed = Vec::with_capacity(wanted.len());
        for (c2p, c2p_val, p2c, p2c_val) in wanted {
            // A full map leaves the route on the socket path.
            if maps.insert(&c2p, &c2p_val, &p2c, &p2c_val) {
                now_installed.push((c2p, p2c));
            }
        }
        if !now_installed.is_empty() {
            self.by_client.insert(client, now_installed);
        }
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        let mut maps = self.fast.lock();
        for (_, keys) in self.by_client.drain() {
            for (c2p, p2c) in keys {
                maps.remove_c2p(&c2p);
                maps.remove_p2c(&p2c);
            }
        }
    }
}

impl FastPath {
    /// Loads the program and attaches it to the ingress of every interface named.
    pub fn load(interfaces: &[String]) -> Result<FastPath, FastPathError> {
        let maps = maps::Maps::load(interfaces)?;
        Ok(FastPath {
            maps: Mutex::new(maps),
            clock: (Instant::now(), monotonic_ns()),
        })
    }

    /// A worker's handle for installing routes (see [`Routes`]).
    pub fn routes(self: &Arc<Self>) -> Routes {
        Routes {
            fast: self.clone(),
            by_client: HashMap::new(),
            host: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, maps::Maps> {
        // A worker that panicked while holding the lock left the maps consistent
        // (each call is one syscall): carry on.
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn kernel_ns(&self, at: Instant) -> u64 {
        let (anchor, ns) = self.clock;
        match at.checked_duration_since(anchor) {
            Some(d) => ns.saturating_add(d.as_nanos() as u64),
            None => ns.saturating_sub(anchor.duration_since(at).as_nanos() as u64),
        }
    }

    /// What the kernel forwarded so far.
    pub fn counters(&self) -> FastPathCounters {
        self.lock().counters()
    }
}

/// This host's IPv4 addresses (in the calling thread's network namespace), read once
/// per route change, never per packet. Not a bind test: with `ip_nonlocal_bind` any
/// address binds, and a remote destination sent to loopback would be lost.
fn host_addresses() -> Vec<Ipv4Addr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list
            .into_iter()
            .filter_map(|i| match i.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .collect(),
        Err(e) => {
            // Unknown: treat every destination as remote (routed, or the socket path).
            tracing::warn!("fast path: cannot list this host's addresses: {e}");
            Vec::new()
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
