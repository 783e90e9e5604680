//! [`Tls`] against rustls' own client over a socket pair, one step at a time: what it holds
//! between requests, and how reads and writes of every size pass through it.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, SignatureScheme};

use super::*;

/// The client trusts any certificate: these tests are about the records, not the chain.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Both ends of one TLS connection: shoal's over a non-blocking socket, rustls' client over
/// the other end.
struct Pair {
    server: Tls,
    client: ClientConnection,
    socket: UnixStream,
    /// Plaintext the client received.
    received: Vec<u8>,
}

impl Pair {
    fn new(name: &str) -> Pair {
        let chain =
            vec![CertificateDer::from_pem_slice(include_bytes!("localhost.pem")).expect("the certificate")];
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("localhost.key")).expect("the key");
        let server_config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a server config");
        let client_config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth();
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        theirs.set_nonblocking(true).expect("non-blocking");
        let socket = Stream::Unix(mio::net::UnixStream::from_std(ours));
        let name = ServerName::try_from(name.to_owned()).expect("a server name");
        Pair {
            server: Tls::new(socket, Arc::new(server_config)).expect("a server connection"),
            client: ClientConnection::new(Arc::new(client_config), name).expect("a client"),
            socket: theirs,
            received: Vec::new(),
        }
    }

    /// Moves records both ways until neither side has more to say; returns the plaintext
    /// the server read, read `chunk` bytes at a time.
    fn pump(&mut self, chunk: usize) -> Vec<u8> {
        let mut read = Vec::new();
        let mut buf = vec![0; chunk];
        for _ in 0..64 {
            while self.client.wants_write() {
                self.client
                    .write_tls(&mut self.socket)
                    .expect("the client writes");
            }
            loop {
                match self.server.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("the server failed to read: {e}"),
                }
            }
            let _ = self.server.flush_pending();
            match self.client.read_tls(&mut self.socket) {
                Ok(_) => {
                    self.client
                        .process_new_packets()
                        .expect("the client takes the records");
                    self.take_plaintext();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !self.client.wants_write() && !self.server.holds_input() {
                        break;
                    }
                }
                Err(e) => panic!("the client failed to read: {e}"),
            }
        }
        read
    }

    fn take_plaintext(&mut self) {
        match self.client.reader().read_to_end(&mut self.received) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the client's reader: {other:?}"),
        }
    }

    /// The plaintext the client has received since the last call.
    fn client_received(&mut self) -> Vec<u8> {
        self.take_plaintext();
        std::mem::take(&mut self.received)
    }

    /// True when the server holds no buffer: what an idle connection should cost.
    fn server_holds_nothing(&self) -> bool {
        [
            &self.server.incoming,
            &self.server.outgoing,
            &self.server.plaintext,
        ]
        .iter()
        .all(|held| held.buf.capacity() == 0)
    }
}

#[test]
fn an_idle_connection_holds_no_buffer() {
    let mut pair = Pair::new("shop.example.com");
    pair.pump(4096);
    assert!(!pair.client.is_handshaking(), "the handshake completes");
    assert!(!pair.server.tls.is_handshaking());
    assert_eq!(pair.server.sni.name(), Some("shop.example.com"));
    assert!(pair.server_holds_nothing(), "nothing held after the handshake");

    pair.client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("the request");
    assert_eq!(pair.pump(4096), b"GET / HTTP/1.1\r\n\r\n");
    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(
        Transport::write(&mut pair.server, response, false).expect("the response"),
        response.len()
    );
    pair.pump(4096);
    assert_eq!(pair.client_received(), response);
    assert!(pair.server_holds_nothing(), "nothing held between requests");
}

#[test]
fn a_small_read_takes_the_rest_on_the_next_one() {
    let mut pair = Pair::new("localhost");
    pair.pump(4096);
    let request: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    pair.client.writer().write_all(&request).expect("the request");
    assert_eq!(
        pair.pump(7),
        request,
        "read 7 bytes at a time, nothing lost or reordered"
    );
    assert!(pair.server_holds_nothing());
}

#[test]
fn writes_stop_at_the_pending_limit_until_the_client_reads() {
    let mut pair = Pair::new("localhost");
    pair.pump(4096);
    let body = vec![b'x'; 4 * 1024 * 1024];
    let mut written = 0;
    loop {
        match Transport::write(&mut pair.server, &body[written..], false) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("the server failed to write: {e}"),
        }
    }
    assert!(
        written < body.len(),
        "a client that does not read stops the writes"
    );
    assert!(
        pair.server.outgoing.len() <= PENDING_LIMIT + 1024,
        "held {}",
        pair.server.outgoing.len()
    );

    let mut received = pair.client_received();
    while written < body.len() {
        let before = received.len();
        if let Ok(n) = Transport::write(&mut pair.server, &body[written..], false) {
            written += n;
        }
        pair.pump(4096);
        received.extend(pair.client_received());
        assert!(received.len() > before, "every round moves bytes");
    }
    pair.pump(4096);
    received.extend(pair.client_received());
    assert_eq!(received.len(), body.len());
    assert!(received.iter().all(|&b| b == b'x'));
}

#[test]
fn close_notify_ends_the_stream_both_ways() {
    let mut pair = Pair::new("localhost");
    pair.pump(4096);
    pair.client.send_close_notify();
    pair.pump(4096);
    let mut buf = [0; 16];
    assert_eq!(
        pair.server.read(&mut buf).expect("the end"),
        0,
        "close_notify reads as the end"
    );
    pair.server.shutdown_write().expect("our close_notify and FIN");
    pair.client.read_tls(&mut pair.socket).expect("the client reads");
    let state = pair
        .client
        .process_new_packets()
        .expect("the client takes the records");
    assert!(state.peer_has_closed(), "the client saw our close_notify");
}
