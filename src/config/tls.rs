//! TLS material from routes.toml: the listener's certificate and each backend's trust and
//! client certificate, turned into rustls configurations (ring as the only provider).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{what} is not a PEM certificate file"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    Ok(certs)
}

fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| format!("{what} is not a PEM private key"))
}

/// The listener's TLS: certificate chain and key, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs(cert_pem, "cert")?, key(key_pem, "key")?)
        .map_err(|e| format!("the certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A backend's TLS client settings with their own trust and, for mTLS, a client certificate.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// SHA-256 over the files' bytes: equal ids mean the same settings (pools may be kept).
    pub id: String,
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for ClientTls {}

/// `ca_pem`: the roots to trust instead of the system's; `client`: certificate chain and key.
pub fn client(
    ca_pem: Option<&[u8]>,
    client: Option<(&[u8], &[u8])>,
    system_roots: &RootCertStore,
) -> Result<ClientTls, String> {
    let mut id = Sha256::new();
    let roots = match ca_pem {
        Some(pem) => {
            id.update(pem);
            let mut roots = RootCertStore::empty();
            for c in certs(pem, "ca_file")? {
                roots.add(c).map_err(|_| {
                    "ca_file holds a certificate that cannot be a trust anchor".to_string()
                })?;
            }
            roots
        }
        None => system_roots.clone(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            id.update(cert_pem);
            id.update(key_pem);
            builder
                .with_client_auth_cert(certs(cert_pem, "client_cert")?, key(key_pem, "client_key")?)
                .map_err(|e| format!("client_cert and client_key do not form a usable pair: {e}"))?
        }
    };
    Ok(ClientTls {
        id: crate::wire::hex::hex(&id.finalize()),
        config: Arc::new(config),
    })
}

/// The system's trust store, read once (Mozilla's roots where the system has none).
pub fn system_roots() -> &'static RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let (added, _ignored) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}
