//! Finds two Ed25519 keys whose short IDs collide (30 bits, so ~40 000 keys by the birthday
//! bound). The config tests use such a pair to show that a short-ID clash is refused at load;
//! this is how it was made: `cargo run --release --example find_short_id_collision`.

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use peergate::identity::PublicIdentity;

fn main() {
    let mut seen: HashMap<String, [u8; 32]> = HashMap::new();
    loop {
        let key = SigningKey::from_bytes(&rand::random());
        let public = PublicIdentity::new(key.verifying_key());
        let short = public.short_id().to_string();
        let raw = *key.verifying_key().as_bytes();
        if let Some(other) = seen.insert(short.clone(), raw) {
            let b64 =
                |b: &[u8; 32]| PublicIdentity::parse(&hex_to_b64(b)).map(|p| p.raw_base64url());
            println!("short ID {short}");
            println!("{:?}", b64(&other));
            println!("{:?}", b64(&raw));
            return;
        }
    }
}

fn hex_to_b64(bytes: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
