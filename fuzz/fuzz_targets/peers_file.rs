//! The peers-file reader (`config::peers::read_file`), through the public loading API.
//!
//! Each input becomes the text `T` of a peers file, which is loaded with a fixed configuration
//! (one inline peer, so that the checks against peers read before are reached too):
//!
//! * `config::load_with_peers_file` (peers collected into a list) and `config::load_serving`
//!   (peers collected into the gateway's table): neither may panic, on any thread, and both
//!   must give the same answer (the same error, or as many peers).
//! * When `T` is of the plain shape with at least 512 items before anything else (the fast
//!   path, `peers::fast`, takes it: cut into slices parsed on several threads), it is loaded a
//!   second time as `"---\n" + T`. An explicit document start changes nothing about what the
//!   YAML means, but it is not of the plain shape, so that copy is read as one YAML document,
//!   the general path. The two must agree: the same peers, or both an error.
//!
//! Inputs come in two forms:
//!
//! * raw: any input that does not start with the byte 0xA5 is the peers file itself.
//! * amplified: `0xA5, c, p, prefix, 0, template, 0, insert, 0, suffix`. The file is `prefix`,
//!   then `512 + c` copies of `template`, with `insert` placed before copy `2 * p`, then
//!   `suffix`. In `template` and `insert` (which takes the number of the copy it precedes),
//!   `$i` is the copy's number, `$k` the SPKI base64 of the copy's own key from a fixed pool
//!   of distinct keys, `$K` the same key as 32 raw bytes in base64url, `$s` its short ID, `$p`
//!   the key of the copy before (copy 0: the inline peer's), `$z` the inline peer's key. This
//!   is what reaches the fast path: a file of 512 items with valid, distinct keys does not
//!   come out of mutating bytes. Such a file costs some 600 key checks per load, so the table
//!   load is made only when `c` is odd.
#![no_main]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use peergate::config::{self, ConfigError, Loaded, Peer};
use peergate::identity::PublicIdentity;

/// `peers::fast::MIN_ITEMS`: files with fewer items are read as one document.
const MIN_ITEMS: usize = 512;
/// Keys in the pool: the inline peer's, then one per copy of the largest amplified file.
const POOL: usize = 1 + MIN_ITEMS + 255 + 1;
/// The first byte of an amplified input (never the first byte of UTF-8 text).
const AMPLIFIED: u8 = 0xa5;

/// RFC 9421's test key, as the instance's own identity (as in tests/config.rs).
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

struct Env {
    /// Names `peers.yaml` as its peers file, and lists the inline peer `Inline` (pool key 0).
    config: PathBuf,
    /// `peers.yaml`: `T`.
    plain: PathBuf,
    /// `prefixed.yaml`: `"---\n" + T`.
    prefixed: PathBuf,
    keys: Vec<PublicIdentity>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // Deterministic keys with distinct short IDs (like peers.rs's `big_file`), so that a
        // saved input means the same file in every run.
        let mut keys: Vec<PublicIdentity> = Vec::with_capacity(POOL);
        let mut seen = std::collections::HashSet::new();
        let mut seed = 0u64;
        while keys.len() < POOL {
            seed += 1;
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            let key = PublicIdentity::new(
                ed25519_dalek::SigningKey::from_bytes(&bytes).verifying_key(),
            );
            if seen.insert(key.short_id().to_string()) {
                keys.push(key);
            }
        }
        let dir = std::env::temp_dir().join(format!("peergate-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("id.pem");
        std::fs::write(&pem, KEY_PEM).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let plain = dir.join("peers.yaml");
        std::fs::write(&plain, "peers: []\n").unwrap();
        let config = dir.join("peergate.yaml");
        std::fs::write(
            &config,
            format!(
                "identity:\n  key_file: id.pem\n  hosts: [\"alice.example.org\"]\napp:\n  upstream: \"127.0.0.1:3000\"\n\
                 peers_file: peers.yaml\npeers:\n  - name: Inline\n    public_key: \"{}\"\n",
                keys[0].spki_base64()
            ),
        )
        .unwrap();
        // The configuration itself must load, or every input is an error for its sake.
        config::load(&config).expect("the fuzz target's own configuration loads");
        Env {
            config,
            plain,
            prefixed: dir.join("prefixed.yaml"),
            keys,
        }
    })
}

/// `template` with its placeholders filled in for copy `i`.
fn expand(template: &[u8], i: usize, keys: &[PublicIdentity], out: &mut Vec<u8>) {
    let key = |n: usize| &keys[n % keys.len()];
    let mut j = 0;
    while let Some(&b) = template.get(j) {
        if b == b'$' {
            let filled = match template.get(j + 1) {
                Some(b'i') => Some(i.to_string()),
                Some(b'k') => Some(key(1 + i).spki_base64()),
                Some(b'K') => Some(key(1 + i).raw_base64url()),
                Some(b's') => Some(key(1 + i).short_id().to_string()),
                Some(b'p') => Some(key(i).spki_base64()),
                Some(b'z') => Some(key(0).spki_base64()),
                _ => None,
            };
            if let Some(filled) = filled {
                out.extend_from_slice(filled.as_bytes());
                j += 2;
                continue;
            }
        }
        out.push(b);
        j += 1;
    }
}

/// The peers file an input stands for, and whether to load it into a table as well.
fn peers_text(data: &[u8], keys: &[PublicIdentity]) -> (Vec<u8>, bool) {
    let Some((&AMPLIFIED, rest)) = data.split_first() else {
        return (data.to_vec(), true);
    };
    let (c, p, body) = match rest {
        [c, p, body @ ..] => (*c as usize, *p as usize, body),
        _ => (0, 0, &[][..]),
    };
    let mut parts = body.splitn(4, |&b| b == 0);
    let prefix = parts.next().unwrap_or_default();
    let template = parts.next().unwrap_or_default();
    let insert = parts.next().unwrap_or_default();
    let suffix = parts.next().unwrap_or_default();
    let copies = MIN_ITEMS + c;
    let insert_at = 2 * p;
    let mut text = Vec::with_capacity(prefix.len() + copies * (template.len() + 64));
    text.extend_from_slice(prefix);
    for i in 0..=copies {
        if i == insert_at {
            expand(insert, i, keys, &mut text);
        }
        if i < copies {
            expand(template, i, keys, &mut text);
        }
    }
    text.extend_from_slice(suffix);
    (text, c % 2 == 1)
}

/// Whether `peers::fast::read` makes a sink for `text` (a copy of its `Shape` check): the
/// plain shape, as far as the first `MIN_ITEMS` items. The fast path then either loads the
/// file or gives it up, and the file is read whole.
fn fast_path_taken(text: &[u8]) -> bool {
    let mut header = false;
    let mut indent = None;
    let mut items = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            return false;
        };
        let content = line.strip_suffix('\n').unwrap_or(line);
        if content.contains(['\t', '\r', '\u{feff}']) {
            return false;
        }
        let body = content.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if !header {
            let Some(rest) = content.strip_prefix("peers:") else {
                return false;
            };
            let rest = rest.trim_start_matches(' ');
            if !(rest.is_empty() || rest.starts_with('#')) || content.len() != body.len() {
                return false;
            }
            header = true;
            continue;
        }
        let depth = content.len() - body.len();
        let item = body == "-" || body.starts_with("- ");
        match indent {
            None if item => indent = Some(depth),
            None => return false,
            Some(k) if depth > k => continue,
            Some(k) if depth == k && item => {}
            Some(_) => return false,
        }
        items += 1;
        if items >= MIN_ITEMS {
            return true;
        }
    }
    false
}

/// What a load made of the peers: name, key ids, URL and rules of each, in order.
fn summary(peers: &[Peer]) -> Vec<String> {
    peers
        .iter()
        .map(|p| {
            let keys: Vec<&str> = p.keys().map(|k| k.key_id()).collect();
            format!("{:?} {keys:?} {:?} {:?}", p.name, p.url, p.allow)
        })
        .collect()
}

fn outcome(loaded: &Result<Loaded, ConfigError>) -> Result<Vec<String>, String> {
    match loaded {
        Ok(l) => Ok(summary(&l.config.peers.0)),
        Err(e) => Err(e.to_string()),
    }
}

static RUNS: AtomicUsize = AtomicUsize::new(0);
static FAST: AtomicUsize = AtomicUsize::new(0);

fuzz_target!(|data: &[u8]| {
    let env = env();
    let (text, with_table) = peers_text(data, &env.keys);
    if text.len() > 4 << 20 {
        return;
    }
    if let Some(dump) = std::env::var_os("PEERS_FILE_DUMP") {
        std::fs::write(dump, &text).unwrap();
    }
    let fast = fast_path_taken(&text);
    let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    let fasts = FAST.fetch_add(usize::from(fast), Ordering::Relaxed) + usize::from(fast);
    if runs.is_power_of_two() {
        eprintln!("peers_file: {runs} inputs, {fasts} of them taken by the fast path");
    }

    std::fs::File::create(&env.plain)
        .and_then(|mut f| f.write_all(&text))
        .unwrap();
    let list = config::load_with_peers_file(&env.config, &env.plain);
    if with_table {
        let table = config::load_serving(&env.config, None);
        match (&list, &table) {
            (Ok(list), Ok(table)) => {
                if let Some(Ok(_)) = &table.config.peer_table {
                    assert_eq!(
                        list.config.peer_count(),
                        table.config.peer_count(),
                        "a list and a table load of one file hold different numbers of peers"
                    );
                }
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "a list and a table load fail differently"),
            _ => panic!(
                "a list and a table load of one file disagree: list {:?}, table {:?}",
                list.as_ref().map(|l| l.config.peer_count()),
                table.as_ref().map(|l| l.config.peer_count())
            ),
        }
    }

    if fast {
        let mut prefixed = b"---\n".to_vec();
        prefixed.extend_from_slice(&text);
        std::fs::write(&env.prefixed, &prefixed).unwrap();
        let whole = config::load_with_peers_file(&env.config, &env.prefixed);
        let (fast_out, whole_out) = (outcome(&list), outcome(&whole));
        match (&fast_out, &whole_out) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            _ => {
                let show = |o: &Result<Vec<String>, String>| match o {
                    Ok(peers) => format!("{} peers", peers.len()),
                    Err(e) => format!("error {e}"),
                };
                if let (Ok(a), Ok(b)) = (&fast_out, &whole_out) {
                    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
                        eprintln!("first difference at peer {i}:\n  {:?}\n  {:?}", a.get(i), b.get(i));
                    }
                }
                panic!(
                    "the fast path and the one-document path disagree on a {}-byte file: \
                     plain-shaped file {}, the same with \"---\\n\" before it {}",
                    text.len(),
                    show(&fast_out),
                    show(&whole_out)
                );
            }
        }
    }
});
