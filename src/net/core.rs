//! The calls a worker makes on its protocol core, as a trait: [`Server`] is the core the
//! relay runs; the shell's own tests substitute a scripted core so that socket routing is
//! tested without any protocol logic (the core alone decides protocol behaviour).

use std::net::SocketAddr;
use std::time::Instant;

use crate::proto::report::AllocationReport;
use crate::proto::stats::Stats;
use crate::proto::{
    ClientId, Event, FastPathUpdate, Forward, RelayKey, Server, ServerConfig, ToClient, Transmit,
};

/// Mirrors [`Server`]'s `handle_*` / `poll_*` API one to one; see there for semantics.
pub(crate) trait Core {
    fn handle_client_input(
        &mut self,
        now: Instant,
        client: ClientId,
        packet: &[u8],
    ) -> Option<Forward>;
    fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: RelayKey,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ToClient>;
    fn handle_relay_opened(&mut self, now: Instant, relay: RelayKey, ok: Result<(), ()>);
    fn handle_client_closed(&mut self, now: Instant, client: ClientId);
    /// Only the relay's core throttles sign-ins; scripted cores ignore sources.
    fn handle_tunnel_source(&mut self, _client: ClientId, _source: std::net::IpAddr) {}
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_event(&mut self) -> Option<Event>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn stats(&self) -> &Stats;
    /// Only the relay's core reports fast-path routes; scripted cores have none.
    fn poll_fast_path(&mut self, _now: Instant) -> Option<FastPathUpdate> {
        None
    }
    /// Scripted cores have nothing to drain: they are drained at once.
    fn handle_drain(&mut self, _now: Instant, _deadline: Instant) {}
    fn drained(&self, _now: Instant) -> bool {
        true
    }
    /// Scripted cores keep the configuration they were built with.
    fn handle_config(&mut self, _now: Instant, _config: ServerConfig) {}
    /// Only the relay's core measures call quality.
    fn rtp_quality(&self) -> bool {
        false
    }
    /// Scripted cores report no allocations.
    fn allocation_reports(&self, _now: Instant) -> Vec<AllocationReport> {
        Vec::new()
    }
}

impl Core for Server {
    fn handle_client_input(
        &mut self,
        now: Instant,
        client: ClientId,
        packet: &[u8],
    ) -> Option<Forward> {
        Server::handle_client_input(self, now, client, packet)
    }
    fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: RelayKey,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
    ) -> Option<ToClient> {
        Server::handle_peer_input(self, now, relay, peer, buf, len)
    }
    fn handle_relay_opened(&mut self, now: Instant, relay: RelayKey, ok: Result<(), ()>) {
        Server::handle_relay_opened(self, now, relay, ok)
    }
    fn handle_client_closed(&mut self, now: Instant, client: ClientId) {
        Server::handle_client_closed(self, now, client)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Server::handle_timeout(self, now)
    }
    fn handle_tunnel_source(&mut self, client: ClientId, source: std::net::IpAddr) {
        Server::handle_tunnel_source(self, client, source)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Server::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Server::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Server::poll_timeout(self)
    }
    fn stats(&self) -> &Stats {
        Server::stats(self)
    }
    fn poll_fast_path(&mut self, now: Instant) -> Option<FastPathUpdate> {
        Server::poll_fast_path(self, now)
    }
    fn handle_drain(&mut self, now: Instant, deadline: Instant) {
        Server::handle_drain(self, now, deadline)
    }
    fn drained(&self, now: Instant) -> bool {
        Server::drained(self, now)
    }
    fn handle_config(&mut self, now: Instant, config: ServerConfig) {
        Server::handle_config(self, now, config)
    }
    fn rtp_quality(&self) -> bool {
        Server::rtp_quality(self)
    }
    fn allocation_reports(&self, now: Instant) -> Vec<AllocationReport> {
        Server::allocation_reports(self, now)
    }
}
