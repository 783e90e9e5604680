//! Answers a route gives by itself: a redirect, or a fixed response.

use std::net::IpAddr;

use crate::config::answer::{Fixed, Piece, Redirect};
use crate::config::{Server, ServerName};
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::Length;
use crate::http::target;

/// The parts of a request a redirect's target may name.
pub struct Parts<'a> {
    /// The request's host without its port, if it named one.
    pub host: Option<&'a [u8]>,
    /// The raw request target.
    pub target: &'a [u8],
    /// The server that answers (its name or address stands in for a missing host).
    pub server: &'a Server,
}

/// Answers `redirect`, its `Location` filled in from `parts`.
pub fn redirect(redirect: &Redirect, parts: &Parts, respond: &mut impl Respond) {
    let origin = &parts.target[target::origin_start(parts.target).unwrap_or(0)..];
    let query_at = target::query_start(origin);
    let (path, query) = (
        &origin[..query_at],
        origin.get(query_at + 1..).unwrap_or_default(),
    );
    let path = if path.is_empty() { b"/" } else { path };
    let mut location = Vec::with_capacity(128);
    for piece in &redirect.to {
        match piece {
            Piece::Text(text) => location.extend_from_slice(text.as_bytes()),
            Piece::Scheme => location.extend_from_slice(b"http"),
            Piece::Host => match parts.host {
                Some(host) if !host.is_empty() => location.extend_from_slice(host),
                _ => location.extend_from_slice(stand_in_host(parts.server).as_bytes()),
            },
            Piece::Path => location.extend_from_slice(path),
            Piece::Query => location.extend_from_slice(query),
            Piece::Uri => {
                location.extend_from_slice(path);
                location.extend_from_slice(&origin[query_at..]);
            }
        }
    }
    respond_simple(respond, redirect.status, &[("Location", &location)]);
}

/// The host of a request that named none (HTTP/1.0 without Host, an empty Host): the
/// server's first exact name, else the address of its first listen address.
fn stand_in_host(server: &Server) -> String {
    let exact = server.names.iter().find_map(|name| match name {
        ServerName::Exact(name) => Some(name.clone()),
        _ => None,
    });
    exact.unwrap_or_else(|| match server.listen[0].ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    })
}

/// Answers `fixed`.
pub fn fixed(fixed: &Fixed, respond: &mut impl Respond) {
    let head = respond.head();
    head.local(fixed.status);
    head.add(b"Content-Type", fixed.content_type.as_bytes());
    head.length = Length::Known(fixed.body.len() as u64);
    respond.send_head();
    respond.body(BodyPart::Bytes(fixed.body.as_bytes()));
    respond.end();
}
