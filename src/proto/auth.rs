//! Long-term credentials (RFC 8489 §9.2): static users and TURN REST shared secrets.

use base64::Engine;
use hmac::{Hmac, Mac};

/// TURN REST API credential (draft-uberti-behave-turn-rest): the username is
/// `"<unix expiry>:<user>"` and the password `base64(HMAC-SHA1(secret, username))`.
/// This is what coturn, eturnal, Synapse and friends mint, so they interoperate.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mint a REST credential for `user` valid until `expiry_unix` (seconds since the epoch).
pub fn mint_rest_credential(secret: &[u8], user: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    let password = rest_password(secret, &username);
    (username, password)
}
