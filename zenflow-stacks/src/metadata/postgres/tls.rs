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
    /// TLS or no connection; the certificate is checked only when a root
    /// certificate file is there (then as `verify-ca`), as libpq does.
    Require,
    /// TLS, with a certificate signed by a trusted CA (any host name).
    VerifyCa,
    /// TLS, with a certificate signed by a trusted CA for the host connected to.
    VerifyFull,
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The CAs a verifying connection trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The certificates of a PEM file (`sslrootcert=/path`, or libpq's
    /// default `~/.postgresql/root.crt`).
    File(PathBuf),
    /// The public CAs (`sslrootcert=system`; the Mozilla roots bundled with
    /// the build). libpq allows them with `verify-full` only: a public CA
    /// signs certificates for anyone's host, so only the host name tells
    /// the server apart.
    System,
}

/// What a connection URL asks of TLS.
#[derive(Debug, PartialEq)]
pub(crate) struct TlsSettings {
    /// The URL for tokio-postgres: `sslrootcert` removed, `verify-*` read as `require`.
    pub url: String,
    pub mode: SslMode,
    /// What a verifying mode trusts; `None` when nothing is checked.
    pub roots: Option<Roots>,
    /// The host connected to (the URL's), for the plaintext warning.
    pub host: Option<String>,
}

/// Where libpq looks for the root certificate when the URL names none:
/// `$PGSSLROOTCERT`, else `~/.postgresql/root.crt`.
pub(crate) fn default_root_cert(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = env("PGSSLROOTCERT").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    env("HOME").filter(|h| !h.is_empty()).map(|home| Path::new(&home).join(".postgresql").join("root.crt"))
}

/// Reads `sslmode` and `sslrootcert` from a `postgres://` URL as libpq
/// does. Other forms (`host=... user=...`) are passed on as they are, with
/// libpq's default.
pub(crate) fn settings(url: &str) -> Result<TlsSettings, String> {
    settings_with(url, &|k| std::env::var(k).ok())
}

/// [`settings`] with the environment given (`PGSSLROOTCERT`, `HOME`).
pub(crate) fn settings_with(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<TlsSettings, String> {
    let parsed = match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => u,
        _ => return Ok(TlsSettings { url: url.to_string(), mode: SslMode::Prefer, roots: None, host: None }),
    };
    let mut mode = None;
    let mut root_cert: Option<String> = None;
    let mut host = parsed.host_str().map(str::to_string);
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "sslmode" => mode = Some(parse_mode(&value)?),
            "sslrootcert" => root_cert = Some(value.into_owned()),
            other => {
                if other == "host" {
                    host = Some(value.to_string());
                }
                kept.push((key.into_owned(), value.into_owned()))
            }
        }
    }
    let (mode, roots) = trust(mode, root_cert.as_deref(), env)?;
    let tokio_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
    };
    let mut rebuilt = parsed.clone();
    rebuilt.query_pairs_mut().clear().extend_pairs(kept).append_pair("sslmode", tokio_mode);
    Ok(TlsSettings { url: rebuilt.to_string(), mode, roots, host })
}

/// An `sslmode` value, as libpq spells them.
fn parse_mode(value: &str) -> Result<SslMode, String> {
    Ok(match value {
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
    })
}

/// The mode and the roots to check the server's certificate against, as
/// libpq 16 decides them from `sslmode` and `sslrootcert` (and, without
/// one, `~/.postgresql/root.crt`).
fn trust(
    mode: Option<SslMode>,
    root_cert: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(SslMode, Option<Roots>), String> {
    Ok(match (mode, root_cert) {
        // libpq 16: the system roots imply verify-full and refuse weaker modes.
        (None | Some(SslMode::VerifyFull), Some("system")) => (SslMode::VerifyFull, Some(Roots::System)),
        (Some(weaker), Some("system")) => {
            return Err(format!(
                "sslrootcert=system trusts every public CA, so it needs sslmode=verify-full (it has `{}`): \
             any public CA signs certificates for anyone's host, and only the host name check tells \
             your server apart; use sslmode=verify-full, or give the CA that signed your server's \
             certificate as sslrootcert=/path/to/ca.pem",
                weaker.as_str()
            ))
        }
        (mode, Some(path)) => {
            let mode = mode.unwrap_or(SslMode::Prefer);
            let checks = matches!(mode, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull);
            // libpq: `require` with a root file behaves as `verify-ca`.
            let mode = if mode == SslMode::Require { SslMode::VerifyCa } else { mode };
            (mode, checks.then(|| Roots::File(PathBuf::from(path))))
        }
        (mode, None) => {
            let mode = mode.unwrap_or(SslMode::Prefer);
            let default = default_root_cert(env);
            let present = default.as_ref().filter(|p| p.is_file());
            match mode {
                SslMode::VerifyCa | SslMode::VerifyFull => match present {
                    Some(path) => (mode, Some(Roots::File(path.clone()))),
                    None => {
                        let looked = default.map_or("~/.postgresql/root.crt".to_string(), |p| p.display().to_string());
                        return Err(format!(
                            "sslmode={} checks the server's certificate against the CA that signed it, but no \
                         root certificate was given and {looked} does not exist: add \
                         sslrootcert=/path/to/ca.pem to the URL (or put the CA certificate at {looked}); \
                         to trust the public CAs instead, use sslmode=verify-full&sslrootcert=system",
                            mode.as_str()
                        ));
                    }
                },
                SslMode::Require => match present {
                    Some(path) => (SslMode::VerifyCa, Some(Roots::File(path.clone()))),
                    None => (SslMode::Require, None),
                },
                SslMode::Disable | SslMode::Prefer => (mode, None),
            }
        }
    })
}

/// Whether `host` is this machine: a loopback address, `localhost`, or a
/// Unix socket folder (traffic that never leaves the machine).
pub(crate) fn is_local(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.starts_with('/')
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The warning for a connection that `prefer` made without TLS to another
/// machine (the password and every record cross the network in the clear),
/// or `None`.
pub(crate) fn plaintext_warning(settings: &TlsSettings, tls_used: bool) -> Option<String> {
    let host = settings.host.as_deref()?;
    (settings.mode == SslMode::Prefer && !tls_used && !is_local(host)).then(|| {
        format!(
            "the PostgreSQL server at {host} does not offer TLS, so sslmode=prefer fell back to an unencrypted \
             connection; turn `ssl` on at the server and connect with sslmode=verify-full"
        )
    })
}

/// The rustls configuration for `settings`; `None` when TLS is off.
pub(crate) fn client_config(settings: &TlsSettings) -> Result<Option<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let mut store = RootCertStore::empty();
        match &settings.roots {
            Some(Roots::System) => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(Roots::File(path)) => {
                for cert in read_certificates(path)? {
                    store.add(cert).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            None => return Err(format!("sslmode={} needs root certificates", settings.mode.as_str())),
        }
        Ok(Arc::new(store))
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

/// A TLS connector that records whether a handshake was ever started:
/// under `prefer`, tokio-postgres goes on without TLS when the server
/// declines it, and says nothing.
#[derive(Clone)]
pub(crate) struct Observed<T> {
    pub inner: T,
    pub used: Arc<std::sync::atomic::AtomicBool>,
}

/// One connection's half of [`Observed`].
pub(crate) struct ObservedConnect<T> {
    inner: T,
    used: Arc<std::sync::atomic::AtomicBool>,
}

impl<S, T: tokio_postgres::tls::MakeTlsConnect<S>> tokio_postgres::tls::MakeTlsConnect<S> for Observed<T> {
    type Stream = T::Stream;
    type TlsConnect = ObservedConnect<T::TlsConnect>;
    type Error = T::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(ObservedConnect { inner: self.inner.make_tls_connect(domain)?, used: self.used.clone() })
    }
}

impl<S, T: tokio_postgres::tls::TlsConnect<S>> tokio_postgres::tls::TlsConnect<S> for ObservedConnect<T> {
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: S) -> Self::Future {
        self.used.store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.connect(stream)
    }
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

    /// No `PGSSLROOTCERT`, and a home folder without `.postgresql/root.crt`.
    fn bare_env(home: &Path) -> impl Fn(&str) -> Option<String> + '_ {
        move |k| (k == "HOME").then(|| home.display().to_string())
    }

    #[test]
    fn libpq_settings_become_a_url_tokio_postgres_reads() {
        let home = tempfile::tempdir().unwrap();
        let env = bare_env(home.path());
        let s = settings_with(
            "postgres://u:p@db.example:5432/zf?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
            &env,
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.roots, Some(Roots::File("/etc/ca.pem".into())));
        assert_eq!(s.host.as_deref(), Some("db.example"));
        assert_eq!(s.url, "postgres://u:p@db.example:5432/zf?application_name=x&sslmode=require");
        s.url.parse::<tokio_postgres::Config>().unwrap();

        let default = settings_with("postgres://u@localhost/zf", &env).unwrap();
        assert_eq!((default.mode, default.roots), (SslMode::Prefer, None));
        // libpq: require with a CA file checks the chain.
        let require = settings_with("postgres://h/d?sslmode=require&sslrootcert=ca.pem", &env).unwrap();
        assert_eq!((require.mode, require.roots), (SslMode::VerifyCa, Some(Roots::File("ca.pem".into()))));
        assert_eq!(settings_with("postgres://h/d?sslmode=require", &env).unwrap().roots, None);
        assert_eq!(settings_with("postgres://h/d?sslmode=allow", &env).unwrap().mode, SslMode::Prefer);
        assert_eq!(
            settings_with("postgres://h/d?sslmode=disable", &env).unwrap().url,
            "postgres://h/d?sslmode=disable"
        );
        // Nothing is checked under prefer, so a CA file is not needed then.
        assert_eq!(settings_with("postgres://h/d?sslrootcert=ca.pem", &env).unwrap().roots, None);
        let kv = settings_with("host=localhost user=u", &env).unwrap();
        assert_eq!(kv.url, "host=localhost user=u");
    }

    /// The public roots only with the host name checked, as libpq 16 has it.
    #[test]
    fn the_system_roots_imply_and_need_verify_full() {
        let home = tempfile::tempdir().unwrap();
        let env = bare_env(home.path());
        let s = settings_with("postgres://h/d?sslrootcert=system", &env).unwrap();
        assert_eq!((s.mode, s.roots), (SslMode::VerifyFull, Some(Roots::System)));
        let s = settings_with("postgres://h/d?sslmode=verify-full&sslrootcert=system", &env).unwrap();
        assert_eq!((s.mode, s.roots), (SslMode::VerifyFull, Some(Roots::System)));
        for weaker in ["verify-ca", "require", "prefer", "disable"] {
            let err =
                settings_with(&format!("postgres://u:pw@h/d?sslmode={weaker}&sslrootcert=system"), &env).unwrap_err();
            assert!(err.contains("needs sslmode=verify-full") && err.contains(weaker), "{err}");
            assert!(!err.contains("pw"), "{err}");
        }
    }

    /// `verify-ca` and `verify-full` need a CA: the URL's, `$PGSSLROOTCERT`,
    /// or `~/.postgresql/root.crt`; never the public roots in silence (with
    /// verify-ca they would accept any publicly issued certificate).
    #[test]
    fn verifying_without_a_root_certificate_is_an_error_naming_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let env = bare_env(home.path());
        for mode in ["verify-ca", "verify-full"] {
            let err = settings_with(&format!("postgres://u:secret@h/d?sslmode={mode}"), &env).unwrap_err();
            assert!(err.contains(&format!("sslmode={mode}")), "{err}");
            assert!(err.contains("sslrootcert=/path/to/ca.pem"), "{err}");
            assert!(err.contains(&home.path().join(".postgresql/root.crt").display().to_string()), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        // libpq's default file is used when it is there, also by `require`.
        let dot = home.path().join(".postgresql");
        std::fs::create_dir_all(&dot).unwrap();
        std::fs::write(dot.join("root.crt"), "pem").unwrap();
        let s = settings_with("postgres://h/d?sslmode=verify-ca", &env).unwrap();
        assert_eq!(s.roots, Some(Roots::File(dot.join("root.crt"))));
        assert_eq!(settings_with("postgres://h/d?sslmode=require", &env).unwrap().mode, SslMode::VerifyCa);
        // $PGSSLROOTCERT wins over the home folder.
        let pgenv = |k: &str| match k {
            "PGSSLROOTCERT" => Some("/etc/zenflow/ca.pem".to_string()),
            _ => None,
        };
        let err = settings_with("postgres://h/d?sslmode=verify-full", &pgenv).unwrap_err();
        assert!(err.contains("/etc/zenflow/ca.pem"), "{err}");
    }

    #[test]
    fn a_bad_sslmode_or_ca_file_is_a_clear_error() {
        let err = settings("postgres://u:secret@h/d?sslmode=verify").unwrap_err();
        assert!(err.contains("sslmode `verify`") && err.contains("verify-full"), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let s = TlsSettings {
            url: String::new(),
            mode: SslMode::VerifyFull,
            roots: Some(Roots::File(missing.clone())),
            host: None,
        };
        let err = client_config(&s).unwrap_err();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        std::fs::write(&missing, "not a certificate").unwrap();
        let err = client_config(&s).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        // Read only when something is checked (libpq's prefer ignores it).
        let unchecked = TlsSettings { mode: SslMode::Prefer, roots: None, ..s };
        assert!(client_config(&unchecked).unwrap().is_some());
    }

    #[test]
    fn prefer_without_tls_to_another_machine_warns() {
        let home = tempfile::tempdir().unwrap();
        let env = bare_env(home.path());
        let remote = settings_with("postgres://u:pw@db.example.com/zf", &env).unwrap();
        let warning = plaintext_warning(&remote, false).expect("a warning");
        assert!(warning.contains("db.example.com") && warning.contains("unencrypted"), "{warning}");
        assert!(!warning.contains("pw"), "{warning}");
        assert_eq!(plaintext_warning(&remote, true), None, "TLS was used");
        for local in ["localhost", "127.0.0.1", "127.8.0.1", "[::1]"] {
            let s = settings_with(&format!("postgres://u@{local}/zf"), &env).unwrap();
            assert_eq!(plaintext_warning(&s, false), None, "{local} is this machine");
        }
        let socket = settings_with("postgres://u@localhost/zf?host=/run/postgresql", &env).unwrap();
        assert_eq!(plaintext_warning(&socket, false), None, "a Unix socket");
        let disabled = settings_with("postgres://u@db.example.com/zf?sslmode=disable", &env).unwrap();
        assert_eq!(plaintext_warning(&disabled, false), None, "asked for no TLS");
    }
}
