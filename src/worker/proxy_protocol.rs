//! The PROXY protocol (HAProxy's, v1 text and v2 binary): the header a load balancer sends
//! before the client's bytes, naming the client's address. On a listen address marked
//! `proxy_protocol` every connection must start with one.
//!
//! Bounded: a v1 line is at most 107 bytes (the spec's), a v2 header at most
//! [`MAX_V2_BYTES`]; the connection's `header_timeout` bounds the wait for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

/// The v2 header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included.
const MAX_V1_BYTES: usize = 107;
/// The longest v2 header taken: 16 bytes, the addresses and some TLVs (a load balancer's
/// ids and the like; HAProxy's own limit is its buffer).
pub const MAX_V2_BYTES: usize = 16 + 1024;

/// A header read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length: the client's bytes start after it.
    pub len: usize,
    /// The client's address; none when the header names none (v1 `UNKNOWN`, a v2 `LOCAL`
    /// health check, a family other than TCP over IPv4 or IPv6): the peer's stands.
    pub source: Option<SocketAddr>,
}

/// Why a connection's first bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// They do not start like one.
    Missing,
    /// They start like one and break its rules (or its bounds).
    Malformed,
}

/// Logs the first connection a worker closes for its header (a balancer that does not send
/// one is a misconfiguration, and would otherwise fail silently); later ones at debug level.
pub fn log_refusal(refusal: Refusal, peer: SocketAddr) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let what = match refusal {
        Refusal::Missing => "no PROXY protocol header",
        Refusal::Malformed => "a malformed PROXY protocol header",
    };
    match LOGGED.swap(true, Ordering::Relaxed) {
        false => log::warn!(
            "closed a connection from {peer} that began with {what} (its address takes only \
             connections through a proxy that sends one; further ones are logged at debug level)"
        ),
        true => log::debug!("closed a connection from {peer} that began with {what}"),
    }
}

/// Reads the header at the start of `data`: `Ok(None)` while it may still be arriving.
pub fn parse(data: &[u8]) -> Result<Option<Header>, Refusal> {
    if data.len() >= V2_SIGNATURE.len() && data.starts_with(V2_SIGNATURE) {
        return parse_v2(data);
    }
    if V2_SIGNATURE.starts_with(data) || b"PROXY ".starts_with(data) {
        return Ok(None);
    }
    if data.starts_with(b"PROXY ") {
        return parse_v1(data);
    }
    Err(Refusal::Missing)
}

/// `PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n`, or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(data: &[u8]) -> Result<Option<Header>, Refusal> {
    let window = &data[..data.len().min(MAX_V1_BYTES)];
    let Some(end) = window.windows(2).position(|pair| pair == b"\r\n") else {
        return match data.len() >= MAX_V1_BYTES {
            true => Err(Refusal::Malformed),
            false => Ok(None),
        };
    };
    let len = end + 2;
    let line = std::str::from_utf8(&data[..end]).map_err(|_| Refusal::Malformed)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields[..] {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family, source, destination, source_port, destination_port] => {
            let ip: fn(&str) -> Result<IpAddr, Refusal> = match family {
                "TCP4" => v1_ip::<Ipv4Addr>,
                "TCP6" => v1_ip::<Ipv6Addr>,
                _ => return Err(Refusal::Malformed),
            };
            ip(destination)?;
            v1_port(destination_port)?;
            Some(SocketAddr::new(ip(source)?, v1_port(source_port)?))
        }
        _ => return Err(Refusal::Malformed),
    };
    Ok(Some(Header { len, source }))
}

fn v1_ip<A: std::str::FromStr + Into<IpAddr>>(text: &str) -> Result<IpAddr, Refusal> {
    text.parse::<A>().map(Into::into).map_err(|_| Refusal::Malformed)
}

/// A port as v1 writes it: decimal, no sign, no leading zero.
fn v1_port(text: &str) -> Result<u16, Refusal> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match canonical {
        true => text.parse().map_err(|_| Refusal::Malformed),
        false => Err(Refusal::Malformed),
    }
}

/// The signature, version and command, family and protocol, length, then the addresses.
fn parse_v2(data: &[u8]) -> Result<Option<Header>, Refusal> {
    let Some(fixed) = data.get(..16) else {
        return Ok(None);
    };
    let (version, command, family) = (fixed[12] >> 4, fixed[12] & 0x0f, fixed[13]);
    let len = 16 + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if version != 2 || command > 1 || len > MAX_V2_BYTES {
        return Err(Refusal::Malformed);
    }
    let Some(header) = data.get(..len) else {
        return Ok(None);
    };
    let addresses = &header[16..];
    // LOCAL: the balancer speaking for itself (a health check).
    if command == 0 {
        return Ok(Some(Header { len, source: None }));
    }
    let source = match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = addresses.get(..12).ok_or(Refusal::Malformed)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        // TCP over IPv6.
        0x21 => {
            let a = addresses.get(..36).ok_or(Refusal::Malformed)?;
            let ip: [u8; 16] = a[..16].try_into().expect("16 bytes");
            Some(SocketAddr::new(
                Ipv6Addr::from(ip).into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // Unspecified, UDP, unix: no client address to take.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => None,
        _ => return Err(Refusal::Malformed),
    };
    Ok(Some(Header { len, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[0x20 | command, family]);
        header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        header.extend_from_slice(addresses);
        header
    }

    fn source(data: &[u8]) -> Option<SocketAddr> {
        parse(data).unwrap().unwrap().source
    }

    #[test]
    fn v1_lines_name_the_client() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let header = parse(line).unwrap().unwrap();
        assert_eq!(header.len, 45);
        assert_eq!(header.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(
            source(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"),
            Some("[2001:db8::1]:1".parse().unwrap())
        );
        assert_eq!(source(b"PROXY UNKNOWN\r\n"), None);
        assert_eq!(source(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), None);
    }

    #[test]
    fn v1_waits_for_its_line_and_no_longer_than_the_spec_allows() {
        for part in [&b""[..], b"P", b"PROXY", b"PROXY TCP4 192.0.2.1 198.51.100.2 56"] {
            assert_eq!(parse(part), Ok(None), "{:?}", String::from_utf8_lossy(part));
        }
        let long = format!("PROXY TCP4 {}", "1".repeat(120));
        assert_eq!(parse(long.as_bytes()), Err(Refusal::Malformed));
    }

    #[test]
    fn v1_refuses_what_breaks_its_rules() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(Refusal::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn anything_else_is_missing_its_header() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Refusal::Missing));
        assert_eq!(parse(b"PROXX"), Err(Refusal::Missing));
        assert_eq!(parse(b"\r\n\r\nGET"), Err(Refusal::Missing));
    }

    #[test]
    fn v2_headers_name_the_client_or_leave_the_peer() {
        let mut tcp4 = v2(1, 0x11, &[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb]);
        tcp4.extend_from_slice(b"GET /");
        let header = parse(&tcp4).unwrap().unwrap();
        assert_eq!(header.len, 28);
        assert_eq!(header.source, Some("192.0.2.1:56324".parse().unwrap()));
        let mut addresses = vec![0; 36];
        addresses[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        addresses[32..34].copy_from_slice(&8080u16.to_be_bytes());
        // TLVs after the addresses are skipped.
        addresses.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']);
        assert_eq!(
            source(&v2(1, 0x21, &addresses)),
            Some("[2001:db8::7]:8080".parse().unwrap())
        );
        assert_eq!(source(&v2(0, 0x11, &[0; 12])), None, "LOCAL");
        assert_eq!(source(&v2(1, 0x00, &[])), None, "UNSPEC");
        assert_eq!(source(&v2(1, 0x31, &[0; 216])), None, "unix");
    }

    #[test]
    fn v2_waits_for_its_length_and_refuses_what_breaks_its_rules() {
        let whole = v2(1, 0x11, &[192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2]);
        for cut in [1, 12, 15, 16, 27] {
            assert_eq!(parse(&whole[..cut]), Ok(None), "{cut} bytes");
        }
        let mut version_one = whole.clone();
        version_one[12] = 0x11;
        assert_eq!(parse(&version_one), Err(Refusal::Malformed));
        let mut command_two = whole.clone();
        command_two[12] = 0x22;
        assert_eq!(parse(&command_two), Err(Refusal::Malformed));
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 8])),
            Err(Refusal::Malformed),
            "short addresses"
        );
        assert_eq!(
            parse(&v2(1, 0x41, &[0; 12])),
            Err(Refusal::Malformed),
            "unknown family"
        );
        let oversized = v2(1, 0x11, &vec![0; MAX_V2_BYTES]);
        assert_eq!(
            parse(&oversized[..16]),
            Err(Refusal::Malformed),
            "known oversized at once"
        );
    }
}
