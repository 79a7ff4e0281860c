//! Long-term credential authentication (RFC 8489 §9.2): the 401 challenge, stateless
//! nonces bound to the 5-tuple, PASSWORD-ALGORITHMS negotiation (SHA-256 and legacy
//! MD5), and TURN REST shared-secret credentials with expiry and secret rotation.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use core_harness::*;
use turnpike::proto::auth::{long_term_key, mint_rest_credential, OFFERED_ALGORITHMS};
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256};
use turnpike::proto::stun::{method, Class, MessageBuilder};

/// A request assembled piece by piece, to leave out or corrupt what `Client` gets right.
struct Parts<'a> {
    username: Option<&'a str>,
    realm: Option<&'a str>,
    nonce: Option<&'a str>,
    key: Vec<u8>,
}

fn custom_request(net: &mut Net, client: &mut Client, p: Parts<'_>) -> Reply {
    let tid = client.tid();
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Request, method::ALLOCATE, tid);
    udp_transport(&mut b);
    if let Some(u) = p.username {
        b.add(attr::USERNAME, u.as_bytes());
    }
    if let Some(r) = p.realm {
        b.add(attr::REALM, r.as_bytes());
    }
    if let Some(n) = p.nonce {
        b.add(attr::NONCE, n.as_bytes());
    }
    b.add_message_integrity(&p.key);
    net.exchange(client.id, &buf)
}

/// What every 401/438 must carry (RFC 8489 §9.2.4), and must not.
fn assert_challenge(reply: &Reply, code: u16) {
    reply.assert_error(code);
    assert_eq!(reply.string(attr::REALM).as_deref(), Some(REALM));
    let nonce = reply.string(attr::NONCE).expect("NONCE");
    // RFC 8489 §9.2: the nonce cookie announcing the "password algorithms" feature.
    assert!(nonce.starts_with("obMatJos2"), "{nonce}");
    assert_eq!(
        reply.get(attr::PASSWORD_ALGORITHMS),
        Some(attr::encode_password_algorithms(&[
            PASSWORD_ALGORITHM_SHA256,
            PASSWORD_ALGORITHM_MD5
        ]))
    );
    assert!(!reply.has(attr::MESSAGE_INTEGRITY));
    assert!(!reply.has(attr::MESSAGE_INTEGRITY_SHA256));
    assert!(!reply.has(attr::SOFTWARE));
}

#[test]
fn request_without_integrity_is_challenged_with_a_small_401() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    let reply = alice.fetch_nonce(&mut net);
    assert_challenge(&reply, 401);
    // No amplification: the answer to a 28-byte unauthenticated request stays small.
    assert!(reply.len() <= 160, "401 is {} bytes", reply.len());
    assert_eq!(net.server.allocation_count(), 0);
}

#[test]
fn wrong_password_unknown_user_and_wrong_realm_get_401() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    let nonce = alice.nonce.clone().expect("nonce");

    // The challenge to a request without credentials is not a failed sign-in.
    assert_eq!(net.server.stats().auth_failures, 0);

    let mut wrong = alice.clone();
    wrong.pass = "not-alice-pw".to_owned();
    assert_challenge(&wrong.allocate_with(&mut net, &no_attrs), 401);
    assert_eq!(net.server.stats().auth_failures, 1);

    let mut mallory = Client::new(alice.id, "mallory", "whatever");
    mallory.nonce = Some(nonce.clone());
    assert_challenge(&mallory.allocate_with(&mut net, &no_attrs), 401);

    let key = long_term_key(PASSWORD_ALGORITHM_MD5, "alice", "other.org", "alice-pw");
    let reply = custom_request(
        &mut net,
        &mut alice,
        Parts {
            username: Some("alice"),
            realm: Some("other.org"),
            nonce: Some(&nonce),
            key,
        },
    );
    assert_challenge(&reply, 401);
    assert_eq!(net.server.allocation_count(), 0);
    assert_eq!(net.server.stats().auth_failures, 3);
}

#[test]
fn integrity_without_username_realm_or_nonce_gets_400() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    let nonce = alice.nonce.clone().expect("nonce");
    let key = alice.key();
    for (u, r, n) in [
        (None, Some(REALM), Some(nonce.as_str())),
        (Some("alice"), None, Some(nonce.as_str())),
        (Some("alice"), Some(REALM), None),
    ] {
        let parts = Parts {
            username: u,
            realm: r,
            nonce: n,
            key: key.clone(),
        };
        let reply = custom_request(&mut net, &mut alice, parts);
        reply.assert_error(400);
        assert!(!reply.has(attr::MESSAGE_INTEGRITY));
    }
}

#[test]
fn over_long_username_gets_400() {
    let mut net = Net::new();
    let id = net.udp_id();
    let long = "a".repeat(65); // max_username_len is 64
    let mut client = Client::new(id, &long, "pw");
    client.fetch_nonce(&mut net);
    client.allocate_with(&mut net, &no_attrs).assert_error(400);
}

#[test]
fn nonce_is_bound_to_the_five_tuple() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    // The same client from another source port presents the old nonce.
    let other_port = net.udp_id();
    let mut moved = alice.moved_to(other_port);
    moved.nonce = alice.nonce.clone();
    let reply = moved.allocate_with(&mut net, &no_attrs);
    assert_challenge(&reply, 438);
    let fresh = reply.string(attr::NONCE);
    assert_ne!(fresh, alice.nonce);
    // The fresh nonce is valid for the new 5-tuple.
    moved.nonce = fresh;
    moved.allocate_with(&mut net, &no_attrs).assert_ok();
}

#[test]
fn nonce_expires_after_its_lifetime_and_the_fresh_one_works() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice
        .allocate_with(&mut net, &|b| b.add_u32(attr::LIFETIME, 3600))
        .assert_ok();
    net.advance(std::time::Duration::from_secs(3599));
    alice.refresh(&mut net, Some(600)).assert_ok();
    net.advance(std::time::Duration::from_secs(1)); // nonce_lifetime is 3600 s
    let reply = alice.refresh(&mut net, Some(600));
    assert_challenge(&reply, 438);
    alice.nonce = reply.string(attr::NONCE);
    let reply = alice.refresh(&mut net, Some(600));
    reply.assert_ok();
    assert_eq!(reply.u32(attr::LIFETIME), Some(600));
}

#[test]
fn garbage_nonce_gets_438() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    for garbage in [
        "garbage",
        "obMatJos2gAAA",
        "obMatJos2gAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "obMatJos2gAAA!!!!",
    ] {
        alice.nonce = Some(garbage.to_owned());
        assert_challenge(&alice.allocate_with(&mut net, &no_attrs), 438);
    }
    // A nonce minted for another realm's server (another key) is stale too.
    let mut other = Net::with(|c| c.nonce_key = [9; 32]);
    let mut stranger = Client::new(alice.id, "alice", "alice-pw");
    stranger.fetch_nonce(&mut other);
    alice.nonce = stranger.nonce;
    assert_challenge(&alice.allocate_with(&mut net, &no_attrs), 438);
}

#[test]
fn authenticated_answers_are_signed_with_the_users_key() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    let key = alice.key();
    let ok = alice.allocate_with(&mut net, &no_attrs);
    ok.assert_ok();
    // Error answers to authenticated requests are signed too (RFC 8489 §9.2.4).
    let mismatch = alice.allocate_with(&mut net, &no_attrs);
    mismatch.assert_error(437);
    let refreshed = alice.refresh(&mut net, None);
    refreshed.assert_ok();
    for reply in [&ok, &mismatch, &refreshed] {
        assert_eq!(reply.msg().check_integrity_sha1(&key), Some(true));
        assert_eq!(reply.msg().check_integrity_sha1(b"wrong key"), Some(false));
        assert_eq!(
            reply.string(attr::SOFTWARE).as_deref(),
            Some("turnpike-test")
        );
        // A legacy (RFC 5389) client never sees MESSAGE-INTEGRITY-SHA256.
        assert!(!reply.has(attr::MESSAGE_INTEGRITY_SHA256));
    }
}

#[test]
fn sha256_client_is_answered_with_message_integrity_sha256() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.alg = Alg::Sha256;
    let reply = alice.allocate_with(&mut net, &no_attrs);
    reply.assert_ok();
    let key = long_term_key(PASSWORD_ALGORITHM_SHA256, "alice", REALM, "alice-pw");
    assert_eq!(key.len(), 32);
    assert_eq!(reply.msg().check_integrity_sha256(&key), Some(true));
    assert!(!reply.has(attr::MESSAGE_INTEGRITY));
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .msg()
        .check_integrity_sha256(&key)
        .expect("MESSAGE-INTEGRITY-SHA256 present");
}

/// A SHA-256 request with PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM as given.
fn negotiate(
    net: &mut Net,
    client: &mut Client,
    algorithms: Option<Vec<u8>>,
    algorithm: Option<[u8; 4]>,
) -> Reply {
    let tid = client.tid();
    let nonce = client.nonce.clone().expect("nonce");
    let mut buf = Vec::new();
    let mut b = MessageBuilder::new(&mut buf, Class::Request, method::ALLOCATE, tid);
    udp_transport(&mut b);
    b.add(attr::USERNAME, client.user.as_bytes());
    b.add(attr::REALM, REALM.as_bytes());
    b.add(attr::NONCE, nonce.as_bytes());
    if let Some(list) = algorithms {
        b.add(attr::PASSWORD_ALGORITHMS, &list);
    }
    if let Some(alg) = algorithm {
        b.add(attr::PASSWORD_ALGORITHM, &alg);
    }
    let key = long_term_key(PASSWORD_ALGORITHM_SHA256, &client.user, REALM, &client.pass);
    b.add_message_integrity_sha256(&key);
    net.exchange(client.id, &buf)
}

#[test]
fn password_algorithm_downgrade_and_inconsistency_get_400() {
    let mut net = Net::new();
    let mut alice = net.client("alice");
    alice.fetch_nonce(&mut net);
    let offered = attr::encode_password_algorithms(&OFFERED_ALGORITHMS);
    let sha256 = Some([0, 2, 0, 0]);
    // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS must match what we offered, byte for byte.
    let md5_only = attr::encode_password_algorithms(&[PASSWORD_ALGORITHM_MD5]);
    negotiate(&mut net, &mut alice, Some(md5_only), sha256).assert_error(400);
    let reordered =
        attr::encode_password_algorithms(&[PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256]);
    negotiate(&mut net, &mut alice, Some(reordered), sha256).assert_error(400);
    // PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS.
    negotiate(&mut net, &mut alice, None, sha256).assert_error(400);
    // An algorithm we never offered.
    negotiate(
        &mut net,
        &mut alice,
        Some(offered.clone()),
        Some([0, 3, 0, 0]),
    )
    .assert_error(400);
    // The exact offer plus SHA-256 succeeds.
    negotiate(&mut net, &mut alice, Some(offered), sha256).assert_ok();
}

fn rest_client(net: &mut Net, secret: &[u8], user: &str, expiry: u64) -> Client {
    let (username, password) = mint_rest_credential(secret, user, expiry);
    let id = net.udp_id();
    Client::new(id, &username, &password)
}

#[test]
fn rest_credential_authenticates_and_counts_against_its_user() {
    let mut net = Net::with_quotas(quota(1));
    let unix_now = net.unix_now();
    let mut rachel = rest_client(&mut net, SECRET, "rachel", unix_now + 600);
    assert!(rachel.user.ends_with(":rachel"));
    let reply = rachel.allocate_with(&mut net, &no_attrs);
    reply.assert_ok();
    assert_eq!(reply.msg().check_integrity_sha1(&rachel.key()), Some(true));
    // The quota belongs to "rachel", not to the per-credential username.
    assert_eq!(net.shared.quotas().held_by("rachel"), 1);
    let mut again = rest_client(&mut net, SECRET, "rachel", unix_now + 900);
    again.allocate_with(&mut net, &no_attrs).assert_error(486);
}

fn quota(per_user: u32) -> turnpike::proto::quota::Quotas {
    turnpike::proto::quota::Quotas::new(per_user, 0)
}

#[test]
fn rest_credential_expiry_is_enforced() {
    let mut net = Net::new();
    let unix_now = net.unix_now();
    // Already expired.
    let mut past = rest_client(&mut net, SECRET, "rachel", unix_now - 1);
    assert_challenge(&past.allocate_with(&mut net, &no_attrs), 401);
    // Expiring exactly now is expired too.
    let mut now = rest_client(&mut net, SECRET, "rachel", unix_now);
    assert_challenge(&now.allocate_with(&mut net, &no_attrs), 401);
    // Claims a validity beyond max_credential_lifetime (86 400 s), more than the 60 s of
    // clock skew tolerated between the minter and us.
    let mut far = rest_client(&mut net, SECRET, "rachel", unix_now + 86_461);
    assert_challenge(&far.allocate_with(&mut net, &no_attrs), 401);
    let mut edge = rest_client(&mut net, SECRET, "rachel", unix_now + 86_460);
    edge.allocate_with(&mut net, &no_attrs).assert_ok();

    // Valid now, then virtual time passes its expiry.
    let mut rachel = rest_client(&mut net, SECRET, "rachel", unix_now + 600);
    rachel.allocate(&mut net);
    net.advance(std::time::Duration::from_secs(599));
    rachel.refresh(&mut net, Some(600)).assert_ok();
    net.advance(std::time::Duration::from_secs(1));
    assert_challenge(&rachel.refresh(&mut net, Some(600)), 401);
}

#[test]
fn rest_secret_rotation_accepts_current_and_previous_secrets_only() {
    let mut net = Net::with(|c| c.secrets = vec![b"new-secret".to_vec(), b"old-secret".to_vec()]);
    let expiry = net.unix_now() + 3600;
    let mut new = rest_client(&mut net, b"new-secret", "rachel", expiry);
    new.allocate_with(&mut net, &no_attrs).assert_ok();
    let mut old = rest_client(&mut net, b"old-secret", "ray", expiry);
    let reply = old.allocate_with(&mut net, &no_attrs);
    reply.assert_ok();
    assert_eq!(reply.msg().check_integrity_sha1(&old.key()), Some(true));
    let mut retired = rest_client(&mut net, b"retired-secret", "erin", expiry);
    assert_challenge(&retired.allocate_with(&mut net, &no_attrs), 401);
    assert_eq!(net.server.allocation_count(), 2);
}

#[test]
fn static_and_rest_users_side_by_side() {
    let mut net = Net::new();
    let mut bob = net.client("bob");
    let expiry = net.unix_now() + 600;
    let mut rachel = rest_client(&mut net, SECRET, "rachel", expiry);
    let bob_relay = bob.allocate(&mut net);
    let rachel_relay = rachel.allocate(&mut net);
    assert_ne!(bob_relay, rachel_relay);
    assert_eq!(net.shared.quotas().held_by("bob"), 1);
    assert_eq!(net.shared.quotas().held_by("rachel"), 1);
    // A REST-shaped name is not a static user's, and vice versa.
    let mut fake = Client::new(bob.id, &format!("{expiry}:bob"), "bob-pw");
    fake.nonce = bob.nonce.clone();
    assert_challenge(&fake.refresh(&mut net, None), 401);
    // Requests on an allocation must come from its owner (RFC 8656 §5: 441).
    let mut rachel_on_bobs_tuple = Client::new(bob.id, &rachel.user, &rachel.pass);
    rachel_on_bobs_tuple.nonce = bob.nonce.clone();
    rachel_on_bobs_tuple
        .refresh(&mut net, None)
        .assert_error(441);
}
