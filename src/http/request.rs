//! Request heads: httparse does the tokenizing; this module makes the framing and
//! persistence decisions and rejects every ambiguity instead of guessing.
//!
//! A parsed [`RequestHead`] holds no borrowed data: it indexes every header line once, as
//! [`Slice`]s into the buffer the head was parsed from, which the caller keeps until the
//! request is answered. Lookups by name and walks in order read that index; nothing parses
//! the head a second time. A connection parses into one head it keeps ([`parse_into`]), so
//! the index costs no allocation once its capacity is there.

use std::mem::MaybeUninit;

use super::target;

/// Largest `max_headers` accepted: the parser and the index keep their tables inline.
pub const MAX_HEADERS_CEILING: usize = 256;

/// What a request head may hold (from the config's `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line plus headers; over it: 431 (414 if the request line alone is over).
    pub max_header_bytes: usize,
    /// Header lines; over it: 431. At most [`MAX_HEADERS_CEILING`].
    pub max_headers: usize,
    /// A declared Content-Length over this: 413.
    pub max_body_bytes: u64,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// A byte range in the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slice {
    start: u32,
    end: u32,
}

impl Slice {
    fn within(buf: &[u8], part: &[u8]) -> Slice {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Slice {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes this slice names in `buf`.
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// Request methods shoal tells apart; the rest are `Other`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    fn from_bytes(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// HTTP versions shoal speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Version {
    Http10,
    #[default]
    Http11,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    #[default]
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the client asked about the connection's future.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientWish {
    /// Nothing said: the version's default applies.
    #[default]
    Default,
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (meaningful for HTTP/1.0).
    KeepAlive,
}

/// One header line: its name and its value (without surrounding whitespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Field {
    pub name: Slice,
    pub value: Slice,
}

/// A complete, validated request head.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: Method,
    pub method_name: Slice,
    pub target: Slice,
    pub version: Version,
    /// Bytes of the head including the final empty line.
    pub len: usize,
    pub framing: Framing,
    pub wish: ClientWish,
    pub expect_continue: bool,
    /// HTTP/1.1 `Connection: upgrade` with an `Upgrade` header: a protocol switch (WebSocket).
    pub upgrade: bool,
    /// The Host header (at most one is accepted).
    pub host: Option<Slice>,
    /// Every header line, in order.
    fields: Vec<Field>,
}

impl RequestHead {
    /// True when the connection may carry another request after this one.
    pub fn wants_keep_alive(&self) -> bool {
        match (self.version, self.wish) {
            (_, ClientWish::Close) => false,
            (Version::Http11, _) => true,
            (Version::Http10, wish) => wish == ClientWish::KeepAlive,
        }
    }

    /// Every header line, in the order received.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The value of the header `name` (any case), the last line's if it is repeated.
    pub fn field<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.fields_named(buf, name).last()
    }

    /// The values of every line of the header `name` (any case), in order.
    pub fn fields_named<'s, 'b>(
        &'s self,
        buf: &'b [u8],
        name: &'s str,
    ) -> impl Iterator<Item = &'b [u8]> + Clone + 's
    where
        'b: 's,
    {
        self.fields()
            .iter()
            .filter(move |f| f.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |f| f.value.of(buf))
    }

    /// The request line as sent (method, target, version), for the access log.
    pub fn request_line<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let line_end = buf[..self.len].iter().position(|&b| b == b'\r' || b == b'\n');
        &buf[..line_end.unwrap_or(0)]
    }
}

/// Why a head was rejected; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or header line.
    Malformed,
    /// Request line longer than the header limit.
    TargetTooLong,
    /// Head bytes or header count over the limits.
    HeadTooLarge,
    /// A version other than HTTP/1.0 or 1.1.
    UnsupportedVersion,
    /// HTTP/1.1 without Host, Host more than once, or a Host (or absolute-form authority)
    /// that is not a `uri-host[:port]`.
    BadHost,
    /// Content-Length not a plain number, or several that differ.
    BadContentLength,
    /// Content-Length with Transfer-Encoding, or Transfer-Encoding in HTTP/1.0.
    AmbiguousFraming,
    /// A transfer coding other than a lone final `chunked`.
    UnsupportedTransferCoding,
    /// An Expect other than `100-continue`.
    UnsupportedExpectation,
    /// Content-Length over max_body_bytes.
    BodyTooLarge,
}

impl HeadError {
    /// The status code the client receives.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed
            | HeadError::BadHost
            | HeadError::BadContentLength
            | HeadError::AmbiguousFraming => 400,
            HeadError::TargetTooLong => 414,
            HeadError::HeadTooLarge => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::UnsupportedExpectation => 417,
            HeadError::BodyTooLarge => 413,
        }
    }
}

/// A head refused. `indexed`: the head was complete and well-formed enough to index (an
/// ambiguous framing, a body over the limit), and the head parsed into holds it, so its
/// answer can be logged with its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub error: HeadError,
    pub indexed: bool,
}

impl From<HeadError> for Rejected {
    fn from(error: HeadError) -> Rejected {
        Rejected {
            error,
            indexed: false,
        }
    }
}

/// Parses a request head at the start of `buf` into a new [`RequestHead`]. `Ok(None)` means
/// more bytes are needed (the caller enforces the size limit on incomplete heads with
/// [`incomplete_error`]).
pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<RequestHead>, Rejected> {
    let mut head = RequestHead::default();
    Ok(parse_into(buf, limits, &mut head)?.then_some(head))
}

/// Parses a request head at the start of `buf` into `head`, reusing its index's capacity.
/// `Ok(false)` means more bytes are needed; on `Ok(true)` `head` is the request's.
pub fn parse_into(buf: &[u8], limits: &HeadLimits, head: &mut RequestHead) -> Result<bool, Rejected> {
    let mut headers: [MaybeUninit<httparse::Header>; MAX_HEADERS_CEILING] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CEILING];
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut headers[..limits.max_headers]);
    let len = match status {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadTooLarge.into()),
        Err(httparse::Error::Version) => return Err(version_error(buf).into()),
        Err(_) => return Err(HeadError::Malformed.into()),
    };
    if len > limits.max_header_bytes {
        return Err(incomplete_error(buf).into());
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed.into());
    };
    let mut fields = std::mem::take(&mut head.fields);
    fields.clear();
    fields.extend(req.headers.iter().map(|header| Field {
        name: Slice::within(buf, header.name.as_bytes()),
        value: Slice::within(buf, trim(header.value)),
    }));
    *head = RequestHead {
        method: Method::from_bytes(method),
        method_name: Slice::within(buf, method.as_bytes()),
        target: Slice::within(buf, path.as_bytes()),
        version: if minor == 1 {
            Version::Http11
        } else {
            Version::Http10
        },
        len,
        framing: Framing::Empty,
        wish: ClientWish::Default,
        expect_continue: false,
        upgrade: false,
        host: None,
        fields,
    };
    // An absolute-form target's authority is the request's host (RFC 9112 §3.2.2).
    if target::authority(path.as_bytes()).is_some_and(|authority| !target::valid_host(authority)) {
        return Err(Rejected {
            error: HeadError::BadHost,
            indexed: true,
        });
    }
    let mut facts = Facts::default();
    let decided = (0..head.fields.len())
        .try_for_each(|index| facts.note(head, buf, index))
        .and_then(|()| facts.finish(head, limits));
    decided
        .map(|()| true)
        .map_err(|error| Rejected { error, indexed: true })
}

/// The error for a head that has not completed within `max_header_bytes`.
pub fn incomplete_error(buf: &[u8]) -> HeadError {
    if buf.contains(&b'\n') {
        HeadError::HeadTooLarge
    } else {
        HeadError::TargetTooLong
    }
}

/// `HTTP/2.0` and friends are well-formed but unsupported (505); anything else is garbage.
fn version_error(buf: &[u8]) -> HeadError {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len());
    let line = &buf[..line_end];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            HeadError::UnsupportedVersion
        }
        _ => HeadError::Malformed,
    }
}

/// Header facts gathered across lines, decided on once all lines are seen.
#[derive(Default)]
struct Facts {
    hosts: u32,
    connection_upgrade: bool,
    upgrade_header: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_last: bool,
}

impl Facts {
    /// Notes what header line `index` says about framing and persistence.
    fn note(&mut self, head: &mut RequestHead, buf: &[u8], index: usize) -> Result<(), HeadError> {
        let field = head.fields[index];
        let (name, value) = (field.name.of(buf), field.value.of(buf));
        if name.eq_ignore_ascii_case(b"host") {
            if !target::valid_host(value) {
                return Err(HeadError::BadHost);
            }
            self.hosts += 1;
            head.host = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_length(value).ok_or(HeadError::BadContentLength)?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(HeadError::BadContentLength);
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            for coding in tokens(value) {
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked") && !self.chunked_last;
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    self.chunked_last = false;
                    return Err(HeadError::UnsupportedTransferCoding);
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                self.connection_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                if token.eq_ignore_ascii_case(b"close") {
                    head.wish = ClientWish::Close;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && head.wish != ClientWish::Close {
                    head.wish = ClientWish::KeepAlive;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade_header = !value.is_empty();
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::UnsupportedExpectation);
            }
            head.expect_continue = true;
        }
        Ok(())
    }

    fn finish(self, head: &mut RequestHead, limits: &HeadLimits) -> Result<(), HeadError> {
        let host_ok = match head.version {
            Version::Http11 => self.hosts == 1,
            Version::Http10 => self.hosts <= 1,
        };
        if !host_ok {
            return Err(HeadError::BadHost);
        }
        head.framing = match (self.transfer_encoding, self.content_length) {
            (true, Some(_)) => return Err(HeadError::AmbiguousFraming),
            (true, None) if head.version == Version::Http10 => return Err(HeadError::AmbiguousFraming),
            (true, None) if !self.chunked_last => return Err(HeadError::UnsupportedTransferCoding),
            (true, None) => Framing::Chunked,
            (false, Some(0)) | (false, None) => Framing::Empty,
            (false, Some(n)) if n > limits.max_body_bytes => return Err(HeadError::BodyTooLarge),
            (false, Some(n)) => Framing::Length(n),
        };
        // No body to wait for; and an HTTP/1.0 client's expectation is ignored (RFC 9110
        // §10.1.1: it cannot know what a 100 response means).
        if head.framing == Framing::Empty || head.version == Version::Http10 {
            head.expect_continue = false;
        }
        head.upgrade = self.connection_upgrade && self.upgrade_header && head.version == Version::Http11;
        Ok(())
    }
}

/// Content-Length: digits only, no sign, no list, at most 18 digits (fits u64 with room).
pub fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Comma-separated tokens, trimmed, empty members skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// `tchar` from RFC 9110 §5.6.2.
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `value` without leading and trailing whitespace.
pub fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse(text.as_bytes(), &HeadLimits::default()).map_err(|rejected| rejected.error)
    }

    #[test]
    fn simple_get_is_complete_in_any_split() {
        let text = "GET /a?b=c HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\nNEXT";
        let head = parse_all(text).unwrap().unwrap();
        assert_eq!(head.len, text.len() - 4);
        assert_eq!(head.target.of(text.as_bytes()), b"/a?b=c");
        assert_eq!(head.field(text.as_bytes(), "user-agent"), Some(&b"t"[..]));
        assert_eq!(head.request_line(text.as_bytes()), b"GET /a?b=c HTTP/1.1");
        assert!(head.wants_keep_alive());
        for cut in 0..head.len {
            assert!(parse_all(&text[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn every_header_is_indexed_in_order() {
        let text = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\nAccept:  */*  \r\nx-forwarded-for: 2.2.2.2\r\n\r\n";
        let buf = text.as_bytes();
        let head = parse_all(text).unwrap().unwrap();
        let lines: Vec<(&[u8], &[u8])> = head
            .fields()
            .iter()
            .map(|f| (f.name.of(buf), f.value.of(buf)))
            .collect();
        assert_eq!(
            lines,
            [
                (&b"Host"[..], &b"x"[..]),
                (b"X-Forwarded-For", b"1.1.1.1"),
                (b"Accept", b"*/*"),
                (b"x-forwarded-for", b"2.2.2.2")
            ]
        );
        assert_eq!(head.field(buf, "ACCEPT"), Some(&b"*/*"[..]));
        assert_eq!(head.field(buf, "x-forwarded-for"), Some(&b"2.2.2.2"[..]));
        let all: Vec<&[u8]> = head.fields_named(buf, "X-Forwarded-For").collect();
        assert_eq!(all, [&b"1.1.1.1"[..], b"2.2.2.2"]);
        assert_eq!(head.field(buf, "referer"), None);
        assert_eq!(head.host.unwrap().of(buf), b"x");
    }

    #[test]
    fn a_head_refused_for_what_it_says_comes_back_with_the_refusal() {
        let text =
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\nReferer: r\r\nUser-Agent: u\r\n\r\n";
        let mut head = RequestHead::default();
        let rejected = parse_into(text.as_bytes(), &HeadLimits::default(), &mut head).unwrap_err();
        assert_eq!(
            rejected,
            Rejected {
                error: HeadError::BodyTooLarge,
                indexed: true
            }
        );
        assert_eq!(head.request_line(text.as_bytes()), b"POST /up HTTP/1.1");
        assert_eq!(head.field(text.as_bytes(), "user-agent"), Some(&b"u"[..]));
        let garbage = parse(b"GET / HTTP/1.1\r\nHost x\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert!(!garbage.indexed);
    }

    #[test]
    fn continue_is_expected_only_of_http11_requests_with_a_body() {
        let expects = |text: &str| parse_all(text).unwrap().unwrap().expect_continue;
        assert!(expects(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(!expects(
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(!expects(
            "POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n"
        ));
    }

    #[test]
    fn persistence_follows_version_and_connection() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (text, keep) in cases {
            assert_eq!(
                parse_all(text).unwrap().unwrap().wants_keep_alive(),
                keep,
                "{text:?}"
            );
        }
    }

    #[test]
    fn upgrade_needs_both_headers_and_http11() {
        let upgrade = |text: &str| parse_all(text).unwrap().unwrap().upgrade;
        assert!(upgrade(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!upgrade(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!upgrade(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n"
        ));
        assert!(!upgrade(
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
    }

    #[test]
    fn framing_decisions() {
        let cases: &[(&str, Result<Framing, HeadError>)] = &[
            ("Content-Length: 5\r\n", Ok(Framing::Length(5))),
            ("Content-Length: 0\r\n", Ok(Framing::Empty)),
            (
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                Ok(Framing::Length(5)),
            ),
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                Err(HeadError::BadContentLength),
            ),
            ("Content-Length: 5, 5\r\n", Err(HeadError::BadContentLength)),
            ("Content-Length: +5\r\n", Err(HeadError::BadContentLength)),
            ("Content-Length: -1\r\n", Err(HeadError::BadContentLength)),
            ("Content-Length: 0x10\r\n", Err(HeadError::BadContentLength)),
            (
                "Content-Length: 99999999999999999999\r\n",
                Err(HeadError::BadContentLength),
            ),
            ("Content-Length: 20000000\r\n", Err(HeadError::BodyTooLarge)),
            ("Transfer-Encoding: chunked\r\n", Ok(Framing::Chunked)),
            ("Transfer-Encoding: Chunked\r\n", Ok(Framing::Chunked)),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Err(HeadError::AmbiguousFraming),
            ),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                Err(HeadError::UnsupportedTransferCoding),
            ),
            (
                "Transfer-Encoding: chunked, identity\r\n",
                Err(HeadError::UnsupportedTransferCoding),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                Err(HeadError::UnsupportedTransferCoding),
            ),
            (
                "Transfer-Encoding: xchunked\r\n",
                Err(HeadError::UnsupportedTransferCoding),
            ),
            (
                "Transfer-Encoding: \r\n",
                Err(HeadError::UnsupportedTransferCoding),
            ),
        ];
        for (headers, want) in cases {
            let text = format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
            let got = parse_all(&text).map(|h| h.unwrap().framing);
            assert_eq!(&got, want, "{headers:?}");
        }
    }

    #[test]
    fn bad_heads_map_to_statuses() {
        let cases: &[(&str, u16)] = &[
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
            ("GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
            ("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 417),
            ("GET / HTTP/1.1\r\nHo\0st: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n", 400),
        ];
        for (text, status) in cases {
            let got = parse_all(text).map(|h| h.is_some()).map_err(HeadError::status);
            assert_eq!(got, Err(*status), "{text:?}");
        }
    }

    #[test]
    fn limits_on_size_and_count() {
        let limits = HeadLimits {
            max_header_bytes: 1024,
            max_headers: 3,
            ..HeadLimits::default()
        };
        let many = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse(many.as_bytes(), &limits).unwrap_err().error,
            HeadError::HeadTooLarge
        );
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n", "a".repeat(1100));
        assert_eq!(
            parse(big.as_bytes(), &limits).unwrap_err().error,
            HeadError::HeadTooLarge
        );
        assert_eq!(incomplete_error(b"GET /aaaaaaaa"), HeadError::TargetTooLong);
        assert_eq!(
            incomplete_error(b"GET / HTTP/1.1\r\nA: b"),
            HeadError::HeadTooLarge
        );
    }
}
