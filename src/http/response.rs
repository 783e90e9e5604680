//! Response heads as values, and the one place they become bytes.
//!
//! A handler fills a [`ResponseHead`] (status, reason, header lines, what it knows of the
//! body's length); response filters may change it; [`write_head`] serialises it with the
//! framing and connection headers the client's side decided. Header lines are kept as their
//! wire text (`Name: value\r\n`), so adding the common ones costs one copy and serialising
//! them another, with no allocation once the head's buffer is warm.

/// Whether the connection stays open after this response, as the client will be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 default: nothing to say.
    KeepAlive,
    /// HTTP/1.0 client asked for keep-alive: say `Connection: keep-alive` back.
    KeepAliveEcho,
    /// `Connection: close`, and the connection is closed after the response.
    Close,
}

impl Persistence {
    /// True unless the connection closes after this response.
    pub fn keeps_alive(self) -> bool {
        self != Persistence::Close
    }
}

/// Reason phrase for the status codes shoal sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The interim response sent before reading a body the client is holding back.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a handler knows of its body's length when the head goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// No body, and no Content-Length (a 304 without one, a 204).
    None,
    /// `Content-Length: n`: the body follows, unless the request was HEAD or the status has
    /// none (a 304 keeps the length it advertises).
    Known(u64),
    /// Unknown until it ends: chunked for HTTP/1.1 clients, closed for HTTP/1.0 ones.
    Unknown,
}

/// A response head: status, reason, header lines in order, and the body's length.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub length: Length,
    /// The reason phrase (`bytes[..reason_len]`, empty for the standard one), then the header
    /// lines, each `Name: value\r\n`.
    bytes: Vec<u8>,
    reason_len: usize,
    /// A `Date` line is among them (kept as lines are added and removed, so serialising
    /// needs no scan).
    has_date: bool,
}

impl Default for ResponseHead {
    fn default() -> ResponseHead {
        ResponseHead {
            status: 200,
            length: Length::None,
            bytes: Vec::new(),
            reason_len: 0,
            has_date: false,
        }
    }
}

/// True when the header line (or name) `line` starts with the name `name` and a colon.
fn names(line: &[u8], name: &str) -> bool {
    line.len() > name.len()
        && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
        && line[name.len()] == b':'
}

impl ResponseHead {
    /// Starts over as a response shoal itself makes: `status`, its standard reason, and
    /// `Server: shoal` (the buffer is kept).
    pub fn local(&mut self, status: u16) -> &mut ResponseHead {
        self.relayed(status, b"");
        self.bytes.extend_from_slice(b"Server: shoal\r\n");
        self
    }

    /// Starts over as a response relayed from an upstream: `status` with the upstream's
    /// `reason` (empty: none), and no header lines yet.
    pub fn relayed(&mut self, status: u16, reason: &[u8]) -> &mut ResponseHead {
        self.status = status;
        self.length = Length::None;
        self.bytes.clear();
        self.bytes.extend_from_slice(reason);
        self.reason_len = reason.len();
        self.has_date = false;
        self
    }

    /// The reason phrase as sent: the one given, or the standard one for the status.
    pub fn reason(&self) -> &[u8] {
        match self.reason_len {
            0 => reason(self.status).as_bytes(),
            n => &self.bytes[..n],
        }
    }

    /// Appends the header line `name: value`.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.has_date |= name.eq_ignore_ascii_case(b"date");
        header(&mut self.bytes, name, value);
    }

    /// Appends header lines already in wire form (each `Name: value\r\n`, no empty line).
    pub fn add_lines(&mut self, lines: &[u8]) {
        debug_assert!(lines.is_empty() || lines.ends_with(b"\r\n"));
        self.has_date |= lines.split(|&b| b == b'\n').any(|line| names(line, "date"));
        self.bytes.extend_from_slice(lines);
    }

    /// Every header line as (name, value), in order.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        header_lines(&self.bytes[self.reason_len..])
    }

    /// The value of the header `name` (any case), the first line's if it is repeated.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.lines()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Removes every line of the header `name` (any case).
    pub fn remove(&mut self, name: &str) {
        let mut at = self.reason_len;
        while at < self.bytes.len() {
            let end = self.bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.bytes.len(), |i| at + i + 1);
            if names(&self.bytes[at..end], name) {
                self.bytes.drain(at..end);
            } else {
                at = end;
            }
        }
        if name.eq_ignore_ascii_case("date") {
            self.has_date = false;
        }
    }
}

/// Header lines in wire form (each `Name: value\r\n`) as (name, value), values trimmed.
pub fn header_lines(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    bytes.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r")?;
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], line[colon + 1..].trim_ascii()))
    })
}

/// How the head announces the body's length on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthHeader {
    /// Nothing: no body, or one delimited by closing the connection.
    Absent,
    ContentLength(u64),
    Chunked,
}

/// What the head says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// Nothing (HTTP/1.1 keep-alive).
    Absent,
    /// `Connection: keep-alive` (to an HTTP/1.0 client that asked for it).
    KeepAlive,
    Close,
    /// `Connection: upgrade` (a 101).
    Upgrade,
}

impl From<Persistence> for ConnectionHeader {
    fn from(persistence: Persistence) -> ConnectionHeader {
        match persistence {
            Persistence::KeepAlive => ConnectionHeader::Absent,
            Persistence::KeepAliveEcho => ConnectionHeader::KeepAlive,
            Persistence::Close => ConnectionHeader::Close,
        }
    }
}

/// Serialises `head`: status line, its header lines, `Date` unless it has one, then the
/// length and connection headers the client's side chose, and the empty line.
pub fn write_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    date: &[u8],
    length: LengthHeader,
    connection: ConnectionHeader,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_number(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&head.bytes[head.reason_len..]);
    if !head.has_date {
        header(out, "Date", date);
    }
    match length {
        LengthHeader::Absent => {}
        LengthHeader::ContentLength(n) => content_length(out, n),
        LengthHeader::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(match connection {
        ConnectionHeader::Absent => b"".as_slice(),
        ConnectionHeader::KeepAlive => b"Connection: keep-alive\r\n",
        ConnectionHeader::Close => b"Connection: close\r\n",
        ConnectionHeader::Upgrade => b"Connection: upgrade\r\n",
    });
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`.
pub fn header(out: &mut Vec<u8>, name: impl AsRef<[u8]>, value: &[u8]) {
    out.extend_from_slice(name.as_ref());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `Content-Length: n\r\n`.
pub fn content_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_number(out, length);
    out.extend_from_slice(b"\r\n");
}

/// Formats `args` into `buf` without allocating; what does not fit is cut off.
pub fn format_into<'b>(buf: &'b mut [u8], args: std::fmt::Arguments) -> &'b [u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = cursor.write_fmt(args);
    let len = cursor.position() as usize;
    &buf[..len]
}

/// Appends a decimal number without going through the formatting machinery.
pub fn push_number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The line that opens a chunk of `n` bytes (`n` in hex, then CRLF), written into `into`.
pub fn chunk_size_line(mut n: usize, into: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 16;
    into[16..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        into[at] = HEX[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    &into[at..]
}

/// Appends the line that opens a chunk of `n` bytes.
pub fn push_chunk_size(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(chunk_size_line(n, &mut [0; 18]));
}

/// Appends `data` as one chunk of the chunked transfer coding.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    push_chunk_size(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sat, 21 Nov 2026 20:00:00 GMT";

    fn written(head: &ResponseHead, length: LengthHeader, connection: ConnectionHeader) -> String {
        let mut out = Vec::new();
        write_head(&mut out, head, DATE, length, connection);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_local_head_names_shoal_and_gets_a_date() {
        let mut head = ResponseHead::default();
        head.local(404).add(b"Allow", b"GET");
        assert_eq!(
            written(&head, LengthHeader::ContentLength(14), ConnectionHeader::Close),
            "HTTP/1.1 404 Not Found\r\nServer: shoal\r\nAllow: GET\r\nDate: Sat, 21 Nov 2026 20:00:00 GMT\r\nContent-Length: 14\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_relayed_head_keeps_its_reason_and_date() {
        let mut head = ResponseHead::default();
        head.relayed(200, b"Fine");
        head.add_lines(b"Date: D\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n");
        assert_eq!(
            written(&head, LengthHeader::Chunked, ConnectionHeader::Absent),
            "HTTP/1.1 200 Fine\r\nDate: D\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        head.relayed(101, b"");
        assert_eq!(
            written(&head, LengthHeader::Absent, ConnectionHeader::Upgrade),
            "HTTP/1.1 101 Switching Protocols\r\nDate: Sat, 21 Nov 2026 20:00:00 GMT\r\nConnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn lines_are_found_changed_and_removed_by_name() {
        let mut head = ResponseHead::default();
        head.relayed(200, b"OK");
        head.add(b"ETag", b"\"1\"");
        head.add(b"Vary", b"Cookie");
        head.add(b"vary", b"Accept");
        head.add(b"Varyx", b"no");
        head.add_lines(b"dAtE: D\r\n");
        assert!(head.has_date);
        head.remove("date");
        assert!(!head.has_date && head.get("date").is_none());
        assert_eq!(head.get("etag"), Some(&b"\"1\""[..]));
        assert_eq!(head.get("VARY"), Some(&b"Cookie"[..]));
        head.remove("Vary");
        let names: Vec<&[u8]> = head.lines().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"ETag"[..], b"Varyx"]);
        assert_eq!(head.reason(), b"OK");
        head.local(304);
        assert_eq!(head.reason(), b"Not Modified");
        assert_eq!(head.lines().count(), 1, "only Server");
    }

    #[test]
    fn numbers_and_chunks() {
        for n in [0u64, 7, 10, 1024, u64::MAX] {
            let mut out = Vec::new();
            push_number(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut out = Vec::new();
        push_chunk(&mut out, b"hello");
        assert_eq!(out, b"5\r\nhello\r\n");
        out.clear();
        push_chunk(&mut out, &[7u8; 26]);
        assert!(out.starts_with(b"1a\r\n") && out.ends_with(b"\r\n") && out.len() == 4 + 26 + 2);
    }
}
