//! RFC 9421 HTTP Message Signatures (Ed25519) and RFC 9530 Content-Digest for peergate.
//!
//! The engine knows nothing of the proxy: it works on `http` request parts and body bytes,
//! so it is tested, fuzzed and benchmarked on its own. One module, one job:
//!
//! | module | job |
//! | --- | --- |
//! | [`components`] | component identifiers and their values in a message (RFC 9421 §2) |
//! | [`base`] | the signature base (§2.5) |
//! | [`input`] | `Signature-Input` / `Signature` parsing, choice, serialization (§4) |
//! | [`digest`] | `Content-Digest` (RFC 9530), incremental check |
//! | [`ed25519`] | strict Ed25519 verification without decompressing `R` |
//! | [`keypair`] | Ed25519 signing with AWS-LC, byte for byte dalek's |
//! | [`sign`] | signing requests as peergate does |
//! | [`verify`] | checking requests against the inbound policy |
//! | [`replay`] | the nonce replay cache |
//! | [`reason`] | refusal codes shared by the whole project |
//!
//! Nothing that parses message data panics: every problem is an error value.

pub mod base;
pub mod components;
pub mod digest;
pub mod ed25519;
pub mod input;
pub mod keypair;
pub mod reason;
pub mod replay;
pub mod sign;
pub mod verify;

pub use components::{
    Authority, ComponentError, ComponentId, Derived, FieldOverride, MessageView, RequestView,
    ResponseView,
};
pub use digest::{content_digest, DigestAlgorithm, DigestError, DigestVerifier};
pub use input::{InputError, SignatureEntry, SignatureFields, SignatureParams};
pub use keypair::KeyPair;
pub use reason::{Reason, Refusal};
pub use replay::{ReplayCache, ReplayError};
pub use sign::{sign_base, sign_message, SignError, SignatureHeaders, Signed, Signer};
pub use verify::{
    body_announced, verify_headers, verify_headers_authorized, verify_request, verify_signature,
    BodyCheck, Coverage, HostRule, Policy, Verified,
};
