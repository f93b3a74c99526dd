//! The one TLS client configuration of the process: a `tls` section (of an exporter or a scrape
//! target) turned into a rustls client configuration (trusted CA, client certificate for mTLS,
//! server name override, and the escape hatch `insecure_skip_verify`). Every outgoing TLS
//! connection is built here: the HTTP exporters (Mimir, Loki, through reqwest), the OTLP/gRPC
//! exporter (Tempo, through tonic with [`grpc_connector`]) and the scrapes (`lgtm-scrape`), so
//! they trust the same roots and honour the same options.
//!
//! Root policy, the same for every client:
//! - `ca_file` set: exactly the certificates in that file (as Prometheus does), nothing else.
//! - otherwise the operating system's store (`rustls-native-certs`: `/etc/ssl/certs` and the
//!   like, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), so a corporate CA added to the image
//!   is trusted by every client alike;
//! - and when that store is empty or missing (a distroless or scratch image), the Mozilla roots
//!   bundled in the binary (`webpki-roots`).
//!
//! The default roots are loaded once per process, on a blocking thread. Built here rather than
//! with reqwest's or tonic's builders because neither can check the server certificate against a
//! name other than the URL's host (`tls.server_name`) and tonic's cannot skip verification. The
//! files of a `tls` section are read once, when its client is built.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use lgtm_config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use hyper_rustls::HttpsConnector;
pub use hyper_util::client::legacy::connect::HttpConnector;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading tls.{what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("tls.{what} {path}: {detail}")]
    Parse { what: &'static str, path: PathBuf, detail: String },
    #[error("tls.cert_file and tls.key_file must be set together")]
    HalfIdentity,
    #[error("tls.server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A PEM file read into memory.
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// The PEM files named by a `tls` section, read into memory.
#[derive(Default)]
pub struct TlsFiles {
    pub ca: Option<PemFile>,
    /// `cert_file` and `key_file`, both present or both absent.
    pub identity: Option<(PemFile, PemFile)>,
}

impl TlsFiles {
    /// Reads the files without blocking the runtime.
    pub async fn read(tls: &TlsConfig) -> Result<TlsFiles, TlsError> {
        let ca = match &tls.ca_file {
            Some(p) => Some(read("ca_file", p).await?),
            None => None,
        };
        let identity = match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => Some((read("cert_file", c).await?, read("key_file", k).await?)),
            (None, None) => None,
            _ => return Err(TlsError::HalfIdentity),
        };
        if ca.is_none() && !tls.insecure_skip_verify && DEFAULT_ROOTS.get().is_none() {
            // Loads the OS store off the runtime threads, once.
            let _ = tokio::task::spawn_blocking(default_roots).await;
        }
        Ok(TlsFiles { ca, identity })
    }
}

static DEFAULT_ROOTS: OnceLock<(Arc<RootCertStore>, RootSource)> = OnceLock::new();

/// Where the trusted roots of a client without `ca_file` come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The operating system's store (`rustls-native-certs`).
    System,
    /// The Mozilla roots compiled into the binary: the system store was empty.
    Bundled,
}

/// The roots trusted without `ca_file`, and where they came from: the system store, or the
/// bundled Mozilla roots when it holds no usable certificate. Loaded once per process (this reads
/// files: call it from a blocking context the first time, as [`TlsFiles::read`] does).
pub fn default_roots() -> &'static (Arc<RootCertStore>, RootSource) {
    DEFAULT_ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "reading the system certificate store");
        }
        let (roots, source) = roots_or_bundled(native.certs);
        tracing::info!(roots = roots.len(), source = ?source, "TLS roots for clients without tls.ca_file");
        (Arc::new(roots), source)
    })
}

/// The system certificates that parse, or the bundled roots when none does.
fn roots_or_bundled(system: Vec<CertificateDer<'static>>) -> (RootCertStore, RootSource) {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        (roots, RootSource::Bundled)
    } else {
        (roots, RootSource::System)
    }
}

async fn read(what: &'static str, path: &Path) -> Result<PemFile, TlsError> {
    match tokio::fs::read(path).await {
        Ok(pem) => Ok(PemFile { path: path.to_path_buf(), pem }),
        Err(source) => Err(TlsError::Read { what, path: path.to_path_buf(), source }),
    }
}

fn parse_certs(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Parse { what, path: path.to_path_buf(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Parse { what, path: path.to_path_buf(), detail: "no PEM certificate found".into() });
    }
    Ok(certs)
}

/// The one rustls crypto provider of the agent: *ring*. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange and points at aws-lc-rs, which needs cmake and a C toolchain to
/// build (kube, hyper-rustls and tokio-rustls use *ring* here too). Kept in one place so the
/// switch is one line; `#[allow]` so that a lock update does not fail clippy.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `tls` (ALPN not set). Without `ca_file` the
/// [`default_roots`] are trusted. `insecure_skip_verify` accepts any server certificate; the
/// caller warns about it.
pub fn client_config(tls: &TlsConfig, files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let provider = crypto_provider();
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;

    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyCertificate { provider })
    } else {
        let roots = match &files.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in parse_certs("ca_file", &ca.path, &ca.pem)? {
                    roots.add(cert).map_err(|e| TlsError::Parse {
                        what: "ca_file",
                        path: ca.path.clone(),
                        detail: e.to_string(),
                    })?;
                }
                Arc::new(roots)
            }
            None => default_roots().0.clone(),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?;
                Arc::new(FixedServerName { inner: webpki, name })
            }
            None => webpki,
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);

    let config = match &files.identity {
        Some((cert, key)) => {
            let certs = parse_certs("cert_file", &cert.path, &cert.pem)?;
            let key = PrivateKeyDer::from_pem_slice(&key.pem).map_err(|e| TlsError::Parse {
                what: "key_file",
                path: key.path.clone(),
                detail: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// [`client_config`] for an HTTP client (reqwest): HTTP/2 when the server offers it, else 1.1.
pub fn http_client_config(tls: &TlsConfig, files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = client_config(tls, files)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The connector of a tonic channel (OTLP/gRPC) over `config`: TCP, then TLS for `https://`
/// URIs, with ALPN `h2` (gRPC needs HTTP/2). tonic's own TLS is not compiled in: this is the
/// only way a gRPC client of the agent speaks TLS. `server_name` (from `tls.server_name`) is
/// also the SNI, as tonic's `domain_name` was; the check against it is the verifier's.
pub fn grpc_connector(
    config: rustls::ClientConfig,
    server_name: Option<&str>,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let builder = match server_name {
        Some(name) => {
            let name = ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(builder.enable_http2().wrap_connector(http))
}

/// Checks the server certificate against `tls.server_name` instead of the URL's host.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake signatures are still
/// checked so the session is at least bound to the key the server presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["corp.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .clone()
    }

    #[test]
    fn the_system_store_is_used_when_it_holds_certificates() {
        let (roots, source) = roots_or_bundled(vec![self_signed()]);
        assert_eq!((roots.len(), source), (1, RootSource::System));
    }

    #[test]
    fn an_empty_or_unparsable_system_store_falls_back_to_the_bundled_roots() {
        let bundled = webpki_roots::TLS_SERVER_ROOTS.len();
        assert!(bundled > 100);
        let (roots, source) = roots_or_bundled(Vec::new());
        assert_eq!((roots.len(), source), (bundled, RootSource::Bundled));
        let (roots, source) = roots_or_bundled(vec![CertificateDer::from(vec![1, 2, 3])]);
        assert_eq!((roots.len(), source), (bundled, RootSource::Bundled));
    }
}
