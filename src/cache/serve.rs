//! Answering a request from a stored entry: its status and header lines, its current `Age`,
//! `Cache-Status: shoal; hit`, and its body straight from the entry file (sendfile where the
//! client's transport allows).

use std::rc::Rc;

use super::entry::Entry;
use super::unix_now;
use crate::http::respond::{BodyPart, Respond};
use crate::http::response::Length;
use crate::io::FileBody;

/// Answers through `respond` with `entry`.
pub fn answer(entry: Entry, respond: &mut impl Respond) {
    let meta = &entry.meta;
    let age = meta.freshness.age(unix_now());
    let head = respond.head();
    head.relayed(meta.status, &meta.reason);
    head.add_lines(&meta.lines);
    head.add(b"Age", age.to_string().as_bytes());
    head.add(b"Cache-Status", b"shoal; hit");
    head.length = Length::Known(entry.body_len);
    respond.send_head();
    if entry.body_len > 0 {
        respond.body(BodyPart::File(FileBody {
            file: Rc::new(entry.file),
            offset: entry.body_offset,
            len: entry.body_len,
        }));
    }
    respond.end();
}
