//! Command-line (and environment) overrides, applied to the file before validation.
//!
//! A flag replaces a key; a repeatable flag given at all replaces the whole list (so
//! `--secret NEW` drops the file's secrets rather than appending to them, which would be
//! surprising when rotating). Overridden values go through the same `validate()` as the
//! file, and an error about one names the flag.

use std::net::IpAddr;

use super::error::ConfigError;
use super::raw::RawConfig;
use super::validate::FlagMap;

/// Values given on the command line or in `TURNPIKE_*` variables; `None` = not given.
/// Values are kept as typed by the operator, so validation can quote them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`: `ADDR:PORT` (UDP and TCP) or `udp://`, `tcp://`, `tls://`, `quic://` +
    /// `ADDR:PORT`. Replaces `listen.udp` and `listen.tcp`; replaces `listen.tls` and
    /// `listen.quic` only if one has `tls://` or `quic://`.
    pub listen: Option<Vec<String>>,
    /// `--tls-cert FILE` → `tls.certificate` (for TLS and QUIC).
    pub tls_cert: Option<String>,
    /// `--tls-key FILE` → `tls.private_key` (for TLS and QUIC).
    pub tls_key: Option<String>,
    /// `--realm` → `server.realm`.
    pub realm: Option<String>,
    /// `--user NAME:PASSWORD` → `auth.users`.
    pub users: Option<Vec<String>>,
    /// `--secret` → `auth.secrets`.
    pub secrets: Option<Vec<String>>,
    /// `--allow-peer` → `peers.allow`.
    pub allow_peers: Option<Vec<String>>,
    /// `--deny-peer` → `peers.deny`.
    pub deny_peers: Option<Vec<String>>,
    /// `--user-quota` → `limits.user_quota`.
    pub user_quota: Option<u32>,
    /// `--workers` → `server.workers`.
    pub workers: Option<usize>,
    /// `--external-ip`: at most one IPv4 (→ `relay.external_ipv4`) and one IPv6
    /// (→ `relay.external_ipv6`); the family not given keeps the file's value.
    pub external_ips: Option<Vec<String>>,
    /// `--metrics ADDR` or `--metrics ""` (off) → `metrics.listen`.
    pub metrics: Option<String>,
    /// `--rfc5766-channels` → `relay.rfc5766_channel_numbers`.
    pub rfc5766_channels: Option<bool>,
}

fn flag_error(flag: &str, reason: String) -> ConfigError {
    ConfigError {
        origin: "command line".into(),
        line: None,
        key: flag.into(),
        reason,
    }
}

impl Overrides {
    /// Write the overrides into `raw`; returns which keys now come from which flag.
    pub(crate) fn apply(&self, raw: &mut RawConfig) -> Result<FlagMap, ConfigError> {
        let mut flags = FlagMap::new();
        if let Some(listen) = &self.listen {
            let (mut udp, mut tcp, mut tls, mut quic) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for value in listen {
                match value.split_once("://") {
                    None => {
                        udp.push(value.clone());
                        tcp.push(value.clone());
                    }
                    Some(("udp", addr)) => udp.push(addr.to_string()),
                    Some(("tcp", addr)) => tcp.push(addr.to_string()),
                    Some(("tls", addr)) => tls.push(addr.to_string()),
                    Some(("quic", addr)) => quic.push(addr.to_string()),
                    Some((scheme, _)) => {
                        return Err(flag_error(
                            "--listen",
                            format!(
                                "{value:?}: unknown transport {scheme:?} \
                                 (use udp://, tcp://, tls:// or quic://)"
                            ),
                        ))
                    }
                }
            }
            raw.listen.udp = udp;
            raw.listen.tcp = tcp;
            flags.insert("listen.udp", "--listen");
            flags.insert("listen.tcp", "--listen");
            if !tls.is_empty() {
                raw.listen.tls = tls;
                flags.insert("listen.tls", "--listen");
            }
            if !quic.is_empty() {
                raw.listen.quic = quic;
                flags.insert("listen.quic", "--listen");
            }
        }
        if let Some(cert) = &self.tls_cert {
            raw.tls.certificate = cert.clone();
            flags.insert("tls.certificate", "--tls-cert");
        }
        if let Some(key) = &self.tls_key {
            raw.tls.private_key = key.clone();
            flags.insert("tls.private_key", "--tls-key");
        }
        if let Some(realm) = &self.realm {
            raw.server.realm = realm.clone();
            flags.insert("server.realm", "--realm");
        }
        if let Some(users) = &self.users {
            raw.auth.users = users.clone();
            flags.insert("auth.users", "--user");
        }
        if let Some(secrets) = &self.secrets {
            raw.auth.secrets = secrets.clone();
            flags.insert("auth.secrets", "--secret");
        }
        if let Some(allow) = &self.allow_peers {
            raw.peers.allow = allow.clone();
            flags.insert("peers.allow", "--allow-peer");
        }
        if let Some(deny) = &self.deny_peers {
            raw.peers.deny = deny.clone();
            flags.insert("peers.deny", "--deny-peer");
        }
        if let Some(quota) = self.user_quota {
            raw.limits.user_quota = quota;
            flags.insert("limits.user_quota", "--user-quota");
        }
        if let Some(on) = self.rfc5766_channels {
            raw.relay.rfc5766_channel_numbers = on;
            flags.insert("relay.rfc5766_channel_numbers", "--rfc5766-channels");
        }
        if let Some(workers) = self.workers {
            raw.server.workers = workers;
            flags.insert("server.workers", "--workers");
        }
        if let Some(ips) = &self.external_ips {
            let (mut v4, mut v6) = (None, None);
            for value in ips {
                let ip: IpAddr = value.parse().map_err(|_| {
                    flag_error("--external-ip", format!("{value:?} is not an IP address"))
                })?;
                let slot = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
                if slot.replace(value.clone()).is_some() {
                    return Err(flag_error(
                        "--external-ip",
                        format!(
                            "more than one {} address",
                            if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                        ),
                    ));
                }
            }
            if let Some(v4) = v4 {
                raw.relay.external_ipv4 = v4;
                flags.insert("relay.external_ipv4", "--external-ip");
            }
            if let Some(v6) = v6 {
                raw.relay.external_ipv6 = v6;
                flags.insert("relay.external_ipv6", "--external-ip");
            }
        }
        if let Some(metrics) = &self.metrics {
            raw.metrics.listen = metrics.clone();
            flags.insert("metrics.listen", "--metrics");
        }
        Ok(flags)
    }
}
