//! The built binary: `check-config` exit codes and messages, `credentials` output checked
//! against an HMAC computed here.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use turnpike::config::EMBEDDED_DEFAULT;

fn turnpike(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(args)
        // The tests must not pick up an operator's environment.
        .env_remove("TURNPIKE_SECRET")
        .env_remove("TURNPIKE_CONFIG")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap(),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.toml");
    std::fs::write(&path, EMBEDDED_DEFAULT).unwrap();
    let (code, stdout, _) = turnpike(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("{}: ok\n", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("realm: turnpike"), "{stdout}");
}

#[test]
fn check_config_rejects_a_bad_file_naming_path_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[relay]\nport_min = 60000\nport_max = 50000\n").unwrap();
    let (code, stdout, stderr) = turnpike(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    let expected = format!("{}:2: relay.port_min: 60000 is greater", path.display());
    assert!(stderr.contains(&expected), "{stderr}");

    let missing = dir.path().join("missing.toml");
    let (code, _, stderr) = turnpike(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.toml: cannot read"), "{stderr}");

    let (code, _, _) = turnpike(&["check-config"]);
    assert_eq!(code, 2, "usage error");
}

fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn credentials_prints_a_valid_rest_credential() {
    let before = now_unix();
    let (code, stdout, stderr) = turnpike(&[
        "credentials",
        "--secret",
        "s3cret",
        "--user",
        "alice",
        "--ttl",
        "3600",
    ]);
    let after = now_unix();
    assert_eq!(code, 0, "{stderr}");
    let mut lines = stdout.lines();
    let username = lines.next().unwrap().strip_prefix("username: ").unwrap();
    let password = lines.next().unwrap().strip_prefix("password: ").unwrap();
    assert_eq!(lines.next(), None);
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    assert!((before + 3600..=after + 3600).contains(&expiry), "{expiry}");
    assert_eq!(password, rest_password("s3cret", username));
}

#[test]
fn credentials_json_and_default_ttl() {
    let before = now_unix();
    let (code, stdout, _) = turnpike(&["credentials", "--secret", "k", "--user", "bob", "--json"]);
    assert_eq!(code, 0);
    // {"username":"<expiry>:bob","password":"<base64>","ttl":86400}
    let body = stdout.trim().strip_prefix("{\"username\":\"").unwrap();
    let (username, rest) = body.split_once("\",\"password\":\"").unwrap();
    let (password, rest) = rest.split_once("\",\"ttl\":").unwrap();
    assert_eq!(rest, "86400}");
    let expiry: u64 = username.strip_suffix(":bob").unwrap().parse().unwrap();
    assert!(expiry >= before + 86400 && expiry <= now_unix() + 86400);
    assert_eq!(password, rest_password("k", username));

    // A user name that needs escaping stays valid JSON.
    let (code, stdout, _) = turnpike(&[
        "credentials",
        "--secret",
        "k",
        "--user",
        "q\"b\\s",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert!(stdout.contains(":q\\\"b\\\\s\",\"password\""), "{stdout}");
}

#[test]
fn credentials_refuses_bad_input() {
    for args in [
        &["credentials", "--secret", "k", "--user", "a:b"][..],
        &["credentials", "--secret", "k", "--user", "a", "--ttl", "0"],
        &["credentials", "--secret", "", "--user", "a"],
        &["credentials", "--user", "a"],
    ] {
        let (code, stdout, _) = turnpike(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}
