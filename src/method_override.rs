//! The method the app will act on, when a request names another one than its own.
//!
//! Rails (Rack::MethodOverride), Laravel, Symfony and Express's `method-override` take a POST
//! as the method a field, a `_method` query parameter or a `_method` in its body names. A
//! peer's `allow.methods` must hold for those methods too (`inbound.rs`); this module finds
//! them, read as those frameworks read them.

use crate::app_request::same_but_underscores;

/// Fields with which a request names another method for the app to act on than its own.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Each method-override field of the request (see [`METHOD_OVERRIDES`]), `_` look-alikes
/// included (Rack on Puma reads `x_http_method_override` as the real one): its name as sent
/// and the method it names, upper-cased as the frameworks read it. Walks every field: only for
/// peers whose methods are narrowed.
pub fn fields(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, Vec<u8>)> {
    headers.iter().filter_map(|(name, value)| {
        let name = name.as_str();
        METHOD_OVERRIDES
            .iter()
            .any(|o| same_but_underscores(o, name))
            .then(|| (name, value.as_bytes().trim_ascii().to_ascii_uppercase()))
    })
}

/// The values of the request's `_method` query parameters (Laravel and Symfony take a POST's
/// method from one), decoded as a form is and upper-cased. A `_method` in the body is
/// [`body_parameters`]'s: the body is read after authorization.
pub fn query_parameters(query: Option<&str>) -> impl Iterator<Item = Vec<u8>> + '_ {
    form_method_parameters(query.unwrap_or_default().as_bytes())
}

/// The `_method` parameters of `application/x-www-form-urlencoded` data, decoded and upper-cased.
/// Nothing is allocated for the other parameters (a body may hold millions).
fn form_method_parameters(form: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    form.split(|&b| b == b'&').filter_map(|pair| {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        // A `+` decodes to a space, which `_method` has none of.
        let named = !name.contains(&b'+')
            && percent_encoding::percent_decode(name).eq(b"_method".iter().copied());
        named.then(|| {
            let spaced: Vec<u8> = value
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
            decoded.trim_ascii().to_ascii_uppercase()
        })
    })
}

/// The methods a POST's body names in a `_method` parameter, upper-cased as the frameworks read
/// it. Rack::MethodOverride (Rails, Sinatra) and Symfony take one from a form, urlencoded or
/// multipart (Rack reads a POST without `Content-Type` as an urlencoded form too); Laravel from
/// its input, a JSON body's top-level object included; Express's `method-override` from
/// `req.body`. Only a POST's: those frameworks take the override from nothing else.
pub fn body_parameters(
    method: &http::Method,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Vec<Vec<u8>> {
    if method != http::Method::POST {
        return Vec::new();
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes().to_ascii_lowercase());
    let Some(content_type) = content_type else {
        return form_method_parameters(body).collect();
    };
    let mut params = content_type.split(|&b| b == b';').map(<[u8]>::trim_ascii);
    let media_type = params.next().unwrap_or_default();
    match media_type {
        b"application/x-www-form-urlencoded" => form_method_parameters(body).collect(),
        b"multipart/form-data" => {
            // The boundary as sent: the lower-cased copy is only for finding the parameter.
            let boundary = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| boundary_of(v.as_bytes()));
            boundary.map_or_else(Vec::new, |b| multipart_method_parameters(body, &b))
        }
        // Laravel's test for a JSON body (`Request::isJson`).
        _ if contains(&content_type, b"/json") || contains(&content_type, b"+json") => {
            serde_json::from_slice::<json_method::TopLevel>(body)
                .map(|found| found.0)
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The `boundary` parameter of a `multipart/form-data` content type, unquoted.
fn boundary_of(content_type: &[u8]) -> Option<Vec<u8>> {
    content_type
        .split(|&b| b == b';')
        .skip(1)
        .find_map(|param| {
            let param = param.trim_ascii();
            let (name, value) = param.split_at_checked(param.iter().position(|&b| b == b'=')?)?;
            let value = value.get(1..)?.trim_ascii();
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            (name.trim_ascii().eq_ignore_ascii_case(b"boundary") && !value.is_empty())
                .then(|| value.to_vec())
        })
}

/// The contents of the parts named `_method` in a multipart form (RFC 7578), upper-cased.
fn multipart_method_parameters(body: &[u8], boundary: &[u8]) -> Vec<Vec<u8>> {
    let delimiter = [b"--".as_slice(), boundary].concat();
    let mut starts = memchr::memmem::find_iter(body, &delimiter).peekable();
    let mut found = Vec::new();
    while let Some(start) = starts.next() {
        let end = starts.peek().copied().unwrap_or(body.len());
        let Some(part) = body.get(start + delimiter.len()..end) else {
            continue;
        };
        if part.starts_with(b"--") {
            break;
        }
        let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
            continue;
        };
        let (head, content) = part.split_at(head_end);
        let named_method = head.split(|&b| b == b'\n').any(|line| {
            let line = line.trim_ascii();
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return false;
            };
            let (name, value) = line.split_at(colon);
            name.trim_ascii()
                .eq_ignore_ascii_case(b"content-disposition")
                && value
                    .get(1..)
                    .unwrap_or_default()
                    .split(|&b| b == b';')
                    .any(|param| {
                        let param = param.trim_ascii();
                        let Some(eq) = param.iter().position(|&b| b == b'=') else {
                            return false;
                        };
                        let (key, v) = param.split_at(eq);
                        let v = v.get(1..).unwrap_or_default().trim_ascii();
                        let v = v
                            .strip_prefix(b"\"")
                            .and_then(|v| v.strip_suffix(b"\""))
                            .unwrap_or(v);
                        key.trim_ascii().eq_ignore_ascii_case(b"name") && v == b"_method"
                    })
        });
        if named_method {
            // The content runs from after the blank line to the CRLF before the next delimiter.
            let content = content.get(4..).unwrap_or_default();
            let content = content.strip_suffix(b"\r\n").unwrap_or(content);
            found.push(content.trim_ascii().to_ascii_uppercase());
        }
    }
    found
}

/// A JSON body's top-level `_method` members, read without building the document: the other
/// members are skipped as they are parsed, so a large body costs no memory here.
mod json_method {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// The string values of the top-level object's `_method` members, upper-cased (none when
    /// the document is not an object).
    pub struct TopLevel(pub Vec<Vec<u8>>);

    impl<'de> Deserialize<'de> for TopLevel {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(TopLevelVisitor)
        }
    }

    struct TopLevelVisitor;

    impl<'de> Visitor<'de> for TopLevelVisitor {
        type Value = TopLevel;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON document")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
            let mut found = Vec::new();
            while let Some(MethodKey(is_method)) = map.next_key()? {
                if is_method {
                    if let Some(m) = map.next_value::<MaybeString>()?.0 {
                        found.push(m.trim().as_bytes().to_ascii_uppercase());
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(TopLevel(found))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(TopLevel(Vec::new()))
        }

        fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
            Ok(TopLevel(Vec::new()))
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
            Ok(TopLevel(Vec::new()))
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
            Ok(TopLevel(Vec::new()))
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
            Ok(TopLevel(Vec::new()))
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
            Ok(TopLevel(Vec::new()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
            Ok(TopLevel(Vec::new()))
        }
    }

    /// Whether an object key is `_method`, compared where it lies in the body.
    struct MethodKey(bool);

    impl<'de> Deserialize<'de> for MethodKey {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl Visitor<'_> for KeyVisitor {
                type Value = MethodKey;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object key")
                }
                fn visit_str<E: de::Error>(self, key: &str) -> Result<MethodKey, E> {
                    Ok(MethodKey(key == "_method"))
                }
            }
            d.deserialize_str(KeyVisitor)
        }
    }

    /// A value kept if it is a string (Laravel takes no other kind as a method).
    struct MaybeString(Option<String>);

    impl<'de> Deserialize<'de> for MaybeString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct ValueVisitor;
            impl<'de> Visitor<'de> for ValueVisitor {
                type Value = MaybeString;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<MaybeString, E> {
                    Ok(MaybeString(Some(v.to_string())))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(MaybeString(None))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(MaybeString(None))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
                fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                    Ok(MaybeString(None))
                }
            }
            d.deserialize_any(ValueVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posts_body_names_its_method_override_as_the_frameworks_read_it() {
        let read = |method: &str, content_type: Option<&str>, body: &[u8]| {
            let mut headers = http::HeaderMap::new();
            if let Some(c) = content_type {
                headers.insert(http::header::CONTENT_TYPE, c.parse().unwrap());
            }
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            body_parameters(&method, &headers, body)
                .into_iter()
                .map(|m| String::from_utf8(m).unwrap())
                .collect::<Vec<_>>()
        };
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(
            read("POST", form, b"a=1&_method=delete&_method=Put"),
            ["DELETE", "PUT"]
        );
        assert_eq!(
            read("POST", None, b"_method=DELETE"),
            ["DELETE"],
            "Rack: a form"
        );
        assert_eq!(read("POST", form, b"_meth%6Fd=%20patch+"), ["PATCH"]);
        assert!(read("POST", form, b"x_method=DELETE&_methodx=DELETE").is_empty());
        assert!(
            read("PUT", form, b"_method=DELETE").is_empty(),
            "only a POST's"
        );
        assert!(read("POST", Some("text/plain"), b"_method=DELETE").is_empty());

        let parts = "--b1\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n\
                     DELETE\r\n--b1\r\nContent-Disposition: form-data; name=\"_methods\"\r\n\
                     \r\nPUT\r\n--b1\r\nCONTENT-DISPOSITION:form-data;NAME=_method\r\n\
                     Content-Type: text/plain\r\n\r\n patch \r\n--b1--\r\n\
                     --b1\r\nContent-Disposition: form-data; name=_method\r\n\r\nGET\r\n";
        let multipart = |boundary: &str| format!("multipart/form-data; boundary={boundary}");
        assert_eq!(
            read("POST", Some(&multipart("b1")), parts.as_bytes()),
            ["DELETE", "PATCH"],
            "after the closing delimiter, nothing is a part"
        );
        assert_eq!(
            read("POST", Some(&multipart("\"b1\"")), parts.as_bytes()),
            ["DELETE", "PATCH"]
        );
        assert!(read("POST", Some(&multipart("b2")), parts.as_bytes()).is_empty());
        assert!(read("POST", Some("multipart/form-data"), parts.as_bytes()).is_empty());

        let json = Some("application/json; charset=utf-8");
        assert_eq!(read("POST", json, br#"{"_method":" delete "}"#), ["DELETE"]);
        assert!(read("POST", json, br#"{"a":{"_method":"DELETE"}}"#).is_empty());
        assert!(read("POST", json, br#"[{"_method":"DELETE"}]"#).is_empty());
        assert!(read("POST", json, b"{not json").is_empty());
        assert_eq!(
            read("POST", json, br#"{"\u005fmethod":"patch"}"#),
            ["PATCH"]
        );
        assert_eq!(
            read(
                "POST",
                json,
                br#"{"_method":{"a":[1]},"b":null,"_method":"put"}"#
            ),
            ["PUT"]
        );
        for other in [
            &br#"{"_method":5}"#[..],
            b"\"_method\"",
            b"null",
            b"[1,[2]]",
        ] {
            assert!(read("POST", json, other).is_empty());
        }
        assert_eq!(
            read(
                "POST",
                Some("application/merge-patch+json"),
                br#"{"_method":"PUT"}"#
            ),
            ["PUT"]
        );
    }

    proptest::proptest! {
        /// Whatever the body and its content type, reading them never panics, and finds at most
        /// as many methods as the body has bytes.
        #[test]
        fn any_body_is_read_without_a_panic(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            kind in 0usize..5,
            boundary in "[a-zA-Z0-9'()+_,./:=?-]{1,8}",
        ) {
            let content_type = match kind {
                0 => None,
                1 => Some("application/x-www-form-urlencoded".to_string()),
                2 => Some(format!("multipart/form-data; boundary={boundary}")),
                3 => Some(format!("multipart/form-data; boundary=\"{boundary}\"")),
                _ => Some("application/json".to_string()),
            };
            let mut headers = http::HeaderMap::new();
            if let Some(c) = content_type {
                headers.insert(http::header::CONTENT_TYPE, c.parse().unwrap());
            }
            let found = body_parameters(&http::Method::POST, &headers, &body);
            proptest::prop_assert!(found.len() <= body.len());
        }

        /// A multipart body built of parts, one of them `_method`, gives that part's value.
        #[test]
        fn a_multipart_method_part_is_found(
            before in proptest::collection::vec("[a-z]{1,6}", 0..4),
            value in "[A-Za-z]{1,10}",
        ) {
            let mut body = String::new();
            for name in &before {
                body.push_str(&format!(
                    "--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\nx\r\n"
                ));
            }
            body.push_str(&format!(
                "--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n{value}\r\n--B--\r\n"
            ));
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                "multipart/form-data; boundary=B".parse().unwrap(),
            );
            let found = body_parameters(&http::Method::POST, &headers, body.as_bytes());
            proptest::prop_assert_eq!(found, vec![value.to_ascii_uppercase().into_bytes()]);
        }
    }
}
