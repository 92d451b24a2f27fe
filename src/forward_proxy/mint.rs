//! Leaf certificates for intercepted hosts, minted from the local CA (`ca_cert`/`ca_key`).
//!
//! A leaf names exactly one host (its only SAN), lives for `LEAF_VALIDITY`, and is cached
//! per host until it is half-way through its life. Only hosts listed in `intercept_hosts`
//! are ever minted, so the cache is bounded by that list. The CA's private key stays in this
//! type: the only thing that leaves it is the CA's public certificate as PEM.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::ServerConfig;

/// Short enough that a leaf copied off the machine is soon useless; clients never see the
/// renewal because each new connection gets the current one.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// A cached leaf is replaced once it is this old, well before it expires.
const LEAF_RENEW_AFTER: Duration = Duration::from_secs(15 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("forward_proxy.ca_cert: {0}")]
    CaCert(#[source] crate::tls::TlsError),
    #[error("forward_proxy.ca_cert: not a CA certificate rcgen can sign with: {0}")]
    CaParse(#[source] rcgen::Error),
    #[error("forward_proxy.ca_key: cannot read {path}: {source}")]
    CaKeyRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("forward_proxy.ca_key: not a private key rcgen can sign with: {0}")]
    CaKey(#[source] rcgen::Error),
    #[error(
        "forward_proxy.ca_key does not belong to forward_proxy.ca_cert \
         (a certificate signed with it does not verify against it): {0}"
    )]
    Mismatch(#[source] rustls::Error),
    #[error("cannot mint a certificate for {host}: {source}")]
    Leaf {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the minted certificate for {host} is unusable: {source}")]
    Rustls {
        host: String,
        #[source]
        source: rustls::Error,
    },
}

/// Signs leaves with the local CA and keeps one TLS identity per intercepted host.
pub struct LeafMint {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaves: Mutex<HashMap<String, Leaf>>,
}

struct Leaf {
    config: Arc<ServerConfig>,
    minted: SystemTime,
}

impl LeafMint {
    /// Loads the CA and proves the pair works by verifying a freshly minted leaf against
    /// the certificate, so a key that belongs to another CA fails at start-up and not at
    /// every client's handshake.
    pub fn load(ca_cert: &Path, ca_key: &Path) -> Result<LeafMint, MintError> {
        crate::tls::install_crypto_provider();
        let ca_der = crate::tls::load_certs(ca_cert)
            .map_err(MintError::CaCert)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                MintError::CaCert(crate::tls::TlsError::NoCerts {
                    path: ca_cert.display().to_string(),
                })
            })?;
        let key_pem = std::fs::read_to_string(ca_key).map_err(|source| MintError::CaKeyRead {
            path: ca_key.display().to_string(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(MintError::CaKey)?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(MintError::CaParse)?;
        let mint = LeafMint {
            issuer,
            ca_der,
            leaves: Mutex::new(HashMap::new()),
        };
        mint.self_check()?;
        Ok(mint)
    }

    /// The CA's public certificate as PEM: what `/ca.pem` serves and bundles append. Built
    /// from the parsed certificate, so whatever else the file holds never goes out.
    pub fn ca_pem(&self) -> String {
        certificate_pem(&self.ca_der)
    }

    /// The TLS identity for `host`, minted on first use and renewed when half its life is
    /// gone. The lock is held while minting, so concurrent first handshakes mint once.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, MintError> {
        let now = SystemTime::now();
        // A poisoned lock only means another handshake panicked mid-insert; the map itself
        // is still a valid cache.
        let mut leaves = self
            .leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(leaf) = leaves.get(host) {
            let age = now.duration_since(leaf.minted).unwrap_or_default();
            if age < LEAF_RENEW_AFTER {
                return Ok(leaf.config.clone());
            }
        }
        let (cert, key) = self.mint(host, now)?;
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|source| MintError::Rustls {
                host: host.to_owned(),
                source,
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        leaves.insert(
            host.to_owned(),
            Leaf {
                config: config.clone(),
                minted: now,
            },
        );
        Ok(config)
    }

    fn mint(
        &self,
        host: &str,
        now: SystemTime,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), MintError> {
        let fail = |source| MintError::Leaf {
            host: host.to_owned(),
            source,
        };
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::default();
        let san = match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into().map_err(fail)?),
        };
        params.subject_alt_names = vec![san];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Valid from yesterday: a client whose clock is a little behind ours still accepts.
        let today = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400;
        let (y, m, d) = crate::errors::civil_from_days(i64::try_from(today).unwrap_or(0));
        let start = rcgen::date_time_ymd(i32::try_from(y).unwrap_or(1970), m as u8, d as u8);
        params.not_before = start - Duration::from_secs(86_400);
        params.not_after = start + LEAF_VALIDITY;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key))
    }

    fn self_check(&self) -> Result<(), MintError> {
        let host = "self-check.invalid";
        let (leaf, _) = self.mint(host, SystemTime::now())?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(MintError::Mismatch)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| MintError::Mismatch(rustls::Error::General(e.to_string())))?;
        let name = ServerName::try_from(host)
            .map_err(|e| MintError::Mismatch(rustls::Error::General(e.to_string())))?;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .map_err(MintError::Mismatch)?;
        Ok(())
    }
}

/// DER to the PEM text every client stack reads.
pub fn certificate_pem(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(text.len() + text.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("idproxy-mint-{}", uuid::Uuid::new_v4()));
        crate::certs::init(&dir, &[], false).unwrap();
        dir
    }

    fn verify(ca_pem: &str, leaf: &CertificateDer<'_>, host: &str) -> Result<(), rustls::Error> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        verifier
            .verify_server_cert(
                leaf,
                &[],
                &ServerName::try_from(host.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn a_leaf_verifies_for_its_host_only_and_is_cached() {
        let dir = ca_dir();
        let mint = LeafMint::load(&dir.join("ca.pem"), &dir.join("ca-key.pem")).unwrap();
        let (leaf, _) = mint.mint("graph.microsoft.com", SystemTime::now()).unwrap();
        verify(&mint.ca_pem(), &leaf, "graph.microsoft.com").unwrap();
        assert!(verify(&mint.ca_pem(), &leaf, "login.microsoftonline.com").is_err());
        let first = mint.server_config("graph.microsoft.com").unwrap();
        let again = mint.server_config("graph.microsoft.com").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let other = mint.server_config("graph.microsoft.us").unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(first.alpn_protocols[0], b"h2");
    }

    #[test]
    fn a_key_from_another_ca_is_refused_at_load() {
        let one = ca_dir();
        let two = ca_dir();
        let err = LeafMint::load(&one.join("ca.pem"), &two.join("ca-key.pem"))
            .err()
            .unwrap();
        assert!(matches!(err, MintError::Mismatch(_)), "{err}");
        assert!(err.to_string().starts_with("forward_proxy.ca_key"));
    }

    #[test]
    fn the_served_pem_is_the_certificate_and_never_the_key() {
        let dir = ca_dir();
        let mint = LeafMint::load(&dir.join("ca.pem"), &dir.join("ca-key.pem")).unwrap();
        let pem = mint.ca_pem();
        assert_eq!(pem, std::fs::read_to_string(dir.join("ca.pem")).unwrap());
        assert!(!pem.contains("PRIVATE KEY"));
    }
}
