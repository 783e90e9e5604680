//! The client's address behind trusted proxies (nginx's `set_real_ip_from` with
//! `real_ip_recursive on`): for logs, `X-Real-IP`, hashing and allow-lists.

use std::net::{IpAddr, SocketAddr};

use crate::config::cidr::Cidr;
use crate::http::request::{trim, RequestHead};

/// Who sent the request: the peer, unless it is a trusted proxy; then the rightmost
/// `X-Forwarded-For` entry that is not one (the leftmost when all are). An entry that is no
/// address ends the walk at the last one that was.
pub fn client_ip(peer: IpAddr, head: &RequestHead, buf: &[u8], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| is_trusted(ip, trusted);
    if !is_trusted(peer) {
        return peer;
    }
    let lines: Vec<&[u8]> = head.fields_named(buf, "x-forwarded-for").collect();
    let entries = lines.iter().rev().flat_map(|line| line.rsplit(|&b| b == b','));
    let mut client = peer;
    for entry in entries.map(trim).filter(|entry| !entry.is_empty()) {
        let Some(ip) = address(entry) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// Whether `ip` is one of the `trusted` proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|range| range.contains(ip))
}

/// An X-Forwarded-For entry: an address, maybe with a port (`1.2.3.4:80`, `[::1]:80`).
fn address(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, HeadLimits};

    fn client(peer: &str, forwarded: &[&str]) -> String {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for line in forwarded {
            text.push_str(&format!("X-Forwarded-For: {line}\r\n"));
        }
        text.push_str("\r\n");
        let head = request::parse(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        let trusted = [
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("127.0.0.1").unwrap(),
        ];
        client_ip(peer.parse().unwrap(), &head, text.as_bytes(), &trusted).to_string()
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        assert_eq!(
            client("203.0.113.9", &["6.6.6.6"]),
            "203.0.113.9",
            "an untrusted peer"
        );
        assert_eq!(client("10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, 198.51.100.7, 10.0.0.5"]),
            "198.51.100.7"
        );
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6", "198.51.100.7:4000", "10.0.0.5"]),
            "198.51.100.7"
        );
        assert_eq!(
            client("127.0.0.1", &["10.1.1.1, 10.2.2.2"]),
            "10.1.1.1",
            "all trusted: the leftmost"
        );
        assert_eq!(client("10.0.0.2", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(
            client("10.0.0.2", &["6.6.6.6, junk, 10.0.0.7"]),
            "10.0.0.7",
            "the walk ends at junk"
        );
        let skipped = client("10.0.0.2", &["198.51.100.7, , 10.0.0.5,"]);
        assert_eq!(skipped, "198.51.100.7", "empty entries are skipped");
    }
}
