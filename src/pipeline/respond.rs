//! The client's end of the pipeline: a handler's response goes through the route's response
//! filters, then gets the framing this client understands, then joins its output queue.
//!
//! [`Response`] is one response's progress (kept by the connection for as long as the
//! response runs); a [`Reply`] lends it the output and the head buffer for one step, and a
//! [`Responder`] adds the route's filters and error pages: it is what handlers see, as a
//! [`Respond`].

use std::sync::Arc;

use super::compress::Compression;
use super::filter::ResponseFilter;
use crate::config::answer::Parts;
use crate::config::{Compress, ErrorPages};
use crate::http::encoding::{self, Choice};
use crate::http::request::{Method, RequestHead, Version};
use crate::http::respond::{BodyPart, ErrorPage, Respond};
use crate::http::response::{
    self, ConnectionHeader, Length, LengthHeader, Persistence, ResponseHead, CONTINUE,
};
use std::os::unix::fs::FileExt;

use crate::io::{FileBody, Output, SpillDir};

/// Where a request's `Expect: 100-continue` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    NotExpected,
    /// The client holds its body back until told to send it.
    Awaited,
    Sent,
}

/// How body parts reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304, or a head without one).
    Nothing,
    /// Exactly this many more bytes.
    Length(u64),
    Chunked,
    /// As they come; closing the connection ends them (an HTTP/1.0 stream, a tunnel).
    Raw,
}

/// How far the response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// No head sent yet.
    Waiting,
    Body {
        status: u16,
        framing: Framing,
    },
    Ended {
        status: u16,
        framing: Framing,
    },
}

/// One response to one request: what the request allows of it, and how far it is.
pub struct Response {
    method: Method,
    version: Version,
    persistence: Persistence,
    expect: Continue,
    progress: Progress,
    body_bytes: u64,
    compression: Compression,
}

impl Response {
    /// The response to `head`, on a connection that continues as `persistence` says.
    pub fn to(head: &RequestHead, persistence: Persistence) -> Response {
        Response {
            method: head.method,
            version: head.version,
            persistence,
            expect: if head.expect_continue {
                Continue::Awaited
            } else {
                Continue::NotExpected
            },
            progress: Progress::Waiting,
            body_bytes: 0,
            compression: Compression::Off,
        }
    }

    /// The response to a request that could not be read: HTTP/1.1, then close.
    pub fn to_unreadable() -> Response {
        Response {
            method: Method::Get,
            version: Version::Http11,
            persistence: Persistence::Close,
            expect: Continue::NotExpected,
            progress: Progress::Waiting,
            body_bytes: 0,
            compression: Compression::Off,
        }
    }

    /// The client accepts `choice`: the body is compressed if its route compresses and its
    /// head is worth it (see `compress.rs`).
    pub fn offer_compression(&mut self, choice: Choice) {
        if !self.started() {
            self.compression = Compression::offer(choice);
        }
    }

    /// The status sent, once the head went out.
    pub fn status(&self) -> Option<u16> {
        match self.progress {
            Progress::Waiting => None,
            Progress::Body { status, .. } | Progress::Ended { status, .. } => Some(status),
        }
    }

    /// The connection closes after this response (said before its head goes out).
    pub fn close_after(&mut self) {
        debug_assert!(!self.started(), "the head already told the client");
        self.persistence = Persistence::Close;
    }

    /// True once the head went out (a failure can no longer be answered, only cut).
    pub fn started(&self) -> bool {
        self.progress != Progress::Waiting
    }

    /// True once the whole body went out.
    #[cfg(test)]
    pub fn ended(&self) -> bool {
        matches!(self.progress, Progress::Ended { .. })
    }

    /// Body bytes sent so far (without framing), for the access log.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Whether the connection can carry another request after this response (the head may
    /// have turned it to close: a body delimited by closing, a protocol switch).
    pub fn keeps_alive(&self) -> bool {
        let delimited_by_close = matches!(
            self.progress,
            Progress::Body {
                framing: Framing::Raw,
                ..
            } | Progress::Ended {
                framing: Framing::Raw,
                ..
            }
        );
        self.persistence.keeps_alive() && !delimited_by_close
    }

    /// Decides the framing of a head: the length header it carries, how its body goes out,
    /// and what it says about the connection (turning it to close where the body needs it).
    fn frame(&mut self, head: &ResponseHead) -> (LengthHeader, Framing, ConnectionHeader) {
        let status = head.status;
        let status_has_no_body = (100..200).contains(&status) || status == 204 || status == 304;
        let bodiless = status_has_no_body || self.method == Method::Head;
        let (length, framing) = match head.length {
            _ if status == 101 => return (LengthHeader::Absent, Framing::Raw, ConnectionHeader::Upgrade),
            // A response that can carry a body must say it has none, or it would run to close.
            Length::None if bodiless => (LengthHeader::Absent, Framing::Nothing),
            Length::None => (LengthHeader::ContentLength(0), Framing::Nothing),
            Length::Known(_) if status == 204 => (LengthHeader::Absent, Framing::Nothing),
            Length::Known(n) if bodiless => (LengthHeader::ContentLength(n), Framing::Nothing),
            Length::Known(n) => (LengthHeader::ContentLength(n), Framing::Length(n)),
            Length::Unknown if bodiless => (LengthHeader::Absent, Framing::Nothing),
            Length::Unknown if self.version == Version::Http11 => (LengthHeader::Chunked, Framing::Chunked),
            Length::Unknown => {
                self.persistence = Persistence::Close;
                (LengthHeader::Absent, Framing::Raw)
            }
        };
        (length, framing, self.persistence.into())
    }
}

/// What a connection lends a response for one step: the response, the connection's output,
/// the worker's head buffer and today's date.
pub struct Reply<'r> {
    pub response: &'r mut Response,
    pub output: &'r mut Output,
    pub head: &'r mut ResponseHead,
    pub date: &'r [u8],
}

/// A response's way to the client for one step: a [`Reply`] and its route's filters.
pub struct Responder<'r> {
    response: &'r mut Response,
    output: &'r mut Output,
    head: &'r mut ResponseHead,
    date: &'r [u8],
    filters: &'r [ResponseFilter<'r>],
    /// What the filters' placeholders are filled from.
    parts: Option<Parts<'r>>,
    /// The pages for error statuses, and whether an upstream's errors get them too.
    pages: Option<&'r ErrorPages>,
    intercept: bool,
    /// Where body bytes the client has not taken spill (a route that buffers responses).
    spill: Option<&'r SpillDir>,
    /// The route's compression, for responses offered it.
    compress: Option<&'r Compress>,
}

impl<'r> Responder<'r> {
    /// The way for a response of a route with `filters`, spilling to `spill` if given.
    pub fn new(
        reply: Reply<'r>,
        filters: &'r [ResponseFilter<'r>],
        spill: Option<&'r SpillDir>,
    ) -> Responder<'r> {
        Responder {
            response: reply.response,
            output: reply.output,
            head: reply.head,
            date: reply.date,
            filters,
            parts: None,
            pages: None,
            intercept: false,
            spill,
            compress: None,
        }
    }

    /// Offers compression to the response (see [`Response::offer_compression`]).
    pub fn offer_compression(&mut self, choice: Choice) {
        self.response.offer_compression(choice);
    }

    /// Compresses the responses offered it as `compress` says (the route's).
    pub fn with_compress(self, compress: Option<&'r Compress>) -> Responder<'r> {
        Responder { compress, ..self }
    }

    /// Answers error statuses with `pages` (and an upstream's too, if `intercept`).
    pub fn with_pages(self, pages: &'r ErrorPages, intercept: bool) -> Responder<'r> {
        Responder {
            pages: Some(pages),
            intercept,
            ..self
        }
    }

    /// Fills the filters' placeholders from `parts` (the request's).
    pub fn with_parts(self, parts: Option<Parts<'r>>) -> Responder<'r> {
        Responder { parts, ..self }
    }

    /// The connection closes after this response (said before its head goes out).
    pub fn close_after(&mut self) {
        self.response.close_after();
    }

    /// The reply back, for another responder (another route's filters).
    pub fn into_reply(self) -> Reply<'r> {
        Reply {
            response: self.response,
            output: self.output,
            head: self.head,
            date: self.date,
        }
    }

    /// Queues a body part as the framing says.
    fn frame(&mut self, part: BodyPart<'_>) {
        let Progress::Body { framing, .. } = &mut self.response.progress else {
            debug_assert!(false, "body before head or after end");
            return;
        };
        let len = match &part {
            BodyPart::Bytes(bytes) => bytes.len(),
            BodyPart::Shared(shared) => shared.end - shared.start,
            BodyPart::File(file) => file.len as usize,
        };
        match framing {
            Framing::Nothing => return,
            Framing::Length(left) => {
                debug_assert!(len as u64 <= *left, "more body than the head announced");
                *left -= len as u64;
            }
            Framing::Chunked if len == 0 => return,
            Framing::Chunked => {
                let mut line = [0; 18];
                let line = response::chunk_size_line(len, &mut line);
                self.output.append(line, self.spill);
            }
            Framing::Raw => {}
        }
        let chunked = *framing == Framing::Chunked;
        match part {
            BodyPart::Bytes(bytes) => self.output.append(bytes, self.spill),
            BodyPart::Shared(shared) => self.output.push_shared(shared),
            BodyPart::File(file) => self.output.push_file(file),
        }
        if chunked {
            self.output.append(b"\r\n", self.spill);
        }
        self.response.body_bytes += len as u64;
    }
}

impl Respond for Responder<'_> {
    fn head(&mut self) -> &mut ResponseHead {
        self.head
    }

    fn send_head(&mut self) {
        for filter in self.filters {
            filter.head(self.head, self.parts.as_ref());
        }
        let method = self.response.method;
        self.response.compression.decide(self.head, method, self.compress);
        // A client holding its body back on a connection that stays open must send it, or
        // its next request could not be found after it; one that closes is not asked.
        if self.response.expect == Continue::Awaited && self.response.persistence.keeps_alive() {
            self.send_continue();
        }
        let (length, framing, connection) = self.response.frame(self.head);
        response::write_head(self.output.buffer(), self.head, self.date, length, connection);
        let status = self.head.status;
        self.response.progress = Progress::Body { status, framing };
    }

    fn body(&mut self, part: BodyPart<'_>) {
        if let Compression::Off | Compression::Offered(_) = self.response.compression {
            return self.frame(part);
        }
        let mut compressed = Vec::new();
        let compression = &mut self.response.compression;
        let mut take = |piece: &[u8]| match compression {
            Compression::On(encoder) => encoder.push(piece, &mut compressed),
            Compression::Gathering(body) => {
                body.extend_from_slice(piece);
                Ok(())
            }
            Compression::Off | Compression::Offered(_) => Ok(()),
        };
        let taken = match &part {
            BodyPart::Bytes(bytes) => take(bytes),
            BodyPart::Shared(shared) => take(shared.as_bytes()),
            BodyPart::File(file) => read_range(file, take),
        };
        if let Err(e) = taken {
            log::warn!("compressing a response failed: {e}");
        }
        self.frame(BodyPart::Bytes(&compressed));
    }

    fn end(&mut self) {
        let last = match std::mem::take(&mut self.response.compression) {
            Compression::On(encoder) => {
                let mut last = Vec::new();
                encoder.finish(&mut last).map(|()| last)
            }
            Compression::Gathering(body) => encoding::gzip_whole(&body),
            Compression::Off | Compression::Offered(_) => Ok(Vec::new()),
        };
        match last {
            Ok(last) => self.frame(BodyPart::Bytes(&last)),
            Err(e) => log::warn!("compressing a response failed: {e}"),
        }
        if let Progress::Body { status, framing } = self.response.progress {
            if framing == Framing::Chunked {
                self.output.append(b"0\r\n\r\n", self.spill);
            }
            debug_assert!(
                !matches!(framing, Framing::Length(n) if n > 0),
                "body ended short"
            );
            self.response.progress = Progress::Ended { status, framing };
        }
    }

    fn send_continue(&mut self) {
        if self.response.expect == Continue::Awaited && !self.response.started() {
            self.output.buffer().extend_from_slice(CONTINUE);
            self.response.expect = Continue::Sent;
        }
    }

    fn backlog_bytes(&self) -> usize {
        self.output.backlog_bytes()
    }

    fn error_page(&self, status: u16) -> Option<Arc<ErrorPage>> {
        self.pages?.get(status).cloned()
    }

    fn intercepts(&self, status: u16) -> bool {
        self.intercept && self.error_page(status).is_some()
    }

    fn send_as_is(&mut self) {
        if !self.response.started() {
            self.response.compression = Compression::Off;
        }
    }
}

/// Reads `file`'s range in pieces, for a compressor (the response cache's entries come as
/// files; larger ones than `cache::serve`'s bound are sent as they are).
fn read_range(file: &FileBody, mut take: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut piece = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < file.len {
        let n = piece.len().min((file.len - done) as usize);
        file.file.read_exact_at(&mut piece[..n], file.offset + done)?;
        take(&piece[..n])?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, HeadLimits};
    use crate::http::respond::respond_simple;
    use crate::io::memory::MemoryTransport;

    const DATE: &[u8] = b"D";

    /// Sends what `answer` does for `request` and returns the bytes the client gets.
    fn sent(
        request: &str,
        persistence: Persistence,
        answer: impl FnOnce(&mut Responder),
    ) -> (String, Response) {
        let head = request::parse(request.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let mut response = Response::to(&head, persistence);
        let mut output = Output::default();
        let mut scratch = ResponseHead::default();
        let reply = Reply {
            response: &mut response,
            output: &mut output,
            head: &mut scratch,
            date: DATE,
        };
        answer(&mut Responder::new(reply, &[], None));
        let mut client = MemoryTransport::default();
        output.flush(&mut client, false).unwrap();
        (String::from_utf8(client.take_written()).unwrap(), response)
    }

    fn stream(r: &mut Responder, status: u16, length: Length, parts: &[&[u8]]) {
        r.head().relayed(status, b"");
        r.head().length = length;
        r.send_head();
        for part in parts {
            r.body(BodyPart::Bytes(part));
        }
        r.end();
    }

    const GET11: &str = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    const GET10: &str = "GET / HTTP/1.0\r\n\r\n";
    const HEAD11: &str = "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n";

    #[test]
    fn an_unknown_length_is_chunked_for_http11_and_closes_for_http10() {
        let (text, response) = sent(GET11, Persistence::KeepAlive, |r| {
            stream(r, 200, Length::Unknown, &[b"ab", b"", b"cde"])
        });
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nDate: D\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        assert!(response.keeps_alive() && response.ended());
        assert_eq!((response.status(), response.body_bytes()), (Some(200), 5));
        let (text, response) = sent(GET10, Persistence::KeepAliveEcho, |r| {
            stream(r, 200, Length::Unknown, &[b"ab"])
        });
        assert_eq!(text, "HTTP/1.1 200 OK\r\nDate: D\r\nConnection: close\r\n\r\nab");
        assert!(!response.keeps_alive());
    }

    #[test]
    fn head_requests_and_bodiless_statuses_send_no_body() {
        let (text, response) = sent(HEAD11, Persistence::KeepAlive, |r| {
            stream(r, 200, Length::Known(5), &[b"hello"])
        });
        assert_eq!(text, "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(response.body_bytes(), 0);
        let (text, _) = sent(GET11, Persistence::KeepAlive, |r| {
            stream(r, 304, Length::Known(5), &[])
        });
        assert_eq!(
            text,
            "HTTP/1.1 304 Not Modified\r\nDate: D\r\nContent-Length: 5\r\n\r\n"
        );
        let (text, _) = sent(GET11, Persistence::KeepAlive, |r| {
            stream(r, 204, Length::Known(5), &[])
        });
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nDate: D\r\n\r\n");
        let (text, _) = sent(GET11, Persistence::Close, |r| stream(r, 200, Length::None, &[]));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_protocol_switch_is_a_raw_stream() {
        let (text, response) = sent(GET11, Persistence::KeepAlive, |r| {
            stream(r, 101, Length::Unknown, &[b"frames"])
        });
        assert_eq!(
            text,
            "HTTP/1.1 101 Switching Protocols\r\nDate: D\r\nConnection: upgrade\r\n\r\nframes"
        );
        assert!(!response.keeps_alive());
    }

    #[test]
    fn continue_goes_once_and_only_where_the_body_will_be_read() {
        let post = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
        // The handler wants the body: told at once, and not again before the head.
        let (text, _) = sent(post, Persistence::Close, |r| {
            r.send_continue();
            r.send_continue();
            respond_simple(r, 502, &[]);
        });
        assert!(
            text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 "),
            "{text}"
        );
        assert_eq!(text.matches("100 Continue").count(), 1);
        // Answered without the body: asked for only when the connection stays open.
        let (text, _) = sent(post, Persistence::KeepAlive, |r| respond_simple(r, 404, &[]));
        assert!(
            text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 "),
            "{text}"
        );
        let (text, _) = sent(post, Persistence::Close, |r| respond_simple(r, 404, &[]));
        assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
        // Never after the final head.
        let (text, _) = sent(post, Persistence::Close, |r| {
            respond_simple(r, 404, &[]);
            r.send_continue();
        });
        assert!(!text.contains("100 Continue"), "{text}");
    }

    #[test]
    fn simple_responses_name_their_status() {
        let (text, response) = sent(GET11, Persistence::KeepAlive, |r| {
            respond_simple(r, 404, &[("Allow", b"GET")])
        });
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nServer: shoal\r\nAllow: GET\r\nContent-Type: text/plain; charset=utf-8\r\nDate: D\r\nContent-Length: 14\r\n\r\n404 Not Found\n"
        );
        assert_eq!((response.status(), response.body_bytes()), (Some(404), 14));
    }
}
