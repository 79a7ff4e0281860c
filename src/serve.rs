//! `turnpike serve`: validated [`Settings`] become running components — the relay
//! workers (`crate::net`), the metrics and health endpoints, the signaling service
//! (`turnpike_signaling`), and signal handling.
//!
//! Config flows one way (TOML → validated settings → plain component configs;
//! ARCHITECTURE.md, "Configuration"): this is the only place that turns settings into
//! each component's plain config struct; nothing reads files or the environment later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::RngCore;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};
use crate::fastpath::FastPath;
use crate::net::{self, NetConfig};
use crate::proto::auth::mint_rest_credential;
use crate::proto::bandwidth::{Bandwidth, BandwidthCaps};
use crate::proto::peer_policy::PeerPolicy;
use crate::proto::quota::Quotas;
use crate::proto::throttle::AuthThrottle;
use crate::proto::{RelayIp, ServerConfig, SharedPool};

/// Run the relay with `settings` until SIGINT or SIGTERM.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    init_tracing(&settings)?;
    // `Settings`' Debug output redacts passwords and secrets (see `config::Secret`).
    tracing::debug!(settings = ?settings, "effective settings");
    let prometheus = crate::metrics::install_recorder();
    crate::metrics::init_operations_metrics(
        settings.tls.as_ref().map(|tls| tls.certificate.as_path()),
    );

    let net_config = net_config(&settings)?;
    // Signaling mints relay credentials with the secret the relay verifies first: the
    // first configured one, or the ephemeral one `net_config` made.
    let turn_secret = net_config.server.secrets.first().cloned();
    let relay = net::start(net_config).context("cannot start the relay")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("turnpike-control")
        .enable_all()
        .build()
        .context("cannot start the control-plane runtime")?;
    let result = runtime.block_on(async {
        let ready = Arc::new(AtomicBool::new(false));
        if let Some(addr) = settings.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics.listen: cannot bind {addr}"))?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            let (handle, ready) = (prometheus.clone(), ready.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve_http(listener, handle, ready).await {
                    tracing::error!("metrics endpoint stopped: {e}");
                }
            });
        }
        let signaling = match &settings.signaling {
            Some(sig) => Some(start_signaling(&settings, sig, turn_secret).await?),
            None => None,
        };
        ready.store(true, Ordering::Release);
        tracing::info!("ready");
        let result = wait_for_shutdown().await;
        if let Some((signaling, stop, server)) = signaling {
            signaling.shutdown().await;
            let _ = stop.send(());
            // Connections were told to close (1001); don't wait long for stragglers.
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        result
    });
    tracing::info!("shutting down");
    relay.shutdown();
    result
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
    let relays = if sig.relays.is_empty() {
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
    };
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

async fn wait_for_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Settings → the shell's and the core's config.
pub fn net_config(settings: &Settings) -> anyhow::Result<NetConfig> {
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
        Some(tls) => Some(net::tls::load_server_config(
            &tls.certificate,
            &tls.private_key,
        )?),
        None => None,
    };
    let mut secrets: Vec<Vec<u8>> = settings
        .auth
        .secrets
        .iter()
        .map(|s| s.expose().as_bytes().to_vec())
        .collect();
    // The core knows wall time as "unix second S began at Instant I": take I back to
    // the start of the current second so the pair is exact, not up to a second off.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let unix_now = since_epoch.as_secs();
    let second_began = Instant::now()
        .checked_sub(Duration::from_nanos(u64::from(since_epoch.subsec_nanos())))
        .unwrap_or_else(Instant::now);
    if settings.auth.users.is_empty() && secrets.is_empty() {
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
        secrets.push(secret.into_bytes());
    }
    let mut nonce_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce_key);

    let server = ServerConfig {
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
        }),
        relay_v6: settings.relay.ipv6.as_ref().map(|r| RelayIp {
            bind: r.bind,
            advertise: r.external,
        }),
        max_username_len: settings.limits.max_username_len,
        rfc5766_channel_numbers: settings.relay.rfc5766_channel_numbers,
        peer_policy: peer_policy(settings),
        ..ServerConfig::new(nonce_key, (second_began, unix_now))
    };
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
    Ok(NetConfig {
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
        shared,
        rng_seed: u64::from_le_bytes(nonce_key[..8].try_into().unwrap_or([0; 8])),
        conn_limits: net::ConnLimitsConfig {
            max_connections: limits.max_connections,
            max_per_source: limits.max_connections_per_source,
            unauthenticated_timeout: limits.unauthenticated_timeout,
        },
    })
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

fn init_tracing(settings: &Settings) -> anyhow::Result<()> {
    // `EnvFilter::try_new` parses the configured directives only; it does not read
    // RUST_LOG (config flows one way). `validate()` has already checked them.
    let filter = EnvFilter::try_new(&settings.log.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match settings.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A subscriber may already be installed (tests calling `run` twice); keep it.
    if let Err(e) = installed {
        tracing::debug!("tracing subscriber already set: {e}");
    }
    Ok(())
}
