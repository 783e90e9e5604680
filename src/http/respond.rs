//! How a handler answers: it fills a head and sends it, then body parts, then the end,
//! through a [`Respond`] sink. It never writes bytes for the client itself: what stands
//! between it and the client (response filters, the client's framing, later a cache or a
//! compressor) lives behind the sink.

use super::response::{format_into, reason, Length, ResponseHead};
use crate::io::{FileBody, SharedBody};

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
}

/// Answers `status` with a short plain-text body naming it, and `extra` headers: for errors
/// and redirects.
pub fn respond_simple(respond: &mut (impl Respond + ?Sized), status: u16, extra: &[(&str, &[u8])]) {
    let mut buf = [0u8; 64];
    let text = format_into(&mut buf, format_args!("{status} {}\n", reason(status)));
    let head = respond.head();
    head.local(status);
    for (name, value) in extra {
        head.add(name.as_bytes(), value);
    }
    head.add(b"Content-Type", b"text/plain; charset=utf-8");
    head.length = Length::Known(text.len() as u64);
    respond.send_head();
    respond.body(BodyPart::Bytes(text));
    respond.end();
}
