//! Component identifiers (RFC 9421 §2) and the values they take in a message.
//!
//! A signature covers a list of *components*: HTTP fields (`"content-type"`) and derived
//! components (`"@method"`, `"@authority"`, ...), each optionally with parameters (`;sf`,
//! `;key="a"`, `;bs`, `;req`, `;name="q"`). This module parses identifiers from the items of a
//! `Signature-Input` inner list, keeping their parameters in the order received, and derives
//! each component's value from a [`RequestView`] or [`ResponseView`].
//!
//! Everything here works on message data that an attacker controls, so nothing panics: every
//! problem is a [`ComponentError`]. A covered component that is absent from the message is
//! an error, never an empty value (§2.5); a field that is present but empty has the empty value.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, Method, StatusCode, Uri};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sfv::{FieldType as _, Item, KeyRef, ListEntry, Parser, RefBareItem};

/// The request a signature is made or checked over: borrowed parts of an HTTP request.
///
/// `scheme` is the scheme peers use to reach the server (`identity.scheme`), never something
/// a client supplied; it feeds `@scheme`, `@target-uri` and the default port of `@authority`.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target as received (origin-form, or absolute-form / HTTP/2 with authority).
    pub uri: &'a Uri,
    /// The request's header fields.
    pub headers: &'a HeaderMap,
    /// `http` or `https`.
    pub scheme: &'a str,
}

impl<'a> RequestView<'a> {
    /// A view over borrowed request parts.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap, scheme: &'a str) -> Self {
        RequestView {
            method,
            uri,
            headers,
            scheme,
        }
    }

    /// A view over the parts of an `http::Request`.
    pub fn from_parts(parts: &'a http::request::Parts, scheme: &'a str) -> Self {
        RequestView::new(&parts.method, &parts.uri, &parts.headers, scheme)
    }
}

/// A response, optionally with the request it answers (needed for `;req` components).
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The response status (`@status`).
    pub status: StatusCode,
    /// The response's header fields.
    pub headers: &'a HeaderMap,
    /// The request this response answers, for components with the `req` parameter.
    pub request: Option<&'a RequestView<'a>>,
}

/// The message a signature base is built from.
#[derive(Debug, Clone, Copy)]
pub enum MessageView<'a> {
    /// A request.
    Request(&'a RequestView<'a>),
    /// A response.
    Response(&'a ResponseView<'a>),
}

impl<'a> MessageView<'a> {
    fn headers(&self) -> &'a HeaderMap {
        match self {
            MessageView::Request(r) => r.headers,
            MessageView::Response(r) => r.headers,
        }
    }
}

/// A header field value to use instead of the message's own, while building a base.
///
/// The signer covers the `Content-Digest` it is about to add: the base must read as if that
/// field were already in the headers (and any old one were gone), without copying the map.
#[derive(Debug, Clone, Copy)]
pub struct FieldOverride<'a> {
    /// Lowercase field name.
    pub name: &'a str,
    /// The single field line value to use.
    pub value: &'a [u8],
}

/// Why a component identifier or its value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    /// The identifier itself is invalid: unknown derived component, unknown or conflicting
    /// parameter, name that is not a lowercase field name, ...
    #[error("invalid component identifier {id}: {why}")]
    InvalidIdentifier {
        /// The identifier as serialized (bounded in length).
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// The message lacks a covered component (§2.5: an error, never an empty value).
    #[error("the message has no {id} ({why})")]
    Missing {
        /// The identifier as serialized.
        id: String,
        /// What was looked for.
        why: String,
    },
    /// The component is there but its value cannot go into a signature base.
    #[error("the value of {id} cannot be covered: {why}")]
    InvalidValue {
        /// The identifier as serialized.
        id: String,
        /// What is wrong with the value.
        why: String,
    },
    /// The same identifier (name and parameters) is listed twice (§2.5).
    #[error("component {id} is covered more than once")]
    Duplicate {
        /// The identifier as serialized.
        id: String,
    },
    /// The covered fields and query parameters add up to more than
    /// [`MAX_COVERED_INPUT`] bytes.
    #[error(
        "the covered fields and query parameters add up to {bytes} bytes or more; at most {} \
         are read for one signature",
        MAX_COVERED_INPUT
    )]
    TooLarge {
        /// What the covered components had read, counted once per component, when the one
        /// that passed the bound was reached.
        bytes: usize,
    },
}

/// Most bytes of field values and query the components of one signature may read, counted
/// once for each component that reads them.
///
/// Each `;sf` or `;key` component parses its field again, and each `@query-param` scans the
/// query again, so without a bound a request head of a megabyte covering the same large field
/// 64 times (`"x";key="a"`, `"x";key="b"`, ...) costs a second of parsing before its signature
/// can be found bad. Real signatures read a few hundred bytes.
pub const MAX_COVERED_INPUT: usize = 64 * 1024;

/// What the components of one signature have read so far, against [`MAX_COVERED_INPUT`].
#[derive(Debug, Default)]
pub(crate) struct CoveredInput {
    read: usize,
}

impl CoveredInput {
    /// Counts `bytes` more; refuses once the total passes the bound.
    fn charge(&mut self, bytes: usize) -> Result<(), ComponentError> {
        self.read = self.read.saturating_add(bytes);
        if self.read > MAX_COVERED_INPUT {
            return Err(ComponentError::TooLarge { bytes: self.read });
        }
        Ok(())
    }
}

/// Longest piece of request-supplied text echoed back in an error message.
const MAX_ECHO: usize = 100;

/// `s` cut to [`MAX_ECHO`] bytes on a character boundary, so errors stay bounded.
pub(crate) fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO {
        return s.to_owned();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_owned();
    out.push_str("...");
    out
}

/// The derived components of RFC 9421 §2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Derived {
    /// `@method`
    Method,
    /// `@target-uri`
    TargetUri,
    /// `@authority`
    Authority,
    /// `@scheme`
    Scheme,
    /// `@request-target`
    RequestTarget,
    /// `@path`
    Path,
    /// `@query`
    Query,
    /// `@query-param` (needs the `name` parameter)
    QueryParam,
    /// `@status` (responses only)
    Status,
}

impl Derived {
    /// Every derived component.
    pub const ALL: [Derived; 9] = [
        Derived::Method,
        Derived::TargetUri,
        Derived::Authority,
        Derived::Scheme,
        Derived::RequestTarget,
        Derived::Path,
        Derived::Query,
        Derived::QueryParam,
        Derived::Status,
    ];

    /// The component name, with its `@`.
    pub fn name(self) -> &'static str {
        match self {
            Derived::Method => "@method",
            Derived::TargetUri => "@target-uri",
            Derived::Authority => "@authority",
            Derived::Scheme => "@scheme",
            Derived::RequestTarget => "@request-target",
            Derived::Path => "@path",
            Derived::Query => "@query",
            Derived::QueryParam => "@query-param",
            Derived::Status => "@status",
        }
    }

    /// The derived component with this name, if it is one.
    pub fn from_name(name: &str) -> Option<Derived> {
        Derived::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// What a component identifier refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    /// A derived component.
    Derived(Derived),
    /// An HTTP field; the name is [`ComponentId::name`].
    Field,
}

/// A component identifier: a name plus parameters, in the order received.
///
/// Equality ([`ComponentId::same_component`]) is by meaning: same name and same parameters,
/// whatever their order (`"x";sf;req` and `"x";req;sf` name the same component).
#[derive(Debug, Clone)]
pub struct ComponentId {
    /// The identifier as it appears in a signature base, e.g. `"example-dict";key="a"`.
    /// The name is `serialized[1..=name_len]`: valid names need no escaping. Borrowed for the
    /// [`COMMON_IDS`], which every signed request covers.
    serialized: Cow<'static, str>,
    name_len: usize,
    kind: ComponentKind,
    has_params: bool,
    sf: bool,
    bs: bool,
    req: bool,
    key: Option<String>,
    /// For `@query-param`: the `name` parameter, decoded and re-encoded (§2.2.8).
    query_name: Option<String>,
}

/// Identifiers without parameters that peergate's signatures (and most others) cover: built
/// for every signature checked, so kept serialized instead of allocated each time.
const COMMON_IDS: [&str; 8] = [
    "\"@method\"",
    "\"@authority\"",
    "\"@path\"",
    "\"@query\"",
    "\"@target-uri\"",
    "\"content-digest\"",
    "\"content-type\"",
    "\"content-length\"",
];

impl PartialEq for ComponentId {
    fn eq(&self, other: &Self) -> bool {
        self.same_component(other)
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

fn invalid_id(id: &str, why: impl Into<String>) -> ComponentError {
    ComponentError::InvalidIdentifier {
        id: echo(id),
        why: why.into(),
    }
}

/// True for a lowercase HTTP field name (RFC 9110 token, no uppercase letters).
fn is_lowercase_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Appends an RFC 8941 String (`"..."`, with `"` and `\` escaped).
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    if s.contains(['"', '\\']) {
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    } else {
        out.push_str(s);
    }
    out.push('"');
}

/// Appends serialized parameters (RFC 8941 §4.1.1.2): `;key`, plus `=value` unless the
/// value is Boolean true.
pub(crate) fn push_params<'p>(
    out: &mut String,
    params: impl IntoIterator<Item = (&'p KeyRef, RefBareItem<'p>)>,
) {
    for (key, value) in params {
        out.push(';');
        out.push_str(key.as_str());
        if value != RefBareItem::Boolean(true) {
            out.push('=');
            let _ = sfv::ItemSerializer::with_buffer(out).bare_item(value);
        }
    }
}

impl ComponentId {
    /// Builds an identifier from its name and parameters (already de-duplicated, in order).
    ///
    /// Refuses what RFC 9421 says to refuse: an unknown derived component,
    /// `@signature-params`, an unknown parameter (§2.5: "not understood"), `tr` (trailers
    /// are not supported), `sf`/`key`/`bs` on a derived component, `name` anywhere but on
    /// `@query-param`, flags with a value other than true, and the combinations `sf`+`bs`
    /// and `key`+`bs`.
    pub fn from_parts<'p>(
        name: &str,
        params: &[(&'p KeyRef, RefBareItem<'p>)],
    ) -> Result<ComponentId, ComponentError> {
        let common = COMMON_IDS
            .iter()
            .find(|id| params.is_empty() && id.get(1..id.len() - 1) == Some(name));
        let serialized: Cow<'static, str> = match common {
            Some(id) => Cow::Borrowed(id),
            None => {
                let mut out = String::with_capacity(name.len() + 2 + 16 * params.len());
                push_sf_string(&mut out, name);
                push_params(&mut out, params.iter().copied());
                Cow::Owned(out)
            }
        };

        let kind = if name.starts_with('@') {
            match Derived::from_name(name) {
                Some(d) => ComponentKind::Derived(d),
                None if name == "@signature-params" => {
                    return Err(invalid_id(
                        &serialized,
                        "@signature-params cannot be covered, it is always the last line",
                    ))
                }
                None => return Err(invalid_id(&serialized, "unknown derived component")),
            }
        } else if is_lowercase_field_name(name) {
            ComponentKind::Field
        } else {
            return Err(invalid_id(
                &serialized,
                "a field component name must be the lowercase field name",
            ));
        };

        let is_field = kind == ComponentKind::Field;
        let (mut sf, mut bs, mut req) = (false, false, false);
        let mut key = None;
        let mut query_name = None;
        for (param, value) in params {
            let flag = || match value {
                RefBareItem::Boolean(true) => Ok(true),
                _ => Err(invalid_id(
                    &serialized,
                    format!("parameter {} must be a bare flag", param.as_str()),
                )),
            };
            match param.as_str() {
                "sf" | "bs" | "key" if !is_field => {
                    return Err(invalid_id(
                        &serialized,
                        format!("parameter {} applies to fields only", param.as_str()),
                    ))
                }
                "sf" => sf = flag()?,
                "bs" => bs = flag()?,
                "req" => req = flag()?,
                "key" => match value {
                    RefBareItem::String(k) => key = Some(k.as_str().to_owned()),
                    _ => return Err(invalid_id(&serialized, "parameter key must be a string")),
                },
                "name" if kind == ComponentKind::Derived(Derived::QueryParam) => match value {
                    RefBareItem::String(n) => query_name = Some(form_reencode(n.as_str())),
                    _ => return Err(invalid_id(&serialized, "parameter name must be a string")),
                },
                "tr" => {
                    return Err(invalid_id(
                        &serialized,
                        "trailer fields (tr) are not supported",
                    ))
                }
                other => {
                    return Err(invalid_id(
                        &serialized,
                        format!("parameter {} is not understood here", echo(other)),
                    ))
                }
            }
        }
        if bs && (sf || key.is_some()) {
            return Err(invalid_id(
                &serialized,
                "bs cannot be combined with sf or key",
            ));
        }
        if kind == ComponentKind::Derived(Derived::QueryParam) && query_name.is_none() {
            return Err(invalid_id(
                &serialized,
                "@query-param needs a name parameter",
            ));
        }
        Ok(ComponentId {
            name_len: name.len(),
            serialized,
            kind,
            has_params: !params.is_empty(),
            sf,
            bs,
            req,
            key,
            query_name,
        })
    }

    /// Parses an identifier from a structured-field item (an item of a `Signature-Input`
    /// inner list). The item must be a String.
    pub fn from_item(item: &Item) -> Result<ComponentId, ComponentError> {
        let Some(name) = item.bare_item.as_string() else {
            return Err(invalid_id(
                &item.serialize(),
                "component identifiers must be quoted strings",
            ));
        };
        let params: Vec<(&KeyRef, RefBareItem<'_>)> = item
            .params
            .iter()
            .map(|(k, v)| (k.as_ref(), RefBareItem::from(v)))
            .collect();
        ComponentId::from_parts(name.as_str(), &params)
    }

    /// Parses an identifier written as a structured-field item, e.g. `"example-dict";key="a"`.
    pub fn parse(text: &str) -> Result<ComponentId, ComponentError> {
        let item: Item = Parser::new(text)
            .parse()
            .map_err(|e| invalid_id(text, format!("not a structured-field item: {e}")))?;
        ComponentId::from_item(&item)
    }

    /// The identifier of a derived component without parameters (`@query-param` needs a
    /// name: use [`ComponentId::query_param`]).
    pub fn derived(d: Derived) -> Result<ComponentId, ComponentError> {
        ComponentId::new(d.name())
    }

    /// `"@query-param";name="<name>"`.
    pub fn query_param(name: &str) -> Result<ComponentId, ComponentError> {
        let value = sfv::StringRef::from_str(name)
            .map_err(|e| invalid_id(name, format!("not a valid string: {e}")))?;
        ComponentId::from_parts(
            Derived::QueryParam.name(),
            &[(sfv::key_ref("name"), RefBareItem::String(value))],
        )
    }

    /// The identifier with this name and no parameters, e.g. `@method` or `content-type`.
    pub fn new(name: &str) -> Result<ComponentId, ComponentError> {
        let s = sfv::StringRef::from_str(name)
            .map_err(|e| invalid_id(name, format!("not a valid string: {e}")))?;
        ComponentId::from_parts(s.as_str(), &[])
    }

    /// The component name (`@method`, `content-digest`, ...).
    pub fn name(&self) -> &str {
        self.serialized.get(1..=self.name_len).unwrap_or_default()
    }

    /// Derived component or field.
    pub fn kind(&self) -> ComponentKind {
        self.kind
    }

    /// True when the identifier has no parameters.
    pub fn is_plain(&self) -> bool {
        !self.has_params
    }

    /// The `key` parameter, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Whether the `req` parameter is set.
    pub fn is_req(&self) -> bool {
        self.req
    }

    /// True for this derived component without parameters.
    pub fn is_plain_derived(&self, d: Derived) -> bool {
        self.kind == ComponentKind::Derived(d) && self.is_plain()
    }

    /// True for this field (by lowercase name) without parameters.
    pub fn is_plain_field(&self, name: &str) -> bool {
        self.kind == ComponentKind::Field && self.name() == name && self.is_plain()
    }

    /// The identifier as written in a signature base, e.g. `"@query-param";name="a"`.
    pub fn as_serialized(&self) -> &str {
        &self.serialized
    }

    /// Same name and same parameters, whatever their order.
    pub fn same_component(&self, other: &ComponentId) -> bool {
        self.name() == other.name()
            && self.sf == other.sf
            && self.bs == other.bs
            && self.req == other.req
            && self.key == other.key
            && self.query_name == other.query_name
    }

    /// The message this component's value comes from, with the overrides that apply to it.
    fn target<'m, 'o>(
        &self,
        msg: MessageView<'m>,
        overrides: &'o [FieldOverride<'o>],
    ) -> Result<(MessageView<'m>, &'o [FieldOverride<'o>]), ComponentError> {
        // `req`: the value comes from the request the response answers; field overrides
        // belong to the message being signed, not to that request.
        if !self.req {
            return Ok((msg, overrides));
        }
        match msg {
            MessageView::Request(_) => Err(invalid_id(
                &self.serialized,
                "req is only meaningful when signing or checking a response",
            )),
            MessageView::Response(resp) => match resp.request {
                Some(req) => Ok((MessageView::Request(req), &[])),
                None => Err(ComponentError::Missing {
                    id: echo(&self.serialized),
                    why: "the request this response answers is not available".into(),
                }),
            },
        }
    }

    /// Appends this component's signature base line(s) to `out`: `"<id>": <value>` + LF.
    ///
    /// `@query-param` writes the one occurrence of its name; a name that occurs more than once
    /// cannot be covered (§2.2.8).
    /// What the component reads (a field's values, the query for `@query-param`) is charged to
    /// `budget` first, before any of it is parsed.
    pub(crate) fn write_lines(
        &self,
        msg: MessageView<'_>,
        overrides: &[FieldOverride<'_>],
        budget: &mut CoveredInput,
        out: &mut Vec<u8>,
    ) -> Result<(), ComponentError> {
        let (target, overrides) = self.target(msg, overrides)?;

        match self.kind {
            ComponentKind::Field => {
                let over = overrides
                    .iter()
                    .find(|o| o.name == self.name())
                    .map(|o| o.value);
                let from_map = target.headers().get_all(self.name());
                budget.charge(match over {
                    Some(v) => v.len(),
                    None => from_map.iter().map(|v| v.len()).sum(),
                })?;
                let start = self.begin_line(out);
                self.write_field(over, from_map, out)?;
                self.end_line(out, start)
            }
            ComponentKind::Derived(Derived::QueryParam) => {
                if let MessageView::Request(req) = target {
                    budget.charge(req.uri.query().map_or(0, str::len))?;
                }
                self.write_query_params(target, out)
            }
            ComponentKind::Derived(d) => {
                let start = self.begin_line(out);
                self.write_derived(d, target, out)?;
                self.end_line(out, start)
            }
        }
    }

    fn begin_line(&self, out: &mut Vec<u8>) -> usize {
        out.extend_from_slice(self.serialized.as_bytes());
        out.extend_from_slice(b": ");
        out.len()
    }

    /// Refuses values a base cannot hold, then ends the line: a line break, which would end the
    /// line early, and bytes outside ASCII, which RFC 9421 §2.5 keeps out of every base (its
    /// last step: "produce an error if the output string contains any non-ASCII characters").
    /// A field whose value has such bytes is signed as a Byte Sequence (`;bs`, §2.1.3), which
    /// writes them in base64.
    fn end_line(&self, out: &mut Vec<u8>, value_start: usize) -> Result<(), ComponentError> {
        let value = out.get(value_start..).unwrap_or_default();
        if let Some(&b) = value
            .iter()
            .find(|&&b| b == b'\n' || b == b'\r' || !b.is_ascii())
        {
            let why = if b.is_ascii() {
                "the value contains a line break".into()
            } else if self.kind == ComponentKind::Field {
                format!(
                    "the value holds bytes outside ASCII, which RFC 9421 §2.5 keeps out of a \
                     signature base: cover {} with ;bs",
                    echo(self.name())
                )
            } else {
                "the value holds bytes outside ASCII, which RFC 9421 §2.5 keeps out of a \
                 signature base"
                    .into()
            };
            return Err(ComponentError::InvalidValue {
                id: echo(&self.serialized),
                why,
            });
        }
        out.push(b'\n');
        Ok(())
    }

    fn missing(&self, why: impl Into<String>) -> ComponentError {
        ComponentError::Missing {
            id: echo(&self.serialized),
            why: why.into(),
        }
    }

    fn bad_value(&self, why: impl Into<String>) -> ComponentError {
        ComponentError::InvalidValue {
            id: echo(&self.serialized),
            why: why.into(),
        }
    }

    /// The field's value from `over` (the signer's replacement) or else the message's lines.
    fn write_field(
        &self,
        over: Option<&[u8]>,
        from_map: http::header::GetAll<'_, http::HeaderValue>,
        out: &mut Vec<u8>,
    ) -> Result<(), ComponentError> {
        let lines = over.into_iter().chain(
            from_map
                .iter()
                .filter(|_| over.is_none())
                .map(|v| v.as_bytes()),
        );

        if self.bs {
            // §2.1.3: each field line on its own, trimmed, as a Byte Sequence.
            let mut any = false;
            for line in lines {
                if any {
                    out.extend_from_slice(b", ");
                }
                any = true;
                out.push(b':');
                let mut b64 = String::new();
                STANDARD.encode_string(trim_ows(line), &mut b64);
                out.extend_from_slice(b64.as_bytes());
                out.push(b':');
            }
            if !any {
                return Err(self.missing(format!("no {} field", self.name())));
            }
            return Ok(());
        }

        let separator = field_separator(self.name());
        if !self.sf && self.key.is_none() {
            if !write_combined(lines, separator, out) {
                return Err(self.missing(format!("no {} field", self.name())));
            }
            return Ok(());
        }

        let mut combined = Vec::new();
        if !write_combined(lines, separator, &mut combined) {
            return Err(self.missing(format!("no {} field", self.name())));
        }
        if let Some(key) = &self.key {
            // §2.1.2: the field as a Dictionary, the member's serialized value.
            let dict: sfv::Dictionary = Parser::new(&combined).parse().map_err(|e| {
                self.bad_value(format!(
                    "{} is not a structured dictionary: {e}",
                    self.name()
                ))
            })?;
            let member = dict.get(key.as_str()).ok_or_else(|| {
                self.missing(format!(
                    "the {} dictionary has no member {}",
                    self.name(),
                    echo(key)
                ))
            })?;
            out.extend_from_slice(serialize_entry(member).as_bytes());
        } else {
            let value = reserialize_structured(self.name(), &combined).map_err(|e| {
                self.bad_value(match e {
                    SfError::Invalid => format!(
                        "{} is not a valid structured field (needed for sf)",
                        self.name()
                    ),
                    SfError::Ambiguous => format!(
                        "{} is a field of no structured type peergate knows, and its value reads differently as a Dictionary and as a List (a repeated member); cover it without sf",
                        self.name()
                    ),
                })
            })?;
            out.extend_from_slice(value.as_bytes());
        }
        Ok(())
    }

    fn write_derived(
        &self,
        d: Derived,
        msg: MessageView<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ComponentError> {
        if d == Derived::Status {
            return match msg {
                MessageView::Response(resp) => {
                    out.extend_from_slice(resp.status.as_str().as_bytes());
                    Ok(())
                }
                MessageView::Request(_) => Err(self.bad_value(if self.req {
                    "a request has no @status"
                } else {
                    "@status is only defined for responses"
                })),
            };
        }
        let MessageView::Request(req) = msg else {
            return Err(self.bad_value(format!(
                "{} is a request component; on a response use it with ;req",
                d.name()
            )));
        };
        match d {
            Derived::Method => out.extend_from_slice(req.method.as_str().as_bytes()),
            Derived::Authority => {
                let auth = self.authority_of(req)?;
                auth.write(req.scheme, out);
            }
            Derived::Scheme => {
                out.extend(req.scheme.bytes().map(|b| b.to_ascii_lowercase()));
            }
            Derived::TargetUri => {
                // The target URI of RFC 9110 §7.1: the authority as the request gives it (Host,
                // or the URI's own), not normalized as `@authority` is (§2.2.3 normalizes that
                // one only). It must still be a valid authority.
                self.authority_of(req)?;
                out.extend(req.scheme.bytes().map(|b| b.to_ascii_lowercase()));
                out.extend_from_slice(b"://");
                out.extend_from_slice(
                    Authority::raw_of_request(req)
                        .unwrap_or_default()
                        .as_bytes(),
                );
                write_path(req.uri, out);
                if let Some(q) = req.uri.query() {
                    out.push(b'?');
                    out.extend_from_slice(q.as_bytes());
                }
            }
            Derived::RequestTarget => {
                write_path(req.uri, out);
                if let Some(q) = req.uri.query() {
                    out.push(b'?');
                    out.extend_from_slice(q.as_bytes());
                }
            }
            Derived::Path => write_path(req.uri, out),
            Derived::Query => {
                out.push(b'?');
                if let Some(q) = req.uri.query() {
                    out.extend_from_slice(q.as_bytes());
                }
            }
            // Handled above / in write_query_params.
            Derived::Status | Derived::QueryParam => {
                return Err(self.bad_value("internal: unexpected derived component"))
            }
        }
        Ok(())
    }

    fn authority_of(&self, req: &RequestView<'_>) -> Result<Authority, ComponentError> {
        Authority::of_request(req).map_err(|e| match e {
            AuthorityError::Missing => {
                self.missing("the request has no Host header and no authority in its target")
            }
            AuthorityError::Invalid(why) => self.bad_value(why),
        })
    }

    fn write_query_params(
        &self,
        msg: MessageView<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ComponentError> {
        let MessageView::Request(req) = msg else {
            return Err(self
                .bad_value("@query-param is a request component; on a response use it with ;req"));
        };
        let wanted = self.query_name.as_deref().unwrap_or_default();
        let mut value = None;
        for (name, v) in form_pairs(req.uri.query().unwrap_or_default()) {
            if form_reencode(name) != wanted {
                continue;
            }
            if value.is_some() {
                // §2.2.8: "If a parameter name occurs multiple times in a request, the named
                // query parameter MUST NOT be included."
                return Err(self.bad_value(format!(
                    "the query has the parameter {} more than once, and RFC 9421 §2.2.8 leaves a \
                     repeated name out of signatures; cover @query instead",
                    echo(wanted)
                )));
            }
            value = Some(v);
        }
        let Some(value) = value else {
            return Err(self.missing(format!("the query has no parameter named {}", echo(wanted))));
        };
        let start = self.begin_line(out);
        out.extend_from_slice(form_reencode(value).as_bytes());
        self.end_line(out, start)
    }
}

/// Serializes a Dictionary member's value: an Item with its parameters, or an Inner List.
fn serialize_entry(entry: &ListEntry) -> String {
    match entry {
        ListEntry::Item(item) => item.serialize(),
        ListEntry::InnerList(_) => {
            let list: sfv::List = vec![entry.clone()];
            list.serialize().unwrap_or_default()
        }
    }
}

/// Structured-field types of fields we know; anything else is tried as Dictionary, List,
/// then Item.
#[derive(Clone, Copy)]
enum SfType {
    Dictionary,
    List,
    Item,
    Unknown,
}

/// The fields defined as structured fields, and the older ones whose values parse as one
/// (the table of "Retrofit Structured Fields for HTTP", as the `http_sf` package behind the
/// PyPI `http-message-signatures` has it). A field's own type matters: read as a Dictionary,
/// the List `gzip, br, gzip` would lose its repeated member, and the value signed would not
/// be the one verified.
fn sf_type(name: &str) -> SfType {
    match name {
        "signature-input"
        | "signature"
        | "accept-signature"
        | "content-digest"
        | "repr-digest"
        | "want-content-digest"
        | "want-repr-digest"
        | "priority"
        | "cdn-cache-control"
        | "alt-svc"
        | "cache-control"
        | "expect"
        | "expect-ct"
        | "keep-alive"
        | "pragma"
        | "prefer"
        | "preference-applied"
        | "surrogate-control" => SfType::Dictionary,
        "cache-status"
        | "proxy-status"
        | "accept-ch"
        | "accept"
        | "accept-encoding"
        | "accept-language"
        | "accept-patch"
        | "accept-post"
        | "accept-ranges"
        | "access-control-allow-headers"
        | "access-control-allow-methods"
        | "access-control-expose-headers"
        | "access-control-request-headers"
        | "allow"
        | "alpn"
        | "cdn-loop"
        | "clear-site-data"
        | "connection"
        | "content-encoding"
        | "content-language"
        | "content-length"
        | "sec-websocket-extensions"
        | "sec-websocket-protocol"
        | "server-timing"
        | "te"
        | "timing-allow-origin"
        | "trailer"
        | "transfer-encoding"
        | "vary"
        | "x-xss-protection"
        | "sf-cookie"
        | "sf-if-match"
        | "sf-if-none-match"
        | "sf-link"
        | "sf-set-cookie" => SfType::List,
        "access-control-allow-credentials"
        | "access-control-allow-origin"
        | "access-control-max-age"
        | "access-control-request-method"
        | "age"
        | "alt-used"
        | "content-type"
        | "cross-origin-resource-policy"
        | "cross-origin-embedder-policy"
        | "cross-origin-embedder-policy-report-only"
        | "cross-origin-opener-policy"
        | "cross-origin-opener-policy-report-only"
        | "host"
        | "max-forwards"
        | "origin"
        | "origin-agent-cluster"
        | "retry-after"
        | "sec-websocket-version"
        | "x-content-type-options"
        | "x-frame-options"
        | "sf-content-location"
        | "sf-date"
        | "sf-etag"
        | "sf-expires"
        | "sf-if-modified-since"
        | "sf-if-unmodified-since"
        | "sf-last-modified"
        | "sf-location"
        | "sf-referer" => SfType::Item,
        _ => SfType::Unknown,
    }
}

/// Why a value with `;sf` has no serialization.
#[derive(Debug, PartialEq, Eq)]
enum SfError {
    /// Not a structured field of the field's type (or of any type, for an unknown field).
    Invalid,
    /// A field of unknown type whose value is both a Dictionary and a List, read differently.
    Ambiguous,
}

/// §2.1.1: the field value parsed as a structured field and serialized again.
///
/// §2.1.1 needs the field's type. For a field of no known type the value is tried as a
/// Dictionary (as the RFC's own `Example-Dict` is), then a List, then an Item; a value that is
/// both a Dictionary and a List serializes the same either way unless a member repeats, and
/// then the readings differ (the Dictionary keeps one) and signers differ in which they take
/// (some try a List first). Such a value is refused rather than read as either: one reading
/// would fail a signer that took the other, and the Dictionary reading would let a repeated
/// member be added to the field without changing its signature base.
fn reserialize_structured(name: &str, value: &[u8]) -> Result<String, SfError> {
    let dict = || {
        Parser::new(value)
            .parse::<sfv::Dictionary>()
            .ok()
            .map(|d| d.serialize().unwrap_or_default())
    };
    let list = || {
        Parser::new(value)
            .parse::<sfv::List>()
            .ok()
            .map(|l| l.serialize().unwrap_or_default())
    };
    let item = || {
        Parser::new(value)
            .parse::<Item>()
            .ok()
            .map(|i| i.serialize())
    };
    let found = match sf_type(name) {
        SfType::Dictionary => dict(),
        SfType::List => list(),
        SfType::Item => item(),
        SfType::Unknown => match dict() {
            Some(d) => match list() {
                Some(l) if l != d => return Err(SfError::Ambiguous),
                _ => Some(d),
            },
            None => list().or_else(item),
        },
    };
    found.ok_or(SfError::Invalid)
}

/// Strips leading and trailing optional whitespace (SP, HTAB).
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or_default()
}

/// Appends one field line as RFC 9421 §2.1 wants it: trimmed, obsolete line folding
/// (`OWS CRLF 1*(SP / HTAB)`) replaced by one space. A line break that is not folding is
/// kept, and then refused by the caller.
pub fn push_canonical_line(out: &mut Vec<u8>, line: &[u8]) {
    let line = trim_ows(line);
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b == b'\r' || b == b'\n' {
            let mut j = i;
            if line.get(j) == Some(&b'\r') {
                j += 1;
            }
            if line.get(j) == Some(&b'\n') {
                j += 1;
            }
            let ws_start = j;
            while matches!(line.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            if j > ws_start && j > i {
                // Folding: drop whitespace before the break too, then one space.
                while matches!(out.last(), Some(b' ' | b'\t')) {
                    out.pop();
                }
                out.push(b' ');
                i = j;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
}

/// What joins a field's lines (§2.1): `", "`, except for `Cookie`. An HTTP/2 client may send
/// one `Cookie` in several fields, which RFC 9113 §8.2.3 joins with `"; "` into the one field
/// the message has (a signer that saw the request whole signed that; peergate hands the app the
/// same joined field, so what is verified is what the app reads).
fn field_separator(name: &str) -> &'static [u8] {
    if name == "cookie" {
        b"; "
    } else {
        b", "
    }
}

/// Field lines joined with `separator`, each canonicalized. Returns false when there was none.
fn write_combined<'v>(
    lines: impl Iterator<Item = &'v [u8]>,
    separator: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let mut any = false;
    for line in lines {
        if any {
            out.extend_from_slice(separator);
        }
        any = true;
        push_canonical_line(out, line);
    }
    any
}

/// The canonical value of field lines (§2.1), e.g. for tests and diagnostics.
pub fn canonical_field_value<'v>(lines: impl IntoIterator<Item = &'v [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    write_combined(lines.into_iter(), b", ", &mut out);
    out
}

fn write_path(uri: &Uri, out: &mut Vec<u8>) {
    let path = uri.path();
    if path.is_empty() {
        out.push(b'/');
    } else {
        out.extend_from_slice(path.as_bytes());
    }
}

/// What `application/x-www-form-urlencoded` leaves unencoded: ASCII alphanumerics and `*-._`.
const FORM_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// The name/value pairs of a query, undecoded, as the URL standard's form parser splits them.
fn form_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_once('=').unwrap_or((s, "")))
}

/// Decodes a form-encoded string (`+` is a space, `%XX` a byte) and percent-encodes it again
/// (§2.2.8), as the URL standard's form parser does: decoded bytes that are not UTF-8 become
/// U+FFFD (`%EF%BF%BD`), which is what other implementations sign. So `%FF` and `%FE` share an
/// encoding; a signature that must pin the exact bytes covers `@query` (peergate's inbound side
/// requires it, or `@target-uri`, whatever else is covered).
fn form_reencode(s: &str) -> String {
    let plus_free: std::borrow::Cow<'_, str> = if s.contains('+') {
        s.replace('+', " ").into()
    } else {
        s.into()
    };
    let bytes: Vec<u8> = percent_decode(plus_free.as_bytes()).collect();
    let mut out = String::with_capacity(bytes.len());
    out.extend(utf8_percent_encode(
        &String::from_utf8_lossy(&bytes),
        FORM_ENCODE,
    ));
    out
}

/// The default port of a scheme, dropped from `@authority` (§2.2.3).
pub fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// A request's authority: lowercase host and explicit port, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lowercase host name, IPv4 address or bracketed IPv6 literal.
    pub host: String,
    /// The explicit port, if one was given.
    pub port: Option<u16>,
}

/// Why no authority could be read from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorityError {
    /// No authority in the URI and no Host header.
    Missing,
    /// An authority that is not `host[:port]`.
    Invalid(String),
}

impl std::error::Error for AuthorityError {}

impl fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthorityError::Missing => {
                f.write_str("the request has no Host header and no authority in its target")
            }
            AuthorityError::Invalid(why) => f.write_str(why),
        }
    }
}

impl Authority {
    /// The authority of a request: the URI's, when it has one (HTTP/2 `:authority`,
    /// absolute-form), else the one Host header.
    pub fn of_request(req: &RequestView<'_>) -> Result<Authority, AuthorityError> {
        if let Some(a) = req.uri.authority() {
            return Authority::parse(a.as_str());
        }
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host = hosts.next().ok_or(AuthorityError::Missing)?;
        if hosts.next().is_some() {
            return Err(AuthorityError::Invalid(
                "the request has more than one Host header".into(),
            ));
        }
        let text = host
            .to_str()
            .map_err(|_| AuthorityError::Invalid("the Host header is not visible ASCII".into()))?;
        Authority::parse(text)
    }

    /// The authority text as the request carries it (the URI's, else the one Host header,
    /// without surrounding whitespace), for `@target-uri`. `None` where [`Self::of_request`]
    /// fails.
    pub fn raw_of_request<'a>(req: &RequestView<'a>) -> Option<&'a str> {
        if let Some(a) = req.uri.authority() {
            return Some(a.as_str());
        }
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host = hosts.next()?;
        if hosts.next().is_some() {
            return None;
        }
        std::str::from_utf8(trim_ows(host.to_str().ok()?.as_bytes())).ok()
    }

    /// Parses `host[:port]`; the host is lowercased. Refuses user info, empty hosts, characters
    /// that cannot appear in a host, and ports that are not a number up to 65535.
    pub fn parse(text: &str) -> Result<Authority, AuthorityError> {
        let text = std::str::from_utf8(trim_ows(text.as_bytes())).unwrap_or_default();
        let bad = |why: &str| AuthorityError::Invalid(format!("authority {}: {why}", echo(text)));
        if text.contains('@') {
            return Err(bad("user information is not allowed"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("unterminated IPv6 literal"))?;
            // An IPv6 address, as RFC 3986's IP-literal has it (IPvFuture and zone ids are
            // refused): `[.]` or `[1.2.3.4]` name no host a client could have meant.
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("invalid IPv6 literal"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("unexpected text after the IPv6 literal"))?,
                ),
            };
            (text.get(..inside.len() + 2).unwrap_or_default(), port)
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if !host.starts_with('[')
            && !host.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            })
        {
            return Err(bad("invalid character in host"));
        }
        let port = match port {
            None | Some("") => None,
            Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().map_err(|_| bad("port out of range"))?)
            }
            Some(_) => return Err(bad("the port is not a number")),
        };
        Ok(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The port in effect: the explicit one, else the scheme's default.
    pub fn effective_port(&self, scheme: &str) -> Option<u16> {
        self.port.or_else(|| default_port(scheme))
    }

    /// The `@authority` value: host, then `:port` unless it is the scheme's default.
    pub fn to_component(&self, scheme: &str) -> String {
        let mut out = Vec::new();
        self.write(scheme, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn write(&self, scheme: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(self.host.as_bytes());
        if let Some(p) = self.port {
            if Some(p) != default_port(scheme) {
                out.push(b':');
                out.extend_from_slice(p.to_string().as_bytes());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn line(id: &str, req: &RequestView<'_>) -> Result<String, ComponentError> {
        let id = ComponentId::parse(id)?;
        let mut out = Vec::new();
        id.write_lines(
            MessageView::Request(req),
            &[],
            &mut CoveredInput::default(),
            &mut out,
        )?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn authority_parsing() {
        let a = Authority::parse("Example.COM:443").unwrap();
        assert_eq!(a.host, "example.com");
        assert_eq!(a.port, Some(443));
        assert_eq!(a.to_component("https"), "example.com");
        assert_eq!(a.to_component("http"), "example.com:443");
        assert_eq!(
            Authority::parse("[::1]:8080")
                .unwrap()
                .to_component("https"),
            "[::1]:8080"
        );
        assert_eq!(
            Authority::parse("example.com:")
                .unwrap()
                .to_component("https"),
            "example.com"
        );
        for bad in [
            "",
            ":80",
            "user@host",
            "host:abc",
            "host:99999",
            "ho st",
            "[::1",
            "[zz]",
            "[.]",
            "[1.2.3.4]",
            "[::1%25eth0]",
            "[::1]x",
            "a:b:c",
        ] {
            assert!(Authority::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn obs_fold_and_trim() {
        let v = canonical_field_value([&b"Obsolete\r\n    line folding."[..]]);
        assert_eq!(v, b"Obsolete line folding.");
        let v = canonical_field_value([&b"  a  \t"[..], &b"b"[..]]);
        assert_eq!(v, b"a, b");
        let v = canonical_field_value([&b"a \n\tb"[..]]);
        assert_eq!(v, b"a b");
        // A break without folding whitespace stays and is refused later.
        let v = canonical_field_value([&b"a\nb"[..]]);
        assert_eq!(v, b"a\nb");
    }

    #[test]
    fn identifier_validation() {
        for bad in [
            "@foo",
            "\"@foo\"",
            "\"@signature-params\"",
            "\"Content-Type\"",
            "\"x\";sf;bs",
            "\"x\";key=\"a\";bs",
            "\"@method\";sf",
            "\"@query-param\"",
            "\"@query-param\";name=1",
            "\"x\";name=\"a\"",
            "\"x\";tr",
            "\"x\";sf=?0",
            "\"x\";key=1",
            "\"x\";unknown",
            "\"\"",
        ] {
            assert!(ComponentId::parse(bad).is_err(), "{bad} accepted");
        }
        let id = ComponentId::parse("\"x\";req;sf").unwrap();
        assert!(id.same_component(&ComponentId::parse("\"x\";sf;req").unwrap()));
        assert!(!id.same_component(&ComponentId::parse("\"x\";sf").unwrap()));
        assert_eq!(id.as_serialized(), "\"x\";req;sf");
    }

    #[test]
    fn request_only_and_response_only() {
        let m = Method::GET;
        let u: Uri = "/a".parse().unwrap();
        let h = HeaderMap::new();
        let req = RequestView::new(&m, &u, &h, "https");
        assert!(matches!(
            line("\"@status\"", &req),
            Err(ComponentError::InvalidValue { .. })
        ));
        assert!(line("\"@method\";req", &req).is_err());
        let resp = ResponseView {
            status: StatusCode::OK,
            headers: &h,
            request: None,
        };
        let mut out = Vec::new();
        let status = ComponentId::parse("\"@status\"").unwrap();
        status
            .write_lines(
                MessageView::Response(&resp),
                &[],
                &mut CoveredInput::default(),
                &mut out,
            )
            .unwrap();
        assert_eq!(out, b"\"@status\": 200\n");
        let method = ComponentId::parse("\"@method\"").unwrap();
        assert!(method
            .write_lines(
                MessageView::Response(&resp),
                &[],
                &mut CoveredInput::default(),
                &mut Vec::new()
            )
            .is_err());
        let method_req = ComponentId::parse("\"@method\";req").unwrap();
        assert!(matches!(
            method_req.write_lines(
                MessageView::Response(&resp),
                &[],
                &mut CoveredInput::default(),
                &mut Vec::new()
            ),
            Err(ComponentError::Missing { .. })
        ));
    }

    #[test]
    fn serialization_matches_sfv() {
        for text in [
            r#""a""#,
            r#""x";sf;req"#,
            r#""@query-param";name="a \"b\" \\c""#,
            r#""x";key="k\"";bs"#,
        ] {
            let item: Item = Parser::new(text).parse().unwrap();
            let mut out = String::new();
            push_sf_string(&mut out, item.bare_item.as_string().unwrap().as_str());
            push_params(
                &mut out,
                item.params.iter().map(|(k, v)| (k.as_ref(), v.into())),
            );
            assert_eq!(out, item.serialize(), "{text}");
        }
        let id = ComponentId::parse(r#""@query-param";name="a \"b\"""#).unwrap();
        assert_eq!(id.name(), "@query-param");
        assert_eq!(id.as_serialized(), r#""@query-param";name="a \"b\"""#);
    }

    /// The identifiers kept serialized are what serializing them gives, name and all, and
    /// one with parameters is not taken for its plain form.
    #[test]
    fn common_identifiers_are_their_serialization() {
        for common in COMMON_IDS {
            let item: Item = Parser::new(common).parse().unwrap();
            assert_eq!(item.serialize(), common);
            let name = item.bare_item.as_string().unwrap().as_str();
            let id = ComponentId::new(name).unwrap();
            assert!(matches!(id.serialized, Cow::Borrowed(_)), "{common}");
            assert_eq!((id.as_serialized(), id.name()), (common, name));
        }
        let id = ComponentId::parse(r#""content-type";sf"#).unwrap();
        assert_eq!(id.as_serialized(), r#""content-type";sf"#);
        assert!(!id.is_plain_field("content-type") && id.name() == "content-type");
    }

    #[test]
    fn query_param_reencoding() {
        assert_eq!(form_reencode("a+b%20c"), "a%20b%20c");
        // Not UTF-8: U+FFFD, as the URL standard's parser gives it.
        assert_eq!(form_reencode("%FF"), "%EF%BF%BD");
        assert_eq!(form_reencode("%C3%28"), "%EF%BF%BD%28");
        assert_eq!(form_reencode("%zz"), "%25zz");
        assert_eq!(form_reencode("~"), "%7E");
    }
}
