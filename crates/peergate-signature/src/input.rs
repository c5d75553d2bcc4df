//! The `Signature-Input` and `Signature` fields (RFC 9421 §4): parsing, choosing the signature
//! to check, typed access to signature parameters, and serialization for signing.
//!
//! Both fields are structured-field Dictionaries keyed by *label*. `Signature-Input` maps a
//! label to an inner list of component identifiers with the signature parameters; `Signature`
//! maps the same label to the signature bytes. A label present in one field and not in the
//! other makes both unusable: the request is malformed.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use sfv::visitor::{
    DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ParameterVisitor,
};
use sfv::{BareItem, BareItemFromInput, Integer, Key, KeyRef, Parser, RefBareItem, StringRef};

use crate::base::serialize_components;
use crate::components::{echo, ComponentError, ComponentId};

/// Field name of `Signature-Input`.
pub const SIGNATURE_INPUT: &str = "signature-input";
/// Field name of `Signature`.
pub const SIGNATURE: &str = "signature";

/// The two names as [`HeaderName`]s, for lookups on every verified request: a lookup by
/// `&str` validates and lowercases the name first, each time.
static SIGNATURE_INPUT_NAME: HeaderName = HeaderName::from_static(SIGNATURE_INPUT);
static SIGNATURE_NAME: HeaderName = HeaderName::from_static(SIGNATURE);

/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// Most signatures (labels) one `Signature-Input` or `Signature` field may hold.
///
/// These limits keep the work a request can cause before its signature is checked in
/// proportion to what it is for: labels, components and parameters are looked up among
/// their earlier siblings, and a field of a megabyte listing tens of thousands of them would
/// otherwise cost seconds. Real messages carry a few of each.
pub const MAX_SIGNATURES: usize = 16;
/// Most component identifiers one signature may cover.
pub const MAX_COMPONENTS: usize = 64;
/// Most parameters one signature, or one component identifier, may carry.
pub const MAX_PARAMETERS: usize = 16;

/// Why the signature fields cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Neither `Signature-Input` nor `Signature` is present.
    #[error("the request has no Signature-Input and no Signature field; sign it (RFC 9421)")]
    Absent,
    /// The fields are present but unusable; the text says why, for a person to act on.
    #[error("{0}")]
    Malformed(String),
}

fn malformed(s: impl Into<String>) -> InputError {
    InputError::Malformed(s.into())
}

/// `field` (`Signature-Input` or `Signature`) lists past [`MAX_SIGNATURES`].
fn too_many_signatures(field: &str) -> InputError {
    malformed(format!(
        "{field} lists more than {MAX_SIGNATURES} signatures; peergate reads at most \
         {MAX_SIGNATURES}"
    ))
}

/// The parameters of one signature (`created`, `expires`, `nonce`, `alg`, `keyid`, `tag`
/// and any others), in the order received or built.
///
/// The typed accessors refuse a parameter of the wrong type rather than ignoring it. A
/// parameter given twice keeps its first place and its last value (RFC 8941 §4.2.3.2).
/// Stored as a short list: signatures carry a handful of parameters, and a scan is cheaper
/// than hashing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignatureParams {
    params: Vec<(ParamKey, BareItem)>,
}

/// A parameter name: the six RFC 9421 defines are static, others are kept as received. Every
/// verified request carries most of the six, and owning their names would allocate each one.
#[derive(Debug, Clone, PartialEq)]
enum ParamKey {
    Defined(&'static KeyRef),
    Other(Key),
}

/// RFC 9421 §2.3's signature parameters.
const DEFINED_PARAMS: [&KeyRef; 6] = [
    sfv::key_ref("created"),
    sfv::key_ref("expires"),
    sfv::key_ref("nonce"),
    sfv::key_ref("alg"),
    sfv::key_ref("keyid"),
    sfv::key_ref("tag"),
];

impl ParamKey {
    fn of(key: &KeyRef) -> ParamKey {
        match DEFINED_PARAMS.iter().find(|d| **d == key) {
            Some(defined) => ParamKey::Defined(defined),
            None => ParamKey::Other(key.to_owned()),
        }
    }

    fn as_ref(&self) -> &KeyRef {
        match self {
            ParamKey::Defined(k) => k,
            ParamKey::Other(k) => k,
        }
    }

    fn as_str(&self) -> &str {
        self.as_ref().as_str()
    }
}

impl SignatureParams {
    /// No parameters.
    pub fn new() -> Self {
        SignatureParams::default()
    }

    /// The parameters, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&KeyRef, &BareItem)> {
        self.params.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// A parameter by name.
    pub fn get(&self, key: &str) -> Option<&BareItem> {
        self.params
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    fn timestamp(&self, key: &str) -> Result<Option<u64>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(BareItem::Integer(i)) => u64::try_from(i64::from(*i))
                .map(Some)
                .map_err(|_| malformed(format!("the {key} parameter must not be negative"))),
            Some(_) => Err(malformed(format!(
                "the {key} parameter must be an integer (unix seconds)"
            ))),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&str>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(BareItem::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(malformed(format!(
                "the {key} parameter must be a quoted string"
            ))),
        }
    }

    /// `created`: unix seconds; an error when it is not a non-negative integer.
    pub fn created(&self) -> Result<Option<u64>, InputError> {
        self.timestamp("created")
    }

    /// `expires`: unix seconds; an error when it is not a non-negative integer.
    pub fn expires(&self) -> Result<Option<u64>, InputError> {
        self.timestamp("expires")
    }

    /// `nonce`; an error when it is not a string.
    pub fn nonce(&self) -> Result<Option<&str>, InputError> {
        self.string("nonce")
    }

    /// `alg`; an error when it is not a string.
    pub fn alg(&self) -> Result<Option<&str>, InputError> {
        self.string("alg")
    }

    /// `keyid`; an error when it is not a string.
    pub fn keyid(&self) -> Result<Option<&str>, InputError> {
        self.string("keyid")
    }

    /// `tag`; an error when it is not a string.
    pub fn tag(&self) -> Result<Option<&str>, InputError> {
        self.string("tag")
    }

    /// Sets a parameter: appended, or its value replaced in place if it is already there.
    fn set(&mut self, key: &KeyRef, value: BareItem) {
        match self
            .params
            .iter_mut()
            .find(|(k, _)| k.as_str() == key.as_str())
        {
            Some(slot) => slot.1 = value,
            None => self.params.push((ParamKey::of(key), value)),
        }
    }

    /// Appends (or replaces, keeping its place) a parameter.
    pub fn push(&mut self, key: &str, value: BareItem) -> Result<(), InputError> {
        let key = KeyRef::from_str(key)
            .map_err(|e| malformed(format!("invalid parameter name {}: {e}", echo(key))))?;
        self.set(key, value);
        Ok(())
    }

    /// Appends an integer parameter (`created`, `expires`).
    pub fn push_integer(&mut self, key: &str, value: u64) -> Result<(), InputError> {
        self.push(key, BareItem::Integer(sf_integer(key, value)?))
    }

    /// Appends a string parameter (`nonce`, `keyid`, `alg`, `tag`).
    pub fn push_string(&mut self, key: &str, value: &str) -> Result<(), InputError> {
        self.push(key, BareItem::String(sf_string(key, value)?.to_owned()))
    }
}

/// `value` as the structured-field Integer of parameter `key`.
pub(crate) fn sf_integer(key: &str, value: u64) -> Result<Integer, InputError> {
    Integer::try_from(value).map_err(|_| malformed(format!("{key}={value} is out of range")))
}

/// `value` as the structured-field String of parameter `key`.
pub(crate) fn sf_string<'v>(key: &str, value: &'v str) -> Result<&'v StringRef, InputError> {
    StringRef::from_str(value).map_err(|e| {
        malformed(format!(
            "{key} must be printable ASCII to fit a structured-field string: {e}"
        ))
    })
}

/// One signature from the request: label, covered components, parameters, bytes.
#[derive(Debug, Clone)]
pub struct SignatureEntry {
    label: String,
    /// The identifiers, or the first one that is not valid (unknown parameter, ...). Kept as a
    /// result so that an invalid signature we are not asked to check does not spoil the rest.
    components: Result<Vec<ComponentId>, ComponentError>,
    params: SignatureParams,
    signature: Vec<u8>,
    /// What makes this signature unusable as a whole (a `Signature-Input` member that is not
    /// an inner list of strings, a `Signature` member that is not a byte sequence): refused
    /// when it is the one to check, ignored otherwise: refusing a message for a broken
    /// signature beside a good one would let whoever can add one deny it (RFC 9421's security
    /// considerations, "Multiple Signature Confusion").
    defect: Option<String>,
}

impl SignatureEntry {
    /// The label (dictionary key) shared by both fields.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The covered component identifiers, in order; an error for an invalid one (unknown
    /// parameter, conflicting parameters, unknown derived component, ...).
    pub fn components(&self) -> Result<&[ComponentId], ComponentError> {
        match &self.components {
            Ok(c) => Ok(c),
            Err(e) => Err(e.clone()),
        }
    }

    /// The signature parameters, in the order received.
    pub fn params(&self) -> &SignatureParams {
        &self.params
    }

    /// The raw signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The signature as Ed25519: exactly 64 bytes, else malformed; malformed too when the
    /// entry itself is (its `Signature-Input` member or `Signature` member does not parse as
    /// one), which every check of an entry meets before anything else.
    pub fn ed25519_signature(&self) -> Result<ed25519_dalek::Signature, InputError> {
        if let Some(defect) = &self.defect {
            return Err(malformed(defect.clone()));
        }
        let bytes: &[u8; ED25519_SIGNATURE_LEN] =
            self.signature.as_slice().try_into().map_err(|_| {
                malformed(format!(
                    "signature {} is {} bytes long; an Ed25519 signature is 64 bytes",
                    echo(&self.label),
                    self.signature.len()
                ))
            })?;
        Ok(ed25519_dalek::Signature::from_bytes(bytes))
    }

    /// The `@signature-params` value: the inner list as received (order and unknown
    /// parameters kept), canonically serialized.
    pub fn signature_params_value(&self) -> Result<String, ComponentError> {
        Ok(signature_params_value(self.components()?, &self.params))
    }

    /// Takes the entry apart: label, covered identifiers, parameters, signature bytes.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(
        self,
    ) -> (
        String,
        Result<Vec<ComponentId>, ComponentError>,
        SignatureParams,
        Vec<u8>,
    ) {
        (self.label, self.components, self.params, self.signature)
    }
}

/// All signatures of a request, `Signature-Input` and `Signature` matched by label.
#[derive(Debug, Clone)]
pub struct SignatureFields {
    entries: Vec<SignatureEntry>,
}

/// The field lines of `name`, joined with `", "` (borrowed when there is a single line).
/// `None` when the field is absent.
pub(crate) fn joined_field<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, [u8]>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut out = Vec::with_capacity(first.len() + second.len() + 2);
    out.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(lines) {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    Some(Cow::Owned(out))
}

// ---- Parsing --------------------------------------------------------------------------------
//
// Both fields are parsed with sfv's visitor interface straight into the types above: no
// intermediate `Dictionary`, no map per item, names borrowed from the field until the
// identifier is built. This runs on every request, ahead of the signature check.
//
// RFC 9651 semantics are kept: a label given twice keeps its first place and its last value,
// and a problem in a value that a later duplicate replaces does not count. A limit passed
// (MAX_SIGNATURES, MAX_COMPONENTS, MAX_PARAMETERS) is the exception: the parse stops there
// and the field is refused whole.

/// Ends a parse early: a limit was passed, and the reason is recorded beside the entries (a
/// field past a limit is refused whole, so the rest of it need not be read).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a limit was passed")
    }
}

impl std::error::Error for Stop {}

/// One `Signature-Input` member while parsing.
struct RawInput {
    label: String,
    /// The structural problem (not an inner list, an item that is not a string, a limit
    /// passed), if any.
    problem: Option<String>,
    components: Result<Vec<ComponentId>, ComponentError>,
    /// Items of the inner list seen, valid or not (for [`MAX_COMPONENTS`]).
    items: usize,
    /// A limit was passed here and ended the parse; `problem` says which.
    stopped: bool,
    params: SignatureParams,
}

impl RawInput {
    fn reset(&mut self) {
        self.problem = None;
        self.components = Ok(Vec::new());
        self.items = 0;
        self.params = SignatureParams::new();
    }

    /// Records that a limit was passed, to end the parse with [`Stop`].
    fn limit(&mut self, why: impl FnOnce(&str) -> String) -> Stop {
        self.problem = Some(why(&self.label));
        self.stopped = true;
        Stop
    }
}

/// Fills `entries`; `too_many` tells a parse ended by [`MAX_SIGNATURES`].
struct InputVisitor<'s> {
    entries: &'s mut Vec<RawInput>,
    too_many: &'s mut bool,
}

impl<'de> DictionaryVisitor<'de> for InputVisitor<'_> {
    type Out = ();
    type Error = Stop;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let pos = match self.entries.iter().position(|e| e.label == key.as_str()) {
            Some(pos) => {
                // A repeated label: the later value replaces the earlier one.
                if let Some(e) = self.entries.get_mut(pos) {
                    e.reset();
                }
                pos
            }
            None if self.entries.len() >= MAX_SIGNATURES => {
                *self.too_many = true;
                return Err(Stop);
            }
            None => {
                self.entries.push(RawInput {
                    label: key.as_str().to_owned(),
                    problem: None,
                    components: Ok(Vec::with_capacity(8)),
                    items: 0,
                    stopped: false,
                    params: SignatureParams {
                        params: Vec::with_capacity(8),
                    },
                });
                self.entries.len() - 1
            }
        };
        Ok(self.entries.get_mut(pos).map(InputSlot))
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(())
    }
}

struct InputSlot<'a>(&'a mut RawInput);

impl<'de> EntryVisitor<'de> for InputSlot<'_> {
    type Error = Stop;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        self.0.problem = Some(format!(
            "Signature-Input member {} is not an inner list of component identifiers",
            echo(&self.0.label)
        ));
        Ok(Ignored)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(self)
    }
}

impl<'de> InnerListVisitor<'de> for InputSlot<'_> {
    type Error = Stop;

    fn item(&mut self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        let entry = &mut *self.0;
        entry.items += 1;
        if entry.items > MAX_COMPONENTS {
            return Err(entry.limit(|label| {
                format!(
                    "signature {} covers more than {MAX_COMPONENTS} components; peergate \
                     accepts at most {MAX_COMPONENTS}",
                    echo(label)
                )
            }));
        }
        Ok(ComponentVisitor(entry))
    }

    fn finish(self) -> Result<impl ParameterVisitor<'de>, Self::Error> {
        Ok(SignatureParamsVisitor(self.0))
    }
}

struct ComponentVisitor<'a>(&'a mut RawInput);

impl<'de> ItemVisitor<'de> for ComponentVisitor<'_> {
    type Out = ();
    type Error = Stop;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        match bare_item {
            BareItemFromInput::String(name) => Ok(Either::Left(ComponentParams {
                entry: self.0,
                name,
                params: Vec::new(),
            })),
            other => {
                if self.0.problem.is_none() {
                    let shown = sfv::ItemSerializer::new()
                        .bare_item(&BareItem::from(other))
                        .finish();
                    self.0.problem = Some(format!(
                        "Signature-Input member {} lists {}, which is not a quoted component \
                         name",
                        echo(&self.0.label),
                        echo(&shown)
                    ));
                }
                Ok(Either::Right(Ignored))
            }
        }
    }
}

/// A component's parameters, gathered (duplicates resolved) before the identifier is built.
struct ComponentParams<'a, 'de> {
    entry: &'a mut RawInput,
    name: Cow<'de, StringRef>,
    params: Vec<(&'de KeyRef, BareItemFromInput<'de>)>,
}

impl<'de> ParameterVisitor<'de> for ComponentParams<'_, 'de> {
    type Out = ();
    type Error = Stop;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        let full = self.params.len() >= MAX_PARAMETERS;
        match self.params.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None if full => {
                return Err(self.entry.limit(|label| {
                    format!(
                        "a component identifier of signature {} has more than \
                         {MAX_PARAMETERS} parameters",
                        echo(label)
                    )
                }))
            }
            None => self.params.push((key, value)),
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Self::Error> {
        let Ok(list) = &mut self.entry.components else {
            return Ok(()); // an earlier identifier is already invalid
        };
        let params: Vec<(&KeyRef, RefBareItem<'_>)> = self
            .params
            .iter()
            .map(|(k, v)| (*k, RefBareItem::from(v)))
            .collect();
        match ComponentId::from_parts(self.name.as_str(), &params) {
            Ok(id) => list.push(id),
            Err(e) => self.entry.components = Err(e),
        }
        Ok(())
    }
}

/// Either of two parameter visitors (the item visitor must return one type).
enum Either<L, R> {
    Left(L),
    Right(R),
}

impl<'de, L, R> ParameterVisitor<'de> for Either<L, R>
where
    L: ParameterVisitor<'de, Out = (), Error = Stop>,
    R: ParameterVisitor<'de, Out = (), Error = Infallible>,
{
    type Out = ();
    type Error = Stop;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        match self {
            Either::Left(l) => l.parameter(key, value),
            Either::Right(r) => r.parameter(key, value).map_err(|never| match never {}),
        }
    }

    fn finish(self) -> Result<(), Self::Error> {
        match self {
            Either::Left(l) => l.finish(),
            Either::Right(r) => r.finish().map_err(|never| match never {}),
        }
    }
}

struct SignatureParamsVisitor<'a>(&'a mut RawInput);

impl<'de> ParameterVisitor<'de> for SignatureParamsVisitor<'_> {
    type Out = ();
    type Error = Stop;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        let entry = &mut *self.0;
        if entry.params.params.len() >= MAX_PARAMETERS && entry.params.get(key.as_str()).is_none() {
            return Err(entry.limit(|label| {
                format!(
                    "signature {} has more than {MAX_PARAMETERS} parameters",
                    echo(label)
                )
            }));
        }
        entry.params.set(key, value.into());
        Ok(())
    }

    fn finish(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// `Signature` members while parsing: label and bytes (or `None`: not a byte sequence).
/// Fills `entries`; `too_many` tells a parse ended by [`MAX_SIGNATURES`].
struct SignatureVisitor<'s> {
    entries: &'s mut Vec<(String, Option<Vec<u8>>)>,
    too_many: &'s mut bool,
}

impl<'de> DictionaryVisitor<'de> for SignatureVisitor<'_> {
    type Out = ();
    type Error = Stop;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let pos = match self.entries.iter().position(|(l, _)| l == key.as_str()) {
            Some(pos) => pos,
            None if self.entries.len() >= MAX_SIGNATURES => {
                *self.too_many = true;
                return Err(Stop);
            }
            None => {
                self.entries.push((key.as_str().to_owned(), None));
                self.entries.len() - 1
            }
        };
        let slot = self.entries.get_mut(pos).map(|(_, bytes)| {
            *bytes = None;
            SignatureSlot(bytes)
        });
        Ok(slot)
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(())
    }
}

struct SignatureSlot<'a>(&'a mut Option<Vec<u8>>);

impl<'de> EntryVisitor<'de> for SignatureSlot<'_> {
    type Error = Stop;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(self)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(Ignored)
    }
}

impl<'de> ItemVisitor<'de> for SignatureSlot<'_> {
    type Out = ();
    type Error = Stop;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = ()>, Self::Error> {
        if let BareItemFromInput::ByteSequence(bytes) = bare_item {
            *self.0 = Some(bytes);
        }
        Ok(Ignored)
    }
}

impl SignatureFields {
    /// Reads both fields from `headers` (several field lines of one field are joined with
    /// `", "`). [`InputError::Absent`] when neither is present.
    pub fn from_headers(headers: &HeaderMap) -> Result<SignatureFields, InputError> {
        let input = joined_field(headers, &SIGNATURE_INPUT_NAME);
        let sig = joined_field(headers, &SIGNATURE_NAME);
        match (input, sig) {
            (None, None) => Err(InputError::Absent),
            (Some(_), None) => Err(malformed(
                "the request has a Signature-Input field but no Signature field",
            )),
            (None, Some(_)) => Err(malformed(
                "the request has a Signature field but no Signature-Input field",
            )),
            (Some(input), Some(sig)) => SignatureFields::parse(&input, &sig),
        }
    }

    /// Parses the two field values and matches their labels.
    pub fn parse(signature_input: &[u8], signature: &[u8]) -> Result<SignatureFields, InputError> {
        let mut inputs = Vec::new();
        let mut too_many = false;
        let parsed = Parser::new(signature_input).parse_dictionary_with_visitor(InputVisitor {
            entries: &mut inputs,
            too_many: &mut too_many,
        });
        if let Err(e) = parsed {
            // A limit ended the parse: its reason, else the syntax error.
            if too_many {
                return Err(too_many_signatures("Signature-Input"));
            }
            let limit = inputs
                .into_iter()
                .find(|i| i.stopped)
                .and_then(|i| i.problem);
            return Err(match limit {
                Some(problem) => malformed(problem),
                None => malformed(format!(
                    "Signature-Input is not a structured-field dictionary: {e}"
                )),
            });
        }
        let mut sigs = Vec::new();
        let mut too_many = false;
        let parsed = Parser::new(signature).parse_dictionary_with_visitor(SignatureVisitor {
            entries: &mut sigs,
            too_many: &mut too_many,
        });
        if let Err(e) = parsed {
            return Err(if too_many {
                too_many_signatures("Signature")
            } else {
                malformed(format!(
                    "Signature is not a structured-field dictionary: {e}"
                ))
            });
        }
        if inputs.is_empty() {
            return Err(malformed("Signature-Input lists no signature"));
        }

        let mut entries = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Some(pos) = sigs.iter().position(|(l, _)| *l == input.label) else {
                return Err(malformed(format!(
                    "Signature-Input has a signature labelled {} but Signature has none with \
                     that label",
                    echo(&input.label)
                )));
            };
            let (_, bytes) = sigs.swap_remove(pos);
            let defect = input.problem.or_else(|| {
                bytes.is_none().then(|| {
                    format!(
                        "Signature member {} is not a byte sequence (:base64:)",
                        echo(&input.label)
                    )
                })
            });
            entries.push(SignatureEntry {
                label: input.label,
                components: input.components,
                params: input.params,
                signature: bytes.unwrap_or_default(),
                defect,
            });
        }
        if let Some((extra, _)) = sigs.first() {
            return Err(malformed(format!(
                "Signature has a signature labelled {} but Signature-Input has none with that \
                 label",
                echo(extra)
            )));
        }
        Ok(SignatureFields { entries })
    }

    /// Every signature, in `Signature-Input` order.
    pub fn entries(&self) -> &[SignatureEntry] {
        &self.entries
    }

    /// The signature to check: the one whose `tag` is `tag`; else, when there is exactly one
    /// signature, that one; else the choice is ambiguous and the request is malformed (a
    /// verifier with an allowlist can choose further: [`chosen`](Self::chosen)).
    pub fn select(&self, tag: Option<&str>) -> Result<&SignatureEntry, InputError> {
        let pos = self.chosen(tag)?.ok_or_else(|| {
            malformed(format!(
                "the request carries {} signatures and {}; cannot tell which one to check",
                self.entries.len(),
                match tag {
                    Some(t) => format!("none has tag=\"{}\"", echo(t)),
                    None => "this gateway checks exactly one".to_owned(),
                }
            ))
        })?;
        self.entries
            .get(pos)
            .ok_or_else(|| malformed("internal: selected signature vanished"))
    }

    /// The entry at `pos` (an index into [`entries`](Self::entries)), taken out.
    pub fn into_entry(mut self, pos: usize) -> Result<SignatureEntry, InputError> {
        if pos < self.entries.len() {
            Ok(self.entries.swap_remove(pos))
        } else {
            Err(malformed("internal: selected signature vanished"))
        }
    }

    /// The position of the signature `tag` or the message itself names: the one whose `tag`
    /// is `tag`, else the only one. `None` when there are several and none has the tag; an
    /// error when several have it.
    pub fn chosen(&self, tag: Option<&str>) -> Result<Option<usize>, InputError> {
        if let Some(tag) = tag {
            let mut tagged = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.params.tag().ok().flatten() == Some(tag));
            match (tagged.next(), tagged.next()) {
                (Some((pos, _)), None) => return Ok(Some(pos)),
                (Some(_), Some(_)) => {
                    return Err(malformed(format!(
                        "several signatures carry tag=\"{}\"; send only one",
                        echo(tag)
                    )))
                }
                (None, _) => {}
            }
        }
        Ok((self.entries.len() == 1).then_some(0))
    }
}

fn check_label(label: &str) -> Result<(), InputError> {
    KeyRef::from_str(label)
        .map(|_| ())
        .map_err(|e| malformed(format!("invalid signature label {}: {e}", echo(label))))
}

/// The `@signature-params` value for signing: component identifiers, then parameters.
pub fn signature_params_value(components: &[ComponentId], params: &SignatureParams) -> String {
    serialize_components(components, params.iter().map(|(k, v)| (k, v.into())))
}

/// A `Signature-Input` member: `label=(...)` followed by the parameters.
/// `params_value` is [`signature_params_value`].
pub fn signature_input_member(label: &str, params_value: &str) -> Result<String, InputError> {
    check_label(label)?;
    Ok(format!("{label}={params_value}"))
}

/// A `Signature` member: `label=:<base64>:`.
pub fn signature_member(label: &str, signature: &[u8]) -> Result<String, InputError> {
    check_label(label)?;
    Ok(format!("{label}=:{}:", STANDARD.encode(signature)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const SIG: &str = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";

    #[test]
    fn typed_params_refuse_wrong_types() {
        let f = SignatureFields::parse(
            br#"a=("@method");created="1";expires=-1;nonce=1;alg=ed25519;keyid=:AA==:;tag=?1"#,
            b"a=:AA==:",
        )
        .unwrap();
        let p = f.entries()[0].params();
        assert!(p.created().is_err());
        assert!(p.expires().is_err());
        assert!(p.nonce().is_err());
        assert!(p.alg().is_err());
        assert!(p.keyid().is_err());
        assert!(p.tag().is_err());
        assert!(f.entries()[0].ed25519_signature().is_err());
    }

    #[test]
    fn labels_must_match() {
        let input = br#"sig-b26=("@method");created=1"#;
        assert!(SignatureFields::parse(input, SIG.as_bytes()).is_ok());
        let other = SIG.replace("sig-b26", "sig1");
        assert!(SignatureFields::parse(input, other.as_bytes()).is_err());
        let two = format!("{SIG}, extra=:AA==:");
        assert!(SignatureFields::parse(input, two.as_bytes()).is_err());
        assert!(SignatureFields::parse(b"sig-b26=(@method)", SIG.as_bytes()).is_err());
        // A member that does not parse as a signature is refused when it is the one checked.
        for (input, sig, why) in [
            (
                &b"sig-b26=\"x\""[..],
                SIG.as_bytes(),
                "is not an inner list",
            ),
            (
                b"sig-b26=(method)",
                SIG.as_bytes(),
                "not a quoted component name",
            ),
            (input, b"sig-b26=\"x\"", "is not a byte sequence"),
        ] {
            let f = SignatureFields::parse(input, sig).unwrap();
            let err = f.entries()[0].ed25519_signature().unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert!(SignatureFields::parse(b"", b"").is_err());
        // A syntax error is reported as such, even after a member with a problem of its own.
        let err = SignatureFields::parse(b"a=1, b=(", SIG.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("Signature-Input is not a structured-field dictionary"),
            "{err}"
        );
    }

    #[test]
    fn repeated_labels_and_parameters_follow_rfc_9651() {
        // A repeated label: first place, last value; the earlier value's problem is gone.
        let f = SignatureFields::parse(
            br#"a=1, b=("@path"), a=("@method");created=1;created=2;keyid="k""#,
            b"b=:AA==:, a=:AA==:, a=:AAAA:",
        )
        .unwrap();
        let labels: Vec<&str> = f.entries().iter().map(|e| e.label()).collect();
        assert_eq!(labels, ["a", "b"]);
        let a = &f.entries()[0];
        assert_eq!(a.components().unwrap().len(), 1);
        assert_eq!(a.params().created().unwrap(), Some(2));
        assert_eq!(a.signature(), [0u8, 0, 0]);
        assert_eq!(
            a.signature_params_value().unwrap(),
            r#"("@method");created=2;keyid="k""#
        );
        // A repeated component parameter: the last value counts.
        let f = SignatureFields::parse(br#"a=("x";sf;sf=?0)"#, b"a=:AA==:").unwrap();
        assert!(f.entries()[0].components().is_err());
        let f = SignatureFields::parse(br#"a=("x";sf=?0;sf)"#, b"a=:AA==:").unwrap();
        assert_eq!(
            f.entries()[0].components().unwrap()[0].as_serialized(),
            r#""x";sf"#
        );
    }

    /// `Signature-Input` for `labels` signatures, each covering `components` distinct fields
    /// with `params` parameters, and the matching `Signature`.
    fn sized(labels: usize, components: usize, params: usize) -> (String, String) {
        let inner: Vec<String> = (0..components).map(|i| format!("\"h{i}\"")).collect();
        let params: String = (0..params).map(|i| format!(";p{i}={i}")).collect();
        let input: Vec<String> = (0..labels)
            .map(|l| format!("s{l}=({}){params}", inner.join(" ")))
            .collect();
        let sig: Vec<String> = (0..labels).map(|l| format!("s{l}=:AA==:")).collect();
        (input.join(", "), sig.join(", "))
    }

    fn refusal(input: &str, sig: &str) -> String {
        match SignatureFields::parse(input.as_bytes(), sig.as_bytes()) {
            Err(InputError::Malformed(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn counts_up_to_the_limits_parse_and_one_more_is_refused() {
        let (input, sig) = sized(MAX_SIGNATURES, MAX_COMPONENTS, MAX_PARAMETERS);
        let f = SignatureFields::parse(input.as_bytes(), sig.as_bytes()).unwrap();
        assert_eq!(f.entries().len(), MAX_SIGNATURES);
        let first = &f.entries()[0];
        assert_eq!(first.components().unwrap().len(), MAX_COMPONENTS);
        assert_eq!(
            first.params().get("p15"),
            Some(&BareItem::Integer(15.into()))
        );

        let (input, sig) = sized(MAX_SIGNATURES + 1, 1, 0);
        assert!(refusal(&input, &sig).contains("Signature-Input lists more than 16 signatures"));
        // The same label again is not a new signature.
        let (input, _) = sized(1, 1, 0);
        let again = vec![input.as_str(); MAX_SIGNATURES + 5].join(", ");
        assert!(SignatureFields::parse(again.as_bytes(), b"s0=:AA==:").is_ok());
        let (input, sig) = sized(1, 1, 0);
        let sig = format!("{sig}, {}", sized(MAX_SIGNATURES + 1, 0, 0).1);
        assert!(refusal(&input, &sig).contains("Signature lists more than 16 signatures"));
        // Exactly 16 and then a syntax error (a trailing comma): the syntax error, not the limit.
        let (input, sig) = sized(MAX_SIGNATURES, 1, 0);
        let bad_sig = format!("{sig},");
        assert!(
            refusal(&input, &bad_sig).contains("Signature is not a structured-field dictionary")
        );
        let input = format!("{input},");
        assert!(
            refusal(&input, &sig).contains("Signature-Input is not a structured-field dictionary")
        );

        let (input, sig) = sized(1, MAX_COMPONENTS + 1, 0);
        assert!(refusal(&input, &sig).contains("signature s0 covers more than 64 components"));
        let (input, sig) = sized(1, 1, MAX_PARAMETERS + 1);
        assert!(refusal(&input, &sig).contains("signature s0 has more than 16 parameters"));
        let many: String = (0..=MAX_PARAMETERS).map(|i| format!(";p{i}")).collect();
        let input = format!("s0=(\"h\"{many})");
        assert!(refusal(&input, "s0=:AA==:")
            .contains("a component identifier of signature s0 has more than 16 parameters"));
    }

    /// Fields of about a megabyte, as a request head may carry, are refused (a test that took
    /// seconds per request before the limits: labels, components and parameters were each
    /// looked up among all the earlier ones).
    #[test]
    fn megabyte_fields_are_refused() {
        let (input, sig) = sized(40_000, 1, 0);
        assert!(refusal(&input, &sig).contains("more than 16 signatures"));
        let (input, sig) = sized(1, 60_000, 0);
        assert!(refusal(&input, &sig).contains("more than 64 components"));
        let (input, sig) = sized(1, 1, 60_000);
        assert!(refusal(&input, &sig).contains("more than 16 parameters"));
    }

    /// A member of either field that does not parse as a signature at all, beside ours, is
    /// not ours to check: it spoiled the request whole (found by an interop audit).
    #[test]
    fn a_broken_signature_we_do_not_check_is_ignored() {
        for (input, sig) in [
            (
                &br#"junk="x", ours=("@method");tag="peergate""#[..],
                &b"junk=:AA==:, ours=:AA==:"[..],
            ),
            (
                br#"junk=(1 2), ours=("@method");tag="peergate""#,
                b"junk=:AA==:, ours=:AA==:",
            ),
            (
                br#"junk=("@path"), ours=("@method");tag="peergate""#,
                b"junk=abc, ours=:AA==:",
            ),
        ] {
            let f = SignatureFields::parse(input, sig).unwrap();
            let junk = &f.entries()[0];
            assert_eq!(junk.label(), "junk");
            assert!(junk.ed25519_signature().is_err());
            let ours = f.select(Some("peergate")).unwrap();
            assert_eq!(ours.label(), "ours");
            assert!(ours.components().is_ok());
        }
    }

    #[test]
    fn an_invalid_signature_we_do_not_check_is_ignored() {
        let f = SignatureFields::parse(
            br#"other=("x";zz);tag="foreign", ours=("@method");tag="peergate""#,
            b"other=:AA==:, ours=:AA==:",
        )
        .unwrap();
        assert!(f.entries()[0].components().is_err());
        let ours = f.select(Some("peergate")).unwrap();
        assert_eq!(ours.label(), "ours");
        assert!(ours.components().is_ok());
        let pos = f.chosen(Some("peergate")).unwrap().unwrap();
        let taken = f.into_entry(pos).unwrap();
        assert_eq!(taken.label(), "ours");
    }

    #[test]
    fn builder_validates() {
        let mut p = SignatureParams::new();
        assert!(p.push_string("nonce", "caf\u{e9}").is_err());
        assert!(p.push_integer("created", u64::MAX).is_err());
        assert!(p.push("Bad", BareItem::Boolean(true)).is_err());
        assert!(signature_member("Bad Label", b"x").is_err());
    }
}
