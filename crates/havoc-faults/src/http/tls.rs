//! TLS for HTTPChaos on an HTTPS server (Chaos Mesh's `tls` block; on the host, PEM files).
//!
//! The interceptor terminates the client's TLS with the given certificate and key (ALPN `h2`
//! and `http/1.1`), applies the rule to the plain exchange, and opens its own TLS connection to
//! the server with the client's SNI, offering the client's HTTP version (an HTTP/2 client's
//! exchanges go to a server without h2 as HTTP/1.1). The server's
//! certificate is verified against `caFile` when given; without it, it is not verified: the
//! interceptor talks to the very server the client reached, on its original address.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Acceptor for clients and connectors for the server: one offering HTTP/1.1 (for HTTP/1.1
/// clients), one offering h2 then HTTP/1.1 (for HTTP/2 clients).
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub h1: tokio_rustls::TlsConnector,
    pub h2: tokio_rustls::TlsConnector,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {what}")]
    Missing { path: String, what: &'static str },
    #[error("failed to build the TLS configuration")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.into(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

impl Tls {
    pub fn load(spec: &havoc_spec::http::HttpTls) -> Result<Tls, TlsError> {
        let cert_file = spec.cert_file.as_deref().unwrap_or_default();
        let key_file = spec.key_file.as_deref().unwrap_or_default();
        let chain = certs(cert_file)?;
        let key_pem = read(key_file)?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|source| TlsError::Read {
                path: key_file.into(),
                source,
            })?
            .ok_or_else(|| TlsError::Missing {
                path: key_file.into(),
                what: "PEM private key",
            })?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Config)?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let client = match spec.ca_file.as_deref() {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca)? {
                    roots.add(c).map_err(TlsError::Config)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
                .with_no_client_auth(),
        };
        let mut h1 = client.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut h2 = client;
        h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            h1: tokio_rustls::TlsConnector::from(Arc::new(h1)),
            h2: tokio_rustls::TlsConnector::from(Arc::new(h2)),
        })
    }
}

/// The name to present to the server: the client's SNI, else the server's address.
pub fn server_name(sni: Option<&str>, dst: std::net::SocketAddrV4) -> ServerName<'static> {
    sni.and_then(|s| ServerName::try_from(s.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(std::net::IpAddr::V4(*dst.ip()).into()))
}

/// Accepts the server's certificate without checking its chain or name (no `caFile`), but
/// still checks the handshake signatures.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
