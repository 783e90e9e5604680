//! The upstream's response head: parsed strictly, framed unambiguously, and rewritten for
//! the client. An upstream that frames its response ambiguously gets a 502, never relayed.

use std::mem::MaybeUninit;

use crate::http::hop::{self, ConnectionOptions};
use crate::http::request::{parse_length, tokens};
use crate::http::response::{Length, ResponseHead};

/// Largest upstream response head accepted; over it the response is a 502.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// How the upstream delimits its response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamBody {
    /// HEAD, 1xx, 204 and 304 have none, whatever the headers say.
    None,
    Length(u64),
    Chunked,
    /// Everything until the upstream closes.
    UntilClose,
}

/// A parsed, validated upstream response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHead {
    pub status: u16,
    /// Bytes of the head, through the empty line.
    pub len: usize,
    pub body: UpstreamBody,
    /// The upstream will keep the connection open after this response.
    pub keep_alive: bool,
    /// Content-Length as sent (kept for HEAD and 304 answers).
    pub content_length: Option<u64>,
    /// Where the values of `X-Accel-Redirect` and `X-Sendfile` are in the head (start and
    /// end), if sent.
    pub accel_redirect: Option<(usize, usize)>,
    pub sendfile: Option<(usize, usize)>,
}

/// Why an upstream response head is refused (each is a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Malformed,
    TooLarge,
    ConflictingLength,
    BadTransferEncoding,
}

/// Room for the header lines of one parsed head (uninitialised: no 8 KiB memset per head).
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// A parsed head: its facts, and its reason and header lines (in `buf` and the slots), which
/// `relay_head` rewrites for the client without parsing the head again.
pub struct Parsed<'b, 'h> {
    pub head: UpstreamHead,
    reason: &'b str,
    headers: &'h [httparse::Header<'b>],
}

/// Parses the response head at the start of `buf` into `slots`; `Ok(None)` means more bytes
/// are needed.
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    request_was_head: bool,
    slots: &'h mut HeaderSlots<'b>,
) -> Result<Option<Parsed<'b, 'h>>, ResponseError> {
    let mut response = httparse::Response::new(&mut []);
    let len =
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, slots)
        {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                return Err(ResponseError::TooLarge)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(ResponseError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ResponseError::Malformed),
        };
    let (Some(status), Some(minor)) = (response.code, response.version) else {
        return Err(ResponseError::Malformed);
    };
    // Every valid status is in 100..=599 (RFC 9110 §15); httparse takes any three digits.
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Malformed);
    }
    let mut content_length: Option<u64> = None;
    // Transfer codings across every Transfer-Encoding line, and whether the last is chunked.
    let mut codings = 0;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = minor == 0;
    let (mut accel_redirect, mut sendfile) = (None, None);
    let place = |value: &[u8]| {
        let start = value.as_ptr() as usize - buf.as_ptr() as usize;
        (start, start + value.len())
    };
    for header in response.headers.iter() {
        let value = header.value;
        if header.name.eq_ignore_ascii_case("x-accel-redirect") {
            accel_redirect = Some(place(value));
        } else if header.name.eq_ignore_ascii_case("x-sendfile") {
            sendfile = Some(place(value));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(value.trim_ascii()).ok_or(ResponseError::ConflictingLength)?;
            if content_length.is_some_and(|seen| seen != n) {
                return Err(ResponseError::ConflictingLength);
            }
            content_length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in tokens(value) {
                codings += 1;
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                    close = false;
                }
            }
        }
    }
    // Only a lone `chunked` can be relayed: shoal drops the header and decodes chunked, so any
    // other coding (gzip, or chunked twice) would reach the client undeclared.
    if transfer_encoding && (codings != 1 || !chunked) {
        return Err(ResponseError::BadTransferEncoding);
    }
    let no_body = request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
    let body = match (transfer_encoding, content_length) {
        _ if no_body => UpstreamBody::None,
        (true, Some(_)) => return Err(ResponseError::ConflictingLength),
        (true, None) => UpstreamBody::Chunked,
        (false, Some(n)) => UpstreamBody::Length(n),
        (false, None) => UpstreamBody::UntilClose,
    };
    let keep_alive = !close && body != UpstreamBody::UntilClose;
    let head = UpstreamHead {
        status,
        len,
        body,
        keep_alive,
        content_length,
        accel_redirect,
        sendfile,
    };
    Ok(Some(Parsed {
        head,
        reason: response.reason.unwrap_or(""),
        headers: response.headers,
    }))
}

/// Headers shoal writes itself toward the client, besides the hop-by-hop ones; and
/// `X-Accel-Redirect`, which is for shoal, never for the client (nginx hides it too).
const REWRITTEN: &[&str] = &["content-length", "x-accel-redirect"];

/// Fills `into` with what the client gets of the upstream's head: its status and reason,
/// every end-to-end header line in order, and the body's length as the upstream's framing
/// tells it.
pub fn relay_head(parsed: &Parsed, into: &mut ResponseHead) {
    let head = &parsed.head;
    into.relayed(head.status, parsed.reason.as_bytes());
    let connection = ConnectionOptions::of(
        (parsed.headers.iter())
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .map(|h| h.value),
    );
    let switching = head.status == 101;
    for header in parsed.headers {
        let name = header.name.as_bytes();
        // A protocol switch is end to end: its Upgrade header goes through.
        let passes_upgrade = switching && name.eq_ignore_ascii_case(b"upgrade");
        if !passes_upgrade && (hop::is_dropped(name, REWRITTEN) || connection.name(name)) {
            continue;
        }
        into.add(name, header.value);
    }
    into.length = match head.body {
        // HEAD, 304: the length the upstream advertises, without a body.
        UpstreamBody::None => head.content_length.map_or(Length::None, Length::Known),
        UpstreamBody::Length(n) => Length::Known(n),
        UpstreamBody::Chunked | UpstreamBody::UntilClose => Length::Unknown,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<UpstreamHead>, ResponseError> {
        parse(text.as_bytes(), false, &mut header_slots()).map(|parsed| parsed.map(|p| p.head))
    }

    /// The head's facts and what the client gets of it.
    fn relayed(text: &str, was_head: bool) -> (UpstreamHead, ResponseHead) {
        let mut slots = header_slots();
        let parsed = parse(text.as_bytes(), was_head, &mut slots).unwrap().unwrap();
        let mut relayed = ResponseHead::default();
        relay_head(&parsed, &mut relayed);
        (parsed.head, relayed)
    }

    #[test]
    fn offload_headers_are_found_and_x_accel_redirect_is_never_relayed() {
        let text = "HTTP/1.1 200 OK\r\nX-Accel-Redirect: /protected/a.pdf\r\nX-Sendfile: /srv/a.pdf\r\nContent-Length: 0\r\n\r\n";
        let (parsed, relayed) = relayed(text, false);
        let value = |(start, end): (usize, usize)| &text[start..end];
        assert_eq!(parsed.accel_redirect.map(value), Some("/protected/a.pdf"));
        assert_eq!(parsed.sendfile.map(value), Some("/srv/a.pdf"));
        assert_eq!(relayed.get("x-accel-redirect"), None);
        assert_eq!(relayed.get("x-sendfile"), Some(&b"/srv/a.pdf"[..]));
    }

    #[test]
    fn framing_decisions() {
        let body = |text: &str| head(text).map(|h| h.unwrap().body);
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Ok(UpstreamBody::Length(5))
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(UpstreamBody::Chunked)
        );
        assert_eq!(body("HTTP/1.1 200 OK\r\n\r\n"), Ok(UpstreamBody::UntilClose));
        assert_eq!(
            body("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
            Ok(UpstreamBody::None)
        );
        assert_eq!(body("HTTP/1.1 304 Not Modified\r\n\r\n"), Ok(UpstreamBody::None));
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(ResponseError::ConflictingLength)
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ResponseError::ConflictingLength)
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
            Err(ResponseError::ConflictingLength)
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(ResponseError::BadTransferEncoding)
        );
        // A coding shoal would drop undeclared, or chunked applied twice: never relayed.
        for codings in [
            "gzip",
            "gzip, chunked",
            "chunked\r\nTransfer-Encoding: chunked",
            "chunked\r\nTransfer-Encoding: identity",
            "",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {codings}\r\n\r\n");
            assert_eq!(
                body(&text),
                Err(ResponseError::BadTransferEncoding),
                "{codings:?}"
            );
        }
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                &mut header_slots()
            )
            .unwrap()
            .unwrap()
            .head
            .body,
            UpstreamBody::None
        );
    }

    #[test]
    fn garbage_and_oversize_are_refused() {
        assert_eq!(head("garbage\r\n\r\n"), Err(ResponseError::Malformed));
        assert_eq!(head("HTTP/1.1 2000 OK\r\n\r\n"), Err(ResponseError::Malformed));
        // Found by fuzzing: "099" was relayed as "99", a status line no client can read.
        for status in ["000", "099", "600", "999"] {
            let text = format!("HTTP/1.1 {status} Odd\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(head(&text), Err(ResponseError::Malformed), "{status}");
        }
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"),
            Err(ResponseError::Malformed)
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&huge), Err(ResponseError::TooLarge));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-"), Ok(None));
    }

    #[test]
    fn persistence_of_the_upstream_connection() {
        let keep = |text: &str| head(text).unwrap().unwrap().keep_alive;
        assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn the_relayed_head_keeps_repeats_and_drops_hop_by_hop() {
        let text = "HTTP/1.1 200 Fine\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nDate: D\r\n\r\n";
        let (_, relayed) = relayed(text, false);
        assert_eq!((relayed.status, relayed.reason()), (200, &b"Fine"[..]));
        assert_eq!(relayed.length, Length::Unknown);
        let lines: Vec<(&[u8], &[u8])> = relayed.lines().collect();
        assert_eq!(
            lines,
            [
                (&b"Set-Cookie"[..], &b"a=1"[..]),
                (b"Set-Cookie", b"b=2"),
                (b"Date", b"D")
            ]
        );
    }

    #[test]
    fn lengths_follow_the_upstream_framing() {
        let length = |text: &str, was_head: bool| relayed(text, was_head).1.length;
        assert_eq!(
            length("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", false),
            Length::Known(7)
        );
        assert_eq!(
            length("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true),
            Length::Known(7)
        );
        assert_eq!(length("HTTP/1.1 200 OK\r\n\r\n", false), Length::Unknown);
        assert_eq!(length("HTTP/1.1 304 Not Modified\r\n\r\n", false), Length::None);
        let upgrade = "HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let (_, relayed) = relayed(upgrade, false);
        assert_eq!(relayed.get("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(relayed.get("connection"), None);
    }
}
