//! `turnpike serve`: validated [`Settings`] become running components — the relay
//! workers (`crate::net`), the metrics and health endpoints, the signaling service
//! (`turnpike_signaling`), and signal handling.
//!
//! Config flows one way (TOML → validated settings → plain component configs;
//! ARCHITECTURE.md, "Configuration"): this is the only place that turns settings into
//! each component's plain config struct; nothing reads files or the environment later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};

use crate::config::Settings;
use crate::fastpath::FastPath;
use crate::net::{self, NetConfig, RelayHandle};
use crate::proto::auth::mint_rest_credential;
use crate::proto::bandwidth::{Bandwidth, BandwidthCaps};
use crate::proto::peer_policy::PeerPolicy;
use crate::proto::quota::Quotas;
use crate::proto::throttle::AuthThrottle;
use crate::proto::{RelayIp, ServerConfig, SharedPool};
use crate::reload::{ConfigSource, Reloader};
use crate::sd_notify::Notifier;

/// How `turnpike serve` was started, beyond the settings: where to read the
/// configuration again on reload, and where to write the process id.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The file and overrides the settings came from (re-read by a reload).
    pub source: ConfigSource,
    /// Written with the process id once listening, removed at exit (for
    /// `turnpike reload --pid-file`).
    pub pid_file: Option<PathBuf>,
}

/// Run the relay with `settings` until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    run_with(settings, ServeOptions::default())
}

/// Run the relay until it has drained after SIGTERM, or until SIGINT or a second
/// SIGTERM; SIGHUP reloads the configuration (see `crate::reload` and README
/// "Operating Turnpike").
pub fn run_with(settings: Settings, options: ServeOptions) -> anyhow::Result<()> {
    crate::logging::init(&settings.log)?;
    crate::logging::log_panics();
    // Read once, before anything else could change the environment.
    let notifier = Notifier::from_env();
    // `Settings`' Debug output redacts passwords and secrets (see `config::Secret`).
    tracing::debug!(settings = ?settings, "effective settings");
    let prometheus = crate::metrics::install_recorder();
    crate::metrics::init_operations_metrics(
        settings.tls.as_ref().map(|tls| tls.certificate.as_path()),
    );

    let (net_config, shared) = build_net_config(&settings)?;
    // Signaling mints relay credentials with the secret the relay verifies first: the
    // first configured one, or the ephemeral one `net_config` made.
    let turn_secret = net_config.server.secrets.first().cloned();
    let base = net_config.server.clone();
    log_relay_addresses(&base);
    let relay = net::start(net_config).context("cannot start the relay")?;
    let mut reloader = Reloader::new(options.source.clone(), settings.clone(), base, shared);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("turnpike-control")
        .enable_all()
        .build()
        .context("cannot start the control-plane runtime")?;
    let result = runtime.block_on(async {
        let ready = Arc::new(AtomicBool::new(false));
        let (admin_tx, admin_rx) = mpsc::channel::<AdminReload>(4);
        if let Some(addr) = settings.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics.listen: cannot bind {addr}"))?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            // The admin endpoints (reload, allocations) only where no one but this host
            // can reach them.
            let admin = if addr.ip().is_loopback() {
                admin_router(admin_tx.clone())
                    .merge(crate::admin::router(relay.reporter(), settings.rtp_quality))
            } else {
                axum::Router::new()
            };
            let (handle, ready) = (prometheus.clone(), ready.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve_http(listener, handle, ready, admin).await {
                    tracing::error!("metrics endpoint stopped: {e}");
                }
            });
        }
        let announcer = settings
            .fleet
            .as_ref()
            .filter(|f| f.announce)
            .map(|f| crate::fleet::Announcer::start(fleet_identity(&settings, f, &relay)));
        let signaling = match &settings.signaling {
            Some(sig) => Some(start_signaling(&settings, sig, turn_secret).await?),
            None => None,
        };
        let _pid_file = match &options.pid_file {
            Some(path) => Some(PidFile::write(path)?),
            None => None,
        };
        // The handlers go in before anyone is told the relay is ready: a SIGHUP or
        // SIGTERM sent right after READY=1 (systemd's reload, a quick stop) must find
        // them, not the default action, which ends the process.
        let signals = Signals::install()?;
        ready.store(true, Ordering::Release);
        notifier.notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=relaying",
            std::process::id()
        ));
        tracing::info!("ready");
        let control = Control {
            relay: &relay,
            reloader: &mut reloader,
            notifier: &notifier,
            ready: &ready,
            signaling,
            signaling_stopping: None,
            announcer: announcer.as_ref(),
        };
        let result = control.run(admin_rx, signals).await;
        if let Some(announcer) = announcer {
            announcer.stop().await;
        }
        result
    });
    tracing::info!("shutting down");
    relay.shutdown();
    result
}

/// A reload asked for over HTTP, and where to send its outcome.
type AdminReload = oneshot::Sender<Result<String, String>>;

/// `POST /admin/reload` on the metrics listener: reloads like SIGHUP and answers 200
/// with a summary, or 400 with the configuration error.
fn admin_router(requests: mpsc::Sender<AdminReload>) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new().route(
        "/admin/reload",
        axum::routing::post(move || {
            let requests = requests.clone();
            async move {
                let (tx, rx) = oneshot::channel();
                if requests.send(tx).await.is_err() {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting down\n".to_string(),
                    );
                }
                match rx.await {
                    Ok(Ok(summary)) => (StatusCode::OK, format!("{summary}\n")),
                    Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "shutting down\n".to_string(),
                    ),
                }
            }
        }),
    )
}

/// The control plane's loop: signals, reloads, the drain and the watchdog.
struct Control<'a> {
    relay: &'a RelayHandle,
    reloader: &'a mut Reloader,
    notifier: &'a Notifier,
    ready: &'a AtomicBool,
    signaling: Option<SignalingHandle>,
    /// Signaling being stopped since the drain began (its clients told 1001); awaited
    /// before exit, so a drain that ends at once still delivers the close frames.
    signaling_stopping: Option<tokio::task::JoinHandle<()>>,
    /// The fleet heartbeat, told at once when the drain starts.
    announcer: Option<&'a crate::fleet::Announcer>,
}

/// The signals the control plane handles, registered with the runtime.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Control<'_> {
    async fn run(
        mut self,
        mut admin: mpsc::Receiver<AdminReload>,
        signals: Signals,
    ) -> anyhow::Result<()> {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        // Without systemd's watchdog the tick still runs, once an hour, doing nothing.
        let watchdog = self.notifier.watchdog_interval();
        let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut draining = false;
        let mut failure = None;
        loop {
            tokio::select! {
                (index, panicked) = self.relay.worker_ended() => {
                    // Running short-handed would strand the clients the kernel keeps
                    // sending to that worker's sockets: exit non-zero, so the service
                    // manager restarts the relay whole.
                    let how = if panicked { "panicked" } else { "stopped" };
                    tracing::error!(worker = index, "relay worker {index} {how}: exiting");
                    failure = Some(anyhow::anyhow!("relay worker {index} {how}"));
                    break;
                }
                _ = term.recv() => {
                    if draining {
                        tracing::warn!("second SIGTERM: exiting now, allocations left are cut");
                        break;
                    }
                    draining = true;
                    self.start_drain().await;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    break;
                }
                _ = hup.recv() => {
                    let _ = self.reload("SIGHUP");
                }
                Some(reply) = admin.recv() => {
                    let _ = reply.send(self.reload("POST /admin/reload"));
                }
                _ = self.relay.drained(), if draining => {
                    tracing::info!("drained: every allocation has ended or the drain timeout passed");
                    break;
                }
                _ = tick.tick(), if watchdog.is_some() => {
                    // A worker that died (a panic, a failed poll) stops the keep-alives,
                    // so systemd restarts the relay instead of running it short-handed.
                    if self.relay.workers_alive() {
                        self.notifier.notify("WATCHDOG=1");
                    } else {
                        tracing::error!("a relay worker has stopped: withholding the systemd watchdog keep-alive");
                    }
                }
            }
        }
        if !draining {
            self.notifier.notify("STOPPING=1\nSTATUS=stopping");
            self.ready.store(false, Ordering::Release);
        }
        if let Some(signaling) = self.signaling.take() {
            stop_signaling(signaling).await;
        }
        if let Some(stopping) = self.signaling_stopping.take() {
            // The close frames go out as soon as the sessions are told; a second of
            // grace delivers them without holding up an exit asked for at once.
            let _ = tokio::time::timeout(Duration::from_secs(1), stopping).await;
        }
        failure.map_or(Ok(()), Err)
    }

    /// SIGTERM: report not-ready at once, tell systemd, stop taking allocations, and
    /// send signaling clients elsewhere; the relay keeps serving what it has.
    async fn start_drain(&mut self) {
        self.ready.store(false, Ordering::Release);
        crate::metrics::set_draining(true);
        if let Some(announcer) = self.announcer {
            announcer.drain();
        }
        let timeout = self.reloader.current().drain_timeout;
        self.relay.drain(Instant::now() + timeout);
        self.notifier.notify(&format!(
            "STOPPING=1\nSTATUS=draining: no new allocations, exiting when the last one ends \
             or in {} s",
            timeout.as_secs()
        ));
        tracing::info!(
            timeout_secs = timeout.as_secs(),
            "SIGTERM: draining (new allocations refused; SIGTERM again or SIGINT exits now)"
        );
        // On a task of its own: the loop keeps answering signals and reloads meanwhile.
        if let Some(signaling) = self.signaling.take() {
            self.signaling_stopping = Some(tokio::spawn(stop_signaling(signaling)));
        }
    }

    /// Reload, telling systemd before and after; logs and returns the outcome.
    fn reload(&mut self, by: &str) -> Result<String, String> {
        self.notifier.reloading();
        let outcome = self.reloader.reload(self.relay);
        let status = match &outcome {
            Ok(done) => {
                let settings = self.reloader.current();
                if let (Some((signaling, _, _)), Some(sig)) = (&self.signaling, &settings.signaling)
                {
                    signaling.reconfigure(
                        signaling_relays(settings, sig),
                        done.turn_secret.clone(),
                        sig.credential_ttl,
                        Some(sig.token_key.expose().as_bytes().to_vec()),
                    );
                }
                if done.needs_restart.is_empty() {
                    tracing::info!("{by}: configuration reloaded");
                } else {
                    tracing::warn!(
                        "{by}: configuration reloaded; changed keys that need a restart \
                         (still running with their old values): {}",
                        done.needs_restart.join(", ")
                    );
                }
                "relaying (configuration reloaded)"
            }
            Err(e) => {
                tracing::error!("{by}: configuration refused, the running one stays: {e}");
                "relaying (last reload refused)"
            }
        };
        self.notifier.notify(&format!("READY=1\nSTATUS={status}"));
        outcome.map(|done| {
            if done.needs_restart.is_empty() {
                "reloaded".to_string()
            } else {
                format!(
                    "reloaded; needs a restart: {}",
                    done.needs_restart.join(", ")
                )
            }
        })
    }
}

/// Closes signaling connections with 1001 (going away: reconnect) and stops the
/// signaling listener, so clients find another node.
async fn stop_signaling((signaling, stop, server): SignalingHandle) {
    signaling.shutdown().await;
    let _ = stop.send(());
    // Connections were told to close (1001); don't wait long for stragglers.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

/// The process id in a file, for `turnpike reload --pid-file`; removed on drop.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> anyhow::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("--pid-file {}: cannot write", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type SignalingHandle = (
    turnpike_signaling::Signaling,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Start the signaling service on `sig.listen`, on the control-plane runtime.
async fn start_signaling(
    settings: &Settings,
    sig: &crate::config::Signaling,
    turn_secret: Option<Vec<u8>>,
) -> anyhow::Result<SignalingHandle> {
    let relays = signaling_relays(settings, sig);
    let config = turnpike_signaling::SignalingConfig {
        token_key: sig.token_key.expose().as_bytes().to_vec(),
        dev_login: sig.dev_login,
        invite_lifetime: sig.invite_lifetime,
        connect_timeout: sig.connect_timeout,
        resume_grace: sig.resume_grace,
        relays,
        turn_secret,
        credential_ttl: sig.credential_ttl,
        max_frame_bytes: sig.max_frame_bytes,
        invites_per_minute: sig.invites_per_minute,
        push_webhook: sig.push_webhook.clone(),
        redis_url: sig.redis_url.as_ref().map(|u| u.expose().to_string()),
        fleet_redis_url: settings
            .fleet
            .as_ref()
            .map(|f| f.redis_url.expose().to_string()),
        ..turnpike_signaling::SignalingConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(sig.listen)
        .await
        .with_context(|| format!("signaling.listen: cannot bind {}", sig.listen))?;
    let signaling = turnpike_signaling::Signaling::start(config)
        .await
        .context("cannot start signaling")?;
    let local = listener.local_addr()?;
    tracing::info!(
        "signaling on ws://{local}/v1/signal, call demo page on http://{local}/{}",
        if sig.dev_login {
            " (dev login on: POST /v1/dev/login issues tokens for any name)"
        } else {
            ""
        }
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = signaling.router();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok((signaling, stop, server))
}

/// How this relay appears in the fleet registry: its configured public URLs (or its
/// listen addresses), and its id (or the first URL's `host:port`).
fn fleet_identity(
    settings: &Settings,
    fleet: &crate::config::Fleet,
    relay: &RelayHandle,
) -> crate::fleet::Identity {
    let urls = if fleet.public_urls.is_empty() {
        own_relay_urls(settings)
    } else {
        fleet.public_urls.clone()
    };
    let id = fleet.id.clone().unwrap_or_else(|| {
        urls.first()
            .map(|u| turnpike_signaling::fleet::relay_key(u))
            .unwrap_or_else(|| "relay".to_string())
    });
    crate::fleet::Identity {
        redis_url: fleet.redis_url.expose().to_string(),
        id,
        region: fleet.region.clone(),
        urls,
        quality: settings.rtp_quality.then(|| relay.reporter()),
    }
}

/// The relays signaling advertises: the configured ones, or this relay.
fn signaling_relays(
    settings: &Settings,
    sig: &crate::config::Signaling,
) -> Vec<turnpike_signaling::RelayConfig> {
    if sig.relays.is_empty() {
        vec![turnpike_signaling::RelayConfig {
            region: "default".into(),
            urls: own_relay_urls(settings),
        }]
    } else {
        sig.relays
            .iter()
            .map(|r| turnpike_signaling::RelayConfig {
                region: r.region.clone(),
                urls: r.urls.clone(),
            })
            .collect()
    }
}

/// `turn:`/`turns:` URIs (and `masque://` for QUIC) for this relay's own listeners
/// (wildcards expanded to interface addresses; IPv4 replaced by `relay.external_ipv4`
/// when set), for `hello_ok` when no relays are configured.
fn own_relay_urls(settings: &Settings) -> Vec<String> {
    let external_v4 = settings.relay.ipv4.and_then(|r| r.external);
    let host = |addr: &SocketAddr| match (addr.ip(), external_v4) {
        (IpAddr::V4(_), Some(ext)) => format!("{ext}:{}", addr.port()),
        _ => addr.to_string(),
    };
    let mut urls: Vec<String> = Vec::new();
    let lists = [
        ("turn", "udp", &settings.listen.udp),
        ("turn", "tcp", &settings.listen.tcp),
        ("turns", "tcp", &settings.listen.tls),
    ];
    for (scheme, transport, addrs) in lists {
        for addr in expand_wildcards(addrs) {
            let url = format!("{scheme}:{}?transport={transport}", host(&addr));
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
    // TURN over QUIC; signaling hands these out apart from the TURN URIs (`quic_urls`).
    for addr in expand_wildcards(&settings.listen.quic) {
        let url = format!("masque://{}", host(&addr));
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// Settings → the shell's and the core's config.
pub fn net_config(settings: &Settings) -> anyhow::Result<NetConfig> {
    build_net_config(settings).map(|(config, _)| config)
}

/// [`net_config`], and the shared pool behind it (a reload changes its quotas).
fn build_net_config(settings: &Settings) -> anyhow::Result<(NetConfig, Arc<SharedPool>)> {
    let fast_path = if settings.fast_path_interfaces.is_empty() {
        None
    } else {
        let fast_path = FastPath::load(&settings.fast_path_interfaces)
            .context("server.fast_path_interfaces")?;
        tracing::info!(
            interfaces = ?settings.fast_path_interfaces,
            "in-kernel ChannelData fast path attached"
        );
        Some(Arc::new(fast_path))
    };
    let quic = expand_wildcards(&settings.listen.quic);
    let quic_config = if quic.is_empty() {
        None
    } else {
        Some(quic_config(settings, &quic)?)
    };
    let tls_config = match &settings.tls {
        Some(tls) if !settings.listen.tls.is_empty() => Some(net::tls::load_server_config(
            &tls.certificate,
            &tls.private_key,
        )?),
        _ => None,
    };
    // The core knows wall time as "unix second S began at Instant I": take I back to
    // the start of the current second so the pair is exact, not up to a second off.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let unix_now = since_epoch.as_secs();
    let second_began = Instant::now()
        .checked_sub(Duration::from_nanos(u64::from(since_epoch.subsec_nanos())))
        .unwrap_or_else(Instant::now);
    let mut nonce_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce_key);
    let mut base = ServerConfig::new(nonce_key, (second_began, unix_now));
    if settings.auth.users.is_empty() && settings.auth.secrets.is_empty() {
        // Nothing configured (the embedded default): rather than a relay nobody can
        // use, make an ephemeral REST secret and show one short-lived credential, so
        // `cargo run -- serve` works out of the box. It dies with the process.
        let mut secret = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = base64_encode(&secret);
        let (username, password) = mint_rest_credential(secret.as_bytes(), "demo", unix_now + 3600);
        tracing::warn!(
            "no auth.users or auth.secrets configured: using an ephemeral shared secret; \
             a credential valid for one hour: username={username} password={password}"
        );
        base.secrets.push(secret.into_bytes());
    }
    let server = server_config(settings, &base);
    let limits = &settings.limits;
    let caps = BandwidthCaps {
        per_allocation: limits.max_bps_per_allocation,
        per_user: limits.max_bps_per_user,
        total: limits.max_bps_total,
    };
    if caps.any() && fast_path.is_some() {
        tracing::warn!(
            "limits.max_bps_* are set: the in-kernel fast path stays attached but forwards \
             nothing, since it could not count what it forwards against the caps"
        );
    }
    if settings.rtp_quality && fast_path.is_some() {
        tracing::warn!(
            "telemetry.rtp_quality is on: the in-kernel fast path stays attached but forwards \
             nothing, so that every relayed packet is measured"
        );
    }
    let mut throttle_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut throttle_key);
    let origin = Instant::now();
    let shared = Arc::new(
        SharedPool::new(
            settings.relay.ports.clone(),
            Quotas::new(
                limits.user_quota.unwrap_or(0),
                limits.total_quota.unwrap_or(0),
            ),
        )
        .with_auth_throttle(AuthThrottle::new(
            limits.auth_failures_per_minute,
            limits.auth_cooldown,
            throttle_key,
            origin,
        ))
        .with_bandwidth(Bandwidth::new(caps, origin)),
    );
    let config = NetConfig {
        workers: settings.workers,
        busy_poll: settings.busy_poll,
        coalesce: settings.coalesce,
        fast_path,
        // UDP answers must leave from the address the client sent to, and the core
        // advertises relayed addresses from it: a wildcard socket knows neither, so
        // listen on each interface address instead (as coturn does). Streams learn
        // their local address from the accepted socket, so they keep the wildcard.
        udp: expand_wildcards(&settings.listen.udp),
        tcp: settings.listen.tcp.clone(),
        tls: settings.listen.tls.clone(),
        tls_config,
        quic,
        quic_config,
        server,
        shared: shared.clone(),
        rng_seed: u64::from_le_bytes(nonce_key[..8].try_into().unwrap_or([0; 8])),
        conn_limits: net::ConnLimitsConfig {
            max_connections: limits.max_connections,
            max_per_source: limits.max_connections_per_source,
            unauthenticated_timeout: limits.unauthenticated_timeout,
        },
    };
    Ok((config, shared))
}

/// The core's configuration from `settings`. `base` carries what the settings do not
/// hold: the nonce key and clock anchor, and the ephemeral REST secret (in
/// `base.secrets`) used when no user or secret is configured. Start-up and every
/// reload build it here, so the two cannot disagree.
pub fn server_config(settings: &Settings, base: &ServerConfig) -> ServerConfig {
    let mut secrets: Vec<Vec<u8>> = settings
        .auth
        .secrets
        .iter()
        .map(|s| s.expose().as_bytes().to_vec())
        .collect();
    if settings.auth.users.is_empty() && secrets.is_empty() {
        secrets.clone_from(&base.secrets);
    }
    ServerConfig {
        realm: settings.realm.clone(),
        software: settings.software.clone(),
        users: settings
            .auth
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.expose().to_owned()))
            .collect(),
        secrets,
        max_credential_lifetime: settings.auth.max_credential_lifetime,
        nonce_lifetime: settings.auth.nonce_lifetime,
        default_lifetime: settings.relay.default_lifetime,
        max_lifetime: settings.relay.max_lifetime,
        relay_v4: settings.relay.ipv4.as_ref().map(|r| RelayIp {
            bind: r.bind,
            advertise: r.external,
            host: r
                .bind
                .is_unspecified()
                .then(crate::host_addrs::ipv4)
                .flatten(),
        }),
        relay_v6: settings.relay.ipv6.as_ref().map(|r| RelayIp {
            bind: r.bind,
            advertise: r.external,
            host: r
                .bind
                .is_unspecified()
                .then(crate::host_addrs::ipv6)
                .flatten(),
        }),
        max_username_len: settings.limits.max_username_len,
        rfc5766_channel_numbers: settings.relay.rfc5766_channel_numbers,
        peer_policy: peer_policy(settings),
        alternate_servers: settings.alternate_servers.clone(),
        rtp_quality: settings.rtp_quality,
        ..ServerConfig::new(base.nonce_key, base.unix_anchor)
    }
}

/// Says which address a client of the other family is given for each wildcard relay
/// family (see `crate::host_addrs`), or that such clients get 440.
fn log_relay_addresses(config: &ServerConfig) {
    let families = [
        ("IPv4", "IPv6", &config.relay_v4),
        ("IPv6", "IPv4", &config.relay_v6),
    ];
    for (family, other, relay) in families {
        let Some(relay) = relay.as_ref().filter(|r| r.bind.is_unspecified()) else {
            continue;
        };
        match (relay.advertise, relay.host) {
            (Some(ip), _) => {
                tracing::info!(%ip, "{family} relayed addresses: the configured external address")
            }
            (None, Some(ip)) => tracing::info!(
                %ip,
                "{family} relayed addresses: the address the client reached, or for {other} \
                 clients this host's address"
            ),
            (None, None) => tracing::warn!(
                "no usable {family} address on this host's interfaces: {other} clients asking \
                 for an {family} relayed address get 440"
            ),
        }
    }
}

/// Certificates read again for a reload: for the TLS listeners, and for the QUIC
/// listeners (when there are any, and the certificate is configured rather than
/// self-signed).
pub struct Certificates {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub quic: Option<Arc<quinn_proto::ServerConfig>>,
}

/// Reads `settings.tls` for every listener that uses it; errors name the file.
pub fn certificates(settings: &Settings) -> Result<Certificates, String> {
    let Some(tls) = &settings.tls else {
        return Ok(Certificates {
            tls: None,
            quic: None,
        });
    };
    let certs = if settings.listen.tls.is_empty() {
        None
    } else {
        Some(
            net::tls::load_server_config(&tls.certificate, &tls.private_key)
                .map_err(|e| format!("tls: {e}"))?,
        )
    };
    let quic = if settings.listen.quic.is_empty() {
        None
    } else {
        let (chain, key) = net::tls::load_certified_key(&tls.certificate, &tls.private_key)
            .map_err(|e| format!("tls: {e}"))?;
        Some(
            crate::quic::config::server_config(chain, key)
                .map_err(|e| format!("tls: not usable for QUIC: {e}"))?,
        )
    };
    Ok(Certificates { tls: certs, quic })
}

/// The QUIC listeners' TLS certificate (the configured one, or a self-signed one whose
/// fingerprint is logged) and the CONNECT-UDP targets they serve: this relay's own TURN
/// listeners, QUIC ones included.
fn quic_config(
    settings: &Settings,
    quic: &[SocketAddr],
) -> anyhow::Result<crate::quic::config::QuicConfig> {
    use crate::quic::config::{self, QuicConfig, Targets};
    let (certs, key) = match &settings.tls {
        Some(tls) => net::tls::load_certified_key(&tls.certificate, &tls.private_key)?,
        None => {
            let mut names = vec!["localhost".to_string()];
            names.extend(quic.iter().map(|a| a.ip().to_string()));
            let (certs, key, fingerprint) =
                config::self_signed(names).context("cannot make a self-signed certificate")?;
            tracing::warn!(
                sha256 = %fingerprint,
                "no [tls] certificate configured: QUIC uses a self-signed certificate made \
                 at start-up (clients must pin this fingerprint or skip verification)"
            );
            (certs, key)
        }
    };
    let server = config::server_config(certs, key).context("tls: not usable for QUIC")?;
    let mut addrs = expand_wildcards(&settings.listen.udp);
    addrs.extend(expand_wildcards(&settings.listen.tcp));
    addrs.extend(expand_wildcards(&settings.listen.tls));
    addrs.extend_from_slice(quic);
    addrs.sort();
    addrs.dedup();
    Ok(QuicConfig {
        server,
        targets: Arc::new(Targets {
            addrs,
            names: Vec::new(),
        }),
    })
}

/// The configured allow/deny lists, plus our own addresses: a peer that is one of our
/// listeners or relay ports would loop traffic through us, so it is refused even when
/// the allow list covers it (a peer on our own address would have the relay send to
/// itself, and each pass would make another; the peer policy is in
/// `turnpike_proto::peer_policy`).
fn peer_policy(settings: &Settings) -> PeerPolicy {
    let listeners: Vec<&SocketAddr> = settings
        .listen
        .udp
        .iter()
        .chain(&settings.listen.tcp)
        .chain(&settings.listen.tls)
        .collect();
    let mut ips: Vec<IpAddr> = Vec::new();
    let relay_ips = [&settings.relay.ipv4, &settings.relay.ipv6]
        .into_iter()
        .flatten()
        .flat_map(|r| [Some(r.bind), r.external])
        .flatten();
    for ip in listeners.iter().map(|a| a.ip()).chain(relay_ips) {
        if ip.is_unspecified() {
            // Bound to every interface: each interface address is ours (relayed
            // addresses are advertised from them), and loopback certainly is.
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
            let wildcard = [SocketAddr::new(ip, 0)];
            ips.extend(expand_wildcards(&wildcard).iter().map(|a| a.ip()));
        } else {
            ips.push(ip);
        }
    }
    ips.sort();
    ips.dedup();
    let mut ports: Vec<std::ops::RangeInclusive<u16>> =
        listeners.iter().map(|a| a.port()..=a.port()).collect();
    ports.push(settings.relay.ports.clone());
    PeerPolicy::new(settings.peers.allow.clone(), settings.peers.deny.clone())
        .with_own_addresses(ips, ports)
}

/// Replace each wildcard address (`0.0.0.0:p`, `[::]:p`) by the interface addresses of
/// its family on the same port. IPv6 link-local addresses are skipped (they need a
/// scope and are no use to a relay). Interfaces that appear later are not picked up.
fn expand_wildcards(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let interfaces: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("cannot list interface addresses ({e}); listening on wildcards");
            return addrs.to_vec();
        }
    };
    let mut out = Vec::new();
    for addr in addrs {
        if !addr.ip().is_unspecified() {
            out.push(*addr);
            continue;
        }
        let before = out.len();
        for ip in &interfaces {
            let link_local_v6 =
                matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if ip.is_ipv4() == addr.is_ipv4() && !link_local_v6 {
                out.push(SocketAddr::new(*ip, addr.port()));
            }
        }
        if out.len() == before {
            // No address of this family (e.g. IPv6 disabled): nothing to listen on.
            tracing::warn!("no interface address for {addr}; skipping it");
        }
    }
    out.sort();
    out.dedup();
    out
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}
