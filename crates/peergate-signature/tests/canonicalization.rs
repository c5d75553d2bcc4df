//! RFC 9421 §2 canonicalization vectors (section 4 of the conformance file), each expected
//! base line checked exactly, plus the edge cases of derived components, `req` and `@status`.

mod common;

use common::Req;
use http::{HeaderMap, StatusCode};
use peergate_signature::{
    base::signature_base, ComponentError, ComponentId, FieldOverride, MessageView, ResponseView,
};

/// The base lines `id` produces (everything before the `@signature-params` line).
fn lines_with(
    msg: MessageView<'_>,
    id: &str,
    overrides: &[FieldOverride<'_>],
) -> Result<String, ComponentError> {
    let id = ComponentId::parse(id)?;
    let base = signature_base(msg, &[id], "()", overrides)?;
    let text = String::from_utf8(base).unwrap();
    let lines = text
        .strip_suffix("\"@signature-params\": ()")
        .expect("base ends with the params line");
    Ok(lines.strip_suffix('\n').unwrap_or(lines).to_owned())
}

fn line(req: &Req, id: &str) -> String {
    lines_with(MessageView::Request(&req.view()), id, &[]).unwrap()
}

fn err(req: &Req, id: &str) -> ComponentError {
    lines_with(MessageView::Request(&req.view()), id, &[]).unwrap_err()
}

fn section_2_1_request() -> Req {
    Req::new("GET", "/")
        .header("host", "www.example.com")
        .header("date", "Tue, 20 Apr 2021 02:07:56 GMT")
        .header("x-ows-header", "   Leading and trailing whitespace.")
        .header("cache-control", "max-age=60")
        .header("cache-control", "   must-revalidate")
        .header("example-dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)")
        .header("x-empty-header", "")
}

#[test]
fn s2_1_http_fields() {
    let req = section_2_1_request();
    assert_eq!(line(&req, r#""host""#), r#""host": www.example.com"#);
    assert_eq!(
        line(&req, r#""date""#),
        r#""date": Tue, 20 Apr 2021 02:07:56 GMT"#
    );
    assert_eq!(
        line(&req, r#""x-ows-header""#),
        r#""x-ows-header": Leading and trailing whitespace."#
    );
    assert_eq!(
        line(&req, r#""cache-control""#),
        r#""cache-control": max-age=60, must-revalidate"#
    );
    assert_eq!(
        line(&req, r#""example-dict""#),
        r#""example-dict": a=1,    b=2;x=1;y=2,   c=(a   b   c)"#
    );
    assert_eq!(line(&req, r#""x-empty-header""#), "\"x-empty-header\": ");
}

#[test]
fn s2_1_obsolete_line_folding() {
    // `http::HeaderValue` cannot hold a line break, so the folded value is fed as a raw field
    // line through an override: the path the base builder takes is the same.
    let req = Req::new("GET", "/");
    let folded = b"Obsolete\r\n    line folding.";
    let over = [FieldOverride {
        name: "x-obs-fold-header",
        value: folded,
    }];
    assert_eq!(
        lines_with(
            MessageView::Request(&req.view()),
            r#""x-obs-fold-header""#,
            &over
        )
        .unwrap(),
        r#""x-obs-fold-header": Obsolete line folding."#
    );
    // A bare line break (no folding whitespace) cannot be signed.
    let broken = [FieldOverride {
        name: "x-broken",
        value: b"a\r\nb",
    }];
    assert!(matches!(
        lines_with(MessageView::Request(&req.view()), r#""x-broken""#, &broken),
        Err(ComponentError::InvalidValue { .. })
    ));
}

#[test]
fn s2_1_1_sf() {
    let req = section_2_1_request();
    assert_eq!(
        line(&req, r#""example-dict";sf"#),
        r#""example-dict";sf: a=1, b=2;x=1;y=2, c=(a b c)"#
    );
    // Not a structured field: refused, not signed as text.
    let bad = Req::new("GET", "/").header("example-dict", "a=(");
    assert!(matches!(
        err(&bad, r#""example-dict";sf"#),
        ComponentError::InvalidValue { .. }
    ));
}

/// A field of no known structured type: a value that is a Dictionary, a List, or both with one
/// serialization is read; one that is both and reads differently (a repeated member, which a
/// Dictionary drops and a List keeps) is refused, naming why.
#[test]
fn s2_1_1_sf_on_a_field_of_unknown_type() {
    let dict_only = Req::new("GET", "/").header("x-unknown", "a=1,   b=?0");
    assert_eq!(
        line(&dict_only, r#""x-unknown";sf"#),
        r#""x-unknown";sf: a=1, b=?0"#
    );
    let list_only = Req::new("GET", "/").header("x-unknown", "\"s\",  Tok/en, 2");
    assert_eq!(
        line(&list_only, r#""x-unknown";sf"#),
        r#""x-unknown";sf: "s", Tok/en, 2"#
    );
    let both_alike = Req::new("GET", "/").header("x-unknown", "a;q=1,b");
    assert_eq!(
        line(&both_alike, r#""x-unknown";sf"#),
        r#""x-unknown";sf: a;q=1, b"#
    );
    for repeated in ["a, b, a", "a;x=1, a"] {
        let req = Req::new("GET", "/").header("x-unknown", repeated);
        match err(&req, r#""x-unknown";sf"#) {
            ComponentError::InvalidValue { why, .. } => {
                assert!(
                    why.contains("Dictionary and as a List"),
                    "{repeated}: {why}"
                )
            }
            other => panic!("{repeated}: {other:?}"),
        }
    }
    // A field whose type is known is read as that type, a repeated member and all.
    let vary = Req::new("GET", "/").header("vary", "a, b, a");
    assert_eq!(line(&vary, r#""vary";sf"#), r#""vary";sf: a, b, a"#);
}

#[test]
fn s2_1_2_key() {
    let req = Req::new("GET", "/").header("example-dict", " a=1, b=2;x=1;y=2, c=(a   b    c), d");
    assert_eq!(
        line(&req, r#""example-dict";key="a""#),
        r#""example-dict";key="a": 1"#
    );
    assert_eq!(
        line(&req, r#""example-dict";key="d""#),
        r#""example-dict";key="d": ?1"#
    );
    assert_eq!(
        line(&req, r#""example-dict";key="b""#),
        r#""example-dict";key="b": 2;x=1;y=2"#
    );
    assert_eq!(
        line(&req, r#""example-dict";key="c""#),
        r#""example-dict";key="c": (a b c)"#
    );
    assert!(matches!(
        err(&req, r#""example-dict";key="zz""#),
        ComponentError::Missing { .. }
    ));
}

#[test]
fn s2_1_3_bs() {
    let two = Req::new("GET", "/")
        .header("example-header", "value, with, lots")
        .header("example-header", "of, commas");
    assert_eq!(
        line(&two, r#""example-header";bs"#),
        r#""example-header";bs: :dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:"#
    );
    let one = Req::new("GET", "/").header("example-header", "value, with, lots, of, commas");
    assert_eq!(
        line(&one, r#""example-header";bs"#),
        r#""example-header";bs: :dmFsdWUsIHdpdGgsIGxvdHMsIG9mLCBjb21tYXM=:"#
    );
}

#[test]
fn s2_2_8_query_param() {
    let req = Req::new(
        "GET",
        "/parameters?var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something",
    );
    assert_eq!(
        line(&req, r#""@query-param";name="var""#),
        r#""@query-param";name="var": this%20is%20a%20big%0Amultiline%20value"#
    );
    assert_eq!(
        line(&req, r#""@query-param";name="bar""#),
        r#""@query-param";name="bar": with%20plus%20whitespace"#
    );
    assert_eq!(
        line(&req, r#""@query-param";name="fa%C3%A7ade%22%3A%20""#),
        r#""@query-param";name="fa%C3%A7ade%22%3A%20": something"#
    );

    let req = Req::new("GET", "/path?param=value&foo=bar&baz=batman&qux=");
    assert_eq!(
        line(&req, r#""@query-param";name="baz""#),
        r#""@query-param";name="baz": batman"#
    );
    assert_eq!(
        line(&req, r#""@query-param";name="qux""#),
        "\"@query-param\";name=\"qux\": "
    );
    assert_eq!(
        line(&req, r#""@query-param";name="param""#),
        r#""@query-param";name="param": value"#
    );
    assert!(matches!(
        err(&req, r#""@query-param";name="nope""#),
        ComponentError::Missing { .. }
    ));
}

/// §2.2.8: "If a parameter name occurs multiple times in a request, the named query parameter
/// MUST NOT be included."
#[test]
fn s2_2_8_a_repeated_query_param_cannot_be_covered() {
    let req = Req::new("GET", "/p?a=1&b=2&a=x+y");
    assert!(matches!(
        err(&req, r#""@query-param";name="a""#),
        ComponentError::InvalidValue { .. }
    ));
    assert_eq!(
        line(&req, r#""@query-param";name="b""#),
        "\"@query-param\";name=\"b\": 2"
    );
}

/// Bytes that are not UTF-8 decode to U+FFFD, names and values, as the URL standard's form
/// parser (which §2.2.8 names) gives them.
#[test]
fn s2_2_8_query_param_bytes_that_are_not_utf8() {
    let req = Req::new("GET", "/p?r=%FF&%FE=2&s=%C3%28");
    assert_eq!(
        line(&req, r#""@query-param";name="r""#),
        "\"@query-param\";name=\"r\": %EF%BF%BD"
    );
    assert_eq!(
        line(&req, r#""@query-param";name="s""#),
        "\"@query-param\";name=\"s\": %EF%BF%BD%28"
    );
    assert_eq!(
        line(&req, r#""@query-param";name="%EF%BF%BD""#),
        "\"@query-param\";name=\"%EF%BF%BD\": 2"
    );
}

#[test]
fn s2_2_derived_components() {
    let req = Req::new("POST", "/path?param=value").header("host", "www.example.com");
    assert_eq!(line(&req, r#""@method""#), r#""@method": POST"#);
    assert_eq!(
        line(&req, r#""@target-uri""#),
        r#""@target-uri": https://www.example.com/path?param=value"#
    );
    assert_eq!(
        line(&req, r#""@authority""#),
        r#""@authority": www.example.com"#
    );
    assert_eq!(line(&req, r#""@scheme""#), r#""@scheme": https"#);
    assert_eq!(
        line(&req, r#""@request-target""#),
        r#""@request-target": /path?param=value"#
    );
    assert_eq!(line(&req, r#""@path""#), r#""@path": /path"#);
    assert_eq!(line(&req, r#""@query""#), r#""@query": ?param=value"#);

    let mut http = req.clone();
    http.scheme = "HTTP".to_owned();
    assert_eq!(line(&http, r#""@scheme""#), r#""@scheme": http"#);
}

#[test]
fn derived_component_edges() {
    // No query: `?`. Empty query: `?`.
    let req = Req::new("GET", "/a").header("host", "h");
    assert_eq!(line(&req, r#""@query""#), r#""@query": ?"#);
    let req = Req::new("GET", "/a?").header("host", "h");
    assert_eq!(line(&req, r#""@query""#), r#""@query": ?"#);
    // Path as received, no normalization.
    let req = Req::new("GET", "/a/../b/%7e/").header("host", "h");
    assert_eq!(line(&req, r#""@path""#), r#""@path": /a/../b/%7e/"#);
    // The URI's authority wins over Host; lowercased; default port dropped.
    let req = Req::new("GET", "https://WWW.Example.com:443/x").header("host", "other.example");
    assert_eq!(
        line(&req, r#""@authority""#),
        r#""@authority": www.example.com"#
    );
    // @target-uri is the target URI as received (RFC 9110 §7.1): not normalized.
    assert_eq!(
        line(&req, r#""@target-uri""#),
        r#""@target-uri": https://WWW.Example.com:443/x"#
    );
    let host = Req::new("GET", "/x?q").header("host", " Alice.Example.org:443 ");
    assert_eq!(
        line(&host, r#""@target-uri""#),
        r#""@target-uri": https://Alice.Example.org:443/x?q"#
    );
    assert_eq!(
        line(&host, r#""@authority""#),
        r#""@authority": alice.example.org"#
    );
    // A non-default port stays; http's default is 80.
    let mut req = Req::new("GET", "/").header("host", "Example.com:8443");
    assert_eq!(
        line(&req, r#""@authority""#),
        r#""@authority": example.com:8443"#
    );
    req.set("host", "example.com:80");
    req.scheme = "http".to_owned();
    assert_eq!(
        line(&req, r#""@authority""#),
        r#""@authority": example.com"#
    );
    req.scheme = "https".to_owned();
    assert_eq!(
        line(&req, r#""@authority""#),
        r#""@authority": example.com:80"#
    );
    // No Host, no authority: missing, never empty. Two Host lines: refused.
    let req = Req::new("GET", "/");
    assert!(matches!(
        err(&req, r#""@authority""#),
        ComponentError::Missing { .. }
    ));
    let req = Req::new("GET", "/")
        .header("host", "a.example")
        .header("host", "b.example");
    assert!(matches!(
        err(&req, r#""@authority""#),
        ComponentError::InvalidValue { .. }
    ));
    // A missing field is an error, not an empty value.
    assert!(matches!(
        err(&req, r#""x-absent""#),
        ComponentError::Missing { .. }
    ));
    // @status on a request is an error; so is req.
    assert!(err(&req, r#""@status""#).to_string().contains("@status"));
    assert!(matches!(
        err(&req, r#""host";req"#),
        ComponentError::InvalidIdentifier { .. }
    ));
}

/// RFC 9421 §2.5: a base holds no byte outside ASCII ("produce an error if the output string
/// contains any non-ASCII characters"); such a field is covered as a Byte Sequence instead.
#[test]
fn non_ascii_field_values_are_signed_only_as_bytes() {
    let mut req = Req::new("GET", "/");
    req.add("x-latin1", b"caf\xe9 ");
    let id = ComponentId::parse(r#""x-latin1""#).unwrap();
    let e = signature_base(MessageView::Request(&req.view()), &[id], "()", &[]).unwrap_err();
    assert!(matches!(e, ComponentError::InvalidValue { .. }), "{e}");
    assert!(e.to_string().contains("outside ASCII"), "{e}");
    assert!(e.to_string().contains(";bs"), "{e}");
    // UTF-8 is outside ASCII too.
    let mut utf8 = Req::new("GET", "/");
    utf8.add("x-utf8", "caf\u{e9}".as_bytes());
    assert!(matches!(
        err(&utf8, r#""x-utf8""#),
        ComponentError::InvalidValue { .. }
    ));
    // As bs it is base64 of the raw bytes.
    assert_eq!(
        line(&req, r#""x-latin1";bs"#),
        r#""x-latin1";bs: :Y2Fm6Q==:"#
    );
    // As sf it is not a structured field.
    assert!(matches!(
        err(&req, r#""x-latin1";sf"#),
        ComponentError::InvalidValue { .. }
    ));
}

#[test]
fn responses_status_and_req() {
    let req = Req::new("POST", "/foo?param=Value&Pet=dog")
        .header("host", "example.com")
        .header("content-type", "application/json");
    let view = req.view();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "text/plain".parse().unwrap());
    let resp = ResponseView {
        status: StatusCode::OK,
        headers: &headers,
        request: Some(&view),
    };
    let msg = MessageView::Response(&resp);
    assert_eq!(
        lines_with(msg, r#""@status""#, &[]).unwrap(),
        r#""@status": 200"#
    );
    assert_eq!(
        lines_with(msg, r#""content-type""#, &[]).unwrap(),
        r#""content-type": text/plain"#
    );
    assert_eq!(
        lines_with(msg, r#""content-type";req"#, &[]).unwrap(),
        r#""content-type";req: application/json"#
    );
    assert_eq!(
        lines_with(msg, r#""@authority";req"#, &[]).unwrap(),
        r#""@authority";req: example.com"#
    );
    assert_eq!(
        lines_with(msg, r#""@query-param";req;name="Pet""#, &[]).unwrap(),
        r#""@query-param";req;name="Pet": dog"#
    );
    // Request components need req on a response; the request has no status.
    assert!(lines_with(msg, r#""@method""#, &[]).is_err());
    assert!(lines_with(msg, r#""@status";req"#, &[]).is_err());
    // Without the request, req components are missing.
    let alone = ResponseView {
        status: StatusCode::NOT_FOUND,
        headers: &headers,
        request: None,
    };
    assert!(matches!(
        lines_with(MessageView::Response(&alone), r#""@method";req"#, &[]),
        Err(ComponentError::Missing { .. })
    ));
    assert_eq!(
        lines_with(MessageView::Response(&alone), r#""@status""#, &[]).unwrap(),
        r#""@status": 404"#
    );
}

#[test]
fn duplicate_identifiers_are_refused() {
    let req = Req::new("GET", "/").header("host", "h");
    let ids: Vec<ComponentId> = [r#""@method""#, r#""host""#, r#""@method""#]
        .iter()
        .map(|s| ComponentId::parse(s).unwrap())
        .collect();
    assert!(matches!(
        signature_base(MessageView::Request(&req.view()), &ids, "()", &[]),
        Err(ComponentError::Duplicate { .. })
    ));
    // Same name, different parameters: distinct components.
    let req = Req::new("GET", "/").header("example-dict", "a=1, b=2");
    let ids: Vec<ComponentId> = [r#""example-dict";key="a""#, r#""example-dict";key="b""#]
        .iter()
        .map(|s| ComponentId::parse(s).unwrap())
        .collect();
    assert!(signature_base(MessageView::Request(&req.view()), &ids, "()", &[]).is_ok());
}
