//! Answering a request from a stored entry: its status and header lines, its current `Age`,
//! `Cache-Status`, and its body straight from the entry file (sendfile where the client's
//! transport allows). A stored 200 answers the client's own preconditions and a single range
//! as a static file would (304, 412, 206, 416).

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use super::entry::Entry;
use super::{http_date, unix_now};
use crate::http::request::RequestHead;
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::{header_lines as lines, Length, ResponseHead};
use crate::http::selection::{self, Selection, Validators};
use crate::io::FileBody;

/// The header lines a 304 carries of the response it stands for (RFC 9110 §15.4.5).
const KEPT_BY_304: [&[u8]; 6] = [
    b"cache-control",
    b"content-location",
    b"date",
    b"etag",
    b"expires",
    b"vary",
];

/// Answers the request `head` (bytes in `buf`) through `respond` with `entry`;
/// `cache_status` goes in `Cache-Status`.
pub fn answer(entry: Entry, head: &RequestHead, buf: &[u8], cache_status: &[u8], respond: &mut impl Respond) {
    let meta = &entry.meta;
    let size = entry.body_len;
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
            add_cache_headers(out, &entry, cache_status);
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
    let out = respond.head();
    let reason: &[u8] = if status == meta.status { &meta.reason } else { b"" };
    out.relayed(status, reason);
    out.add_lines(&meta.lines);
    if status == 206 {
        selection::add_content_range(out, offset, len, size);
    }
    add_cache_headers(out, &entry, cache_status);
    out.length = Length::Known(len);
    respond.send_head();
    if len > 0 {
        respond.body(BodyPart::File(FileBody {
            file: Rc::new(entry.file),
            offset: entry.body_offset + offset,
            len,
        }));
    }
    respond.end();
}

fn add_cache_headers(out: &mut ResponseHead, entry: &Entry, cache_status: &[u8]) {
    let age = entry.meta.freshness.age(unix_now());
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
