//! A throw-away PKI for TLS tests: a CA, server leaves for localhost/127.0.0.1, client leaves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &self.cert_pem).unwrap();
        std::fs::write(&k, &self.key_pem).unwrap();
        (c, k)
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    /// A server config for `leaf`; with `client_ca`, clients must present a cert it signed.
    pub fn server_config(leaf: &Leaf, client_ca: Option<&Pki>) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider,
                )
                .build()
                .unwrap(),
            ),
        };
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        Arc::new(builder.with_single_cert(certs, key).unwrap())
    }
}

/// A routes.toml in `dir` whose listener serves HTTPS with a leaf of `pki` for localhost and
/// 127.0.0.1 (written beside it), in front of one backend `mis-a` at `mis_url` for SEED_LPU;
/// `server_extra` goes into `[server]`. Returns the file's path (for `TestGateway::start_file`).
pub fn tls_routes(pki: &Pki, dir: &Path, mis_url: String, server_extra: &str) -> PathBuf {
    pki.leaf(&["localhost", "127.0.0.1"]).write(dir, "server");
    let toml = super::config_toml(
        &[super::BackendSpec::new("mis-a", mis_url)],
        &[(super::SEED_LPU, "mis-a")],
    )
    .replacen("[server]\n", &format!("[server]\n{server_extra}"), 1)
    .replace(
        "[admin]",
        "[server.tls]\ncert = \"server.crt\"\nkey = \"server.key\"\n\n[admin]",
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, toml).unwrap();
    path
}
