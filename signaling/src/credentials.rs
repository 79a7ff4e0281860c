//! Relay credentials: the ICE servers a device is told about, with TURN REST credentials
//! minted from the shared secret (username `"<expiry>:<user>"`, password
//! `base64(HMAC-SHA1(secret, username))`, draft-uberti-behave-turn-rest-00 §2.2, the
//! scheme of coturn and Turnpike's relay), ranked for the device.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

use crate::fleet::{self, Heartbeat};
use crate::protocol::IceServer;

/// One relay (or relay pool behind one name) as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Where it is ("eu-west"); matched against the client's region hint.
    pub region: String,
    /// `turn:`/`turns:` URIs, e.g. `turn:relay.example.com:3478?transport=udp`,
    /// `turn:relay.example.com:3478?transport=tcp`, `turns:relay.example.com:5349?transport=tcp`,
    /// and `masque://relay.example.com:443` for TURN over QUIC (these go to
    /// [`IceServer::quic_urls`]).
    pub urls: Vec<String>,
}

/// The draft-uberti `GET /v1/turn-credentials` answer (as XMPP and Matrix servers use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestCredential {
    pub username: String,
    pub password: String,
    pub ttl: u64,
    pub uris: Vec<String>,
}

/// Mints credentials and ranks relays. Cheap to clone (clones share one table, which
/// [`Credentials::reconfigure`] replaces for all of them).
#[derive(Clone)]
pub struct Credentials {
    table: Arc<RwLock<Table>>,
}

/// The relays, their loads, the secret and the lifetime, replaced together.
struct Table {
    relays: Vec<RelayConfig>,
    /// Reported load per relay (same order as `relays`); lower is preferred.
    loads: Vec<AtomicU32>,
    secret: Option<Vec<u8>>,
    ttl: Duration,
    /// The live relays from the fleet registry (see [`crate::fleet`]): when `Some`, they
    /// replace `relays`, ranked by their reported load and never offered while
    /// draining. `None`: no registry configured, the static `relays` are offered.
    fleet: Option<Vec<Heartbeat>>,
}

/// `base64(HMAC-SHA1(secret, "<expiry>:<user>"))` and the username.
pub fn mint(secret: &[u8], user: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    // HMAC accepts keys of any length (RFC 2104 §2).
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

impl Credentials {
    pub fn new(relays: Vec<RelayConfig>, secret: Option<Vec<u8>>, ttl: Duration) -> Credentials {
        let loads = relays.iter().map(|_| AtomicU32::new(0)).collect();
        Credentials {
            table: Arc::new(RwLock::new(Table {
                relays,
                loads,
                secret,
                ttl,
                fleet: None,
            })),
        }
    }

    /// New relays, secret and lifetime for what is minted from now on (a configuration
    /// reload). Reported loads are kept when the relay list is the same.
    pub fn reconfigure(&self, relays: Vec<RelayConfig>, secret: Option<Vec<u8>>, ttl: Duration) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.relays != relays {
            table.loads = relays.iter().map(|_| AtomicU32::new(0)).collect();
            table.relays = relays;
        }
        table.secret = secret;
        table.ttl = ttl;
    }

    /// Offer relays from the fleet registry from now on, replacing the configured ones
    /// (an empty registry offers none). Called with each registry read.
    pub fn set_fleet(&self, relays: Vec<Heartbeat>) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.fleet = Some(relays);
    }

    /// The registry as last read (`None` without a fleet).
    pub fn fleet(&self) -> Option<Vec<Heartbeat>> {
        self.read().fleet.clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        // Every writer replaces whole fields, so a poisoned table is still consistent.
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds minted credentials live.
    pub fn ttl_secs(&self) -> u64 {
        self.read().ttl.as_secs()
    }

    pub fn has_secret(&self) -> bool {
        self.read().secret.is_some()
    }

    /// Record relay `index`'s load (any monotone measure: allocations, percent busy).
    /// Unknown indexes are ignored.
    pub fn report_load(&self, index: usize, load: u32) {
        if let Some(slot) = self.read().loads.get(index) {
            slot.store(load, Ordering::Relaxed);
        }
    }

    /// Relay indexes, best first: relays in the client's region first, then by lower
    /// reported load, then in configured order.
    pub fn ranked(&self, region: Option<&str>) -> Vec<usize> {
        self.read().ranked(region)
    }

    /// ICE servers for `user`, ranked for `region`, valid until `now_unix + ttl`: the
    /// configured relays, or with a fleet the best [`fleet::OFFERED`] live ones.
    pub fn ice_servers(&self, user: &str, region: Option<&str>, now_unix: u64) -> Vec<IceServer> {
        let table = self.read();
        let cred = table
            .secret
            .as_ref()
            .map(|s| mint(s, user, now_unix + table.ttl.as_secs()));
        table
            .offered(region)
            .into_iter()
            .map(|(region, urls)| {
                let (quic_urls, urls) = urls.iter().cloned().partition(|u| is_quic(u));
                IceServer {
                    urls,
                    username: cred.as_ref().map(|c| c.0.clone()),
                    credential: cred.as_ref().map(|c| c.1.clone()),
                    region: region.to_string(),
                    quic_urls,
                }
            })
            .collect()
    }

    /// The `GET /v1/turn-credentials` answer; `None` without a shared secret.
    pub fn rest(&self, user: &str, region: Option<&str>, now_unix: u64) -> Option<RestCredential> {
        let table = self.read();
        let secret = table.secret.as_ref()?;
        let (username, password) = mint(secret, user, now_unix + table.ttl.as_secs());
        let uris = table
            .offered(region)
            .into_iter()
            .flat_map(|(_, urls)| urls.iter().filter(|u| !is_quic(u)).cloned())
            .collect();
        Some(RestCredential {
            username,
            password,
            ttl: table.ttl.as_secs(),
            uris,
        })
    }
}

impl Table {
    /// The relays to offer a device in `region`, best first, as (region, URLs).
    fn offered(&self, region: Option<&str>) -> Vec<(&str, &[String])> {
        match &self.fleet {
            Some(live) => fleet::rank(live, region)
                .into_iter()
                .take(fleet::OFFERED)
                .map(|r| (r.region.as_str(), r.urls.as_slice()))
                .collect(),
            None => self
                .ranked(region)
                .into_iter()
                .filter_map(|i| self.relays.get(i))
                .map(|r| (r.region.as_str(), r.urls.as_slice()))
                .collect(),
        }
    }

    fn ranked(&self, region: Option<&str>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.relays.len()).collect();
        order.sort_by_key(|&i| {
            let away = match (region, self.relays.get(i)) {
                (Some(r), Some(relay)) => !relay.region.eq_ignore_ascii_case(r),
                _ => false,
            };
            let load = self
                .loads
                .get(i)
                .map_or(u32::MAX, |l| l.load(Ordering::Relaxed));
            (away, load, i)
        });
        order
    }
}

/// A TURN-over-QUIC relay URL (`masque://host:port`): not for `RTCIceServer.urls`.
fn is_quic(url: &str) -> bool {
    url.starts_with("masque://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_urls_are_kept_apart_from_the_turn_urls() {
        let c = Credentials::new(
            vec![RelayConfig {
                region: "eu".into(),
                urls: vec![
                    "turn:relay.example.com:3478?transport=udp".into(),
                    "masque://relay.example.com:443".into(),
                ],
            }],
            Some(b"s".to_vec()),
            Duration::from_secs(600),
        );
        let server = &c.ice_servers("alice", None, 0)[0];
        assert_eq!(server.urls, ["turn:relay.example.com:3478?transport=udp"]);
        assert_eq!(server.quic_urls, ["masque://relay.example.com:443"]);
        // The same credentials serve both; the REST answer (for XMPP and Matrix servers)
        // lists only what they understand.
        assert!(server.username.is_some());
        let rest = c.rest("alice", None, 0).unwrap();
        assert_eq!(rest.uris, ["turn:relay.example.com:3478?transport=udp"]);
        let json = serde_json::to_value(server).unwrap();
        assert_eq!(json["quic_urls"][0], "masque://relay.example.com:443");
    }

    fn relay(region: &str) -> RelayConfig {
        RelayConfig {
            region: region.into(),
            urls: vec![format!("turn:{region}.example.com:3478?transport=udp")],
        }
    }

    #[test]
    fn ranks_by_region_then_load() {
        let c = Credentials::new(
            vec![relay("us"), relay("eu"), relay("eu"), relay("ap")],
            Some(b"s".to_vec()),
            Duration::from_secs(600),
        );
        assert_eq!(c.ranked(None), vec![0, 1, 2, 3]);
        assert_eq!(c.ranked(Some("EU")), vec![1, 2, 0, 3]);
        c.report_load(1, 90);
        c.report_load(2, 10);
        c.report_load(0, 50);
        c.report_load(9, 1); // unknown relay: ignored
        assert_eq!(c.ranked(Some("eu")), vec![2, 1, 3, 0]);
        assert_eq!(c.ranked(None), vec![3, 2, 0, 1]);
    }

    #[test]
    fn mints_rest_credentials() {
        let c = Credentials::new(
            vec![relay("eu")],
            Some(b"s3cret".to_vec()),
            Duration::from_secs(600),
        );
        let servers = c.ice_servers("alice", None, 1000);
        assert_eq!(servers[0].username.as_deref(), Some("1600:alice"));
        // Known answer: base64(HMAC-SHA1("s3cret", "1600:alice")), computed with openssl.
        assert_eq!(
            servers[0].credential.as_deref(),
            Some("YxC+nxqXg+YHLUm6U5r5bqiWs3k=")
        );
        let rest = c.rest("alice", None, 1000).unwrap();
        assert_eq!(rest.ttl, 600);
        assert_eq!(rest.uris, relay("eu").urls);
        let none = Credentials::new(vec![relay("eu")], None, Duration::from_secs(1));
        assert_eq!(none.rest("a", None, 0), None);
        assert_eq!(none.ice_servers("a", None, 0)[0].username, None);
    }

    #[test]
    fn reconfigure_changes_what_every_clone_mints() {
        let c = Credentials::new(
            vec![relay("eu")],
            Some(b"old".to_vec()),
            Duration::from_secs(60),
        );
        let clone = c.clone();
        c.report_load(0, 7);
        c.reconfigure(
            vec![relay("eu")],
            Some(b"new".to_vec()),
            Duration::from_secs(600),
        );
        let rest = clone.rest("alice", None, 1000).unwrap();
        assert_eq!((rest.username.as_str(), rest.ttl), ("1600:alice", 600));
        assert_eq!(rest.password, mint(b"new", "alice", 1600).1);
        // Same relays: their loads are kept.
        c.report_load(0, 7);
        c.reconfigure(
            vec![relay("us"), relay("eu")],
            None,
            Duration::from_secs(600),
        );
        assert_eq!(clone.ranked(Some("eu")), vec![1, 0]);
        assert_eq!(clone.rest("alice", None, 0), None);
    }
}
