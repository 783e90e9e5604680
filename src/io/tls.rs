//! TLS over a client's socket: rustls' unbuffered server connection between the socket and
//! the connection's input and output. [`Client`] is what a worker's connections run over: a
//! plain socket, or TLS on one.
//!
//! shoal holds every buffer itself (rustls' buffered API keeps a 4 KiB record buffer for the
//! life of each connection): records read off the socket wait in `incoming` only while one is
//! incomplete, records made wait in `outgoing` only until the socket takes them, and decrypted
//! bytes a read had no room for wait in `plaintext`. Each gives its allocation back to the
//! thread's spare pool as soon as it empties, so an idle TLS connection holds rustls' session
//! state alone.
//!
//! Reads take records off the socket until it would block, decrypt them and answer the
//! handshake as it goes; writes encrypt into `outgoing` (bounded, see [`PENDING_LIMIT`]) and
//! push records to the socket as far as it takes them. Records left over go out on the next
//! write, read or [`Transport::flush_pending`], so nothing waits on a readiness event that
//! will not come.

use std::cell::RefCell;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;

use super::buffers::BufferPool;
use super::client_hello::Sni;
use super::transport::Transport;
use super::Stream;

/// Encrypted bytes held for the socket, at most: past it, writes would block (a client that
/// does not read cannot grow it).
const PENDING_LIMIT: usize = 32 * 1024;
/// The plaintext of one record, at most.
const MAX_FRAGMENT: usize = 16 * 1024;
/// Room each read of the socket gets: a whole record of the largest size.
const READ_ROOM: usize = 16 * 1024 + 2048 + 5;
/// Unprocessed records held, at most: a handshake message may span records, up to the
/// 64 KiB rustls accepts; nothing legitimate needs more.
const INCOMING_LIMIT: usize = 64 * 1024 + READ_ROOM;

thread_local! {
    /// This thread's spare buffers for [`Held`] bytes (a worker is one thread).
    static SPARE: RefCell<BufferPool> = RefCell::new(BufferPool::default());
}

/// Bytes passing through TLS, `buf[start..end]`. The allocation goes back to the thread's
/// spare pool whenever the bytes are all taken, so an idle connection holds none.
#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Held {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// At least `min` bytes to write after the held ones; [`Held::filled`] says how many were.
    fn room(&mut self, min: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = SPARE.with(|spare| spare.borrow_mut().take());
        }
        if self.buf.len() - self.end < min && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            self.buf.resize((self.end + min).max(READ_ROOM), 0);
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written into [`Held::room`].
    fn filled(&mut self, n: usize) {
        self.end += n;
        if self.is_empty() {
            self.release();
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.room(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
    }

    /// The first `n` held bytes are done with.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.is_empty() {
            self.release();
        }
    }

    fn release(&mut self) {
        self.start = 0;
        self.end = 0;
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() > 0 {
            SPARE.with(|spare| spare.borrow_mut().give(buf));
        }
    }

    /// Writes what `make` produces after the held bytes, with the room it says it needs
    /// (`Err(Some(size))`) when the first try is short of it.
    fn append(&mut self, mut make: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>) -> io::Result<()> {
        let mut min = 0;
        loop {
            match make(self.room(min)) {
                Ok(n) => {
                    self.filled(n);
                    return Ok(());
                }
                Err(Some(needed)) if needed > min => min = needed,
                Err(_) => {
                    self.filled(0);
                    return Err(io::Error::other("rustls would not encode a record"));
                }
            }
        }
    }
}

/// How far processing the held records got.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// The handshake needs more records from the client.
    Handshaking,
    /// Every whole record is processed and the connection may send.
    Open,
    /// Both sides sent close_notify.
    Closed,
}

/// What to send once the connection may.
enum Outbound<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// TLS on a socket.
pub struct Tls {
    socket: Stream,
    tls: UnbufferedServerConnection,
    /// Records read off the socket and not processed yet: an incomplete one.
    incoming: Held,
    /// Records made and not on the socket yet.
    outgoing: Held,
    /// Decrypted bytes not read yet.
    plaintext: Held,
    /// The name the client asked for, from its first record.
    sni: Sni,
    /// The last read of the socket would have blocked: nothing more to read until an event.
    drained: bool,
    /// The peer closed its side (or the socket failed): no more records will come.
    ended: bool,
    /// Bytes pass as they are until [`Transport::begin_tls`]: a PROXY protocol header
    /// comes first.
    raw: bool,
}

impl Tls {
    pub fn new(socket: Stream, config: Arc<ServerConfig>) -> io::Result<Tls> {
        let tls = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Tls {
            socket,
            tls,
            incoming: Held::default(),
            outgoing: Held::default(),
            plaintext: Held::default(),
            sni: Sni::Incomplete,
            drained: false,
            ended: false,
            raw: false,
        })
    }

    /// TLS begins only after a PROXY protocol header, which passes as it is.
    pub fn after_proxy_header(mut self) -> Tls {
        self.raw = true;
        self
    }

    /// Runs rustls over the records held: keeps what they decrypt to in `plaintext`, queues
    /// the records it answers with in `outgoing`, and once the connection may send, encrypts
    /// `send` there too. Returns how far it got and how many bytes of `send` it took.
    fn process(&mut self, mut send: Outbound<'_>) -> io::Result<(Progress, usize)> {
        let mut taken = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(self.incoming.bytes_mut());
            let progress = match state {
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        self.plaintext.extend(record.payload);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut records)) => {
                    self.outgoing
                        .append(|out| records.encode(out).map_err(needed_to_encode))?;
                    None
                }
                // The records are in `outgoing`, in order, for the socket.
                Ok(ConnectionState::TransmitTlsData(records)) => {
                    records.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Progress::Handshaking),
                Ok(ConnectionState::PeerClosed) => {
                    self.ended = true;
                    None
                }
                Ok(ConnectionState::Closed) => Some(Progress::Closed),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    match std::mem::replace(&mut send, Outbound::Nothing) {
                        Outbound::Nothing => {}
                        Outbound::Data(bytes) => {
                            self.outgoing
                                .append(|out| traffic.encrypt(bytes, out).map_err(needed_to_encrypt))?;
                            taken = bytes.len();
                        }
                        Outbound::CloseNotify => self
                            .outgoing
                            .append(|out| traffic.queue_close_notify(out).map_err(needed_to_encrypt))?,
                    }
                    Some(Progress::Open)
                }
                // 0-RTT is off: no early data comes.
                Ok(_) => return Err(invalid_data("unexpected TLS state")),
                Err(e) => {
                    self.incoming.consume(discard);
                    return Err(self.fail(e));
                }
            };
            self.incoming.consume(discard);
            if let Some(progress) = progress {
                return Ok((progress, taken));
            }
        }
    }

    /// The connection failed: puts the alert rustls made on the socket as far as it goes (it
    /// tells the client why: plain HTTP, a bad record).
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        let UnbufferedStatus { discard, state } = self.tls.process_tls_records(self.incoming.bytes_mut());
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
            let _ = self
                .outgoing
                .append(|out| alert.encode(out).map_err(needed_to_encode));
        }
        self.incoming.consume(discard);
        let _ = self.push_records();
        invalid_data(error)
    }

    /// Encrypts as much of `bytes` into `outgoing` as [`PENDING_LIMIT`] leaves room for.
    fn encrypt(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = PENDING_LIMIT.saturating_sub(self.outgoing.len());
        if bytes.is_empty() {
            return Ok(0);
        }
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let (progress, taken) = self.process(Outbound::Data(&bytes[..bytes.len().min(room)]))?;
        match progress {
            Progress::Open => Ok(taken),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS is not open for writing",
            )),
        }
    }

    /// Takes records off the socket into `incoming`. `Ok(false)`: the socket has nothing more
    /// now.
    fn pull_records(&mut self) -> io::Result<bool> {
        if self.incoming.len() >= INCOMING_LIMIT {
            return Err(invalid_data("TLS handshake message over 64 KiB"));
        }
        let read = Transport::read(&mut self.socket, self.incoming.room(READ_ROOM));
        let more = match read {
            Ok(n) => {
                self.incoming.filled(n);
                self.ended |= n == 0;
                self.drained = false;
                true
            }
            Err(e) => {
                self.incoming.filled(0);
                match e.kind() {
                    io::ErrorKind::WouldBlock => self.drained = true,
                    io::ErrorKind::Interrupted => return Ok(true),
                    _ => {
                        self.ended = true;
                        return Err(e);
                    }
                }
                false
            }
        };
        if self.sni == Sni::Incomplete {
            self.sni = Sni::peek(self.incoming.bytes());
        }
        Ok(more)
    }

    /// Puts the records held on the socket, as far as it takes them.
    fn push_records(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            match Write::write(&mut self.socket, self.outgoing.bytes()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outgoing.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`Tls::push_records`], where a socket that takes no more is no error: what is left
    /// goes out later.
    fn push_what_fits(&mut self) -> io::Result<()> {
        match self.push_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.incoming.release();
        self.outgoing.release();
        self.plaintext.release();
    }
}

fn invalid_data(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The room an encoding needs, if that is what it lacked.
fn needed_to_encode(error: EncodeError) -> Option<usize> {
    match error {
        EncodeError::InsufficientSize(short) => Some(short.required_size),
        _ => None,
    }
}

fn needed_to_encrypt(error: EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(short) => Some(short.required_size),
        _ => None,
    }
}

impl Transport for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.raw {
            return Transport::read(&mut self.socket, buf);
        }
        loop {
            if !self.plaintext.is_empty() {
                let n = self.plaintext.len().min(buf.len());
                buf[..n].copy_from_slice(&self.plaintext.bytes()[..n]);
                self.plaintext.consume(n);
                return Ok(n);
            }
            // Closed without close_notify is the end all the same (HTTP frames its bodies).
            if self.ended {
                return Ok(0);
            }
            if !self.pull_records()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.process(Outbound::Nothing)?.0 == Progress::Closed {
                self.ended = true;
            }
            self.push_what_fits()?;
        }
    }

    fn write(&mut self, bytes: &[u8], _fin_follows: bool) -> io::Result<usize> {
        self.push_what_fits()?;
        let taken = self.encrypt(bytes)?;
        self.push_what_fits()?;
        Ok(taken)
    }

    /// Small pieces (a response head and a short body) are gathered into one record: one
    /// seal, and one write to the socket.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut pieces = bufs.iter().filter(|buf| !buf.is_empty()).peekable();
        let Some(first) = pieces.next() else {
            return Ok(0);
        };
        if first.len() >= MAX_FRAGMENT || pieces.peek().is_none() {
            return Transport::write(self, first, false);
        }
        let mut record = [0u8; MAX_FRAGMENT];
        let mut gathered = 0;
        for piece in std::iter::once(first).chain(pieces) {
            let n = piece.len().min(MAX_FRAGMENT - gathered);
            record[gathered..gathered + n].copy_from_slice(&piece[..n]);
            gathered += n;
            if gathered == MAX_FRAGMENT {
                break;
            }
        }
        Transport::write(self, &record[..gathered], false)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.raw {
            let _ = self.process(Outbound::CloseNotify);
            let _ = self.push_records();
        }
        self.socket.shutdown_write()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        self.push_records()?;
        match self.outgoing.is_empty() {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn holds_input(&self) -> bool {
        !self.raw && (!self.plaintext.is_empty() || (!self.drained && !self.ended))
    }

    fn begin_tls(&mut self, received: &[u8]) -> io::Result<bool> {
        if !self.raw {
            return Ok(false);
        }
        self.raw = false;
        if !received.is_empty() {
            self.incoming.extend(received);
            self.sni = Sni::peek(self.incoming.bytes());
            self.process(Outbound::Nothing)?;
            self.push_what_fits()?;
        }
        Ok(true)
    }
}

/// A client's connection: a plain socket, or TLS on one.
pub enum Client {
    Plain(Stream),
    Tls(Box<Tls>),
}

impl Transport for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::read(socket, buf),
            Client::Tls(tls) => tls.read(buf),
        }
    }

    fn write(&mut self, bytes: &[u8], fin_follows: bool) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::write(socket, bytes, fin_follows),
            Client::Tls(tls) => tls.write(bytes, fin_follows),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::write_vectored(socket, bufs),
            Client::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Client::Plain(socket) => socket.shutdown_write(),
            Client::Tls(tls) => tls.shutdown_write(),
        }
    }

    fn can_sendfile(&self) -> bool {
        matches!(self, Client::Plain(_))
    }

    fn sendfile(&mut self, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
        match self {
            Client::Plain(socket) => Transport::sendfile(socket, file, offset, len),
            Client::Tls(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn holds_input(&self) -> bool {
        match self {
            Client::Plain(_) => false,
            Client::Tls(tls) => tls.holds_input(),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Client::Plain(_) => Ok(()),
            Client::Tls(tls) => tls.flush_pending(),
        }
    }

    fn begin_tls(&mut self, received: &[u8]) -> io::Result<bool> {
        match self {
            Client::Plain(_) => Ok(false),
            Client::Tls(tls) => tls.begin_tls(received),
        }
    }

    fn secure(&self) -> bool {
        matches!(self, Client::Tls(_))
    }

    fn tls_session(&self) -> Option<(&'static str, &'static str)> {
        let Client::Tls(tls) = self else {
            return None;
        };
        let version = tls.tls.protocol_version()?.as_str()?;
        let suite = tls.tls.negotiated_cipher_suite()?.suite().as_str()?;
        Some((version, suite))
    }

    fn handshaking(&self) -> bool {
        matches!(self, Client::Tls(tls) if tls.tls.is_handshaking())
    }

    fn server_name(&self) -> Option<&str> {
        match self {
            Client::Plain(_) => None,
            Client::Tls(tls) => tls.sni.name(),
        }
    }
}

impl mio::event::Source for Client {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket().deregister(registry)
    }
}

impl Client {
    fn socket(&mut self) -> &mut Stream {
        match self {
            Client::Plain(socket) => socket,
            Client::Tls(tls) => &mut tls.socket,
        }
    }
}

#[cfg(test)]
mod tests;
