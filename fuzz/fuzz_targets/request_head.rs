//! Request heads and their framing decision: `http::request::parse` on arbitrary bytes, and a
//! chunked body behind a head that chose chunked framing.
//!
//! Oracles beyond "no panic": every slice of a parsed head lies inside the head; the head
//! parses the same from exactly its own bytes; proper prefixes of a complete head are
//! "incomplete", never an error or another head (a request split across reads is read the
//! same); a chunked body decodes the same whole and split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::config::Limits;
use shoal::http::chunked::{ChunkedDecoder, ChunkedError};
use shoal::http::request::{self, Framing, RequestHead};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(Some(head)) = request::parse(data, &limits) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= limits.max_header_bytes);
    let own = &data[..head.len];
    for slice in slices(&head) {
        let _ = slice.of(own);
    }
    let again = request::parse(own, &limits)
        .expect("same bytes, same verdict")
        .expect("complete");
    assert_eq!(format!("{head:?}"), format!("{again:?}"));
    for cut in cuts(data, head.len) {
        assert!(
            matches!(request::parse(&own[..cut], &limits), Ok(None)),
            "prefix of {cut} bytes of a complete head is not incomplete"
        );
    }
    if head.framing == Framing::Chunked {
        let body = &data[head.len..];
        let whole = decode(body, &[]);
        let split = decode(body, &cuts(data, body.len()));
        assert_eq!(whole, split, "chunked body decodes differently when split");
    }
});

fn slices(head: &RequestHead) -> impl Iterator<Item = request::Slice> {
    let optional = [
        head.host,
        head.if_match,
        head.if_unmodified_since,
        head.if_none_match,
        head.if_modified_since,
        head.range,
        head.if_range,
        head.accept_encoding,
        head.referer,
        head.user_agent,
    ];
    [head.method_name, head.target]
        .into_iter()
        .chain(optional.into_iter().flatten())
}

/// A few cut points in `1..len`, chosen by the input itself.
fn cuts(data: &[u8], len: usize) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    let mut hash = data.len();
    let mut points: Vec<usize> = data
        .iter()
        .step_by(7)
        .take(4)
        .map(|&b| {
            hash = hash.wrapping_mul(31).wrapping_add(usize::from(b));
            1 + hash % (len - 1)
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// Feeds `body` to a decoder in pieces cut at `cuts`: (outcome, consumed, decoded bytes).
fn decode(body: &[u8], cuts: &[usize]) -> (Result<bool, ChunkedError>, usize, Vec<u8>) {
    let mut decoder = ChunkedDecoder::new();
    let mut decoded = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([body.len()]) {
        match decoder.feed(&body[start..end], |data| decoded.extend_from_slice(data)) {
            Ok(feed) => {
                consumed += feed.consumed;
                if feed.done {
                    return (Ok(true), consumed, decoded);
                }
                assert_eq!(
                    feed.consumed,
                    end - start,
                    "an unfinished body must take every byte"
                );
            }
            Err(e) => return (Err(e), 0, decoded),
        }
        start = end;
    }
    (Ok(false), consumed, decoded)
}
