//! `Range: bytes=...` interpretation for one representation of known size (RFC 9110 §14).
//!
//! Owns the decision between a full response, a single partial response and a 416.
//! Invariant: a [`RangeRequest::Single`] always satisfies `start <= end < size`; anything that is
//! not strictly valid syntax is ignored, so the request falls back to a plain 200.

/// Most range specs (including empty list elements) read before the header is ignored.
const MAX_RANGES: usize = 100;

/// What to do with a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Syntactically invalid or not a `bytes` range: serve the full representation with 200.
    Ignore,
    /// Exactly one satisfiable range: serve `start..=end` with 206.
    Single {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive; always less than the size.
        end: u64,
    },
    /// More than one satisfiable range. Multipart responses are not produced, so the caller
    /// serves the full representation with 200, which RFC 9110 permits.
    Multiple,
    /// Valid syntax but nothing satisfiable: respond 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// One `range-spec` as written, before it is checked against the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `first-last`, with `last` absent for an open-ended range.
    FromTo { first: u64, last: Option<u64> },
    /// `-length`: the final `length` bytes.
    Suffix { length: u64 },
}

/// Interprets a Range header value for a representation of `size` bytes (RFC 9110 §14).
/// Ignore: syntactically invalid or not a `bytes` unit (the request is served as a full 200).
/// Single: exactly one satisfiable range, clamped to the size (`bytes=0-` , `bytes=-500` suffix,
/// `bytes=100-99999999` clamps end to size-1). Multiple: more than one satisfiable range (the
/// caller serves the full 200, since multipart/byteranges is not produced). Unsatisfiable: valid
/// syntax but no range satisfiable (e.g. start >= size, or `bytes=-0`, or size == 0) -> 416.
pub fn parse_range(value: &[u8], size: u64) -> RangeRequest {
    let Some(specs) = parse_byte_ranges(trim_ows(value)) else {
        return RangeRequest::Ignore;
    };
    let mut satisfiable = specs.iter().filter_map(|spec| satisfy(*spec, size));
    match (satisfiable.next(), satisfiable.next()) {
        (None, _) => RangeRequest::Unsatisfiable,
        (Some((start, end)), None) => RangeRequest::Single { start, end },
        (Some(_), Some(_)) => RangeRequest::Multiple,
    }
}

/// Parses `bytes=<range-set>`; None for any syntax error or a different unit.
fn parse_byte_ranges(value: &[u8]) -> Option<Vec<RangeSpec>> {
    let equals = value.iter().position(|&byte| byte == b'=')?;
    let (unit, range_set) = (&value[..equals], &value[equals + 1..]);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let elements: Vec<&[u8]> = range_set.split(|&byte| byte == b',').collect();
    if elements.len() > MAX_RANGES {
        return None;
    }
    // RFC 9110 §5.6.1.2: empty list elements are tolerated, but at least one range is required.
    let specs: Vec<RangeSpec> = elements
        .into_iter()
        .map(trim_ows)
        .filter(|element| !element.is_empty())
        .map(parse_spec)
        .collect::<Option<_>>()?;
    (!specs.is_empty()).then_some(specs)
}

fn parse_spec(spec: &[u8]) -> Option<RangeSpec> {
    let dash = spec.iter().position(|&byte| byte == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return Some(RangeSpec::Suffix {
            length: parse_digits(last)?,
        });
    }
    let first = parse_digits(first)?;
    let last = match last {
        b"" => None,
        digits => Some(parse_digits(digits)?),
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(RangeSpec::FromTo { first, last })
}

/// `1*DIGIT` as a u64; None for other bytes, no digits, or overflow.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The inclusive byte span a spec selects within `size` bytes, if any.
fn satisfy(spec: RangeSpec, size: u64) -> Option<(u64, u64)> {
    let last_byte = size.checked_sub(1)?;
    match spec {
        RangeSpec::FromTo { first, last } if first < size => {
            Some((first, last.map_or(last_byte, |last| last.min(last_byte))))
        }
        RangeSpec::FromTo { .. } => None,
        RangeSpec::Suffix { length: 0 } => None,
        RangeSpec::Suffix { length } => Some((size - length.min(size), last_byte)),
    }
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    fn single(start: u64, end: u64) -> RangeRequest {
        Single { start, end }
    }

    fn check(cases: &[(&str, u64, RangeRequest)]) {
        for (value, size, expected) in cases {
            let got = parse_range(value.as_bytes(), *size);
            assert_eq!(got, *expected, "{value:?} size {size}");
        }
    }

    #[test]
    fn single_ranges_are_clamped() {
        check(&[
            ("bytes=0-", 1000, single(0, 999)),
            ("bytes=0-0", 1000, single(0, 0)),
            ("bytes=0-499", 1000, single(0, 499)),
            ("bytes=500-999", 1000, single(500, 999)),
            ("bytes=999-999", 1000, single(999, 999)),
            ("bytes=100-99999999", 1000, single(100, 999)),
            ("bytes=100-18446744073709551615", 1000, single(100, 999)),
            ("bytes=-500", 1000, single(500, 999)),
            ("bytes=-1", 1000, single(999, 999)),
            ("bytes=-1000", 1000, single(0, 999)),
            ("bytes=-5000", 1000, single(0, 999)),
            ("bytes=0-", 1, single(0, 0)),
            ("bytes=-1", 1, single(0, 0)),
            ("bytes=007-010", 1000, single(7, 10)),
        ]);
    }

    #[test]
    fn unit_is_case_insensitive_and_ows_is_allowed_around_commas() {
        check(&[
            ("BYTES=0-9", 100, single(0, 9)),
            ("Bytes=0-9", 100, single(0, 9)),
            ("bytes=0-9 ", 100, single(0, 9)),
            (" bytes=0-9", 100, single(0, 9)),
            ("bytes= 0-9", 100, single(0, 9)),
            ("bytes=0-9 , 20-29", 100, Multiple),
            ("bytes=0-9,\t20-29", 100, Multiple),
            ("bytes=0-9,,", 100, single(0, 9)),
            ("bytes=,0-9", 100, single(0, 9)),
        ]);
    }

    #[test]
    fn multiple_satisfiable_ranges() {
        check(&[
            ("bytes=0-9,20-29", 100, Multiple),
            ("bytes=0-0,-1", 100, Multiple),
            ("bytes=0-9,0-9", 100, Multiple),
            ("bytes=0-,-5,10-20", 100, Multiple),
        ]);
    }

    #[test]
    fn only_one_satisfiable_range_among_several_is_single() {
        check(&[
            ("bytes=0-9,200-299", 100, single(0, 9)),
            ("bytes=500-,10-", 100, single(10, 99)),
            ("bytes=-0,-10", 100, single(90, 99)),
            ("bytes=100-,-0,50-60", 100, single(50, 60)),
        ]);
    }

    #[test]
    fn unsatisfiable_ranges() {
        check(&[
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=1000-2000", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=0-0", 0, Unsatisfiable),
            ("bytes=100-,200-", 50, Unsatisfiable),
        ]);
    }

    #[test]
    fn invalid_syntax_is_ignored() {
        check(&[
            ("", 100, Ignore),
            ("bytes", 100, Ignore),
            ("bytes=", 100, Ignore),
            ("bytes=,", 100, Ignore),
            ("bytes=-", 100, Ignore),
            ("bytes=5", 100, Ignore),
            ("bytes=a-b", 100, Ignore),
            ("bytes=0x1-2", 100, Ignore),
            ("bytes=+1-2", 100, Ignore),
            ("bytes=1-+2", 100, Ignore),
            ("bytes=--1", 100, Ignore),
            ("bytes=1--2", 100, Ignore),
            ("bytes=-1-2", 100, Ignore),
            ("bytes=1 -2", 100, Ignore),
            ("bytes=1- 2", 100, Ignore),
            ("bytes =0-1", 100, Ignore),
            ("bytes= =0-1", 100, Ignore),
            ("bytes=0-1;x", 100, Ignore),
            ("bytes=5-4", 100, Ignore),
            ("bytes=0-1,5-4", 100, Ignore),
            ("bytes=0-1,junk", 100, Ignore),
            ("bytes=1.5-2", 100, Ignore),
            ("bytes=\u{0661}-2", 100, Ignore),
            ("items=0-1", 100, Ignore),
            ("byte=0-1", 100, Ignore),
            ("bytes0-1", 100, Ignore),
            ("=0-1", 100, Ignore),
            ("bytes=18446744073709551616-", 100, Ignore),
            ("bytes=0-18446744073709551616", 100, Ignore),
            ("bytes=-18446744073709551616", 100, Ignore),
        ]);
    }

    #[test]
    fn range_count_is_limited() {
        let ranges = |count: usize| format!("bytes={}", vec!["0-0"; count].join(","));
        let at_limit = ranges(MAX_RANGES);
        let over_limit = ranges(MAX_RANGES + 1);
        let commas = format!("bytes=0-0{}", ",".repeat(MAX_RANGES));
        check(&[
            (&at_limit, 10, Multiple),
            (&over_limit, 10, Ignore),
            (&commas, 10, Ignore),
        ]);
    }

    #[test]
    fn largest_values_do_not_overflow() {
        let max = u64::MAX;
        check(&[
            ("bytes=0-", max, single(0, max - 1)),
            ("bytes=-18446744073709551615", max, single(0, max - 1)),
            ("bytes=-1", max, single(max - 1, max - 1)),
            ("bytes=18446744073709551614-", max, single(max - 1, max - 1)),
            ("bytes=18446744073709551615-", max, Unsatisfiable),
        ]);
    }
}
