//! Human units in config values: byte sizes (`16KiB`, `10MiB`, `512`) and durations
//! (`500ms`, `10s`, `1m`, `1h`, `0`).

use std::time::Duration;

/// Parses a byte size: a plain number of bytes, or a number with `B`, `KiB`, `MiB`, `GiB`
/// (`K`/`KB`, `M`/`MB`, `G`/`GB` are read as the same binary units, as nginx does).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = split_number(text);
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
                "`{text}` has an unknown size unit `{unit}` (use KiB, MiB or GiB)"
            ))
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a duration: a number with `ms`, `s`, `m` or `h`; a bare `0` means zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = split_number(text);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try `500ms`, `10s` or `1m`)"))?;
    let millis_per_unit: u64 = match unit {
        "" if value == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}` needs a unit: ms, s, m or h")),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
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
            ("10", None),
            ("1d", None),
            ("s", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, *want, "{text}");
        }
    }
}
