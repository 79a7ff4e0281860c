//! Hot reload: re-read the configuration file on a running relay and apply what can
//! change without a restart, dropping no packet.
//!
//! A reload reads and validates the file exactly as start-up does (the same command-line
//! overrides on top), so a bad file is refused with the usual error — file, line, key —
//! and the running configuration stays. A good one is compared with the running one:
//!
//! - applied at once: `auth.*` (users, REST secrets: rotation), `peers.*`, `limits.*`,
//!   `relay.default_lifetime_secs`, `relay.max_lifetime_secs`,
//!   `relay.rfc5766_channel_numbers`, `server.software`, `server.alternate_servers`,
//!   `server.drain_timeout_secs` (for the next drain), `log.level`, the TLS
//!   certificate and key (read again even when the paths did not change: renewal
//!   rewrites the files in place), and signaling's `relays`, `credential_ttl_secs` and
//!   `token_key` (with the rotated REST secret for the credentials it mints). The cores get their new configuration through each
//!   worker's command channel (`net::Command`), between two packets; TLS and QUIC
//!   listeners give the new certificate to the next handshake.
//! - kept until a restart, each named in a warning: listeners, workers, the relay
//!   addresses and port range, busy-poll and coalescing, the fast path, the realm
//!   (part of every credential key), the metrics address, the log format and the rest
//!   of the signaling service.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{ConfigFile, Overrides, Settings};
use crate::net::{Command, RelayHandle};
use crate::proto::{ServerConfig, SharedPool};

/// Where the configuration came from at start-up, to read it again the same way.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file; `None`: the embedded default (a reload then changes nothing).
    pub path: Option<PathBuf>,
    /// The command-line flags and `TURNPIKE_*` variables, applied over the file again.
    pub overrides: Overrides,
}

impl ConfigSource {
    fn load(&self) -> Result<Settings, String> {
        let file = match &self.path {
            Some(path) => ConfigFile::read(path),
            None => ConfigFile::embedded(),
        };
        file.and_then(|f| f.validate_with(&self.overrides))
            .map_err(|e| e.to_string())
    }
}

/// The running configuration and what a reload needs to apply a new one.
pub struct Reloader {
    source: ConfigSource,
    /// What runs now (keys that need a restart keep their start-up values).
    current: Settings,
    /// The core configuration the relay started with: the nonce key, the clock anchor
    /// and the ephemeral secret (when nothing is configured) carry over to each reload.
    base: ServerConfig,
    shared: Arc<SharedPool>,
}

/// What a successful reload did, for the log and `STATUS=`.
#[derive(Debug)]
pub struct Reloaded {
    /// Dotted keys that changed in the file but wait for a restart.
    pub needs_restart: Vec<&'static str>,
    /// The REST secret relay credentials are now minted with (the relay verifies it
    /// first), for signaling.
    pub turn_secret: Option<Vec<u8>>,
}

impl Reloader {
    pub fn new(
        source: ConfigSource,
        current: Settings,
        base: ServerConfig,
        shared: Arc<SharedPool>,
    ) -> Reloader {
        Reloader {
            source,
            current,
            base,
            shared,
        }
    }

    /// The running settings.
    pub fn current(&self) -> &Settings {
        &self.current
    }

    /// Read the file again and apply it; on error nothing has changed. Counts the
    /// outcome in `turnpike_config_reloads_total{result}` (see `crate::metrics`).
    pub fn reload(&mut self, relay: &RelayHandle) -> Result<Reloaded, String> {
        let result = self.try_reload(relay);
        crate::metrics::record_config_reload(result.is_ok());
        result
    }

    fn try_reload(&mut self, relay: &RelayHandle) -> Result<Reloaded, String> {
        let loaded = self.source.load()?;
        let needs_restart = restart_keys(&self.current, &loaded);
        let next = keep_restart_keys(&self.current, loaded);
        // Everything that can fail is done before anything is applied.
        let server = crate::serve::server_config(&next, &self.base);
        let turn_secret = server.secrets.first().cloned();
        let certificates = crate::serve::certificates(&next)?;
        crate::logging::set_level(&next.log.level)?;

        relay.broadcast(&Command::Config(Box::new(server)));
        if let Some(tls) = certificates.tls {
            relay.broadcast(&Command::Tls(tls));
        }
        if let Some(quic) = certificates.quic {
            relay.broadcast(&Command::Quic(quic));
        }
        self.shared.quotas().set_limits(
            next.limits.user_quota.unwrap_or(0),
            next.limits.total_quota.unwrap_or(0),
        );
        if let Some(tls) = &next.tls {
            crate::metrics::set_tls_certificate_expiry(&tls.certificate);
        }
        self.current = next;
        Ok(Reloaded {
            needs_restart,
            turn_secret,
        })
    }
}

/// Keys whose change needs a restart, in file order, among those that differ.
fn restart_keys(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.realm != new.realm, "server.realm");
    check(old.workers != new.workers, "server.workers");
    check(old.busy_poll != new.busy_poll, "server.busy_poll_us");
    check(old.coalesce != new.coalesce, "server.coalesce_us");
    check(
        old.fast_path_interfaces != new.fast_path_interfaces,
        "server.fast_path_interfaces",
    );
    check(old.listen.udp != new.listen.udp, "listen.udp");
    check(old.listen.tcp != new.listen.tcp, "listen.tcp");
    check(old.listen.tls != new.listen.tls, "listen.tls");
    check(old.listen.quic != new.listen.quic, "listen.quic");
    // A certificate appearing or going away changes what the QUIC listeners were
    // built with (configured or self-signed); a new file at the same place does not.
    check(old.tls.is_some() != new.tls.is_some(), "tls.certificate");
    check(old.relay.ipv4 != new.relay.ipv4, "relay.bind_ipv4");
    check(old.relay.ipv6 != new.relay.ipv6, "relay.bind_ipv6");
    check(old.relay.ports != new.relay.ports, "relay.port_min");
    check(old.metrics != new.metrics, "metrics.listen");
    check(old.rtp_quality != new.rtp_quality, "telemetry.rtp_quality");
    check(old.log.format != new.log.format, "log.format");
    match (&old.signaling, &new.signaling) {
        (Some(o), Some(n)) => {
            check(o.listen != n.listen, "signaling.listen");
            check(o.dev_login != n.dev_login, "signaling.dev_login");
            // The key and dev login exclude each other: one without the other would
            // leave a key nobody can sign with, or dev tokens the new key refuses.
            check(
                o.dev_login != n.dev_login && o.token_key != n.token_key,
                "signaling.token_key",
            );
            check(
                o.invite_lifetime != n.invite_lifetime,
                "signaling.invite_lifetime_secs",
            );
            check(
                o.connect_timeout != n.connect_timeout,
                "signaling.connect_timeout_secs",
            );
            check(
                o.resume_grace != n.resume_grace,
                "signaling.resume_grace_secs",
            );
            check(
                o.max_frame_bytes != n.max_frame_bytes,
                "signaling.max_frame_bytes",
            );
            check(
                o.invites_per_minute != n.invites_per_minute,
                "signaling.invites_per_minute",
            );
            check(o.push_webhook != n.push_webhook, "signaling.push_webhook");
            check(o.redis_url != n.redis_url, "signaling.redis_url");
        }
        (o, n) => check(o.is_some() != n.is_some(), "signaling.listen"),
    }
    check(old.fleet != new.fleet, "fleet");
    keys
}

/// `new` with the restart-only values of `old`: what the relay actually runs after a
/// reload, and what the next reload is compared with.
fn keep_restart_keys(old: &Settings, new: Settings) -> Settings {
    let tls = match (&old.tls, new.tls) {
        (Some(_), Some(tls)) => Some(tls),
        (old_tls, _) => old_tls.clone(),
    };
    Settings {
        realm: old.realm.clone(),
        workers: old.workers,
        busy_poll: old.busy_poll,
        coalesce: old.coalesce,
        fast_path_interfaces: old.fast_path_interfaces.clone(),
        listen: old.listen.clone(),
        tls,
        relay: crate::config::Relay {
            ipv4: old.relay.ipv4,
            ipv6: old.relay.ipv6,
            ports: old.relay.ports.clone(),
            ..new.relay
        },
        metrics: old.metrics,
        rtp_quality: old.rtp_quality,
        log: crate::config::Log {
            format: old.log.format,
            level: new.log.level,
        },
        signaling: match (&old.signaling, new.signaling) {
            (Some(o), Some(n)) => Some(crate::config::Signaling {
                relays: n.relays,
                credential_ttl: n.credential_ttl,
                token_key: if o.dev_login == n.dev_login {
                    n.token_key
                } else {
                    o.token_key.clone()
                },
                ..o.clone()
            }),
            (o, _) => o.clone(),
        },
        fleet: old.fleet.clone(),
        ..new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    fn settings(text: &str) -> Settings {
        ConfigFile::parse(crate::config::Origin::Embedded, text)
            .and_then(|f| f.validate())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn restart_keys_are_named_and_kept_and_the_rest_applies() {
        let old = settings(
            "[server]\nworkers = 2\n[auth]\nsecrets = [\"a\"]\n[signaling]\nlisten = \"\"",
        );
        let new = settings(
            "[server]\nworkers = 4\nsoftware = \"\"\n[relay]\nport_min = 50000\n\
             [auth]\nsecrets = [\"b\"]\n[telemetry]\nrtp_quality = true\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n[signaling]\nlisten = \"\"",
        );
        assert_eq!(
            restart_keys(&old, &new),
            [
                "server.workers",
                "relay.port_min",
                "telemetry.rtp_quality",
                "log.format"
            ]
        );
        let next = keep_restart_keys(&old, new);
        assert_eq!(next.workers, 2);
        assert_eq!(next.relay.ports, old.relay.ports);
        assert_eq!(next.log.format, old.log.format);
        assert!(!next.rtp_quality);
        assert_eq!(next.log.level, "debug");
        assert_eq!(next.software, None);
        assert_eq!(next.auth.secrets[0].expose(), "b");
        assert!(restart_keys(&next, &next).is_empty());
    }
}
