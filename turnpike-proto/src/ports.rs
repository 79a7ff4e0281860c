//! A worker's slice of the relay port range.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use rand::Rng;

/// Which ports of this worker's slice are taken (by an allocation, a reservation, or
/// an allocation still waiting for its socket). One bit per port, so even the whole
/// 16-bit range costs 8 KiB.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    used: Vec<bool>,
    in_use: usize,
}

impl PortPool {
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

    pub fn contains(&self, port: u16) -> bool {
        port >= self.first && usize::from(port - self.first) < self.used.len()
    }

    fn slot(&mut self, port: u16) -> Option<&mut bool> {
        let first = self.first;
        port.checked_sub(first)
            .and_then(move |i| self.used.get_mut(usize::from(i)))
    }

    pub fn is_free(&self, port: u16) -> bool {
        self.contains(port) && !self.used[usize::from(port - self.first)]
    }

    /// Take a random free port (random so relayed addresses are hard to guess);
    /// with `even_pair`, an even port whose successor is free too, both taken
    /// (RFC 8656 §7.2 EVEN-PORT with the R bit).
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

    /// Mark a specific port taken; false if it is outside the slice or already taken.
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

    pub fn release(&mut self, port: u16) {
        if let Some(used) = self.slot(port) {
            if *used {
                *used = false;
                self.in_use -= 1;
            }
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use
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

/// A port held by EVEN-PORT's R bit for a later Allocate carrying its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub port: u16,
    pub family: super::addr::Family,
    pub expires: std::time::Instant,
}

/// The relay port range and its reservations, shared by every worker.
///
/// DESIGN.md §3 first gave each worker a disjoint slice of the range. That breaks
/// RESERVATION-TOKEN (RFC 8656 §7.2): the Allocate that redeems a token comes from
/// another 5-tuple, which the kernel may hand to another worker, and that worker must
/// find the reservation and may bind the reserved port. So the pool is shared. It is
/// touched only when an allocation is created or deleted — never per packet — so a
/// mutex costs nothing on the data path.
#[derive(Debug, Clone)]
pub struct RelayPorts {
    shared: std::sync::Arc<std::sync::Mutex<SharedPorts>>,
    /// How many published relayed addresses have been retired so far. A channel to
    /// another allocation of ours remembers the value it last checked against, so the
    /// packet path compares one atomic instead of taking the lock per packet: only
    /// when some relayed address went away since does it look again.
    retired: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug)]
struct SharedPorts {
    pool: PortPool,
    reservations: std::collections::HashMap<u64, Reservation>,
    /// The relayed transport address we advertised for each port of a live allocation
    /// (any worker's), canonical. Two clients of this relay calling each other relay to
    /// relay: each one's peer is the other's relayed address, which the peer policy
    /// refuses as our own address (and, on a loopback or private host address, as
    /// loopback or private). Knowing the exact addresses of live allocations lets the
    /// core tell that legitimate case from a relay loop or a probe of the host.
    relayed: std::collections::HashMap<u16, SocketAddr>,
}

impl RelayPorts {
    pub fn new(range: RangeInclusive<u16>) -> RelayPorts {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(SharedPorts {
            pool: PortPool::new(range),
            reservations: std::collections::HashMap::new(),
            relayed: std::collections::HashMap::new(),
        }));
        RelayPorts {
            shared,
            retired: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedPorts> {
        // Each critical section is a few field updates that leave the pool consistent,
        // so a panic elsewhere while holding it cannot corrupt it: ignore poisoning.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`PortPool::take_random`].
    pub fn take_random(&self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        self.lock().pool.take_random(rng, even, pair)
    }

    /// Free `port`; if it carried a live allocation's relayed address, that address
    /// stops being one of ours (see [`RelayPorts::is_live_relayed`]).
    pub fn release(&self, port: u16) {
        let mut shared = self.lock();
        shared.pool.release(port);
        if shared.relayed.remove(&port).is_some() {
            // Inside the lock, so a reader that saw the old count and then checks
            // `is_live_relayed` sees the removal.
            self.retired
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
    }

    /// See [`RelayPorts::retired`]'s field: a counter that moves whenever a live
    /// allocation's relayed address stops being one.
    #[inline]
    pub fn retired(&self) -> u64 {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
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

    pub fn in_use(&self) -> usize {
        self.lock().pool.in_use()
    }

    /// The whole range this pool hands out.
    pub fn range(&self) -> RangeInclusive<u16> {
        let shared = self.lock();
        let first = shared.pool.first;
        let last = first.saturating_add(shared.pool.used.len().saturating_sub(1) as u16);
        first..=last
    }

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
    pub fn expire(&self, token: u64, now: std::time::Instant) {
        let mut shared = self.lock();
        if let Some(r) = shared.reservations.get(&token).copied() {
            if r.expires <= now {
                shared.reservations.remove(&token);
                shared.pool.release(r.port);
            }
        }
    }
}

impl From<RangeInclusive<u16>> for RelayPorts {
    fn from(range: RangeInclusive<u16>) -> RelayPorts {
        RelayPorts::new(range)
    }
}
