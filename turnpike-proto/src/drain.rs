//! Draining: how a core winds down before the process exits, and swapping in a new
//! configuration while it runs.
//!
//! A drain is one input, [`Server::handle_drain`]`(now, deadline)`, given to every core
//! of the relay. From then on the core refuses new allocations — 300 (Try Alternate)
//! with ALTERNATE-SERVER when the operator named other relays (RFC 8489 §10, RFC 8656
//! §7.2), otherwise 403 "Server draining" — and keeps serving the allocations it has:
//! their data, permissions and channels unchanged, and their Refreshes, whose granted
//! lifetime never reaches past the deadline (the client learns how long it has and can
//! move in time). [`Server::drained`] says when the core is done: no allocation left,
//! or the deadline reached. The shell only delivers the input and acts on the answer;
//! every decision is here, on the caller's clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::addr::ClientId;
use super::auth::Authenticator;
use super::reject::Reject;
use super::server::{Server, ServerConfig, Timer};

/// A drain in progress: when it must be over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// The drain ends here whatever allocations remain.
    pub deadline: Instant,
}

impl Drain {
    /// The lifetime to grant a Refresh that asked for `lifetime` (non-zero) at `now`:
    /// never past the deadline, rounded down to whole seconds (LIFETIME counts seconds),
    /// but at least one second, so the answer is never read as "deleted".
    pub fn cap_lifetime(&self, now: Instant, lifetime: Duration) -> Duration {
        let left = Duration::from_secs(self.deadline.saturating_duration_since(now).as_secs());
        lifetime.min(left).max(Duration::from_secs(1))
    }

    /// What a new Allocate from `client` is told: 300 with the first alternate of the
    /// client's address family (a client reached us over IPv4 may have no IPv6 route),
    /// or the first alternate at all, or 403 when there is none.
    pub fn refusal(&self, alternates: &[SocketAddr], client: &ClientId) -> Reject {
        let same_family = alternates
            .iter()
            .find(|a| a.is_ipv4() == client.remote.is_ipv4());
        match same_family.or(alternates.first()) {
            Some(alt) => Reject::TryAlternate(*alt),
            None => Reject::Draining,
        }
    }
}

impl Server {
    /// Start draining: refuse new allocations from now on, keep the existing ones until
    /// they end or `deadline`. A second call keeps the earlier deadline.
    pub fn handle_drain(&mut self, now: Instant, deadline: Instant) {
        let deadline = match self.drain {
            Some(d) => d.deadline.min(deadline),
            None => deadline,
        };
        self.drain = Some(Drain { deadline });
        // Wake the shell at the deadline, so it asks `drained` then even when idle.
        self.set_timer(deadline, Timer::Drain);
        tracing::debug!(
            allocations = self.allocations.len(),
            left_ms = deadline.saturating_duration_since(now).as_millis() as u64,
            "draining"
        );
    }

    /// Whether [`Server::handle_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Whether this core's drain is over at `now`: it is draining and has no allocation
    /// (nor one still opening its sockets) left, or its deadline has come. Always false
    /// when not draining.
    pub fn drained(&self, now: Instant) -> bool {
        match self.drain {
            Some(d) => {
                (self.allocations.is_empty() && self.pending.is_empty()) || now >= d.deadline
            }
            None => false,
        }
    }

    /// Apply a new configuration to a running core. What a core's existing state
    /// depends on stays as it was: the realm (part of every credential's key), the
    /// nonce key (nonces already handed out must still verify), the wall-clock anchor,
    /// the fast-path switch and `rtp_quality`. Everything else — users, REST secrets, credential and
    /// nonce lifetimes, allocation lifetimes, the peer policy, SOFTWARE, the username
    /// limit, the alternate servers — applies to the next request. Existing
    /// allocations, permissions and channels are kept: a peer the new policy refuses
    /// can no longer be added, and what was granted lapses on its own timers.
    pub fn handle_config(&mut self, _now: Instant, config: ServerConfig) {
        let config = ServerConfig {
            realm: self.config.realm.clone(),
            nonce_key: self.config.nonce_key,
            unix_anchor: self.config.unix_anchor,
            fast_path: self.config.fast_path,
            rtp_quality: self.config.rtp_quality,
            ..config
        };
        self.auth = Authenticator::new(
            config.realm.clone(),
            config.users.clone(),
            config.secrets.clone(),
            config.max_credential_lifetime.as_secs(),
            config.nonce_lifetime.as_secs(),
            config.nonce_key,
            config.max_username_len,
        );
        self.config = config;
    }

    /// The refusal for a new Allocate while draining, `None` when not draining.
    pub(crate) fn drain_refusal(&self, client: &ClientId) -> Option<Reject> {
        self.drain
            .map(|d| d.refusal(&self.config.alternate_servers, client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Transport;

    fn client(remote: &str) -> ClientId {
        let remote: SocketAddr = remote.parse().expect("literal");
        let local: SocketAddr = if remote.is_ipv4() {
            "192.0.2.1:3478"
        } else {
            "[2001:db8::1]:3478"
        }
        .parse()
        .expect("literal");
        ClientId {
            transport: Transport::Udp,
            remote,
            local,
        }
    }

    #[test]
    fn refresh_lifetime_is_capped_to_whole_seconds_left_and_never_zero() {
        let t0 = Instant::now();
        let drain = Drain {
            deadline: t0 + Duration::from_millis(90_500),
        };
        let asked = Duration::from_secs(600);
        assert_eq!(drain.cap_lifetime(t0, asked), Duration::from_secs(90));
        assert_eq!(
            drain.cap_lifetime(t0, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        let late = t0 + Duration::from_secs(90);
        assert_eq!(drain.cap_lifetime(late, asked), Duration::from_secs(1));
        let past = t0 + Duration::from_secs(200);
        assert_eq!(drain.cap_lifetime(past, asked), Duration::from_secs(1));
    }

    #[test]
    fn refusal_prefers_an_alternate_of_the_clients_family() {
        let drain = Drain {
            deadline: Instant::now(),
        };
        let v4: SocketAddr = "198.51.100.7:3478".parse().expect("literal");
        let v6: SocketAddr = "[2001:db8::7]:3478".parse().expect("literal");
        assert_eq!(
            drain.refusal(&[], &client("203.0.113.9:5000")),
            Reject::Draining
        );
        assert_eq!(
            drain.refusal(&[v6, v4], &client("203.0.113.9:5000")),
            Reject::TryAlternate(v4)
        );
        assert_eq!(
            drain.refusal(&[v4, v6], &client("[2001:db8::9]:5000")),
            Reject::TryAlternate(v6)
        );
        // No alternate of the client's family: any alternate beats a plain refusal.
        assert_eq!(
            drain.refusal(&[v6], &client("203.0.113.9:5000")),
            Reject::TryAlternate(v6)
        );
        assert_eq!(Reject::Draining.code(), 403);
        assert_eq!(Reject::TryAlternate(v4).code(), 300);
    }
}
