//! The Redis bus. Keys and channels are prefixed `turnpike:sig:` so the database can be
//! shared. Presence: `online:<user>:<device>` keys with a TTL, listed in the set
//! `devices:<user>` (stale members are pruned when read); `seen:<user>` holds last-seen.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Redis is down (or was moments ago): the call fails at once rather than waiting.
fn unavailable() -> BusError {
    BusError("redis unavailable".into())
}

/// How long a connection attempt may take. The node awaits bus calls on its one task,
/// so every wait on a dead Redis delays all its sessions.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failed connection attempt, bus calls fail at once for this long before the
/// next attempt (commands), or the pub/sub connection waits this long (doubling up to
/// [`MAX_RETRY`]) before trying again.
const RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// A node's connection to Redis, surviving Redis restarts: commands go over one
/// multiplexed connection, made again on the first command after it broke; pub/sub
/// messages come from a connection a background task keeps up, subscribing again to
/// every channel the node listens to whenever it reconnects. While Redis is down, bus
/// calls fail at once; events published meanwhile are lost (each node still serves the
/// calls whose parties it holds).
#[derive(Clone)]
pub struct RedisBus {
    commands: Arc<Commands>,
    subs: Arc<Mutex<Subscriptions>>,
}

struct Commands {
    client: redis::Client,
    /// The connection, or when the last attempt to make one failed.
    conn: Mutex<Result<MultiplexedConnection, Instant>>,
}

impl Commands {
    async fn conn(&self) -> Result<MultiplexedConnection, BusError> {
        let mut conn = self.conn.lock().await;
        match &*conn {
            Ok(c) => return Ok(c.clone()),
            Err(failed) if failed.elapsed() < RETRY => return Err(unavailable()),
            Err(_) => {}
        }
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await;
        match attempt {
            Ok(Ok(c)) => {
                tracing::info!("redis: connected again");
                *conn = Ok(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                *conn = Err(Instant::now());
                Err(err(e))
            }
            Err(_) => {
                *conn = Err(Instant::now());
                Err(unavailable())
            }
        }
    }

    /// Runs `command` on the connection; a connection that broke is dropped, so the
    /// next command makes a new one.
    async fn run<T>(
        &self,
        command: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, BusError> {
        let mut c = self.conn().await?;
        let result = command(&mut c).await;
        if let Err(e) = &result {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                tracing::warn!("redis: connection lost ({e})");
                *self.conn.lock().await = Err(Instant::now());
            }
        }
        result.map_err(err)
    }
}

/// The user channels this node listens to, and the live pub/sub connection's sink.
struct Subscriptions {
    users: HashSet<String>,
    sink: Option<PubSubSink>,
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
        let pubsub = client.get_async_pubsub().await.map_err(err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let subs = Arc::new(Mutex::new(Subscriptions {
            users: HashSet::new(),
            sink: None,
        }));
        let stream = listen(pubsub, &subs).await.map_err(err)?;
        tokio::spawn(keep_listening(client.clone(), subs.clone(), stream, tx));
        Ok((
            RedisBus {
                commands: Arc::new(Commands {
                    client,
                    conn: Mutex::new(Ok(conn)),
                }),
                subs,
            },
            rx,
        ))
    }
}

/// Subscribes `pubsub` to the presence channel and every channel in `subs`, and makes
/// its sink the one `subscribe`/`unsubscribe` use; returns its message stream.
async fn listen(
    pubsub: redis::aio::PubSub,
    subs: &Mutex<Subscriptions>,
) -> redis::RedisResult<PubSubStream> {
    let (mut sink, stream) = pubsub.split();
    let mut subs = subs.lock().await;
    sink.subscribe(presence_channel()).await?;
    for user in &subs.users {
        sink.subscribe(user_channel(user)).await?;
    }
    subs.sink = Some(sink);
    Ok(stream)
}

type PubSubStream = redis::aio::PubSubStream;

/// Forwards pub/sub messages to the node; when the connection ends (Redis stopped),
/// connects again with growing pauses and listens again. Ends with the node.
async fn keep_listening(
    client: redis::Client,
    subs: Arc<Mutex<Subscriptions>>,
    mut stream: PubSubStream,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let user_prefix = format!("{PREFIX}user:");
    loop {
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
                return;
            }
        }
        subs.lock().await.sink = None;
        tracing::warn!("redis pub/sub connection lost; reconnecting");
        let mut pause = RETRY;
        stream = loop {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY);
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub()).await;
            let Ok(Ok(pubsub)) = attempt else {
                continue;
            };
            match listen(pubsub, &subs).await {
                Ok(stream) => break stream,
                Err(e) => tracing::warn!("redis pub/sub: cannot subscribe again: {e}"),
            }
        };
        tracing::info!("redis pub/sub connected again");
    }
}

impl Bus for RedisBus {
    async fn publish_user(&self, user: &str, payload: String) -> Result<(), BusError> {
        let channel = user_channel(user);
        self.commands
            .run(async |c| c.publish::<_, _, i64>(channel, payload).await)
            .await?;
        Ok(())
    }

    async fn publish_presence(&self, payload: String) -> Result<(), BusError> {
        self.commands
            .run(async |c| c.publish::<_, _, i64>(presence_channel(), payload).await)
            .await?;
        Ok(())
    }

    async fn subscribe(&self, user: &str) -> Result<(), BusError> {
        let mut subs = self.subs.lock().await;
        let Some(sink) = subs.sink.as_mut() else {
            return Err(unavailable());
        };
        match sink.subscribe(user_channel(user)).await {
            Ok(()) => {
                subs.users.insert(user.to_string());
                Ok(())
            }
            // A dead connection also ends its stream, and `keep_listening` replaces it.
            Err(e) => Err(err(e)),
        }
    }

    async fn unsubscribe(&self, user: &str) -> Result<(), BusError> {
        let mut subs = self.subs.lock().await;
        subs.users.remove(user);
        match subs.sink.as_mut() {
            Some(sink) => sink.unsubscribe(user_channel(user)).await.map_err(err),
            // Not connected: the next connection does not subscribe it.
            None => Ok(()),
        }
    }

    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, BusError> {
        let set: Option<String> = self
            .commands
            .run(async |c| {
                redis::cmd("SET")
                    .arg(format!("{PREFIX}claim:{key}"))
                    .arg(value)
                    .arg("NX")
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn set_online(&self, user: &str, device: &str, ttl: Duration) -> Result<(), BusError> {
        self.commands
            .run(async |c| {
                redis::pipe()
                    .set_ex(
                        format!("{PREFIX}online:{user}:{device}"),
                        1,
                        ttl.as_secs().max(1),
                    )
                    .ignore()
                    .sadd(format!("{PREFIX}devices:{user}"), device)
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await
    }

    async fn set_offline(&self, user: &str, device: &str, now_ms: u64) -> Result<(), BusError> {
        self.commands
            .run(async |c| {
                redis::pipe()
                    .del(format!("{PREFIX}online:{user}:{device}"))
                    .ignore()
                    .srem(format!("{PREFIX}devices:{user}"), device)
                    .ignore()
                    .set(format!("{PREFIX}seen:{user}"), now_ms)
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await
    }

    async fn presence(&self, user: &str) -> Result<PresenceState, BusError> {
        self.commands
            .run(async |c| {
                let devices: Vec<String> = c.smembers(format!("{PREFIX}devices:{user}")).await?;
                let mut online = false;
                for device in devices {
                    let alive: bool = c.exists(format!("{PREFIX}online:{user}:{device}")).await?;
                    if alive {
                        online = true;
                    } else {
                        // The node holding it died without saying so; its key lapsed.
                        let _: i64 = c.srem(format!("{PREFIX}devices:{user}"), &device).await?;
                    }
                }
                let last_seen: Option<u64> = c.get(format!("{PREFIX}seen:{user}")).await?;
                Ok(PresenceState { online, last_seen })
            })
            .await
    }

    async fn store_missed(
        &self,
        user: &str,
        payload: String,
        ttl: Duration,
    ) -> Result<(), BusError> {
        let key = format!("{PREFIX}missed:{user}");
        let keep = isize::try_from(MAX_MISSED).unwrap_or(100);
        self.commands
            .run(async |c| {
                redis::pipe()
                    .atomic()
                    .rpush(&key, payload)
                    .ignore()
                    .ltrim(&key, -keep, -1)
                    .ignore()
                    .expire(&key, i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async::<()>(c)
                    .await
            })
            .await
    }

    async fn take_missed(&self, user: &str) -> Result<Vec<String>, BusError> {
        let key = format!("{PREFIX}missed:{user}");
        let (list, _): (Vec<String>, i64) = self
            .commands
            .run(async |c| {
                redis::pipe()
                    .atomic()
                    .lrange(&key, 0, -1)
                    .del(&key)
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(list)
    }
}
