//! Request target to a safe, normalized URL path, and where its raw bytes continue after a
//! prefix of that path (for targets sent upstream with a route's prefix stripped).
//!
//! Owns the one place where request-target bytes are percent-decoded and dot segments removed.
//! Invariant: a [`UrlPath`] is decoded exactly once, is valid UTF-8, starts with '/', and holds no
//! empty, "." or ".." segments, NUL, backslash or control bytes; a ".." that would climb above
//! the root is an error, never silently clamped.

use std::borrow::Cow;

/// A decoded, normalized URL path that is safe to join onto a document root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPath<'a> {
    /// Always starts with '/'; keeps a trailing '/' if the target's path had one (or ended in
    /// "/." or "/.."); never contains "//", "/./", "/../" segments, NUL or '\\'. Borrowed
    /// from the target when that is already all of this.
    pub path: Cow<'a, str>,
}

/// Why a request target cannot be mapped to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The target is neither origin-form (`/...`) nor an http(s) absolute-form URL.
    NotOrigin,
    /// A '%' is not followed by two hex digits.
    BadEscape,
    /// The decoded path contains a NUL byte.
    Nul,
    /// The decoded path contains a backslash.
    Backslash,
    /// The decoded path is not valid UTF-8 (this includes overlong encodings).
    BadUtf8,
    /// The decoded path contains a control byte (0x01-0x1F or 0x7F).
    ControlByte,
    /// A ".." segment would climb above the root.
    EscapesRoot,
    /// A dot segment with parameters (`..;x`, `.;x`): Tomcat and other servlet containers
    /// read it as `..` or `.`, so an upstream would resolve a path other than the one routed.
    DotParams,
}

/// Splits `target` (raw request-target bytes) into path and query, percent-decodes the path
/// exactly once, and normalizes it. Absolute-form targets (`http://host/p?q`, scheme
/// case-insensitive, http or https) are reduced to their path (`http://host` alone -> "/").
/// A target that starts with neither '/' nor a scheme (e.g. `*`, `foo`) is NotOrigin.
pub fn resolve_target(target: &[u8]) -> Result<UrlPath<'_>, PathError> {
    let without_query = &target[..query_start(target)];
    let raw_path = origin_path(without_query).ok_or(PathError::NotOrigin)?;
    if let Some(path) = already_normal(raw_path) {
        return Ok(UrlPath {
            path: Cow::Borrowed(path),
        });
    }
    let decoded = percent_decode(raw_path)?;
    check_bytes(&decoded)?;
    let text = String::from_utf8(decoded).map_err(|_| PathError::BadUtf8)?;
    normalize(&text).map(|path| UrlPath {
        path: Cow::Owned(path),
    })
}

/// `raw_path` itself when decoding and normalizing could not change it: visible ASCII
/// without '%' or '\\', and no segment that is empty or starts with '.' or ';'. That is the
/// usual request, which then costs no allocation; anything else takes the full way.
fn already_normal(raw_path: &[u8]) -> Option<&str> {
    let plain = raw_path
        .iter()
        .all(|&byte| matches!(byte, b'!'..=b'~') && byte != b'%' && byte != b'\\');
    let tidy = !raw_path
        .windows(2)
        .any(|pair| matches!(pair, b"//" | b"/." | b"/;"));
    (plain && tidy).then(|| std::str::from_utf8(raw_path).expect("visible ASCII is UTF-8"))
}

/// Byte offset where the query ('?') starts in a raw target, or target.len().
pub fn query_start(target: &[u8]) -> usize {
    target
        .iter()
        .position(|&byte| byte == b'?')
        .unwrap_or(target.len())
}

/// True if any segment of a normalized path starts with '.' (a dotfile or dot-directory).
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| segment.starts_with('.'))
}

/// The still-encoded path of an origin-form or absolute-form target without its query.
fn origin_path(target: &[u8]) -> Option<&[u8]> {
    match &target[origin_start(target)?..] {
        b"" => Some(b"/"),
        path => Some(path),
    }
}

/// Where the origin form (path and query) starts in `target`: 0 for `/p?q`; after the
/// authority for `http://host/p?q` (at the '?', or the end, when the path is empty).
pub fn origin_start(target: &[u8]) -> Option<usize> {
    if target.starts_with(b"/") {
        return Some(0);
    }
    let after_scheme = strip_http_scheme(target)?;
    let authority_len = after_scheme
        .iter()
        .position(|&byte| byte == b'/' || byte == b'?')
        .unwrap_or(after_scheme.len());
    (authority_len > 0).then(|| target.len() - after_scheme.len() + authority_len)
}

/// Whether `value` is a `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2), as a Host
/// header or an absolute-form target's authority must be: an IP literal in brackets, or a
/// registered name (letters, digits, `-._~`, sub-delims, `%HH`) without `..`, then an
/// optional port of up to 5 digits. No userinfo, path, space or control byte.
pub fn valid_host(value: &[u8]) -> bool {
    let port = match value.first() {
        Some(b'[') => {
            let Some(end) = value.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &value[1..end];
            let address = |b: &u8| b.is_ascii_hexdigit() || b":.".contains(b);
            if literal.is_empty() || !literal.iter().all(address) {
                return false;
            }
            &value[end + 1..]
        }
        _ => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            if !valid_reg_name(&value[..end]) {
                return false;
            }
            &value[end..]
        }
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn valid_reg_name(name: &[u8]) -> bool {
    let mut at = 0;
    while at < name.len() {
        match name[at] {
            b'%' if name
                .get(at + 1..at + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                at += 2
            }
            b'.' if name.get(at + 1) == Some(&b'.') => return false,
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => {}
            _ => return false,
        }
        at += 1;
    }
    true
}

/// The authority of an absolute-form target (`example.com:8080` in
/// `http://example.com:8080/p`); None for an origin-form one.
pub fn authority(target: &[u8]) -> Option<&[u8]> {
    let after_scheme = strip_http_scheme(target)?;
    let start = target.len() - after_scheme.len();
    Some(&target[start..origin_start(target)?])
}

/// Where the target an upstream is sent starts in the raw `target` (routed as `normalized`):
/// after an absolute-form target's scheme and authority and, when the route strips `strip`,
/// after the raw bytes that spell that prefix. The rest goes upstream byte for byte (with a
/// '/' in front when it lacks one). None when the prefix ends inside an encoded slash
/// (`/api%2Fx` routed to `/api/`): no cut of the raw bytes would be faithful.
pub fn upstream_target_start(target: &[u8], normalized: &str, strip: Option<&str>) -> Option<usize> {
    let origin = origin_start(target)?;
    let Some(prefix) = strip else {
        return Some(origin);
    };
    let raw_path = &target[origin..query_start(target)];
    let prefix = prefix.trim_end_matches('/');
    if raw_path == normalized.as_bytes() {
        // Already normalized (the usual case): the prefix is spelled as is.
        return Some(origin + prefix.len());
    }
    let end = raw_prefix_end(raw_path, prefix)?;
    // What follows must resolve to the rest of the routed path: inside one segment an
    // encoded slash can climb back above the prefix (`/api/..%2Fapi%2Fy`).
    let rest = &raw_path[end..];
    let mut sent = Vec::with_capacity(rest.len() + 1);
    if !rest.starts_with(b"/") {
        sent.push(b'/');
    }
    sent.extend_from_slice(rest);
    let wanted = match normalized.get(prefix.len()..)? {
        "" => "/",
        tail => tail,
    };
    (resolve_target(&sent).ok()?.path == wanted).then_some(origin + end)
}

/// The end of the last segment of `raw_path` (still encoded) after which the path so far
/// normalizes to `prefix` (without its trailing '/'). Taking the last one means that no later
/// segment boundary climbs back above the prefix, so what follows normalizes to what follows
/// the prefix in the routed path, through `//`, `.`, `..` and escapes alike (the caller
/// checks the one way around it: an encoded slash inside a segment).
fn raw_prefix_end(raw_path: &[u8], prefix: &str) -> Option<usize> {
    let wanted: Vec<&str> = prefix.split('/').skip(1).collect();
    let mut so_far: Vec<String> = Vec::new();
    let mut end = wanted.is_empty().then_some(0);
    let mut at = 0;
    for raw_segment in raw_path.split(|&byte| byte == b'/').skip(1) {
        at += 1 + raw_segment.len();
        let decoded = String::from_utf8(percent_decode(raw_segment).ok()?).ok()?;
        for segment in decoded.split('/') {
            match step(segment).ok()? {
                Step::Stay => {}
                Step::Up => {
                    so_far.pop();
                }
                Step::Down(name) => so_far.push(name.to_owned()),
            }
        }
        if so_far.iter().map(String::as_str).eq(wanted.iter().copied()) {
            end = Some(at);
        }
    }
    end
}

/// The rest of `target` after a case-insensitive `http://` or `https://`.
fn strip_http_scheme(target: &[u8]) -> Option<&[u8]> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix
            .eq_ignore_ascii_case(scheme.as_bytes())
            .then(|| &target[scheme.len()..])
    })
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte != b'%' {
            decoded.push(byte);
            rest = tail;
            continue;
        }
        let escaped = match tail {
            [high, low, ..] => hex_pair(*high, *low),
            _ => None,
        };
        decoded.push(escaped.ok_or(PathError::BadEscape)?);
        rest = &tail[2..];
    }
    Ok(decoded)
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    let value = digit(high)? * 16 + digit(low)?;
    u8::try_from(value).ok()
}

/// Rejects the first byte that must never reach the filesystem layer.
fn check_bytes(decoded: &[u8]) -> Result<(), PathError> {
    for &byte in decoded {
        match byte {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            0x01..=0x1f | 0x7f => return Err(PathError::ControlByte),
            _ => {}
        }
    }
    Ok(())
}

/// What one decoded segment does to the normalized path.
enum Step<'s> {
    /// Nothing: "", "." and a segment of parameters alone (`;jsessionid=1`, which Tomcat's
    /// URL rewriting appends to directories), read as empty by servlet containers too.
    Stay,
    /// "..": the segment before it goes.
    Up,
    /// A name is appended.
    Down(&'s str),
}

fn step(segment: &str) -> Result<Step<'_>, PathError> {
    match segment {
        "" | "." => Ok(Step::Stay),
        ".." => Ok(Step::Up),
        _ if segment.starts_with(';') => Ok(Step::Stay),
        _ if segment.starts_with(".;") || segment.starts_with("..;") => Err(PathError::DotParams),
        name => Ok(Step::Down(name)),
    }
}

/// Removes empty and dot segments; `decoded` starts with '/'.
fn normalize(decoded: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut ends_in_name = false;
    for segment in decoded.split('/') {
        ends_in_name = false;
        match step(segment)? {
            Step::Stay => {}
            Step::Up => {
                segments.pop().ok_or(PathError::EscapesRoot)?;
            }
            Step::Down(name) => {
                segments.push(name);
                ends_in_name = true;
            }
        }
    }
    let keeps_trailing_slash = !ends_in_name && !segments.is_empty();
    let mut path = String::with_capacity(decoded.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if keeps_trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_uri_hosts_with_an_optional_port() {
        let valid = [
            "example.com",
            "EXAMPLE.com:8080",
            "a-b.c_d~e",
            "192.0.2.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::192.0.2.1]",
            "xn--bcher-kva.example",
            "a%2Eb",
            "example.com.",
            "",
            "host:",
            "h:65535",
        ];
        for host in valid {
            assert!(valid_host(host.as_bytes()), "{host:?} is valid");
        }
        let invalid = [
            "x y",
            "a@b/c",
            "a..b",
            "user@host",
            "a/b",
            "a\\b",
            "[::1",
            "[]",
            "[::1]x",
            "[zz]",
            "h:123456",
            "h:8o",
            "h:80:81",
            "a%2",
            "a%zz",
            "tab\there",
            "\u{0}",
            "h\u{7f}",
        ];
        for host in invalid {
            assert!(!valid_host(host.as_bytes()), "{host:?} is invalid");
        }
    }

    fn resolved(target: &str) -> Result<String, PathError> {
        resolve_target(target.as_bytes()).map(|url| url.path.into_owned())
    }

    #[test]
    fn plain_and_normalized_paths() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/index.html", "/index.html"),
            ("/a/b/c", "/a/b/c"),
            ("/a/b/", "/a/b/"),
            ("/a/./b/", "/a/b/"),
            ("//a//b", "/a/b"),
            ("///", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../c", "/a/c"),
            ("/a/../b", "/b"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a/b..", "/a/b.."),
            ("/.hidden", "/.hidden"),
            ("/%7euser/", "/~user/"),
            ("/a%20b", "/a b"),
            ("/caf%C3%A9", "/caf\u{e9}"),
            ("/caf\u{e9}", "/caf\u{e9}"),
            ("/a%2Fb", "/a/b"),
            ("/a%2f%2fb", "/a/b"),
            ("/a#frag", "/a#frag"),
            ("/a;b=c", "/a;b=c"),
            ("/app/;jsessionid=1", "/app/"),
            ("/a/;x/../b", "/b"),
            ("/;x", "/"),
            ("/a+b", "/a+b"),
        ];
        for (target, expected) in cases {
            assert_eq!(resolved(target), Ok(expected.to_string()), "{target}");
        }
    }

    #[test]
    fn query_is_split_off_and_not_decoded() {
        let cases: &[(&str, &str)] = &[
            ("/a?b", "/a"),
            ("/a/?x=1&y=2", "/a/"),
            ("/?", "/"),
            ("/a?%zz", "/a"),
            ("/a?/../../..", "/a"),
            ("/a?q=%00", "/a"),
            ("/a%3Fb?c", "/a?b"),
        ];
        for (target, expected) in cases {
            assert_eq!(resolved(target), Ok(expected.to_string()), "{target}");
        }
    }

    #[test]
    fn absolute_form_is_reduced_to_its_path() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("http://host/p?q", Ok("/p")),
            ("HTTP://host/p", Ok("/p")),
            ("HtTpS://host:8443/a/b/", Ok("/a/b/")),
            ("http://host", Ok("/")),
            ("https://host?x=1", Ok("/")),
            ("http://user@host/x", Ok("/x")),
            ("http://host/a/../../x", Err(PathError::EscapesRoot)),
            ("http://host/%2e%2e", Err(PathError::EscapesRoot)),
            ("http:///x", Err(PathError::NotOrigin)),
            ("http://", Err(PathError::NotOrigin)),
            ("http:/x", Err(PathError::NotOrigin)),
            ("ftp://host/x", Err(PathError::NotOrigin)),
            ("httpx://host/x", Err(PathError::NotOrigin)),
        ];
        for (target, expected) in cases {
            let expected = expected.map(str::to_string);
            assert_eq!(resolved(target), expected, "{target}");
        }
    }

    #[test]
    fn the_shortcut_agrees_with_the_full_way() {
        let plain = [
            "/",
            "/index.html",
            "/a/b/",
            "/a-b_c~d/e!f$g&h'i(j)k*l+m,n;o=p:q@r",
            "/a#b",
            "/a.b/c.",
        ];
        for target in plain {
            let decoded = String::from_utf8(percent_decode(target.as_bytes()).unwrap()).unwrap();
            let full = normalize(&decoded).unwrap();
            assert_eq!(already_normal(target.as_bytes()), Some(full.as_str()), "{target}");
        }
        let not_plain = [
            "//a",
            "/a//",
            "/a/./b",
            "/a/../b",
            "/.env",
            "/a%20b",
            "/a\\b",
            "/caf\u{e9}",
            "/a b",
            "/a\x7f",
            "/a/;jsessionid=1",
        ];
        for target in not_plain {
            assert_eq!(already_normal(target.as_bytes()), None, "{target}");
        }
    }

    #[test]
    fn a_prefix_inside_an_encoded_slash_cannot_be_cut() {
        let routed = resolved("/api%2Fx").unwrap();
        assert_eq!(routed, "/api/x");
        assert_eq!(upstream_target_start(b"/api%2Fx", &routed, Some("/api/")), None);
        assert_eq!(upstream_target_start(b"/api%2Fx", &routed, None), Some(0));
        // An encoded slash inside a segment cannot climb back above the prefix either.
        let climbs = b"/api/..%2Fapi%2Fy";
        assert_eq!(resolved("/api/..%2Fapi%2Fy").unwrap(), "/api/y");
        assert_eq!(upstream_target_start(climbs, "/api/y", Some("/api")), None);
        // A prefix that ends where an encoded segment ends is cut after it.
        assert_eq!(
            upstream_target_start(b"/api%2Fx/y", "/api/x/y", Some("/api/x")),
            Some(8)
        );
    }

    #[test]
    fn non_origin_targets_are_rejected() {
        let cases: &[&str] = &["", "*", "foo", "foo/bar", "?x", "host:80", " /a", "%2F", "\\a"];
        for target in cases {
            assert_eq!(resolved(target), Err(PathError::NotOrigin), "{target}");
        }
    }

    #[test]
    fn traversal_tricks_are_rejected() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("/..", EscapesRoot),
            ("/../", EscapesRoot),
            ("/../etc/passwd", EscapesRoot),
            ("/a/../../x", EscapesRoot),
            ("/a/b/../../../x", EscapesRoot),
            ("/./../x", EscapesRoot),
            ("//../x", EscapesRoot),
            ("/%2e%2e/x", EscapesRoot),
            ("/%2E%2E/x", EscapesRoot),
            ("/.%2e/x", EscapesRoot),
            ("/%2e./x", EscapesRoot),
            ("/%2E%2E%2Fx", EscapesRoot),
            ("/a%2F..%2F..%2Fx", EscapesRoot),
            ("/api/..;/admin", DotParams),
            ("/..;/x", DotParams),
            ("/a/.;x/b", DotParams),
            ("/a/%2e%2e;jsessionid=1/b", DotParams),
            ("/..%5c..%5cx", Backslash),
            ("/..\\..\\x", Backslash),
            ("/a%5Cb", Backslash),
            ("/%00", Nul),
            ("/a%00.html", Nul),
            ("/a%0d%0aSet-Cookie:x", ControlByte),
            ("/a%09b", ControlByte),
            ("/a%7Fb", ControlByte),
            ("/a\x01b", ControlByte),
            ("/a%c0%afb", BadUtf8),
            ("/%C0%AE%C0%AE/x", BadUtf8),
            ("/%E0%80%AE%E0%80%AE/x", BadUtf8),
            ("/%c0%2e", BadUtf8),
            ("/%ff", BadUtf8),
            ("/%ed%a0%80", BadUtf8),
            ("/%", BadEscape),
            ("/%2", BadEscape),
            ("/%zz", BadEscape),
            ("/%2g", BadEscape),
            ("/%%32%65", BadEscape),
            ("/%+1", BadEscape),
            ("/% 1", BadEscape),
        ];
        for (target, expected) in cases {
            assert_eq!(resolved(target), Err(*expected), "{target}");
        }
    }

    #[test]
    fn decoding_happens_exactly_once() {
        let cases: &[(&str, &str)] = &[
            ("/%252e%252e/x", "/%2e%2e/x"),
            ("/%252E%252E%252Fx", "/%2E%2E%2Fx"),
            ("/a/%2500", "/a/%00"),
            ("/%255c", "/%5c"),
            ("/%25", "/%"),
        ];
        for (target, expected) in cases {
            assert_eq!(resolved(target), Ok(expected.to_string()), "{target}");
        }
    }

    #[test]
    fn non_utf8_raw_bytes_are_rejected() {
        assert_eq!(resolve_target(b"/a\xffb"), Err(PathError::BadUtf8));
        assert_eq!(resolve_target(b"/\xc0\xae"), Err(PathError::BadUtf8));
    }

    #[test]
    fn the_authority_of_an_absolute_target() {
        assert_eq!(
            authority(b"http://Example.com:81/p?q"),
            Some(&b"Example.com:81"[..])
        );
        assert_eq!(authority(b"HTTPS://h?q"), Some(&b"h"[..]));
        assert_eq!(authority(b"http://h"), Some(&b"h"[..]));
        assert_eq!(authority(b"/p"), None);
        assert_eq!(authority(b"http:///p"), None);
    }

    #[test]
    fn query_start_finds_the_first_question_mark() {
        let cases: &[(&str, usize)] = &[
            ("/", 1),
            ("/a?b", 2),
            ("/a?b?c", 2),
            ("?", 0),
            ("", 0),
            ("/a%3Fb", 6),
        ];
        for (target, expected) in cases {
            assert_eq!(query_start(target.as_bytes()), *expected, "{target}");
        }
    }

    #[test]
    fn dot_segments_are_detected() {
        let cases: &[(&str, bool)] = &[
            ("/", false),
            ("/index.html", false),
            ("/a/b/", false),
            ("/a.b/c", false),
            ("/.git/config", true),
            ("/a/.env", true),
            ("/a/.well-known/", true),
            ("/.", true),
            ("/a/...", true),
        ];
        for (path, expected) in cases {
            assert_eq!(has_dot_segment(path), *expected, "{path}");
        }
    }
}
