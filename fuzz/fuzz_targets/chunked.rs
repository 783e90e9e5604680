//! The chunked decoder (`http::chunked`) on arbitrary bytes, whole and split.
//!
//! The first input byte picks where the rest is split. Oracles beyond "no panic": the same
//! verdict, consumed count and decoded bytes whole or split; an unfinished body takes every
//! byte offered; nothing past the message end is consumed (decoding exactly the consumed
//! bytes finishes too); the decoded length is `body_bytes()`; and re-encoding the decoded body
//! decodes back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::http::chunked::{ChunkedDecoder, ChunkedError};

#[derive(Debug, PartialEq)]
struct Outcome {
    verdict: Result<bool, ChunkedError>,
    consumed: usize,
    decoded: Vec<u8>,
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = decode(data, &[]);
    let cuts = cuts(seed, data.len());
    let split = decode(data, &cuts);
    assert_eq!(whole, split, "split at {cuts:?}");
    if whole.verdict == Ok(true) {
        assert!(whole.consumed <= data.len());
        let exact = decode(&data[..whole.consumed], &[]);
        assert_eq!(exact, whole, "the message end depends on bytes after it");
        let mut encoded = format!("{:x}\r\n", whole.decoded.len()).into_bytes();
        encoded.extend_from_slice(&whole.decoded);
        encoded.extend_from_slice(b"\r\n0\r\n\r\n");
        // (An empty body encodes as two final chunks; the first one ends the message.)
        let roundtrip = decode(&encoded, &[]);
        assert_eq!(roundtrip.verdict, Ok(true));
        assert_eq!(roundtrip.decoded, whole.decoded);
    }
});

/// Cut points derived from `seed`: every `seed % 17 + 1` bytes, at most 64 pieces.
fn cuts(seed: u8, len: usize) -> Vec<usize> {
    let step = usize::from(seed % 17) + 1;
    (1..len).step_by(step).take(64).collect()
}

fn decode(data: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new();
    let mut decoded = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([data.len()]) {
        match decoder.feed(&data[start..end], |part| decoded.extend_from_slice(part)) {
            Ok(feed) => {
                assert!(feed.consumed <= end - start);
                consumed += feed.consumed;
                if feed.done {
                    assert_eq!(decoder.body_bytes(), decoded.len() as u64);
                    return Outcome {
                        verdict: Ok(true),
                        consumed,
                        decoded,
                    };
                }
                assert_eq!(
                    feed.consumed,
                    end - start,
                    "an unfinished body must take every byte"
                );
            }
            Err(e) => {
                // Errors are sticky.
                assert_eq!(decoder.feed(b"0\r\n\r\n", |_| {}), Err(e));
                return Outcome {
                    verdict: Err(e),
                    consumed: 0,
                    decoded: Vec::new(),
                };
            }
        }
        start = end;
    }
    assert_eq!(decoder.body_bytes(), decoded.len() as u64);
    Outcome {
        verdict: Ok(false),
        consumed,
        decoded,
    }
}
