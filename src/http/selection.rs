//! Which answer a GET or HEAD of one stored representation gets, from the request's
//! preconditions and `Range` (RFC 9110 §13.2.2, §14): the whole of it, one part (206), a 304,
//! a 412 or a 416. Static files and cache entries both answer through it.

use std::time::SystemTime;

use super::conditional::{self, Precondition};
use super::range::{parse_range, RangeRequest};
use super::request::{Method, RequestHead};
use super::response::{self, ResponseHead};

/// What a representation can be compared by.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// Its entity-tag as sent (`"x"` or `W/"x"`); `None`: it has none.
    pub etag: Option<&'a str>,
    /// Its Last-Modified; `None`: it has none, and date preconditions are ignored (§13.1.3).
    pub last_modified: Option<SystemTime>,
}

/// The answer a request selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// 200 or 206: `len` bytes from `offset`.
    Body {
        status: u16,
        offset: u64,
        len: u64,
    },
    NotModified,
    PreconditionFailed,
    /// 416, with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Selects the answer `head` (bytes in `buf`) gets from a representation of `size` bytes.
pub fn select(head: &RequestHead, buf: &[u8], validators: Validators, size: u64) -> Selection {
    let header = |name: &str| head.field(buf, name);
    let dated = |name: &str| header(name).filter(|_| validators.last_modified.is_some());
    let mtime = validators.last_modified.unwrap_or(SystemTime::UNIX_EPOCH);
    // No entity-tag: an empty one, which no listed tag matches (`*` still does).
    let etag = validators.etag.unwrap_or("");
    let precondition = conditional::precondition(
        header("if-match"),
        dated("if-unmodified-since"),
        header("if-none-match"),
        dated("if-modified-since"),
        etag,
        mtime,
    );
    match precondition {
        Precondition::Proceed => {}
        Precondition::NotModified => return Selection::NotModified,
        Precondition::Failed => return Selection::PreconditionFailed,
    }
    let range = match header("range") {
        Some(value) if head.method == Method::Get => {
            // Without an entity-tag, a weak stand-in: no tag in If-Range can match it.
            let strong_etag = validators.etag.unwrap_or("W/\"\"");
            let allowed = header("if-range")
                .is_none_or(|value| conditional::if_range_allows(value, strong_etag, mtime));
            if allowed {
                parse_range(value, size)
            } else {
                RangeRequest::Ignore
            }
        }
        _ => RangeRequest::Ignore,
    };
    match range {
        RangeRequest::Single { start, end } => Selection::Body {
            status: 206,
            offset: start,
            len: end - start + 1,
        },
        RangeRequest::Unsatisfiable => Selection::Unsatisfiable,
        RangeRequest::Ignore | RangeRequest::Multiple => Selection::Body {
            status: 200,
            offset: 0,
            len: size,
        },
    }
}

/// `Content-Range: bytes */size`, the 416's header value.
pub fn unsatisfied_range(size: u64) -> Vec<u8> {
    let mut value = b"bytes */".to_vec();
    response::push_number(&mut value, size);
    value
}

/// Adds `Content-Range` to a 206's head.
pub fn add_content_range(out: &mut ResponseHead, offset: u64, len: u64, size: u64) {
    let mut value = [0u8; 64];
    let last = offset + len - 1;
    out.add(
        b"Content-Range",
        response::format_into(&mut value, format_args!("bytes {offset}-{last}/{size}")),
    );
}
