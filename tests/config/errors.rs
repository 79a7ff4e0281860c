//! Every error names the file, the line and the key (or the flag).

use turnpike::config::{ConfigFile, Origin};

use super::{parse, parse_err};

#[test]
fn unknown_keys_name_the_file_the_line_and_the_key() {
    let e = parse_err("realm = \"x\"\n");
    let msg = e.to_string();
    assert!(
        msg.starts_with("/etc/turnpike/test.toml:1: realm:"),
        "{msg}"
    );
    assert!(msg.contains("unknown field `realm`"), "{msg}");

    let e = parse_err("[relay]\nport_min = 50000\nport_mni = 50001\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "relay.port_mni"));
    assert!(
        e.to_string()
            .contains("/etc/turnpike/test.toml:3: relay.port_mni:"),
        "{e}"
    );

    let e = parse_err("[nonsense]\nx = 1\n");
    assert_eq!(e.key, "nonsense");
    assert!(e.to_string().contains("unknown field `nonsense`"), "{e}");

    let e = ConfigFile::parse(Origin::Embedded, "[log]\ncolour = true\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("<embedded default>:2: log.colour:"),
        "{e}"
    );
}

#[test]
fn type_errors_name_the_key() {
    let e = parse_err("[relay]\nport_min = \"50000\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "relay.port_min"));
    assert!(e.reason.contains("invalid type"), "{e}");

    let e = parse_err("[relay]\nport_max = 70000\n");
    assert_eq!(e.key, "relay.port_max");

    // An element on its own line of a multi-line array still names the array's key.
    let e = parse_err("[listen]\nudp = [\n  \"0.0.0.0:3478\",\n  3478,\n]\n");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "listen.udp"));

    let e = parse_err("[server]\nworkers = -1\n");
    assert_eq!(e.key, "server.workers");
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let e = parse_err("[server]\nrealm = \"unterminated\n");
    assert_eq!(e.origin, "/etc/turnpike/test.toml");
    assert_eq!(e.line, Some(2));
    assert_eq!(e.key, "server.realm");
    assert!(e.reason.starts_with("not valid TOML"), "{e}");
    // TOML integers are 64-bit signed; the key on the offending line is still named.
    let e = parse_err("[relay]\nmax_lifetime_secs = 18446744073709551615\n");
    assert_eq!(
        (e.line, e.key.as_str()),
        (Some(2), "relay.max_lifetime_secs")
    );
    // A line that is no key at all: only the line.
    let e = parse_err("[relay]\nport_min = 1\njunk\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), ""));
}

#[test]
fn each_validation_error_names_its_key_and_line() {
    let cases: &[(&str, &str)] = &[
        ("[server]\nrealm = \"\"", "server.realm"),
        ("[server]\nsoftware = \"a\\u0007b\"", "server.software"),
        ("[server]\nbusy_poll_us = 100001", "server.busy_poll_us"),
        ("[server]\ncoalesce_us = 1001", "server.coalesce_us"),
        (
            "[server]\ndrain_timeout_secs = 0",
            "server.drain_timeout_secs",
        ),
        (
            "[server]\ndrain_timeout_secs = 86401",
            "server.drain_timeout_secs",
        ),
        (
            "[server]\nalternate_servers = [\"192.0.2.1:3478\", \"relay\"]",
            "server.alternate_servers[1]",
        ),
        (
            "[server]\nalternate_servers = [\"0.0.0.0:3478\"]",
            "server.alternate_servers[0]",
        ),
        (
            "[server]\nbusy_poll_us = 50\ncoalesce_us = 200",
            "server.coalesce_us",
        ),
        (
            "[server]\nfast_path_interfaces = [\"eth0\", \"eth0\"]",
            "server.fast_path_interfaces",
        ),
        (
            "[server]\nfast_path_interfaces = [\"a-name-too-long-for-linux\"]",
            "server.fast_path_interfaces",
        ),
        (
            "[server]\nfast_path_interfaces = [\"\"]",
            "server.fast_path_interfaces",
        ),
        ("[listen]\nudp = [\"nonsense\"]", "listen.udp[0]"),
        (
            "[listen]\ntcp = [\"0.0.0.0:1\", \"0.0.0.0:0\"]",
            "listen.tcp[1]",
        ),
        (
            "[listen]\nudp = [\"0.0.0.0:1\", \"0.0.0.0:1\"]",
            "listen.udp[1]",
        ),
        ("[listen]\nudp = []\ntcp = []", "listen.udp"),
        ("[listen]\ntls = [\"0.0.0.0:5349\"]", "tls.certificate"),
        (
            "[listen]\ntls = [\"0.0.0.0:5349\"]\n[tls]\ncertificate = \"c.pem\"",
            "tls.private_key",
        ),
        ("[listen]\ntls = [\"0.0.0.0:3478\"]", "listen.tls[0]"),
        ("[listen]\nquic = [\"0.0.0.0:3478\"]", "listen.quic[0]"),
        ("[listen]\nquic = [\"0.0.0.0:0\"]", "listen.quic[0]"),
        ("[tls]\ncertificate = \"c.pem\"", "tls.private_key"),
        ("[tls]\nprivate_key = \"k.pem\"", "tls.certificate"),
        ("[relay]\nbind_ipv4 = \"::1\"", "relay.bind_ipv4"),
        ("[relay]\nbind_ipv6 = \"1.2.3.4\"", "relay.bind_ipv6"),
        (
            "[relay]\nbind_ipv4 = \"\"\nbind_ipv6 = \"\"",
            "relay.bind_ipv4",
        ),
        (
            "[relay]\nexternal_ipv4 = \"not-an-ip\"",
            "relay.external_ipv4",
        ),
        ("[relay]\nexternal_ipv6 = \"::\"", "relay.external_ipv6"),
        (
            "[relay]\nbind_ipv6 = \"\"\nexternal_ipv6 = \"2001:db8::1\"",
            "relay.external_ipv6",
        ),
        ("[relay]\nport_min = 0", "relay.port_min"),
        (
            "[relay]\nport_min = 60000\nport_max = 50000",
            "relay.port_min",
        ),
        (
            "[server]\nworkers = 4\n[relay]\nport_min = 50000\nport_max = 50002",
            "server.workers",
        ),
        (
            "[relay]\ndefault_lifetime_secs = 0",
            "relay.default_lifetime_secs",
        ),
        ("[relay]\nmax_lifetime_secs = 0", "relay.max_lifetime_secs"),
        (
            "[relay]\ndefault_lifetime_secs = 900\nmax_lifetime_secs = 800",
            "relay.default_lifetime_secs",
        ),
        (
            "[relay]\nmax_lifetime_secs = 9223372036854775807",
            "relay.max_lifetime_secs",
        ),
        ("[auth]\nusers = [\"alice\"]", "auth.users[0]"),
        ("[auth]\nusers = [\":pw\"]", "auth.users[0]"),
        ("[auth]\nusers = [\"alice:\"]", "auth.users[0]"),
        (
            "[auth]\nusers = [\"a:1\", \"b:2\", \"a:3\"]",
            "auth.users[2]",
        ),
        (
            "[auth]\nusers = [\"abcdef:1\"]\n[limits]\nmax_username_len = 5",
            "auth.users[0]",
        ),
        ("[auth]\nsecrets = [\"\"]", "auth.secrets[0]"),
        ("[auth]\nsecrets = [\"s\", \"s\"]", "auth.secrets[1]"),
        (
            "[auth]\nmax_credential_lifetime_secs = 0",
            "auth.max_credential_lifetime_secs",
        ),
        (
            "[auth]\nnonce_lifetime_secs = 0",
            "auth.nonce_lifetime_secs",
        ),
        ("[limits]\nmax_username_len = 0", "limits.max_username_len"),
        (
            "[limits]\nauth_cooldown_secs = 0",
            "limits.auth_cooldown_secs",
        ),
        (
            "[limits]\nauth_cooldown_secs = 86401",
            "limits.auth_cooldown_secs",
        ),
        (
            "[limits]\nmax_username_len = 509",
            "limits.max_username_len",
        ),
        ("[peers]\nallow = [\"10.0.0.0/33\"]", "peers.allow[0]"),
        (
            "[peers]\ndeny = [\"10.0.0.0/8\", \"bogus\"]",
            "peers.deny[1]",
        ),
        ("[metrics]\nlisten = \"localhost\"", "metrics.listen"),
        ("[log]\nformat = \"xml\"", "log.format"),
        ("[log]\nlevel = \"\"", "log.level"),
        ("[log]\nlevel = \"turnpike=loud\"", "log.level"),
    ];
    for (text, key) in cases {
        let e = parse_err(text);
        assert_eq!(e.key, *key, "{text}\n→ {e}");
        assert_eq!(e.origin, "/etc/turnpike/test.toml");
        let base = key.split('[').next().unwrap();
        let field = base.rsplit('.').next().unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{field} ")));
        assert_eq!(e.line, line.map(|l| l + 1), "{text}\n→ {e}");
        assert!(e.to_string().contains(&format!(": {key}: ")), "{e}");
    }
}

#[test]
fn errors_never_echo_passwords_or_secrets() {
    let e = parse_err("[auth]\nusers = [\"alice:hunter2\", \"alice:hunter3\"]");
    assert!(!e.to_string().contains("hunter"), "{e}");
    let e = parse_err("[auth]\nsecrets = [\"topsecret\", \"topsecret\"]");
    assert!(!e.to_string().contains("topsecret"), "{e}");
    let s = parse("[auth]\nusers = [\"alice:hunter2\"]\nsecrets = [\"topsecret\"]").unwrap();
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("topsecret"),
        "{debug}"
    );
}
