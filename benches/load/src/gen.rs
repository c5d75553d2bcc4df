//! Generators for the harness: TLS material, identities, large peers files, free ports.
//!
//! Key ids and short IDs are computed here the way DESIGN.md defines them (and
//! `src/identity.rs` implements them); `peergate check` on the generated files is the cross-check.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::Instant;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::{RngCore, SeedableRng};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256, Sha512};

use crate::args::Args;

const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const ALPHABET: &[u8; 32] = b"abcdefghjklnpqrstvwxyz0123456789";

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `certs --dir D`: D/ca.pem, D/cert.pem (localhost, 127.0.0.1), D/key.pem.
pub fn certs(args: &Args) -> Result<(), String> {
    let dir = Path::new(args.req("dir")?);
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "peergate load harness CA (throwaway)");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(err)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).map_err(err)?;
    write(&dir.join("ca.pem"), &ca_cert.pem())?;
    write(&dir.join("cert.pem"), &cert.pem())?;
    write(&dir.join("key.pem"), &key.serialize_pem())?;
    Ok(())
}

pub fn spki_der(key: &VerifyingKey) -> [u8; 44] {
    let mut der = [0u8; 44];
    der[..12].copy_from_slice(&SPKI_PREFIX);
    der[12..].copy_from_slice(key.as_bytes());
    der
}

pub fn key_id(key: &VerifyingKey) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()))
}

/// The first six characters of the peer ID: the top 30 bits of SHA-512(SPKI), 5 at a time.
pub fn short_id(key: &VerifyingKey) -> String {
    let d = Sha512::digest(spki_der(key));
    let top = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    (0..6)
        .map(|i| char::from(ALPHABET[((top >> (27 - 5 * i)) & 31) as usize]))
        .collect()
}

pub fn signing_key_from_pem(text: &str) -> Option<SigningKey> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = STANDARD.decode(body.trim()).ok()?;
    if der.len() != 48 || der[..16] != PKCS8_V1_PREFIX {
        return None;
    }
    let seed: [u8; 32] = der[16..].try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// `identity --out KEY.pem`: writes a PKCS#8 v1 key (as `peergate keygen` does) and prints
/// `<SPKI base64> <key id> <short ID>`.
pub fn identity(args: &Args) -> Result<(), String> {
    let out = Path::new(args.req("out")?);
    let key = SigningKey::from_bytes(&rand::random());
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(key.as_bytes());
    write(
        out,
        &format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der)
        ),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600));
    }
    let public = key.verifying_key();
    println!(
        "{} {} {}",
        STANDARD.encode(spki_der(&public)),
        key_id(&public),
        short_id(&public)
    );
    Ok(())
}

/// `peers --count N --out FILE [--peer NAME,SPKI,URL ...] [--seed S]`: a peers file with the
/// given peers and filler peers up to N in all. Every key, name and short ID is unique (random
/// short IDs collide: 100 000 of them share ~5 pairs of 30 bits, which peergate refuses).
pub fn peers(args: &Args) -> Result<(), String> {
    let count: usize = args.num("count", 2)?;
    let out = Path::new(args.req("out")?);
    let seed: u64 = args.num("seed", 9421)?;
    let started = Instant::now();
    let mut shorts: HashSet<String> = HashSet::new();
    let mut text = String::with_capacity(count * 120 + 64);
    text.push_str("peers:\n");
    let real: Vec<Vec<&str>> = args
        .all("peer")
        .into_iter()
        .map(|p| p.splitn(3, ',').collect())
        .collect();
    for p in &real {
        let [name, spki, url] = p.as_slice() else {
            return Err("--peer wants NAME,SPKI,URL".into());
        };
        let der = STANDARD
            .decode(spki)
            .map_err(|_| format!("peer {name}: SPKI is not base64"))?;
        let raw: [u8; 32] = der
            .get(12..)
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| format!("peer {name}: not an Ed25519 SPKI"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| e.to_string())?;
        shorts.insert(short_id(&key));
        text.push_str(&format!(
            "  - name: {name}\n    public_key: \"{spki}\"\n    url: {url}\n"
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut filler = 0usize;
    let mut skipped = 0usize;
    while real.len() + filler < count {
        let mut seedbytes = [0u8; 32];
        rng.fill_bytes(&mut seedbytes);
        let public = SigningKey::from_bytes(&seedbytes).verifying_key();
        if !shorts.insert(short_id(&public)) {
            skipped += 1;
            continue;
        }
        filler += 1;
        text.push_str(&format!(
            "  - name: filler-{filler:06}\n    public_key: \"{}\"\n    url: https://filler-{filler:06}.invalid:8443\n",
            STANDARD.encode(spki_der(&public))
        ));
    }
    let mut file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "pgbench peers: {} peers ({} filler, {skipped} keys skipped for a short-ID collision) in {:.2}s",
        real.len() + filler,
        filler,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `ports --count N`: N free loopback TCP ports, space-separated.
pub fn ports(args: &Args) -> Result<(), String> {
    let n: usize = args.num("count", 1)?;
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port().to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    println!("{}", ports.join(" "));
    Ok(())
}
