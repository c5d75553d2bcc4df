//! The method the app will act on, when a request names another one than its own.
//!
//! Rails (Rack::MethodOverride), Laravel, Symfony and Express's `method-override` take a POST
//! as the method a field, a `_method` query parameter or a `_method` in its body names. A
//! peer's `allow.methods` must hold for those methods too (`inbound.rs`). The fields have fixed
//! names, and their values are read here. A `_method` parameter is another matter: each
//! framework reads parameter names its own way (Rack drops spaces after `&`, PHP turns `.` into
//! `_` and an unclosed `[` too, `qs` strips brackets, multipart names may be folded, quoted or
//! `name*=`-encoded, JSON keys escaped), so hunting for its spellings one by one loses. So a
//! narrowed peer may not send one at all: [`names_method`] looks for the word in any of those
//! disguises, and a body peergate cannot read (a `Content-Encoding`) is refused too.

use crate::app_request::same_folded;

/// Fields with which a request names another method for the app to act on than its own.
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Each method-override field of the request (see [`METHOD_OVERRIDES`]), look-alikes with
/// `_` or other punctuation for `-` included (Rack on Puma reads `x_http_method_override` as
/// the real one, behind lighttpd `x.http.method.override` too): its name as sent
/// and the method it names, upper-cased as the frameworks read it. Walks every field: only for
/// peers whose methods are narrowed.
pub fn fields(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, Vec<u8>)> {
    headers.iter().filter_map(|(name, value)| {
        let name = name.as_str();
        METHOD_OVERRIDES
            .iter()
            .any(|o| same_folded(o, name))
            .then(|| (name, value.as_bytes().trim_ascii().to_ascii_uppercase()))
    })
}

/// Whether `bytes` (a query, or a body of any type) hold a parameter that some framework would
/// read as `_method`, as far as a scan can tell; it errs towards yes. The bytes are read with
/// percent-escapes and `+` decoded, JSON `\uXXXX` escapes decoded, other backslashes and NUL
/// bytes dropped (UTF-16 text is ASCII with NULs between) and letters lower-cased; a match is
/// `method` after `_`, `.` or `[`, with no letter or digit on either side. So `payment_method`
/// or `methods` are not one, and `[_method]`, `.method`, `%5Fmethod`, `"\u005fmethod"` and
/// `name*=utf-8''_method` are. RFC 2047 encoded words (`=?UTF-8?B?X21ldGhvZA==?=`, which
/// commons-fileupload and Tomcat decode in a multipart field's name) are read decoded as well
/// as as sent. Streams: nothing is allocated, whatever the size, but an encoded word's text.
pub fn names_method(bytes: &[u8]) -> bool {
    scan_from(bytes, Scan::default(), 0)
}

/// How deep encoded words may hold encoded words before the scan says yes.
const MAX_ENCODED_DEPTH: u8 = 3;

/// [`names_method`] on `bytes`, after what `scan` has seen, inside `depth` encoded words.
fn scan_from(bytes: &[u8], mut scan: Scan, depth: u8) -> bool {
    let mut rest = bytes;
    // The end of the last run of encoded words read decoded: one inside it is read with it.
    let mut decoded_until = 0;
    while let Some((&b, tail)) = rest.split_first() {
        let at = bytes.len() - rest.len();
        if b == b'=' && tail.first() == Some(&b'?') && at >= decoded_until {
            if let Some((mut text, len)) = bytes.get(at..).and_then(encoded_words) {
                if depth >= MAX_ENCODED_DEPTH {
                    return true;
                }
                // Read on with the byte after the words, which says whether a name ends there.
                text.extend(bytes.get(at + len));
                if scan_from(&text, scan.clone(), depth + 1) {
                    return true;
                }
                decoded_until = at + len;
            }
        }
        rest = tail;
        let decoded = match b {
            b'%' => match rest {
                [h, l, tail @ ..] => match (hex(*h), hex(*l)) {
                    (Some(h), Some(l)) => {
                        rest = tail;
                        Some(h << 4 | l)
                    }
                    _ => Some(b'%'),
                },
                _ => Some(b'%'),
            },
            b'+' => Some(b' '),
            b'\\' => match rest {
                [b'u', a, b2, c, d, tail @ ..] => match (hex(*a), hex(*b2), hex(*c), hex(*d)) {
                    (Some(a), Some(b2), Some(c), Some(d)) => {
                        rest = tail;
                        let code = u16::from(a) << 12
                            | u16::from(b2) << 8
                            | u16::from(c) << 4
                            | u16::from(d);
                        Some(u8::try_from(code).unwrap_or(b'?'))
                    }
                    _ => None,
                },
                _ => None,
            },
            other => Some(other),
        };
        // A NUL, as sent or decoded, is dropped (UTF-16, PHP cutting names at one).
        if let Some(b) = decoded.filter(|&b| b != 0) {
            if scan.push(b.to_ascii_lowercase()) {
                return true;
            }
        }
    }
    scan.push(b'&')
}

/// The last nine bytes seen, for [`names_method`]: a delimiter, a marker, `method`, and the byte
/// after it. Starts as if after a delimiter.
#[derive(Clone)]
struct Scan {
    window: [u8; 9],
}

impl Default for Scan {
    fn default() -> Self {
        Scan { window: [b'&'; 9] }
    }
}

impl Scan {
    /// Takes one more byte; true when the window is now a `_method` name.
    fn push(&mut self, b: u8) -> bool {
        self.window.rotate_left(1);
        if let Some(last) = self.window.last_mut() {
            *last = b;
        }
        let [before, marker, m, e, t, h, o, d, after] = self.window;
        !before.is_ascii_alphanumeric()
            && matches!(marker, b'_' | b'.' | b'[')
            && [m, e, t, h, o, d] == *b"method"
            && !after.is_ascii_alphanumeric()
    }
}

/// The RFC 2047 encoded word `bytes` starts with, and those after it with only white space
/// between (decoders join them: `=?UTF-8?B?X21l?= =?UTF-8?B?dGhvZA==?=` is `_method`): their
/// decoded text, and how many bytes they take.
fn encoded_words(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut text = Vec::new();
    let mut taken = encoded_word(bytes, &mut text)?;
    loop {
        let rest = bytes.get(taken..).unwrap_or_default();
        let space = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        match rest
            .get(space..)
            .and_then(|next| encoded_word(next, &mut text))
        {
            Some(len) if space > 0 => taken += space + len,
            _ => return Some((text, taken)),
        }
    }
}

/// One encoded word at the start of `bytes`, `=?charset?B?base64?=` or `=?charset?Q?text?=`
/// (`=XX` for a byte, `_` for a space), decoded onto `text`, as leniently as decoders are;
/// how many bytes it takes.
fn encoded_word(bytes: &[u8], text: &mut Vec<u8>) -> Option<usize> {
    let after_open = bytes.strip_prefix(b"=?")?;
    let charset = after_open.iter().position(|&b| b == b'?')?;
    if charset == 0 || after_open.iter().take(charset).any(u8::is_ascii_whitespace) {
        return None;
    }
    let (&coding, after) = after_open.get(charset + 1..)?.split_first()?;
    let encoded_and_rest = after.strip_prefix(b"?")?;
    let end = encoded_and_rest.iter().position(|&b| b == b'?')?;
    if encoded_and_rest.get(end + 1) != Some(&b'=') {
        return None;
    }
    let encoded = encoded_and_rest.get(..end)?;
    match coding.to_ascii_uppercase() {
        b'B' => {
            let (mut bits, mut count) = (0u32, 0u8);
            for sextet in encoded.iter().filter_map(|&c| base64_value(c)) {
                bits = (bits << 6 | u32::from(sextet)) & 0xff_ffff;
                count += 6;
                if count >= 8 {
                    count -= 8;
                    text.push((bits >> count) as u8);
                }
            }
        }
        b'Q' => {
            let mut rest = encoded;
            while let Some((&c, tail)) = rest.split_first() {
                rest = tail;
                match (c, rest) {
                    (b'_', _) => text.push(b' '),
                    (b'=', [h, l, tail @ ..]) => match (hex(*h), hex(*l)) {
                        (Some(h), Some(l)) => {
                            text.push(h << 4 | l);
                            rest = tail;
                        }
                        _ => text.push(b'='),
                    },
                    (c, _) => text.push(c),
                }
            }
        }
        _ => return None,
    }
    // `=?`, the charset, `?`, the coding, `?`, the text, `?=`.
    Some(2 + charset + 3 + end + 2)
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Why a body from a peer whose methods are narrowed may not reach the app, if it may not: it
/// names a `_method` ([`names_method`]), or it is coded (`Content-Encoding`, which an app may
/// decode before reading it) so that peergate cannot tell. A body of any method: the
/// frameworks read the override from a POST's by default, but Express's `method-override` can
/// be told to read it from any (`methods: null`), and a peer limited to GET must not become a
/// DELETE by a GET with a body.
pub fn body_override(headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let coded = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
    if let Some(coding) = coded {
        return Some(format!(
            "its body is coded ({}), so peergate cannot see whether it names another method \
             in a _method parameter; send it uncoded",
            String::from_utf8_lossy(coding.get(..32).unwrap_or(coding)).escape_debug()
        ));
    }
    names_method(body).then(|| {
        "its body has a _method parameter, which Rails, Laravel, Symfony and Express take as \
         the method to act on"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_parameter_is_found_however_it_is_spelled() {
        for named in [
            &b"_method=DELETE"[..],
            b"a=1&_method=delete",
            b"a=1& _method=DELETE",
            b"a=1;_method=DELETE",
            b"[_method]=DELETE",
            b"%5B_method%5D=DELETE",
            b"%5Fmethod=DELETE",
            b"_meth%6Fd=put",
            b".method=DELETE",
            b"+_method=DELETE",
            b"%20_method=DELETE",
            b"_method%00=DELETE",
            b"[method=DELETE",
            b"_METHOD=DELETE",
            b"--b\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nDELETE",
            b"--b\nContent-Disposition: form-data; name=_method\n\nDELETE",
            b"Content-Disposition: form-data; name*=utf-8''_method",
            b"Content-Disposition: form-data; name=\"\\_method\"",
            br#"{"_method":"delete"}"#,
            br#"{"\u005fmethod":"delete"}"#,
            br#"{"\u005Fmethod":"delete"}"#,
            b"\xef\xbb\xbf{\"_method\":\"delete\"}",
            b"{\0\"\0_\0m\0e\0t\0h\0o\0d\0\"\0:\0",
            b"\0{\0\"\0_\0m\0e\0t\0h\0o\0d\0\"",
            b"_method",
            // RFC 2047 encoded words, as multipart parsers decode a field's name.
            b"Content-Disposition: form-data; name=\"=?UTF-8?B?X21ldGhvZA==?=\"\r\n\r\nDELETE",
            b"name=\"=?utf-8?b?X21ldGhvZA?=\"",
            b"name=\"=?UTF-8?Q?=5Fmethod?=\"",
            b"name=\"=?ISO-8859-1?q?_method?=\"",
            b"name=\"=?UTF-8?B?X21l?= =?UTF-8?B?dGhvZA==?=\"",
            b"name=\"=?UTF-8?Q?=5Fme?=\r\n =?UTF-8?Q?thod?=\"",
            b"name=\"=?UTF-8?B?W19tZXRob2Rd?=\"",
            b"name==?UTF-8?Q?=5Fmethod?=",
            b"name=\"=?UTF-8?B?PT9VVEYtOD9RPz01Rm1ldGhvZD89?=\"",
        ] {
            assert!(names_method(named), "{:?}", String::from_utf8_lossy(named));
        }
        for other in [
            &b"payment_method=card"[..],
            b"methods=1&method=x",
            b"x_methodical=1",
            br#"{"payment_method":"card","method":"x"}"#,
            b"a[method]=1",
            b"_methodx=DELETE",
            b"",
            b"%",
            b"%5",
            b"\\u00",
            b"name=\"=?UTF-8?B?cGF5bWVudF9tZXRob2Q=?=\"",
            b"name=\"=?UTF-8?Q?=5Fmethodx?=\"",
            b"name=\"=?UTF-8?Q?=5Fmeth?=od\"",
            b"=?",
            b"=?UTF-8?B?",
            b"=?UTF-8?X?X21ldGhvZA==?=",
            b"=? ?B?X21ldGhvZA==?=",
        ] {
            assert!(!names_method(other), "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_coded_or_method_naming_body_is_refused_and_nothing_else() {
        let headers = |coding: Option<&str>| {
            let mut h = http::HeaderMap::new();
            if let Some(c) = coding {
                h.insert(http::header::CONTENT_ENCODING, c.parse().unwrap());
            }
            h
        };
        assert!(body_override(&headers(None), b"a=1&_method=DELETE").is_some());
        assert!(body_override(&headers(None), b"a=1").is_none());
        assert!(body_override(&headers(Some("gzip")), b"\x1f\x8b").is_some());
        assert!(body_override(&headers(Some("identity")), b"a=1").is_none());
        assert!(body_override(&headers(Some("gzip")), b"").is_none());
    }

    proptest::proptest! {
        /// Whatever the bytes, the scan ends without a panic, and a `_method=` put anywhere
        /// after a delimiter is found.
        #[test]
        fn any_bytes_are_scanned_and_an_inserted_name_is_found(
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let _ = names_method(&before);
            let mut with = before.clone();
            with.extend_from_slice(b"&_method=DELETE&");
            with.extend_from_slice(&after);
            // Whatever ends `before` (a lone `%` or `\`, a letter), the `&` is a delimiter.
            proptest::prop_assert!(names_method(&with));
        }
    }
}
