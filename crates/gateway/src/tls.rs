//! TLS on the listener: rustls with its defaults (TLS 1.2 and 1.3, its cipher
//! suites), HTTP/2 and HTTP/1.1 offered by ALPN, and a certificate read from PEM
//! files that can be swapped while the process runs ([`Tls::reload`], on SIGHUP).
//! A swap changes what later handshakes present; a connection already open keeps
//! the keys it agreed on, so nothing in flight is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// Why a certificate could not be loaded; names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{section}.{field} ({}): {problem}", path.display())]
    File { section: &'static str, field: &'static str, path: PathBuf, problem: String },
    #[error("{section}: {error}")]
    Rustls { section: &'static str, error: rustls::Error },
    #[error("{section}.client_ca_file: {error}")]
    ClientCa { section: &'static str, error: rustls::server::VerifierBuilderError },
}

/// A listener's certificate (`[server.tls]`, `[admin.tls]`). Both files are read
/// again on SIGHUP.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CA(s) whose client certificates are accepted; set, a client without
    /// one is refused at the handshake. Only on the admin listener; read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// The listener's TLS: the acceptor for new connections and the certificate it
/// presents, which [`Tls::reload`] replaces.
pub struct Tls {
    section: &'static str,
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCertificate>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// The public listener's TLS (`[server.tls]`): load the certificate and key named
    /// in `files`; the key must match the certificate.
    pub fn new(files: &TlsConfig) -> Result<Tls, TlsError> {
        Tls::for_section("server.tls", files)
    }

    /// The admin listener's TLS (`[admin.tls]`), which may require client certificates.
    pub fn admin(files: &TlsConfig) -> Result<Tls, TlsError> {
        Tls::for_section("admin.tls", files)
    }

    fn for_section(section: &'static str, files: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(CurrentCertificate(ArcSwap::from_pointee(load(section, files, &provider)?)));
        let rustls = |error| TlsError::Rustls { section, error };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls)?;
        let builder = match &files.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_chain(section, "client_ca_file", path)? {
                    roots.add(cert).map_err(rustls)?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|error| TlsError::ClientCa { section, error })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Ok(Tls { section, files: files.clone(), provider, current, acceptor })
    }

    /// Read the files again and present what they hold from the next handshake on.
    /// On an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load(self.section, &self.files, &self.provider)?;
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

fn load(section: &'static str, files: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(section, "cert_file", &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::File {
        section,
        field: "key_file",
        path: files.key_file.clone(),
        problem: format!("no usable private key ({e})"),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::File {
        section,
        field: "key_file",
        path: files.key_file.clone(),
        problem: format!("does not fit the certificate in {} ({e})", files.cert_file.display()),
    })
}

fn read_chain(
    section: &'static str,
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |problem: String| TlsError::File { section, field, path: path.to_owned(), problem };
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
        let files = TlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        };
        let error = Tls::new(&files).err().expect("no such file");
        assert!(error.to_string().starts_with("server.tls.cert_file (/nonexistent/cert.pem)"), "{error}");
    }
}
