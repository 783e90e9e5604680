//! Answering a request from one representation: preconditions (412, 304), ranges, head and
//! body.

use std::rc::Rc;

use super::representation::{Content, Representation};
use crate::http::request::{Method, RequestHead};
use crate::http::respond::{respond_simple, BodyPart, Respond};
use crate::http::response::Length;
use crate::http::selection::{self, Selection, Validators};
use crate::io::{FileBody, SharedBody};

/// In-memory bodies up to this size are copied after the head (one write sends both);
/// larger ones are shared with the cache, so a client that reads slowly pins no copy.
const COPY_LIMIT_BYTES: usize = 16 * 1024;

/// Answers from `rep` through `respond`, honouring preconditions and range headers.
pub fn respond(rep: &Representation, head: &RequestHead, buf: &[u8], respond: &mut impl Respond) {
    let validators = Validators {
        etag: Some(&rep.etag),
        last_modified: Some(rep.identity.mtime),
    };
    let size = rep.identity.size;
    let (status, offset, len) = match selection::select(head, buf, validators, size) {
        Selection::Body { status, offset, len } => (status, offset, len),
        Selection::NotModified => {
            let out = respond.head();
            out.local(304).add_lines(&rep.headers);
            respond.send_head();
            respond.end();
            return;
        }
        Selection::PreconditionFailed => return respond_simple(respond, 412, &[]),
        Selection::Unsatisfiable => {
            let range = selection::unsatisfied_range(size);
            return respond_simple(respond, 416, &[("Content-Range", &range)]);
        }
    };
    // A file is sent as the representation chosen (its own compressed forms are made once,
    // beside it), even where the response was offered compression (an app's offload).
    respond.send_as_is();
    let out = respond.head();
    out.local(status).add_lines(&rep.headers);
    if status == 206 {
        selection::add_content_range(out, offset, len, size);
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
