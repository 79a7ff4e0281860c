//! Loading the certificate and key for TURN over TLS (RFC 8656 §3.1, port 5349 or 443).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built; every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid PEM: {source}")]
    Pem { path: PathBuf, source: io::Error },
    #[error("{path} contains no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} contains no private key")]
    NoKey { path: PathBuf },
    #[error("{path}: the leaf certificate's expiry (notAfter) cannot be read")]
    Expiry { path: PathBuf },
    #[error("certificate {cert} and key {key} are not usable together: {source}")]
    Rustls {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1).
pub fn load_certified_key(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_bytes = read(cert_pem)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_pem.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_pem.to_owned(),
        });
    }

    let key_bytes = read(key_pem)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .map_err(|source| TlsError::Pem {
            path: key_pem.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: key_pem.to_owned(),
        })?;

    Ok((certs, key))
}

/// The TLS listeners' server configuration from a PEM certificate chain and key. Client
/// certificates are not requested: TURN authenticates users with long-term credentials
/// inside the tunnel.
pub fn load_server_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (certs, key) = load_certified_key(cert_pem, key_pem)?;
    let rustls_error = |source| TlsError::Rustls {
        cert: cert_pem.to_owned(),
        key: key_pem.to_owned(),
        source,
    };
    // The provider is named explicitly so that the process-wide default (which depends
    // on the crate features of the whole dependency graph) does not matter.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_error)?;
    Ok(Arc::new(config))
}

/// When the leaf (first) certificate of the PEM file at `cert_pem` expires: its notAfter,
/// in Unix seconds.
pub fn leaf_not_after(cert_pem: &Path) -> Result<i64, TlsError> {
    let bytes = read(cert_pem)?;
    let leaf = rustls_pemfile::certs(&mut bytes.as_slice())
        .next()
        .ok_or_else(|| TlsError::NoCertificate {
            path: cert_pem.to_owned(),
        })?
        .map_err(|source| TlsError::Pem {
            path: cert_pem.to_owned(),
            source,
        })?;
    not_after(&leaf).ok_or_else(|| TlsError::Expiry {
        path: cert_pem.to_owned(),
    })
}

/// The notAfter of a DER X.509 certificate, in Unix seconds. RFC 5280 §4.1:
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
///     version [0] EXPLICIT OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
///     issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, ... }, ... }
/// ```
///
/// Walking these few elements takes less than an X.509 library would add to the build.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (tbs, _) = der_element(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest, 0xa0)?.1;
    }
    rest = der_element(rest, 0x02)?.1; // serialNumber
    rest = der_element(rest, 0x30)?.1; // signature algorithm
    rest = der_element(rest, 0x30)?.1; // issuer
    let (validity, _) = der_element(rest, 0x30)?;
    let after_not_before = der_element(validity, *validity.first()?)?.1;
    let tag = *after_not_before.first()?;
    let (time, _) = der_element(after_not_before, tag)?;
    der_time(tag, time)
}

/// Splits one DER element with `tag` off the front of `input`: (its content, the rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits say how many length bytes follow.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// A certificate Time (RFC 5280 §4.1.2.5): UTCTime `YYMMDDHHMMSSZ` (tag 0x17, years
/// 1950–2049) or GeneralizedTime `YYYYMMDDHHMMSSZ` (tag 0x18), both in UTC.
fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { rest.get(range)?.parse().ok() };
    let (month, day) = (num(0..2)?, num(2..4)?);
    let (hour, minute, second) = (num(4..6)?, num(6..8)?, num(8..10)?);
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (the
/// well-known era-based conversion: eras of 400 years, years starting in March).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate with the given notAfter, made by rcgen.
    fn certificate_until(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn not_after_reads_utc_time_and_generalized_time() {
        // 2031-05-17 is UTCTime in the certificate, 2051-01-02 GeneralizedTime.
        assert_eq!(
            not_after(&certificate_until(2031, 5, 17)),
            Some(1_936_742_400)
        );
        assert_eq!(
            not_after(&certificate_until(2051, 1, 2)),
            Some(2_556_230_400)
        );
    }

    #[test]
    fn not_after_refuses_what_is_not_a_certificate() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        let der = certificate_until(2031, 5, 17);
        assert_eq!(not_after(&der[..der.len() / 3]), None);
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
