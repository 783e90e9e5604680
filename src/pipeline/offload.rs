//! Files an app offloads to shoal: an upstream answers `X-Accel-Redirect: /protected/x.pdf`
//! (or, where the route allows it, `X-Sendfile: /srv/private/x.pdf`) and no body; shoal
//! sends that file from an internal route with the static file machinery (ranges,
//! conditionals, sendfile), keeping the app's type, name, caching and cookies. Rails'
//! `send_file`, Django and PHP apps do this so that no app worker is held for a download.
//!
//! The client's request head is gone by the time the app answers, so what serving a file
//! needs of it (HEAD or not, its conditional, range and encoding headers) is kept when the
//! request is routed, on servers that have internal routes ([`Replay`]).

use std::time::Instant;

use super::respond::Reply;
use super::sites::{Handler, Site, Sites};
use super::Routed;
use crate::files::{FileRequest, StaticFiles};
use crate::http::request::{self, HeadLimits, Method, RequestHead};
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::{self, ResponseHead};
use crate::http::target;
use crate::proxy::{Offload, OffloadKind, KEPT_ON_OFFLOAD};

/// The request headers an offloaded file's answer depends on.
const REPLAYED: [&str; 7] = [
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "accept-encoding",
];

/// What of a client's request is replayed against the internal route: HEAD stays HEAD, any
/// other method becomes GET (as in nginx), with the headers in [`REPLAYED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    method: &'static str,
    /// `Name: value\r\n` lines.
    lines: Vec<u8>,
}

impl Replay {
    pub fn of(head: &RequestHead, buf: &[u8]) -> Replay {
        let mut lines = Vec::new();
        for field in head.fields() {
            let name = field.name.of(buf);
            if REPLAYED.iter().any(|r| name.eq_ignore_ascii_case(r.as_bytes())) {
                response::header(&mut lines, name, field.value.of(buf));
            }
        }
        let method = if head.method == Method::Head {
            "HEAD"
        } else {
            "GET"
        };
        Replay { method, lines }
    }

    /// The request head to answer from a file, with `target` as its target (a URI; one a
    /// request line cannot carry makes the parse fail).
    fn request(&self, target: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64 + target.len() + self.lines.len());
        bytes.extend_from_slice(self.method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\nHost: offload\r\n");
        bytes.extend_from_slice(&self.lines);
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

/// Answers `routed`'s request with the file `offload` names, through `reply`: 404 when no
/// internal route of its server holds it (or the name tries to leave one).
pub fn serve(
    sites: &Sites,
    files: &mut StaticFiles,
    routed: &Routed,
    offload: &Offload,
    reply: Reply,
    now: Instant,
) {
    let site = sites.site(routed.server);
    let found = locate(site, offload);
    let route = found.as_ref().map(|(route, _, _)| *route);
    let mut respond = super::responder(reply, site, route, None, routed.parts(sites));
    let (Some((route, path, relative)), Some(replay)) = (&found, &routed.replay) else {
        return respond_simple(&mut respond, 404, &[]);
    };
    let Handler::Files { root, options } = &route.handler else {
        return respond_simple(&mut respond, 404, &[]);
    };
    let target = match offload.kind {
        OffloadKind::AccelRedirect => &offload.target[..],
        OffloadKind::Sendfile => path.as_bytes(),
    };
    let bytes = replay.request(target);
    let Ok(Some(head)) = request::parse(&bytes, &HeadLimits::default()) else {
        return respond_simple(&mut respond, 404, &[]);
    };
    let file = FileRequest {
        head: &head,
        buf: &bytes,
        path,
        relative,
        root: *root,
        options,
    };
    let mut kept = Keeping {
        inner: &mut respond,
        lines: &offload.headers,
    };
    // Internal routes have no fallback (the config refuses one), so the file answers.
    files.serve(&file, &mut kept, now);
}

/// The internal route an offload names, the path it routes as, and the file's path beneath
/// the route's root.
fn locate<'s, 'c>(
    site: &'s Site<'c>,
    offload: &Offload,
) -> Option<(&'s super::sites::Route<'c>, String, String)> {
    match offload.kind {
        OffloadKind::AccelRedirect => {
            let path = target::resolve_target(&offload.target).ok()?.path;
            let route = site.internal_route(&path)?;
            let relative = route.config.beneath(&path).to_string();
            Some((route, path.into_owned(), relative))
        }
        OffloadKind::Sendfile => {
            let file = std::str::from_utf8(&offload.target).ok()?;
            let (route, relative) = site.internal_root_of(file)?;
            Some((route, format!("/{relative}"), relative.to_string()))
        }
    }
}

/// The file's answer with the app's kept header lines in place of the file's own.
struct Keeping<'k, R: Respond> {
    inner: &'k mut R,
    lines: &'k [u8],
}

impl<R: Respond> Respond for Keeping<'_, R> {
    fn head(&mut self) -> &mut ResponseHead {
        self.inner.head()
    }

    fn send_head(&mut self) {
        let head = self.inner.head();
        // Only a successful answer is the app's file (not a 404 or 416 about it).
        if matches!(head.status, 200 | 206 | 304) {
            let named = |name: &str| {
                (self.lines.split(|&b| b == b'\n'))
                    .filter_map(|line| line.split(|&b| b == b':').next())
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            };
            for name in KEPT_ON_OFFLOAD.into_iter().filter(|name| named(name)) {
                head.remove(name);
            }
            head.add_lines(self.lines);
        }
        self.inner.send_head();
    }

    fn body(&mut self, part: BodyPart<'_>) {
        self.inner.body(part);
    }

    fn end(&mut self) {
        self.inner.end();
    }

    fn send_continue(&mut self) {
        self.inner.send_continue();
    }

    fn backlog_bytes(&self) -> usize {
        self.inner.backlog_bytes()
    }

    fn error_page(&self, status: u16) -> Option<std::sync::Arc<crate::http::respond::ErrorPage>> {
        self.inner.error_page(status)
    }
}
