//! Turnpike's signaling service: the channel call clients keep open to find who is online,
//! ring each other, exchange SDP and ICE candidates and get relay credentials
//! (its place in Turnpike is in ARCHITECTURE.md, "Signaling"; the protocol is in
//! `docs/signaling.md`).
//!
//! Layout: [`protocol`] (the JSON messages), [`call`] (the pure call state machine),
//! [`presence`], [`token`] (bearer tokens), [`credentials`] (ICE servers and TURN REST
//! credentials), [`bus`] (in-process or Redis, for several nodes), [`push`] (webhook for
//! offline callees), [`metrics`] (what it exports to Prometheus), `server` (axum routes
//! and connection tasks), `node` (the task that owns a node's state), [`config`].
//!
//! Run it with [`serve`], or [`Signaling::start`] + [`Signaling::router`] to mount the
//! routes in another axum app.

pub mod bus;
pub mod call;
pub mod config;
pub mod credentials;
pub mod fleet;
pub mod metrics;
mod node;
pub mod presence;
pub mod protocol;
pub mod push;
mod server;
pub mod token;
mod web;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use config::SignalingConfig;
pub use credentials::RelayConfig;

use bus::{Bus, BusError, Incoming, LocalBus, RedisBus};
use call::{CallConfig, Switchboard};
use credentials::Credentials;
use node::{Cmd, Node};
use server::AppState;
use token::TokenKey;

/// A running signaling node (its task lives on the runtime that started it).
#[derive(Clone)]
pub struct Signaling {
    state: AppState,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to Redis: {0}")]
    Redis(BusError),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Signaling {
    /// Start a node: on Redis when `config.redis_url` is set, else on its own
    /// in-process bus. Must be called within a tokio runtime.
    pub async fn start(config: SignalingConfig) -> Result<Signaling, StartError> {
        match config.redis_url.clone() {
            Some(url) => {
                let (bus, rx) = RedisBus::connect(&url).await.map_err(StartError::Redis)?;
                Ok(Self::start_on(bus, rx, config))
            }
            None => {
                let (bus, rx) = LocalBus::new();
                Ok(Self::start_on(bus, rx, config))
            }
        }
    }

    /// Start a node on a given bus (e.g. another node of a [`LocalBus`]).
    pub fn start_on<B: Bus>(
        bus: B,
        incoming: mpsc::UnboundedReceiver<Incoming>,
        mut config: SignalingConfig,
    ) -> Signaling {
        if config.token_key.is_empty() {
            // No key configured: tokens only come from dev login, so a key that dies
            // with the process is enough.
            use rand::RngCore;
            let mut key = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            config.token_key = key;
        }
        let key = TokenKey::new(config.token_key.clone());
        let creds = Credentials::new(
            config.relays.clone(),
            config.turn_secret.clone(),
            config.credential_ttl,
        );
        let call_config = CallConfig {
            invite_lifetime_ms: millis(config.invite_lifetime),
            connect_timeout_ms: millis(config.connect_timeout),
            ..CallConfig::default()
        };
        let machine = Switchboard::new(call_config, node::random_token());
        let (fleet_news, fleet_rx) = mpsc::channel(64);
        if let Some(url) = config.fleet_redis_url.clone() {
            // Until the first read, a fleet node offers no relay rather than the static
            // list, which a fleet configuration does not describe.
            creds.set_fleet(Vec::new());
            tokio::spawn(fleet::watch(url, creds.clone(), fleet_news));
        }
        let config = Arc::new(config);
        let (cmds, cmd_rx) = mpsc::channel(1024);
        let node = Node::new(bus, machine, config.clone(), creds.clone());
        tokio::spawn(node.run(cmd_rx, incoming, fleet_rx));
        Signaling {
            state: AppState {
                cmds,
                config,
                key: Arc::new(std::sync::RwLock::new(key)),
                creds,
                next_conn: Arc::new(AtomicU64::new(1)),
            },
        }
    }

    /// `GET /v1/signal`, `GET /v1/turn-credentials`, `POST /v1/dev/login`, and the
    /// browser demo at `/`.
    pub fn router(&self) -> axum::Router {
        server::router(self.state.clone())
    }

    /// A reloaded configuration: the relays advertised, the secret relay credentials are
    /// minted with and their lifetime, and (when `token_key` is `Some` and not empty) the
    /// key bearer tokens are checked with. Connections already signed in stay; the rest of
    /// the configuration keeps its start-up values.
    pub fn reconfigure(
        &self,
        relays: Vec<RelayConfig>,
        turn_secret: Option<Vec<u8>>,
        credential_ttl: Duration,
        token_key: Option<Vec<u8>>,
    ) {
        self.state
            .creds
            .reconfigure(relays, turn_secret, credential_ttl);
        if let Some(key) = token_key.filter(|k| !k.is_empty()) {
            *self.state.key.write().unwrap_or_else(|e| e.into_inner()) = TokenKey::new(key);
        }
    }

    /// Record relay `index`'s load (index into `config.relays`); lower ranks first.
    pub fn report_load(&self, index: usize, load: u32) {
        self.state.creds.report_load(index, load);
    }

    /// Close every connection with 1001 (going away) and stop the node task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.state.cmds.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Serve signaling on `listener` until `shutdown` completes; then close connections
/// (1001) and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SignalingConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let signaling = Signaling::start(config)
        .await
        .map_err(std::io::Error::other)?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = axum::serve(listener, signaling.router()).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.await;
    signaling.shutdown().await;
    let _ = stop_tx.send(());
    // Upgraded connections were just told to close; don't wait forever for stragglers.
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => Ok(()),
    }
}
