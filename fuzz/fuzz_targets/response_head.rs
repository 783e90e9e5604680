//! Upstream response heads (`proxy::response`): parsed from arbitrary bytes, relayed as a head
//! value, then framed and written for an HTTP/1.1 and an HTTP/1.0 client by the pipeline's
//! responder (the one place heads become bytes).
//!
//! The first input byte says whether the request was HEAD. Oracles beyond "no panic": a head
//! never exceeds the bytes given nor the size limit; proper prefixes of a complete head are
//! "incomplete"; and the head shoal writes for the client parses again, with exactly the
//! framing shoal chose for it (one of Content-Length, chunked or close, never two).
#![no_main]

use std::io::{self, IoSlice};

use libfuzzer_sys::fuzz_target;
use shoal::http::request::{self, HeadLimits};
use shoal::http::respond::Respond;
use shoal::http::response::{Persistence, ResponseHead};
use shoal::io::{Output, Transport};
use shoal::pipeline::respond::{Reply, Responder, Response};
use shoal::proxy::response::{self, UpstreamBody};

/// Takes every byte written.
#[derive(Default)]
struct Collect(Vec<u8>);

impl Transport for Collect {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
    fn write(&mut self, bytes: &[u8], _: bool) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        bufs.iter().map(|b| self.write(b, false)).sum()
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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
    let method = if was_head { "HEAD" } else { "GET" };
    for version in ["1.1", "1.0"] {
        let text = format!("{method} / HTTP/{version}\r\nHost: h\r\n\r\n");
        let request = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let mut response = Response::to(&request, Persistence::KeepAlive);
        let mut output = Output::default();
        let mut scratch = ResponseHead::default();
        let mut responder = Responder::local(Reply {
            response: &mut response,
            output: &mut output,
            head: &mut scratch,
            date: b"Thu, 01 Jan 1970 00:00:00 GMT",
        });
        response::relay_head(data, &head, responder.head());
        responder.send_head();
        let mut client = Collect::default();
        output.flush(&mut client, false).unwrap();
        let out = client.0;
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
        let expected = match head.body {
            _ if head.status == 101 => UpstreamBody::None,
            UpstreamBody::Chunked | UpstreamBody::UntilClose if version == "1.1" => UpstreamBody::Chunked,
            UpstreamBody::Chunked | UpstreamBody::UntilClose => UpstreamBody::UntilClose,
            other => other,
        };
        assert_eq!(relayed.body, expected, "{:?}", String::from_utf8_lossy(&out));
    }
});
