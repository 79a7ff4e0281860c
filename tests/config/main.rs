//! Configuration tests: the embedded default, every key, where each error points, CLI
//! overrides, and the built binary's `check-config` and `credentials` subcommands.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod cli;
mod errors;
mod file;
mod overrides;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use turnpike::config::{ConfigError, ConfigFile, Origin, Settings};

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn origin() -> Origin {
    Origin::File(PathBuf::from("/etc/turnpike/test.toml"))
}

pub fn parse(text: &str) -> Result<Settings, ConfigError> {
    ConfigFile::parse(origin(), text)?.validate()
}

pub fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(s) => panic!("accepted:\n{text}\n{s:?}"),
        Err(e) => e,
    }
}

/// Sets every key of the embedded file to a value different from its default.
pub const EVERY_KEY: &str = r#"
[server]
realm = "example.org"
software = ""
workers = 3
busy_poll_us = 50
coalesce_us = 0
fast_path_interfaces = ["eth0", "eth1"]
drain_timeout_secs = 30
alternate_servers = ["198.51.100.9:3478", "[2001:db8::9]:3478"]
[listen]
udp = ["192.0.2.1:3478"]
tcp = ["192.0.2.1:3479"]
tls = ["[2001:db8::1]:5349"]
quic = ["127.0.0.1:4433"]
[tls]
certificate = "/etc/tls/cert.pem"
private_key = "/etc/tls/key.pem"
[relay]
bind_ipv4 = "192.0.2.1"
bind_ipv6 = "2001:db8::1"
external_ipv4 = "203.0.113.7"
external_ipv6 = "2001:db8::2"
port_min = 40000
port_max = 40999
default_lifetime_secs = 300
max_lifetime_secs = 1200
rfc5766_channel_numbers = true
[auth]
users = ["alice:pa:ss", "bob:pw"]
secrets = ["new", "old"]
max_credential_lifetime_secs = 3600
nonce_lifetime_secs = 60
[limits]
user_quota = 0
total_quota = 5000
max_username_len = 100
auth_failures_per_minute = 7
auth_cooldown_secs = 30
max_bps_per_allocation = 2000000
max_bps_per_user = 4000000
max_bps_total = 1000000000
unauthenticated_timeout_secs = 0
max_connections_per_source = 0
max_connections = 5000
[peers]
allow = ["10.1.2.0/24", "fd00::1"]
deny = ["10.1.2.3/32"]
[metrics]
listen = ""
[telemetry]
rtp_quality = true
[log]
format = "json"
level = "turnpike=debug,warn"
[signaling]
listen = "[::1]:9000"
token_key = "app-key"
dev_login = false
invite_lifetime_secs = 60
connect_timeout_secs = 20
resume_grace_secs = 10
credential_ttl_secs = 600
max_frame_bytes = 32768
invites_per_minute = 5
push_webhook = "https://push.example.com/hook"
redis_url = "redis://127.0.0.1:6379/"
relays = [{ region = "eu", urls = ["turn:relay.example.com:3478?transport=udp", "masque://relay.example.com:443"] }]
[fleet]
redis_url = "redis://127.0.0.1:6380/"
announce = false
id = "relay-eu-1"
region = "eu"
public_urls = ["turn:relay-eu.example.com:3478?transport=udp", "masque://relay-eu.example.com:443"]
"#;
