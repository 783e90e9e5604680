//! Answering a request from one representation: preconditions (412, 304), ranges, head and
//! body.

use std::rc::Rc;

use super::conditional::{self, Precondition};
use super::range::{parse_range, RangeRequest};
use super::representation::{Content, Representation};
use crate::http::request::{Method, RequestHead};
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::{self, Length};
use crate::io::{FileBody, SharedBody};

/// In-memory bodies up to this size are copied after the head (one write sends both);
/// larger ones are shared with the cache, so a client that reads slowly pins no copy.
const COPY_LIMIT_BYTES: usize = 16 * 1024;

/// Answers from `rep` through `respond`, honouring preconditions and range headers.
pub fn respond(rep: &Representation, head: &RequestHead, buf: &[u8], respond: &mut impl Respond) {
    let header = |name: &str| head.field(buf, name);
    let precondition = conditional::precondition(
        header("if-match"),
        header("if-unmodified-since"),
        header("if-none-match"),
        header("if-modified-since"),
        &rep.etag,
        rep.identity.mtime,
    );
    match precondition {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            let out = respond.head();
            out.local(304).add_lines(&rep.headers);
            respond.send_head();
            respond.end();
            return;
        }
        Precondition::Failed => {
            respond_simple(respond, 412, &[]);
            return;
        }
    }
    let size = rep.identity.size;
    let range = match header("range") {
        Some(value) if head.method == Method::Get => {
            let allowed = header("if-range")
                .is_none_or(|v| conditional::if_range_allows(v, &rep.etag, rep.identity.mtime));
            if allowed {
                parse_range(value, size)
            } else {
                RangeRequest::Ignore
            }
        }
        _ => RangeRequest::Ignore,
    };
    let (status, offset, len) = match range {
        RangeRequest::Single { start, end } => (206, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            let mut value = b"bytes */".to_vec();
            response::push_number(&mut value, size);
            respond_simple(respond, 416, &[("Content-Range", &value)]);
            return;
        }
        RangeRequest::Ignore | RangeRequest::Multiple => (200, 0, size),
    };
    let out = respond.head();
    out.local(status).add_lines(&rep.headers);
    if status == 206 {
        let mut value = [0u8; 64];
        let last = offset + len - 1;
        out.add(
            b"Content-Range",
            response::format_into(&mut value, format_args!("bytes {offset}-{last}/{size}")),
        );
    }
    out.length = Length::Known(len);
    respond.send_head();
    if head.method == Method::Get {
        let (start, end) = (offset as usize, (offset + len) as usize);
        respond.body(match &rep.content {
            Content::Memory(bytes) if len as usize <= COPY_LIMIT_BYTES => BodyPart::Bytes(&bytes[start..end]),
            Content::Memory(bytes) => BodyPart::Shared(SharedBody {
                bytes: Rc::clone(bytes),
                start,
                end,
            }),
            Content::File(file) => BodyPart::File(FileBody {
                file: Rc::clone(file),
                offset,
                len,
            }),
        });
    }
    respond.end();
}
