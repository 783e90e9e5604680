//! Storing an upstream's answer while it goes to the client: [`Tee`] stands between the
//! exchange and the client's [`Respond`] sink, decides at the head whether the response may
//! be stored (`policy`), says so in `Cache-Status`, and copies the body into an entry
//! [`Writer`] that is put in place only once the body is complete. A response the client
//! gets cut short (the upstream failed mid-body) is never stored: its writer is dropped and
//! leaves nothing.
//!
//! With a stale entry in hand, the request went upstream with the entry's validators: a 304
//! freshens the entry (RFC 9111 §4.3.4) and it answers the client; a 500, 502, 503 or 504
//! within the entry's stale-if-error window is answered by the entry instead. Either way the
//! upstream's own body, if any, is dropped.
//!
//! A fill in the background (stale-while-revalidate: the stale entry answered the client
//! already) does all of this without the client: nothing it does reaches the client's sink,
//! and an upstream that fails leaves the stale entry as it is.

use std::path::PathBuf;
use std::sync::Arc;

use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use super::entry::{Entry, Meta, Writer};
use super::lock::Held;
use super::policy::{self, Directives, RequestFacts, ResponseFacts, Rules};
use super::serve::{self, Found};
use super::{unix_now, Counts, Events, Forwarded};
use crate::http::request::RequestHead;
use crate::http::respond::{BodyPart, ErrorPage, Respond};
use crate::http::response::{header_lines, ResponseHead};
use crate::stats::CacheEvent;

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
    /// The instance's counts (none outside a master's workers).
    pub(super) counts: Option<Counts>,
    /// The purge count when the request went upstream: an entry put in place after a purge
    /// began may hold what the purge was to remove, and goes.
    pub(super) purges_at_start: u64,
    /// The stale entry the request found, which the upstream's answer revalidates or, on
    /// an error, stands in for.
    pub(super) stale: Option<Entry>,
    /// The key's lock, while this request fetches it: others wait for its entry.
    pub(super) lock: Option<Held>,
    /// The entry being written, once the head said it may be stored.
    pub(super) writer: Option<Writer>,
    /// The client was answered from an entry: what the upstream still sends is dropped.
    pub(super) answered: bool,
    /// In the background: the client has its answer, and the upstream's head is read into
    /// this one rather than the client's.
    pub(super) background: Option<Box<ResponseHead>>,
    pub(super) events: Rc<Events>,
}

impl Fill {
    /// Whether the answer may be stored at all (a HEAD goes upstream as it is, unstored).
    pub fn stores(&self) -> bool {
        self.request.get
    }

    /// The stale entry's validators, to revalidate it with; `None` without an entry or when
    /// it has neither.
    pub fn validators(&self) -> Option<StoredValidators<'_>> {
        let lines = &self.stale.as_ref()?.meta.lines;
        let value = |wanted: &[u8]| {
            header_lines(lines)
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value)
        };
        let validators = StoredValidators {
            etag: value(b"etag"),
            last_modified: value(b"last-modified"),
        };
        (validators.etag.is_some() || validators.last_modified.is_some()).then_some(validators)
    }

    /// The stale entry, if it may answer in place of an upstream that failed.
    fn stale_for_error(&mut self) -> Option<Entry> {
        let now = unix_now();
        self.stale
            .take_if(|entry| entry.meta.freshness.serves_on_error(now))
    }

    /// True when the client was answered before this fill began (a background refresh).
    pub fn in_background(&self) -> bool {
        self.background.is_some()
    }

    /// Answers the client from a stale entry because the upstream failed with `status` (or
    /// not at all): true if it did, or if the client has its answer already (in the
    /// background).
    pub fn answer_stale_on_error(&mut self, status: u16, respond: &mut impl Respond) -> bool {
        if self.in_background() {
            return true;
        }
        let Some(entry) = (matches!(status, 500 | 502 | 503 | 504))
            .then(|| self.stale_for_error())
            .flatten()
        else {
            return false;
        };
        self.answer_from(
            entry,
            CacheEvent::Stale,
            b"shoal; hit; detail=stale-if-error",
            respond,
        );
        true
    }

    /// The upstream's 304 for the stale entry: freshens it and answers the client from it.
    fn answer_revalidated(&mut self, not_modified: &ResponseHead, entry: Entry, respond: &mut impl Respond) {
        let entry = self.freshen(not_modified, entry);
        let status = b"shoal; fwd=stale; fwd-status=304";
        self.answer_from(entry, CacheEvent::Revalidated, status, respond);
    }

    /// Answers the client from `entry` in place of the upstream (whose body is dropped).
    fn answer_from(
        &mut self,
        entry: Entry,
        event: CacheEvent,
        cache_status: &[u8],
        respond: &mut impl Respond,
    ) {
        self.answered = true;
        self.events.count(event);
        let (head, bytes) = (&self.request_head, &self.request_bytes);
        serve::answer(Found::Disk(Box::new(entry)), head, bytes, cache_status, respond);
    }

    /// Freshens the stale `entry` with the upstream's 304: stored anew with the 304's header
    /// lines over its own (RFC 9111 §4.3.4). Returns it, freshened.
    fn freshen(&mut self, not_modified: &ResponseHead, entry: Entry) -> Entry {
        let mut merged = ResponseHead::default();
        merged.relayed(entry.meta.status, &entry.meta.reason);
        let updated = |name: &[u8]| not_modified.lines().any(|(n, _)| n.eq_ignore_ascii_case(name));
        for (name, value) in header_lines(&entry.meta.lines).filter(|(name, _)| !updated(name)) {
            merged.add(name, value);
        }
        for (name, value) in not_modified
            .lines()
            .filter(|(name, _)| !name.eq_ignore_ascii_case(b"content-length"))
        {
            merged.add(name, value);
        }
        let facts = response_facts(&merged);
        let assessed = policy::assess(&self.request, &facts, &self.rules, self.requested_at, unix_now());
        let mut entry = entry;
        match assessed {
            Ok(freshness) => {
                entry.meta.lines = stored_lines(&merged);
                entry.meta.freshness = freshness;
                // Stored anew with its body copied, in this worker's loop: only up to a bound.
                // A larger entry stays as it was, and is revalidated again at its next use.
                if entry.body_len <= MAX_RESTORED_BODY_BYTES {
                    if let Err(e) = self.restore(&entry) {
                        log::debug!("cannot store the revalidated entry {}: {e}", self.path.display());
                    }
                }
            }
            // It may no longer be stored: it answers this once, and goes.
            Err(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
        entry
    }

    /// Writes `entry` (its body from its own file) as a new entry in its place.
    fn restore(&self, entry: &Entry) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(&self.path);
        let mut writer = Writer::create(dir, &entry.meta, self.max_entry_bytes)?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut done = 0;
        while done < entry.body_len {
            let n = chunk.len().min((entry.body_len - done) as usize);
            entry
                .file
                .read_exact_at(&mut chunk[..n], entry.body_offset + done)?;
            writer.write(&chunk[..n])?;
            done += n as u64;
        }
        self.put(writer)
    }

    /// Puts a written entry in place, and counts its bytes in for the keeper.
    fn put(&self, writer: Writer) -> std::io::Result<()> {
        let added = writer.disk_bytes();
        let replaced = writer.commit(&self.path)?;
        if let Some(counts) = self.counts {
            counts.bytes.fetch_add(added, Relaxed);
            // Clamped: the keeper's recount may already have left the replaced one out.
            let _ = (counts.bytes).fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(replaced)));
        }
        // Checked after the rename: a purge that began before it either lists the new file
        // or is seen here (the keeper counts the purge before it lists).
        if Counts::purges(self.counts) != self.purges_at_start {
            let _ = std::fs::remove_file(&self.path);
            return Err(std::io::Error::other("a purge began while it was fetched"));
        }
        self.events.count(CacheEvent::Stored);
        Ok(())
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
            Err(why) => {
                // Nothing will be stored: the requests waiting for it go upstream themselves.
                self.lock = None;
                return format!("shoal; fwd={}; detail={}", self.forwarded.as_str(), why.detail());
            }
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
            if let Err(e) = self.put(writer) {
                log::debug!("cannot put a cache entry at {}: {e}", self.path.display());
            }
        }
        // The entry is in place: the requests waiting for it find it.
        self.lock = None;
    }
}

/// The largest body a 304 has copied into a freshened entry.
const MAX_RESTORED_BODY_BYTES: u64 = 8 << 20;

/// A stored response's `ETag` and `Last-Modified` values.
#[derive(Debug, Clone, Copy)]
pub struct StoredValidators<'a> {
    pub etag: Option<&'a [u8]>,
    pub last_modified: Option<&'a [u8]>,
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

impl<R: Respond> Tee<'_, R> {
    /// In the background: decides what becomes of the entry, and tells the client nothing.
    fn send_head_in_background(&mut self) {
        let fill = &mut *self.fill;
        let head = fill.background.as_deref().cloned().unwrap_or_default();
        match fill.stale.take() {
            Some(entry) if head.status == 304 => {
                fill.freshen(&head, entry);
                fill.events.count(CacheEvent::Revalidated);
                fill.answered = true;
            }
            // The stale entry stays as it is.
            _ if head.status >= 500 => {
                fill.answered = true;
                fill.lock = None;
            }
            _ => {
                fill.start(&head);
            }
        }
    }
}

impl<R: Respond> Respond for Tee<'_, R> {
    fn head(&mut self) -> &mut ResponseHead {
        match &mut self.fill.background {
            Some(head) => head,
            None => self.respond.head(),
        }
    }

    fn send_head(&mut self) {
        if self.fill.in_background() {
            return self.send_head_in_background();
        }
        let upstream_status = self.respond.head().status;
        // A HEAD went with the client's own preconditions: its 304 is the client's.
        let revalidated = upstream_status == 304 && self.fill.stores();
        if let Some(entry) = self.fill.stale.take_if(|_| revalidated) {
            let not_modified = self.respond.head().clone();
            return self.fill.answer_revalidated(&not_modified, entry, self.respond);
        }
        if self.fill.answer_stale_on_error(upstream_status, self.respond) {
            return;
        }
        let status = match upstream_status >= 400 && self.respond.intercepts(upstream_status) {
            // The route's error page stands in for the app's answer, whose own headers
            // (no-store) were never seen: not stored.
            true => {
                self.fill.lock = None;
                format!("shoal; fwd={}; detail=error-page", self.fill.forwarded.as_str())
            }
            false => self.fill.start(self.respond.head()),
        };
        self.respond.head().add(b"Cache-Status", status.as_bytes());
        self.respond.send_head();
    }

    fn body(&mut self, part: BodyPart<'_>) {
        if self.fill.answered {
            return;
        }
        if let BodyPart::Bytes(bytes) = &part {
            self.fill.write(bytes);
        } else {
            // Only bytes come from an upstream; anything else is not this response's copy.
            self.fill.writer = None;
        }
        if !self.fill.in_background() {
            self.respond.body(part);
        }
    }

    fn end(&mut self) {
        if self.fill.answered {
            return;
        }
        self.fill.commit();
        if !self.fill.in_background() {
            self.respond.end();
        }
    }

    fn send_continue(&mut self) {
        if !self.fill.in_background() {
            self.respond.send_continue();
        }
    }

    /// In the background, none: the upstream is read at its own pace.
    fn backlog_bytes(&self) -> usize {
        match self.fill.in_background() {
            true => 0,
            false => self.respond.backlog_bytes(),
        }
    }

    fn error_page(&self, status: u16) -> Option<Arc<ErrorPage>> {
        (!self.fill.in_background())
            .then(|| self.respond.error_page(status))
            .flatten()
    }

    fn intercepts(&self, status: u16) -> bool {
        !self.fill.in_background() && self.respond.intercepts(status)
    }

    fn send_as_is(&mut self) {
        if !self.fill.in_background() {
            self.respond.send_as_is();
        }
    }
}
