//! systemd's notification protocol (sd_notify): one datagram per state change on the socket
//! named by `NOTIFY_SOCKET`, and watchdog pings when `WATCHDOG_USEC` is set.
//!
//! Without `NOTIFY_SOCKET` every call does nothing, so the master can always call it.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if there is one.
pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    /// How often the watchdog must hear from us (half of `WATCHDOG_USEC`), if asked.
    pub watchdog_every: Option<Duration>,
    /// `WATCHDOG_USEC` as systemd gave it, passed on to an upgraded master.
    watchdog_usec: Option<u64>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`), then removes them
    /// from the environment so workers never inherit them (an upgraded master gets them
    /// explicitly, from [`Notifier::successor_env`]).
    pub fn from_env() -> Notifier {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty());
        let watchdog_for_us = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog_usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && watchdog_for_us);
        let watchdog_every = watchdog_usec.map(|usec| Duration::from_micros(usec / 2));
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let socket = path.and_then(|path| Some((UnixDatagram::unbound().ok()?, path)));
        Notifier {
            socket,
            watchdog_every,
            watchdog_usec,
        }
    }

    /// The variables a new master started by a binary upgrade needs to reach systemd (they
    /// were removed from our environment).
    pub fn successor_env(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some((_, path)) = &self.socket {
            vars.push(("NOTIFY_SOCKET", path.clone()));
            if let Some(usec) = self.watchdog_usec {
                vars.push(("WATCHDOG_USEC", usec.to_string()));
            }
        }
        vars
    }

    /// A binary upgrade completed: tells systemd that `pid` is the service's main process
    /// now, then falls silent (our STOPPING=1 would stop the service, our pings are moot).
    ///
    /// The old master sends it, not the new one: with the default `NotifyAccess=main`
    /// systemd accepts messages only from the main process, which until now is us.
    pub fn hand_over(&mut self, pid: u32) {
        self.notify(&format!("MAINPID={pid}"));
        self.socket = None;
        self.watchdog_every = None;
    }

    /// Sends `state` (e.g. `READY=1`); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some((socket, path)) = &self.socket else {
            return;
        };
        if let Err(e) = send(socket, path, state) {
            log::warn!("sendto() failed while notifying systemd ({state}): {e}");
        }
    }

    /// `RELOADING=1` with the monotonic timestamp systemd asks for.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

fn send(socket: &UnixDatagram, path: &str, state: &str) -> io::Result<()> {
    // A leading '@' names a socket in the abstract namespace.
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}
