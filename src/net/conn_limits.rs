//! Limits on TCP/TLS connections, shared by every worker: in total, per source, and how
//! long a connection may stay without signing in.
//!
//! The kernel spreads one source's connections over the workers (`SO_REUSEPORT` hashes
//! the 4-tuple), so the counts are shared: one atomic for the total, and a fixed array
//! of atomic counters indexed by a keyed hash of the source (an IPv4 address or an IPv6
//! /64, as the sign-in throttle counts them). The array never grows, whatever a flood of
//! sources does, and its random key keeps anyone from aiming sources at one counter;
//! two sources that share a counter share their cap, which with [`SLOTS`] counters is
//! rare and only ever makes the cap stricter. Counters move at accept and close, never
//! per packet.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Per-source counters (a power of two); 256 KiB when the per-source cap is on.
const SLOTS: usize = 1 << 16;

/// The limits, as the shell is configured with them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnLimitsConfig {
    /// Open TCP/TLS connections in all; 0 = no limit.
    pub max_connections: u32,
    /// Open TCP/TLS connections from one source; 0 = no limit.
    pub max_per_source: u32,
    /// A connection that has not passed authentication this long after it was
    /// accepted is closed; `None` = never.
    pub unauthenticated_timeout: Option<Duration>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Total,
    PerSource,
}

/// A connection counted against the limits; give it back with [`ConnLimits::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    /// The per-source counter it holds, if that cap is on.
    slot: Option<usize>,
}

/// The shared counters; see the module docs.
pub(crate) struct ConnLimits {
    config: ConnLimitsConfig,
    total: AtomicU32,
    per_source: Box<[AtomicU32]>,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for ConnLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLimits")
            .field("config", &self.config)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl ConnLimits {
    pub(crate) fn new(config: ConnLimitsConfig) -> ConnLimits {
        let slots = if config.max_per_source == 0 { 0 } else { SLOTS };
        ConnLimits {
            config,
            total: AtomicU32::new(0),
            per_source: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            // Random keys, drawn once per process: the SipHash behind it is keyed.
            hasher: std::hash::RandomState::new(),
        }
    }

    pub(crate) fn unauthenticated_timeout(&self) -> Option<Duration> {
        self.config.unauthenticated_timeout
    }

    /// Count a new connection from `source`, or refuse it when a cap is reached.
    pub(crate) fn acquire(&self, source: IpAddr) -> Result<Counted, Refused> {
        if !take(&self.total, self.config.max_connections) {
            return Err(Refused::Total);
        }
        if self.per_source.is_empty() {
            return Ok(Counted { slot: None });
        }
        let slot = self.slot(source);
        // `slot` < SLOTS = per_source.len().
        if !take(&self.per_source[slot], self.config.max_per_source) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::PerSource);
        }
        Ok(Counted { slot: Some(slot) })
    }

    /// A counted connection closed.
    pub(crate) fn release(&self, counted: Counted) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(counter) = counted.slot.and_then(|s| self.per_source.get(s)) {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Connections open now, in all.
    #[cfg(test)]
    pub(crate) fn open(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    fn slot(&self, source: IpAddr) -> usize {
        let hash = match source {
            IpAddr::V4(ip) => self.hasher.hash_one(ip.octets()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => self.hasher.hash_one(v4.octets()),
                // One subscriber holds a whole /64.
                None => self.hasher.hash_one(&ip.octets()[..8]),
            },
        };
        (hash as usize) & (SLOTS - 1)
    }
}

/// Adds one to `counter` unless it is at `cap` (0 = no cap).
fn take(counter: &AtomicU32, cap: u32) -> bool {
    if cap == 0 {
        counter.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_source_and_in_total() {
        let limits = ConnLimits::new(ConnLimitsConfig {
            max_connections: 5,
            max_per_source: 2,
            unauthenticated_timeout: None,
        });
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        let first = limits.acquire(a).unwrap();
        limits.acquire(a_mapped).unwrap();
        assert_eq!(limits.acquire(a), Err(Refused::PerSource));
        // Another host of the same IPv6 /64 is the same source; another /64 is not.
        let v6: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let v6_same: IpAddr = "2001:db8:0:1::2".parse().unwrap();
        limits.acquire(v6).unwrap();
        limits.acquire(v6_same).unwrap();
        assert_eq!(limits.acquire(v6_same), Err(Refused::PerSource));
        limits.acquire("2001:db8:0:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            limits.acquire("203.0.113.1".parse().unwrap()),
            Err(Refused::Total)
        );
        assert_eq!(limits.open(), 5);
        limits.release(first);
        limits.acquire(a).unwrap();
    }

    #[test]
    fn no_caps_counts_without_refusing() {
        let limits = ConnLimits::new(ConnLimitsConfig::default());
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| limits.acquire(a).unwrap()).collect();
        assert_eq!(limits.open(), 1000);
        for c in held {
            limits.release(c);
        }
        assert_eq!(limits.open(), 0);
    }
}
