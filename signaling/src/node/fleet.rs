//! What the fleet registry tells a node about the relays its calls ride on: a relay
//! that starts draining moves its calls (`relay_moved`), and a relay's link-quality
//! figures reach the parties they concern (`call_quality`).

use super::{now_ms, Node};
use crate::bus::Bus;
use crate::call::Millis;
use crate::fleet::Heartbeat;
use crate::protocol::ServerBody;

/// A party hears about its link at most this often.
pub(crate) const QUALITY_EVERY_MS: Millis = 5_000;

impl<B: Bus> Node<B> {
    /// `relay` started draining: tell each local party of every call on it to move
    /// (fresh ICE servers, which never include a draining relay). Each node tells its
    /// own devices, so both parties hear it once whichever nodes they are on. With no
    /// other relay to offer, calls stay where they are: the draining relay serves them
    /// until they end or its drain times out, which beats an ICE restart onto nothing.
    pub(super) fn relay_draining(&mut self, relay: &Heartbeat) {
        let parties = self.machine.parties_on_relay(|r| relay.serves(r));
        let now = now_ms();
        for (call_id, device, caller) in parties {
            let region = self
                .by_device
                .get(&device)
                .and_then(|sid| self.sessions.get(sid))
                .and_then(|s| s.region.clone());
            let ice_servers = self
                .creds
                .ice_servers(&device.user, region.as_deref(), now / 1000);
            if ice_servers.is_empty() {
                tracing::warn!(relay = %relay.id, %call_id, "relay draining with no other relay to move the call to");
                continue;
            }
            let body = ServerBody::RelayMoved {
                call_id,
                relay: relay.id.clone(),
                ice_servers,
                ttl: self.creds.ttl_secs(),
                offer: caller,
            };
            self.metrics.call_moved();
            self.deliver(&device, body, now);
        }
    }

    /// `relay` measured its users' uplinks (`Heartbeat::quality`): each local party of a
    /// call on that relay whose user it measured gets `call_quality`, at most every
    /// [`QUALITY_EVERY_MS`], so its app can say "your connection is losing 8 %". The
    /// relay knows users, not devices: a user with two calls on one relay hears the
    /// worse of the two on both.
    pub(super) fn relay_quality(&mut self, relay: &Heartbeat) {
        let now = now_ms();
        self.quality_sent
            .retain(|_, at| now.saturating_sub(*at) < 12 * QUALITY_EVERY_MS);
        for (call_id, device, _) in self.machine.parties_on_relay(|r| relay.serves(r)) {
            let Some(link) = relay.quality.iter().find(|q| q.user == device.user) else {
                continue;
            };
            let key = (call_id.clone(), device.clone());
            if self
                .quality_sent
                .get(&key)
                .is_some_and(|at| now.saturating_sub(*at) < QUALITY_EVERY_MS)
            {
                continue;
            }
            self.quality_sent.insert(key, now);
            let body = ServerBody::CallQuality {
                call_id,
                relay: relay.id.clone(),
                uplink_loss: link.uplink_loss,
                uplink_jitter_ms: link.uplink_jitter_ms,
            };
            self.deliver(&device, body, now);
        }
    }
}
