//! TLS for the PostgreSQL store, as libpq's `sslmode` and `sslrootcert` ask.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` only, and never
//! checks a certificate itself; managed databases hand out URLs with
//! `sslmode=verify-full&sslrootcert=...`. This reads those two settings the
//! way libpq does, gives tokio-postgres a URL it understands, and builds the
//! rustls configuration that checks (or, as libpq's `prefer` and `require`
//! do, does not check) who the server is.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate
    /// (libpq's default; `allow` is read as this too).
    Prefer,
    /// TLS or no connection; the certificate is checked only when
    /// `sslrootcert` is given (then as `verify-ca`), as libpq does.
    Require,
    /// TLS, with a certificate signed by a trusted CA (any host name).
    VerifyCa,
    /// TLS, with a certificate signed by a trusted CA for the host connected to.
    VerifyFull,
}

/// What a connection URL asks of TLS.
#[derive(Debug, PartialEq)]
pub(crate) struct TlsSettings {
    /// The URL for tokio-postgres: `sslrootcert` removed, `verify-*` read as `require`.
    pub url: String,
    pub mode: SslMode,
    /// The CA certificates (PEM) to trust; `None` (or `sslrootcert=system`):
    /// the Mozilla roots bundled with the build.
    pub root_cert: Option<PathBuf>,
}

/// Reads `sslmode` and `sslrootcert` from a `postgres://` URL. Other forms
/// (`host=... user=...`) are passed on as they are, with libpq's default.
pub(crate) fn settings(url: &str) -> Result<TlsSettings, String> {
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => u,
        _ => return Ok(TlsSettings { url: url.to_string(), mode: SslMode::Prefer, root_cert: None }),
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "sslmode" => {
                mode = match &*value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                        ))
                    }
                }
            }
            "sslrootcert" if value == "system" => root_cert = None,
            "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if mode == SslMode::Require && root_cert.is_some() {
        mode = SslMode::VerifyCa;
    }
    let tokio_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
    };
    let mut rebuilt = parsed.clone();
    rebuilt.query_pairs_mut().clear().extend_pairs(kept).append_pair("sslmode", tokio_mode);
    Ok(TlsSettings { url: rebuilt.to_string(), mode, root_cert })
}

/// The rustls configuration for `settings`; `None` when TLS is off.
pub(crate) fn client_config(settings: &TlsSettings) -> Result<Option<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let mut roots = RootCertStore::empty();
        match &settings.root_cert {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                for cert in read_certificates(path)? {
                    roots.add(cert).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
        }
        Ok(Arc::new(roots))
    };
    let chain = || {
        WebPkiServerVerifier::builder_with_provider(roots()?, provider.clone())
            .build()
            .map_err(|e| format!("cannot set up TLS: {e}"))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
        SslMode::Disable => return Ok(None),
        SslMode::VerifyFull => chain()?,
        SslMode::VerifyCa => Arc::new(Lenient { chain: Some(chain()?), provider }),
        SslMode::Prefer | SslMode::Require => Arc::new(Lenient { chain: None, provider }),
    };
    Ok(Some(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()))
}

/// The certificates of a PEM file, at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| bad(&e))?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// What libpq checks below `verify-full`: with `prefer` and `require` (no
/// `chain`), nothing of who holds the certificate; with `verify-ca`, that a
/// trusted CA signed it, whatever host it names. The handshake's signatures
/// are always checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_settings_become_a_url_tokio_postgres_reads() {
        let s = settings(
            "postgres://u:p@db.example:5432/zf?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(s.url, "postgres://u:p@db.example:5432/zf?application_name=x&sslmode=require");
        s.url.parse::<tokio_postgres::Config>().unwrap();

        let default = settings("postgres://u@localhost/zf").unwrap();
        assert_eq!((default.mode, default.root_cert), (SslMode::Prefer, None));
        // libpq: require with a CA file checks the chain.
        assert_eq!(settings("postgres://h/d?sslmode=require&sslrootcert=ca.pem").unwrap().mode, SslMode::VerifyCa);
        assert_eq!(settings("postgres://h/d?sslmode=verify-full&sslrootcert=system").unwrap().root_cert, None);
        assert_eq!(settings("postgres://h/d?sslmode=allow").unwrap().mode, SslMode::Prefer);
        assert_eq!(settings("postgres://h/d?sslmode=disable").unwrap().url, "postgres://h/d?sslmode=disable");
        let kv = settings("host=localhost user=u").unwrap();
        assert_eq!(kv.url, "host=localhost user=u");
    }

    #[test]
    fn a_bad_sslmode_or_ca_file_is_a_clear_error() {
        let err = settings("postgres://u:secret@h/d?sslmode=verify").unwrap_err();
        assert!(err.contains("sslmode `verify`") && err.contains("verify-full"), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let s = TlsSettings { url: String::new(), mode: SslMode::VerifyFull, root_cert: Some(missing.clone()) };
        let err = client_config(&s).unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        std::fs::write(&missing, "not a certificate").unwrap();
        let err = client_config(&s).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        // Read only when something is checked (libpq's prefer ignores it).
        let unchecked = TlsSettings { mode: SslMode::Prefer, ..s };
        assert!(client_config(&unchecked).unwrap().is_some());
    }
}
