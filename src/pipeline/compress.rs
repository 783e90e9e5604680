//! Compressing a response on its way to the client (`compress = true`): whether this one is
//! worth it, the head that says so, and the body through an [`Encoder`], flushed at every
//! part so a body that trickles from the upstream still trickles to the client.
//!
//! Proxied answers and the response cache's answers come this way; static files keep their
//! compressed forms beside them instead (`files`), made once per file.

use crate::config::Compress;
use crate::http::encoding::{self, Choice, Coding, Effort, Encoder};
use crate::http::request::Method;
use crate::http::response::{Length, ResponseHead};

/// Where a response's compression stands.
#[derive(Debug, Default)]
pub enum Compression {
    /// Not for this response (the default: static files, shoal's own answers).
    #[default]
    Off,
    /// The client accepts `coding`; the head decides.
    Offered(Choice),
    /// The body goes through this encoder.
    On(Box<Encoder>),
    /// A short body (gzip, at most [`WHOLE_MAX_BYTES`] announced) is gathered, then gzipped
    /// whole at its end: cheaper than setting a streaming encoder up for it.
    Gathering(Vec<u8>),
}

/// Answers announced up to this long are gzipped whole (see [`Compression::Gathering`]).
const WHOLE_MAX_BYTES: u64 = 4096;

impl Compression {
    /// Offers compression to a response whose request accepts `choice`.
    pub fn offer(choice: Choice) -> Compression {
        match choice.coding {
            Some(_) => Compression::Offered(choice),
            None => Compression::Off,
        }
    }

    /// At the head: turns an offer into an encoder when `head` is worth compressing under
    /// `rules` (changing it to say so), or off.
    pub fn decide(&mut self, head: &mut ResponseHead, method: Method, rules: Option<&Compress>) {
        let Compression::Offered(choice) = *self else {
            return;
        };
        *self = match (rules, choice.coding) {
            (Some(rules), Some(coding)) if worth_it(head, method, rules, choice) => {
                let length = head.length;
                encode_head(head, coding);
                match (coding, length) {
                    (Coding::Gzip, Length::Known(n)) if n <= WHOLE_MAX_BYTES => {
                        Compression::Gathering(Vec::with_capacity(n as usize))
                    }
                    _ => Compression::On(Box::new(Encoder::new(coding, Effort::Streaming))),
                }
            }
            _ => Compression::Off,
        };
    }
}

/// Whether `head`'s body may and should be compressed: a body that is not encoded already,
/// whole (not a range), allowed to be transformed, of a compressible type, and long enough
/// (or of unknown length; any length when the client refuses `identity`).
fn worth_it(head: &ResponseHead, method: Method, rules: &Compress, choice: Choice) -> bool {
    let status = head.status;
    let has_body = !matches!(status, 100..=199 | 204 | 206 | 304) && method != Method::Head;
    let encoded = head
        .get("content-encoding")
        .is_some_and(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"identity"));
    let no_transform = head
        .lines()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"cache-control"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"));
    let typed = head
        .get("content-type")
        .is_some_and(|content_type| encoding::compressible(content_type, &rules.types));
    let long_enough = match head.length {
        Length::None => false,
        Length::Known(n) => n >= rules.min_bytes || (choice.identity_refused && n > 0),
        Length::Unknown => true,
    };
    has_body && !encoded && !no_transform && head.get("content-range").is_none() && typed && long_enough
}

/// Makes `head` say its body is `coding`-encoded: no length (chunked, or closed), the
/// coding, `Vary: Accept-Encoding`, a strong entity-tag made weak (the bytes differ from
/// the upstream's; the content is the same), and no `Accept-Ranges` (a range of these
/// bytes cannot be asked for: a range request gets the app's own 206, uncompressed).
fn encode_head(head: &mut ResponseHead, coding: Coding) {
    head.length = Length::Unknown;
    head.remove("accept-ranges");
    head.remove("content-encoding");
    head.add(b"Content-Encoding", coding.token().as_bytes());
    let varies = head
        .lines()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"vary"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .any(|name| {
            let name = name.trim_ascii();
            name.eq_ignore_ascii_case(b"accept-encoding") || name == b"*"
        });
    if !varies {
        head.add(b"Vary", b"Accept-Encoding");
    }
    if let Some(etag) = head.get("etag").filter(|etag| etag.starts_with(b"\"")) {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag);
        head.remove("etag");
        head.add(b"ETag", &weak);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Compress {
        Compress {
            types: encoding::DEFAULT_TYPES.map(String::from).to_vec(),
            min_bytes: 1024,
        }
    }

    const BROTLI: Choice = Choice {
        coding: Some(Coding::Brotli),
        identity_refused: false,
    };

    fn made(status: u16, length: Length, lines: &[(&str, &str)]) -> ResponseHead {
        let mut head = ResponseHead::default();
        head.relayed(status, b"");
        head.length = length;
        for (name, value) in lines {
            head.add(name.as_bytes(), value.as_bytes());
        }
        head
    }

    fn decided(mut head: ResponseHead, method: Method, choice: Choice) -> (bool, ResponseHead) {
        let mut compression = Compression::offer(choice);
        compression.decide(&mut head, method, Some(&rules()));
        let on = matches!(compression, Compression::On(_) | Compression::Gathering(_));
        (on, head)
    }

    #[test]
    fn a_short_gzip_answer_is_gathered_and_others_stream() {
        let gzip = Choice {
            coding: Some(Coding::Gzip),
            ..BROTLI
        };
        let cases = [
            (gzip, Length::Known(4096), true),
            (gzip, Length::Known(4097), false),
            (gzip, Length::Unknown, false),
            (BROTLI, Length::Known(2000), false),
        ];
        for (choice, length, gathered) in cases {
            let mut compression = Compression::offer(choice);
            compression.decide(&mut made(200, length, &[HTML]), Method::Get, Some(&rules()));
            assert_eq!(
                matches!(compression, Compression::Gathering(_)),
                gathered,
                "{length:?}"
            );
        }
    }

    const HTML: (&str, &str) = ("Content-Type", "text/html; charset=utf-8");

    #[test]
    fn a_compressed_head_says_so_varies_and_weakens_its_tag() {
        let lines = [
            HTML,
            ("ETag", "\"v1\""),
            ("Vary", "Cookie"),
            ("Accept-Ranges", "bytes"),
        ];
        let (on, head) = decided(made(200, Length::Known(5000), &lines), Method::Get, BROTLI);
        assert!(on);
        assert_eq!(head.length, Length::Unknown);
        assert_eq!(head.get("content-encoding"), Some(&b"br"[..]));
        assert_eq!(head.get("etag"), Some(&b"W/\"v1\""[..]));
        assert_eq!(head.get("accept-ranges"), None);
        let vary: Vec<_> = head
            .lines()
            .filter(|(n, _)| n == b"Vary")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(vary, [&b"Cookie"[..], b"Accept-Encoding"]);
        let weak = [HTML, ("ETag", "W/\"v1\""), ("Vary", "accept-encoding")];
        let (_, head) = decided(made(200, Length::Unknown, &weak), Method::Get, BROTLI);
        assert_eq!(head.get("etag"), Some(&b"W/\"v1\""[..]));
        assert_eq!(
            head.lines()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"vary"))
                .count(),
            1
        );
    }

    #[test]
    fn what_is_left_alone() {
        let left_alone = [
            (
                made(200, Length::Known(5000), &[("Content-Type", "image/png")]),
                Method::Get,
            ),
            (made(200, Length::Known(500), &[HTML]), Method::Get),
            (
                made(200, Length::Known(5000), &[HTML, ("Content-Encoding", "gzip")]),
                Method::Get,
            ),
            (
                made(
                    200,
                    Length::Known(5000),
                    &[HTML, ("Cache-Control", "public, No-Transform")],
                ),
                Method::Get,
            ),
            (
                made(
                    206,
                    Length::Known(5000),
                    &[HTML, ("Content-Range", "bytes 0-4999/9000")],
                ),
                Method::Get,
            ),
            (made(304, Length::None, &[HTML]), Method::Get),
            (made(204, Length::None, &[HTML]), Method::Get),
            (made(101, Length::Unknown, &[HTML]), Method::Get),
            (made(200, Length::Known(5000), &[HTML]), Method::Head),
            (made(200, Length::Known(5000), &[]), Method::Get),
        ];
        for (head, method) in left_alone {
            let before = format!("{:?}", head.lines().collect::<Vec<_>>());
            let (on, after) = decided(head, method, BROTLI);
            assert!(!on, "{before}");
            assert_eq!(format!("{:?}", after.lines().collect::<Vec<_>>()), before);
        }
        let unknown = made(200, Length::Unknown, &[HTML]);
        assert!(
            decided(unknown, Method::Get, BROTLI).0,
            "a stream of unknown length"
        );
        let short = || made(200, Length::Known(500), &[HTML]);
        let refused = Choice {
            identity_refused: true,
            ..BROTLI
        };
        assert!(decided(short(), Method::Get, refused).0, "identity;q=0");
        let none = Choice {
            coding: None,
            identity_refused: false,
        };
        assert!(!decided(short(), Method::Get, none).0);
        let mut off = Compression::offer(BROTLI);
        off.decide(&mut made(200, Length::Unknown, &[HTML]), Method::Get, None);
        assert!(matches!(off, Compression::Off), "a route without compress");
    }
}
