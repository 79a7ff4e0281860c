//! What a QUIC listener needs: the QUIC/TLS server configuration and the targets
//! CONNECT-UDP requests may name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::proto::h3::connect_udp::{Host, Target};

/// The ALPN of HTTP/3 (RFC 9114 §3.1).
pub const ALPN_H3: &[u8] = b"h3";
/// A connection that has sent nothing for this long is closed (RFC 9000 §10.1); media
/// keeps a live tunnel far busier, and TURN clients refresh every few minutes anyway.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Tunnels (request streams) one connection may have open at once.
const MAX_TUNNELS_PER_CONNECTION: u32 = 8;

/// A QUIC listener's fixed configuration, shared by every worker.
#[derive(Clone)]
pub struct QuicConfig {
    /// QUIC transport and TLS 1.3 (ALPN `h3`) settings for accepted connections.
    pub server: Arc<quinn_proto::ServerConfig>,
    /// Where tunnels may go.
    pub targets: Arc<Targets>,
}

impl std::fmt::Debug for QuicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConfig")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// The CONNECT-UDP targets the relay serves: its own TURN listeners, never anything
/// else (a relay that tunnelled UDP anywhere would be an open proxy).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// TURN listener addresses a target IP and port must equal.
    pub addrs: Vec<SocketAddr>,
    /// Host names that mean this relay (lower case); with a port of `addrs`.
    pub names: Vec<String>,
}

impl Targets {
    /// Whether a tunnel may reach `target`.
    pub fn allows(&self, target: &Target) -> bool {
        match &target.host {
            Host::Ip(ip) => {
                let ip = ip.to_canonical();
                self.addrs
                    .iter()
                    .any(|a| a.ip().to_canonical() == ip && a.port() == target.port)
            }
            Host::Name(name) => {
                self.names.iter().any(|n| n == name)
                    && self.addrs.iter().any(|a| a.port() == target.port)
            }
        }
    }
}

/// Builds the QUIC server configuration around a certificate chain and key.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<quinn_proto::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    // 0-RTT would let a replayed first flight re-run a request; CONNECT is not idempotent.
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| rustls::Error::General(format!("not usable for QUIC: {e}")))?;
    let mut config = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn_proto::TransportConfig::default();
    transport
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok())
        .max_concurrent_bidi_streams(MAX_TUNNELS_PER_CONNECTION.into())
        // The client's control stream and QPACK encoder and decoder streams (RFC 9114
        // §6.2), plus one to spare for a stream type this relay ignores.
        .max_concurrent_uni_streams(4u32.into())
        .datagram_receive_buffer_size(Some(1 << 20));
    config.transport_config(Arc::new(transport));
    // Path migration (RFC 9000 §9) is what keeps a tunnel across a network change.
    config.migration(true);
    Ok(Arc::new(config))
}

/// A self-signed certificate for `names`, with its SHA-256 fingerprint (hex, colon
/// separated, as browsers and `openssl x509 -fingerprint -sha256` print it): the
/// development default when QUIC is on and no certificate is configured.
pub fn self_signed(
    names: Vec<String>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), rcgen::Error> {
    let certified = rcgen::generate_simple_self_signed(names)?;
    let der = certified.cert.der().clone();
    let fingerprint = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    Ok((vec![der], key, fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_listeners_are_targets() {
        let targets = Targets {
            addrs: vec!["127.0.0.1:3478".parse().unwrap()],
            names: vec!["relay.example".into()],
        };
        let target = |host: Host, port| Target { host, port };
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert!(targets.allows(&target(ip("127.0.0.1"), 3478)));
        assert!(targets.allows(&target(ip("::ffff:127.0.0.1"), 3478)));
        assert!(!targets.allows(&target(ip("127.0.0.1"), 3479)));
        assert!(!targets.allows(&target(ip("127.0.0.2"), 3478)));
        assert!(!targets.allows(&target(ip("8.8.8.8"), 53)));
        assert!(targets.allows(&target(Host::Name("relay.example".into()), 3478)));
        assert!(!targets.allows(&target(Host::Name("example.com".into()), 3478)));
    }

    #[test]
    fn a_self_signed_certificate_makes_a_server_config() {
        let (certs, key, fingerprint) = self_signed(vec!["localhost".into()]).unwrap();
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        server_config(certs, key).unwrap();
    }
}
