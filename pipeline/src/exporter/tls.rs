//! TLS for the HTTP exporters: the `tls` section of an exporter turned into a rustls client
//! configuration (trusted CA, client certificate for mTLS, server name override, and the escape
//! hatch `insecure_skip_verify`).
//!
//! Built here rather than with reqwest's builder because reqwest cannot check the server
//! certificate against a name other than the URL's host (`tls.server_name`). The files are read
//! once, when the exporter starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lgtm_config::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

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
        Ok(TlsFiles { ca, identity })
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

/// The rustls client configuration for `tls` (ALPN not set). Without `ca_file` the Mozilla root set
/// is trusted. `insecure_skip_verify` accepts any server certificate; the caller warns about it.
pub fn client_config(tls: &TlsConfig, files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;

    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(AcceptAnyCertificate { provider })
    } else {
        let mut roots = RootCertStore::empty();
        match &files.ca {
            Some(ca) => {
                for cert in parse_certs("ca_file", &ca.path, &ca.pem)? {
                    roots.add(cert).map_err(|e| TlsError::Parse {
                        what: "ca_file",
                        path: ca.path.clone(),
                        detail: e.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
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
