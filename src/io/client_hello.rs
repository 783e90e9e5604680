//! The server name (SNI) a TLS client asks for, read from its ClientHello before rustls takes
//! it: rustls' unbuffered server connection, which shoal drives, does not tell it.
//!
//! Only a ClientHello whole in the first record is read (every client sends it so; the
//! largest, with post-quantum key shares, are under 2 KiB). A hello split over records counts
//! as one without a name, which routes by Host alone.

/// What the first bytes of a TLS connection say about the name asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Sni {
    /// The first record has not all arrived yet.
    Incomplete,
    /// No name: none sent, or not a ClientHello in one record.
    Absent,
    /// The host name asked for, in lower case.
    Name(Box<str>),
}

impl Sni {
    /// Reads the name from `bytes`, the first bytes the client sent.
    pub fn peek(bytes: &[u8]) -> Sni {
        let mut input = Reader(bytes);
        let Some(header) = input.take(5) else {
            return Sni::Incomplete;
        };
        const HANDSHAKE: u8 = 22;
        if header[0] != HANDSHAKE {
            return Sni::Absent;
        }
        let length = u16::from_be_bytes([header[3], header[4]]) as usize;
        match input.take(length) {
            None => Sni::Incomplete,
            Some(record) => match client_hello_name(Reader(record)) {
                Some(Some(name)) => Sni::Name(name),
                _ => Sni::Absent,
            },
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Sni::Name(name) => Some(name),
            Sni::Incomplete | Sni::Absent => None,
        }
    }
}

/// The host name in the ClientHello that fills `record`: `None` if it is not one,
/// `Some(None)` if it has no server_name extension.
fn client_hello_name(mut record: Reader<'_>) -> Option<Option<Box<str>>> {
    const CLIENT_HELLO: u8 = 1;
    if record.u8()? != CLIENT_HELLO {
        return None;
    }
    let length = record.u24()?;
    let mut hello = Reader(record.take(length)?);
    hello.take(2 + 32)?; // version, random
    hello.skip_u8_prefixed()?; // session id
    hello.skip_u16_prefixed()?; // cipher suites
    hello.skip_u8_prefixed()?; // compression methods
    if hello.0.is_empty() {
        return Some(None);
    }
    let mut extensions = hello.u16_prefixed()?;
    while !extensions.0.is_empty() {
        const SERVER_NAME: u16 = 0;
        let kind = extensions.u16()?;
        let body = extensions.u16_prefixed()?;
        if kind == SERVER_NAME {
            return host_name(body).map(Some);
        }
    }
    Some(None)
}

/// The first host_name entry of a server_name extension.
fn host_name(mut body: Reader<'_>) -> Option<Box<str>> {
    const HOST_NAME: u8 = 0;
    let mut list = body.u16_prefixed()?;
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.u16_prefixed()?.0;
        if kind == HOST_NAME {
            let name = std::str::from_utf8(name).ok()?;
            return Some(name.to_ascii_lowercase().into_boxed_str());
        }
    }
    None
}

/// Big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        let bytes = self.take(3)?;
        Some(usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]))
    }

    fn u16_prefixed(&mut self) -> Option<Reader<'a>> {
        let length = self.u16()?;
        Some(Reader(self.take(usize::from(length))?))
    }

    fn skip_u8_prefixed(&mut self) -> Option<()> {
        let length = self.u8()?;
        self.take(usize::from(length)).map(drop)
    }

    fn skip_u16_prefixed(&mut self) -> Option<()> {
        self.u16_prefixed().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;

    /// The first flight of a real client (rustls') asking for `name`, IP addresses send none.
    fn client_hello(name: &str) -> Vec<u8> {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned()).expect("a server name");
        let mut client = ClientConnection::new(Arc::new(config), name).expect("a client");
        let mut hello = Vec::new();
        client.write_tls(&mut hello).expect("the client hello");
        hello
    }

    #[test]
    fn reads_the_name_a_client_asks_for() {
        let hello = client_hello("Shop.Example.COM");
        assert_eq!(Sni::peek(&hello), Sni::Name("shop.example.com".into()));
        assert_eq!(Sni::peek(&hello).name(), Some("shop.example.com"));
    }

    #[test]
    fn waits_for_the_whole_first_record() {
        let hello = client_hello("example.com");
        for cut in [0, 3, 5, hello.len() / 2, hello.len() - 1] {
            assert_eq!(Sni::peek(&hello[..cut]), Sni::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn no_name_without_the_extension_or_a_client_hello() {
        assert_eq!(
            Sni::peek(&client_hello("127.0.0.1")),
            Sni::Absent,
            "no SNI for an IP"
        );
        assert_eq!(Sni::peek(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Sni::Absent);
        let mut hello = client_hello("example.com");
        hello[5] = 2; // a ServerHello, not a ClientHello
        assert_eq!(Sni::peek(&hello), Sni::Absent);
    }

    #[test]
    fn survives_every_truncated_length_field() {
        let hello = client_hello("example.com");
        for i in 5..hello.len() {
            let mut broken = hello.clone();
            broken[i] = 0xff;
            let _ = Sni::peek(&broken);
        }
    }
}
