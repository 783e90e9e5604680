//! Active health checks, run once per shoal instance: worker 0 runs a prober thread, which
//! reports each change of verdict to the master; the master tells every worker.
//!
//! The thread uses blocking sockets with timeouts (it never touches the event loop), and only
//! reports changes, so N workers × M servers never means N × M probes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{End, Report};
use crate::config::{Address, HealthCheck, Upstream};

/// Consecutive results for one server, and its current verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    up: bool,
    streak: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { up: true, streak: 0 }
    }
}

impl Tracker {
    /// Records one probe; returns the new verdict when it changed.
    pub fn record(&mut self, healthy: bool, check: &HealthCheck) -> Option<bool> {
        if healthy == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if healthy { check.rise } else { check.fall };
        if self.streak >= needed {
            self.up = healthy;
            self.streak = 0;
            Some(healthy)
        } else {
            None
        }
    }
}

struct Target {
    upstream: u32,
    server: u32,
    addr: Address,
    check: HealthCheck,
    tracker: Tracker,
    next: Instant,
}

/// Starts the prober thread for every upstream that has a health_check. It stops once
/// `stop` is set (the worker is draining).
pub fn spawn_prober(upstreams: &[Upstream], channel: End, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let now = Instant::now();
    let mut targets: Vec<Target> = Vec::new();
    for (u, upstream) in upstreams.iter().enumerate() {
        let Some(check) = &upstream.health_check else {
            continue;
        };
        for (s, server) in upstream.servers.iter().enumerate() {
            targets.push(Target {
                upstream: u as u32,
                server: s as u32,
                addr: server.addr.clone(),
                check: check.clone(),
                tracker: Tracker::default(),
                next: now,
            });
        }
    }
    if targets.is_empty() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || probe_forever(targets, &channel, &stop))?;
    Ok(())
}

fn probe_forever(mut targets: Vec<Target>, channel: &End, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for target in targets.iter_mut().filter(|t| t.next <= now) {
            target.next = now + target.check.interval;
            let healthy = probe(&target.addr, &target.check);
            if let Some(up) = target.tracker.record(healthy, &target.check) {
                let report = Report::Health {
                    upstream: target.upstream,
                    server: target.server,
                    up,
                };
                let _ = channel.report(&report);
            }
        }
        let next = targets
            .iter()
            .map(|t| t.next)
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
        );
    }
}

/// One probe: GET the path; any 2xx or 3xx within the timeout is healthy.
fn probe(addr: &Address, check: &HealthCheck) -> bool {
    match addr {
        Address::Tcp(addr) => match TcpStream::connect_timeout(addr, check.timeout) {
            Ok(stream) => {
                let _ = stream.set_read_timeout(Some(check.timeout));
                let _ = stream.set_write_timeout(Some(check.timeout));
                exchange(stream, &addr.to_string(), check)
            }
            Err(_) => false,
        },
        // A unix connect does not wait: it succeeds or fails at once.
        Address::Unix(path) => match UnixStream::connect(path) {
            Ok(stream) => {
                let _ = stream.set_read_timeout(Some(check.timeout));
                let _ = stream.set_write_timeout(Some(check.timeout));
                exchange(stream, "localhost", check)
            }
            Err(_) => false,
        },
    }
}

/// The probe's request and the status of its answer, on a connected `stream`.
fn exchange(mut stream: impl Read + Write, host: &str, check: &HealthCheck) -> bool {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shoal-health\r\nConnection: close\r\n\r\n",
        check.path
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() || !head.starts_with(b"HTTP/1.") {
        return false;
    }
    matches!(head[9], b'2' | b'3')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_streaks() {
        let check = HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        };
        let mut t = Tracker::default();
        assert_eq!(t.record(false, &check), None);
        assert_eq!(t.record(false, &check), None);
        assert_eq!(
            t.record(true, &check),
            None,
            "a success breaks the failure streak"
        );
        assert_eq!(t.record(false, &check), None);
        assert_eq!(t.record(false, &check), None);
        assert_eq!(t.record(false, &check), Some(false));
        assert_eq!(t.record(true, &check), None);
        assert_eq!(t.record(true, &check), Some(true));
    }
}
