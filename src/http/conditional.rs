//! Validators and content negotiation (static files, cache entries) (RFC 9110 §8.8, §12.5.3, §13).
//!
//! Owns entity-tag generation and the evaluation of `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since`, `If-Range` and `Accept-Encoding`, and their order
//! ([`precondition`], §13.2.2). Invariant: every malformed header degrades to the answer that
//! sends the full, correct representation; none of them can make the server send a 304, a 412
//! or a partial body it should not (If-Match is the exception the RFC makes: a list with no
//! valid member matches nothing, so it fails).

use std::time::{SystemTime, UNIX_EPOCH};

/// Strong ETag for a file: `"<mtime secs hex>-<mtime nanos hex>-<size hex>"` wrapped in quotes.
///
/// An mtime before the Unix epoch is written as its distance before the epoch with a leading
/// '-', so it cannot collide with a time after the epoch.
pub fn etag_for(mtime: SystemTime, size: u64) -> String {
    let (sign, offset) = match mtime.duration_since(UNIX_EPOCH) {
        Ok(after) => ("", after),
        Err(before) => ("-", before.duration()),
    };
    format!(
        "\"{sign}{:x}-{:x}-{size:x}\"",
        offset.as_secs(),
        offset.subsec_nanos()
    )
}

/// What the preconditions of a GET or HEAD decide, before any Range is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// None failed: answer normally (200, or 206 for a range).
    Proceed,
    /// 304: the client's copy is current (If-None-Match, else If-Modified-Since).
    NotModified,
    /// 412: If-Match matched no current entity-tag, or (without If-Match) the file changed
    /// after the If-Unmodified-Since date.
    Failed,
}

/// The request's preconditions as they apply to a GET or HEAD of a representation with
/// `etag` and `mtime`, in RFC 9110 §13.2.2's order: If-Match, else If-Unmodified-Since (412 when
/// false); then If-None-Match, else If-Modified-Since (304 when false).
pub fn precondition(
    if_match: Option<&[u8]>,
    if_unmodified_since: Option<&[u8]>,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
    etag: &str,
    mtime: SystemTime,
) -> Precondition {
    let unchanged = match (if_match, if_unmodified_since) {
        (Some(tags), _) => match_any(tags, etag),
        (None, Some(date)) => unmodified_since(date, mtime),
        (None, None) => true,
    };
    if !unchanged {
        return Precondition::Failed;
    }
    let not_modified = match (if_none_match, if_modified_since) {
        (Some(tags), _) => none_match(tags, etag),
        (None, Some(date)) => not_modified_since(date, mtime),
        (None, None) => false,
    };
    if not_modified {
        Precondition::NotModified
    } else {
        Precondition::Proceed
    }
}

/// If-Match (§13.1.1): true when the header lists `*` (the file exists) or an entity-tag that
/// strongly matches `etag`: both strong and the same opaque tag. A weak tag never matches, on
/// either side; malformed members match nothing.
pub fn match_any(if_match: &[u8], etag: &str) -> bool {
    let (etag_is_weak, ours) = split_weak(etag.as_bytes());
    EntityTagList::new(if_match).any(|member| match member {
        ListMember::Any => true,
        ListMember::Tag { weak, opaque } => !weak && !etag_is_weak && opaque == ours,
        ListMember::Malformed => false,
    })
}

/// If-Unmodified-Since (§13.1.4): false when the file was modified after the given HTTP-date
/// (whole seconds); an unparsable date is ignored (true), as the RFC asks.
pub fn unmodified_since(if_unmodified_since: &[u8], mtime: SystemTime) -> bool {
    parse_date(if_unmodified_since).is_none_or(|since| unix_seconds(mtime) <= unix_seconds(since))
}

/// If-None-Match: true when the header lists `*` or an entity-tag that weakly matches `etag`
/// (W/ prefixes ignored on both sides). Comma-separated list with OWS; malformed members ignored.
pub fn none_match(if_none_match: &[u8], etag: &str) -> bool {
    let (_, ours) = split_weak(etag.as_bytes());
    EntityTagList::new(if_none_match).any(|member| match member {
        ListMember::Any => true,
        ListMember::Tag { opaque, .. } => opaque == ours,
        ListMember::Malformed => false,
    })
}

/// If-Modified-Since: true when the resource was NOT modified after the given HTTP-date
/// (compare whole seconds); an unparsable date returns false (so the full response is sent).
pub fn not_modified_since(if_modified_since: &[u8], mtime: SystemTime) -> bool {
    parse_date(if_modified_since).is_some_and(|since| unix_seconds(mtime) <= unix_seconds(since))
}

/// If-Range: true when the range may be honoured: the value is a strong entity-tag equal to
/// `etag` (weak tags never match), or an HTTP-date exactly equal to the Last-Modified second.
pub fn if_range_allows(if_range: &[u8], etag: &str, mtime: SystemTime) -> bool {
    let value = trim_ows(if_range);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let (etag_is_weak, ours) = split_weak(etag.as_bytes());
        let mut members = EntityTagList::new(value);
        let strong_match = matches!(
            (members.next(), members.next()),
            (Some(ListMember::Tag { weak: false, opaque }), None) if opaque == ours
        );
        return strong_match && !etag_is_weak;
    }
    parse_date(value).is_some_and(|date| unix_seconds(date) == unix_seconds(mtime))
}

/// Accept-Encoding: true when `coding` (e.g. "gzip", "br") is acceptable: listed (case-insensitive)
/// with q > 0, or covered by `*` with q > 0, and not explicitly given q=0.
///
/// `x-gzip` is treated as `gzip` (RFC 9110 §8.4.1.3). A member with a malformed weight is
/// ignored; if a coding is listed more than once, any q=0 listing wins.
pub fn accepts_encoding(accept_encoding: &[u8], coding: &str) -> bool {
    encoding_weight(accept_encoding, coding).is_some_and(|weight| weight > 0)
}

/// The weight (q in thousandths) Accept-Encoding gives `coding`: that of its own listings
/// (0 if any says q=0, else the highest), else that of `*`; `None` when neither is listed.
pub fn encoding_weight(accept_encoding: &[u8], coding: &str) -> Option<u16> {
    let merge = |seen: Option<u16>, quality: u16| match seen {
        Some(0) => 0,
        _ if quality == 0 => 0,
        seen => seen.map_or(quality, |seen| seen.max(quality)),
    };
    let mut explicit = None;
    let mut wildcard = None;
    for member in accept_encoding.split(|&byte| byte == b',') {
        let Some((name, quality)) = parse_coding(member) else {
            continue;
        };
        if names_coding(name, coding) {
            explicit = Some(merge(explicit, quality));
        } else if name == b"*" {
            wildcard = Some(merge(wildcard, quality));
        }
    }
    explicit.or(wildcard)
}

/// One member of an entity-tag list (`If-None-Match`, `If-Range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMember<'a> {
    /// `*`
    Any,
    /// An entity-tag; `opaque` includes its double quotes.
    Tag { weak: bool, opaque: &'a [u8] },
    /// Anything else up to the next comma.
    Malformed,
}

/// Iterates over the members of `#entity-tag`, honouring commas inside quoted tags.
struct EntityTagList<'a> {
    rest: &'a [u8],
}

impl<'a> EntityTagList<'a> {
    fn new(list: &'a [u8]) -> Self {
        Self { rest: list }
    }

    /// Parses the member at the start of `rest` (no leading OWS) and returns the unread tail.
    fn member(rest: &'a [u8]) -> (ListMember<'a>, &'a [u8]) {
        if let Some(tail) = rest.strip_prefix(b"*") {
            return (ListMember::Any, tail);
        }
        let (weak, tagged) = split_weak(rest);
        let closing = tagged
            .strip_prefix(b"\"")
            .and_then(|inner| inner.iter().position(|&byte| byte == b'"'));
        match closing {
            Some(end) if tagged[1..=end].iter().all(|&byte| is_etag_byte(byte)) => {
                let (opaque, tail) = tagged.split_at(end + 2);
                (ListMember::Tag { weak, opaque }, tail)
            }
            _ => (ListMember::Malformed, rest),
        }
    }
}

impl<'a> Iterator for EntityTagList<'a> {
    type Item = ListMember<'a>;

    fn next(&mut self) -> Option<ListMember<'a>> {
        let start = self
            .rest
            .iter()
            .position(|&byte| !matches!(byte, b' ' | b'\t' | b','))?;
        let (member, tail) = Self::member(&self.rest[start..]);
        let after = trim_leading_ows(tail);
        if member != ListMember::Malformed && (after.is_empty() || after[0] == b',') {
            self.rest = after;
            return Some(member);
        }
        let next_comma = tail.iter().position(|&byte| byte == b',');
        self.rest = next_comma.map_or(&[][..], |comma| &tail[comma..]);
        Some(ListMember::Malformed)
    }
}

/// Splits an optional `W/` prefix off an entity-tag.
fn split_weak(tag: &[u8]) -> (bool, &[u8]) {
    match tag.strip_prefix(b"W/") {
        Some(opaque) => (true, opaque),
        None => (false, tag),
    }
}

/// `etagc` from RFC 9110 §8.8.3: visible ASCII except '"', or obs-text.
fn is_etag_byte(byte: u8) -> bool {
    byte == 0x21 || (0x23..=0x7e).contains(&byte) || byte >= 0x80
}

/// Splits `coding *( OWS ";" OWS param )` into its name and weight in thousandths.
fn parse_coding(member: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = member.split(|&byte| byte == b';');
    let name = trim_ows(parts.next()?);
    if name.is_empty() {
        return None;
    }
    let mut quality = 1000;
    for parameter in parts {
        let (key, value) = split_parameter(trim_ows(parameter))?;
        if key.eq_ignore_ascii_case(b"q") {
            quality = parse_qvalue(value)?;
        }
    }
    Some((name, quality))
}

fn split_parameter(parameter: &[u8]) -> Option<(&[u8], &[u8])> {
    let equals = parameter.iter().position(|&byte| byte == b'=')?;
    Some((trim_ows(&parameter[..equals]), trim_ows(&parameter[equals + 1..])))
}

/// `qvalue` from RFC 9110 §12.4.2 as thousandths: `0[.ddd]` or `1[.000]`.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (whole, fraction) = match value.iter().position(|&byte| byte == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |total, &digit| total * 10 + u16::from(digit - b'0'));
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn names_coding(name: &[u8], coding: &str) -> bool {
    let is_gzip_alias = coding.eq_ignore_ascii_case("gzip") && name.eq_ignore_ascii_case(b"x-gzip");
    name.eq_ignore_ascii_case(coding.as_bytes()) || is_gzip_alias
}

/// An HTTP-date (any of the three forms RFC 9110 §5.6.7 accepts), surrounding spaces ignored.
pub fn parse_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(trim_ows(value)).ok()?;
    httpdate::parse_http_date(text).ok()
}

/// Whole seconds relative to the Unix epoch, rounding towards the past.
fn unix_seconds(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::from(after.as_secs()),
        Err(before) => {
            let before = before.duration();
            -i128::from(before.as_secs()) - i128::from(before.subsec_nanos() > 0)
        }
    }
}

fn trim_leading_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&byte| byte != b' ' && byte != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let trimmed = trim_leading_ows(bytes);
    let end = trimmed
        .iter()
        .rposition(|&byte| byte != b' ' && byte != b'\t')
        .map_or(0, |last| last + 1);
    &trimmed[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Sun, 06 Nov 1994 08:49:37 GMT
    const RFC_EXAMPLE_SECS: u64 = 784_111_777;
    const RFC_EXAMPLE_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const ETAG: &str = "\"2ebc98a1-0-400\"";

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn etags_encode_mtime_and_size_in_hex() {
        let cases: &[(SystemTime, u64, &str)] = &[
            (UNIX_EPOCH, 0, "\"0-0-0\""),
            (at(RFC_EXAMPLE_SECS, 0), 1024, ETAG),
            (at(255, 1), 16, "\"ff-1-10\""),
            (at(1, 999_999_999), u64::MAX, "\"1-3b9ac9ff-ffffffffffffffff\""),
            (UNIX_EPOCH - Duration::new(16, 5), 1, "\"-10-5-1\""),
        ];
        for (mtime, size, expected) in cases {
            assert_eq!(etag_for(*mtime, *size), *expected);
        }
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", ETAG, true),
            (" * ", ETAG, true),
            ("\"2ebc98a1-0-400\"", ETAG, true),
            ("W/\"2ebc98a1-0-400\"", ETAG, true),
            ("\"2ebc98a1-0-400\"", "W/\"2ebc98a1-0-400\"", true),
            ("W/\"x\"", "W/\"x\"", true),
            ("\"a\", \"2ebc98a1-0-400\"", ETAG, true),
            ("\"a\",W/\"2ebc98a1-0-400\"\t", ETAG, true),
            (",, \"2ebc98a1-0-400\" ,", ETAG, true),
            ("\"a,b\", \"2ebc98a1-0-400\"", ETAG, true),
            ("\"a,b\"", "\"a,b\"", true),
            ("junk, \"2ebc98a1-0-400\"", ETAG, true),
            ("\"a\" junk, \"2ebc98a1-0-400\"", ETAG, true),
            ("\"a\", *", ETAG, true),
            ("", ETAG, false),
            ("\"other\"", ETAG, false),
            ("\"2EBC98A1-0-400\"", ETAG, false),
            ("2ebc98a1-0-400", ETAG, false),
            ("\"2ebc98a1-0-400", ETAG, false),
            ("w/\"2ebc98a1-0-400\"", ETAG, false),
            ("W/ \"2ebc98a1-0-400\"", ETAG, false),
            ("\"2ebc98a1-0-400\"x", ETAG, false),
            ("\"2ebc98a1 0-400\"", "\"2ebc98a1 0-400\"", false),
            ("**", ETAG, false),
            ("\"a\" \"2ebc98a1-0-400\"", ETAG, false),
        ];
        for (header, etag, expected) in cases {
            assert_eq!(none_match(header.as_bytes(), etag), *expected, "{header:?}");
        }
    }

    #[test]
    fn if_modified_since_compares_whole_seconds() {
        let cases: &[(&str, SystemTime, bool)] = &[
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS, 0), true),
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS, 999_999_999), true),
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS - 1, 0), true),
            (RFC_EXAMPLE_DATE, UNIX_EPOCH - Duration::from_secs(5), true),
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS + 1, 0), false),
            (" Sun, 06 Nov 1994 08:49:37 GMT ", at(RFC_EXAMPLE_SECS, 0), true),
            ("Sunday, 06-Nov-94 08:49:37 GMT", at(RFC_EXAMPLE_SECS, 0), true),
            ("Sun Nov  6 08:49:37 1994", at(RFC_EXAMPLE_SECS, 0), true),
            ("", at(0, 0), false),
            ("yesterday", at(0, 0), false),
            ("Sun, 06 Nov 1994 08:49:37", at(0, 0), false),
            ("Sun, 06 Nov 1994 25:49:37 GMT", at(0, 0), false),
        ];
        for (header, mtime, expected) in cases {
            let got = not_modified_since(header.as_bytes(), *mtime);
            assert_eq!(got, *expected, "{header:?} {mtime:?}");
        }
        assert!(!not_modified_since(b"\xff", UNIX_EPOCH));
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", ETAG, true),
            (ETAG, ETAG, true),
            ("\"a\", \"2ebc98a1-0-400\"", ETAG, true),
            (" \"a,b\" ,\"2ebc98a1-0-400\" ", ETAG, true),
            ("junk, \"2ebc98a1-0-400\"", ETAG, true),
            ("W/\"2ebc98a1-0-400\"", ETAG, false),
            ("\"2ebc98a1-0-400\"", "W/\"2ebc98a1-0-400\"", false),
            ("\"other\"", ETAG, false),
            ("\"2EBC98A1-0-400\"", ETAG, false),
            ("", ETAG, false),
            ("junk", ETAG, false),
            ("\"2ebc98a1-0-400", ETAG, false),
        ];
        for (header, etag, expected) in cases {
            assert_eq!(
                match_any(header.as_bytes(), etag),
                *expected,
                "{header:?} vs {etag:?}"
            );
        }
    }

    #[test]
    fn if_unmodified_since_fails_only_for_a_later_change() {
        let cases: &[(&str, SystemTime, bool)] = &[
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS, 0), true),
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS, 999_999_999), true),
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS - 1, 0), true),
            (RFC_EXAMPLE_DATE, at(RFC_EXAMPLE_SECS + 1, 0), false),
            ("Sun, 06 Nov 1994 08:49:36 GMT", at(RFC_EXAMPLE_SECS, 0), false),
            ("not a date", at(RFC_EXAMPLE_SECS + 1, 0), true),
            ("", at(RFC_EXAMPLE_SECS + 1, 0), true),
        ];
        for (header, mtime, expected) in cases {
            let got = unmodified_since(header.as_bytes(), *mtime);
            assert_eq!(got, *expected, "{header:?} {mtime:?}");
        }
    }

    #[test]
    fn preconditions_are_evaluated_in_the_rfc_order() {
        let mtime = at(RFC_EXAMPLE_SECS, 0);
        let earlier = "Sun, 06 Nov 1994 08:49:36 GMT";
        let later = "Sun, 06 Nov 1994 08:49:38 GMT";
        use Precondition::*;
        /// (If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, decision)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Precondition,
        );
        let cases: &[Case] = &[
            (None, None, None, None, Proceed),
            (Some(ETAG), None, None, None, Proceed),
            (Some("\"other\""), None, None, None, Failed),
            (Some("*"), None, None, None, Proceed),
            (None, Some(earlier), None, None, Failed),
            (None, Some(later), None, None, Proceed),
            (None, Some("garbage"), None, None, Proceed),
            // If-Unmodified-Since is ignored when If-Match is present (§13.2.2 step 2).
            (Some(ETAG), Some(earlier), None, None, Proceed),
            (Some("\"other\""), Some(later), None, None, Failed),
            // 412 comes before 304.
            (Some("\"other\""), None, Some(ETAG), None, Failed),
            (None, Some(earlier), None, Some(later), Failed),
            (Some(ETAG), None, Some(ETAG), None, NotModified),
            (None, Some(later), None, Some(later), NotModified),
            (None, None, Some("\"other\""), Some(later), Proceed),
            (None, None, None, Some(later), NotModified),
            (None, None, None, Some(earlier), Proceed),
        ];
        for (im, ius, inm, ims, want) in cases {
            let got = precondition(
                im.map(str::as_bytes),
                ius.map(str::as_bytes),
                inm.map(str::as_bytes),
                ims.map(str::as_bytes),
                ETAG,
                mtime,
            );
            assert_eq!(
                got, *want,
                "If-Match {im:?}, IUS {ius:?}, INM {inm:?}, IMS {ims:?}"
            );
        }
    }

    #[test]
    fn if_range_requires_a_strong_match_or_the_exact_date() {
        let mtime = at(RFC_EXAMPLE_SECS, 500);
        let cases: &[(&str, &str, bool)] = &[
            (ETAG, ETAG, true),
            (" \"2ebc98a1-0-400\" ", ETAG, true),
            ("W/\"2ebc98a1-0-400\"", ETAG, false),
            ("\"2ebc98a1-0-400\"", "W/\"2ebc98a1-0-400\"", false),
            ("\"other\"", ETAG, false),
            ("\"2ebc98a1-0-400\", \"x\"", ETAG, false),
            ("\"2ebc98a1-0-400", ETAG, false),
            ("*", ETAG, false),
            (RFC_EXAMPLE_DATE, ETAG, true),
            ("Sun, 06 Nov 1994 08:49:36 GMT", ETAG, false),
            ("Sun, 06 Nov 1994 08:49:38 GMT", ETAG, false),
            ("not a date", ETAG, false),
            ("", ETAG, false),
        ];
        for (header, etag, expected) in cases {
            let got = if_range_allows(header.as_bytes(), etag, mtime);
            assert_eq!(got, *expected, "{header:?} vs {etag:?}");
        }
    }

    #[test]
    fn accept_encoding_honours_weights_and_wildcards() {
        let cases: &[(&str, &str, bool)] = &[
            ("gzip", "gzip", true),
            ("GZIP", "gzip", true),
            ("gzip", "GZip", true),
            ("x-gzip", "gzip", true),
            ("x-gzip", "br", false),
            ("gzip, deflate, br", "br", true),
            ("gzip,deflate,br", "br", true),
            ("br;q=1.0, gzip;q=0.8", "gzip", true),
            ("br ; q=0.001", "br", true),
            ("br;Q=0.5", "br", true),
            ("br;level=5;q=0.5", "br", true),
            ("br;q=0", "br", false),
            ("br;q=0.0", "br", false),
            ("br;q=0.000", "br", false),
            ("br;q=0, *", "br", false),
            ("*;q=0.5", "br", true),
            ("*", "br", true),
            ("*;q=0", "br", false),
            ("*;q=0, br", "br", true),
            ("*, br;q=0", "br", false),
            ("br, br;q=0", "br", false),
            ("", "gzip", false),
            ("identity", "gzip", false),
            ("deflate", "gzip", false),
            ("gzipx", "gzip", false),
            ("br;q=2", "br", false),
            ("br;q=1.001", "br", false),
            ("br;q=0.0001", "br", false),
            ("br;q=-1", "br", false),
            ("br;q=", "br", false),
            ("br;q", "br", false),
            ("br;q=abc, gzip", "br", false),
            ("br;q=abc, *", "br", true),
            ("br;q=1.", "br", true),
            ("br;q=1.000", "br", true),
            (" , ,br", "br", true),
        ];
        for (header, coding, expected) in cases {
            let got = accepts_encoding(header.as_bytes(), coding);
            assert_eq!(got, *expected, "{header:?} for {coding}");
        }
    }
}
