//! Storing an upstream's answer while it goes to the client: [`Tee`] stands between the
//! exchange and the client's [`Respond`] sink, decides at the head whether the response may
//! be stored (`policy`), says so in `Cache-Status`, and copies the body into an entry
//! [`Writer`] that is put in place only once the body is complete. A response the client
//! gets cut short (the upstream failed mid-body) is never stored: its writer is dropped and
//! leaves nothing.

use std::path::PathBuf;
use std::sync::Arc;

use super::entry::{Meta, Writer};
use super::policy::{self, Directives, RequestFacts, ResponseFacts, Rules};
use super::{unix_now, Forwarded};
use crate::http::request::RequestHead;
use crate::http::respond::{BodyPart, ErrorPage, Respond};
use crate::http::response::ResponseHead;

/// A request whose upstream answer may be stored: what deciding and storing need, kept
/// beyond the request's buffer.
#[derive(Debug)]
pub struct Fill {
    pub(super) key: Vec<u8>,
    pub(super) path: PathBuf,
    pub(super) request: RequestFacts,
    pub(super) rules: Rules,
    pub(super) forwarded: Forwarded,
    /// The request head and its bytes: the response's `Vary` names headers of it.
    pub(super) request_head: RequestHead,
    pub(super) request_bytes: Vec<u8>,
    pub(super) requested_at: u64,
    pub(super) max_entry_bytes: u64,
    /// The entry being written, once the head said it may be stored.
    writer: Option<Writer>,
}

impl Fill {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key: Vec<u8>,
        path: PathBuf,
        request: RequestFacts,
        rules: Rules,
        forwarded: Forwarded,
        head: &RequestHead,
        buf: &[u8],
        max_entry_bytes: u64,
    ) -> Fill {
        Fill {
            key,
            path,
            request,
            rules,
            forwarded,
            request_head: head.clone(),
            request_bytes: buf[..head.len].to_vec(),
            requested_at: unix_now(),
            max_entry_bytes,
            writer: None,
        }
    }

    /// `respond` with this fill between it and the exchange.
    pub fn tee<'t, R: Respond>(&'t mut self, respond: &'t mut R) -> Tee<'t, R> {
        Tee { fill: self, respond }
    }

    /// Decides at the head; starts the entry when the response may be stored. Returns the
    /// `Cache-Status` value.
    fn start(&mut self, head: &ResponseHead) -> String {
        let facts = response_facts(head);
        let received_at = unix_now();
        let assessed = policy::assess(&self.request, &facts, &self.rules, self.requested_at, received_at);
        let freshness = match assessed {
            Ok(freshness) => freshness,
            Err(why) => return format!("shoal; fwd={}; detail={}", self.forwarded.as_str(), why.detail()),
        };
        let meta = Meta {
            key: self.key.clone(),
            status: head.status,
            reason: head.reason().to_vec(),
            lines: stored_lines(head),
            freshness,
            vary: self.vary_values(head),
        };
        let dir = self.path.parent().unwrap_or(&self.path);
        match Writer::create(dir, &meta, self.max_entry_bytes) {
            Ok(writer) => {
                self.writer = Some(writer);
                format!("shoal; fwd={}; stored", self.forwarded.as_str())
            }
            Err(e) => {
                log::debug!("cannot write a cache entry in {}: {e}", dir.display());
                format!("shoal; fwd={}; detail=write-failed", self.forwarded.as_str())
            }
        }
    }

    /// The request's values of the headers the response's `Vary` names.
    fn vary_values(&self, head: &ResponseHead) -> Vec<(Vec<u8>, Vec<u8>)> {
        let names = head
            .lines()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"vary"))
            .flat_map(|(_, value)| value.split(|&b| b == b','))
            .map(|name| name.trim_ascii().to_ascii_lowercase())
            .filter(|name| !name.is_empty());
        let mut vary: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for name in names {
            if vary.iter().all(|(seen, _)| *seen != name) {
                let value = super::request_value(&self.request_head, &self.request_bytes, &name);
                vary.push((name, value));
            }
        }
        vary
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(writer) = &mut self.writer {
            if let Err(e) = writer.write(bytes) {
                log::debug!("a cache entry is not stored: {e}");
                self.writer = None;
            }
        }
    }

    fn commit(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.commit(&self.path) {
                log::debug!("cannot put a cache entry at {}: {e}", self.path.display());
            }
        }
    }
}

/// What `policy` looks at in a response head.
fn response_facts(head: &ResponseHead) -> ResponseFacts {
    let mut facts = ResponseFacts {
        status: head.status,
        ..ResponseFacts::default()
    };
    let mut directives = Directives::default();
    for (name, value) in head.lines() {
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted.as_bytes());
        if is("cache-control") {
            directives.add(value);
        } else if is("date") {
            facts.date = super::http_date(value);
        } else if is("expires") {
            // Not a date: already expired (RFC 9111 §5.3).
            facts.expires = Some(super::http_date(value).unwrap_or(0));
        } else if is("age") {
            facts.age = policy::delta_seconds(value);
        } else if is("set-cookie") {
            facts.set_cookie = true;
        } else if is("vary") {
            facts.vary_star |= value.split(|&b| b == b',').any(|v| v.trim_ascii() == b"*");
        }
    }
    facts.directives = directives;
    facts
}

/// The head's lines as stored: all but `Age`, which is worked out whenever the entry answers.
fn stored_lines(head: &ResponseHead) -> Vec<u8> {
    let mut lines = Vec::new();
    for (name, value) in head
        .lines()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(b"age"))
    {
        crate::http::response::header(&mut lines, name, value);
    }
    lines
}

/// A client's sink with a [`Fill`] beside it.
pub struct Tee<'t, R: Respond> {
    fill: &'t mut Fill,
    respond: &'t mut R,
}

impl<R: Respond> Respond for Tee<'_, R> {
    fn head(&mut self) -> &mut ResponseHead {
        self.respond.head()
    }

    fn send_head(&mut self) {
        let status = self.fill.start(self.respond.head());
        self.respond.head().add(b"Cache-Status", status.as_bytes());
        self.respond.send_head();
    }

    fn body(&mut self, part: BodyPart<'_>) {
        if let BodyPart::Bytes(bytes) = &part {
            self.fill.write(bytes);
        } else {
            // Only bytes come from an upstream; anything else is not this response's copy.
            self.fill.writer = None;
        }
        self.respond.body(part);
    }

    fn end(&mut self) {
        self.fill.commit();
        self.respond.end();
    }

    fn send_continue(&mut self) {
        self.respond.send_continue();
    }

    fn backlog_bytes(&self) -> usize {
        self.respond.backlog_bytes()
    }

    fn error_page(&self, status: u16) -> Option<Arc<ErrorPage>> {
        self.respond.error_page(status)
    }

    fn intercepts(&self, status: u16) -> bool {
        self.respond.intercepts(status)
    }
}
