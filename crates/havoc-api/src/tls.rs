//! Mutual TLS for the agent API: the server requires a client certificate signed by the CA, and
//! clients present theirs and verify the agent's against the same CA.
//!
//! PEM files are read and checked here, so a wrong path or a key given as a certificate fails at
//! start with the file named, not at the first handshake.

use std::path::{Path, PathBuf};

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// What can go wrong loading TLS material or dialing an agent.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not valid: {problem}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("invalid agent endpoint `{endpoint}`: expected https://HOST:PORT")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("failed to connect to the agent at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// The three files of one side of a mutual TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs the peer's certificate.
    pub ca: PathBuf,
    /// Our certificate (chain), PEM.
    pub cert: PathBuf,
    /// Our private key, PEM.
    pub key: PathBuf,
}

impl TlsFiles {
    /// [`server_tls`] with these files.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        server_tls(&self.ca, &self.cert, &self.key)
    }

    /// [`client_endpoint`] with these files.
    pub fn client_endpoint(&self, endpoint: &str) -> Result<Endpoint, TlsError> {
        client_endpoint(endpoint, &self.ca, &self.cert, &self.key)
    }
}

fn kinds(pem: &[u8]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut reader = std::io::BufReader::new(pem);
    for item in rustls_pemfile::read_all(&mut reader) {
        let item = item.map_err(|e| format!("malformed PEM: {e}"))?;
        out.push(
            match item {
                rustls_pemfile::Item::X509Certificate(_) => "certificate",
                rustls_pemfile::Item::Pkcs1Key(_)
                | rustls_pemfile::Item::Pkcs8Key(_)
                | rustls_pemfile::Item::Sec1Key(_) => "private key",
                _ => "other",
            }
            .to_string(),
        );
    }
    Ok(out)
}

/// Reads a PEM file and checks it holds at least one `expected` block ("certificate" or
/// "private key").
pub fn read_pem(what: &'static str, path: &Path, expected: &str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |problem: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let found = kinds(&bytes).map_err(invalid)?;
    if !found.iter().any(|k| k == expected) {
        return Err(invalid(if found.is_empty() {
            format!("no PEM block found: expected a PEM {expected}")
        } else {
            format!("expected a PEM {expected}, found {}", found.join(", "))
        }));
    }
    Ok(bytes)
}

fn identity(ca: &Path, cert: &Path, key: &Path) -> Result<(Certificate, Identity), TlsError> {
    let ca = read_pem("CA certificate", ca, "certificate")?;
    let cert = read_pem("certificate", cert, "certificate")?;
    let key = read_pem("private key", key, "private key")?;
    Ok((Certificate::from_pem(ca), Identity::from_pem(cert, key)))
}

/// How long a client has to finish the TLS handshake before the server closes the connection:
/// a real client needs a few milliseconds, an idle or slow-drip one holds a socket until then.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The server side: our identity, client certificates required (not optional) and verified
/// against `ca`, and the handshake bounded by [`HANDSHAKE_TIMEOUT`] (callers may set another
/// with `.timeout(..)`).
pub fn server_tls(ca: &Path, cert: &Path, key: &Path) -> Result<ServerTlsConfig, TlsError> {
    let (ca, id) = identity(ca, cert, key)?;
    Ok(ServerTlsConfig::new()
        .identity(id)
        .client_ca_root(ca)
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT))
}

/// The client side's TLS: verifies the server against `ca` and presents `cert`. Callers that
/// dial addresses the certificate does not name (the operator dials pod IPs) add
/// `.domain_name(..)`.
pub fn client_tls(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig, TlsError> {
    let (ca, id) = identity(ca, cert, key)?;
    Ok(ClientTlsConfig::new().ca_certificate(ca).identity(id))
}

/// The client side for `endpoint` (`https://HOST:PORT`): verifies the agent against `ca` (its
/// certificate must name HOST) and presents `cert`. Connects lazily.
pub fn client_endpoint(
    endpoint: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Endpoint, TlsError> {
    let tls = client_tls(ca, cert, key)?;
    Endpoint::from_shared(endpoint.to_string())
        .and_then(|e| e.tls_config(tls))
        .map(|e| {
            e.connect_timeout(std::time::Duration::from_secs(5))
                .tcp_nodelay(true)
        })
        .map_err(|source| TlsError::Endpoint {
            endpoint: endpoint.to_string(),
            source,
        })
}

/// Connects to the agent at `endpoint` with mutual TLS (see [`client_endpoint`]).
pub async fn client_channel(
    endpoint: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Channel, TlsError> {
    client_endpoint(endpoint, ca, cert, key)?
        .connect()
        .await
        .map_err(|source| TlsError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_files_name_the_file_and_what_was_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = crate::pki::write_bundle(dir.path(), &["localhost".into()]).expect("bundle");
        // A key where the certificate belongs.
        let err = server_tls(&b.ca, &b.agent_key, &b.agent_key).expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("agent-key.pem"), "{msg}");
        assert!(msg.contains("expected a PEM certificate"), "{msg}");
        let err = server_tls(&dir.path().join("missing.pem"), &b.agent_cert, &b.agent_key)
            .expect_err("refused");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        server_tls(&b.ca, &b.agent_cert, &b.agent_key).expect("the bundle loads");
    }

    #[test]
    fn an_endpoint_without_scheme_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = crate::pki::write_bundle(dir.path(), &["localhost".into()]).expect("bundle");
        let files = TlsFiles {
            ca: b.ca,
            cert: b.operator_cert,
            key: b.operator_key,
        };
        assert!(files.client_endpoint("not a uri").is_err());
        files
            .client_endpoint("https://127.0.0.1:7433")
            .expect("valid");
    }
}
