//! The inbound listener's certificate chain and private key, read and checked with the rest of
//! the configuration.
//!
//! Pingora reads `tls.cert_file` and `tls.key_file` only when its listener thread starts, and
//! panics there when they do not parse: `peergate check` said the configuration was fine, and
//! `peergate run` kept running with no inbound listener (its `/healthz` still answering 200).
//! So the files are read here, at load time, with the bounded reader every other file goes
//! through; the chain and key must parse and belong together, and the listener is handed the
//! result (a certificate resolver), so Pingora never opens the files itself.
//!
//! The resolver is a [`CertSlot`] that a reload fills with the pair it read: a renewed
//! certificate (certbot, cert-manager) is served from the next handshake on, without a restart.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The pair the inbound listener presents; replaced whole by a reload.
pub struct CertSlot(ArcSwap<CertifiedKey>);

impl CertSlot {
    pub fn new(cert: &ServerCert) -> CertSlot {
        CertSlot(ArcSwap::new(cert.0.clone()))
    }

    /// Serves `cert` from the next handshake on; connections already open keep theirs.
    pub fn replace(&self, cert: &ServerCert) {
        self.0.store(cert.0.clone());
    }
}

impl fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertSlot")
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Which of the two settings a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    CertFile,
    KeyFile,
}

impl Which {
    pub fn setting(self) -> &'static str {
        match self {
            Which::CertFile => "cert_file",
            Which::KeyFile => "key_file",
        }
    }
}

/// A loaded chain and key, ready for the listener.
#[derive(Clone)]
pub struct ServerCert(pub Arc<CertifiedKey>);

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerCert({} certificate(s))", self.0.cert.len())
    }
}

/// PEM files of certificates and keys are small; this is far above any real chain.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Reads and checks the chain at `cert` and the key at `key`.
pub fn load(cert: &Path, key: &Path) -> Result<ServerCert, (Which, String)> {
    let read = |path: &Path, which: Which| {
        crate::files::read(path, MAX_PEM_FILE)
            .map_err(|e| (which, format!("cannot read {}: {e}", path.display())))
    };
    let cert_pem = read(cert, Which::CertFile)?;
    let key_pem = read(key, Which::KeyFile)?;

    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(&cert_pem) {
        match item {
            Ok(der) => chain.push(der),
            Err(e) => {
                return Err((
                    Which::CertFile,
                    format!("{} is not a PEM certificate chain: {e}", cert.display()),
                ))
            }
        }
    }
    if chain.is_empty() {
        return Err((
            Which::CertFile,
            format!(
                "{} holds no certificate (a PEM block \"-----BEGIN CERTIFICATE-----\")",
                cert.display()
            ),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            Which::KeyFile,
            format!(
                "{} holds no private key in PEM (PKCS#8, PKCS#1 or SEC1): {e}",
                key.display()
            ),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => (
            Which::KeyFile,
            format!(
                "{} is not the private key of the certificate in {}",
                key.display(),
                cert.display()
            ),
        ),
        rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_) => (
            Which::CertFile,
            format!(
                "{}: the first certificate does not parse: {e}",
                cert.display()
            ),
        ),
        e => (
            Which::KeyFile,
            format!("{} cannot be used as a TLS key: {e}", key.display()),
        ),
    })?;
    Ok(ServerCert(Arc::new(certified)))
}

/// Reads and checks `tls.peer_ca_file`, the roots outbound TLS trusts for peers. Pingora reads
/// the file itself when the outbound listener starts, and panics when it holds anything but
/// certificates (a private key beside the CA certificate, a certificate request); and a file
/// with no certificate at all (empty, or not PEM) would make every call to a peer fail its
/// handshake. So the file is held to Pingora's rule here, at load time, where `peergate check`
/// and a reload see it.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    read_ca_roots(path).map(drop)
}

/// The certificates of a CA file, held to the rule `check_ca_file` explains. `peer add` reads
/// its `--ca-file` (or `tls.peer_ca_file`) through here too, so a file it accepts is one the
/// gateway accepts.
pub fn read_ca_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::{self, SectionKind};
    let pem = crate::files::read(path, MAX_PEM_FILE)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut rest: &[u8] = &pem;
    loop {
        match pem::from_buf(&mut rest) {
            Ok(Some((SectionKind::Certificate, der))) => {
                roots.add(CertificateDer::from(der)).map_err(|e| {
                    format!("{} holds an unusable certificate: {e}", path.display())
                })?;
            }
            Ok(Some((kind, _))) => {
                let what = match kind {
                    SectionKind::PrivateKey
                    | SectionKind::RsaPrivateKey
                    | SectionKind::EcPrivateKey => "a private key",
                    SectionKind::PublicKey => "a public key",
                    SectionKind::Csr => "a certificate request",
                    SectionKind::Crl => "a revocation list",
                    _ => "a PEM block that is not a certificate",
                };
                return Err(format!(
                    "{} holds {what}; it may hold only the CA certificates that peers' \
                     certificates are checked against",
                    path.display()
                ));
            }
            Ok(None) => break,
            Err(e) => return Err(format!("{} is not PEM: {e}", path.display())),
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "{} holds no certificate (a PEM block \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn load_texts(cert: &str, key: &str) -> Result<ServerCert, (Which, String)> {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        load(&c, &k)
    }

    #[test]
    fn a_matching_chain_and_key_load() {
        let (cert, key) = pair();
        let loaded = load_texts(&cert, &key).unwrap();
        assert_eq!(loaded.0.cert.len(), 1);
    }

    #[test]
    fn each_wrong_file_is_named() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let cases = [
            ("", key.as_str(), Which::CertFile, "holds no certificate"),
            (
                key.as_str(),
                key.as_str(),
                Which::CertFile,
                "holds no certificate",
            ),
            (cert.as_str(), "", Which::KeyFile, "holds no private key"),
            (
                cert.as_str(),
                cert.as_str(),
                Which::KeyFile,
                "holds no private key",
            ),
            (
                cert.as_str(),
                other_key.as_str(),
                Which::KeyFile,
                "is not the private key of the certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                key.as_str(),
                Which::CertFile,
                "does not parse",
            ),
        ];
        for (cert, key, which, needle) in cases {
            let (got, message) = load_texts(cert, key).unwrap_err();
            assert_eq!(got, which, "{message}");
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }
}
