//! The default roots of every TLS client come from the system store: a CA added to the image
//! (here through `SSL_CERT_FILE`, which the system store honours) is trusted without `ca_file`,
//! and a server whose CA is neither there nor in `ca_file` is refused. Its own test binary:
//! the default roots are loaded once per process, so the variable must be set before.

use std::sync::Arc;

use lgtm_config::TlsConfig;
use lgtm_pipeline::tls::{client_config, default_roots, RootSource, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA and a `localhost` certificate it signed.
struct Ca {
    pem: String,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
}

fn ca(name: &str) -> Ca {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    Ca { pem: ca_cert.pem(), leaf: leaf.der().clone(), key: key.serialize_der() }
}

/// Serves TLS handshakes with `ca`'s certificate on 127.0.0.1 (handshakes only).
async fn tls_server(ca: &Ca) -> u16 {
    let provider = lgtm_pipeline::tls::crypto_provider();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.leaf.clone()], PrivateKeyDer::try_from(ca.key.clone()).unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move { drop(acceptor.accept(tcp).await) });
        }
    });
    port
}

/// Whether a client built from `tls` completes a handshake with the server on `port`.
async fn handshake(tls: &TlsConfig, port: u16) -> Result<(), String> {
    let files = TlsFiles::read(tls).await.map_err(|e| e.to_string())?;
    let config = client_config(tls, &files).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_ca_in_the_system_store_is_trusted_without_ca_file_and_an_unknown_one_is_not() {
    let corporate = ca("corporate CA");
    let unknown = ca("unknown CA");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca-certificates.crt");
    std::fs::write(&bundle, &corporate.pem).unwrap();
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe { std::env::set_var("SSL_CERT_FILE", &bundle) };

    let trusted = tls_server(&corporate).await;
    let untrusted = tls_server(&unknown).await;
    let default = TlsConfig::default();
    assert_eq!(handshake(&default, trusted).await, Ok(()));
    let refused = handshake(&default, untrusted).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert_eq!(default_roots().1, RootSource::System);

    // `ca_file` replaces the default roots: only what it holds is trusted.
    let unknown_file = dir.path().join("unknown.pem");
    std::fs::write(&unknown_file, &unknown.pem).unwrap();
    let with_ca = TlsConfig { ca_file: Some(unknown_file), ..TlsConfig::default() };
    assert_eq!(handshake(&with_ca, untrusted).await, Ok(()));
    let refused = handshake(&with_ca, trusted).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}
