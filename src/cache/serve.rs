//! Answering a request from a stored entry: its status and header lines, its current `Age`,
//! `Cache-Status`, and its body straight from the entry file (sendfile where the client's
//! transport allows). A stored 200 answers the client's own preconditions and a single range
//! as a static file would (304, 412, 206, 416).

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use super::entry::{Entry, Meta};
use super::{http_date, unix_now};
use crate::http::request::RequestHead;
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::{header_lines as lines, Length, ResponseHead};
use crate::http::selection::{self, Selection, Validators};
use crate::io::{FileBody, SharedBody};

/// The header lines a 304 carries of the response it stands for (RFC 9110 §15.4.5).
const KEPT_BY_304: [&[u8]; 6] = [
    b"cache-control",
    b"content-location",
    b"date",
    b"etag",
    b"expires",
    b"vary",
];

/// A stored response found for a request: an entry opened on disk, or a small one this
/// worker keeps in memory.
#[derive(Debug)]
pub enum Found {
    Disk(Box<Entry>),
    Memory(Rc<Hot>),
}

/// A small entry held in a worker's memory, so that a hit on it costs no system call.
#[derive(Debug)]
pub struct Hot {
    pub meta: Meta,
    pub body: Rc<[u8]>,
    /// Its file, whose use is noted for the keeper (at most once a minute).
    pub path: std::path::PathBuf,
    pub noted: std::cell::Cell<u64>,
}

impl Found {
    fn meta(&self) -> &Meta {
        match self {
            Found::Disk(entry) => &entry.meta,
            Found::Memory(hot) => &hot.meta,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Found::Disk(entry) => entry.body_len,
            Found::Memory(hot) => hot.body.len() as u64,
        }
    }
}

/// Entries read from disk up to this size may be compressed on their way out (in the
/// worker's loop, per request); longer ones go as they are.
const MAX_COMPRESSED_BYTES: u64 = 1 << 20;

/// Bodies up to this size go out copied after the head (one write for both).
const COPY_LIMIT_BYTES: u64 = 16 * 1024;

/// Answers the request `head` (bytes in `buf`) through `respond` with `found`;
/// `cache_status` goes in `Cache-Status`.
pub fn answer(found: Found, head: &RequestHead, buf: &[u8], cache_status: &[u8], respond: &mut impl Respond) {
    let meta = found.meta();
    let size = found.size();
    let selected = match meta.status {
        200 => selection::select(head, buf, validators(&meta.lines), size),
        _ => Selection::Body {
            status: meta.status,
            offset: 0,
            len: size,
        },
    };
    let (status, offset, len) = match selected {
        Selection::Body { status, offset, len } => (status, offset, len),
        Selection::NotModified => {
            let out = respond.head();
            out.relayed(304, b"");
            for (name, value) in lines(&meta.lines) {
                if KEPT_BY_304.iter().any(|kept| name.eq_ignore_ascii_case(kept)) {
                    out.add(name, value);
                }
            }
            add_cache_headers(out, meta, cache_status);
            respond.send_head();
            return respond.end();
        }
        Selection::PreconditionFailed => {
            return respond_simple(respond, 412, &[("Cache-Status", cache_status)])
        }
        Selection::Unsatisfiable => {
            let range = selection::unsatisfied_range(size);
            let extra = [("Content-Range", &range[..]), ("Cache-Status", cache_status)];
            return respond_simple(respond, 416, &extra);
        }
    };
    if matches!(found, Found::Disk(_)) && len > MAX_COMPRESSED_BYTES {
        respond.send_as_is();
    }
    let out = respond.head();
    let reason: &[u8] = if status == meta.status { &meta.reason } else { b"" };
    out.relayed(status, reason);
    out.add_lines(&meta.lines);
    if status == 206 {
        selection::add_content_range(out, offset, len, size);
    }
    add_cache_headers(out, meta, cache_status);
    out.length = Length::Known(len);
    respond.send_head();
    let (start, end) = (offset as usize, (offset + len) as usize);
    match found {
        _ if len == 0 => {}
        Found::Memory(hot) if len <= COPY_LIMIT_BYTES => respond.body(BodyPart::Bytes(&hot.body[start..end])),
        Found::Memory(hot) => respond.body(BodyPart::Shared(SharedBody {
            bytes: Rc::clone(&hot.body),
            start,
            end,
        })),
        Found::Disk(entry) => respond.body(BodyPart::File(FileBody {
            file: Rc::new(entry.file),
            offset: entry.body_offset + offset,
            len,
        })),
    }
    respond.end();
}

fn add_cache_headers(out: &mut ResponseHead, meta: &Meta, cache_status: &[u8]) {
    let age = meta.freshness.age(unix_now());
    out.add(b"Age", age.to_string().as_bytes());
    out.add(b"Cache-Status", cache_status);
}

/// The entry's `ETag` and `Last-Modified`.
fn validators(stored: &[u8]) -> Validators<'_> {
    let value = |wanted: &[u8]| {
        lines(stored)
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v)
    };
    Validators {
        etag: value(b"etag").and_then(|etag| std::str::from_utf8(etag).ok()),
        last_modified: value(b"last-modified")
            .and_then(http_date)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
    }
}
