//! TLS on the listener: rustls with its defaults (TLS 1.2 and 1.3, its cipher
//! suites), HTTP/2 and HTTP/1.1 offered by ALPN, and a certificate read from PEM
//! files that can be swapped while the process runs ([`Tls::reload`], on SIGHUP).
//! A swap changes what later handshakes present; a connection already open keeps
//! the keys it agreed on, so nothing in flight is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be loaded; names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.{field} ({}): {problem}", path.display())]
    File { field: &'static str, path: PathBuf, problem: String },
    #[error("server.tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The listener's certificate (`[server.tls]`). Both files are read again on SIGHUP.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The listener's TLS: the acceptor for new connections and the certificate it
/// presents, which [`Tls::reload`] replaces.
pub struct Tls {
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCertificate>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Load the certificate and key named in `files`; the key must match the certificate.
    pub fn new(files: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(CurrentCertificate(ArcSwap::from_pointee(load(files, &provider)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(Tls { files: files.clone(), provider, current, acceptor })
    }

    /// Read the files again and present what they hold from the next handshake on.
    /// On an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load(&self.files, &self.provider)?;
        self.current.0.store(Arc::new(key));
        Ok(())
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    pub fn files(&self) -> &TlsConfig {
        &self.files
    }
}

/// The certificate every handshake gets (there is one; SNI does not choose).
#[derive(Debug)]
struct CurrentCertificate(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn load(files: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::File {
        field: "key_file",
        path: files.key_file.clone(),
        problem: format!("no usable private key ({e})"),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::File {
        field: "key_file",
        path: files.key_file.clone(),
        problem: format!("does not fit the certificate in {} ({e})", files.cert_file.display()),
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::File { field: "cert_file", path: path.to_owned(), problem };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(e.to_string()))?;
    if chain.is_empty() {
        return Err(problem("no certificate in the file".into()));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_setting() {
        let files = TlsConfig { cert_file: "/nonexistent/cert.pem".into(), key_file: "/nonexistent/key.pem".into() };
        let error = Tls::new(&files).err().expect("no such file");
        assert!(error.to_string().starts_with("server.tls.cert_file (/nonexistent/cert.pem)"), "{error}");
    }
}
