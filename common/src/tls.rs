//! TLS: one crypto provider (ring) for the whole process — reqwest, tonic and sqlx all use the
//! rustls process default — and the PEM-file settings of servers and clients.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Installs ring as rustls' process-wide default provider (see `wechat::install_crypto_provider`).
pub use wechat::install_crypto_provider;

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct TlsError {
    path: PathBuf,
    source: std::io::Error,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError { path: path.to_owned(), source })
}

/// A gRPC server's certificate and key; with `client_ca_file`, mutual TLS: a client without a
/// certificate from that CA is refused during the handshake.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates whose client certificates are accepted.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTls {
    pub fn tonic(&self) -> Result<ServerTlsConfig, TlsError> {
        install_crypto_provider();
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?));
        if let Some(ca) = &self.client_ca_file {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?)).client_auth_optional(false);
        }
        Ok(config)
    }
}

/// How a gRPC client verifies the server (and, for mutual TLS, presents itself).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA certificates to trust; without it, the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client's certificate and key, for servers that require mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The server name to verify, when it differs from the endpoint's host.
    #[serde(default)]
    pub domain: Option<String>,
}

impl ClientTls {
    pub fn tonic(&self) -> Result<ClientTlsConfig, TlsError> {
        install_crypto_provider();
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_file {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}
