//! Bandwidth caps on relayed payload, in bits per second: per allocation, per user
//! (across all its allocations, on every worker) and for the whole relay. Each
//! direction (to the peer, to the client) is capped on its own, as a link's capacity
//! is; the payload is what is counted (not the ChannelData or STUN framing).
//!
//! Every cap is a token bucket in its GCRA form (the "virtual scheduling" of ITU-T
//! I.371): one number, the theoretical arrival time `tat`, the time at which the
//! bucket would be empty again. A packet of `n` bytes conforms when `tat` is no more
//! than [`BURST`] ahead of now, and then moves `tat` to `max(tat, now) + n × 8 / rate`.
//! Over the long run the cap is met exactly, a burst of up to [`BURST`] at full
//! cap is let through, and any single packet, however large, passes once the bucket
//! has drained.
//!
//! One number per bucket is what lets the shared buckets go without a lock: a user's
//! allocations and the relay's traffic are spread over workers by the kernel's hash,
//! so the per-user and total buckets are one `AtomicU64` each, moved by a
//! compare-and-swap per packet. Splitting a cap into per-worker shares would need no
//! shared cache line, but would cap a user whose allocations happen to sit on one
//! worker at a fraction of their due, and a relay whose load is uneven below its
//! total; the atomic keeps both exact, and costs nothing when the cap is off (the
//! packet path then never touches it). The per-allocation bucket is a plain field:
//! an allocation lives on one worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stats::Direction;

/// How much may pass at once above the cap's average: this long at the full cap.
pub const BURST: Duration = Duration::from_millis(250);

/// The caps in bits per second; 0 = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthCaps {
    /// Per allocation, per direction.
    pub per_allocation: u64,
    /// Per user (the quota user: a REST credential's user part), over all its
    /// allocations, per direction.
    pub per_user: u64,
    /// The whole relay, per direction.
    pub total: u64,
}

impl BandwidthCaps {
    /// Whether any cap is set.
    pub fn any(&self) -> bool {
        self.per_allocation != 0 || self.per_user != 0 || self.total != 0
    }
}

/// A cap as the packet path uses it.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Picoseconds one byte takes at the cap (at least 1: caps above 8 Tbit/s are
    /// treated as 8 Tbit/s).
    ps_per_byte: u64,
    burst_ns: u64,
}

impl Rate {
    fn new(bits_per_second: u64) -> Option<Rate> {
        (bits_per_second != 0).then(|| Rate {
            ps_per_byte: (8_000_000_000_000 / bits_per_second).max(1),
            burst_ns: BURST.as_nanos() as u64,
        })
    }

    /// Nanoseconds `bytes` take at the cap.
    #[inline]
    fn cost(&self, bytes: usize) -> u64 {
        (bytes as u64).saturating_mul(self.ps_per_byte) / 1000
    }

    /// The bucket's next `tat` if a packet of `bytes` conforms at `now`.
    #[inline]
    fn admit(&self, tat: u64, now: u64, bytes: usize) -> Option<u64> {
        (tat <= now.saturating_add(self.burst_ns))
            .then(|| tat.max(now).saturating_add(self.cost(bytes)))
    }
}

/// A bucket several workers share: its `tat`, in nanoseconds since [`Bandwidth`]'s origin.
#[derive(Debug, Default)]
struct SharedBucket {
    tat: AtomicU64,
}

impl SharedBucket {
    #[inline]
    fn take(&self, rate: &Rate, now: u64, bytes: usize) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let Some(next) = rate.admit(tat, now, bytes) else {
                return false;
            };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }

    /// Gives back what [`SharedBucket::take`] charged, when a later cap refused the packet.
    #[inline]
    fn refund(&self, rate: &Rate, bytes: usize) {
        self.tat.fetch_sub(rate.cost(bytes), Ordering::Relaxed);
    }
}

/// One user's buckets, one per [`Direction`], shared by its allocations.
#[derive(Debug, Default)]
pub struct UserBuckets([SharedBucket; 2]);

/// An allocation's part: its own buckets (plain: one worker owns it) and its user's.
#[derive(Debug, Default)]
pub struct AllocationBandwidth {
    own: [u64; 2],
    user: Option<Arc<UserBuckets>>,
}

/// The relay's caps and shared buckets, one for all workers (inside
/// [`SharedPool`](crate::shared::SharedPool)).
#[derive(Debug)]
pub struct Bandwidth {
    origin: Instant,
    per_allocation: Option<Rate>,
    per_user: Option<Rate>,
    total: Option<Rate>,
    total_buckets: [SharedBucket; 2],
    /// Users with live allocations. Touched when an allocation is made or freed, never
    /// per packet: each allocation holds its user's buckets.
    users: Mutex<HashMap<String, Arc<UserBuckets>>>,
}

impl Bandwidth {
    /// The caps, or `None` when none is set. `origin`: any instant not after the first
    /// `now` the buckets see.
    pub fn new(caps: BandwidthCaps, origin: Instant) -> Option<Bandwidth> {
        caps.any().then(|| Bandwidth {
            origin,
            per_allocation: Rate::new(caps.per_allocation),
            per_user: Rate::new(caps.per_user),
            total: Rate::new(caps.total),
            total_buckets: Default::default(),
            users: Mutex::default(),
        })
    }

    /// The buckets of a new allocation of `user`.
    pub fn for_allocation(&self, user: &str) -> AllocationBandwidth {
        let user = self.per_user.map(|_| {
            let mut users = self.lock();
            match users.get(user) {
                Some(buckets) => buckets.clone(),
                None => {
                    let buckets = Arc::new(UserBuckets::default());
                    users.insert(user.to_owned(), buckets.clone());
                    buckets
                }
            }
        });
        AllocationBandwidth { own: [0; 2], user }
    }

    /// An allocation of `user` is gone; its user's buckets go with its last one.
    pub fn release(&self, user: &str, alloc: AllocationBandwidth) {
        if alloc.user.is_none() {
            return;
        }
        let mut users = self.lock();
        drop(alloc);
        if users.get(user).is_some_and(|b| Arc::strong_count(b) == 1) {
            users.remove(user);
        }
    }

    /// Users with buckets now (for tests and inspection).
    pub fn users(&self) -> usize {
        self.lock().len()
    }

    /// May `bytes` of payload pass in `dir` for this allocation at `now`? Charges every
    /// cap when it may, none when it may not. No allocation, no lock.
    #[inline]
    pub fn admit(
        &self,
        alloc: &mut AllocationBandwidth,
        dir: Direction,
        bytes: usize,
        now: Instant,
    ) -> bool {
        let now = now.saturating_duration_since(self.origin).as_nanos() as u64;
        let d = dir as usize;
        // `d` < 2: both arrays are indexed by direction.
        let own = match &self.per_allocation {
            Some(rate) => match rate.admit(alloc.own[d], now, bytes) {
                Some(next) => Some(next),
                None => return false,
            },
            None => None,
        };
        let user = match (&self.per_user, &alloc.user) {
            (Some(rate), Some(buckets)) => {
                if !buckets.0[d].take(rate, now, bytes) {
                    return false;
                }
                Some((rate, &buckets.0[d]))
            }
            _ => None,
        };
        if let Some(rate) = &self.total {
            if !self.total_buckets[d].take(rate, now, bytes) {
                if let Some((rate, bucket)) = user {
                    bucket.refund(rate, bytes);
                }
                return false;
            }
        }
        if let Some(next) = own {
            alloc.own[d] = next;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<UserBuckets>>> {
        // Each critical section is one map operation; a poisoned map is still consistent.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `packets` packets of `size` bytes evenly over `secs` seconds; the bytes
    /// admitted.
    fn offer(
        bw: &Bandwidth,
        alloc: &mut AllocationBandwidth,
        t0: Instant,
        secs: u64,
        packets: u64,
        size: usize,
    ) -> u64 {
        let mut passed = 0;
        for i in 0..packets {
            let at = t0 + Duration::from_nanos(secs * 1_000_000_000 * i / packets);
            if bw.admit(alloc, Direction::ToPeer, size, at) {
                passed += size as u64;
            }
        }
        passed
    }

    #[test]
    fn per_allocation_cap_is_met_over_time() {
        let t0 = Instant::now();
        let caps = BandwidthCaps {
            per_allocation: 1_000_000,
            ..Default::default()
        };
        let bw = Bandwidth::new(caps, t0).unwrap();
        let mut a = bw.for_allocation("u");
        // 10 s of 8 Mbit/s offered: 1 Mbit/s (plus one burst) passes.
        let passed = offer(&bw, &mut a, t0, 10, 100_000, 100);
        let expected = 10 * 1_000_000 / 8 + 1_000_000 / 8 / 4;
        assert!(
            passed.abs_diff(expected) < expected / 100,
            "{passed} vs {expected}"
        );
        // The other direction has its own bucket.
        assert!(bw.admit(
            &mut a,
            Direction::ToClient,
            100,
            t0 + Duration::from_secs(10)
        ));
    }

    #[test]
    fn user_cap_spans_allocations_and_total_refunds() {
        let t0 = Instant::now();
        let caps = BandwidthCaps {
            per_user: 800_000,
            total: 1_600_000,
            ..Default::default()
        };
        let bw = Bandwidth::new(caps, t0).unwrap();
        let mut a = bw.for_allocation("u");
        let mut b = bw.for_allocation("u");
        let mut c = bw.for_allocation("v");
        assert_eq!(bw.users(), 2);
        let (mut pa, mut pb, mut pc) = (0, 0, 0);
        for i in 0..40_000u64 {
            let at = t0 + Duration::from_micros(i * 100);
            pa += u64::from(bw.admit(&mut a, Direction::ToPeer, 100, at)) * 100;
            pb += u64::from(bw.admit(&mut b, Direction::ToPeer, 100, at)) * 100;
            pc += u64::from(bw.admit(&mut c, Direction::ToPeer, 100, at)) * 100;
        }
        // Over 4 s, user "u" gets 100 kB/s in all, user "v" as much; the total (200 kB/s)
        // is not the limit.
        let per_user = 4 * 100_000 + 100_000 / 4;
        assert!((pa + pb).abs_diff(per_user) < per_user / 50, "{pa}+{pb}");
        assert!(pc.abs_diff(per_user) < per_user / 50, "{pc}");
        bw.release("u", a);
        assert_eq!(bw.users(), 2);
        bw.release("u", b);
        bw.release("v", c);
        assert_eq!(bw.users(), 0);
    }

    #[test]
    fn a_packet_larger_than_the_burst_passes_once_drained() {
        let t0 = Instant::now();
        let caps = BandwidthCaps {
            total: 8_000,
            ..Default::default()
        };
        let bw = Bandwidth::new(caps, t0).unwrap();
        let mut a = AllocationBandwidth::default();
        assert!(bw.admit(&mut a, Direction::ToClient, 65_535, t0));
        assert!(!bw.admit(&mut a, Direction::ToClient, 1, t0 + Duration::from_secs(1)));
        assert!(bw.admit(&mut a, Direction::ToClient, 1, t0 + Duration::from_secs(66)));
        assert!(Bandwidth::new(BandwidthCaps::default(), t0).is_none());
    }
}
