//! Bearer tokens: compact JWTs signed with HS256 (RFC 7519, RFC 7515) naming a user
//! (`sub`), a device (`dev`) and an expiry (`exp`, unix seconds).
//!
//! The app's own backend signs them with the shared `token_key`; the signaling service
//! only verifies. Verification accepts exactly `alg: HS256` (never `none` or another
//! algorithm the token names: RFC 8725 §3.1), compares the MAC in constant time and checks
//! `exp` against the caller's clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::protocol::valid_name;

type HmacSha256 = Hmac<Sha256>;

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The device of that user (one WebSocket per device).
    pub dev: String,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token names an invalid user or device")]
    BadClaims,
}

/// The HS256 key. `Debug` does not show it.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl TokenKey {
    pub fn new(key: impl Into<Vec<u8>>) -> TokenKey {
        TokenKey(key.into())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail.
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// Sign `claims` (what an app backend does; here for dev login and tests).
    pub fn sign(&self, claims: &Claims) -> String {
        // Serializing a struct of strings and an integer cannot fail.
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verify `token` at `now_unix` (seconds).
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let h: Header = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        // RFC 8725 §3.1: never let the token pick the algorithm.
        if h.alg != "HS256" {
            return Err(TokenError::BadSignature);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now_unix {
            return Err(TokenError::Expired);
        }
        if !valid_name(&claims.sub) || !valid_name(&claims.dev) {
            return Err(TokenError::BadClaims);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            dev: "phone".into(),
            exp,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let key = TokenKey::new("k1");
        let t = key.sign(&claims(1000));
        assert_eq!(key.verify(&t, 999), Ok(claims(1000)));
        assert_eq!(key.verify(&t, 1000), Err(TokenError::Expired));
        assert_eq!(
            TokenKey::new("k2").verify(&t, 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key.verify("a.b", 1), Err(TokenError::Malformed));
        // A changed payload with the old signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory","dev":"x","exp":5000}"#);
        parts[1] = &forged;
        assert_eq!(
            key.verify(&parts.join("."), 1),
            Err(TokenError::BadSignature)
        );
        // alg "none" with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"a","dev":"b","exp":5000}"#)
        );
        assert_eq!(key.verify(&none, 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn matches_an_independent_hs256() {
        // RFC 7515 A.1-style check: recompute the MAC over the first two parts.
        let key = TokenKey::new("secret");
        let t = key.sign(&claims(42));
        let (input, sig) = t.rsplit_once('.').unwrap();
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(input.as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()), sig);
    }
}
