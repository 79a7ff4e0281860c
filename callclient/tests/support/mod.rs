//! Test harness: Turnpike's relay and signaling service in this process on free loopback
//! ports, a UDP tap that records what crosses it, a shim that impairs one user's uplink,
//! and parsers for what they record.
#![allow(dead_code)]

pub mod shim;
pub mod tap;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::sync::oneshot;
use turnpike::config::{ConfigFile, Origin};
use turnpike::net::{self, RelayHandle, Reporter};
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::Transport;
use turnpike_callclient::{CallOptions, Payload, RelayTransport, Role};
use turnpike_signaling::{RelayConfig, SignalingConfig};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TURN_SECRET: &str = "e2e-turn-secret";

/// A running relay: its UDP TURN listener and relay port range.
pub struct Relay {
    pub addr: SocketAddr,
    /// Its TURN-over-QUIC listener, when started with one.
    pub quic_addr: Option<SocketAddr>,
    pub ports: RangeInclusive<u16>,
    handle: Option<RelayHandle>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

impl Relay {
    /// Start Turnpike on 127.0.0.1 (UDP only, two workers, a TURN REST secret), built
    /// from a config file the way `turnpike serve` builds it, except for the peer policy.
    ///
    /// Relay-to-relay: both call clients allocate here, so each one's peer is the other's
    /// relayed address, 127.0.0.1:<relay port>. `turnpike serve` refuses that peer twice:
    /// 127/8 is loopback (`peers.allow` can lift that), and an own IP on an own relay port
    /// is `Denied::OwnAddress`, which no `peers.allow` entry overrides (src/serve.rs
    /// `peer_policy` lists the relay port range as "own"). So this relay allows 127.0.0.1
    /// but still refuses every port of it outside the relay range: peers may be other
    /// allocations on this relay, never its listener or any other local service.
    pub fn start() -> Relay {
        Relay::start_with(false)
    }

    /// [`Relay::start`], with a TURN-over-QUIC listener (self-signed certificate) too
    /// when `quic`.
    pub fn start_with(quic: bool) -> Relay {
        // A random block of the relay range per relay, so tests running side by side
        // rarely pick the same port; 20000-29999 stays clear of Linux's ephemeral ports.
        Relay::start_in(quic, rand::random::<u16>() % 10)
    }

    /// [`Relay::start_in`] with `[telemetry] rtp_quality = true`: the relay classifies
    /// what it forwards and measures each RTP stream (`turnpike_proto::quality`).
    pub fn start_measuring(block: u16) -> Relay {
        Relay::start_configured(false, block, "[telemetry]\nrtp_quality = true")
    }

    /// [`Relay::start_with`] on relay ports 20000 + 1000 × `block` (0-9) and up.
    pub fn start_in(quic: bool, block: u16) -> Relay {
        Relay::start_configured(quic, block, "")
    }

    /// [`Relay::start_in`] with `extra` appended to its config file.
    fn start_configured(quic: bool, block: u16, extra: &str) -> Relay {
        let ports = (20000 + block * 1000)..=(20999 + block * 1000);
        let toml = format!(
            r#"
            [server]
            workers = 2
            [listen]
            udp = ["127.0.0.1:3478"]
            tcp = []
            quic = {quic_listen}
            [relay]
            bind_ipv4 = "127.0.0.1"
            bind_ipv6 = ""
            port_min = {}
            port_max = {}
            [auth]
            secrets = ["{TURN_SECRET}"]
            [peers]
            allow = ["127.0.0.1/32"]
            [metrics]
            listen = ""
            [signaling]
            listen = ""
            [log]
            level = "warn"
            {extra}
            "#,
            ports.start(),
            ports.end(),
            quic_listen = if quic { r#"["127.0.0.1:4433"]"# } else { "[]" },
        );
        let settings = ConfigFile::parse(Origin::Embedded, &toml)
            .and_then(|file| file.validate())
            .expect("the test config is valid");
        let mut config = turnpike::serve::net_config(&settings).expect("net config");
        // The config file insists on a fixed client port; the shell takes port 0, which
        // lets tests run side by side (and beside a real relay on 3478).
        config.udp = vec![SocketAddr::new(LOOPBACK, 0)];
        if quic {
            config.quic = vec![SocketAddr::new(LOOPBACK, 0)];
        }
        let mut others = Vec::new();
        if *ports.start() > 1 {
            others.push(1..=ports.start() - 1);
        }
        if *ports.end() < u16::MAX {
            others.push(ports.end() + 1..=u16::MAX);
        }
        config.server.peer_policy =
            PeerPolicy::new(vec!["127.0.0.1/32".parse().expect("CIDR")], vec![])
                .with_own_addresses(vec![LOOPBACK], others);
        let handle = net::start(config).expect("relay starts");
        let addrs = handle.local_addrs();
        let listener = |transport| {
            addrs
                .iter()
                .find(|(t, _)| *t == transport)
                .map(|&(_, addr)| addr)
        };
        let addr = listener(Transport::Udp).expect("one UDP listener");
        Relay {
            addr,
            quic_addr: listener(Transport::Quic),
            ports,
            handle: Some(handle),
        }
    }
}

impl Relay {
    /// Asks the relay's workers for their live allocations, as `GET /v1/allocations`
    /// does.
    pub fn reporter(&self) -> Reporter {
        self.handle.as_ref().expect("a running relay").reporter()
    }

    /// Start draining, as SIGTERM does in `turnpike serve`: no new allocations, the
    /// existing ones served until they end or `deadline`.
    pub fn drain(&self, deadline: std::time::Instant) {
        if let Some(handle) = &self.handle {
            handle.drain(deadline);
        }
    }

    /// Returns once every worker has drained (no allocation left, or the deadline).
    pub async fn drained(&self) {
        if let Some(handle) = &self.handle {
            handle.drained().await;
        }
    }
}

/// A running signaling service (dev login on) that hands out `turn_urls` with
/// credentials minted from the relay's secret.
pub struct Signal {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Signal {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Signal {
    /// A signaling node sharing calls through Redis at `redis_url` and offering the live
    /// relays of the fleet registry there.
    pub async fn start_fleet(redis_url: &str) -> Signal {
        let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
            .await
            .expect("bind signaling");
        let addr = listener.local_addr().expect("local addr");
        let config = SignalingConfig {
            dev_login: true,
            // Both nodes verify each other's dev-login tokens.
            token_key: b"fleet-test-token-key".to_vec(),
            turn_secret: Some(TURN_SECRET.as_bytes().to_vec()),
            redis_url: Some(redis_url.to_owned()),
            fleet_redis_url: Some(redis_url.to_owned()),
            ..SignalingConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(turnpike_signaling::serve(listener, config, async move {
            let _ = stopped.await;
        }));
        Signal {
            url: format!("ws://{addr}"),
            stop: Some(stop),
        }
    }

    pub async fn start(turn_urls: Vec<String>) -> Signal {
        let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
            .await
            .expect("bind signaling");
        let addr = listener.local_addr().expect("local addr");
        let config = SignalingConfig {
            dev_login: true,
            relays: vec![RelayConfig {
                region: "test".into(),
                urls: turn_urls,
            }],
            turn_secret: Some(TURN_SECRET.as_bytes().to_vec()),
            ..SignalingConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(turnpike_signaling::serve(listener, config, async move {
            let _ = stopped.await;
        }));
        Signal {
            url: format!("ws://{addr}"),
            stop: Some(stop),
        }
    }
}

/// Options for one side of a test call.
pub fn options(signal: &str, user: &str, role: Role, payload: Payload) -> CallOptions {
    let expect_marker = match &payload {
        Payload::Marker(marker) => Some(marker.clone()),
        Payload::Tone(_) => None,
    };
    CallOptions {
        signal: signal.to_owned(),
        user: user.to_owned(),
        device: "test".to_owned(),
        token: None,
        role,
        media_time: Duration::from_secs(3),
        payload,
        expect_marker,
        setup_timeout: Duration::from_secs(20),
        relay_transport: RelayTransport::Udp,
        rebind_after: None,
    }
}
