//! A test peer on loopback: a listener that accepts one connection at a time, and each
//! connection driven by the test (blocking, with a bound on every wait).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// How long a read waits before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// A listening socket on 127.0.0.1 (an upstream, for the code under test).
pub struct Listener(TcpListener);

impl Listener {
    /// Binds a fresh port.
    pub fn bind() -> Listener {
        Listener(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    /// Takes the next connection (the code under test opened it already).
    pub fn accept(&self) -> Peer {
        let (stream, _) = self.0.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Peer(stream)
    }

    /// The next connection if one is waiting now (the code under test opened one), without
    /// waiting for it.
    pub fn try_accept(&self) -> Option<Peer> {
        self.0.set_nonblocking(true).unwrap();
        let accepted = self.0.accept().ok();
        self.0.set_nonblocking(false).unwrap();
        accepted.map(|(stream, _)| {
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            Peer(stream)
        })
    }
}

/// One accepted connection.
pub struct Peer(pub TcpStream);

impl Peer {
    /// Reads until `what` has arrived; returns everything read.
    pub fn read_until(&mut self, what: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(what) {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("peer read: {e} after {:?}", String::from_utf8_lossy(&got)),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }
}
