//! The relay port range: which ports are taken, EVEN-PORT reservations, and the relayed
//! addresses of live allocations. One [`RelayPorts`] serves every worker of a relay,
//! inside [`SharedPool`](crate::shared::SharedPool) (see [`crate::shared`] for why).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rand::Rng;

use crate::addr::Family;

/// Which ports of the range are taken (by an allocation, a reservation, or an
/// allocation still waiting for its socket). One `bool` per port: the whole 16-bit
/// range costs 64 KiB, and a lookup is an index.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    used: Vec<bool>,
    in_use: usize,
}

impl PortPool {
    /// A pool of every port in `range`, all free (an empty range hands out nothing).
    pub fn new(range: RangeInclusive<u16>) -> PortPool {
        let (first, last) = (*range.start(), *range.end());
        let len = if last >= first {
            usize::from(last - first) + 1
        } else {
            0
        };
        PortPool {
            first,
            used: vec![false; len],
            in_use: 0,
        }
    }

    /// Is `port` in the pool's range?
    pub fn contains(&self, port: u16) -> bool {
        port >= self.first && usize::from(port - self.first) < self.used.len()
    }

    fn slot(&mut self, port: u16) -> Option<&mut bool> {
        let first = self.first;
        port.checked_sub(first)
            .and_then(move |i| self.used.get_mut(usize::from(i)))
    }

    /// Is `port` in the range and not taken?
    pub fn is_free(&self, port: u16) -> bool {
        port.checked_sub(self.first)
            .and_then(|i| self.used.get(usize::from(i)))
            .is_some_and(|used| !used)
    }

    /// Take a random free port (random so relayed addresses are hard to guess); with
    /// `even`, an even port; with `pair`, an even port whose successor is free too, both
    /// taken (RFC 8656 §7.2 EVEN-PORT with the R bit).
    pub fn take_random(&mut self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        let len = self.used.len();
        if len == 0 {
            return None;
        }
        let start = rng.gen_range(0..len);
        for i in 0..len {
            let port = self.first as usize + (start + i) % len;
            let port = port as u16;
            if (even || pair) && !port.is_multiple_of(2) {
                continue;
            }
            if !self.is_free(port) {
                continue;
            }
            if pair {
                let Some(next) = port.checked_add(1) else {
                    continue;
                };
                if !self.is_free(next) {
                    continue;
                }
                self.take(next);
            }
            self.take(port);
            return Some(port);
        }
        None
    }

    /// Mark a specific port taken; false if it is outside the range or already taken.
    pub fn take(&mut self, port: u16) -> bool {
        match self.slot(port) {
            Some(used) if !*used => {
                *used = true;
                self.in_use += 1;
                true
            }
            _ => false,
        }
    }

    /// Mark `port` free (nothing happens if it was not taken).
    pub fn release(&mut self, port: u16) {
        if let Some(used) = self.slot(port) {
            if *used {
                *used = false;
                self.in_use -= 1;
            }
        }
    }

    /// How many ports are taken.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// The range this pool hands out.
    pub fn range(&self) -> RangeInclusive<u16> {
        let last = self
            .first
            .saturating_add(self.used.len().saturating_sub(1) as u16);
        self.first..=last
    }
}

/// A port held by EVEN-PORT's R bit for a later Allocate carrying its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The reserved port (the odd successor of the allocation's even port).
    pub port: u16,
    /// The address family of the allocation that reserved it.
    pub family: Family,
    /// When the reservation lapses and the port is freed (RFC 8656 §7.2: about 30 s).
    pub expires: Instant,
}

/// The relay port range and its reservations, for every worker of a relay. It is
/// touched when an allocation, a reservation or a relay-to-relay permission is made or
/// freed — never per packet — so a mutex costs nothing on the data path; the one value
/// the packet path reads, [`RelayPorts::retired`], is an atomic.
#[derive(Debug)]
pub struct RelayPorts {
    state: Mutex<PortState>,
    /// How many published relayed addresses have been retired so far. A channel to
    /// another allocation of ours remembers the value it last checked against, so the
    /// packet path compares one atomic instead of taking the lock per packet: only
    /// when some relayed address went away since does it look again.
    retired: AtomicU64,
}

#[derive(Debug)]
struct PortState {
    pool: PortPool,
    reservations: HashMap<u64, Reservation>,
    /// The relayed transport address we advertised for each port of a live allocation
    /// (any worker's), canonical: see [`crate::shared`] for why it is kept.
    relayed: HashMap<u16, SocketAddr>,
}

impl RelayPorts {
    /// Every port of `range` free, no reservations, no live allocations.
    pub fn new(range: RangeInclusive<u16>) -> RelayPorts {
        RelayPorts {
            state: Mutex::new(PortState {
                pool: PortPool::new(range),
                reservations: HashMap::new(),
                relayed: HashMap::new(),
            }),
            retired: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PortState> {
        // Each critical section is a few field updates that leave the pool consistent,
        // so a panic elsewhere while holding it cannot corrupt it: ignore poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`PortPool::take_random`].
    pub fn take_random(&self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        self.lock().pool.take_random(rng, even, pair)
    }

    /// Free `port`; if it carried a live allocation's relayed address, that address
    /// stops being one of ours (see [`RelayPorts::is_live_relayed`]).
    pub fn release(&self, port: u16) {
        let mut state = self.lock();
        state.pool.release(port);
        if state.relayed.remove(&port).is_some() {
            // Inside the lock, so a reader that saw the old count and then checks
            // `is_live_relayed` sees the removal.
            self.retired.fetch_add(1, Ordering::Release);
        }
    }

    /// See the `retired` field: a counter that moves whenever a live allocation's
    /// relayed address stops being one.
    #[inline]
    pub fn retired(&self) -> u64 {
        self.retired.load(Ordering::Acquire)
    }

    /// Record that a live allocation was told `advertised` (XOR-RELAYED-ADDRESS) for
    /// its relay socket on `advertised.port()`; forgotten when that port is released.
    pub fn publish_relayed(&self, advertised: SocketAddr) {
        let canonical = SocketAddr::new(advertised.ip().to_canonical(), advertised.port());
        self.lock().relayed.insert(advertised.port(), canonical);
    }

    /// Is `peer` exactly the relayed address of a live allocation of this relay (on any
    /// worker)? IPv4-mapped IPv6 forms count as their IPv4 address.
    pub fn is_live_relayed(&self, peer: SocketAddr) -> bool {
        let canonical = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        self.lock().relayed.get(&peer.port()) == Some(&canonical)
    }

    /// How many ports are taken.
    pub fn in_use(&self) -> usize {
        self.lock().pool.in_use()
    }

    /// The whole range this pool hands out.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.lock().pool.range()
    }

    /// Is `port` in the range and not taken?
    pub fn is_free(&self, port: u16) -> bool {
        self.lock().pool.is_free(port)
    }

    /// Remember a reservation; its port must already be taken.
    pub fn reserve(&self, token: u64, reservation: Reservation) {
        self.lock().reservations.insert(token, reservation);
    }

    /// Redeem a token: the reservation leaves the table, its port stays taken.
    pub fn claim(&self, token: u64) -> Option<Reservation> {
        self.lock().reservations.remove(&token)
    }

    /// Drop the reservation if it has lapsed by `now`, freeing its port.
    pub fn expire(&self, token: u64, now: Instant) {
        let mut state = self.lock();
        if let Some(r) = state.reservations.get(&token).copied() {
            if r.expires <= now {
                state.reservations.remove(&token);
                state.pool.release(r.port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exhausts_then_frees() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut pool = PortPool::new(50000..=50003);
        let mut got: Vec<u16> = (0..4)
            .map(|_| pool.take_random(&mut rng, false, false).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, vec![50000, 50001, 50002, 50003]);
        assert_eq!(pool.take_random(&mut rng, false, false), None);
        pool.release(50002);
        assert_eq!(pool.take_random(&mut rng, false, false), Some(50002));
    }

    #[test]
    fn even_pairs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut pool = PortPool::new(50001..=50004);
        let p = pool.take_random(&mut rng, true, true).unwrap();
        assert_eq!(p, 50002);
        assert!(!pool.is_free(50003));
        assert_eq!(pool.take_random(&mut rng, true, true), None);
        assert_eq!(pool.take_random(&mut rng, true, false), Some(50004));
    }
}
