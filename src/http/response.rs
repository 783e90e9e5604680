//! Response heads, written straight into a connection's output buffer.
//!
//! Every response starts with [`start`], which writes the status line and the headers all
//! responses share (Server, Date, Connection); the caller adds its own and ends the head.

use std::io::Write;

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
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
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

/// Writes the status line, `Server`, `Date` and (when needed) `Connection`.
pub fn start(out: &mut Vec<u8>, status: u16, date: &[u8], persistence: Persistence) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_number(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: shoal\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(match persistence {
        Persistence::KeepAlive => b"\r\n".as_slice(),
        Persistence::KeepAliveEcho => b"\r\nConnection: keep-alive\r\n",
        Persistence::Close => b"\r\nConnection: close\r\n",
    });
}

/// Appends `name: value\r\n`.
pub fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
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

/// A complete short response with a plain-text body naming the status, for errors and
/// redirects. `extra` headers are written as given (each ending in CRLF). Returns the body
/// length, and writes no body for HEAD requests (`with_body == false`).
pub fn write_simple(
    out: &mut Vec<u8>,
    status: u16,
    date: &[u8],
    persistence: Persistence,
    extra: &[(&str, &[u8])],
    with_body: bool,
) -> u64 {
    start(out, status, date, persistence);
    for (name, value) in extra {
        header(out, name, value);
    }
    let mut body = Vec::with_capacity(40);
    let _ = writeln!(body, "{status} {}", reason(status));
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    content_length(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if with_body {
        out.extend_from_slice(&body);
        body.len() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_response_is_well_formed() {
        let mut out = Vec::new();
        let date = b"Sat, 21 Nov 2026 20:00:00 GMT";
        let n = write_simple(
            &mut out,
            404,
            date,
            Persistence::Close,
            &[("Allow", b"GET")],
            true,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(n, 14);
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nServer: shoal\r\nDate: Sat, 21 Nov 2026 20:00:00 GMT\r\nConnection: close\r\nAllow: GET\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\n404 Not Found\n"
        );
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 1024, u64::MAX] {
            let mut out = Vec::new();
            push_number(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
