//! A throwaway certificate authority for loopback TLS tests.
//!
//! Certificates are made with `rcgen` (ECDSA P-256 keys, PKCS#8). The rustls configurations
//! built here always name the `ring` provider explicitly (`builder_with_provider`), the one
//! `pingora-rustls` 0.9 installs, so they never depend on a process-wide default provider.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The rustls crypto provider every config in the harness uses: `ring`, as in pingora-rustls.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed test CA that issues server certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

/// A certificate issued by a [`TestCa`], with its private key and the CA certificate.
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// The issuing CA's certificate, PEM.
    pub ca_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The leaf's private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The issuing CA's certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// The subject alternative names the certificate carries (DNS names and IP addresses).
    pub names: Vec<String>,
}

impl TestCa {
    /// Makes a new CA with a fresh key and a unique name. Two `TestCa`s never trust each
    /// other's certificates.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        // A distinct name per CA: a client that trusts another TestCa then fails with
        // UnknownIssuer (with equal names it would find the wrong CA and fail on the signature).
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let cn = format!(
            "peergate test CA {}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "peergate tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM (what a `peer_ca_file` holds).
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a server certificate (also valid for client auth) for `names`.
    ///
    /// Each name that parses as an IP address becomes an IP SAN, any other a DNS SAN.
    /// `127.0.0.1` is always added as an IP SAN, so the certificate also verifies when a
    /// client connects by address. The common name is the first of `names`.
    pub fn issue(&self, names: &[&str]) -> IssuedCert {
        let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        if !sans
            .iter()
            .any(|n| n.parse::<IpAddr>().ok() == Some(loopback))
        {
            sans.push(loopback.to_string());
        }
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::new(sans.clone()).expect("leaf params (bad SAN?)");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("127.0.0.1"),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            ca_der: self.cert_der.clone(),
            names: sans,
        }
    }

    /// A root store holding only this CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .expect("add test CA to root store");
        roots
    }

    /// A rustls client config (ring provider, TLS 1.2 and 1.3) that trusts only this CA and
    /// offers `alpn` (e.g. `&[b"h2"]`, `&[b"http/1.1"]`, or `&[]` for no ALPN).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl IssuedCert {
    /// The private key as rustls wants it.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `cert.pem` (the chain: the leaf; the root is not part of a chain), `key.pem`
    /// (PKCS#8) and `ca.pem` (the issuing CA) into `dir`, creating `dir` if needed, and returns
    /// `(cert_path, key_path, ca_path)` for the gateway's `tls:` section (`cert_file`,
    /// `key_file`, `peer_ca_file`). Panics if a file cannot be written. Use one directory per
    /// certificate: the file names are fixed.
    pub fn write_files(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        (
            write("cert.pem", &self.cert_pem),
            write("key.pem", &self.key_pem),
            write("ca.pem", &self.ca_pem),
        )
    }

    /// A rustls server config (ring provider) presenting this certificate and offering `alpn`
    /// (most preferred first), for test-only TLS servers.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], self.private_key())
            .expect("server certificate and key match");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
