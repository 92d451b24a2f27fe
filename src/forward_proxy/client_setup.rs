//! What clients need to use drop-in mode: `certs bundle` (one PEM file holding the system's
//! roots and our CA, so tunnelled hosts such as the login endpoint still verify) and
//! `env --runtime ...` (the exact proxy and trust settings of each client stack).
//!
//! Only public certificates are ever written here; the CA's key is never read.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::mint::certificate_pem;

/// Debian, Ubuntu and Alpine keep the system roots here; elsewhere the OS store is read
/// through rustls-native-certs.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the CA certificate (run `certs init` first): {0}")]
    Ca(#[source] crate::tls::TlsError),
    #[error(transparent)]
    Write(#[from] crate::certs::CertsError),
}

/// Where the system roots of a bundle came from, for the message printed after it.
#[derive(Debug, PartialEq, Eq)]
pub enum RootsSource {
    File(PathBuf),
    /// The OS store, read by rustls-native-certs.
    Native,
}

#[derive(Debug)]
pub struct Bundle {
    pub out: PathBuf,
    pub system_roots: usize,
    pub source: RootsSource,
}

impl Bundle {
    pub fn describe(&self, ca: &Path) -> String {
        let from = match &self.source {
            RootsSource::File(path) => path.display().to_string(),
            RootsSource::Native => "the OS certificate store (rustls-native-certs)".to_owned(),
        };
        format!(
            "Wrote {}: {} system roots from {from}, then our CA {}.\n\
             Point REQUESTS_CA_BUNDLE, SSL_CERT_FILE or curl --cacert at it; \
             `immutable-id-proxy env --runtime <stack>` prints the rest.\n",
            self.out.display(),
            self.system_roots,
            ca.display()
        )
    }
}

/// Writes system roots then our CA to `out` (mode 0644, via a rename). `system_file` is
/// read when it exists, else the OS store. Every certificate is parsed and written again,
/// so nothing but certificates reaches the bundle.
pub fn write_bundle(ca: &Path, out: &Path, system_file: &Path) -> Result<Bundle, BundleError> {
    let ours = crate::tls::load_certs(ca).map_err(BundleError::Ca)?;
    let (roots, source) = match CertificateDer::pem_file_iter(system_file) {
        Ok(iter) => (
            iter.filter_map(Result::ok).collect::<Vec<_>>(),
            RootsSource::File(system_file.to_path_buf()),
        ),
        Err(_) => (
            rustls_native_certs::load_native_certs().certs,
            RootsSource::Native,
        ),
    };
    let mut text = String::new();
    for cert in roots.iter().filter(|root| !ours.contains(root)) {
        text.push_str(&certificate_pem(cert));
    }
    for cert in &ours {
        text.push_str(&certificate_pem(cert));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| crate::certs::CertsError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    crate::certs::write_file(out, &text, 0o644)?;
    Ok(Bundle {
        out: out.to_path_buf(),
        system_roots: roots.len(),
        source,
    })
}

/// The client stacks `env --runtime` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// .NET Core / .NET 5+ HttpClient
    Dotnet,
    /// .NET Framework 4.x (app.config)
    Dotnetfx,
    /// JVM (HttpClient, HttpURLConnection)
    Java,
    /// Python requests, httpx, urllib
    Python,
    /// Node.js fetch and https
    Node,
    /// curl
    Curl,
}

/// What the settings point at. Paths are made absolute, since the app runs elsewhere.
pub struct ClientSetup {
    pub proxy: SocketAddr,
    pub bundle: PathBuf,
    pub ca: PathBuf,
}

impl ClientSetup {
    pub fn new(proxy: SocketAddr, bundle: &Path, ca: &Path) -> ClientSetup {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        ClientSetup {
            proxy,
            bundle: absolute(bundle),
            ca: absolute(ca),
        }
    }

    /// The URL clients dial: a wildcard listen address is reached on loopback.
    fn proxy_url(&self) -> String {
        let ip = match self.proxy.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.proxy.port()))
    }

    /// The exact settings for `runtime`, as shell lines and config snippets.
    pub fn env_text(&self, runtime: Runtime) -> String {
        let url = self.proxy_url();
        let host = url.trim_start_matches("http://");
        let (proxy_host, port) = host.rsplit_once(':').unwrap_or((host, "3128"));
        let proxy_host = proxy_host.trim_start_matches('[').trim_end_matches(']');
        let bundle = self.bundle.display();
        let ca = self.ca.display();
        let no_proxy = "localhost,127.0.0.1,::1";
        let proxy_vars = format!(
            "export HTTPS_PROXY={url}\nexport HTTP_PROXY={url}\nexport NO_PROXY={no_proxy}\n"
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = match runtime {
            Runtime::Python => write!(
                out,
                "# Python (requests, httpx, urllib): proxy variables, and the bundle of system roots\n\
                 # plus our CA (made by `certs bundle`) so login.microsoftonline.com still verifies\n\
                 {proxy_vars}export REQUESTS_CA_BUNDLE={bundle}\nexport SSL_CERT_FILE={bundle}\n"
            ),
            Runtime::Node => write!(
                out,
                "# Node.js 22.21+ / 24+: NODE_USE_ENV_PROXY=1 makes fetch and https honour the proxy\n\
                 # variables; NODE_EXTRA_CA_CERTS adds to Node's own roots\n\
                 {proxy_vars}export NODE_USE_ENV_PROXY=1\nexport NODE_EXTRA_CA_CERTS={bundle}\n\
                 # older Node: give the client an agent for {url} (undici ProxyAgent, https-proxy-agent)\n"
            ),
            Runtime::Java => {
                let store = self
                    .bundle
                    .parent()
                    .unwrap_or_else(|| Path::new("."))
                    .join("truststore.p12");
                let store = store.display();
                write!(
                    out,
                    "# Java: system properties through JAVA_TOOL_OPTIONS (every JVM reads it).\n\
                     # Truststore note: javax.net.ssl.trustStore replaces the JDK's roots, so make one\n\
                     # holding the JDK's roots plus our CA, once:\n\
                     #   cp \"$JAVA_HOME/lib/security/cacerts\" {store}\n\
                     #   keytool -importcert -noprompt -alias immutable-id-proxy -file {ca} -keystore {store} -storepass changeit\n\
                     export JAVA_TOOL_OPTIONS=\"-Dhttps.proxyHost={proxy_host} -Dhttps.proxyPort={port} \
                     -Dhttp.proxyHost={proxy_host} -Dhttp.proxyPort={port} -Dhttp.nonProxyHosts=localhost|127.0.0.1 \
                     -Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit\"\n"
                )
            }
            Runtime::Dotnet => write!(
                out,
                "# .NET (Core 3.0+, 5+): HttpClient reads the proxy variables on every OS\n\
                 {proxy_vars}\
                 # Linux/macOS (OpenSSL) trust:\nexport SSL_CERT_FILE={bundle}\n\
                 # Windows PowerShell instead:\n\
                 #   $env:HTTPS_PROXY = \"{url}\"; $env:HTTP_PROXY = \"{url}\"; $env:NO_PROXY = \"{no_proxy}\"\n\
                 #   Import-Certificate -FilePath {ca} -CertStoreLocation Cert:\\CurrentUser\\Root\n"
            ),
            Runtime::Dotnetfx => write!(
                out,
                "<!-- .NET Framework ignores HTTPS_PROXY: add this to the app's .exe.config (or web.config) -->\n\
                 <configuration>\n  <system.net>\n    <defaultProxy enabled=\"true\" useDefaultCredentials=\"false\">\n\
                 \x20     <proxy proxyaddress=\"{url}\" bypassonlocal=\"true\" usesystemdefault=\"false\" />\n\
                 \x20   </defaultProxy>\n  </system.net>\n</configuration>\n\
                 <!-- and trust our CA machine-wide (elevated PowerShell):\n\
                 \x20    Import-Certificate -FilePath {ca} -CertStoreLocation Cert:\\LocalMachine\\Root -->\n"
            ),
            Runtime::Curl => write!(
                out,
                "# one request:\n\
                 curl --proxy {url} --cacert {bundle} -H \"Authorization: Bearer $TOKEN\" https://graph.microsoft.com/v1.0/me\n\
                 # or every curl in this shell:\n\
                 export HTTPS_PROXY={url}\nexport NO_PROXY={no_proxy}\nexport CURL_CA_BUNDLE={bundle}\n"
            ),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(addr: &str) -> ClientSetup {
        ClientSetup::new(
            addr.parse().unwrap(),
            Path::new("/srv/certs/bundle.pem"),
            Path::new("/srv/certs/ca.pem"),
        )
    }

    #[test]
    fn python_gets_the_proxy_address_and_the_bundle() {
        let text = setup("127.0.0.1:3999").env_text(Runtime::Python);
        assert!(text.contains("export HTTPS_PROXY=http://127.0.0.1:3999\n"));
        assert!(text.contains("export REQUESTS_CA_BUNDLE=/srv/certs/bundle.pem\n"));
        assert!(text.contains("export SSL_CERT_FILE=/srv/certs/bundle.pem\n"));
    }

    #[test]
    fn java_gets_system_properties_and_a_truststore_note() {
        let text = setup("[::1]:3128").env_text(Runtime::Java);
        assert!(
            text.contains("-Dhttps.proxyHost=::1 -Dhttps.proxyPort=3128"),
            "{text}"
        );
        assert!(text.contains("keytool -importcert"));
        assert!(text.contains("-Djavax.net.ssl.trustStore=/srv/certs/truststore.p12"));
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let text = setup("0.0.0.0:3128").env_text(Runtime::Node);
        assert!(text.contains("export HTTPS_PROXY=http://127.0.0.1:3128\n"));
        assert!(text.contains("export NODE_USE_ENV_PROXY=1\n"));
        assert!(text.contains("export NODE_EXTRA_CA_CERTS=/srv/certs/bundle.pem\n"));
    }

    #[test]
    fn dotnet_framework_gets_a_default_proxy_element() {
        let text = setup("127.0.0.1:3128").env_text(Runtime::Dotnetfx);
        assert!(text.contains("<defaultProxy enabled=\"true\""));
        assert!(text.contains("proxyaddress=\"http://127.0.0.1:3128\""));
        let dotnet = setup("127.0.0.1:3128").env_text(Runtime::Dotnet);
        assert!(dotnet.contains("export HTTPS_PROXY=http://127.0.0.1:3128\n"));
        let curl = setup("127.0.0.1:3128").env_text(Runtime::Curl);
        assert!(curl.contains("--proxy http://127.0.0.1:3128 --cacert /srv/certs/bundle.pem"));
    }

    #[test]
    fn a_bundle_holds_the_system_roots_then_our_ca_and_no_key() {
        let dir = std::env::temp_dir().join(format!("idproxy-bundle-{}", uuid::Uuid::new_v4()));
        crate::certs::init(&dir, &[], false).unwrap();
        let other = std::env::temp_dir().join(format!("idproxy-bundle-{}", uuid::Uuid::new_v4()));
        crate::certs::init(&other, &[], false).unwrap();
        // Another CA stands in for the system roots, so the count is known.
        let out = dir.join("bundle.pem");
        let bundle = write_bundle(&dir.join("ca.pem"), &out, &other.join("ca.pem")).unwrap();
        assert_eq!(bundle.system_roots, 1);
        assert_eq!(bundle.source, RootsSource::File(other.join("ca.pem")));
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(text.ends_with(&std::fs::read_to_string(dir.join("ca.pem")).unwrap()));
        assert!(!text.contains("PRIVATE KEY"));
        assert!(bundle
            .describe(&dir.join("ca.pem"))
            .contains("1 system roots from"));
    }

    #[test]
    fn a_missing_ca_is_an_error_that_says_to_run_certs_init() {
        let dir = std::env::temp_dir().join(format!("idproxy-bundle-{}", uuid::Uuid::new_v4()));
        let err = write_bundle(
            &dir.join("ca.pem"),
            &dir.join("b.pem"),
            Path::new(SYSTEM_BUNDLE),
        )
        .unwrap_err();
        assert!(err.to_string().contains("certs init"));
    }
}
