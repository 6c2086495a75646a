//! TLS on the public port (`wss://` and `https://`) for installs with no proxy in front: the
//! certificate and key are read from PEM files, and read again when they change (cert-manager
//! rotates them in place) — new handshakes get the new certificate, open connections keep
//! theirs, nothing is dropped. A file that cannot be read or parsed at start stops the server;
//! later, the certificate in use stays until a good one replaces it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use crate::config::TlsFiles;

/// How often the files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{path}: no PEM private key in it ({detail})")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// rustls refused the key (an unsupported algorithm, say).
    #[error("{path}: unusable private key: {detail}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.cert)?).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| TlsError::NoKey { path: files.key.clone(), detail: e.to_string() })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::BadKey { path: files.key.clone(), detail: e.to_string() })?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// Hands every handshake the certificate loaded last.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Loads the certificate, starts watching the files, and returns the acceptor of the public
/// port. The watch ends with `shutdown`.
pub fn acceptor(files: TlsFiles, shutdown: CancellationToken) -> Result<TlsAcceptor, TlsError> {
    let current = Arc::new(Current(RwLock::new(load(&files)?)));
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::BadKey { path: files.key.clone(), detail: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(reload(files, current, shutdown));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn reload(files: TlsFiles, current: Arc<Current>, shutdown: CancellationToken) {
    let mut seen = modified(&files);
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = modified(&files);
        if now == seen {
            continue;
        }
        match load(&files) {
            Ok(key) => {
                *current.0.write().unwrap_or_else(|p| p.into_inner()) = key;
                seen = now;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            // Half-written files during a rotation: try again at the next tick.
            Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the current one stays"),
        }
    }
}
