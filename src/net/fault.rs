//! A fault for tests: a worker that panics on demand, to prove that the relay exits
//! instead of running without it.
//!
//! Compiled only with debug assertions (the test profile), so a release build cannot
//! reach it whatever its environment. With `TURNPIKE_TEST_PANIC_ON` set, read once at
//! start, a datagram on a client listener whose bytes equal its value panics the worker
//! that reads it.

use std::net::SocketAddr;
use std::time::Instant;

use super::core::Core;
use crate::proto::stats::Stats;
use crate::proto::{
    ClientId, Event, FastPathUpdate, Forward, RelayKey, ServerConfig, ToClient, Transmit,
};

/// The environment variable holding the trigger.
pub(crate) const ENV: &str = "TURNPIKE_TEST_PANIC_ON";

/// The trigger, if the environment sets a non-empty one.
pub(crate) fn trigger() -> Option<Vec<u8>> {
    std::env::var_os(ENV)
        .map(|v| v.into_encoded_bytes())
        .filter(|v| !v.is_empty())
}

/// `C`, panicking on a client datagram equal to `trigger`.
pub(crate) struct PanicOn<C> {
    pub(crate) core: C,
    pub(crate) trigger: Vec<u8>,
}

impl<C: Core> Core for PanicOn<C> {
    fn handle_client_input(
        &mut self,
        now: Instant,
        client: ClientId,
        packet: &[u8],
    ) -> Option<Forward> {
        if packet == self.trigger.as_slice() {
            panic!("{ENV}: a client sent the trigger");
        }
        self.core.handle_client_input(now, client, packet)
    }
    fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: RelayKey,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ToClient> {
        self.core.handle_peer_input(now, relay, peer, buf, len)
    }
    fn handle_relay_opened(&mut self, now: Instant, relay: RelayKey, ok: Result<(), ()>) {
        self.core.handle_relay_opened(now, relay, ok)
    }
    fn handle_client_closed(&mut self, now: Instant, client: ClientId) {
        self.core.handle_client_closed(now, client)
    }
    fn handle_tunnel_source(&mut self, client: ClientId, source: std::net::IpAddr) {
        self.core.handle_tunnel_source(client, source)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
    fn stats(&self) -> &Stats {
        self.core.stats()
    }
    fn poll_fast_path(&mut self, now: Instant) -> Option<FastPathUpdate> {
        self.core.poll_fast_path(now)
    }
    fn handle_drain(&mut self, now: Instant, deadline: Instant) {
        self.core.handle_drain(now, deadline)
    }
    fn drained(&self, now: Instant) -> bool {
        self.core.drained(now)
    }
    fn handle_config(&mut self, now: Instant, config: ServerConfig) {
        self.core.handle_config(now, config)
    }
}
