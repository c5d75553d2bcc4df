//! This installation's Ed25519 identity, and the three names a public key goes by.
//!
//! - the **key id** (RFC 7638 JWK thumbprint) is what travels as `keyid` on the wire and the only
//!   thing authorization ever looks up;
//! - the **peer ID** (Portal's handle: SHA-512 of the SubjectPublicKeyInfo, base-32) and its first
//!   six characters, the **short ID**, are for people: they are shown, typed and put in URLs, but
//!   never used to decide who may do what.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (0 unused bits) }, followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an Ed25519 PKCS#8 v1 PrivateKeyInfo (RFC 8410 section 7): SEQUENCE {
/// INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32 bytes) } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The peer-ID alphabet: 32 symbols without the look-alikes `i`, `m`, `o`, `u`.
const PEER_ID_ALPHABET: &[u8; 32] = b"abcdefghjklnpqrstvwxyz0123456789";

/// How many characters of the peer ID people see.
pub const SHORT_ID_LEN: usize = 6;

/// Everything that can go wrong with a key, in words that say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to overwrite it (the old identity is lost)")]
    Exists { path: PathBuf },
    #[error("{path}: the directory {dir} does not exist; create it first (mkdir -p {dir})")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("{path} is {what}, not a key file: --force replaces only a regular file; give the path of the file itself")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("{path}: {reason}")]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{0}")]
    BadPublicKey(String),
}

/// The private key and everything derived from it. Derived names are computed once at load,
/// because they are read on every request (identity headers, metrics labels).
pub struct Identity {
    signing_key: SigningKey,
    public: PublicIdentity,
}

impl Identity {
    pub fn from_signing_key(signing_key: SigningKey) -> Self {
        let public = PublicIdentity::new(signing_key.verifying_key());
        Identity {
            signing_key,
            public,
        }
    }

    /// A new key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut seed = ed25519_dalek::SecretKey::default();
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::from_signing_key(SigningKey::from_bytes(&seed))
    }

    /// `n` new identities with distinct short IDs, for tests that list them as peers: short IDs
    /// are short enough that random keys collide now and then, and an allowlist refuses two
    /// peers with one short ID.
    #[cfg(test)]
    pub fn generate_distinct(n: usize) -> Vec<Self> {
        let mut ids: Vec<Self> = Vec::with_capacity(n);
        while ids.len() < n {
            let id = Self::generate();
            if ids
                .iter()
                .all(|o| o.public().short_id() != id.public().short_id())
            {
                ids.push(id);
            }
        }
        ids
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    /// The private key as PKCS#8 v1 PEM (RFC 8410 section 7: PrivateKeyInfo with the 32-byte
    /// seed and no public key). ed25519-dalek writes v2 (with the public key), which OpenSSL
    /// 3.0 and Python's cryptography refuse, so peergate writes the form every tool reads.
    pub fn to_pkcs8_pem(&self) -> Result<String, IdentityError> {
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        der.extend_from_slice(self.signing_key.as_bytes());
        Ok(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der)
        ))
    }
}

/// Characters of a key id: 32 bytes of SHA-256 in base64url without padding.
pub const KEY_ID_LEN: usize = 43;

/// A public key with its key id and short ID.
///
/// Kept small, because an allowlist can hold 100 000 of these: the 32 bytes of the key as
/// written (validated when parsed, decompressed again only where a signature is checked), the
/// key id and the short ID inline. The 103-character peer ID is computed when asked for: only
/// listings show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicIdentity {
    raw: [u8; 32],
    key_id: [u8; KEY_ID_LEN],
    short_id: [u8; SHORT_ID_LEN],
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIdentity")
            .field("key_id", &self.key_id())
            .field("short_id", &self.short_id())
            .finish()
    }
}

impl PublicIdentity {
    pub fn new(key: VerifyingKey) -> Self {
        Self::of_valid_raw(key.to_bytes())
    }

    /// For 32 bytes already known to be a valid, non-weak Ed25519 point.
    pub(crate) fn of_valid_raw(raw: [u8; 32]) -> Self {
        let mut short_id = [0u8; SHORT_ID_LEN];
        for (slot, c) in short_id.iter_mut().zip(peer_id_symbols(&raw)) {
            *slot = c;
        }
        PublicIdentity {
            key_id: key_id_of_raw(&raw),
            short_id,
            raw,
        }
    }

    /// The 32 bytes of the key (RFC 8032 encoding).
    pub fn raw(&self) -> &[u8; 32] {
        &self.raw
    }

    /// The key as a curve point, for checking signatures. Costs a decompression (about 4 µs):
    /// hot paths keep the result (see `allowlist::KeyCache`). `None` cannot happen for a key
    /// that was parsed or generated, but is not assumed away.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.raw).ok()
    }

    pub fn key_id(&self) -> &str {
        // Base64url: ASCII, so always UTF-8.
        std::str::from_utf8(&self.key_id).unwrap_or_default()
    }

    pub fn peer_id(&self) -> String {
        peer_id_symbols(&self.raw).map(char::from).collect()
    }

    pub fn short_id(&self) -> &str {
        // Characters of PEER_ID_ALPHABET: ASCII, so always UTF-8.
        std::str::from_utf8(&self.short_id).unwrap_or_default()
    }

    /// The short ID's bytes, for tables that keep it without the rest.
    pub(crate) fn short_id_bytes(&self) -> [u8; SHORT_ID_LEN] {
        self.short_id
    }

    /// The SubjectPublicKeyInfo DER, the form the peer ID is computed over.
    pub fn spki_der(&self) -> [u8; 44] {
        spki_der_of_raw(&self.raw)
    }

    /// SPKI base64 (a PEM body on one line): the form people paste into `public_key:`.
    pub fn spki_base64(&self) -> String {
        STANDARD.encode(self.spki_der())
    }

    pub fn public_key_pem(&self) -> String {
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            self.spki_base64()
        )
    }

    /// The raw 32 bytes, base64url without padding: the JWK `x` member.
    pub fn raw_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.raw)
    }

    /// Parses a peer's public key in any form DESIGN.md allows: SPKI base64 (a PEM body), a
    /// whole PEM block, or the 32 raw bytes in base64url (or standard base64). Small-order
    /// ("weak") keys are refused: anyone can forge signatures that verify under them.
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        Self::parse_reusing(text, &|_| None)
    }

    /// [`parse`](Self::parse), skipping the point checks for a key `known` vouches for: when it
    /// has a key with this key id and exactly these 32 bytes, that key passed the very same
    /// checks (point decompression, weak-key test) when it was first loaded, and repeating
    /// them is most of the cost of reloading a large allowlist.
    pub fn parse_reusing(
        text: &str,
        known: &dyn Fn(&str) -> Option<[u8; 32]>,
    ) -> Result<Self, IdentityError> {
        let text = text.trim();
        let body: String = if text.starts_with("-----BEGIN") {
            pem_body(text, "PUBLIC KEY").map_err(IdentityError::BadPublicKey)?
        } else {
            text.chars().filter(|c| !c.is_whitespace()).collect()
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(&body))
            .map_err(|_| {
                IdentityError::BadPublicKey(
                    "public key is not base64: expected SPKI base64 (\"MCowBQYDK2VwAyEA…\"), a PEM block, or 32 raw bytes in base64url".into(),
                )
            })?;
        let raw: [u8; 32] = match bytes.len() {
            32 => bytes.as_slice().try_into().map_err(|_| length_error(32))?,
            44 => {
                let (prefix, key) = bytes.split_at(ED25519_SPKI_PREFIX.len());
                if prefix != ED25519_SPKI_PREFIX {
                    return Err(IdentityError::BadPublicKey(
                        "public key is a 44-byte SubjectPublicKeyInfo but not for Ed25519 (OID 1.3.101.112)".into(),
                    ));
                }
                key.try_into().map_err(|_| length_error(44))?
            }
            n => return Err(length_error(n)),
        };
        let key_id = key_id_of_raw(&raw);
        if std::str::from_utf8(&key_id)
            .ok()
            .and_then(known)
            .is_some_and(|k| k == raw)
        {
            return Ok(PublicIdentity::of_valid_raw(raw));
        }
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| {
            IdentityError::BadPublicKey("public key is not a valid Ed25519 point".into())
        })?;
        if key.is_weak() {
            return Err(IdentityError::BadPublicKey(
                "public key is a weak (small-order) Ed25519 key: signatures under it can be forged, so it is refused".into(),
            ));
        }
        Ok(PublicIdentity::of_valid_raw(raw))
    }
}

fn length_error(n: usize) -> IdentityError {
    IdentityError::BadPublicKey(format!(
        "public key decodes to {n} bytes; an Ed25519 key is 32 raw bytes or a 44-byte SubjectPublicKeyInfo"
    ))
}

/// Extracts the base64 body of a PEM block with the given label.
fn pem_body(text: &str, label: &str) -> Result<String, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| {
        let found = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_matches('-')
            .trim_start_matches("BEGIN ");
        format!("expected a PEM block \"{label}\", found \"{found}\"")
    })?;
    let rest = text.get(start + begin.len()..).unwrap_or_default();
    let stop = rest
        .find(&end)
        .ok_or_else(|| format!("PEM block \"{label}\" has no END line"))?;
    Ok(rest
        .get(..stop)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect())
}

pub fn spki_der(key: &VerifyingKey) -> [u8; 44] {
    spki_der_of_raw(key.as_bytes())
}

fn spki_der_of_raw(key: &[u8; 32]) -> [u8; 44] {
    let mut der = [0u8; 44];
    let (prefix, raw) = der.split_at_mut(ED25519_SPKI_PREFIX.len());
    prefix.copy_from_slice(&ED25519_SPKI_PREFIX);
    raw.copy_from_slice(key);
    der
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order, with no
/// whitespace, base64url without padding.
pub fn key_id(key: &VerifyingKey) -> String {
    String::from_utf8_lossy(&key_id_of_raw(key.as_bytes())).into_owned()
}

/// [`key_id`], without an allocation: the JWK is written into a buffer on the stack.
pub(crate) fn key_id_of_raw(raw: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    const HEAD: &[u8] = br#"{"crv":"Ed25519","kty":"OKP","x":""#;
    const TAIL: &[u8] = br#""}"#;
    let mut jwk = [0u8; HEAD.len() + KEY_ID_LEN + TAIL.len()];
    let (head, rest) = jwk.split_at_mut(HEAD.len());
    let (x, tail) = rest.split_at_mut(KEY_ID_LEN);
    head.copy_from_slice(HEAD);
    tail.copy_from_slice(TAIL);
    // 32 bytes are 43 base64url characters: the buffer is exactly the right size.
    let _ = URL_SAFE_NO_PAD.encode_slice(raw, x);
    let mut out = [0u8; KEY_ID_LEN];
    let _ = URL_SAFE_NO_PAD.encode_slice(Sha256::digest(jwk), &mut out);
    out
}

/// Portal's peer ID: SHA-512 over the SPKI DER, 5 bits a character, most significant first, the
/// last group padded with zero bits.
pub fn peer_id(key: &VerifyingKey) -> String {
    peer_id_symbols(key.as_bytes()).map(char::from).collect()
}

/// The characters of the peer ID of a key (64 bytes of SHA-512 are exactly 103 of them).
fn peer_id_symbols(raw: &[u8; 32]) -> impl Iterator<Item = u8> {
    let digest: [u8; 64] = Sha512::digest(spki_der_of_raw(raw)).into();
    base32_msb_symbols(digest.into_iter())
}

#[cfg(test)]
fn base32_msb(bytes: &[u8]) -> String {
    base32_msb_symbols(bytes.iter().copied())
        .map(char::from)
        .collect()
}

/// The base-32 symbols of `bytes`, 5 bits each, most significant first, the last group padded
/// with zero bits.
fn base32_msb_symbols(mut iter: impl Iterator<Item = u8>) -> impl Iterator<Item = u8> {
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    std::iter::from_fn(move || {
        while bits < 5 {
            match iter.next() {
                Some(b) => {
                    acc = ((acc << 8) | u32::from(b)) & 0x1fff;
                    bits += 8;
                }
                None if bits > 0 => {
                    let index = (acc << (5 - bits)) & 31;
                    bits = 0;
                    return Some(symbol(index));
                }
                None => return None,
            }
        }
        bits -= 5;
        Some(symbol(acc >> bits))
    })
}

fn symbol(index: u32) -> u8 {
    PEER_ID_ALPHABET[(index & 31) as usize]
}

/// Writes a new identity to `path` as PKCS#8 PEM, readable by the owner only. Refuses to
/// replace an existing file unless `force`, because overwriting a key silently changes who
/// this installation is to every peer.
pub fn write_new_key(path: &Path, force: bool) -> Result<Identity, IdentityError> {
    let identity = Identity::generate();
    let pem = identity.to_pkcs8_pem()?;
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !force && path.exists() {
        return Err(IdentityError::Exists {
            path: path.to_path_buf(),
        });
    }
    // The new key is renamed over the path: a symbolic link there would stop being one (the
    // key it points to staying as it was), and a device or a FIFO would be replaced by a file.
    if let Ok(meta) = fs::symlink_metadata(path) {
        let kind = meta.file_type();
        let what = if kind.is_symlink() {
            Some("a symbolic link")
        } else if kind.is_dir() {
            Some("a directory")
        } else if !kind.is_file() {
            Some("a device, FIFO or socket")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(IdentityError::NotAFile {
                path: path.to_path_buf(),
                what,
            });
        }
    }
    // Write beside the target and rename, so a crash never leaves a half-written key and an
    // existing key is replaced only by a complete one.
    let dir = crate::files::directory_of(path);
    if !dir.is_dir() {
        return Err(IdentityError::NoDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("identity.pem");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = create_private_file(&tmp).map_err(io)?;
    let written = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    let renamed = if force {
        fs::rename(&tmp, path)
    } else {
        // hard_link fails if the target appeared meanwhile: never clobber without --force.
        fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))
    };
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(IdentityError::Exists {
                path: path.to_path_buf(),
            });
        }
        return Err(io(e));
    }
    Ok(identity)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The bytes of the `PRIVATE KEY` block in `text`, read leniently: its lines between the
/// boundaries, whitespace anywhere ignored, as standard base64. `None` when there is no
/// complete block or its base64 does not decode.
fn pem_block_der(text: &str) -> Option<Vec<u8>> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----");
    lines.next()?;
    let mut base64 = String::new();
    for line in lines {
        if line == "-----END PRIVATE KEY-----" {
            return STANDARD.decode(base64).ok();
        }
        base64.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    None
}

/// A loaded key and what the operator should hear about it.
pub struct LoadedIdentity {
    pub identity: Identity,
    pub warnings: Vec<String>,
}

/// Loads the private key. Errors name the file and say what it holds instead of an Ed25519
/// PKCS#8 key; a key readable by group or others loads, with a warning.
pub fn load_key(path: &Path) -> Result<LoadedIdentity, IdentityError> {
    let bad = |reason: String| IdentityError::BadPrivateKey {
        path: path.to_path_buf(),
        reason,
    };
    let text =
        crate::files::read_to_string(path, crate::files::MAX_KEY_FILE).map_err(|source| {
            match source.kind() {
                std::io::ErrorKind::InvalidData => bad(
                    "not a text file; expected a PKCS#8 PEM \"-----BEGIN PRIVATE KEY-----\" block"
                        .into(),
                ),
                _ => IdentityError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            }
        })?;
    let label = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")))
        .ok_or_else(|| bad("no PEM block found; expected \"-----BEGIN PRIVATE KEY-----\" (run `peergate keygen -o FILE` to make one)".into()))?;
    match label {
        "PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => {
            return Err(bad(
                "the key is encrypted; peergate needs an unencrypted PKCS#8 key (protect the file with permissions instead)".into(),
            ))
        }
        "OPENSSH PRIVATE KEY" => {
            return Err(bad(
                "this is an OpenSSH key; peergate needs PKCS#8 PEM (`peergate keygen -o FILE` makes one)".into(),
            ))
        }
        "PUBLIC KEY" => return Err(bad("this is a public key; the identity needs the private key".into())),
        other => {
            return Err(bad(format!(
                "found a \"{other}\" PEM block; expected an Ed25519 \"PRIVATE KEY\" (PKCS#8)"
            )))
        }
    }
    let blocks = text
        .lines()
        .filter(|l| l.trim() == "-----BEGIN PRIVATE KEY-----")
        .count();
    if blocks > 1 {
        return Err(bad(format!(
            "holds {blocks} private keys; an identity is one key, one \"PRIVATE KEY\" block"
        )));
    }
    // The strict reader (RFC 7468) refuses what other tools write and OpenSSL reads: base64
    // wrapped at another width than 64, indented lines. The block's base64, whitespace left
    // out, is the same key.
    let strict = SigningKey::from_pkcs8_pem(&text);
    let signing_key = match strict {
        Ok(key) => Ok(key),
        Err(e) => match pem_block_der(&text) {
            Some(der) => SigningKey::from_pkcs8_der(&der).map_err(|_| e),
            None => Err(e),
        },
    };
    let signing_key = signing_key.map_err(|e| {
        let msg = e.to_string();
        if msg.contains("OID") || msg.contains("algorithm") {
            bad(format!(
                "not an Ed25519 key ({msg}); peergate identities are Ed25519"
            ))
        } else {
            bad(format!("cannot decode the PKCS#8 key: {msg}"))
        }
    })?;
    let mut warnings = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "{} is readable by group or others (mode {mode:04o}); anyone who can read it can act as this peer: chmod 600 {}",
                    path.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(LoadedIdentity {
        identity: Identity::from_signing_key(signing_key),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9421 B.1.4 `test-key-ed25519`.
    const RFC9421_PUBLIC: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";
    const RFC9421_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

    #[test]
    fn rfc8037_thumbprint_vector() {
        // RFC 8037 A.3: x = 11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo
        let key = PublicIdentity::parse("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(key.key_id(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn rfc9421_key_vectors() {
        let key = PublicIdentity::parse(RFC9421_PUBLIC).unwrap();
        assert_eq!(
            key.raw_base64url(),
            "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
        );
        assert_eq!(key.key_id(), "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U");
        assert_eq!(
            key.peer_id(),
            "1tkrc7cdb8lyp4qb3a0fc1wlzp8356xqa8z5weekadhlpl58d0nkrvxgy8b0hs18rnjaqtasb9x6lzx4xk3ayhcgq36dqpl1q1rgjy2"
        );
        assert_eq!(key.peer_id().len(), 103);
        assert_eq!(key.short_id(), "1tkrc7");
    }

    #[test]
    fn every_public_key_form_gives_the_same_identity() {
        let spki = PublicIdentity::parse(RFC9421_PUBLIC).unwrap();
        let pem = PublicIdentity::parse(&spki.public_key_pem()).unwrap();
        let raw = PublicIdentity::parse(&spki.raw_base64url()).unwrap();
        let raw_std = PublicIdentity::parse(&STANDARD.encode(spki.raw())).unwrap();
        for other in [&pem, &raw, &raw_std] {
            assert_eq!(other.key_id(), spki.key_id());
        }
    }

    #[test]
    fn keys_are_written_as_the_rfc_8410_pkcs8_v1_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        fs::write(&path, RFC9421_PRIVATE_PEM).unwrap();
        let loaded = load_key(&path).unwrap();
        assert_eq!(loaded.identity.to_pkcs8_pem().unwrap(), RFC9421_PRIVATE_PEM);
    }

    /// What other tools write and OpenSSL reads loads too: base64 wrapped at another width,
    /// indented lines, CRLF. Two keys in one file are refused, naming the count.
    #[test]
    fn a_key_wrapped_or_indented_otherwise_loads_and_two_keys_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let b64 = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF";
        let wrapped: Vec<&str> = (0..b64.len())
            .step_by(20)
            .map(|i| &b64[i..(i + 20).min(b64.len())])
            .collect();
        let variants = [
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                wrapped.join("\n")
            ),
            format!("  -----BEGIN PRIVATE KEY-----\n  {b64}\n  -----END PRIVATE KEY-----\n"),
            format!("-----BEGIN PRIVATE KEY-----\r\n{b64}\r\n-----END PRIVATE KEY-----\r\n"),
        ];
        for text in &variants {
            fs::write(&path, text).unwrap();
            let loaded = load_key(&path).unwrap_or_else(|e| panic!("{e}: {text:?}"));
            assert_eq!(
                loaded.identity.public().key_id(),
                "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"
            );
        }
        fs::write(&path, format!("{RFC9421_PRIVATE_PEM}{RFC9421_PRIVATE_PEM}")).unwrap();
        let err = load_key(&path).err().unwrap().to_string();
        assert!(err.contains("holds 2 private keys"), "{err}");
    }

    #[test]
    fn private_key_derives_the_rfc_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        fs::write(&path, RFC9421_PRIVATE_PEM).unwrap();
        let loaded = load_key(&path).unwrap();
        assert_eq!(
            loaded.identity.public().key_id(),
            "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"
        );
    }

    #[test]
    fn bad_public_keys_are_refused_with_a_reason() {
        let cases = [
            ("not base64 at all!", "not base64"),
            ("AAAA", "decodes to 3 bytes"),
            // identity point (0,1): small order
            ("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "weak"),
            // SPKI of an X25519 key (OID 1.3.101.110)
            (
                "MCowBQYDK2VuAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=",
                "not for Ed25519",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
                "PUBLIC KEY",
            ),
        ];
        for (input, expected) in cases {
            let err = PublicIdentity::parse(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn parse_reusing_takes_only_a_key_with_the_same_bytes() {
        let a = Identity::generate().public().clone();
        let b = Identity::generate().public().clone();
        let text = a.spki_base64();
        // The known key for a's key id has a's bytes: reused, same identity.
        let same =
            PublicIdentity::parse_reusing(&text, &|kid| (kid == a.key_id()).then(|| *a.raw()))
                .unwrap();
        assert_eq!(same, a);
        // A known key with other bytes under that key id is never taken.
        let other = PublicIdentity::parse_reusing(&text, &|_| Some(*b.raw())).unwrap();
        assert_eq!(other, a);
        // Nothing known: checked in full, weak keys still refused.
        let weak =
            PublicIdentity::parse_reusing("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &|_| {
                Some(*a.raw())
            });
        assert!(weak.unwrap_err().to_string().contains("weak"));
    }

    #[test]
    fn base32_pads_the_last_group_with_zero_bits() {
        // 0xff -> 11111 111(00) -> "9" (31) then "6" (28: 11100)
        assert_eq!(base32_msb(&[0xff]), "96");
        assert_eq!(base32_msb(&[0x00, 0x00]), "aaaa");
    }
}
