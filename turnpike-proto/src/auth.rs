//! Long-term credentials (RFC 8489 §9.2): static users and TURN REST shared secrets,
//! stateless nonces, and PASSWORD-ALGORITHMS negotiation.
//!
//! Nothing here keeps per-client state: a nonce carries its issue time and an HMAC
//! over that time and the client's 5-tuple, so any worker holding the key can check
//! it, a nonce cannot be replayed from another 5-tuple, and an unauthenticated flood
//! costs us no memory.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::addr::{ClientId, Transport};
use super::reject::Reject;
use super::stun::attr::{self, PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256};
use super::stun::Message;

/// TURN REST API credential (draft-uberti-behave-turn-rest): the username is
/// `"<unix expiry>:<user>"` and the password `base64(HMAC-SHA1(secret, username))`.
/// This is what coturn, eturnal, Synapse and friends mint, so they interoperate.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Mint a REST credential for `user` valid until `expiry_unix` (seconds since the epoch).
pub fn mint_rest_credential(secret: &[u8], user: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    let password = rest_password(secret, &username);
    (username, password)
}

/// RFC 8489 §9.2: a nonce that starts with this cookie carries a 24-bit security
/// feature set (4 base64 characters). "gAAA" sets the first bit, "password
/// algorithms": we offer PASSWORD-ALGORITHMS, and clients may pick SHA-256.
const NONCE_PREFIX: &str = "obMatJos2gAAA";
/// Issue time (4 bytes) + truncated HMAC-SHA256 (12 bytes).
const NONCE_BODY: usize = 16;

/// Clock difference tolerated between us and whoever mints REST credentials.
const CLOCK_SKEW_SECS: u64 = 60;

/// The algorithms we offer, in preference order (RFC 8489 §14.11): SHA-256 first.
pub const OFFERED_ALGORITHMS: [u16; 2] = [PASSWORD_ALGORITHM_SHA256, PASSWORD_ALGORITHM_MD5];

/// Which integrity attribute the client used; we answer with the same one, so a
/// legacy (RFC 5389) client never sees MESSAGE-INTEGRITY-SHA256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// MESSAGE-INTEGRITY, HMAC-SHA1 (RFC 8489 §14.5).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256 (RFC 8489 §14.6).
    Sha256,
}

/// A verified request's identity and the key to sign our response with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// USERNAME as sent (for REST credentials, `"<expiry>:<user>"`).
    pub username: String,
    /// Whom quotas count against: the user part of a REST username, else the username.
    pub quota_user: String,
    /// The long-term key (RFC 8489 §9.2.2, see [`long_term_key`]) that verified the
    /// request; our response is signed with it.
    pub key: Vec<u8>,
    /// The integrity attribute the request carried, and so the one our response carries.
    pub integrity: Integrity,
}

/// What authenticates requests; built once from config and shared by nothing
/// mutable, so every worker has its own copy.
#[derive(Debug, Clone)]
pub struct Authenticator {
    realm: String,
    users: HashMap<String, String>,
    secrets: Vec<Vec<u8>>,
    max_credential_lifetime: u64,
    nonce_lifetime: u64,
    nonce_key: [u8; 32],
    max_username_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonceCheck {
    Valid,
    Stale,
}

impl Authenticator {
    /// `users`: static name → password pairs. `secrets`: TURN REST shared secrets, any
    /// of which may verify. `max_credential_lifetime`: seconds a REST credential may
    /// claim to stay valid (see [`Authenticator::authenticate`]). `nonce_lifetime`:
    /// seconds before a nonce earns 438. `nonce_key`: HMAC key of the stateless nonces,
    /// the same on every worker. `max_username_len`: longest USERNAME in bytes (400 past it).
    pub fn new(
        realm: String,
        users: Vec<(String, String)>,
        secrets: Vec<Vec<u8>>,
        max_credential_lifetime: u64,
        nonce_lifetime: u64,
        nonce_key: [u8; 32],
        max_username_len: usize,
    ) -> Authenticator {
        Authenticator {
            realm,
            users: users.into_iter().collect(),
            secrets,
            max_credential_lifetime,
            nonce_lifetime,
            nonce_key,
            max_username_len,
        }
    }

    /// REALM (RFC 8489 §14.9) we put in 401/438 answers and require in requests.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh nonce for `client`, issued at `unix_now`.
    pub fn nonce(&self, unix_now: u64, client: &ClientId) -> String {
        let issued = unix_now as u32;
        let mut body = [0u8; NONCE_BODY];
        body[..4].copy_from_slice(&issued.to_be_bytes());
        body[4..].copy_from_slice(&self.nonce_mac(issued, client).finalize().into_bytes()[..12]);
        let mut nonce = String::with_capacity(NONCE_PREFIX.len() + 22);
        nonce.push_str(NONCE_PREFIX);
        URL_SAFE_NO_PAD.encode_string(body, &mut nonce);
        nonce
    }

    fn nonce_mac(&self, issued: u32, client: &ClientId) -> Hmac<Sha256> {
        // A 32-byte key is always accepted.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.nonce_key).expect("HMAC takes any key");
        mac.update(&issued.to_be_bytes());
        mac.update(&[match client.transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Quic => 3,
        }]);
        for addr in [client.remote, client.local] {
            match addr.ip() {
                std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
                std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
            }
            mac.update(&addr.port().to_be_bytes());
        }
        mac
    }

    /// A nonce we did not issue for this 5-tuple, or issued too long ago, is stale:
    /// the client gets 438 and a fresh one (RFC 8489 §9.2.4).
    fn check_nonce(&self, nonce: &str, unix_now: u64, client: &ClientId) -> NonceCheck {
        let Some(encoded) = nonce.strip_prefix(NONCE_PREFIX) else {
            return NonceCheck::Stale;
        };
        let mut body = [0u8; NONCE_BODY];
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut body) {
            Ok(NONCE_BODY) => {}
            _ => return NonceCheck::Stale,
        }
        let issued = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if self
            .nonce_mac(issued, client)
            .verify_truncated_left(&body[4..])
            .is_err()
        {
            return NonceCheck::Stale;
        }
        let now = unix_now as u32;
        // A nonce from the future (clock stepped back) is as useless as an old one.
        if issued > now || now - issued >= self.nonce_lifetime as u32 {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }

    /// Authenticate a request (RFC 8489 §9.2.4). `Err` carries what the client is told;
    /// 401 and 438 answers must carry REALM and a fresh NONCE (the caller adds them).
    ///
    /// A static user is looked up by name. Any other USERNAME is taken as a TURN REST
    /// one, `"<expiry>:<user>"` (or a bare expiry), and accepted only if its expiry,
    /// in Unix seconds, is after `unix_now` and at most `max_credential_lifetime` + 60 s
    /// ahead of it: the 60 s allow for skew between our clock and the minter's.
    pub fn authenticate(
        &self,
        msg: &Message<'_>,
        unix_now: u64,
        client: &ClientId,
    ) -> Result<Credential, Reject> {
        let has_sha256 = msg.has(attr::MESSAGE_INTEGRITY_SHA256);
        if !msg.has(attr::MESSAGE_INTEGRITY) && !has_sha256 {
            return Err(Reject::Unauthorized);
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            // USERHASH (username anonymity) is not offered, so USERNAME is required.
            return Err(Reject::BadRequest);
        };
        if username.len() > self.max_username_len {
            return Err(Reject::BadRequest);
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            attr::decode_str(username),
            attr::decode_str(realm),
            attr::decode_str(nonce),
        ) else {
            return Err(Reject::BadRequest);
        };
        if self.check_nonce(nonce, unix_now, client) == NonceCheck::Stale {
            return Err(Reject::StaleNonce);
        }
        let algorithm = self.negotiated_algorithm(msg)?;
        if realm != self.realm {
            return Err(Reject::Unauthorized);
        }
        let integrity = if has_sha256 {
            Integrity::Sha256
        } else {
            Integrity::Sha1
        };
        let (quota_user, passwords) = self.passwords_for(username, unix_now)?;
        for password in passwords {
            let key = long_term_key(algorithm, username, realm, &password);
            let valid = match integrity {
                Integrity::Sha256 => msg.check_integrity_sha256(&key),
                Integrity::Sha1 => msg.check_integrity_sha1(&key),
            };
            if valid == Some(true) {
                return Ok(Credential {
                    username: username.to_owned(),
                    quota_user,
                    key,
                    integrity,
                });
            }
        }
        Err(Reject::Unauthorized)
    }

    /// RFC 8489 §9.2.4: our nonces always advertise password algorithms. A client that
    /// echoes PASSWORD-ALGORITHMS must echo ours unchanged (a downgrade attempt
    /// otherwise) and pick one of them; a client that sends neither uses MD5.
    fn negotiated_algorithm(&self, msg: &Message<'_>) -> Result<u16, Reject> {
        let offered = msg.get(attr::PASSWORD_ALGORITHMS);
        let chosen = msg.get(attr::PASSWORD_ALGORITHM);
        match (offered, chosen) {
            (None, None) => Ok(PASSWORD_ALGORITHM_MD5),
            (Some(offered), chosen) => {
                if offered != attr::encode_password_algorithms(&OFFERED_ALGORITHMS).as_slice() {
                    return Err(Reject::BadRequest);
                }
                let Some(chosen) = chosen else {
                    return Ok(PASSWORD_ALGORITHM_MD5);
                };
                match attr::decode_password_algorithm(chosen) {
                    Ok((alg, _)) if OFFERED_ALGORITHMS.contains(&alg) => Ok(alg),
                    _ => Err(Reject::BadRequest),
                }
            }
            (None, Some(_)) => Err(Reject::BadRequest),
        }
    }

    /// The candidate passwords for `username`: a static user's, or for a REST username
    /// one per shared secret (rotation), if its expiry is in the accepted window.
    fn passwords_for(
        &self,
        username: &str,
        unix_now: u64,
    ) -> Result<(String, Vec<String>), Reject> {
        if let Some(password) = self.users.get(username) {
            return Ok((username.to_owned(), vec![password.clone()]));
        }
        if self.secrets.is_empty() {
            return Err(Reject::Unauthorized);
        }
        let (expiry, user) = match username.split_once(':') {
            Some((expiry, user)) => (expiry, user),
            None => (username, ""),
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return Err(Reject::Unauthorized);
        };
        // Whoever minted the credential has its own clock; tolerate a little skew when
        // it claims the longest lifetime allowed (coturn's client mints exactly now+1 day).
        if expiry <= unix_now || expiry - unix_now > self.max_credential_lifetime + CLOCK_SKEW_SECS
        {
            return Err(Reject::Unauthorized);
        }
        let quota_user = if user.is_empty() { username } else { user };
        let passwords = self
            .secrets
            .iter()
            .map(|secret| rest_password(secret, username))
            .collect();
        Ok((quota_user.to_owned(), passwords))
    }
}

/// RFC 8489 §9.2.2: key = H(username ":" realm ":" password), H per PASSWORD-ALGORITHM.
/// Passwords are used as given (no SASLprep): the ASCII credentials of TURN REST and
/// typical configs are unchanged by it.
pub fn long_term_key(algorithm: u16, username: &str, realm: &str, password: &str) -> Vec<u8> {
    fn feed<D: Digest>(mut d: D, username: &str, realm: &str, password: &str) -> Vec<u8> {
        d.update(username.as_bytes());
        d.update(b":");
        d.update(realm.as_bytes());
        d.update(b":");
        d.update(password.as_bytes());
        d.finalize().to_vec()
    }
    if algorithm == PASSWORD_ALGORITHM_SHA256 {
        feed(Sha256::new(), username, realm, password)
    } else {
        feed(Md5::new(), username, realm, password)
    }
}
