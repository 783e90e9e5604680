//! Answering a request from one representation: preconditions (412, 304), ranges, head and
//! body.

use std::fs::File;
use std::rc::Rc;

use super::conditional::{self, Precondition};
use super::range::{parse_range, RangeRequest};
use super::representation::{Content, Representation};
use crate::http::request::{Method, RequestHead};
use crate::http::response::{self, Persistence};

/// In-memory bodies up to this size are copied after the head (one write sends both);
/// larger ones are shared with the cache, so a client that reads slowly pins no copy.
const COPY_LIMIT_BYTES: usize = 16 * 1024;

/// A byte range of an open file still to be sent with sendfile.
#[derive(Debug, Clone)]
pub struct FileBody {
    pub file: Rc<File>,
    pub offset: u64,
    pub len: u64,
}

/// A byte range of a cached file's contents, shared with the cache rather than copied.
#[derive(Debug, Clone)]
pub struct SharedBody {
    pub bytes: Rc<[u8]>,
    pub start: usize,
    pub end: usize,
}

/// A response body sent after the bytes already written to the output buffer.
#[derive(Debug)]
pub enum Body {
    File(FileBody),
    Shared(SharedBody),
}

/// What was answered: the status and body size for the log, and a body to send after the
/// bytes already written to the output buffer.
#[derive(Debug)]
pub struct Served {
    pub status: u16,
    pub body_bytes: u64,
    pub body: Option<Body>,
}

impl Served {
    /// A response entirely written to the output buffer.
    pub fn written(status: u16, body_bytes: u64) -> Served {
        Served {
            status,
            body_bytes,
            body: None,
        }
    }
}

/// Writes the response for `rep` to `out`, honouring conditional and range headers.
pub fn respond(
    rep: &Representation,
    head: &RequestHead,
    buf: &[u8],
    out: &mut Vec<u8>,
    date: &[u8],
    persistence: Persistence,
) -> Served {
    let header = |slice: Option<crate::http::request::Slice>| slice.map(|s| s.of(buf));
    let precondition = conditional::precondition(
        header(head.if_match),
        header(head.if_unmodified_since),
        header(head.if_none_match),
        header(head.if_modified_since),
        &rep.etag,
        rep.identity.mtime,
    );
    match precondition {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            response::start(out, 304, date, persistence);
            out.extend_from_slice(&rep.headers);
            out.extend_from_slice(b"\r\n");
            return Served::written(304, 0);
        }
        Precondition::Failed => {
            let with_body = head.method != Method::Head;
            let n = response::write_simple(out, 412, date, persistence, &[], with_body);
            return Served::written(412, n);
        }
    }
    let size = rep.identity.size;
    let range = match header(head.range) {
        Some(value) if head.method == Method::Get => {
            let allowed = header(head.if_range)
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
            let with_body = head.method != Method::Head;
            let n = response::write_simple(
                out,
                416,
                date,
                persistence,
                &[("Content-Range", &value)],
                with_body,
            );
            return Served::written(416, n);
        }
        RangeRequest::Ignore | RangeRequest::Multiple => (200, 0, size),
    };
    response::start(out, status, date, persistence);
    out.extend_from_slice(&rep.headers);
    if status == 206 {
        out.extend_from_slice(b"Content-Range: bytes ");
        response::push_number(out, offset);
        out.push(b'-');
        response::push_number(out, offset + len - 1);
        out.push(b'/');
        response::push_number(out, size);
        out.extend_from_slice(b"\r\n");
    }
    response::content_length(out, len);
    out.extend_from_slice(b"\r\n");
    if head.method == Method::Head {
        return Served::written(status, 0);
    }
    let (start, end) = (offset as usize, (offset + len) as usize);
    match &rep.content {
        Content::Memory(bytes) if len as usize <= COPY_LIMIT_BYTES => {
            out.extend_from_slice(&bytes[start..end]);
            Served::written(status, len)
        }
        Content::Memory(bytes) => Served {
            status,
            body_bytes: len,
            body: Some(Body::Shared(SharedBody {
                bytes: Rc::clone(bytes),
                start,
                end,
            })),
        },
        Content::File(file) => Served {
            status,
            body_bytes: len,
            body: Some(Body::File(FileBody {
                file: Rc::clone(file),
                offset,
                len,
            })),
        },
    }
}
