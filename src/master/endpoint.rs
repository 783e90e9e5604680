//! Operator endpoints served from the master's loop (the control socket, the admin HTTP
//! listener): one request per connection, answered, then closed. An answer may also come
//! later: the client then waits, parked, until the master settles what it waits for (the
//! outcome of a reload) and the answer is written from the loop like any other.
//!
//! The master must never block, so everything here is non-blocking and bounded: request
//! bytes, simultaneous clients, accepts per turn, and a deadline per client. A client that
//! is slow or silent is dropped at its deadline. When the endpoint is full, a newcomer
//! evicts the oldest client whose request is still incomplete, so connections that send a
//! byte and wait can never starve a probe (they churn among themselves); only while every
//! client has a complete request do new connections wait in the kernel's backlog.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

/// A listening socket an endpoint accepts from.
pub trait Listen: AsFd {
    type Stream: Read + Write + AsFd;
    /// Accepts one waiting connection, made non-blocking.
    fn accept_client(&self) -> io::Result<Self::Stream>;
}

impl Listen for UnixListener {
    type Stream = UnixStream;
    fn accept_client(&self) -> io::Result<UnixStream> {
        let (stream, _) = self.accept()?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    }
}

impl Listen for TcpListener {
    type Stream = std::net::TcpStream;
    fn accept_client(&self) -> io::Result<std::net::TcpStream> {
        let (stream, _) = self.accept()?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    }
}

/// Connections accepted in one turn at most, so a connect flood cannot hold the master.
const MAX_ACCEPTS_PER_TURN: usize = 64;

/// Bounds on an endpoint's clients.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// A request is answered once it is complete or this long, whichever comes first.
    pub max_request_bytes: usize,
    /// Connections served at once; more wait in the backlog.
    pub max_clients: usize,
    /// Time from accept to the last byte of the answer.
    pub deadline: Duration,
    /// Time a client told to wait ([`Answer::Later`]) may wait for its answer, from then to
    /// its last byte.
    pub await_deadline: Duration,
}

/// What the master makes of a whole request.
pub enum Answer<P> {
    /// These bytes, sent now.
    Now(Vec<u8>),
    /// Nothing yet: the client waits until `P` is settled ([`Endpoint::settle`]).
    Later(P),
}

/// Where a client is.
enum Stage<P> {
    Reading,
    /// Waiting for the master to settle `P`; polled only to notice a client that hangs up.
    Awaiting(P),
    Writing {
        written: usize,
    },
}

/// What reading a request found.
enum Arrival {
    /// Complete, at the size bound, or the client finished sending: answer it.
    Whole,
    /// More may come.
    Partial,
    /// The client left before saying anything, or the socket failed.
    Gone,
}

struct Client<S, P> {
    stream: S,
    /// The request while reading, then the answer.
    buf: Vec<u8>,
    stage: Stage<P>,
    deadline: Instant,
}

/// A listener and its clients; `P` names what a parked client waits for (the admin
/// endpoint never parks one: `Infallible`).
pub struct Endpoint<L: Listen, P = std::convert::Infallible> {
    listener: L,
    bounds: Bounds,
    /// True once the bytes read hold a whole request.
    complete: fn(&[u8]) -> bool,
    clients: Vec<Client<L::Stream, P>>,
}

impl<L: Listen, P: Copy + PartialEq> Endpoint<L, P> {
    /// An endpoint on a non-blocking `listener`.
    pub fn new(listener: L, bounds: Bounds, complete: fn(&[u8]) -> bool) -> Endpoint<L, P> {
        Endpoint {
            listener,
            bounds,
            complete,
            clients: Vec::new(),
        }
    }

    /// The listening socket.
    pub fn listener(&self) -> &L {
        &self.listener
    }

    /// True when a newcomer can be taken: room, or an incomplete request to evict.
    fn can_take(&self) -> bool {
        self.clients.len() < self.bounds.max_clients
            || self.clients.iter().any(|c| matches!(c.stage, Stage::Reading))
    }

    /// What to wait for: new clients (while one can be taken), requests arriving (or parked
    /// clients hanging up), answers draining.
    pub fn poll_fds(&self) -> impl Iterator<Item = PollFd<'_>> {
        let accept = self
            .can_take()
            .then(|| PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        let clients = self.clients.iter().map(|c| {
            let flags = match c.stage {
                Stage::Reading | Stage::Awaiting(_) => PollFlags::POLLIN,
                Stage::Writing { .. } => PollFlags::POLLOUT,
            };
            PollFd::new(c.stream.as_fd(), flags)
        });
        accept.into_iter().chain(clients)
    }

    /// Answers every client waiting for `awaited` with `reply`, written at once as far as the
    /// socket takes it (the rest from the loop).
    pub fn settle(&mut self, awaited: P, reply: &[u8]) {
        self.clients.retain_mut(|client| {
            if !matches!(client.stage, Stage::Awaiting(p) if p == awaited) {
                return true;
            }
            client.buf = reply.to_vec();
            client.stage = Stage::Writing { written: 0 };
            client.write_out()
        });
    }

    /// Accepts, reads, answers and writes whatever can move now, without blocking; drops
    /// clients that are done, failed, or past their deadline. `answer` turns a request into
    /// the bytes to send back, or parks the client.
    pub fn serve(&mut self, now: Instant, mut answer: impl FnMut(&[u8]) -> Answer<P>) {
        let (bounds, complete) = (self.bounds, self.complete);
        // Clients already here move first, so a request that has arrived is read before any
        // client can be taken for an idle one and evicted.
        self.clients
            .retain_mut(|client| client.advance(now, &bounds, complete, &mut answer));
        for _ in 0..MAX_ACCEPTS_PER_TURN {
            if !self.can_take() {
                break;
            }
            match self.listener.accept_client() {
                Ok(stream) => {
                    if self.clients.len() >= self.bounds.max_clients {
                        self.evict_oldest_incomplete();
                    }
                    let mut client = Client {
                        stream,
                        buf: Vec::new(),
                        stage: Stage::Reading,
                        deadline: now + self.bounds.deadline,
                    };
                    // The request often comes with the connection: read it now, for the same
                    // reason.
                    if client.advance(now, &bounds, complete, &mut answer) {
                        self.clients.push(client);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: nobody waits. Anything else (a client that gave up, EMFILE):
                // try again next turn rather than spin here.
                Err(_) => break,
            }
        }
    }

    /// Drops (closes) the client accepted first among those still reading their request.
    fn evict_oldest_incomplete(&mut self) {
        if let Some(oldest) = self
            .clients
            .iter()
            .position(|c| matches!(c.stage, Stage::Reading))
        {
            self.clients.remove(oldest);
        }
    }
}

impl<S: Read + Write, P> Client<S, P> {
    /// Moves the client along; false once it should be dropped (which closes it).
    fn advance(
        &mut self,
        now: Instant,
        bounds: &Bounds,
        complete: fn(&[u8]) -> bool,
        answer: &mut impl FnMut(&[u8]) -> Answer<P>,
    ) -> bool {
        if now >= self.deadline {
            return false;
        }
        if let Stage::Awaiting(_) = self.stage {
            return self.still_there();
        }
        if let Stage::Reading = self.stage {
            match self.read_request(bounds.max_request_bytes, complete) {
                Arrival::Whole => match answer(&self.buf) {
                    Answer::Now(bytes) => {
                        self.buf = bytes;
                        self.stage = Stage::Writing { written: 0 };
                    }
                    Answer::Later(awaited) => {
                        self.buf = Vec::new();
                        self.stage = Stage::Awaiting(awaited);
                        self.deadline = now + bounds.await_deadline;
                        return true;
                    }
                },
                Arrival::Partial => return true,
                Arrival::Gone => return false,
            }
        }
        self.write_out()
    }

    /// Writes what is left of the answer; false once it is all written or the socket
    /// failed (either way the client is done), true while it is waiting or would block.
    fn write_out(&mut self) -> bool {
        let Stage::Writing { written } = &mut self.stage else {
            return true;
        };
        while *written < self.buf.len() {
            match self.stream.write(&self.buf[*written..]) {
                Ok(0) => return false,
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// A parked client sends nothing more: reads discard whatever it sends anyway, and its
    /// end of the stream means it gave up waiting.
    fn still_there(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn read_request(&mut self, max_bytes: usize, complete: fn(&[u8]) -> bool) -> Arrival {
        let mut chunk = [0u8; 1024];
        loop {
            let room = max_bytes.saturating_sub(self.buf.len()).min(chunk.len());
            if room == 0 {
                return Arrival::Whole;
            }
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) if self.buf.is_empty() => return Arrival::Gone,
                Ok(0) => return Arrival::Whole,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if complete(&self.buf) {
                        return Arrival::Whole;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Arrival::Partial,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Arrival::Gone,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_complete(buf: &[u8]) -> bool {
        buf.contains(&b'\n')
    }

    fn endpoint(dir: &std::path::Path, bounds: Bounds) -> Endpoint<UnixListener, u8> {
        let listener = UnixListener::bind(dir.join("s")).unwrap();
        listener.set_nonblocking(true).unwrap();
        Endpoint::new(listener, bounds, line_complete)
    }

    const BOUNDS: Bounds = Bounds {
        max_request_bytes: 16,
        max_clients: 2,
        deadline: Duration::from_secs(1),
        await_deadline: Duration::from_secs(10),
    };

    fn at_once(bytes: &[u8]) -> Answer<u8> {
        Answer::Now(bytes.to_vec())
    }

    #[test]
    fn answers_a_whole_request_then_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoint = endpoint(dir.path(), BOUNDS);
        let mut client = UnixStream::connect(dir.path().join("s")).unwrap();
        client.write_all(b"ping\n").unwrap();
        endpoint.serve(Instant::now(), |request| at_once(&[b"got ", request].concat()));
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "got ping\n");
        assert_eq!(endpoint.clients.len(), 0);
    }

    #[test]
    fn a_partial_request_waits_and_an_oversized_one_is_cut_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoint = endpoint(dir.path(), BOUNDS);
        let mut slow = UnixStream::connect(dir.path().join("s")).unwrap();
        slow.write_all(b"pi").unwrap();
        let mut big = UnixStream::connect(dir.path().join("s")).unwrap();
        big.write_all(&[b'x'; 40]).unwrap();
        let mut seen = Vec::new();
        endpoint.serve(Instant::now(), |request| {
            seen.push(request.len());
            at_once(b"no\n")
        });
        assert_eq!(
            seen,
            [16],
            "the big request is answered at the bound, the slow one waits"
        );
        assert_eq!(endpoint.clients.len(), 1);
    }

    #[test]
    fn clients_past_their_deadline_are_dropped_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoint = endpoint(dir.path(), BOUNDS);
        let _silent: Vec<UnixStream> = (0..2)
            .map(|_| UnixStream::connect(dir.path().join("s")).unwrap())
            .collect();
        let now = Instant::now();
        endpoint.serve(now, |_| at_once(b""));
        assert_eq!(endpoint.clients.len(), 2);
        endpoint.serve(now + Duration::from_secs(2), |_| at_once(b""));
        assert_eq!(endpoint.clients.len(), 0, "dropped at the deadline");
    }

    #[test]
    fn a_newcomer_evicts_the_oldest_incomplete_request_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoint = endpoint(dir.path(), BOUNDS);
        let connect = || UnixStream::connect(dir.path().join("s")).unwrap();
        let mut silent: Vec<UnixStream> = (0..5).map(|_| connect()).collect();
        for stream in &mut silent {
            stream.write_all(b"p").unwrap();
        }
        let now = Instant::now();
        endpoint.serve(now, |_| at_once(b"late\n"));
        assert_eq!(endpoint.clients.len(), 2, "at most max_clients at once");
        let mut buf = [0u8; 8];
        let closed = match silent[0].read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "the oldest were closed");
        let mut probe = connect();
        probe.write_all(b"ping\n").unwrap();
        endpoint.serve(now, |request| at_once(&[b"got ", request].concat()));
        let mut answer = String::new();
        probe.read_to_string(&mut answer).unwrap();
        assert_eq!(
            answer, "got ping\n",
            "the probe is served despite the silent ones"
        );
    }

    #[test]
    fn a_full_endpoint_of_complete_requests_leaves_newcomers_in_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoint = endpoint(dir.path(), BOUNDS);
        // Clients that never read: their answers stay pending (a huge answer fills the socket).
        let streams: Vec<UnixStream> = (0..2)
            .map(|_| {
                let mut s = UnixStream::connect(dir.path().join("s")).unwrap();
                s.write_all(b"big\n").unwrap();
                s
            })
            .collect();
        endpoint.serve(Instant::now(), |_| Answer::Now(vec![b'x'; 4 << 20]));
        assert_eq!(endpoint.clients.len(), 2);
        assert_eq!(
            endpoint.poll_fds().count(),
            2,
            "nothing to evict: the listener is not polled"
        );
        let _waiting = UnixStream::connect(dir.path().join("s")).unwrap();
        endpoint.serve(Instant::now(), |_| at_once(b""));
        assert_eq!(endpoint.clients.len(), 2, "the newcomer waits in the backlog");
        drop(streams);
    }

    #[test]
    fn a_parked_client_waits_unpolled_until_what_it_awaits_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoint = endpoint(dir.path(), BOUNDS);
        let connect = || UnixStream::connect(dir.path().join("s")).unwrap();
        let (mut one, mut two) = (connect(), connect());
        one.write_all(b"wait 1\n").unwrap();
        two.write_all(b"wait 2\n").unwrap();
        let start = Instant::now();
        endpoint.serve(start, |request| Answer::Later(request[5] - b'0'));
        assert_eq!(endpoint.clients.len(), 2);
        assert_eq!(
            endpoint.poll_fds().count(),
            2,
            "full of parked clients: the listener is not polled, the clients are"
        );
        // Past the ordinary deadline, within the await deadline: still waiting.
        endpoint.serve(start + Duration::from_secs(2), |_| at_once(b""));
        assert_eq!(endpoint.clients.len(), 2);
        endpoint.settle(2, b"two done\n");
        let mut answer = String::new();
        two.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "two done\n");
        assert_eq!(endpoint.clients.len(), 1, "the other one still waits");
        endpoint.serve(start + Duration::from_secs(11), |_| at_once(b""));
        assert_eq!(endpoint.clients.len(), 0, "dropped at the await deadline");
        let mut rest = Vec::new();
        one.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "closed without an answer");
        // A parked client that hangs up is dropped at once.
        let mut three = connect();
        three.write_all(b"wait 3\n").unwrap();
        endpoint.serve(start, |request| Answer::Later(request[5] - b'0'));
        assert_eq!(endpoint.clients.len(), 1);
        drop(three);
        endpoint.serve(start, |_| at_once(b""));
        assert_eq!(endpoint.clients.len(), 0, "gone: no longer waiting");
    }
}
