//! Routes that answer by themselves: `redirect = { to = "https://{host}{uri}", status = 301 }`
//! and `respond = { status = 200, body = "ok\n", content_type = "text/plain" }`.

/// A redirect: `Location` is `to` with the request's parts filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub to: Vec<Piece>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// The statuses a redirect may have.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// A piece of a redirect's target: text, or a part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `{scheme}`: `http`.
    Scheme,
    /// `{host}`: the request's host without its port (an absolute-form target's, else Host;
    /// the server's first name, else its address, when the request has none).
    Host,
    /// `{path}`: the path as received.
    Path,
    /// `{query}`: the query as received, without its `?` (empty when there is none).
    Query,
    /// `{uri}`: the path and query as received.
    Uri,
}

impl Piece {
    /// Reads `to`: text with `{scheme}`, `{host}`, `{path}`, `{query}` and `{uri}` in it.
    pub fn parse(to: &str) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        let mut rest = to;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{to}` opens a `{{` it does not close"));
            };
            pieces.push(match &rest[open + 1..open + close] {
                "scheme" => Piece::Scheme,
                "host" => Piece::Host,
                "path" => Piece::Path,
                "query" => Piece::Query,
                "uri" => Piece::Uri,
                other => {
                    return Err(format!(
                        "`{{{other}}}` is not one of {{scheme}}, {{host}}, {{path}}, {{query}}, {{uri}}"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if to.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("`{to}` holds a space or a control character"));
        }
        Ok(pieces)
    }
}

/// A fixed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_reads_into_text_and_placeholders() {
        let text = |s: &str| Piece::Text(s.to_string());
        assert_eq!(
            Piece::parse("https://{host}:8443{uri}").unwrap(),
            [text("https://"), Piece::Host, text(":8443"), Piece::Uri]
        );
        assert_eq!(
            Piece::parse("{scheme}://x{path}?from=old&{query}").unwrap(),
            [
                Piece::Scheme,
                text("://x"),
                Piece::Path,
                text("?from=old&"),
                Piece::Query
            ]
        );
        assert_eq!(Piece::parse("/elsewhere").unwrap(), [text("/elsewhere")]);
        assert!(Piece::parse("https://{hots}/")
            .unwrap_err()
            .contains("`{hots}` is not one of"));
        assert!(Piece::parse("https://{host")
            .unwrap_err()
            .contains("does not close"));
        assert!(Piece::parse("/a b").unwrap_err().contains("space"));
        assert!(Piece::parse("/a\r\nSet-Cookie: x").is_err());
    }
}
