//! Hop-by-hop headers named by a message's `Connection` header (RFC 9110 §7.6.1): they
//! describe one connection and are never forwarded.

use super::request::tokens;

/// Headers that describe one connection (RFC 9110 §7.6.1) and are never forwarded as such.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a header that describes one connection, or one of `rewritten` (headers the
/// caller writes itself), whatever the case of `name`.
pub fn is_dropped(name: &str, rewritten: &[&str]) -> bool {
    HOP_BY_HOP
        .iter()
        .chain(rewritten)
        .any(|d| name.eq_ignore_ascii_case(d))
}

/// The options of a head's Connection header lines, checked once per head so the common
/// case (no Connection header, or only `keep-alive`, which proxies drop anyway) costs one
/// scan instead of one per header line.
pub struct ConnectionOptions<'h, 'b> {
    lines: &'h [httparse::Header<'b>],
    names_headers: bool,
}

impl<'h, 'b> ConnectionOptions<'h, 'b> {
    pub fn of(lines: &'h [httparse::Header<'b>]) -> Self {
        let names_headers = connection_tokens(lines).any(|t| !t.eq_ignore_ascii_case(b"keep-alive"));
        ConnectionOptions { lines, names_headers }
    }

    /// True when a Connection header names `name` (so that header is hop-by-hop). A head
    /// whose only option is `keep-alive` reports nothing: callers drop that header always.
    pub fn name(&self, name: &str) -> bool {
        self.names_headers && connection_tokens(self.lines).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn connection_tokens<'a>(lines: &'a [httparse::Header]) -> impl Iterator<Item = &'a [u8]> {
    lines
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn names_the_headers_listed_in_any_connection_line() {
        let lines = [
            header("Connection", "keep-alive, X-Secret"),
            header("X-Secret", "1"),
            header("connection", "close"),
        ];
        let options = ConnectionOptions::of(&lines);
        assert!(options.name("x-secret"));
        assert!(options.name("Close"));
        assert!(options.name("keep-alive"));
        assert!(!options.name("X-Other"));
    }

    #[test]
    fn keep_alive_alone_names_nothing_else() {
        let lines = [
            header("Connection", "Keep-Alive"),
            header("Keep-Alive", "timeout=5"),
        ];
        let options = ConnectionOptions::of(&lines);
        assert!(
            !options.name("keep-alive"),
            "Keep-Alive is dropped by every proxy anyway"
        );
        assert!(!ConnectionOptions::of(&[]).name("connection"));
    }
}
