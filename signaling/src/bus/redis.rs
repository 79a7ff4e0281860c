//! The Redis bus. Keys and channels are prefixed `turnpike:sig:` so the database can be
//! shared. Presence: `online:<user>:<device>` keys with a TTL, listed in the set
//! `devices:<user>` (stale members are pruned when read); `seen:<user>` holds last-seen.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::AsyncCommands;
use tokio::sync::{mpsc, Mutex};

use super::{Bus, BusError, Incoming, PresenceState, MAX_MISSED};

const PREFIX: &str = "turnpike:sig:";

fn user_channel(user: &str) -> String {
    format!("{PREFIX}user:{user}")
}

fn presence_channel() -> String {
    format!("{PREFIX}presence")
}

fn err(e: redis::RedisError) -> BusError {
    BusError(e.to_string())
}

/// A node's connection to Redis: one multiplexed connection for commands, one pub/sub
/// connection whose messages a background task forwards to the node.
#[derive(Clone)]
pub struct RedisBus {
    conn: MultiplexedConnection,
    sink: Arc<Mutex<PubSubSink>>,
}

impl RedisBus {
    pub async fn connect(
        url: &str,
    ) -> Result<(RedisBus, mpsc::UnboundedReceiver<Incoming>), BusError> {
        let client = redis::Client::open(url).map_err(err)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(err)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(err)?;
        pubsub.subscribe(presence_channel()).await.map_err(err)?;
        let (sink, mut stream) = pubsub.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let user_prefix = format!("{PREFIX}user:");
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                let channel = msg.get_channel_name();
                let incoming = match channel.strip_prefix(&user_prefix) {
                    Some(user) => Incoming::User {
                        user: user.to_string(),
                        payload,
                    },
                    None => Incoming::Presence(payload),
                };
                if tx.send(incoming).is_err() {
                    break;
                }
            }
            tracing::warn!("redis pub/sub connection closed");
        });
        Ok((
            RedisBus {
                conn,
                sink: Arc::new(Mutex::new(sink)),
            },
            rx,
        ))
    }
}

impl Bus for RedisBus {
    async fn publish_user(&self, user: &str, payload: String) -> Result<(), BusError> {
        let mut c = self.conn.clone();
        c.publish::<_, _, i64>(user_channel(user), payload)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn publish_presence(&self, payload: String) -> Result<(), BusError> {
        let mut c = self.conn.clone();
        c.publish::<_, _, i64>(presence_channel(), payload)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn subscribe(&self, user: &str) -> Result<(), BusError> {
        self.sink
            .lock()
            .await
            .subscribe(user_channel(user))
            .await
            .map_err(err)
    }

    async fn unsubscribe(&self, user: &str) -> Result<(), BusError> {
        self.sink
            .lock()
            .await
            .unsubscribe(user_channel(user))
            .await
            .map_err(err)
    }

    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, BusError> {
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{PREFIX}claim:{key}"))
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut c)
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn set_online(&self, user: &str, device: &str, ttl: Duration) -> Result<(), BusError> {
        let mut c = self.conn.clone();
        redis::pipe()
            .set_ex(
                format!("{PREFIX}online:{user}:{device}"),
                1,
                ttl.as_secs().max(1),
            )
            .ignore()
            .sadd(format!("{PREFIX}devices:{user}"), device)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(err)
    }

    async fn set_offline(&self, user: &str, device: &str, now_ms: u64) -> Result<(), BusError> {
        let mut c = self.conn.clone();
        redis::pipe()
            .del(format!("{PREFIX}online:{user}:{device}"))
            .ignore()
            .srem(format!("{PREFIX}devices:{user}"), device)
            .ignore()
            .set(format!("{PREFIX}seen:{user}"), now_ms)
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(err)
    }

    async fn presence(&self, user: &str) -> Result<PresenceState, BusError> {
        let mut c = self.conn.clone();
        let devices: Vec<String> = c
            .smembers(format!("{PREFIX}devices:{user}"))
            .await
            .map_err(err)?;
        let mut online = false;
        for device in devices {
            let alive: bool = c
                .exists(format!("{PREFIX}online:{user}:{device}"))
                .await
                .map_err(err)?;
            if alive {
                online = true;
            } else {
                // The node holding it died without saying so; its key lapsed.
                let _: i64 = c
                    .srem(format!("{PREFIX}devices:{user}"), &device)
                    .await
                    .map_err(err)?;
            }
        }
        let last_seen: Option<u64> = c.get(format!("{PREFIX}seen:{user}")).await.map_err(err)?;
        Ok(PresenceState { online, last_seen })
    }

    async fn store_missed(
        &self,
        user: &str,
        payload: String,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let key = format!("{PREFIX}missed:{user}");
        let mut c = self.conn.clone();
        let keep = isize::try_from(MAX_MISSED).unwrap_or(100);
        redis::pipe()
            .atomic()
            .rpush(&key, payload)
            .ignore()
            .ltrim(&key, -keep, -1)
            .ignore()
            .expire(&key, i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(err)
    }

    async fn take_missed(&self, user: &str) -> Result<Vec<String>, BusError> {
        let key = format!("{PREFIX}missed:{user}");
        let mut c = self.conn.clone();
        let (list, _): (Vec<String>, i64) = redis::pipe()
            .atomic()
            .lrange(&key, 0, -1)
            .del(&key)
            .query_async(&mut c)
            .await
            .map_err(err)?;
        Ok(list)
    }
}
