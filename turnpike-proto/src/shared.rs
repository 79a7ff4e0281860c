//! What the cores of one relay share, behind one explicit boundary.
//!
//! A relay runs one core ([`Server`](crate::Server)) per worker thread, and each worker
//! owns its allocations alone: both directions of an allocation are handled by the
//! thread whose listener the kernel hashed the client's 5-tuple to. Some things cannot
//! be split that way, because a client's 5-tuples are spread over workers:
//!
//! - **The relay port range, with its EVEN-PORT reservations.** The Allocate that
//!   redeems a RESERVATION-TOKEN (RFC 8656 §7.2) comes from another 5-tuple, which may
//!   land on another worker; that worker must find the reservation and bind its port.
//!   So the range is one pool, not a slice per worker.
//! - **The relayed addresses of live allocations.** Two clients of this relay calling
//!   each other relay to relay: each one's peer is the other's relayed address, which
//!   the peer policy refuses as the relay's own address. The exact set of live relayed
//!   addresses, across workers, tells that legitimate case from a relay loop or a probe
//!   of the host.
//! - **Allocation quotas**, per user and in total (RFC 8656 §7.2: 486, 508): one user's
//!   allocations may land on any worker.
//! - **The failed sign-in throttle** ([`crate::throttle`]): a source's 5-tuples, and so
//!   its guesses, are spread over workers too. Consulted for requests that carry
//!   credentials, never per packet.
//! - **The bandwidth caps per user and in total** ([`crate::bandwidth`]): a core takes
//!   the relay's [`Bandwidth`] once, at construction, and its packet path charges the
//!   shared buckets with one atomic compare-and-swap each, without a call through here.
//!
//! A core reaches them only through [`Shared`], which it is given at construction, so
//! what one core's behaviour depends on is visible in its signature. Every call but one
//! is made when an allocation, reservation or relay-to-relay permission is made or
//! freed, or for a request that carries credentials — never per packet. The exception
//! is [`Shared::retired`], one atomic load on the relay-to-relay packet path (see there).
//!
//! [`SharedPool`] is the relay's implementation: a mutex around the pool and the
//! relayed addresses, another around the quotas, the throttle's table of small locked
//! sets and the bandwidth caps' atomics. The virtual-time harness gives several
//! simulated cores one pool to test what crosses workers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;

use crate::bandwidth::Bandwidth;
use crate::ports::{RelayPorts, Reservation};
use crate::quota::Quotas;
use crate::reject::Reject;
use crate::throttle::{AuthGate, AuthThrottle};

/// The state a relay's cores share; see the module docs for what and why.
///
/// Implementations must be consistent under calls from several threads at once: a port
/// taken by one core is not handed to another until released, and a relayed address
/// retired on one core is seen as retired by every core that next reads
/// [`Shared::retired`].
pub trait Shared: Send + Sync + fmt::Debug {
    /// Take a random free relay port (random so relayed addresses are hard to guess).
    /// With `even`, an even port; with `pair`, an even port whose successor is free
    /// too, both taken (RFC 8656 §7.2 EVEN-PORT with the R bit). `None`: none free.
    fn take_port(&self, rng: &mut dyn RngCore, even: bool, pair: bool) -> Option<u16>;

    /// Give `port` back. If it carried a live allocation's relayed address, that address
    /// stops being one of ours and [`Shared::retired`] moves.
    fn release_port(&self, port: u16);

    /// Hold `reservation` (whose port is already taken) for the Allocate carrying `token`.
    fn reserve(&self, token: u64, reservation: Reservation);

    /// Redeem `token`: the reservation leaves the table and its port stays taken.
    fn claim(&self, token: u64) -> Option<Reservation>;

    /// Drop the reservation of `token` if it has lapsed by `now`, freeing its port.
    fn expire_reservation(&self, token: u64, now: Instant);

    /// Record that a live allocation was told `advertised` (XOR-RELAYED-ADDRESS) for its
    /// relay socket on `advertised.port()`; forgotten when that port is released.
    fn publish_relayed(&self, advertised: SocketAddr);

    /// Is `peer` exactly the relayed address of a live allocation of this relay, on any
    /// core? IPv4-mapped IPv6 forms count as their IPv4 address.
    fn is_live_relayed(&self, peer: SocketAddr) -> bool;

    /// A count that moves whenever a live allocation's relayed address stops being one.
    /// A channel or Send route to another allocation of ours remembers the count it last
    /// checked against, so the packet path reads one atomic and asks
    /// [`Shared::is_live_relayed`] again only when some relayed address went away.
    fn retired(&self) -> u64;

    /// Count one more allocation for `user`: 486 Allocation Quota Reached when the user
    /// is at quota, 508 Insufficient Capacity when the relay is.
    fn acquire_quota(&self, user: &str) -> Result<(), Reject>;

    /// Count one allocation of `user` less.
    fn release_quota(&self, user: &str);

    /// What to do with a request from the client at `source` carrying credentials for
    /// `username`, given the failed sign-ins from there ([`crate::throttle`]). Without
    /// a throttle: [`AuthGate::Open`].
    fn auth_gate(&self, _source: IpAddr, _username: &[u8], _now: Instant) -> AuthGate {
        AuthGate::Open
    }

    /// Count a failed sign-in of `username` from `source`; true when that source was
    /// already throttled, so the failure must go unanswered.
    fn auth_failed(&self, _source: IpAddr, _username: &[u8], _now: Instant) -> bool {
        false
    }

    /// The bandwidth caps and their shared buckets, if any cap is set; a core asks once.
    fn bandwidth(&self) -> Option<Arc<Bandwidth>> {
        None
    }
}

/// The relay's [`Shared`]: the port pool and the quotas, each behind its own mutex, the
/// failed sign-in throttle (a fixed table of small locked sets) and the bandwidth caps
/// (atomics).
#[derive(Debug)]
pub struct SharedPool {
    ports: RelayPorts,
    quotas: Quotas,
    throttle: AuthThrottle,
    bandwidth: Option<Arc<Bandwidth>>,
}

impl SharedPool {
    /// A pool over the relay port `range` with no reservations, no live allocations and
    /// the given quotas.
    pub fn new(range: RangeInclusive<u16>, quotas: Quotas) -> SharedPool {
        SharedPool {
            ports: RelayPorts::new(range),
            quotas,
            throttle: AuthThrottle::off(),
            bandwidth: None,
        }
    }

    /// The same pool, throttling failed sign-ins with `throttle`.
    pub fn with_auth_throttle(mut self, throttle: AuthThrottle) -> SharedPool {
        self.throttle = throttle;
        self
    }

    /// The same pool, with bandwidth caps (`None`: none).
    pub fn with_bandwidth(mut self, bandwidth: Option<Bandwidth>) -> SharedPool {
        self.bandwidth = bandwidth.map(Arc::new);
        self
    }

    /// The port pool, to inspect (ports in use, the range).
    pub fn ports(&self) -> &RelayPorts {
        &self.ports
    }

    /// The quotas, to inspect (allocations held per user).
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }
}

impl Shared for SharedPool {
    fn take_port(&self, mut rng: &mut dyn RngCore, even: bool, pair: bool) -> Option<u16> {
        self.ports.take_random(&mut rng, even, pair)
    }
    fn release_port(&self, port: u16) {
        self.ports.release(port)
    }
    fn reserve(&self, token: u64, reservation: Reservation) {
        self.ports.reserve(token, reservation)
    }
    fn claim(&self, token: u64) -> Option<Reservation> {
        self.ports.claim(token)
    }
    fn expire_reservation(&self, token: u64, now: Instant) {
        self.ports.expire(token, now)
    }
    fn publish_relayed(&self, advertised: SocketAddr) {
        self.ports.publish_relayed(advertised)
    }
    fn is_live_relayed(&self, peer: SocketAddr) -> bool {
        self.ports.is_live_relayed(peer)
    }
    #[inline]
    fn retired(&self) -> u64 {
        self.ports.retired()
    }
    fn acquire_quota(&self, user: &str) -> Result<(), Reject> {
        self.quotas.acquire(user)
    }
    fn release_quota(&self, user: &str) {
        self.quotas.release(user)
    }
    fn auth_gate(&self, source: IpAddr, username: &[u8], now: Instant) -> AuthGate {
        self.throttle.gate(source, username, now)
    }
    fn auth_failed(&self, source: IpAddr, username: &[u8], now: Instant) -> bool {
        self.throttle.failed(source, username, now)
    }
    fn bandwidth(&self) -> Option<Arc<Bandwidth>> {
        self.bandwidth.clone()
    }
}
