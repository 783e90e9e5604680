//! Human units in config values: byte sizes (`16KiB`, `10MiB`, `512`) and durations
//! (`500ms`, `10s`, `1m`, `1h`, compound like `1m30s`, `0`).
//!
//! Size units are binary whatever their spelling, as nginx (`10m`, `10M`) and HAProxy read
//! them: `10MB` is 10 MiB, never 10,000,000 bytes.

use std::time::Duration;

/// Parses a byte size: a plain number of bytes, or a whole number with `B`, `KiB`, `MiB`,
/// `GiB`, in any case; `K`/`KB`, `M`/`MB`, `G`/`GB` are the same binary units (as nginx and
/// HAProxy read `k`, `m`, `g`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = split_number(text);
    if unit.starts_with('.') && !digits.is_empty() {
        return Err(format!(
            "`{text}` is not a size: whole numbers only (write `1536KiB` for 1.5 MiB)"
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try `16KiB`, `10MiB` or a byte count)"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` has an unknown size unit `{unit}` (use KiB, MiB or GiB; K, M, G, KB, MB \
                 and GB mean the same binary units)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration: whole numbers with `h`, `m`, `s` or `ms`, one or several from the
/// largest unit down (`500ms`, `10s`, `1m30s`, `1h 30m`, `1s500ms`); a bare `0` means zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    let mut previous: Option<usize> = None;
    while !rest.is_empty() {
        let (digits, after) = split_number(rest);
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (try `500ms`, `10s` or `1m30s`)"))?;
        if after.starts_with('.') {
            return Err(format!(
                "`{text}` is not a duration: whole numbers only (`1.5s` is `1s500ms` or `1500ms`)"
            ));
        }
        let end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(end);
        const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];
        let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("`{text}` needs a unit: ms, s, m or h")
            } else {
                format!("`{text}` has an unknown unit `{unit}`: use h, m, s or ms (like `36h` or `1m30s`)")
            });
        };
        if previous.is_some_and(|p| p >= rank) {
            return Err(format!(
                "`{text}`: write each unit once, from the largest down (like `1h30m` or `1m30s`)"
            ));
        }
        previous = Some(rank);
        millis = value
            .checked_mul(UNITS[rank].1)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(|| format!("`{text}` is too long"))?;
        rest = after.trim_start();
    }
    if previous.is_none() {
        return Err(format!(
            "`{text}` is not a duration (try `500ms`, `10s` or `1m30s`)"
        ));
    }
    Ok(Duration::from_millis(millis))
}

fn split_number(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    (&text[..end], text[end..].trim_start())
}

/// A byte size read from TOML: a string with a unit or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// A duration read from TOML: a string with a unit, or the integer `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match SizeOrText::deserialize(d)? {
            SizeOrText::Number(n) if n >= 0 => Ok(Size(n as u64)),
            SizeOrText::Number(n) => Err(serde::de::Error::custom(format!("size {n} is negative"))),
            SizeOrText::Text(t) => parse_size(&t).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match SizeOrText::deserialize(d)? {
            SizeOrText::Number(0) => Ok(Span(Duration::ZERO)),
            SizeOrText::Number(n) => Err(serde::de::Error::custom(format!(
                "duration {n} needs a unit: write \"{n}s\" or \"{n}ms\""
            ))),
            SizeOrText::Text(t) => parse_duration(&t).map(Span).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged, expecting = "a string like \"10s\" or \"16KiB\", or an integer")]
enum SizeOrText {
    Number(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("512", Some(512)),
            ("16KiB", Some(16 * 1024)),
            ("10MiB", Some(10 << 20)),
            ("1GiB", Some(1 << 30)),
            ("4k", Some(4096)),
            ("2 MB", Some(2 << 20)),
            // Every spelling of a unit is binary, as nginx and HAProxy read k, m, g.
            ("10m", Some(10 << 20)),
            ("10M", Some(10 << 20)),
            ("10MB", Some(10 << 20)),
            ("10mb", Some(10 << 20)),
            ("10MiB", Some(10 << 20)),
            ("10mib", Some(10 << 20)),
            ("1G", Some(1 << 30)),
            ("1gb", Some(1 << 30)),
            ("64KB", Some(64 << 10)),
            ("7B", Some(7)),
            ("1TiB", None),
            ("10 M B", None),
            ("", None),
            ("KiB", None),
            ("-1", None),
            ("1.5MiB", None),
            ("16XiB", None),
            ("99999999999999999999GiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), *want, "{text}");
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("500ms", Some(500)),
            ("10s", Some(10_000)),
            ("1m", Some(60_000)),
            ("2h", Some(7_200_000)),
            ("0s", Some(0)),
            ("0ms", Some(0)),
            ("1m30s", Some(90_000)),
            ("1h30m", Some(5_400_000)),
            ("1h 30m", Some(5_400_000)),
            ("1h0m1s", Some(3_601_000)),
            ("1s500ms", Some(1_500)),
            ("2h15m30s250ms", Some(8_130_250)),
            ("90s", Some(90_000)),
            ("10", None),
            ("1m30", None),
            ("1d", None),
            ("s", None),
            ("-1s", None),
            ("", None),
            ("30s1m", None),
            ("1m1m", None),
            ("1.5s", None),
            ("99999999999999999999h", None),
            ("5124095576030432h", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, *want, "{text}");
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        let cases = [
            ("10", "`10` needs a unit: ms, s, m or h"),
            ("1m30", "`1m30` needs a unit"),
            (
                "1d",
                "unknown unit `d`: use h, m, s or ms (like `36h` or `1m30s`)",
            ),
            ("30s1m", "from the largest down (like `1h30m` or `1m30s`)"),
            ("1.5s", "whole numbers only (`1.5s` is `1s500ms` or `1500ms`)"),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).unwrap_err();
            assert!(got.contains(want), "{text}: {got}");
        }
        let sizes = [
            ("1.5MiB", "whole numbers only (write `1536KiB` for 1.5 MiB)"),
            (
                "16XiB",
                "unknown size unit `XiB` (use KiB, MiB or GiB; K, M, G, KB, MB and GB",
            ),
        ];
        for (text, want) in sizes {
            let got = parse_size(text).unwrap_err();
            assert!(got.contains(want), "{text}: {got}");
        }
    }
}
