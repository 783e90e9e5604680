//! `shoal status` and `shoal top`: what the master reports about itself and its workers over
//! its control socket, and how the command shows it.
//!
//! The master answers the one request `status\n` with a [`Status`] as JSON and closes; the
//! command prints it as a table (or as JSON with `--json`). Both sides share these types, so
//! the wire format is the serde shape of [`Status`].

use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The request line the control socket answers.
pub const STATUS_REQUEST: &[u8] = b"status\n";
/// How long the command waits for the master's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer the command reads (a status is about 300 bytes per slot).
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// The control socket of the master whose pid file is `pid_file`: the same name with the
/// extension `.sock` (`shoal.pid` → `shoal.sock`).
pub fn socket_path(pid_file: &Path) -> PathBuf {
    if pid_file.extension().is_some_and(|e| e == "sock") {
        let mut name = pid_file.as_os_str().to_owned();
        name.push(".sock");
        return PathBuf::from(name);
    }
    pid_file.with_extension("sock")
}

/// Everything `shoal status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub master: MasterStatus,
    /// One entry per worker slot, in slot order.
    pub workers: Vec<SlotStatus>,
    /// The upstreams of the current config, in config order.
    #[serde(default)]
    pub upstreams: Vec<UpstreamStatus>,
}

/// One upstream: the requests waiting for a permit under its servers' `max_conns`, how long
/// they waited, and its servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    pub name: String,
    /// Requests waiting for a permit now, in every worker together.
    pub queued: u64,
    /// Upper bounds of the queue wait buckets, in seconds (a last bucket is past them all).
    pub queue_wait_bounds_seconds: Vec<f64>,
    /// Requests that got a permit after waiting, by wait (not cumulative).
    pub queue_waits: Vec<u64>,
    /// Requests answered 503 after waiting `queue_timeout`.
    pub queue_timeouts: u64,
    pub servers: Vec<ServerStatus>,
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub addr: String,
    /// Its cap (0: none).
    pub max_conns: u32,
    /// Requests in flight to it from the whole instance (counted only when it has a cap).
    pub in_flight: Option<u32>,
}

/// The master process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterStatus {
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The config file, or `null` when the config came from flags.
    pub config: Option<String>,
    /// Reloads adopted since the master started (0: the config it started with).
    pub generation: u64,
    /// `running`, or `stopping` once a stop began.
    pub state: String,
}

/// One worker slot and the worker that serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: usize,
    /// The slot's current worker; `null` while it waits to be respawned.
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub uptime_seconds: u64,
    pub rss_bytes: u64,
    /// Requests the current worker has served.
    pub requests: u64,
    pub active_connections: u32,
    /// Workers replaced in this slot since the master started.
    pub restarts: u64,
    pub last_restart: Option<RestartReason>,
    /// Replaced workers of this slot still finishing their requests.
    pub retiring: Vec<RetiringWorker>,
    /// Permits under `max_conns` the current worker's requests hold now.
    #[serde(default)]
    pub upstream_permits: u32,
}

/// A replaced worker that is still draining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiringWorker {
    pub pid: u32,
    pub state: WorkerState,
    pub uptime_seconds: u64,
    pub rss_bytes: u64,
    pub requests: u64,
    pub active_connections: u32,
    #[serde(default)]
    pub upstream_permits: u32,
}

/// A worker as `status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Forked, no heartbeat yet (or the slot waits for its respawn).
    Starting,
    /// Beating and accepting.
    Running,
    /// Finishing what it has, accepting nothing new.
    Draining,
    /// Missed its heartbeats: being aborted.
    Hung,
}

/// Why the master replaced a slot's worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartReason {
    /// It died without being asked to.
    Crash,
    /// It stopped beating.
    Hung,
    /// Over max_worker_rss.
    Rss,
    /// Over max_worker_age.
    Age,
    /// Past max_requests.
    Requests,
    /// A reload replaced it.
    Reload,
}

impl RestartReason {
    pub const ALL: [RestartReason; 6] = [
        RestartReason::Crash,
        RestartReason::Hung,
        RestartReason::Rss,
        RestartReason::Age,
        RestartReason::Requests,
        RestartReason::Reload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Hung => "hung",
            RestartReason::Rss => "rss",
            RestartReason::Age => "age",
            RestartReason::Requests => "requests",
            RestartReason::Reload => "reload",
        }
    }
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Draining => "draining",
            WorkerState::Hung => "hung",
        }
    }
}

/// Why the master's status could not be had.
#[derive(Debug)]
pub enum StatusError {
    /// connect() to the control socket failed: no master, or not this one.
    Connect(PathBuf, std::io::Error),
    /// Sending the request or reading the answer failed.
    Exchange(PathBuf, std::io::Error),
    /// The answer is not a status.
    Decode(PathBuf, serde_json::Error),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Connect(path, e) => {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound => " (is shoal running with this pid file?)",
                    std::io::ErrorKind::ConnectionRefused => " (a stale socket: its master is gone)",
                    _ => "",
                };
                write!(
                    f,
                    "cannot reach the master's control socket {}: {e}{hint}",
                    path.display()
                )
            }
            StatusError::Exchange(path, e) => {
                write!(f, "no status from the master at {}: {e}", path.display())
            }
            StatusError::Decode(path, e) => {
                write!(f, "unreadable status from the master at {}: {e}", path.display())
            }
        }
    }
}

impl std::error::Error for StatusError {}

/// Sends the status request to the master listening on `socket`; returns its answer.
fn ask(socket: &Path) -> Result<String, StatusError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| StatusError::Connect(socket.into(), e))?;
    let exchange = |e| StatusError::Exchange(socket.into(), e);
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(exchange)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(exchange)?;
    stream.write_all(STATUS_REQUEST).map_err(exchange)?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut answer)
        .map_err(exchange)?;
    Ok(answer)
}

/// Asks the master listening on `socket` for its status.
pub fn fetch(socket: &Path) -> Result<Status, StatusError> {
    let json = ask(socket)?;
    serde_json::from_str(&json).map_err(|e| StatusError::Decode(socket.into(), e))
}

/// The status as a table, the way `shoal status` prints it.
pub fn table(status: &Status) -> String {
    let m = &status.master;
    let mut out = String::new();
    let config = m.config.as_deref().unwrap_or("(command-line flags)");
    let _ = writeln!(
        out,
        "master {}  {}  up {}  config {config}  generation {}",
        m.pid,
        m.state,
        duration(m.uptime_seconds),
        m.generation
    );
    let mut rows = vec![[
        "slot",
        "pid",
        "state",
        "uptime",
        "rss",
        "requests",
        "active",
        "permits",
        "restarts",
        "last restart",
    ]
    .map(String::from)];
    for slot in &status.workers {
        rows.push([
            slot.slot.to_string(),
            slot.pid.map_or("-".into(), |p| p.to_string()),
            slot.state.name().into(),
            slot.pid.map_or("-".into(), |_| duration(slot.uptime_seconds)),
            slot.pid.map_or("-".into(), |_| bytes(slot.rss_bytes)),
            slot.requests.to_string(),
            slot.active_connections.to_string(),
            slot.upstream_permits.to_string(),
            slot.restarts.to_string(),
            slot.last_restart.map_or("-", RestartReason::name).into(),
        ]);
        for old in &slot.retiring {
            rows.push([
                slot.slot.to_string(),
                old.pid.to_string(),
                old.state.name().into(),
                duration(old.uptime_seconds),
                bytes(old.rss_bytes),
                old.requests.to_string(),
                old.active_connections.to_string(),
                old.upstream_permits.to_string(),
                String::new(),
                String::new(),
            ]);
        }
    }
    // The permits column only matters with a `max_conns` somewhere.
    let capped = (status.upstreams.iter()).any(|u| u.servers.iter().any(|s| s.max_conns > 0));
    const PERMITS_COLUMN: usize = 7;
    let mut rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    if !capped {
        rows.iter_mut().for_each(|row| drop(row.remove(PERMITS_COLUMN)));
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|col| rows.iter().map(|r| r[col].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for upstream in &status.upstreams {
        upstream_lines(upstream, &mut out);
    }
    out
}

/// `upstream app  queued 3  waited 120 (median <= 10ms, p99 <= 1s)  timed out 2`, then a
/// line per server with its requests in flight and its cap.
fn upstream_lines(upstream: &UpstreamStatus, out: &mut String) {
    let waited: u64 = upstream.queue_waits.iter().sum();
    let _ = write!(
        out,
        "upstream {}  queued {}  waited {waited}",
        upstream.name, upstream.queued
    );
    if waited > 0 {
        let at = |q| quantile(&upstream.queue_wait_bounds_seconds, &upstream.queue_waits, q);
        let _ = write!(out, " (median {}, p99 {})", at(0.5), at(0.99));
    }
    let _ = writeln!(out, "  timed out {}", upstream.queue_timeouts);
    for server in &upstream.servers {
        let in_flight = server.in_flight.map_or("-".to_string(), |n| n.to_string());
        let cap = match server.max_conns {
            0 => "no max_conns".to_string(),
            n => format!("max_conns {n}"),
        };
        let _ = writeln!(out, "  {}  in flight {in_flight}  {cap}", server.addr);
    }
}

/// The bound of the bucket that holds quantile `q` of a histogram: `<= 10ms`, or `> 10s`
/// past the last bound.
fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> String {
    let total: u64 = counts.iter().sum();
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return match bounds.get(i) {
                Some(bound) => format!("<= {}", seconds(*bound)),
                None => format!("> {}", seconds(bounds.last().copied().unwrap_or(0.0))),
            };
        }
    }
    "-".into()
}

/// `5ms`, `250ms`, `1s`, `2.5s`.
fn seconds(value: f64) -> String {
    if value < 1.0 {
        format!("{}ms", (value * 1000.0).round())
    } else {
        format!("{value}s")
    }
}

/// `59s`, `3m12s`, `2h05m`, `4d03h`.
fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

/// `812 KiB`, `5.1 MiB`, `1.2 GiB`.
fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = n as f64;
    if n < KIB * KIB {
        format!("{:.0} KiB", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.1} MiB", n / KIB / KIB)
    } else {
        format!("{:.1} GiB", n / KIB / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            master: MasterStatus {
                pid: 100,
                uptime_seconds: 192,
                config: Some("/etc/shoal.toml".into()),
                generation: 2,
                state: "running".into(),
            },
            workers: vec![SlotStatus {
                slot: 0,
                pid: Some(101),
                state: WorkerState::Running,
                uptime_seconds: 7300,
                rss_bytes: 5 << 20,
                requests: 1234,
                active_connections: 3,
                restarts: 1,
                last_restart: Some(RestartReason::Crash),
                retiring: vec![RetiringWorker {
                    pid: 99,
                    state: WorkerState::Draining,
                    uptime_seconds: 30,
                    rss_bytes: 800 << 10,
                    requests: 5,
                    active_connections: 1,
                    upstream_permits: 0,
                }],
                upstream_permits: 2,
            }],
            upstreams: vec![UpstreamStatus {
                name: "app".into(),
                queued: 3,
                queue_wait_bounds_seconds: vec![0.005, 0.01, 1.0],
                queue_waits: vec![10, 80, 9, 1],
                queue_timeouts: 1,
                servers: vec![
                    ServerStatus {
                        addr: "127.0.0.1:3000".into(),
                        max_conns: 4,
                        in_flight: Some(4),
                    },
                    ServerStatus {
                        addr: "127.0.0.1:3001".into(),
                        max_conns: 0,
                        in_flight: None,
                    },
                ],
            }],
        }
    }

    #[test]
    fn json_round_trips_with_lowercase_names() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert!(json.contains("\"state\":\"draining\"") && json.contains("\"last_restart\":\"crash\""));
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), sample());
    }

    fn cells(line: &str) -> Vec<&str> {
        line.split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect()
    }

    #[test]
    fn table_has_a_header_and_a_row_per_worker() {
        let text = table(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "master 100  running  up 3m12s  config /etc/shoal.toml  generation 2"
        );
        assert_eq!(cells(lines[1])[0], "slot");
        assert_eq!(
            cells(lines[2]),
            ["0", "101", "running", "2h01m", "5.0 MiB", "1234", "3", "2", "1", "crash"]
        );
        assert_eq!(
            cells(lines[3]),
            ["0", "99", "draining", "30s", "800 KiB", "5", "1", "0"]
        );
        assert_eq!(
            lines[4],
            "upstream app  queued 3  waited 100 (median <= 10ms, p99 <= 1s)  timed out 1"
        );
        assert_eq!(lines[5], "  127.0.0.1:3000  in flight 4  max_conns 4");
        assert_eq!(lines[6], "  127.0.0.1:3001  in flight -  no max_conns");
    }

    #[test]
    fn the_permits_column_shows_only_with_a_cap() {
        let mut status = sample();
        assert!(table(&status).lines().nth(1).unwrap().contains("permits"));
        status.upstreams[0].servers[0].max_conns = 0;
        let text = table(&status);
        assert!(!text.lines().nth(1).unwrap().contains("permits"), "{text}");
        assert_eq!(cells(text.lines().nth(2).unwrap())[6..], ["3", "1", "crash"]);
    }

    #[test]
    fn the_socket_sits_beside_the_pid_file() {
        assert_eq!(
            socket_path(Path::new("/run/shoal.pid")),
            Path::new("/run/shoal.sock")
        );
        assert_eq!(socket_path(Path::new("pidfile")), Path::new("pidfile.sock"));
        assert_eq!(socket_path(Path::new("x.sock")), Path::new("x.sock.sock"));
    }
}
