//! Routes that answer by themselves: `redirect = { to = "https://{host}{uri}", status = 301 }`
//! and `respond = { status = 200, body = "ok\n", content_type = "text/plain" }`; and the
//! templates with placeholders that redirects and header rules share.

use super::{Address, Server, ServerName};
use crate::http::target;

/// A redirect: `Location` is `to` with the request's parts filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub to: Template,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// The statuses a redirect may have.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// Text with placeholders for parts of the request: a redirect's target, a header rule's
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// A piece of a template: text, or a part of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `{scheme}`: `http`, or `https` over TLS.
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

impl Template {
    /// Reads text with `{scheme}`, `{host}`, `{path}`, `{query}` and `{uri}` in it. A `{`
    /// that does not open a lowercase word and its `}` is text (a JSON header value keeps
    /// its braces); a lowercase word that names no placeholder is an error (a typo).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            rest = &rest[open..];
            let word_len = rest[1..].bytes().take_while(|b| b.is_ascii_lowercase()).count();
            if word_len == 0 || rest.as_bytes().get(1 + word_len) != Some(&b'}') {
                literal.push('{');
                rest = &rest[1..];
                continue;
            }
            let piece = match &rest[1..1 + word_len] {
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
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &rest[word_len + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Text without placeholders.
    pub fn text(text: &str) -> Template {
        Template {
            pieces: vec![Piece::Text(text.to_string())],
        }
    }

    /// Reads a redirect's target: a template that is a URI reference once filled (no space,
    /// control character or brace outside a placeholder).
    pub fn parse_target(to: &str) -> Result<Template, String> {
        if to.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("`{to}` holds a space or a control character"));
        }
        let template = Template::parse(to)?;
        let stray = (template.pieces.iter()).any(|p| matches!(p, Piece::Text(t) if t.contains(['{', '}'])));
        if stray {
            return Err(format!("`{to}` holds a brace that is not part of a placeholder"));
        }
        Ok(template)
    }

    /// The text, when the template has no placeholder.
    pub fn literal(&self) -> Option<&str> {
        match &self.pieces[..] {
            [] => Some(""),
            [Piece::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Appends the template to `out`, filled from `parts` (which only a template without
    /// placeholders may go without).
    pub fn write(&self, parts: Option<&Parts>, out: &mut Vec<u8>) {
        match (self.literal(), parts) {
            (Some(text), _) => out.extend_from_slice(text.as_bytes()),
            (None, Some(parts)) => self.fill(parts, out),
            (None, None) => debug_assert!(false, "a template with placeholders and no request"),
        }
    }

    #[cfg(test)]
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Appends the template to `out` with the parts of the request filled in.
    pub fn fill(&self, parts: &Parts, out: &mut Vec<u8>) {
        let origin = &parts.target[target::origin_start(parts.target).unwrap_or(0)..];
        let query_at = target::query_start(origin);
        let (path, query) = (
            &origin[..query_at],
            origin.get(query_at + 1..).unwrap_or_default(),
        );
        let path = if path.is_empty() { b"/" } else { path };
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Scheme => out.extend_from_slice(if parts.secure { b"https" } else { b"http" }),
                Piece::Host => match parts.host {
                    Some(host) if !host.is_empty() => out.extend_from_slice(host),
                    _ => out.extend_from_slice(parts.server.stand_in_host().as_bytes()),
                },
                Piece::Path => out.extend_from_slice(path),
                Piece::Query => out.extend_from_slice(query),
                Piece::Uri => {
                    out.extend_from_slice(path);
                    out.extend_from_slice(&origin[query_at..]);
                }
            }
        }
    }
}

/// The parts of a request a template may name.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The request's host without its port, if it named one.
    pub host: Option<&'a [u8]>,
    /// The raw request target.
    pub target: &'a [u8],
    /// The server that answers (its name or address stands in for a missing host).
    pub server: &'a Server,
    /// The request came over TLS: `{scheme}` is `https`.
    pub secure: bool,
}

impl Server {
    /// The host of a request that named none (HTTP/1.0 without Host, an empty Host): the
    /// server's first exact name, else the address of its first listen address.
    pub fn stand_in_host(&self) -> String {
        let exact = self.names.iter().find_map(|name| match name {
            ServerName::Exact(name) => Some(name.clone()),
            _ => None,
        });
        exact.unwrap_or_else(|| match &self.listen[0] {
            Address::Tcp(addr) if addr.is_ipv6() => format!("[{}]", addr.ip()),
            Address::Tcp(addr) => addr.ip().to_string(),
            Address::Unix(_) => "localhost".to_string(),
        })
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

    fn pieces(text: &str) -> Vec<Piece> {
        Template::parse(text).unwrap().pieces
    }

    #[test]
    fn a_template_reads_into_text_and_placeholders() {
        let text = |s: &str| Piece::Text(s.to_string());
        assert_eq!(
            pieces("https://{host}:8443{uri}"),
            [text("https://"), Piece::Host, text(":8443"), Piece::Uri]
        );
        assert_eq!(
            pieces("{scheme}://x{path}?from=old&{query}"),
            [
                Piece::Scheme,
                text("://x"),
                Piece::Path,
                text("?from=old&"),
                Piece::Query
            ]
        );
        assert_eq!(pieces("/elsewhere"), [text("/elsewhere")]);
        assert_eq!(
            pieces(r#"{"group":"csp","url":"https://{host}/r"}"#),
            [
                text(r#"{"group":"csp","url":"https://"#),
                Piece::Host,
                text("/r\"}")
            ]
        );
        assert_eq!(pieces("{host"), [text("{host")]);
        assert_eq!(pieces("{}{{uri}}"), [text("{}{"), Piece::Uri, text("}")]);
        assert!(Template::parse("https://{hots}/")
            .unwrap_err()
            .contains("`{hots}` is not one of"));
        assert_eq!(Template::parse("a b").unwrap().literal(), Some("a b"));
        assert!(Template::parse_target("https://{host")
            .unwrap_err()
            .contains("brace"));
        assert!(Template::parse_target("/a b").unwrap_err().contains("space"));
        assert!(Template::parse_target("/a\r\nSet-Cookie: x").is_err());
        assert!(Template::parse_target("https://{hots}/").is_err());
        assert_eq!(Template::parse("{path}").unwrap().literal(), None);
    }
}
