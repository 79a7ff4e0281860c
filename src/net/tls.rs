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
