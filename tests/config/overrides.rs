//! Command-line overrides replace keys and whole lists; their errors name the flag.

use turnpike::config::{ConfigFile, Overrides, Secret};

use super::{ip, net, origin, sa, EVERY_KEY};

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn overrides_replace_scalars_and_whole_lists() {
    let file = ConfigFile::parse(origin(), EVERY_KEY).unwrap();
    let overrides = Overrides {
        listen: strings(&["127.0.0.1:3478", "udp://[::1]:3478"]),
        tls_cert: None,
        tls_key: None,
        realm: Some("override.example".into()),
        users: strings(&["carol:pw"]),
        secrets: strings(&["fresh"]),
        allow_peers: strings(&["192.168.0.0/16"]),
        deny_peers: strings(&["192.168.1.0/24"]),
        user_quota: Some(2),
        workers: Some(1),
        external_ips: strings(&["198.51.100.9"]),
        metrics: Some("0.0.0.0:9000".into()),
        rfc5766_channels: Some(false),
    };
    let s = file.validate_with(&overrides).unwrap();
    // The file turns it on; the override turns it off.
    assert!(!s.relay.rfc5766_channel_numbers);
    assert_eq!(s.listen.udp, vec![sa("127.0.0.1:3478"), sa("[::1]:3478")]);
    assert_eq!(s.listen.tcp, vec![sa("127.0.0.1:3478")]);
    // No tls:// given: the file's TLS listeners stay.
    assert_eq!(s.listen.tls, vec![sa("[2001:db8::1]:5349")]);
    assert_eq!(s.realm, "override.example");
    assert_eq!(s.auth.users.len(), 1);
    assert_eq!(s.auth.users[0].name, "carol");
    assert_eq!(s.auth.secrets, vec![Secret::new("fresh")]);
    assert_eq!(s.peers.allow, vec![net("192.168.0.0/16")]);
    assert_eq!(s.peers.deny, vec![net("192.168.1.0/24")]);
    assert_eq!(s.limits.user_quota, Some(2));
    assert_eq!(s.workers, 1);
    assert_eq!(s.relay.ipv4.unwrap().external, Some(ip("198.51.100.9")));
    assert_eq!(s.metrics, Some(sa("0.0.0.0:9000")));
    // Untouched keys keep the file's values.
    assert_eq!(s.relay.ports, 40000..=40999);
    assert_eq!(s.limits.total_quota, Some(5000));
}

#[test]
fn listen_prefixes_pick_a_transport_and_external_ip_picks_a_family() {
    let file = ConfigFile::embedded().unwrap();
    let overrides = Overrides {
        listen: strings(&["tcp://0.0.0.0:80", "tls://0.0.0.0:443"]),
        external_ips: strings(&["2001:db8::7"]),
        metrics: Some(String::new()),
        user_quota: Some(0),
        ..Overrides::default()
    };
    let text = "[tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n";
    let s = ConfigFile::parse(origin(), text)
        .unwrap()
        .validate_with(&overrides)
        .unwrap();
    assert!(s.listen.udp.is_empty());
    assert_eq!(s.listen.tcp, vec![sa("0.0.0.0:80")]);
    assert_eq!(s.listen.tls, vec![sa("0.0.0.0:443")]);
    assert_eq!(s.relay.ipv4.unwrap().external, None);
    assert_eq!(s.relay.ipv6.unwrap().external, Some(ip("2001:db8::7")));
    assert_eq!(s.metrics, None);
    assert_eq!(s.limits.user_quota, None);
    // The embedded default has no certificate, so a tls:// listener must fail there.
    let e = file.validate_with(&overrides).unwrap_err();
    assert_eq!(e.key, "tls.certificate");
}

#[test]
fn quic_listeners_and_certificates_come_from_flags() {
    let file = ConfigFile::embedded().unwrap();
    let s = file
        .validate_with(&Overrides {
            listen: strings(&["quic://127.0.0.1:4433"]),
            ..Overrides::default()
        })
        .unwrap();
    // QUIC alone: no UDP or TCP listener, and no certificate needed (self-signed).
    assert_eq!(s.listen.quic, vec![sa("127.0.0.1:4433")]);
    assert!(s.listen.udp.is_empty() && s.listen.tcp.is_empty());
    assert_eq!(s.tls, None);
    let s = file
        .validate_with(&Overrides {
            listen: strings(&["127.0.0.1:3478", "quic://127.0.0.1:443"]),
            tls_cert: Some("/etc/turnpike/cert.pem".into()),
            tls_key: Some("/etc/turnpike/key.pem".into()),
            ..Overrides::default()
        })
        .unwrap();
    assert_eq!(s.listen.udp, vec![sa("127.0.0.1:3478")]);
    assert_eq!(s.listen.quic, vec![sa("127.0.0.1:443")]);
    let tls = s.tls.expect("a certificate");
    assert_eq!(
        tls.certificate,
        std::path::PathBuf::from("/etc/turnpike/cert.pem")
    );
    assert_eq!(
        tls.private_key,
        std::path::PathBuf::from("/etc/turnpike/key.pem")
    );
}

#[test]
fn override_errors_name_the_flag() {
    let file = ConfigFile::embedded().unwrap();
    let check = |o: Overrides, flag: &str| {
        let e = file.validate_with(&o).unwrap_err();
        assert_eq!(e.origin, "command line", "{e}");
        assert!(e.key.starts_with(flag), "{e}");
        assert!(
            e.to_string().starts_with(&format!("command line: {flag}")),
            "{e}"
        );
    };
    let o = Overrides::default;
    check(
        Overrides {
            realm: Some(String::new()),
            ..o()
        },
        "--realm",
    );
    check(
        Overrides {
            listen: strings(&["sctp://0.0.0.0:443"]),
            ..o()
        },
        "--listen",
    );
    check(
        Overrides {
            listen: strings(&["0.0.0.0"]),
            ..o()
        },
        "--listen",
    );
    check(
        Overrides {
            users: strings(&["nocolon"]),
            ..o()
        },
        "--user",
    );
    check(
        Overrides {
            secrets: strings(&[""]),
            ..o()
        },
        "--secret",
    );
    check(
        Overrides {
            allow_peers: strings(&["10/8x"]),
            ..o()
        },
        "--allow-peer",
    );
    check(
        Overrides {
            deny_peers: strings(&["x"]),
            ..o()
        },
        "--deny-peer",
    );
    check(
        Overrides {
            external_ips: strings(&["1.2.3.4", "5.6.7.8"]),
            ..o()
        },
        "--external-ip",
    );
    check(
        Overrides {
            external_ips: strings(&["host"]),
            ..o()
        },
        "--external-ip",
    );
    check(
        Overrides {
            metrics: Some("nope".into()),
            ..o()
        },
        "--metrics",
    );
    check(
        Overrides {
            workers: Some(100_000),
            ..o()
        },
        "--workers",
    );
}
