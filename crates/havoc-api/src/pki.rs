//! A small PKI for the agent's mutual TLS: a CA, server and client certificates, PEM files.
//!
//! `havoc certs` writes a bundle with [`write_bundle`]: one CA, the agent's server certificate
//! (its SANs are the DNS names and IPs the operator dials) and the operator's client certificate.
//! Every certificate is ECDSA P-256 (rcgen's default); private keys are written with mode 0600.
//! Tests use [`Ca`] directly to make certificates that must be refused (expired, other CA).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// What can go wrong making or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to {what}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid validity: {0}")]
    Validity(String),
}

/// When a certificate is valid: `[not_before, not_after]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (tolerates clock skew between nodes) until `days` from now.
    pub fn days(days: u64) -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 24 * 3600),
        }
    }

    /// A window that ended a day ago: for testing that expired certificates are refused.
    pub fn expired() -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(30 * 24 * 3600),
            not_after: now - Duration::from_secs(24 * 3600),
        }
    }

    fn apply(&self, p: &mut CertificateParams) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::Validity(
                "not_after must be later than not_before".into(),
            ));
        }
        p.not_before = OffsetDateTime::from(self.not_before);
        p.not_after = OffsetDateTime::from(self.not_after);
        Ok(())
    }
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A TLS server (the agent): extended key usage serverAuth.
    Server,
    /// A TLS client (the operator, the CLI): extended key usage clientAuth.
    Client,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that can issue server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn gen<T>(what: &str, r: Result<T, rcgen::Error>) -> Result<T, PkiError> {
    r.map_err(|source| PkiError::Generate {
        what: what.to_string(),
        source,
    })
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str, validity: Validity) -> Result<Ca, PkiError> {
        let key = gen("generate the CA key", KeyPair::generate())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "havoc");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut params)?;
        let cert = gen("self-sign the CA certificate", params.self_signed(&key))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for `role`. `sans` are DNS names or IP addresses (parsed as IPs when
    /// they are one); a client certificate may have none.
    pub fn issue(
        &self,
        role: Role,
        common_name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<Issued, PkiError> {
        let key = gen("generate a key", KeyPair::generate())?;
        let mut params = gen(
            &format!("use subject alternative names {sans:?}"),
            CertificateParams::new(sans.to_vec()),
        )?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "havoc");
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        validity.apply(&mut params)?;
        let cert = gen(
            &format!("sign the certificate of {common_name}"),
            params.signed_by(&key, &self.issuer),
        )?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to `path` atomically, never through a symlink: the data goes into a new
/// file created beside it (`O_CREAT|O_EXCL`, which never follows a link), with mode 0600 for a
/// `private` file (0644 otherwise) from the moment it exists, is synced, and is then renamed over
/// `path`. Whatever `path` was (a file, a symlink to a file elsewhere, nothing) it is replaced;
/// the target of a symlink is never opened.
pub fn write_pem(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| PkiError::Io {
            action,
            path: p,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut f) = create_temp(dir, &name, if private { 0o600 } else { 0o644 })
        .map_err(io("create a temporary file for", path))?;
    let written = f
        .write_all(contents.as_bytes())
        .map_err(io("write", &tmp))
        .and_then(|()| f.sync_all().map_err(io("sync", &tmp)))
        .and_then(|()| fs::rename(&tmp, path).map_err(io("rename a temporary file to", path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable once the directory is synced.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

/// A new file `.NAME.tmp.PID.N` in `dir`, created exclusively (never through a symlink, never an
/// existing file), retrying a few names if one is taken.
fn create_temp(dir: &Path, name: &str, mode: u32) -> std::io::Result<(PathBuf, fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{nanos}.{n}", std::process::id()));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true).mode(mode);
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary name was free")))
}

/// The files [`write_bundle`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
}

/// How long bundle certificates are valid.
pub const BUNDLE_DAYS: u64 = 365;

/// Creates `dir` (if needed) and writes a new CA and two certificates signed by it, valid for
/// [`BUNDLE_DAYS`]: `ca.pem`, `ca-key.pem`, `agent.pem` + `agent-key.pem` (server, SANs `sans`:
/// DNS names and IPs the agent is reached at) and `operator.pem` + `operator-key.pem` (client).
pub fn write_bundle(dir: &Path, sans: &[String]) -> Result<Bundle, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let validity = Validity::days(BUNDLE_DAYS);
    let ca = Ca::new("havoc agent CA", validity)?;
    let agent = ca.issue(Role::Server, "havoc-agent", sans, validity)?;
    let operator = ca.issue(Role::Client, "havoc-operator", &[], validity)?;
    let b = Bundle {
        ca: dir.join("ca.pem"),
        ca_key: dir.join("ca-key.pem"),
        agent_cert: dir.join("agent.pem"),
        agent_key: dir.join("agent-key.pem"),
        operator_cert: dir.join("operator.pem"),
        operator_key: dir.join("operator-key.pem"),
    };
    write_pem(&b.ca, ca.cert_pem(), false)?;
    write_pem(&b.ca_key, ca.key_pem(), true)?;
    write_pem(&b.agent_cert, &agent.cert_pem, false)?;
    write_pem(&b.agent_key, &agent.key_pem, true)?;
    write_pem(&b.operator_cert, &operator.cert_pem, false)?;
    write_pem(&b.operator_key, &operator.key_pem, true)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn bundle_files_exist_and_keys_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = write_bundle(
            &dir.path().join("certs"),
            &["agent.example".into(), "127.0.0.1".into()],
        )
        .expect("bundle");
        for (p, private) in [
            (&b.ca, false),
            (&b.ca_key, true),
            (&b.agent_cert, false),
            (&b.agent_key, true),
            (&b.operator_cert, false),
            (&b.operator_key, true),
        ] {
            let text = fs::read_to_string(p).expect("read");
            assert!(text.starts_with("-----BEGIN "), "{} is PEM", p.display());
            let mode = fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            if private {
                assert_eq!(mode, 0o600, "{} is 0600", p.display());
                assert!(text.contains("PRIVATE KEY"));
            } else {
                assert!(text.contains("CERTIFICATE"));
            }
        }
    }

    #[test]
    fn a_symlink_at_a_key_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        fs::write(&outside, "precious\n").expect("write outside");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).expect("chmod");
        let certs = dir.path().join("certs");
        fs::create_dir(&certs).expect("mkdir");
        std::os::unix::fs::symlink(&outside, certs.join("ca-key.pem")).expect("symlink");
        // A hard link must not be written through either.
        fs::hard_link(&outside, certs.join("agent-key.pem")).expect("hard link");
        let b = write_bundle(&certs, &["localhost".into()]).expect("bundle");
        assert_eq!(
            fs::read_to_string(&outside).expect("read outside"),
            "precious\n"
        );
        let outside_mode = fs::metadata(&outside).expect("stat").permissions().mode() & 0o777;
        assert_eq!(outside_mode, 0o644, "the link target's mode is unchanged");
        for key in [&b.ca_key, &b.agent_key] {
            let meta = fs::symlink_metadata(key).expect("lstat");
            assert!(
                meta.file_type().is_file(),
                "{} is a regular file",
                key.display()
            );
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            assert!(fs::read_to_string(key)
                .expect("read")
                .contains("PRIVATE KEY"));
        }
        let leftovers: Vec<_> = fs::read_dir(&certs)
            .expect("readdir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files are left");
    }

    #[test]
    fn an_inverted_validity_is_refused() {
        let v = Validity {
            not_before: SystemTime::now(),
            not_after: SystemTime::now() - Duration::from_secs(1),
        };
        assert!(matches!(
            Ca::new("x", v),
            Err(PkiError::Validity(m)) if m.contains("later")
        ));
    }

    #[test]
    fn a_bad_san_is_reported() {
        let ca = Ca::new("x", Validity::days(1)).expect("ca");
        let err = ca
            .issue(
                Role::Server,
                "s",
                &["bäd.example".into()],
                Validity::days(1),
            )
            .expect_err("refused");
        assert!(
            err.to_string().contains("subject alternative names"),
            "{err}"
        );
    }
}
