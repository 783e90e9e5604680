//! Content codings made on the fly (`compress = true`): which one a request accepts
//! (Accept-Encoding with its q-values), which responses are worth compressing, and an
//! encoder that hands out what it has at every push, so a body that trickles in still
//! trickles out.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;

use super::conditional;

/// A coding shoal can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The codings shoal makes, brotli first: it wins a tie of weights (smaller, as fast to
/// decode).
pub const CODINGS: [Coding; 2] = [Coding::Brotli, Coding::Gzip];

/// What a request's `Accept-Encoding` makes of the codings on offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The acceptable coding with the highest weight (the first offered among equals).
    pub coding: Option<Coding>,
    /// `identity;q=0` (or `*;q=0` without `identity`): the client wants no unencoded body.
    pub identity_refused: bool,
}

/// Chooses among `offered` for a request with `accept_encoding` (none: no coding, as
/// browsers always send one and a client that sends none may not decode any).
pub fn choose(accept_encoding: Option<&[u8]>, offered: &[Coding]) -> Choice {
    let Some(accepted) = accept_encoding else {
        return Choice {
            coding: None,
            identity_refused: false,
        };
    };
    let mut best: Option<(Coding, u16)> = None;
    for &coding in offered {
        let weight = conditional::encoding_weight(accepted, coding.token()).unwrap_or(0);
        if weight > 0 && best.is_none_or(|(_, best)| weight > best) {
            best = Some((coding, weight));
        }
    }
    Choice {
        coding: best.map(|(coding, _)| coding),
        identity_refused: conditional::encoding_weight(accepted, "identity") == Some(0),
    }
}

/// The media types compressed unless `compress_types` says otherwise: text, and the
/// structured text formats of APIs and web pages. Images, video, archives and fonts other
/// than SVG are compressed already.
pub const DEFAULT_TYPES: [&str; 10] = [
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "image/svg+xml",
    "application/x-ndjson",
];

/// Whether a `Content-Type` value (parameters ignored) is among `types`: `type/subtype`,
/// `type/*`, or `type/*+suffix`, without regard to case.
pub fn compressible<T: AsRef<str>>(content_type: &[u8], types: &[T]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let Ok(essence) = std::str::from_utf8(essence) else {
        return false;
    };
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    types.iter().any(|pattern| {
        let Some((want_kind, want_sub)) = pattern.as_ref().split_once('/') else {
            return false;
        };
        let sub_matches = match want_sub.strip_prefix('*') {
            Some("") => true,
            Some(suffix) => subtype.len() > suffix.len() && ends_with_ignore_case(subtype, suffix),
            None => subtype.eq_ignore_ascii_case(want_sub),
        };
        kind.eq_ignore_ascii_case(want_kind) && sub_matches
    })
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len() && text[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// How hard to compress (docs/performance.md has the measurements behind each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// A body on its way to the client: CPU per request matters most.
    Streaming,
    /// Once per file, kept and served many times: the ratio matters most.
    Kept,
}

impl Effort {
    fn gzip_level(self) -> u32 {
        match self {
            Effort::Streaming => 3,
            Effort::Kept => 7,
        }
    }

    fn brotli_quality(self) -> u32 {
        match self {
            Effort::Streaming => 3,
            Effort::Kept => 7,
        }
    }

    /// The brotli window (log2 bytes): a streamed body's encoder holds about twice it.
    fn brotli_window(self) -> u32 {
        match self {
            Effort::Streaming => 18,
            Effort::Kept => 22,
        }
    }
}

/// A compressor for one body.
pub struct Encoder(Inner);

enum Inner {
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = match self.0 {
            Inner::Gzip(_) => Coding::Gzip,
            Inner::Brotli(_) => Coding::Brotli,
        };
        write!(f, "Encoder({coding:?})")
    }
}

impl Encoder {
    pub fn new(coding: Coding, effort: Effort) -> Encoder {
        Encoder(match coding {
            Coding::Gzip => Inner::Gzip(Box::new(GzEncoder::new(
                Vec::new(),
                Compression::new(effort.gzip_level()),
            ))),
            Coding::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                effort.brotli_quality(),
                effort.brotli_window(),
            ))),
        })
    }

    /// Compresses `input` and appends to `out` everything that can be decoded so far (a
    /// flush of the compressor: what came in goes out now, at a few bytes' cost).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.0 {
            Inner::Gzip(encoder) => {
                encoder.write_all(input)?;
                encoder.flush()?;
                out.append(encoder.get_mut());
            }
            Inner::Brotli(encoder) => {
                encoder.write_all(input)?;
                encoder.flush()?;
                out.append(encoder.get_mut());
            }
        }
        Ok(())
    }

    /// Ends the stream: appends its last bytes to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> io::Result<()> {
        match self.0 {
            Inner::Gzip(encoder) => out.append(&mut encoder.finish()?),
            Inner::Brotli(encoder) => out.append(&mut encoder.into_inner()),
        }
        Ok(())
    }
}

/// A short body gzipped in one call (libdeflate, level 1: on bodies of a few KiB it leaves
/// what zlib's higher levels leave, in a third of their time), with the compressor this
/// thread keeps.
pub fn gzip_whole(bytes: &[u8]) -> io::Result<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<libdeflater::Compressor> =
            std::cell::RefCell::new(libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(1).expect("level 1 is one of libdeflate's"),
            ));
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        let mut out = vec![0u8; compressor.gzip_compress_bound(bytes.len())];
        let len =
            (compressor.gzip_compress(bytes, &mut out)).map_err(|e| io::Error::other(format!("{e:?}")))?;
        out.truncate(len);
        Ok(out)
    })
}

/// `bytes` compressed whole with `coding` at `effort`.
pub fn compress(coding: Coding, effort: Effort, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = Encoder::new(coding, effort);
    let mut out = Vec::with_capacity(bytes.len() / 3);
    match &mut encoder.0 {
        Inner::Gzip(inner) => inner.write_all(bytes)?,
        Inner::Brotli(inner) => inner.write_all(bytes)?,
    }
    encoder.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decode(coding: Coding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out),
            Coding::Brotli => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
        }
        .expect("a whole stream");
        out
    }

    #[test]
    fn the_heaviest_acceptable_coding_wins_and_brotli_breaks_ties() {
        let chosen = |header: &str| choose(Some(header.as_bytes()), &CODINGS).coding;
        assert_eq!(chosen("gzip, deflate, br"), Some(Coding::Brotli));
        assert_eq!(chosen("gzip"), Some(Coding::Gzip));
        assert_eq!(chosen("br;q=0.5, gzip;q=0.8"), Some(Coding::Gzip));
        assert_eq!(chosen("br;q=0, *"), Some(Coding::Gzip));
        assert_eq!(chosen("*;q=0.1"), Some(Coding::Brotli));
        assert_eq!(chosen("x-gzip"), Some(Coding::Gzip));
        assert_eq!(chosen("identity"), None);
        assert_eq!(chosen("br;q=0, gzip;q=0"), None);
        assert_eq!(chosen(""), None);
        assert_eq!(choose(None, &CODINGS).coding, None, "no header: no coding");
        assert_eq!(
            choose(Some(b"br"), &[Coding::Gzip]).coding,
            None,
            "only what is offered"
        );
        let refused = |header: &str| choose(Some(header.as_bytes()), &CODINGS).identity_refused;
        assert!(refused("gzip, identity;q=0"));
        assert!(refused("gzip, *;q=0"));
        assert!(!refused("gzip, *;q=0, identity"));
        assert!(!refused("gzip"));
    }

    #[test]
    fn types_match_exactly_by_wildcard_or_by_suffix() {
        let types = DEFAULT_TYPES;
        assert!(compressible(b"text/html; charset=utf-8", &types));
        assert!(compressible(b"TEXT/CSS", &types));
        assert!(compressible(b"application/json", &types));
        assert!(compressible(b"application/problem+json", &types));
        assert!(compressible(b"application/atom+xml;type=feed", &types));
        assert!(compressible(b"image/svg+xml", &types));
        assert!(!compressible(b"image/png", &types));
        assert!(!compressible(b"application/octet-stream", &types));
        assert!(
            !compressible(b"application/+json", &types),
            "a suffix alone is no subtype"
        );
        assert!(!compressible(b"", &types));
        assert!(compressible(b"application/x-custom", &["application/x-custom"]));
        assert!(!compressible(b"text/html", &["application/json"]));
    }

    #[test]
    fn every_push_can_be_decoded_at_once_and_the_whole_is_the_input() {
        let text = "shoal compresses what it streams, piece by piece. ".repeat(200);
        for coding in CODINGS {
            let mut encoder = Encoder::new(coding, Effort::Streaming);
            let mut out = Vec::new();
            encoder.push(&text.as_bytes()[..100], &mut out).unwrap();
            // What the first push gave decodes to its input already (a trickle trickles).
            let mut partial = Vec::new();
            let first = out.clone();
            let mut decoder: Box<dyn Read> = match coding {
                Coding::Gzip => Box::new(flate2::read::GzDecoder::new(&first[..])),
                Coding::Brotli => Box::new(brotli::Decompressor::new(&first[..], 4096)),
            };
            let mut chunk = [0u8; 256];
            while partial.len() < 100 {
                let n = decoder.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                partial.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(partial, &text.as_bytes()[..100], "{coding:?}");
            encoder.push(&text.as_bytes()[100..], &mut out).unwrap();
            encoder.push(b"", &mut out).unwrap();
            encoder.finish(&mut out).unwrap();
            assert_eq!(decode(coding, &out), text.as_bytes(), "{coding:?}");
            assert!(out.len() < text.len() / 10, "{coding:?}: {} bytes", out.len());
            let whole = compress(coding, Effort::Kept, text.as_bytes()).unwrap();
            assert_eq!(decode(coding, &whole), text.as_bytes(), "{coding:?}");
        }
        let short = &text.as_bytes()[..1000];
        let gzipped = gzip_whole(short).unwrap();
        assert_eq!(decode(Coding::Gzip, &gzipped), short);
        assert!(gzipped.len() < short.len() / 4, "{} bytes", gzipped.len());
        assert_eq!(decode(Coding::Gzip, &gzip_whole(b"").unwrap()), b"");
    }
}
