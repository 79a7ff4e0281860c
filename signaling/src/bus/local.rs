//! The in-process bus: shared maps behind a mutex, channels to each node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Bus, BusError, Incoming, PresenceState};

#[derive(Default)]
struct Shared {
    next_node: u64,
    nodes: HashMap<u64, mpsc::UnboundedSender<Incoming>>,
    /// user → nodes subscribed to it.
    subs: HashMap<String, HashSet<u64>>,
    claims: HashMap<String, Instant>,
    online: HashMap<String, HashMap<String, Instant>>,
    last_seen: HashMap<String, u64>,
    missed: HashMap<String, Vec<String>>,
}

/// One node's handle on an in-process bus. `LocalBus::new()` makes a bus with one node;
/// `node()` adds another node to the same bus (several nodes in one process, for tests).
#[derive(Clone)]
pub struct LocalBus {
    shared: Arc<Mutex<Shared>>,
    node: u64,
}

impl LocalBus {
    pub fn new() -> (LocalBus, mpsc::UnboundedReceiver<Incoming>) {
        let bus = LocalBus {
            shared: Arc::new(Mutex::new(Shared::default())),
            node: 0,
        };
        bus.node()
    }

    /// Another node on this bus.
    pub fn node(&self) -> (LocalBus, mpsc::UnboundedReceiver<Incoming>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = self.lock();
        s.next_node += 1;
        let node = s.next_node;
        s.nodes.insert(node, tx);
        drop(s);
        (
            LocalBus {
                shared: self.shared.clone(),
                node,
            },
            rx,
        )
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A poisoned lock means a panic elsewhere while holding it; the maps are still
        // consistent (every update is a single insert or remove), so keep going.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Bus for LocalBus {
    async fn publish_user(&self, user: &str, payload: String) -> Result<(), BusError> {
        let s = self.lock();
        for node in s.subs.get(user).into_iter().flatten() {
            if let Some(tx) = s.nodes.get(node) {
                let _ = tx.send(Incoming::User {
                    user: user.to_string(),
                    payload: payload.clone(),
                });
            }
        }
        Ok(())
    }

    async fn publish_presence(&self, payload: String) -> Result<(), BusError> {
        let s = self.lock();
        for tx in s.nodes.values() {
            let _ = tx.send(Incoming::Presence(payload.clone()));
        }
        Ok(())
    }

    async fn subscribe(&self, user: &str) -> Result<(), BusError> {
        self.lock()
            .subs
            .entry(user.to_string())
            .or_default()
            .insert(self.node);
        Ok(())
    }

    async fn unsubscribe(&self, user: &str) -> Result<(), BusError> {
        let mut s = self.lock();
        if let Some(set) = s.subs.get_mut(user) {
            set.remove(&self.node);
            if set.is_empty() {
                s.subs.remove(user);
            }
        }
        Ok(())
    }

    async fn claim(&self, key: &str, _value: &str, ttl: Duration) -> Result<bool, BusError> {
        let now = Instant::now();
        let mut s = self.lock();
        s.claims.retain(|_, expiry| *expiry > now);
        if s.claims.contains_key(key) {
            return Ok(false);
        }
        s.claims.insert(key.to_string(), now + ttl);
        Ok(true)
    }

    async fn set_online(&self, user: &str, device: &str, ttl: Duration) -> Result<(), BusError> {
        let expiry = Instant::now() + ttl;
        self.lock()
            .online
            .entry(user.to_string())
            .or_default()
            .insert(device.to_string(), expiry);
        Ok(())
    }

    async fn set_offline(&self, user: &str, device: &str, now_ms: u64) -> Result<(), BusError> {
        let mut s = self.lock();
        if let Some(devices) = s.online.get_mut(user) {
            devices.remove(device);
            if devices.is_empty() {
                s.online.remove(user);
            }
        }
        s.last_seen.insert(user.to_string(), now_ms);
        Ok(())
    }

    async fn presence(&self, user: &str) -> Result<PresenceState, BusError> {
        let now = Instant::now();
        let s = self.lock();
        let online = s
            .online
            .get(user)
            .is_some_and(|d| d.values().any(|expiry| *expiry > now));
        Ok(PresenceState {
            online,
            last_seen: s.last_seen.get(user).copied(),
        })
    }

    async fn store_missed(
        &self,
        user: &str,
        payload: String,
        _ttl: Duration,
    ) -> Result<(), BusError> {
        let mut s = self.lock();
        let list = s.missed.entry(user.to_string()).or_default();
        // Bounded like the Redis list: the oldest missed calls go first.
        if list.len() >= super::MAX_MISSED {
            list.remove(0);
        }
        list.push(payload);
        Ok(())
    }

    async fn take_missed(&self, user: &str) -> Result<Vec<String>, BusError> {
        Ok(self.lock().missed.remove(user).unwrap_or_default())
    }
}
