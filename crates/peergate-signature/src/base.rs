//! The signature base (RFC 9421 §2.5): the exact bytes that are signed and verified.
//!
//! One line per covered component, `"<identifier>": <value>`, joined by LF, then the
//! `"@signature-params"` line whose value is the serialized inner list of the
//! `Signature-Input` member, with no trailing newline. The base is built as bytes, as field
//! values come, but holds only ASCII: a value with any other byte (obs-text, UTF-8) is refused,
//! as §2.5 requires, and such a field is covered as a Byte Sequence (`;bs`, §2.1.3) instead.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use sfv::{Item, KeyRef, ListSerializer, Parameters, RefBareItem};

#[cfg(doc)]
use crate::components::MAX_COVERED_INPUT;
use crate::components::{
    push_params, ComponentError, ComponentId, CoveredInput, FieldOverride, MessageView,
};

/// Refuses a covered list that names the same component twice (§2.5).
pub fn check_duplicates(components: &[ComponentId]) -> Result<(), ComponentError> {
    for (i, c) in components.iter().enumerate() {
        if components
            .iter()
            .take(i)
            .any(|earlier| earlier.same_component(c))
        {
            return Err(ComponentError::Duplicate {
                id: crate::components::echo(c.as_serialized()),
            });
        }
    }
    Ok(())
}

/// The `@signature-params` value: the inner list of component identifiers with the signature
/// parameters, in the given order, serialized as a structured field (RFC 8941 §4.1.1.1).
///
/// For verification, pass the items and parameters as parsed from `Signature-Input`: order and
/// unknown parameters are kept, and the value is the canonical serialization, as §2.3 asks.
pub fn serialize_inner_list<'i>(
    items: impl IntoIterator<Item = &'i Item>,
    params: &Parameters,
) -> String {
    let mut out = String::with_capacity(256);
    let mut ser = ListSerializer::with_buffer(&mut out);
    {
        let mut inner = ser.inner_list();
        inner.items(items);
        let _ = inner.finish().parameters(params);
    }
    let _ = ser.finish();
    out
}

/// [`serialize_inner_list`] for parsed identifiers: reuses their serialized form instead of
/// serializing every name again (this runs on every verified request).
pub fn serialize_components<'p>(
    components: &[ComponentId],
    params: impl IntoIterator<Item = (&'p KeyRef, RefBareItem<'p>)>,
) -> String {
    let len: usize = components.iter().map(|c| c.as_serialized().len() + 1).sum();
    let mut out = String::with_capacity(len + 2 + 160);
    out.push('(');
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(c.as_serialized());
    }
    out.push(')');
    push_params(&mut out, params);
    out
}

/// Builds the signature base for `components` over `msg`.
///
/// `signature_params` is the `@signature-params` value (see [`serialize_inner_list`]).
/// `overrides` replaces fields of `msg` (the signer's new `Content-Digest`).
///
/// Errors: a duplicate identifier, a covered component missing from the message, a value that
/// cannot be signed (line break, unparsable structured field, ...), an identifier that does not
/// apply to this message (`@status` on a request, `req` on a request, ...), components that
/// would read more than [`MAX_COVERED_INPUT`] bytes.
pub fn signature_base(
    msg: MessageView<'_>,
    components: &[ComponentId],
    signature_params: &str,
    overrides: &[FieldOverride<'_>],
) -> Result<Vec<u8>, ComponentError> {
    check_duplicates(components)?;
    base_of_distinct(msg, components, signature_params, overrides)
}

/// [`signature_base`] for components already checked with [`check_duplicates`]: verification
/// checks them first, among the cheap checks, and should not pay for the check twice.
pub(crate) fn base_of_distinct(
    msg: MessageView<'_>,
    components: &[ComponentId],
    signature_params: &str,
    overrides: &[FieldOverride<'_>],
) -> Result<Vec<u8>, ComponentError> {
    let mut budget = CoveredInput::default();
    let mut out = Vec::with_capacity(64 * (components.len() + 1) + signature_params.len());
    for c in components {
        c.write_lines(msg, overrides, &mut budget, &mut out)?;
    }
    out.extend_from_slice(b"\"@signature-params\": ");
    out.extend_from_slice(signature_params.as_bytes());
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use sfv::Parser;

    #[test]
    fn inner_list_serialization_keeps_order_and_unknown_params() {
        let dict: sfv::Dictionary = Parser::new(
            r#"s=( "b"   "a";req;sf );zz=1;created=2;keyid="k";flag;f=?0;d=1.50;b=:AA==:;t=tok"#,
        )
        .parse()
        .unwrap();
        let Some(sfv::ListEntry::InnerList(inner)) = dict.get("s") else {
            panic!("not an inner list")
        };
        assert_eq!(
            serialize_inner_list(&inner.items, &inner.params),
            r#"("b" "a";req;sf);zz=1;created=2;keyid="k";flag;f=?0;d=1.5;b=:AA==:;t=tok"#
        );
        let empty = serialize_inner_list(&[], &Parameters::new());
        assert_eq!(empty, "()");
        // The fast path gives the same text.
        let ids: Vec<ComponentId> = inner
            .items
            .iter()
            .map(|i| ComponentId::from_item(i).unwrap())
            .collect();
        let params = || inner.params.iter().map(|(k, v)| (k.as_ref(), v.into()));
        assert_eq!(
            serialize_components(&ids, params()),
            serialize_inner_list(&inner.items, &inner.params)
        );
        assert_eq!(serialize_components(&[], []), "()");
    }

    /// What the components read is bounded per signature, counting a field once for every
    /// component that reads it: the parse a component does cannot be multiplied by covering
    /// one large field many times.
    #[test]
    fn covered_input_is_bounded() {
        use crate::components::{MessageView, RequestView, MAX_COVERED_INPUT};
        use http::{HeaderMap, HeaderValue, Method, Uri};

        let members = |n: usize| -> String {
            (0..n)
                .map(|i| format!("k{i:05}=1"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let base = |dict: &str, query: &str, ids: &[String]| {
            let mut h = HeaderMap::new();
            h.insert("x", HeaderValue::from_str(dict).unwrap());
            let u: Uri = format!("/p?{query}").parse().unwrap();
            let m = Method::GET;
            let req = RequestView::new(&m, &u, &h, "https");
            let ids: Vec<ComponentId> =
                ids.iter().map(|i| ComponentId::parse(i).unwrap()).collect();
            signature_base(MessageView::Request(&req), &ids, "()", &[])
        };
        // 64 members of 9 bytes and their ", ": 702 bytes, read by each of 64 components.
        let dict = members(64);
        let keys: Vec<String> = (0..64).map(|i| format!("\"x\";key=\"k{i:05}\"")).collect();
        assert!(base(&dict, "a=1", &keys).is_ok());
        // The same field four times as large: each parse is the same work, 64 of them not.
        let dict = members(256);
        assert!(dict.len() * 64 > MAX_COVERED_INPUT);
        match base(&dict, "a=1", &keys) {
            // Refused at the component that passes the bound, before it parses the field.
            Err(ComponentError::TooLarge { bytes }) => {
                assert!(bytes > MAX_COVERED_INPUT && bytes <= MAX_COVERED_INPUT + dict.len())
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // One read of a large field is fine; the budget is for repeats.
        let big = members(5000);
        assert!(big.len() < MAX_COVERED_INPUT);
        assert!(base(&big, "a=1", &["\"x\";sf".to_string()]).is_ok());
        assert!(matches!(
            base(
                &big,
                "a=1",
                &["\"x\";sf".to_string(), "\"x\";bs".to_string()]
            ),
            Err(ComponentError::TooLarge { .. })
        ));
        // @query-param scans the query once per component.
        let query: String = (0..3000).map(|i| format!("q{i}=1&")).collect();
        let params: Vec<String> = (0..8)
            .map(|i| format!("\"@query-param\";name=\"q{i}\""))
            .collect();
        assert!(base("a=1", &query, params.get(..1).unwrap()).is_ok());
        assert!(matches!(
            base("a=1", &query, &params),
            Err(ComponentError::TooLarge { .. })
        ));
    }

    #[test]
    fn duplicates_refused() {
        let a = ComponentId::parse("\"a\";sf;req").unwrap();
        let b = ComponentId::parse("\"a\";req;sf").unwrap();
        assert!(check_duplicates(std::slice::from_ref(&a)).is_ok());
        assert!(matches!(
            check_duplicates(&[a, b]),
            Err(ComponentError::Duplicate { .. })
        ));
    }
}
