//! An in-process driver for one connection, for unit tests: the client is memory (an
//! [`MemoryTransport`] the test writes requests into and reads responses from), upstream
//! sockets are real (loopback, polled with a real `mio::Poll`), and the clock moves only
//! when the test says so. The real `Conn`, pipeline and `Exchange` run unchanged, so their
//! state machines are tested without a subprocess, and timeouts without waiting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use super::access_log::{AccessLog, ServerLog};
use super::clock::Clock;
use super::conn::{Conn, Ctx, Verdict};
use crate::config::{AccessLog as Destination, Config};
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::io::memory::MemoryTransport;
use crate::pipeline::Pipeline;
use crate::stats::{Counters, UpstreamError};

/// How long a test waits for something to happen on loopback before failing.
const PATIENCE: Duration = Duration::from_secs(5);

/// One client connection and the worker state it runs in.
pub struct Driver {
    pub conn: Conn<MemoryTransport>,
    pub ctx: Ctx<'static>,
    poll: Poll,
    events: Events,
    log_path: PathBuf,
    /// Holds the roots and the access log until the test ends.
    dir: tempfile::TempDir,
}

impl Driver {
    /// A connection to a worker running `config` (TOML, with `{dir}` standing for a fresh
    /// temporary directory that relative roots are also resolved against), logging as JSON.
    pub fn new(config: &str, files: &[(&str, &[u8])]) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("spill")).unwrap();
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let log_path = dir.path().join("access.log");
        let text = config.replace("{dir}", &dir.path().display().to_string());
        let config =
            crate::config::load_text(&dir.path().join("shoal.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let config: &'static Config = Box::leak(Box::new(config));
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let clock = Clock::new();
        let formats = (ServerLog::of_each(config).into_iter())
            .map(|log| ServerLog {
                format: crate::config::LogFormat::Json,
                ..log
            })
            .collect();
        let ctx = Ctx {
            limits: &config.limits,
            head_limits: config.head_limits(),
            pipeline: Pipeline::new(
                config,
                &config.listen_addresses(),
                registry,
                0,
                Some(crate::proxy::shared_for_tests(&config.upstreams)),
                None,
                clock.now,
            )
            .unwrap(),
            log: AccessLog::open(&Destination::File(log_path.clone()), formats).unwrap(),
            clock,
            draining: false,
            counters: Counters::new(config.servers.iter().map(|s| s.routes.len()).sum()),
            buffers: Default::default(),
            head: ResponseHead::default(),
            request: RequestHead::default(),
        };
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        let conn = Conn::new(0, MemoryTransport::default(), peer, 0, ctx.clock.now);
        Driver {
            conn,
            ctx,
            poll,
            events: Events::with_capacity(64),
            log_path,
            dir,
        }
    }

    /// The client sends `bytes` (and the readiness event for them arrives).
    pub fn send(&mut self, bytes: &[u8]) -> Verdict {
        self.conn.client().receive(bytes);
        self.conn.mark_readable(false);
        self.drive()
    }

    /// The client closes its sending side (the event carries the FIN).
    pub fn close_client(&mut self) -> Verdict {
        self.conn.client().close();
        self.conn.mark_readable(true);
        self.drive()
    }

    /// Drives the connection as the worker does on an event (closing the upstream connections
    /// it retired), again while it asks to be, and on the upstream events ready by then, as
    /// the worker's next turns would (a fresh upstream connection gets its request on its
    /// first event).
    pub fn drive(&mut self) -> Verdict {
        loop {
            let verdict = self.conn.drive(&mut self.ctx);
            self.ctx.pipeline.upstreams.close_retired();
            match verdict {
                Verdict::Again => continue,
                Verdict::Close => return Verdict::Close,
                Verdict::Wait if !self.pass_upstream_events(Duration::ZERO) => return Verdict::Wait,
                Verdict::Wait => {}
            }
        }
    }

    /// Passes the upstream events that arrive within `wait` to the connection; true if any did.
    fn pass_upstream_events(&mut self, wait: Duration) -> bool {
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        let mut any = false;
        // Every socket polled here is an upstream one.
        for event in self.events.iter() {
            if self.ctx.pipeline.upstreams.event_for(event.token()).is_some() {
                self.conn.mark_upstream_ready(event);
                any = true;
            }
        }
        any
    }

    /// What the client received since the last look.
    pub fn received(&mut self) -> String {
        String::from_utf8_lossy(&self.conn.client().take_written()).into_owned()
    }

    /// Passes upstream socket events to the connection and drives it until `done` holds of
    /// the driver and what the client received so far (which it returns), or the connection
    /// closes.
    pub fn run_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Driver, &str) -> bool,
    ) -> (String, Verdict) {
        let give_up = Instant::now() + PATIENCE;
        let mut received = String::new();
        loop {
            let verdict = self.drive();
            received.push_str(&self.received());
            if done(self, &received) || verdict == Verdict::Close {
                return (received, verdict);
            }
            assert!(
                Instant::now() < give_up,
                "waited {PATIENCE:?} for {what}; got {received:?}"
            );
            self.pass_upstream_events(Duration::from_millis(20));
        }
    }

    /// Moves the clock on by `by`; if the connection's deadline passed, the worker's sweep
    /// acts on it (returns what it said).
    pub fn advance(&mut self, by: Duration) -> Option<Verdict> {
        self.ctx.clock.now += by;
        (self.conn.deadline(&self.ctx) <= self.ctx.clock.now).then(|| self.conn.time_out(&mut self.ctx))
    }

    /// Time left before the connection's deadline.
    pub fn time_left(&self) -> Duration {
        self.conn
            .deadline(&self.ctx)
            .saturating_duration_since(self.ctx.clock.now)
    }

    /// Failures of upstream 0 of kind `error` counted so far.
    pub fn upstream_errors(&self, error: UpstreamError) -> u64 {
        let counters = self.ctx.pipeline.upstreams.counters(self.ctx.clock.now);
        let at = UpstreamError::ALL.iter().position(|e| *e == error).unwrap();
        counters[0].errors[at]
    }

    /// True when the connection has no exchange running (none began, or it ended).
    pub fn exchange_done(&self) -> bool {
        !self.conn.is_proxying()
    }

    /// The directory responses spill into.
    pub fn spill_dir(&self) -> PathBuf {
        self.dir.path().join("spill")
    }

    /// The access log's lines so far.
    pub fn log_lines(&mut self) -> Vec<String> {
        self.ctx.log.flush();
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }
}

/// A config with one server: a static route on `{dir}/site` at `/`, and proxy routes to
/// `upstream`: `/api/` (prefix stripped, request bodies collected and responses spilling to
/// `{dir}/spill`), `/stream/` (`response_buffering` and `request_buffering` off: bodies stream
/// both ways at the slower side's pace) and `/patient/` (`ignore_client_abort = true`);
/// `limits` and `upstream_keys` are added to `[limits]` and `[upstream.app]`.
pub fn site_and_api(upstream: SocketAddr, limits: &str, upstream_keys: &str) -> String {
    format!(
        "access_log = \"off\"\n[buffering]\ntemp_dir = \"{{dir}}/spill\"\n[limits]\n{limits}\n\
         [[server]]\nlisten = [\"127.0.0.1:1\"]\n\
         [[server.route]]\nprefix = \"/\"\nroot = \"{{dir}}/site\"\n\
         [[server.route]]\nprefix = \"/api/\"\nupstream = \"app\"\nstrip_prefix = true\n\
         [[server.route]]\nprefix = \"/stream/\"\nupstream = \"app\"\nresponse_buffering = false\nrequest_buffering = false\n\
         [[server.route]]\nprefix = \"/patient/\"\nupstream = \"app\"\nignore_client_abort = true\n\
         [upstream.app]\nservers = [\"{upstream}\"]\n{upstream_keys}\n"
    )
}
