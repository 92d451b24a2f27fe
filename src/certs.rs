//! `certs init`: a local CA and a listener certificate signed by it.
//!
//! The CA signs the listener's certificate (and, in drop-in mode, the leaf certificates the
//! forward proxy mints for Graph hosts), so clients trust one file: `ca.pem`. Private keys
//! are written mode 0600 and never overwritten unless the operator says `--force`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("--san {0}: not a valid DNS name or IP address")]
    BadSan(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What `init` wrote, for the instructions printed after it.
pub struct Created {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn init(dir: &Path, extra_sans: &[String], force: bool) -> Result<Created, CertsError> {
    let paths = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY].map(|name| dir.join(name));
    if !force {
        if let Some(existing) = paths.iter().find(|p| p.exists()) {
            return Err(CertsError::Exists(existing.clone()));
        }
    }
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for san in extra_sans {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    let san_types = sans
        .iter()
        .map(|s| parse_san(s))
        .collect::<Result<Vec<_>, _>>()?;

    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::default();
    server_params.subject_alt_names = san_types;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "immutable-id-proxy listener");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let [ca_cert_path, ca_key_path, server_cert_path, server_key_path] = paths;
    write_file(&ca_key_path, &ca_key.serialize_pem(), 0o600)?;
    write_file(&ca_cert_path, &ca_cert.pem(), 0o644)?;
    write_file(&server_key_path, &server_key.serialize_pem(), 0o600)?;
    write_file(&server_cert_path, &server_cert.pem(), 0o644)?;
    Ok(Created {
        ca_cert: ca_cert_path,
        server_cert: server_cert_path,
        server_key: server_key_path,
    })
}

/// The CA's identity. Kept in one place so the forward proxy can rebuild the same issuer.
pub fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "immutable-id-proxy local CA");
    name.push(DnType::OrganizationName, "immutable-id-proxy");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn parse_san(s: &str) -> Result<SanType, CertsError> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // rcgen accepts any IA5 string; a certificate with a name no client can match would only
    // fail later, so refuse it now.
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let wildcard_free = s.strip_prefix("*.").unwrap_or(s);
    if s.len() > 253 || !wildcard_free.split('.').all(valid_label) {
        return Err(CertsError::BadSan(s.to_owned()));
    }
    let name = s
        .to_owned()
        .try_into()
        .map_err(|_| CertsError::BadSan(s.to_owned()))?;
    Ok(SanType::DnsName(name))
}

/// Writes via a temporary file and a rename, so a crash never leaves half a key, and creates
/// the file with its final mode so a key is never readable by others, not even for a moment.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// How to make clients trust the CA, printed after `init`.
pub fn trust_instructions(created: &Created) -> String {
    let ca = created.ca_cert.display();
    format!(
        "Wrote {ca} (the CA clients must trust), {} and {} (the listener's identity; key mode 0600).\n\
         Use them for a TLS listener:\n  [listen]\n  tls_cert = \"{}\"\n  tls_key  = \"{}\"\n\
         Trust the CA:\n\
         \x20 curl:            curl --cacert {ca} https://127.0.0.1:8443/v1.0/me\n\
         \x20 Debian/Ubuntu:   cp {ca} /usr/local/share/ca-certificates/immutable-id-proxy.crt && update-ca-certificates\n\
         \x20 RHEL/Fedora:     cp {ca} /etc/pki/ca-trust/source/anchors/ && update-ca-trust\n\
         \x20 Python:          REQUESTS_CA_BUNDLE / SSL_CERT_FILE = a bundle holding {ca}\n\
         \x20 Node.js:         NODE_EXTRA_CA_CERTS={ca}\n\
         \x20 Java:            keytool -importcert -alias immutable-id-proxy -file {ca} -keystore <truststore>\n\
         \x20 Windows/.NET:    Import-Certificate -FilePath {ca} -CertStoreLocation Cert:\\LocalMachine\\Root\n",
        created.server_cert.display(),
        created.server_key.display(),
        created.server_cert.display(),
        created.server_key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("idproxy-certs-{name}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keys_are_written_0600_and_certificates_are_readable_pem() {
        let dir = temp_dir("modes");
        init(&dir, &["proxy.internal".into()], false).unwrap();
        for key in [CA_KEY, SERVER_KEY] {
            let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let certs = crate::tls::load_certs(&dir.join(SERVER_CERT)).unwrap();
        assert_eq!(certs.len(), 1);
        crate::tls::server_config(&dir.join(SERVER_CERT), &dir.join(SERVER_KEY)).unwrap();
    }

    #[test]
    fn existing_keys_are_not_overwritten_without_force() {
        let dir = temp_dir("force");
        init(&dir, &[], false).unwrap();
        let before = fs::read(dir.join(CA_KEY)).unwrap();
        assert!(matches!(init(&dir, &[], false), Err(CertsError::Exists(_))));
        assert_eq!(fs::read(dir.join(CA_KEY)).unwrap(), before);
        init(&dir, &[], true).unwrap();
        assert_ne!(fs::read(dir.join(CA_KEY)).unwrap(), before);
    }

    #[test]
    fn a_san_that_is_neither_a_name_nor_an_address_is_refused() {
        let dir = temp_dir("san");
        assert!(matches!(
            init(&dir, &["bad name with spaces\u{0}".into()], false),
            Err(CertsError::BadSan(_))
        ));
    }
}
