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
/// caller writes itself), whatever the case of `name`, and whether it spells `-` as `_`:
/// CGI, WSGI and Rack read `X_Real_IP` as `X-Real-IP` (both become `HTTP_X_REAL_IP`).
pub fn is_dropped(name: &[u8], rewritten: &[&str]) -> bool {
    // Compared only with names of its length: most header lines match none, and pay one
    // length test per known name.
    (HOP_BY_HOP.iter().chain(rewritten)).any(|d| d.len() == name.len() && reads_as(name, d.as_bytes()))
}

/// Whether `name` reads as the header name `known`, whatever the case, with `_` taken for `-`.
fn reads_as(name: &[u8], known: &[u8]) -> bool {
    (name.iter().zip(known)).all(|(&a, &b)| a.eq_ignore_ascii_case(&b) || (a == b'_' && b == b'-'))
}

/// The options of a head's Connection header lines, checked once per head so the common
/// case (no Connection header, or only `keep-alive`, which proxies drop anyway) costs one
/// scan instead of one per header line. `I` walks the values of the Connection lines.
pub struct ConnectionOptions<I> {
    values: I,
    names_headers: bool,
}

impl<'a, I: Iterator<Item = &'a [u8]> + Clone> ConnectionOptions<I> {
    pub fn of(values: I) -> Self {
        let names_headers = values
            .clone()
            .flat_map(tokens)
            .any(|t| !t.eq_ignore_ascii_case(b"keep-alive"));
        ConnectionOptions {
            values,
            names_headers,
        }
    }

    /// True when a Connection header names `name` (so that header is hop-by-hop). A head
    /// whose only option is `keep-alive` reports nothing: callers drop that header always.
    pub fn name(&self, name: &[u8]) -> bool {
        self.names_headers
            && self
                .values
                .clone()
                .flat_map(tokens)
                .any(|t| t.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options<'a>(values: &'a [&'a str]) -> ConnectionOptions<impl Iterator<Item = &'a [u8]> + Clone> {
        ConnectionOptions::of(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn a_name_spelling_dashes_as_underscores_reads_as_the_dashed_one() {
        assert!(is_dropped(b"Transfer_Encoding", &[]) && is_dropped(b"KEEP_ALIVE", &[]));
        assert!(is_dropped(b"X_Real_IP", &["x-real-ip"]) && is_dropped(b"x-real-ip", &["x-real-ip"]));
        assert!(!is_dropped(b"X_Custom", &["x-real-ip"]) && !is_dropped(b"X_Real_IPs", &["x-real-ip"]));
        assert!(!is_dropped(b"Upgrade-", &[]) && !is_dropped(b"Te_", &[]));
        assert!(is_dropped(b"X_MINE", &["X-Mine"]) && !is_dropped(b"X-Mine", &["X_Mine"]));
    }

    #[test]
    fn names_the_headers_listed_in_any_connection_line() {
        let options = options(&["keep-alive, X-Secret", "close"]);
        assert!(options.name(b"x-secret"));
        assert!(options.name(b"Close"));
        assert!(options.name(b"keep-alive"));
        assert!(!options.name(b"X-Other"));
    }

    #[test]
    fn keep_alive_alone_names_nothing_else() {
        let options = options(&["Keep-Alive"]);
        assert!(
            !options.name(b"keep-alive"),
            "Keep-Alive is dropped by every proxy anyway"
        );
        assert!(!self::options(&[]).name(b"connection"));
        assert!(is_dropped(b"Transfer-Encoding", &[]) && is_dropped(b"x-mine", &["X-Mine"]));
    }
}
