//! The embedded default and the round trip of every key.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use turnpike::config::raw::RawConfig;
use turnpike::config::{
    ConfigFile, LogFormat, RelayAddr, Secret, SignalingRelay, User, EMBEDDED_DEFAULT,
};

use super::{ip, net, parse, sa, EVERY_KEY};

#[test]
fn embedded_default_matches_the_documented_defaults() {
    let file = ConfigFile::embedded().unwrap();
    // The serde defaults (used for keys a file leaves out) equal the embedded file.
    assert_eq!(file.raw(), &RawConfig::default());
    let s = file.validate().unwrap();
    assert_eq!(s.realm, "turnpike");
    assert_eq!(s.software.as_deref(), Some("Turnpike"));
    assert_eq!(s.drain_timeout, Duration::from_secs(600));
    assert!(s.alternate_servers.is_empty());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(s.workers, cores);
    assert_eq!(s.listen.udp, vec![sa("0.0.0.0:3478"), sa("[::]:3478")]);
    assert_eq!(s.listen.tcp, vec![sa("0.0.0.0:3478"), sa("[::]:3478")]);
    assert!(s.listen.tls.is_empty());
    assert_eq!(s.tls, None);
    let relay_v4 = RelayAddr {
        bind: ip("0.0.0.0"),
        external: None,
    };
    let relay_v6 = RelayAddr {
        bind: ip("::"),
        external: None,
    };
    assert_eq!(s.relay.ipv4, Some(relay_v4));
    assert_eq!(s.relay.ipv6, Some(relay_v6));
    assert_eq!(s.relay.ports, 49152..=65535);
    assert_eq!(s.relay.default_lifetime, Duration::from_secs(600));
    assert_eq!(s.relay.max_lifetime, Duration::from_secs(3600));
    assert!(s.auth.users.is_empty());
    assert!(s.auth.secrets.is_empty());
    assert_eq!(s.auth.max_credential_lifetime, Duration::from_secs(86400));
    assert_eq!(s.auth.nonce_lifetime, Duration::from_secs(600));
    assert_eq!(s.limits.user_quota, Some(10));
    assert_eq!(s.limits.total_quota, None);
    assert_eq!(s.limits.max_username_len, 256);
    assert_eq!(s.limits.auth_failures_per_minute, 20);
    assert_eq!(s.limits.auth_cooldown, Duration::from_secs(60));
    assert_eq!(s.limits.max_bps_per_allocation, 0);
    assert_eq!(s.limits.max_bps_per_user, 0);
    assert_eq!(s.limits.max_bps_total, 0);
    assert_eq!(
        s.limits.unauthenticated_timeout,
        Some(Duration::from_secs(10))
    );
    assert_eq!(s.limits.max_connections_per_source, 1000);
    assert_eq!(s.limits.max_connections, 0);
    assert!(s.peers.allow.is_empty() && s.peers.deny.is_empty());
    assert_eq!(s.metrics, Some(sa("127.0.0.1:9641")));
    assert!(!s.rtp_quality, "call-quality telemetry is opt-in");
    assert_eq!(s.log.format, LogFormat::Text);
    assert_eq!(s.log.level, "info");
    assert_eq!(s.fleet, None);
    let sig = s.signaling.clone().unwrap();
    assert_eq!(sig.listen, sa("127.0.0.1:8080"));
    assert_eq!(sig.token_key.expose(), "");
    assert!(sig.dev_login);
    assert_eq!(sig.invite_lifetime, Duration::from_secs(90));
    assert_eq!(sig.connect_timeout, Duration::from_secs(30));
    assert_eq!(sig.resume_grace, Duration::from_secs(30));
    assert_eq!(sig.credential_ttl, Duration::from_secs(3600));
    assert_eq!(sig.max_frame_bytes, 65536);
    assert_eq!(sig.invites_per_minute, 20);
    assert_eq!(sig.push_webhook, None);
    assert_eq!(sig.redis_url, None);
    assert!(sig.relays.is_empty());
    // An empty file means the same as the embedded one.
    assert_eq!(parse("").unwrap(), s);
}

#[test]
fn every_key_is_read() {
    let s = parse(EVERY_KEY).unwrap();
    assert_eq!(s.realm, "example.org");
    assert_eq!(s.software, None);
    assert_eq!(s.workers, 3);
    assert_eq!(s.busy_poll, Duration::from_micros(50));
    assert_eq!(s.coalesce, Duration::ZERO);
    assert_eq!(s.fast_path_interfaces, ["eth0", "eth1"]);
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        s.alternate_servers,
        vec![sa("198.51.100.9:3478"), sa("[2001:db8::9]:3478")]
    );
    assert_eq!(s.listen.udp, vec![sa("192.0.2.1:3478")]);
    assert_eq!(s.listen.tcp, vec![sa("192.0.2.1:3479")]);
    assert_eq!(s.listen.tls, vec![sa("[2001:db8::1]:5349")]);
    let tls = s.tls.unwrap();
    assert_eq!(tls.certificate, Path::new("/etc/tls/cert.pem"));
    assert_eq!(tls.private_key, Path::new("/etc/tls/key.pem"));
    let v4 = RelayAddr {
        bind: ip("192.0.2.1"),
        external: Some(ip("203.0.113.7")),
    };
    assert_eq!(s.relay.ipv4, Some(v4));
    let v6 = RelayAddr {
        bind: ip("2001:db8::1"),
        external: Some(ip("2001:db8::2")),
    };
    assert_eq!(s.relay.ipv6, Some(v6));
    assert_eq!(s.relay.ports, 40000..=40999);
    assert_eq!(s.relay.default_lifetime, Duration::from_secs(300));
    assert_eq!(s.relay.max_lifetime, Duration::from_secs(1200));
    assert!(s.relay.rfc5766_channel_numbers);
    let user = |n: &str, p: &str| User {
        name: n.into(),
        password: Secret::new(p),
    };
    // The password may contain ':'; the name ends at the first one.
    assert_eq!(
        s.auth.users,
        vec![user("alice", "pa:ss"), user("bob", "pw")]
    );
    let secrets: Vec<&str> = s.auth.secrets.iter().map(Secret::expose).collect();
    assert_eq!(secrets, ["new", "old"]);
    assert_eq!(s.auth.max_credential_lifetime, Duration::from_secs(3600));
    assert_eq!(s.auth.nonce_lifetime, Duration::from_secs(60));
    assert_eq!(s.limits.user_quota, None);
    assert_eq!(s.limits.total_quota, Some(5000));
    assert_eq!(s.limits.max_username_len, 100);
    assert_eq!(s.limits.auth_failures_per_minute, 7);
    assert_eq!(s.limits.auth_cooldown, Duration::from_secs(30));
    assert_eq!(s.limits.max_bps_per_allocation, 2_000_000);
    assert_eq!(s.limits.max_bps_per_user, 4_000_000);
    assert_eq!(s.limits.max_bps_total, 1_000_000_000);
    assert_eq!(s.limits.unauthenticated_timeout, None);
    assert_eq!(s.limits.max_connections_per_source, 0);
    assert_eq!(s.limits.max_connections, 5000);
    assert_eq!(s.peers.allow, vec![net("10.1.2.0/24"), net("fd00::1/128")]);
    assert_eq!(s.peers.deny, vec![net("10.1.2.3/32")]);
    assert_eq!(s.metrics, None);
    assert!(s.rtp_quality);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.log.level, "turnpike=debug,warn");
    let fleet = s.fleet.clone().unwrap();
    assert_eq!(fleet.redis_url.expose(), "redis://127.0.0.1:6380/");
    assert!(!fleet.announce);
    assert_eq!(fleet.id.as_deref(), Some("relay-eu-1"));
    assert_eq!(fleet.region, "eu");
    assert_eq!(
        fleet.public_urls,
        [
            "turn:relay-eu.example.com:3478?transport=udp",
            "masque://relay-eu.example.com:443"
        ]
    );
    let sig = s.signaling.unwrap();
    assert_eq!(sig.listen, sa("[::1]:9000"));
    assert_eq!(sig.token_key.expose(), "app-key");
    assert!(!sig.dev_login);
    assert_eq!(sig.invite_lifetime, Duration::from_secs(60));
    assert_eq!(sig.connect_timeout, Duration::from_secs(20));
    assert_eq!(sig.resume_grace, Duration::from_secs(10));
    assert_eq!(sig.credential_ttl, Duration::from_secs(600));
    assert_eq!(sig.max_frame_bytes, 32768);
    assert_eq!(sig.invites_per_minute, 5);
    assert_eq!(
        sig.push_webhook.as_deref(),
        Some("https://push.example.com/hook")
    );
    assert_eq!(
        sig.redis_url.as_ref().map(Secret::expose),
        Some("redis://127.0.0.1:6379/")
    );
    let relay = SignalingRelay {
        region: "eu".into(),
        urls: vec![
            "turn:relay.example.com:3478?transport=udp".into(),
            "masque://relay.example.com:443".into(),
        ],
    };
    assert_eq!(sig.relays, vec![relay]);
}

#[test]
fn signaling_key_and_dev_login_exclude_each_other() {
    let e = super::parse_err("[signaling]\ntoken_key = \"k\"");
    assert_eq!(e.key, "signaling.dev_login");
    let e = super::parse_err("[signaling]\ndev_login = false");
    assert_eq!(e.key, "signaling.token_key");
    let s = parse("[signaling]\nlisten = \"\"").unwrap();
    assert_eq!(s.signaling, None);
    let e = super::parse_err("[signaling]\nrelays = [{ region = \"eu\", urls = [\"http://x\"] }]");
    assert_eq!(e.key, "signaling.relays[0]");
}

/// Dev login mints a token for any name: on a listener others can reach, anyone could
/// sign in as anyone and collect relay credentials. Only loopback may have it.
#[test]
fn dev_login_is_refused_off_loopback() {
    for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080"] {
        let e = super::parse_err(&format!("[signaling]\nlisten = \"{listen}\"\n"));
        assert_eq!(e.key, "signaling.dev_login", "{listen}: {e}");
        assert!(e.to_string().contains(listen), "{e}");
    }
    for listen in ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080"] {
        let s = super::parse(&format!("[signaling]\nlisten = \"{listen}\"\n")).unwrap();
        assert!(s.signaling.unwrap().dev_login, "{listen}");
    }
    // With the app's own token key, any address is fine.
    let s = super::parse(
        "[signaling]\nlisten = \"0.0.0.0:8080\"\ndev_login = false\ntoken_key = \"k\"\n",
    )
    .unwrap();
    assert!(!s.signaling.unwrap().dev_login);
}

#[test]
fn fleet_keys_are_checked() {
    let e = super::parse_err("[fleet]\nredis_url = \"http://x\"");
    assert_eq!(e.key, "fleet.redis_url");
    let e = super::parse_err("[fleet]\nredis_url = \"redis://h/\"\nregion = \"\"");
    assert_eq!(e.key, "fleet.region");
    let e = super::parse_err("[fleet]\nredis_url = \"redis://h/\"\nid = \"a b\"");
    assert_eq!(e.key, "fleet.id");
    let e = super::parse_err(
        "[fleet]\nredis_url = \"redis://h/\"\npublic_urls = [\"turn:a:1\", \"http://b\"]",
    );
    assert_eq!((e.key.as_str(), e.line), ("fleet.public_urls[1]", Some(3)));
    // Without a Redis URL there is no fleet, whatever else is set.
    assert_eq!(parse("[fleet]\nregion = \"eu\"").unwrap().fleet, None);
}

#[test]
fn empty_bind_address_turns_a_family_off() {
    let s = parse("[relay]\nbind_ipv6 = \"\"").unwrap();
    assert_eq!(s.relay.ipv6, None);
    assert!(s.relay.ipv4.is_some());
    let s = parse("[relay]\nbind_ipv4 = \"\"").unwrap();
    assert_eq!(s.relay.ipv4, None);
    assert!(s.relay.ipv6.is_some());
}

fn dotted_keys(text: &str) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(text).unwrap();
    let mut keys = BTreeSet::new();
    for (section, value) in &table {
        let inner = value.as_table().expect("only sections at the top level");
        keys.extend(inner.keys().map(|k| format!("{section}.{k}")));
    }
    keys
}

#[test]
fn every_key_test_covers_the_embedded_file_and_changes_each_value() {
    assert_eq!(dotted_keys(EVERY_KEY), dotted_keys(EMBEDDED_DEFAULT));
    let default: toml::Table = toml::from_str(EMBEDDED_DEFAULT).unwrap();
    let changed: toml::Table = toml::from_str(EVERY_KEY).unwrap();
    for (section, values) in &default {
        for (key, value) in values.as_table().unwrap() {
            // Cannot be set together with busy_poll_us, which EVERY_KEY sets; it has
            // its own test below.
            if (section.as_str(), key.as_str()) == ("server", "coalesce_us") {
                continue;
            }
            assert_ne!(
                Some(value),
                changed[section].get(key),
                "{section}.{key} not changed"
            );
        }
    }
}

#[test]
fn every_key_in_the_embedded_file_has_a_comment() {
    let lines: Vec<&str> = EMBEDDED_DEFAULT.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "undocumented key: {line}"
            );
        }
    }
}

#[test]
fn coalescing_is_read_in_microseconds() {
    let s = parse("[server]\ncoalesce_us = 200").unwrap();
    assert_eq!(s.coalesce, Duration::from_micros(200));
    assert_eq!(s.busy_poll, Duration::ZERO);
}

#[test]
fn fast_path_interfaces_are_kept_in_order() {
    let s = parse("[server]\nfast_path_interfaces = [\"lo\", \"eth0\"]").unwrap();
    assert_eq!(s.fast_path_interfaces, ["lo", "eth0"]);
    assert!(parse("").unwrap().fast_path_interfaces.is_empty());
}
