//! Upstream response heads (`proxy::response`): parsed from arbitrary bytes, then rewritten
//! for the client.
//!
//! The first input byte says whether the request was HEAD. Oracles beyond "no panic": a head
//! never exceeds the bytes given nor the size limit; proper prefixes of a complete head are
//! "incomplete"; and the head shoal writes for the client parses again, with exactly the
//! framing shoal chose for it (one of Content-Length, chunked or close, never two).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal::http::response::Persistence;
use shoal::proxy::response::{self, ClientBody, UpstreamBody};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let was_head = flags & 1 == 1;
    let Ok(Some(head)) = response::parse(data, was_head) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= response::MAX_HEAD_BYTES);
    let cut = usize::from(flags >> 1) % head.len.max(1);
    if cut > 0 {
        assert_eq!(
            response::parse(&data[..cut], was_head),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }
    for client_http11 in [true, false] {
        let body = response::client_body(head.body, client_http11);
        let persistence = match body {
            ClientBody::UntilClose => Persistence::Close,
            _ => Persistence::KeepAlive,
        };
        let mut out = Vec::new();
        response::write_client_head(
            data,
            &head,
            body,
            persistence,
            b"Thu, 01 Jan 1970 00:00:00 GMT",
            &mut out,
        );
        // shoal adds up to three headers to the upstream's (at most 128): past 128 its own
        // parser would refuse the result, which says nothing about the framing.
        let header_lines = out.windows(2).filter(|pair| pair == b"\r\n").count() - 2;
        if header_lines > 128 {
            continue;
        }
        let relayed = match response::parse(&out, was_head) {
            Ok(Some(relayed)) => relayed,
            other => panic!(
                "shoal wrote a head it cannot read back ({other:?}): {:?}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(relayed.len, out.len());
        assert_eq!(relayed.status, head.status);
        let expected = match body {
            ClientBody::None => UpstreamBody::None,
            ClientBody::Length(n) => UpstreamBody::Length(n),
            ClientBody::Chunked => UpstreamBody::Chunked,
            ClientBody::UntilClose => UpstreamBody::UntilClose,
        };
        assert_eq!(relayed.body, expected, "{:?}", String::from_utf8_lossy(&out));
    }
});
