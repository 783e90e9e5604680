//! How a handler answers: it fills a head and sends it, then body parts, then the end,
//! through a [`Respond`] sink. It never writes bytes for the client itself: what stands
//! between it and the client (response filters, the client's framing, later a cache or a
//! compressor) lives behind the sink.

use std::sync::Arc;

use super::response::{format_into, reason, Length, ResponseHead};
use crate::io::{FileBody, SharedBody};

/// A page that answers an error status in place of shoal's short text (`error_pages`), read
/// when the config loads.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorPage {
    pub body: Vec<u8>,
    pub content_type: String,
}

/// One piece of a response body.
#[derive(Debug)]
pub enum BodyPart<'a> {
    /// Bytes copied on their way out.
    Bytes(&'a [u8]),
    /// Bytes shared with a cache, sent without a copy.
    Shared(SharedBody),
    /// A range of an open file, sent with sendfile where the transport allows.
    File(FileBody),
}

/// Where a handler sends its response.
pub trait Respond {
    /// The head to fill for this response (start it with [`ResponseHead::local`] or
    /// [`ResponseHead::relayed`]); [`send_head`](Respond::send_head) sends it.
    fn head(&mut self) -> &mut ResponseHead;

    /// Sends the head filled through [`head`](Respond::head). The body follows.
    fn send_head(&mut self);

    /// Sends a piece of the body.
    fn body(&mut self, part: BodyPart<'_>);

    /// The body is complete.
    fn end(&mut self);

    /// The handler is about to read the request body: a client holding it back for
    /// `Expect: 100-continue` is told to send it (once, and never after the final head).
    fn send_continue(&mut self);

    /// Bytes not yet taken by the client: a handler that produces faster than this drains
    /// waits until it is small.
    fn backlog_bytes(&self) -> usize;

    /// The page that answers `status` in place of shoal's short text, if the route (or the
    /// server) has one.
    fn error_page(&self, _status: u16) -> Option<Arc<ErrorPage>> {
        None
    }

    /// Whether an upstream's answer with `status` is replaced by the error page for it
    /// (`intercept_errors`).
    fn intercepts(&self, _status: u16) -> bool {
        false
    }

    /// The body that follows (said before the head) is a large file to send as it is: not
    /// to be compressed in the worker's loop.
    fn send_as_is(&mut self) {}
}

/// Answers `status` with its error page, else a short plain-text body naming it, and `extra`
/// headers: for errors and redirects.
pub fn respond_simple(respond: &mut (impl Respond + ?Sized), status: u16, extra: &[(&str, &[u8])]) {
    let mut buf = [0u8; 64];
    let page = respond.error_page(status);
    let (body, content_type) = match &page {
        Some(page) => (&page.body[..], page.content_type.as_bytes()),
        None => (
            format_into(&mut buf, format_args!("{status} {}\n", reason(status))),
            &b"text/plain; charset=utf-8"[..],
        ),
    };
    let head = respond.head();
    head.local(status);
    for (name, value) in extra {
        head.add(name.as_bytes(), value);
    }
    head.add(b"Content-Type", content_type);
    head.length = Length::Known(body.len() as u64);
    respond.send_head();
    respond.body(BodyPart::Bytes(body));
    respond.end();
}
