//! Checking a signed request against peergate's policy (DESIGN.md, "What the inbound side
//! accepts"), cheap checks first, every failure a distinct [`Reason`] with a detail a person
//! can act on.
//!
//! The check is split in two because the proxy decides on the headers before it reads a body
//! of up to `max_body`: [`verify_headers`] checks everything but the body and returns
//! [`Verified`]; [`Verified::body_checker`] then hashes the body as it streams and
//! [`BodyCheck::finish`] compares it with the signed `Content-Digest`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::borrow::Borrow;
use std::fmt;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;
use sfv::{DictSerializer, KeyRef, StringRef};

use crate::base::{base_of_distinct, check_duplicates};
use crate::components::{
    echo, trim_ows, Authority, AuthorityError, ComponentError, ComponentId, ComponentKind, Derived,
    MessageView, RequestView,
};
use crate::digest::DigestVerifier;
use crate::input::{
    joined_field, signature_params_value, InputError, SignatureEntry, SignatureFields,
    SignatureParams,
};
use crate::reason::{Reason, Refusal};
use crate::replay::{ReplayCache, ReplayError};
use crate::sign::{ALG, CONTENT_DIGEST, CONTENT_DIGEST_NAME, LABEL, TAG};

/// One entry of `identity.hosts`: a host, with or without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: String,
    port: Option<u16>,
}

impl HostRule {
    /// `"alice.example.org"` matches that host on any port; `"alice.example.org:8443"` only on
    /// port 8443 (explicit, or the scheme's default). Hosts compare case-insensitively.
    pub fn parse(text: &str) -> Result<HostRule, AuthorityError> {
        let a = Authority::parse(text)?;
        Ok(HostRule {
            host: a.host,
            port: a.port,
        })
    }

    /// The lowercase host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when the rule is limited to one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether a request for `authority` over `scheme` is for this host. An IPv6 literal is the
    /// same host however it is written (`[::1]`, `[0:0:0:0:0:0:0:1]`).
    pub fn matches(&self, authority: &Authority, scheme: &str) -> bool {
        let ipv6 = |host: &str| {
            host.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
        };
        let same_host = authority.host == self.host
            || ipv6(&self.host).is_some_and(|rule| ipv6(&authority.host) == Some(rule));
        same_host
            && match self.port {
                None => true,
                Some(p) => authority.effective_port(scheme) == Some(p),
            }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// What the inbound side accepts (`signatures:` and `identity.hosts` of the configuration).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Oldest acceptable `created`, relative to now.
    pub max_age: Duration,
    /// How far `created` may lie in the future.
    pub clock_skew: Duration,
    /// Refuse signatures without a `nonce`.
    pub require_nonce: bool,
    /// The hosts requests must be signed for (`@authority`). Empty: every request is refused.
    pub hosts: Vec<HostRule>,
    /// The `tag` that picks our signature among several (`None`: exactly one signature).
    pub tag: Option<String>,
}

impl Default for Policy {
    /// DESIGN.md defaults: `max_age` 300 s, `clock_skew` 30 s, nonce required, tag
    /// `peergate`, and no hosts (configure them: without any, everything is refused).
    fn default() -> Self {
        Policy {
            max_age: Duration::from_secs(300),
            clock_skew: Duration::from_secs(30),
            require_nonce: true,
            hosts: Vec::new(),
            tag: Some(TAG.to_owned()),
        }
    }
}

impl Policy {
    /// The `Accept-Signature` value (RFC 9421 §5.1) for 401 answers, e.g.
    /// `peer=("@method" "@authority" "@path" "@query" "content-digest");created;expires;nonce;alg="ed25519";tag="peergate"`.
    pub fn accept_signature(&self) -> String {
        self.accept_signature_covering(true)
    }

    /// [`accept_signature`](Self::accept_signature) for a request without a body: no
    /// `content-digest`, which such a request need not cover.
    pub fn accept_signature_without_body(&self) -> String {
        self.accept_signature_covering(false)
    }

    fn accept_signature_covering(&self, digest: bool) -> String {
        let mut ser = DictSerializer::new();
        {
            let mut inner = ser.inner_list(sfv::key_ref(LABEL));
            for name in ["@method", "@authority", "@path", "@query"] {
                let _ = inner.bare_item(sfv::string_ref(name));
            }
            if digest {
                let _ = inner.bare_item(sfv::string_ref(CONTENT_DIGEST));
            }
            let mut params = inner
                .finish()
                .parameter(sfv::key_ref("created"), true)
                .parameter(sfv::key_ref("expires"), true);
            if self.require_nonce {
                params = params.parameter(sfv::key_ref("nonce"), true);
            }
            params = params.parameter(sfv::key_ref("alg"), sfv::string_ref(ALG));
            if let Some(tag) = self.tag.as_deref() {
                if let (Ok(k), Ok(v)) = (KeyRef::from_str("tag"), StringRef::from_str(tag)) {
                    params = params.parameter(k, v);
                }
            }
            let _ = params.finish();
        }
        ser.finish().unwrap_or_default()
    }

    /// Whether `authority` (requested over `scheme`) is one of our hosts.
    pub fn allows_authority(&self, authority: &Authority, scheme: &str) -> bool {
        self.hosts.iter().any(|h| h.matches(authority, scheme))
    }
}

/// Which components a signature must cover, beyond what it chooses to.
///
/// [`verify_headers`] uses [`Coverage::REQUIRED`], the DESIGN.md rule. Relaxing it is for
/// checking other implementations' examples (RFC 9421 B.2.6 covers neither `@query` nor
/// `content-digest`), never for the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// `@method`, and `@target-uri` or all of `@authority`, `@path`, `@query`.
    pub method_and_target: bool,
    /// `content-digest` when the headers announce a body.
    pub digest_with_body: bool,
}

impl Coverage {
    /// What DESIGN.md requires.
    pub const REQUIRED: Coverage = Coverage {
        method_and_target: true,
        digest_with_body: true,
    };
    /// Nothing beyond what the signature covers.
    pub const NONE: Coverage = Coverage {
        method_and_target: false,
        digest_with_body: false,
    };
}

impl Default for Coverage {
    fn default() -> Self {
        Coverage::REQUIRED
    }
}

/// A request whose headers passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The `keyid` that signed.
    pub key_id: String,
    /// The label of the checked signature.
    pub label: String,
    /// `created` (unix seconds).
    pub created: u64,
    /// `expires`, if given.
    pub expires: Option<u64>,
    /// `nonce`, if given.
    pub nonce: Option<String>,
    /// `tag`, if given.
    pub tag: Option<String>,
    /// Whether the signature covers `content-digest` (then the body is checked against it).
    pub covers_digest: bool,
    digest: Option<DigestVerifier>,
}

impl Verified {
    /// A checker for the body: feed it every chunk, then call [`BodyCheck::finish`].
    pub fn body_checker(&self) -> BodyCheck {
        BodyCheck {
            digest: self.digest.clone(),
            saw_body: false,
        }
    }
}

/// Checks the body of a verified request as it streams.
///
/// With `content-digest` covered, the body is hashed and compared with the signed
/// `Content-Digest` ([`Reason::DigestMismatch`]). Without, any body byte at all is refused
/// ([`Reason::MissingComponent`]): an unsigned body must not reach the app (HTTP/2 can carry
/// one without announcing it in the headers).
#[derive(Debug, Clone)]
pub struct BodyCheck {
    digest: Option<DigestVerifier>,
    saw_body: bool,
}

fn unsigned_body() -> Refusal {
    Refusal::new(
        Reason::MissingComponent,
        "the request has a body but the signature does not cover content-digest; \
         add a Content-Digest field and cover it",
    )
}

impl BodyCheck {
    /// Feeds the next body chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.saw_body = true;
        if let Some(d) = self.digest.as_mut() {
            d.update(chunk);
        }
    }

    /// A refusal known before the end of the body: body bytes arrived and the signature
    /// covers no digest. Lets the proxy stop reading early.
    pub fn refused(&self) -> Option<Refusal> {
        (self.saw_body && self.digest.is_none()).then(unsigned_body)
    }

    /// The verdict after the last chunk.
    pub fn finish(self) -> Result<(), Refusal> {
        match self.digest {
            Some(d) => d
                .finish()
                .map_err(|e| Refusal::new(Reason::DigestMismatch, e.to_string())),
            None if self.saw_body => Err(unsigned_body()),
            None => Ok(()),
        }
    }
}

/// Whether the headers announce a body: `Content-Length` other than 0, or any
/// `Transfer-Encoding`. A `Content-Length` that is not a number counts as a body.
pub fn body_announced(headers: &HeaderMap) -> bool {
    announced_by(headers).is_some()
}

/// The field that announces a body, for a refusal's words: a `Transfer-Encoding` announces
/// one even when it turns out empty, as the length is not known until it ends.
fn announced_by(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(TRANSFER_ENCODING) {
        Some("Transfer-Encoding")
    } else if headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .any(|v| trim_ows(v.as_bytes()) != b"0")
    {
        Some("Content-Length above 0")
    } else {
        None
    }
}

fn input_refusal(e: InputError) -> Refusal {
    match e {
        InputError::Absent => Refusal::new(Reason::MissingSignature, e.to_string()),
        InputError::Malformed(m) => Refusal::new(Reason::MalformedSignature, m),
    }
}

fn component_refusal(e: ComponentError) -> Refusal {
    let reason = match e {
        ComponentError::Missing { .. } => Reason::MissingComponent,
        ComponentError::InvalidIdentifier { .. }
        | ComponentError::InvalidValue { .. }
        | ComponentError::Duplicate { .. }
        | ComponentError::TooLarge { .. } => Reason::MalformedSignature,
    };
    Refusal::new(reason, e.to_string())
}

/// Builds the base of `entry` over `msg` and checks the Ed25519 signature strictly
/// ([`crate::ed25519::verify`]; no policy: coverage, freshness, host and replay are the caller's).
///
/// Refusals: malformed identifiers or signature length ([`Reason::MalformedSignature`]), a
/// covered component missing from the message ([`Reason::MissingComponent`]), a signature
/// that does not verify ([`Reason::BadSignature`]).
pub fn verify_signature(
    msg: MessageView<'_>,
    entry: &SignatureEntry,
    key: &VerifyingKey,
) -> Result<(), Refusal> {
    let components = entry.components().map_err(component_refusal)?;
    check_duplicates(components).map_err(component_refusal)?;
    let signature = entry.ed25519_signature().map_err(input_refusal)?;
    let params_value = signature_params_value(components, entry.params());
    check_base_signature(
        msg,
        components,
        &params_value,
        key,
        &signature,
        entry.label(),
        entry.params(),
    )
}

/// `components` must have passed [`check_duplicates`].
fn check_base_signature(
    msg: MessageView<'_>,
    components: &[ComponentId],
    params_value: &str,
    key: &VerifyingKey,
    signature: &ed25519_dalek::Signature,
    label: &str,
    params: &SignatureParams,
) -> Result<(), Refusal> {
    let base = base_of_distinct(msg, components, params_value, &[]).map_err(component_refusal)?;
    if crate::ed25519::verify(key, &base, signature) {
        return Ok(());
    }
    Err(Refusal::new(
        Reason::BadSignature,
        format!(
            "signature {} does not verify with key {}: the covered components or \
             parameters differ from what was signed, or another key signed{}",
            echo(label),
            echo(params.keyid().ok().flatten().unwrap_or_default()),
            derived_lines(&base)
        ),
    ))
}

/// The derived components of a base that did not verify, as this side read them: where a
/// signer and a verifier most often disagree (the scheme peers use, a port in `@authority`, a
/// path a proxy rewrote), so the signer can compare them with its own base. Each is cut to
/// 100 bytes, at most six; field values are left out (the signer sent them).
fn derived_lines(base: &[u8]) -> String {
    const MAX_LINES: usize = 6;
    const MAX_VALUE: usize = 100;
    let mut out = String::new();
    let lines = base
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"\"@") && !l.starts_with(b"\"@signature-params\""));
    for line in lines.take(MAX_LINES) {
        let text = String::from_utf8_lossy(line);
        let cut = match text.char_indices().nth(MAX_VALUE) {
            Some((at, _)) => format!("{}…", text.get(..at).unwrap_or_default()),
            None => text.into_owned(),
        };
        out.push_str(if out.is_empty() {
            "; this gateway read "
        } else {
            ", "
        });
        out.push_str(&cut);
    }
    out
}

/// What is missing from `components` under `coverage`, as words for the detail.
fn missing_coverage(
    components: &[ComponentId],
    coverage: Coverage,
    announced_body: Option<&str>,
) -> Option<String> {
    if coverage.method_and_target {
        let has = |d: Derived| components.iter().any(|c| c.is_plain_derived(d));
        if !has(Derived::Method) {
            return Some("Signature-Input does not cover @method".to_owned());
        }
        // @request-target is the path and the query as the request line has them (origin
        // form), so with @authority it binds what @path and @query do.
        let whole_target =
            has(Derived::TargetUri) || has(Derived::Authority) && has(Derived::RequestTarget);
        if !whole_target {
            let missing: Vec<&str> = [Derived::Authority, Derived::Path, Derived::Query]
                .into_iter()
                .filter(|d| !has(*d))
                .filter(|d| *d == Derived::Authority || !has(Derived::RequestTarget))
                .map(Derived::name)
                .collect();
            if !missing.is_empty() {
                return Some(format!(
                    "Signature-Input covers neither @target-uri nor all of @authority, @path \
                     and @query (or @authority and @request-target) (missing: {})",
                    missing.join(", ")
                ));
            }
        }
    }
    if coverage.digest_with_body && announced_body.is_some() && !covers_digest(components) {
        let partly = components
            .iter()
            .any(|c| c.kind() == ComponentKind::Field && c.name() == CONTENT_DIGEST);
        return Some(format!(
            "Signature-Input covers no content-digest{} but the request announces a body ({}); \
             cover \"content-digest\", the whole field",
            if partly {
                " as a whole (only with key= or req)"
            } else {
                ""
            },
            announced_body.unwrap_or_default()
        ));
    }
    None
}

/// A `content-digest` identifier that binds the whole field: no `key` (one member only) and
/// no `req`.
fn covers_digest(components: &[ComponentId]) -> bool {
    components.iter().any(|c| {
        c.kind() == ComponentKind::Field
            && c.name() == CONTENT_DIGEST
            && c.key().is_none()
            && !c.is_req()
    })
}

/// Checks the headers of a signed request against `policy` (DESIGN.md's table), with the
/// coverage DESIGN.md requires. See [`verify_request`].
///
/// `lookup` maps a `keyid` to its key, as a reference or by value: an allowlist too large to
/// keep every key decompressed hands out keys it decompresses on demand.
pub fn verify_headers<K: Borrow<VerifyingKey>>(
    req: &RequestView<'_>,
    policy: &Policy,
    lookup: impl Fn(&str) -> Option<K>,
    replay: &ReplayCache,
    now: u64,
) -> Result<Verified, Refusal> {
    verify_request(req, policy, Coverage::REQUIRED, lookup, replay, now)
}

/// [`verify_headers`], with the caller's authorization of the verified key id run after the
/// signature verifies and before the nonce is recorded. A request the caller refuses (a peer
/// narrowed to some paths, asking for another) then takes no room in `replay`: the replay
/// cache is shared by every key, and a peer could otherwise fill it, and have every other
/// peer refused (`replay_cache_full`), with requests that never reach the app.
pub fn verify_headers_authorized<K: Borrow<VerifyingKey>>(
    req: &RequestView<'_>,
    policy: &Policy,
    lookup: impl Fn(&str) -> Option<K>,
    authorize: impl FnOnce(&str) -> Result<(), Refusal>,
    replay: &ReplayCache,
    now: u64,
) -> Result<Verified, Refusal> {
    verify_checked(
        req,
        policy,
        Coverage::REQUIRED,
        lookup,
        authorize,
        replay,
        now,
    )
}

/// Checks the headers of a signed request, cheap checks first:
///
/// 1. `Signature-Input` / `Signature` present (`missing_signature`), parsable, labels
///    matching, one signature chosen (by tag, else the only one, else the only one whose
///    `keyid` `lookup` knows), identifiers and parameter types valid, 64-byte signature
///    (`malformed_signature`);
/// 2. `keyid` present and known to `lookup` (`unknown_key`);
/// 3. `alg`, if present, is `ed25519` (`unsupported_alg`);
/// 4. required components covered (`missing_component`);
/// 5. `created` present and within `max_age` / `clock_skew`, `expires` not passed
///    (`expired` / `not_yet_valid`);
/// 6. a nonce when the policy requires one (`replayed`);
/// 7. `@authority` one of `policy.hosts` (`wrong_authority`);
/// 8. the signature base built (`missing_component` when a covered component is absent) and
///    the Ed25519 signature verified strictly (`bad_signature`);
/// 9. a covered `Content-Digest` usable (`digest_mismatch`);
/// 10. the nonce recorded in `replay` until `min(created + max_age, expires)`, inclusive: the
///     last second at which step 5 accepts the signature, so every replay that would pass step
///     5 is refused (`replayed`, `replay_cache_full`). No `clock_skew` margin is added: it
///     only guarded against this gateway's own clock stepping backwards, which the replay
///     cache does not defend against (see [`crate::replay`]), and cost a third more entries.
///     A signature made before the cache began (`ReplayCache::remembering_since`: a gateway's
///     start) is refused `replayed` here, since its nonce may have been taken before; so is
///     one made before a raise of `max_age` and older than the age its nonce may have been
///     remembered for (`ReplayCache::note_max_age`).
pub fn verify_request<K: Borrow<VerifyingKey>>(
    req: &RequestView<'_>,
    policy: &Policy,
    coverage: Coverage,
    lookup: impl Fn(&str) -> Option<K>,
    replay: &ReplayCache,
    now: u64,
) -> Result<Verified, Refusal> {
    verify_checked(req, policy, coverage, lookup, |_| Ok(()), replay, now)
}

/// The signature to check, and its key when choosing it took a look-up.
///
/// The one tagged with the policy's tag, else the only one. Of several with none tagged so
/// (a signer's plus a proxy's or a CDN's, RFC 9421 §4.3; most libraries sign untagged), the
/// one whose `keyid` is an allowlisted key: the others are not ours to check, and RFC 9421
/// leaves the choice to the verifier. Several such are refused: which peer is calling would
/// be a guess.
fn choose_signature<K>(
    fields: SignatureFields,
    tag: Option<&str>,
    lookup: &impl Fn(&str) -> Option<K>,
) -> Result<(SignatureEntry, Option<K>), Refusal> {
    if let Some(pos) = fields.chosen(tag).map_err(input_refusal)? {
        return Ok((fields.into_entry(pos).map_err(input_refusal)?, None));
    }
    let n = fields.entries().len();
    let untagged = match tag {
        Some(t) => format!(" and none has tag=\"{}\"", echo(t)),
        None => String::new(),
    };
    let mut known = fields.entries().iter().enumerate().filter_map(|(pos, e)| {
        let key_id = e.params().keyid().ok().flatten()?;
        lookup(key_id).map(|key| (pos, key))
    });
    match (known.next(), known.next()) {
        (Some((pos, key)), None) => {
            drop(known);
            Ok((fields.into_entry(pos).map_err(input_refusal)?, Some(key)))
        }
        (None, _) => Err(Refusal::new(
            Reason::UnknownKey,
            format!(
                "the request carries {n} signatures{untagged}, and no keyid among them is a \
                 key of an allowlisted peer"
            ),
        )),
        (Some(_), Some(_)) => Err(Refusal::new(
            Reason::MalformedSignature,
            format!(
                "the request carries {n} signatures{untagged}, and more than one keyid among \
                 them is an allowlisted key; cannot tell which one to check: send one{}",
                match tag {
                    Some(t) => format!(", or tag it tag=\"{}\"", echo(t)),
                    None => String::new(),
                }
            ),
        )),
    }
}

/// [`verify_request`] with `authorize` between steps 9 and 10.
fn verify_checked<K: Borrow<VerifyingKey>>(
    req: &RequestView<'_>,
    policy: &Policy,
    coverage: Coverage,
    lookup: impl Fn(&str) -> Option<K>,
    authorize: impl FnOnce(&str) -> Result<(), Refusal>,
    replay: &ReplayCache,
    now: u64,
) -> Result<Verified, Refusal> {
    // 1. Structure.
    let fields = SignatureFields::from_headers(req.headers).map_err(input_refusal)?;
    let (entry, found) = choose_signature(fields, policy.tag.as_deref(), &lookup)?;
    let signature = entry.ed25519_signature().map_err(input_refusal)?;
    let (label, components, params, _) = entry.into_parts();
    let components = components.map_err(component_refusal)?;
    check_duplicates(&components).map_err(component_refusal)?;
    let created = params.created().map_err(input_refusal)?;
    let expires = params.expires().map_err(input_refusal)?;
    let nonce = params.nonce().map_err(input_refusal)?;
    let key_id = params.keyid().map_err(input_refusal)?;
    let alg = params.alg().map_err(input_refusal)?;
    let tag = params.tag().map_err(input_refusal)?;

    // 2. Key.
    let Some(key_id) = key_id else {
        return Err(Refusal::new(
            Reason::UnknownKey,
            "the signature has no keyid parameter; add keyid=\"<your key id>\"",
        ));
    };
    let Some(key) = found.or_else(|| lookup(key_id)) else {
        return Err(Refusal::new(
            Reason::UnknownKey,
            format!(
                "keyid \"{}\" is not a key of any allowlisted peer (a key id is the RFC 7638 \
                 JWK thumbprint of the key, as `peergate id` prints it)",
                echo(key_id)
            ),
        ));
    };

    // 3. Algorithm: the key is Ed25519, so a stated alg must say so (§3.2 step 6).
    if let Some(alg) = alg {
        if alg != ALG {
            return Err(Refusal::new(
                Reason::UnsupportedAlg,
                format!(
                    "alg \"{}\" is not supported; sign with Ed25519 and alg=\"ed25519\" (or no alg)",
                    echo(alg)
                ),
            ));
        }
    }

    // 4. Coverage.
    if let Some(detail) = missing_coverage(&components, coverage, announced_by(req.headers)) {
        return Err(Refusal::new(Reason::MissingComponent, detail));
    }

    // 5. Freshness.
    let Some(created) = created else {
        return Err(Refusal::new(
            Reason::Expired,
            "signature has no created parameter; add created=<unix seconds>",
        ));
    };
    let skew = policy.clock_skew.as_secs();
    let max_age = policy.max_age.as_secs();
    if created > now.saturating_add(skew) {
        return Err(Refusal::new(
            Reason::NotYetValid,
            format!(
                "signature created {} s in the future (allowed clock skew: {skew} s); check the \
                 signer's clock",
                created - now
            ),
        ));
    }
    if now.saturating_sub(created) > max_age {
        return Err(Refusal::new(
            Reason::Expired,
            format!(
                "signature created {} s ago; this gateway accepts signatures up to {max_age} s \
                 old",
                now - created
            ),
        ));
    }
    if let Some(expires) = expires {
        // Valid at no moment; refused whatever the clock says, rather than accepted while
        // `now` is in the skew window between the two.
        if expires < created {
            return Err(Refusal::new(
                Reason::Expired,
                format!("signature expires ({expires}) before it was created ({created})"),
            ));
        }
        if now > expires {
            return Err(Refusal::new(
                Reason::Expired,
                format!("signature expired {} s ago", now - expires),
            ));
        }
    }

    // 6. Nonce presence (the cache is consulted only once the signature is known good).
    if policy.require_nonce && nonce.is_none_or(str::is_empty) {
        // An empty nonce is no nonce: a signer that sends one does not make its signatures
        // unique.
        return Err(Refusal::new(
            Reason::Replayed,
            "signature has no nonce (or an empty one); this gateway requires one",
        ));
    }

    // 7. Authority.
    let authority = Authority::of_request(req).map_err(|e| match e {
        AuthorityError::Missing => Refusal::new(Reason::MissingComponent, e.to_string()),
        AuthorityError::Invalid(why) => Refusal::new(Reason::WrongAuthority, why),
    })?;
    if !policy.allows_authority(&authority, req.scheme) {
        return Err(Refusal::new(
            Reason::WrongAuthority,
            format!(
                "the request is for {}, which is not a host of this gateway; sign requests for \
                 the host you send them to",
                echo(&authority.to_component(req.scheme))
            ),
        ));
    }

    // 8. Signature.
    let params_value = signature_params_value(&components, &params);
    check_base_signature(
        MessageView::Request(req),
        &components,
        &params_value,
        key.borrow(),
        &signature,
        &label,
        &params,
    )?;

    // 9. The signed Content-Digest, ready for the body.
    let covers_digest = covers_digest(&components);
    let digest = if covers_digest {
        let field = joined_field(req.headers, &CONTENT_DIGEST_NAME).ok_or_else(|| {
            Refusal::new(
                Reason::MissingComponent,
                "the signature covers content-digest but the request has no Content-Digest",
            )
        })?;
        let text = std::str::from_utf8(&field).map_err(|_| {
            Refusal::new(
                Reason::DigestMismatch,
                "the Content-Digest field is not ASCII; send an RFC 9530 dictionary",
            )
        })?;
        Some(
            DigestVerifier::from_field(text)
                .map_err(|e| Refusal::new(Reason::DigestMismatch, e.to_string()))?,
        )
    } else {
        None
    };

    // The caller's own refusal (the route, the peer's `allow`), before the nonce takes room.
    authorize(key_id)?;

    // 10. Replay. Step 5 accepted `now <= created + max_age` and `now <= expires`: past this
    // second the signature is refused as expired, so remembering the nonce longer protects
    // nothing (unless the clock steps back; see the module docs of `replay`).
    if let Some(nonce) = nonce {
        // Made before this cache began (a restart): its nonce may have been used with the
        // process before, which took the memory of it along.
        if let Some(since) = replay.remembers_since().filter(|&since| created < since) {
            return Err(Refusal::new(
                Reason::Replayed,
                format!(
                    "signature created {} s before this gateway started; a nonce used before \
                     then cannot be checked, so such signatures are refused: sign the request \
                     again",
                    since - created
                ),
            ));
        }
        // Made before a reload raised `max_age`, and older than the age its nonce may have
        // been remembered for: a replay would no longer be seen.
        if let Some(age) = replay
            .remembered_for(created)
            .filter(|&age| now.saturating_sub(created) > age)
        {
            return Err(Refusal::new(
                Reason::Replayed,
                format!(
                    "signature created {} s ago, before signatures.max_age was raised (or within \
                     clock_skew after, which a signer whose clock is ahead could claim); a nonce \
                     used before then was remembered for {age} s only, so such signatures are \
                     refused after that: sign the request again",
                    now.saturating_sub(created)
                ),
            ));
        }
        let fresh_until = created
            .saturating_add(max_age)
            .min(expires.unwrap_or(u64::MAX));
        replay
            .check_and_insert(key_id, nonce, fresh_until, now)
            .map_err(|e| match e {
                ReplayError::Replayed => Refusal::new(
                    Reason::Replayed,
                    "this nonce was already used by a signature of this key; sign every \
                     request with a fresh nonce",
                ),
                ReplayError::Full => Refusal::new(
                    Reason::ReplayCacheFull,
                    "the replay cache is full of live nonces; retry in a few seconds",
                ),
            })?;
    }

    Ok(Verified {
        key_id: key_id.to_owned(),
        label,
        created,
        expires,
        nonce: nonce.map(str::to_owned),
        tag: tag.map(str::to_owned),
        covers_digest,
        digest,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_signature_value() {
        let p = Policy::default();
        assert_eq!(
            p.accept_signature(),
            r#"peer=("@method" "@authority" "@path" "@query" "content-digest");created;expires;nonce;alg="ed25519";tag="peergate""#
        );
        let p = Policy {
            require_nonce: false,
            tag: None,
            ..Policy::default()
        };
        assert_eq!(
            p.accept_signature(),
            r#"peer=("@method" "@authority" "@path" "@query" "content-digest");created;expires;alg="ed25519""#
        );
    }

    #[test]
    fn host_rules() {
        let any = HostRule::parse("Alice.Example.org").unwrap();
        let port = HostRule::parse("alice.example.org:8443").unwrap();
        let https443 = HostRule::parse("alice.example.org:443").unwrap();
        let a = |s: &str| Authority::parse(s).unwrap();
        assert!(any.matches(&a("alice.example.org"), "https"));
        assert!(any.matches(&a("ALICE.example.org:9999"), "https"));
        assert!(!any.matches(&a("bob.example.org"), "https"));
        assert!(port.matches(&a("alice.example.org:8443"), "https"));
        assert!(!port.matches(&a("alice.example.org"), "https"));
        assert!(!port.matches(&a("alice.example.org:8444"), "https"));
        assert!(https443.matches(&a("alice.example.org"), "https"));
        assert!(!https443.matches(&a("alice.example.org"), "http"));
        assert_eq!(port.to_string(), "alice.example.org:8443");
        assert!(HostRule::parse("a b").is_err());
        let v6 = HostRule::parse("[::1]:8443").unwrap();
        for same in ["[0:0:0:0:0:0:0:1]:8443", "[0::1]:8443", "[::0001]:8443"] {
            let a = Authority::parse(same).unwrap();
            assert!(v6.matches(&a, "https"), "{same}");
        }
        for other in [
            "[::2]:8443",
            "[::1]:443",
            "localhost:8443",
            "[::1%25lo]:8443",
        ] {
            if let Ok(a) = Authority::parse(other) {
                assert!(!v6.matches(&a, "https"), "{other}");
            }
        }
    }

    #[test]
    fn body_announcement() {
        let mut h = HeaderMap::new();
        assert!(!body_announced(&h));
        h.insert(CONTENT_LENGTH, "0".parse().unwrap());
        assert!(!body_announced(&h));
        h.insert(CONTENT_LENGTH, "12".parse().unwrap());
        assert!(body_announced(&h));
        h.insert(CONTENT_LENGTH, "x".parse().unwrap());
        assert!(body_announced(&h));
        h.remove(CONTENT_LENGTH);
        h.insert(TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(body_announced(&h));
    }
}
