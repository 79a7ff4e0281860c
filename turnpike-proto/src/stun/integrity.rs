//! MESSAGE-INTEGRITY(-SHA256), FINGERPRINT and long-term key derivation (RFC 8489 §9, §14).
//!
//! The HMAC input is fed in two pieces — a header copy with its length rewritten,
//! then the body bytes before the integrity attribute — so verification never
//! copies or allocates the message.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// RFC 8489 §14.7: FINGERPRINT is the CRC-32 of the message up to (not including) the
/// attribute, XORed with 0x5354554e ("STUN") so it never collides with other CRCs.
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// The FINGERPRINT value for the message bytes that precede the attribute (whose
/// header length must already count the FINGERPRINT attribute).
pub fn fingerprint(covered: &[u8]) -> u32 {
    crc32fast::hash(covered) ^ FINGERPRINT_XOR
}

/// HMAC-SHA1 over `header` then `body`.
pub fn hmac_sha1(key: &[u8], header: &[u8], body: &[u8]) -> [u8; 20] {
    let mut mac = sha1_mac(key);
    mac.update(header);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `header` then `body`.
pub fn hmac_sha256(key: &[u8], header: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = sha256_mac(key);
    mac.update(header);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a 20-byte MESSAGE-INTEGRITY value.
pub fn verify_sha1(key: &[u8], header: &[u8], body: &[u8], tag: &[u8]) -> bool {
    let mut mac = sha1_mac(key);
    mac.update(header);
    mac.update(body);
    mac.verify_slice(tag).is_ok()
}

/// Constant-time check of a MESSAGE-INTEGRITY-SHA256 value, which RFC 8489 §14.6 lets
/// the sender truncate to its leftmost 16..=32 bytes (parsing enforced that range).
pub fn verify_sha256(key: &[u8], header: &[u8], body: &[u8], tag: &[u8]) -> bool {
    if tag.len() < 16 {
        // An empty or very short tag would "verify" trivially; parsing already refuses it.
        return false;
    }
    let mut mac = sha256_mac(key);
    mac.update(header);
    mac.update(body);
    mac.verify_truncated_left(tag).is_ok()
}

fn sha1_mac(key: &[u8]) -> HmacSha1 {
    // HMAC takes keys of any length (long keys are hashed), so this cannot fail.
    HmacSha1::new_from_slice(key).expect("HMAC accepts any key length")
}

fn sha256_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long keys are hashed), so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// Long-term credential key for PASSWORD-ALGORITHM MD5 (the default):
/// `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2). The password must
/// already be SASLprep'd (OpaqueString); the username and realm are used as sent.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    feed_credentials(&mut h, username, realm, password);
    h.finalize().into()
}

/// Long-term credential key for PASSWORD-ALGORITHM SHA-256:
/// `SHA-256(username ":" realm ":" password)` (RFC 8489 §9.2.2).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    feed_credentials(&mut h, username, realm, password);
    h.finalize().into()
}

/// USERHASH value: `SHA-256(username ":" realm)` (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.finalize().into()
}

fn feed_credentials<D: Digest>(h: &mut D, username: &str, realm: &str, password: &str) {
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
}
